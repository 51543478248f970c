//! Redis Cluster: `redis-server` nodes in cluster mode, joined by `redis-cli --cluster create`.

mod node;
mod topology;

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use nix::sys::signal::Signal;
use rand::Rng;
use wait_timeout::ChildExt;

pub use node::RedisNode;
use node::TlsFiles;
use topology::{
    check_topology, info_field, parse_cluster_nodes, wait_until, ClusterNode, SlotOwners, SLOTS,
};

use crate::dirs::{log_tail, InstanceDir};
use crate::process::{Lifetime, Proc};
use crate::resp::{self, AuthRefused, Reply};
use crate::spawner;
use crate::state::StateDir;

const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);

/// The ACL user of every cluster the testkit starts.
const USERNAME: &str = "shardfeed";

/// The ACL user that a cluster's nodes accept, and its password. The `default` user is off, so
/// a client without them gets `NOAUTH`, one with a wrong password `WRONGPASS`; replicas
/// authenticate to their masters as this user too.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisCredentials {
    pub username: String,
    pub password: String,
}

impl RedisCredentials {
    /// `username` and `password` as the nodes' configuration takes them: letters, digits and
    /// `-_.` only.
    pub fn new(username: &str, password: &str) -> anyhow::Result<RedisCredentials> {
        let plain = |text: &str| {
            !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        ensure!(
            plain(username) && plain(password),
            "a Redis username and password must be non-empty and of letters, digits and -_. only"
        );
        Ok(RedisCredentials {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    /// User `shardfeed` with a random password: a test cluster's.
    pub fn random() -> RedisCredentials {
        let password: String = rand::thread_rng()
            .sample_iter(rand::distributions::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        RedisCredentials {
            username: USERNAME.to_owned(),
            password,
        }
    }

    /// `SHARDFEED_REDIS__USERNAME` and `SHARDFEED_REDIS__PASSWORD`.
    pub fn settings_env(&self) -> Vec<(String, String)> {
        vec![
            ("SHARDFEED_REDIS__USERNAME".into(), self.username.clone()),
            ("SHARDFEED_REDIS__PASSWORD".into(), self.password.clone()),
        ]
    }
}

impl fmt::Debug for RedisCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCredentials")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// Masters and replicas per master of [`RedisCluster::start`] and of a kept cluster.
const MASTERS: usize = 3;
const REPLICAS_PER_MASTER: usize = 1;

/// A Redis Cluster of real nodes on 127.0.0.1 (node timeout 3 s).
///
/// A test's cluster: dropping it kills every node and removes its dir. A kept cluster
/// ([`RedisCluster::start_kept`], the local stack) outlives the process: dropping it leaves the
/// nodes running, recorded in the [`StateDir`] as `redis-<port>`.
#[derive(Debug)]
pub struct RedisCluster {
    /// Declared before `dir`: fields drop in order, so the nodes die before their dir goes.
    nodes: Vec<RedisNode>,
    /// Holds `cluster-create.log` (and a test cluster's node dirs).
    root: PathBuf,
    credentials: Arc<RedisCredentials>,
    /// The CA file of a TLS cluster.
    tls_ca: Option<PathBuf>,
    /// A test cluster's instance dir.
    _dir: Option<InstanceDir>,
}

impl RedisCluster {
    /// 3 masters with 1 replica each, user `shardfeed` with a random password.
    pub fn start() -> anyhow::Result<RedisCluster> {
        RedisCluster::start_with(MASTERS, REPLICAS_PER_MASTER)
    }

    /// [`RedisCluster::start`] off the async runtime's threads (it blocks for seconds), for
    /// tests that need a cluster of their own to break.
    pub async fn start_async() -> anyhow::Result<RedisCluster> {
        tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .context("the cluster start-up task panicked")?
    }

    /// `masters` masters (at least 3: `redis-cli --cluster create` wants a majority to survive
    /// one failure) with `replicas_per_master` replicas each. Returns once every node reports
    /// `cluster_state:ok`, every replica is attached to its master, and every node lists every
    /// replica in `CLUSTER SLOTS`.
    pub fn start_with(masters: usize, replicas_per_master: usize) -> anyhow::Result<RedisCluster> {
        RedisCluster::start_inner(masters, replicas_per_master, None)
    }

    /// 3 masters without replicas that also speak TLS, with `certs` (for 127.0.0.1) on their
    /// client ports and their cluster bus: [`RedisCluster::tls_seed_nodes`] and
    /// [`RedisCluster::settings_env`] name the TLS ports, where `CLUSTER SLOTS` names the TLS
    /// ports too. The plain ports stay for the testkit's own admin commands.
    pub fn start_tls(certs: &crate::TestCertificates) -> anyhow::Result<RedisCluster> {
        RedisCluster::start_inner(3, 0, Some(certs))
    }

    fn start_inner(
        masters: usize,
        replicas_per_master: usize,
        certs: Option<&crate::TestCertificates>,
    ) -> anyhow::Result<RedisCluster> {
        ensure!(
            masters >= 3,
            "a Redis Cluster needs at least 3 masters (redis-cli --cluster create refuses fewer)"
        );
        let dir = InstanceDir::create("redis")?;
        let credentials = Arc::new(RedisCredentials::random());
        let tls = certs
            .map(|certs| -> anyhow::Result<Arc<TlsFiles>> {
                let file = |name: &str, pem: &str| -> anyhow::Result<PathBuf> {
                    let path = dir.path().join(name);
                    fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
                    Ok(path)
                };
                Ok(Arc::new(TlsFiles {
                    cert: file("tls-cert.pem", &certs.cert_pem)?,
                    key: file("tls-key.pem", &certs.key_pem)?,
                    ca: file("tls-ca.pem", &certs.ca_pem)?,
                }))
            })
            .transpose()?;
        let total = masters * (1 + replicas_per_master);
        let nodes = (0..total)
            .map(|_| RedisNode::start(dir.path(), &credentials, tls.as_ref()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // From here on, dropping `cluster` on an error cleans everything up.
        let cluster = RedisCluster {
            nodes,
            root: dir.path().to_owned(),
            credentials,
            tls_ca: tls.map(|files| files.ca.clone()),
            _dir: Some(dir),
        };
        cluster.create(replicas_per_master)?;
        cluster.wait_until_formed(masters, replicas_per_master)?;
        Ok(cluster)
    }

    /// A cluster that outlives this process (the local stack): 3 masters with 1 replica each
    /// on `base_port..base_port + 6`, node dirs `dir/<port>`, logs `log/redis-<port>.log` and
    /// records `redis-<port>` in `state`. Nodes recorded as running are left alone, the others
    /// started; a fresh set of nodes is joined into a cluster, nodes that know theirs
    /// (`nodes.conf`) find each other again. Returns once the cluster is healthy. The nodes
    /// accept `credentials` alone; a node left running by a stack that did not use them (an
    /// older shardfeed's) is refused with what to run.
    pub fn start_kept(
        state: &StateDir,
        dir: &Path,
        base_port: u16,
        credentials: &RedisCredentials,
    ) -> anyhow::Result<RedisCluster> {
        let total = MASTERS * (1 + REPLICAS_PER_MASTER);
        let last = u32::from(base_port) + total as u32 - 1;
        ensure!(
            last + u32::from(crate::ports::CLUSTER_BUS_OFFSET) <= 65_535,
            "base port {base_port} is too high: node ports and their bus ports (+10000) must \
             stay below 65536"
        );
        state.create()?;
        let cluster = RedisCluster::kept(state, dir, &kept_ports(base_port), credentials)?;
        for node in &cluster.nodes {
            fs::create_dir_all(node.dir())
                .with_context(|| format!("creating {}", node.dir().display()))?;
            node.ensure_running()?;
        }
        let fresh = cluster
            .is_fresh()
            .map_err(|err| match err.downcast::<AuthRefused>() {
                Ok(refused) => anyhow::anyhow!(
                "the Redis node {} does not accept the local stack's credentials (it was started \
                 by an older shardfeed, without them): run `shardfeed dev down --purge`, then \
                 `shardfeed dev up` ({refused})",
                refused.addr
            ),
                Err(err) => err,
            })?;
        if fresh {
            cluster.create(REPLICAS_PER_MASTER)?;
            cluster.wait_until_formed(MASTERS, REPLICAS_PER_MASTER)?;
        } else {
            cluster.wait_until_healthy(CLUSTER_TIMEOUT)?;
        }
        Ok(cluster)
    }

    /// The kept cluster of [`RedisCluster::start_kept`] as it is now, nodes not running
    /// included: for looking at it and for chaos. Dropping it leaves the nodes as they are.
    pub fn find_kept(
        state: &StateDir,
        dir: &Path,
        base_port: u16,
        credentials: &RedisCredentials,
    ) -> anyhow::Result<RedisCluster> {
        RedisCluster::kept(state, dir, &kept_ports(base_port), credentials)
    }

    fn kept(
        state: &StateDir,
        dir: &Path,
        ports: &[u16],
        credentials: &RedisCredentials,
    ) -> anyhow::Result<RedisCluster> {
        let credentials = Arc::new(credentials.clone());
        let nodes = ports
            .iter()
            .map(|&port| {
                let name = RedisNode::record_name(port);
                let proc = state
                    .live(&name)?
                    .map(|record| Proc::Recorded(record.process));
                Ok(RedisNode::kept(
                    Lifetime::Kept(state.clone()),
                    port,
                    dir.join(port.to_string()),
                    state.log_path(&name),
                    proc,
                    &credentials,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(RedisCluster {
            nodes,
            root: dir.to_owned(),
            credentials,
            tls_ca: None,
            _dir: None,
        })
    }

    /// No node has met another or owns a slot yet.
    fn is_fresh(&self) -> anyhow::Result<bool> {
        for node in &self.nodes {
            let info = resp::call_text(&node.addr(), &self.credentials, &["CLUSTER", "INFO"])?;
            if info_field(&info, "cluster_known_nodes") != Some("1")
                || info_field(&info, "cluster_slots_assigned") != Some("0")
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Waits for a new cluster: healthy, every replica attached, every node listing every
    /// replica in `CLUSTER SLOTS`.
    fn wait_until_formed(&self, masters: usize, replicas_per_master: usize) -> anyhow::Result<()> {
        let cluster = self;
        let mut last_err = None;
        let healthy = wait_until(CLUSTER_TIMEOUT, || {
            let result = cluster
                .check_health()
                .and_then(|view| check_topology(&view, masters, replicas_per_master))
                .and_then(|()| cluster.check_slots_list_replicas(replicas_per_master));
            let ok = result.is_ok();
            last_err = result.err();
            Ok(ok)
        });
        if let Err(err) = healthy {
            let err = last_err.map_or(err, |last| last.context("the new cluster is not healthy"));
            bail!("{err:#}\n{}", cluster.logs());
        }
        Ok(())
    }

    /// `127.0.0.1:{port}` of every node, killed ones included: what clients are configured with.
    pub fn seed_nodes(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::addr).collect()
    }

    /// The ACL user and password the nodes accept.
    pub fn credentials(&self) -> &RedisCredentials {
        &self.credentials
    }

    /// The settings (`SHARDFEED_REDIS__NODES`, `__USERNAME`, `__PASSWORD`; for a TLS cluster
    /// its TLS ports, `__TLS` and `__TLS_CA_FILE`) that point a service or a client at this
    /// cluster.
    pub fn settings_env(&self) -> Vec<(String, String)> {
        let nodes = match &self.tls_ca {
            Some(_) => self.tls_seed_nodes(),
            None => self.seed_nodes(),
        };
        let mut env = vec![("SHARDFEED_REDIS__NODES".to_owned(), nodes.join(","))];
        env.extend(self.credentials.settings_env());
        if let Some(ca) = &self.tls_ca {
            env.push(("SHARDFEED_REDIS__TLS".to_owned(), "true".to_owned()));
            env.push((
                "SHARDFEED_REDIS__TLS_CA_FILE".to_owned(),
                ca.to_string_lossy().into_owned(),
            ));
        }
        env
    }

    /// `127.0.0.1:{tls port}` of every node of a [`RedisCluster::start_tls`] cluster (none
    /// for another).
    pub fn tls_seed_nodes(&self) -> Vec<String> {
        self.nodes.iter().filter_map(RedisNode::tls_addr).collect()
    }

    /// Every node, in start order; their roles change with failovers (see `masters`).
    pub fn nodes(&self) -> &[RedisNode] {
        &self.nodes
    }

    /// The cluster's dir, with one subdir per node.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The masters that serve slots and are not flagged as failing, per `CLUSTER NODES` of the
    /// first live node, sorted by port. Changes after a failover; call `wait_until_healthy`
    /// first for an answer that every node agrees with.
    pub fn masters(&self) -> anyhow::Result<Vec<String>> {
        let mut last_err = None;
        for node in self.nodes.iter().filter(|node| node.is_live()) {
            match resp::call_text(&node.addr(), &self.credentials, &["CLUSTER", "NODES"]) {
                Ok(text) => {
                    let mut masters: Vec<ClusterNode> = parse_cluster_nodes(&text)
                        .into_iter()
                        .filter(|n| n.has_flag("master") && !n.slots.is_empty() && !n.failing())
                        .collect();
                    masters.sort_by_key(|n| n.port());
                    return Ok(masters.into_iter().map(|n| n.addr).collect());
                }
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow::anyhow!("no node is running"))
            .context("asking the cluster for its masters"))
    }

    /// The live replicas, per `CLUSTER NODES` of the first live node, sorted by port.
    pub fn replicas(&self) -> anyhow::Result<Vec<String>> {
        let masters = self.masters()?;
        Ok(self
            .nodes
            .iter()
            .filter(|node| node.is_live())
            .map(RedisNode::addr)
            .filter(|addr| !masters.contains(addr))
            .collect())
    }

    /// The replicas of `master` not flagged as failing, per its own `CLUSTER NODES`.
    pub fn replicas_of(&self, master: &str) -> anyhow::Result<Vec<String>> {
        let view = parse_cluster_nodes(&resp::call_text(
            master,
            &self.credentials,
            &["CLUSTER", "NODES"],
        )?);
        let master_id = view
            .iter()
            .find(|n| n.addr == master)
            .map(|n| n.id.clone())
            .with_context(|| format!("{master} is not in its own CLUSTER NODES"))?;
        Ok(view
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(master_id.as_str()) && !n.failing())
            .map(|n| n.addr.clone())
            .collect())
    }

    /// A manual failover: `CLUSTER FAILOVER` on a replica of `master`, which takes over its
    /// slots with no connection lost (unlike a killed master). Returns the new master once every
    /// node agrees and the cluster is healthy.
    pub fn fail_over(&self, master: &str) -> anyhow::Result<String> {
        let replica = self
            .replicas_of(master)?
            .into_iter()
            .next()
            .with_context(|| format!("{master} has no replica to fail over to"))?;
        let answer = resp::call_text(&replica, &self.credentials, &["CLUSTER", "FAILOVER"])?;
        ensure!(
            answer == "OK",
            "{replica} answered CLUSTER FAILOVER with {answer}"
        );
        wait_until(CLUSTER_TIMEOUT, || {
            Ok(self.masters()?.contains(&replica) && self.check_health().is_ok())
        })
        .with_context(|| format!("{replica} did not take over from {master}"))?;
        Ok(replica)
    }

    /// How many times `addr` has executed `command` (lower case), per `INFO commandstats`.
    pub fn command_calls(&self, addr: &str, command: &str) -> anyhow::Result<u64> {
        let info = resp::call_text(addr, &self.credentials, &["INFO", "commandstats"])?;
        let prefix = format!("cmdstat_{command}:calls=");
        Ok(info
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0))
    }

    /// SIGKILLs the node: it stays down until [`RedisCluster::restart_node`].
    pub fn kill_node(&self, addr: &str) -> anyhow::Result<()> {
        self.node(addr)?.kill()
    }

    /// SIGSTOPs the node: it keeps its sockets but answers nothing, as a hung server would.
    pub fn pause_node(&self, addr: &str) -> anyhow::Result<()> {
        self.node(addr)?.signal(Signal::SIGSTOP)
    }

    /// SIGCONTs a paused node.
    pub fn resume_node(&self, addr: &str) -> anyhow::Result<()> {
        self.node(addr)?.signal(Signal::SIGCONT)
    }

    /// `cluster_state` of `CLUSTER INFO` as `addr` sees it (`ok`, `fail`).
    pub fn cluster_state(&self, addr: &str) -> anyhow::Result<String> {
        let info = resp::call_text(addr, &self.credentials, &["CLUSTER", "INFO"])?;
        info_field(&info, "cluster_state")
            .map(str::to_owned)
            .with_context(|| format!("{addr} reports no cluster_state"))
    }

    /// One pass of [`RedisCluster::wait_until_healthy`]'s check: `Ok` if healthy now.
    pub fn health(&self) -> anyhow::Result<()> {
        self.check_health().map(drop)
    }

    /// Starts the node again with the same port and config (its `nodes.conf` is kept, so it
    /// rejoins the cluster), killing it first if needed, and waits until it answers PING.
    pub fn restart_node(&self, addr: &str) -> anyhow::Result<()> {
        self.node(addr)?.restart()
    }

    /// Waits until every live node reports `cluster_state:ok` with all 16384 slots served by
    /// live masters, all live nodes agree on who serves which slots, and every live replica is
    /// in sync with its master.
    pub fn wait_until_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut last_err = None;
        let healthy = wait_until(timeout, || {
            let result = self.check_health();
            let ok = result.is_ok();
            last_err = result.err();
            Ok(ok)
        });
        healthy.map_err(|err| {
            last_err.map_or(err, |last| {
                last.context(format!("cluster not healthy within {timeout:?}"))
            })
        })
    }

    /// FLUSHALL on every current master (replicas follow).
    pub fn flush_all(&self) -> anyhow::Result<()> {
        for master in self.masters()? {
            let reply = resp::call_text(&master, &self.credentials, &["FLUSHALL"])?;
            ensure!(reply == "OK", "FLUSHALL on {master} answered {reply}");
        }
        Ok(())
    }

    fn node(&self, addr: &str) -> anyhow::Result<&RedisNode> {
        self.nodes
            .iter()
            .find(|node| node.addr() == addr)
            .with_context(|| format!("{addr} is not a node of this cluster"))
    }

    fn create(&self, replicas_per_master: usize) -> anyhow::Result<()> {
        let log_path = self.root.join("cluster-create.log");
        let log = File::create(&log_path).context("creating cluster-create.log")?;
        let mut cmd = Command::new("redis-cli");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // The password through the environment, not the command line.
            .env("REDISCLI_AUTH", &self.credentials.password)
            .args(["--user", &self.credentials.username])
            .args(["--cluster", "create"])
            .args(self.seed_nodes())
            .args([
                "--cluster-replicas",
                &replicas_per_master.to_string(),
                "--cluster-yes",
            ]);
        let mut child =
            spawner::spawn(cmd, Signal::SIGKILL).context("running redis-cli (is it on PATH?)")?;
        match child.wait_timeout(CLUSTER_TIMEOUT)? {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!(
                "redis-cli --cluster create failed ({status})\n{}",
                log_tail(&log_path, 0, 30)
            ),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "redis-cli --cluster create took over {CLUSTER_TIMEOUT:?}\n{}",
                    log_tail(&log_path, 0, 30)
                )
            }
        }
    }

    /// Every live node lists `replicas` replicas for every slot range in `CLUSTER SLOTS`, the
    /// view clients route by. A node leaves out a replica whose replication offset it knows as
    /// 0: until the master's first ping to its replicas, and until gossip has carried the new
    /// offset; a client that connects before would route no read to that replica until its
    /// next topology refresh.
    fn check_slots_list_replicas(&self, replicas: usize) -> anyhow::Result<()> {
        for node in self.nodes.iter().filter(|node| node.is_live()) {
            let addr = node.addr();
            let Reply::Array(Some(ranges)) =
                resp::call(&addr, &self.credentials, &["CLUSTER", "SLOTS"])?
            else {
                bail!("{addr} answered CLUSTER SLOTS with something else than an array");
            };
            for range in ranges {
                // [start, end, master, replica, ...]
                let listed = match range {
                    Reply::Array(Some(entries)) => entries.len().saturating_sub(3),
                    other => bail!("{addr}: unexpected CLUSTER SLOTS entry {other:?}"),
                };
                ensure!(
                    listed == replicas,
                    "{addr} lists {listed} of {replicas} replicas for a slot range in CLUSTER SLOTS"
                );
            }
        }
        Ok(())
    }

    /// One pass of the health check; returns the first live node's view of the cluster.
    fn check_health(&self) -> anyhow::Result<Vec<ClusterNode>> {
        let live: Vec<&RedisNode> = self.nodes.iter().filter(|node| node.is_live()).collect();
        ensure!(!live.is_empty(), "no node is running");
        let live_addrs: BTreeSet<String> = live.iter().map(|node| node.addr()).collect();
        let mut reference: Option<(String, SlotOwners)> = None;
        let mut first_view = None;
        for node in live {
            let addr = node.addr();
            let info = resp::call_text(&addr, &self.credentials, &["CLUSTER", "INFO"])?;
            let state = info_field(&info, "cluster_state");
            ensure!(
                state == Some("ok"),
                "{addr} reports cluster_state {state:?}"
            );
            let slots_ok = info_field(&info, "cluster_slots_ok");
            ensure!(
                slots_ok == Some("16384"),
                "{addr} reports cluster_slots_ok {slots_ok:?}"
            );

            let view = parse_cluster_nodes(&resp::call_text(
                &addr,
                &self.credentials,
                &["CLUSTER", "NODES"],
            )?);
            let mut owners = SlotOwners::new();
            let mut covered = 0;
            for owner in view
                .iter()
                .filter(|n| n.has_flag("master") && !n.slots.is_empty())
            {
                ensure!(
                    live_addrs.contains(&owner.addr) && !owner.failing(),
                    "{addr} sees slots served by {}, which is down, paused or failing",
                    owner.addr
                );
                covered += owner.slot_count();
                owners.push((owner.addr.clone(), owner.slots.clone()));
            }
            owners.sort();
            ensure!(
                covered == SLOTS,
                "{addr} sees {covered} of {SLOTS} slots served"
            );
            match &reference {
                None => reference = Some((addr.clone(), owners)),
                Some((first, expected)) => ensure!(
                    *expected == owners,
                    "{addr} and {first} disagree on which masters serve which slots"
                ),
            }

            let me = view
                .iter()
                .find(|n| n.has_flag("myself"))
                .with_context(|| format!("{addr} does not list itself in CLUSTER NODES"))?;
            if me.has_flag("slave") {
                let replication =
                    resp::call_text(&addr, &self.credentials, &["INFO", "replication"])?;
                let link = info_field(&replication, "master_link_status");
                ensure!(
                    link == Some("up"),
                    "replica {addr} has master_link_status {link:?}"
                );
            }
            if first_view.is_none() {
                first_view = Some(view);
            }
        }
        first_view.context("no view")
    }

    /// Every node's log tail, for start failures.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| log_tail(node.log(), 0, 10))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The ports of a kept cluster's nodes.
fn kept_ports(base_port: u16) -> Vec<u16> {
    let total = MASTERS * (1 + REPLICAS_PER_MASTER);
    (0..total as u16)
        .map(|i| base_port.saturating_add(i))
        .collect()
}
