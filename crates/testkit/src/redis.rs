//! Redis Cluster: `redis-server` nodes in cluster mode, joined by `redis-cli --cluster create`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use crate::dirs::{file_len, log_tail, InstanceDir};
use crate::ports::PortLease;
use crate::process::{wait_timeout, LaunchError};
use crate::resp::{self, Reply};
use crate::{spawner, sys};

/// The number of hash slots every healthy cluster covers.
const SLOTS: u32 = 16_384;

/// Short, so that failover tests are quick: a master is failed over about 5 s after it dies.
const NODE_TIMEOUT_MS: &str = "3000";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);

/// One `redis-server` in cluster mode on 127.0.0.1; its dir keeps `nodes.conf` and `redis.log`.
///
/// Killed (SIGKILL) on drop, and by `PR_SET_PDEATHSIG` if the test process dies.
#[derive(Debug)]
pub struct RedisNode {
    port: u16,
    dir: PathBuf,
    state: Mutex<NodeState>,
    _lease: PortLease,
}

#[derive(Debug)]
struct NodeState {
    /// `None` once killed.
    child: Option<Child>,
    paused: bool,
}

impl RedisNode {
    /// Starts a node on a free port (and free bus port) in a subdir of `cluster_dir`.
    fn start(cluster_dir: &Path) -> anyhow::Result<RedisNode> {
        let mut last_err = None;
        for _ in 0..10 {
            let lease = PortLease::acquire(true)?;
            let dir = cluster_dir.join(lease.port().to_string());
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            match launch(&dir, lease.port()) {
                Ok(child) => {
                    return Ok(RedisNode {
                        port: lease.port(),
                        dir,
                        state: Mutex::new(NodeState {
                            child: Some(child),
                            paused: false,
                        }),
                        _lease: lease,
                    })
                }
                Err(LaunchError::PortInUse(err)) => {
                    let _ = fs::remove_dir_all(&dir);
                    last_err = Some(err);
                }
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context("redis-server found no free port in 10 tries"))
    }

    /// The client port; the cluster bus listens on this plus 10000.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:{port}`, as the node is known in the cluster.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The redis-server's pid, unless it was killed.
    pub fn pid(&self) -> Option<u32> {
        self.lock().child.as_ref().map(Child::id)
    }

    /// The node's dir: `nodes.conf`, `redis.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Running and not paused: expected to answer.
    pub fn is_live(&self) -> bool {
        let mut state = self.lock();
        !state.paused && running(&mut state)
    }

    fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn kill(&self) -> anyhow::Result<()> {
        let mut state = self.lock();
        if let Some(mut child) = state.child.take() {
            // Already-exited children are only reaped: kill() never signals a reaped pid.
            child.kill().context("killing redis-server")?;
            child.wait().context("reaping redis-server")?;
        }
        state.paused = false;
        Ok(())
    }

    fn signal(&self, signal: libc::c_int, paused: bool) -> anyhow::Result<()> {
        let mut state = self.lock();
        ensure!(running(&mut state), "{} is not running", self.addr());
        let pid = state.child.as_ref().map(Child::id).unwrap_or_default();
        sys::send_signal(pid, signal).with_context(|| format!("signalling {}", self.addr()))?;
        state.paused = paused;
        Ok(())
    }

    fn restart(&self) -> anyhow::Result<()> {
        self.kill()?;
        let child = launch(&self.dir, self.port)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("restarting {}", self.addr()))?;
        self.lock().child = Some(child);
        Ok(())
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        if let Err(err) = self.kill() {
            tracing::warn!(addr = %self.addr(), error = %err, "could not kill redis-server");
        }
    }
}

/// Whether the node's process is still there (a not yet reaped child cannot be confused with
/// another process).
fn running(state: &mut NodeState) -> bool {
    state
        .child
        .as_mut()
        .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
}

/// Starts redis-server in `dir` and waits until it answers PING.
fn launch(dir: &Path, port: u16) -> Result<Child, LaunchError> {
    let log_path = dir.join("redis.log");
    let out_path = dir.join("stdout.log");
    let (log_start, out_start) = (file_len(&log_path), file_len(&out_path));
    let spawn = || -> anyhow::Result<Child> {
        // Early failures (bad arguments) go to stdout before the log file is opened.
        let out = File::options()
            .create(true)
            .append(true)
            .open(&out_path)
            .context("opening stdout.log")?;
        let mut cmd = Command::new("redis-server");
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .args(["--port", &port.to_string()])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
            .args(["--appendonly", "no", "--save", ""])
            .arg("--dir")
            .arg(dir)
            .args([
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
            ])
            .arg("--logfile")
            .arg(&log_path)
            // Replicas would otherwise wait 5 s before their first sync.
            .args(["--repl-diskless-sync-delay", "0"])
            // A master pings its replicas every 10 s by default. Until the first ping a new
            // cluster's replication offsets are 0, and nodes leave replicas at offset 0 out of
            // CLUSTER SLOTS (see `check_slots_list_replicas`).
            .args(["--repl-ping-replica-period", "1"]);
        spawner::spawn(cmd, libc::SIGKILL).context("running redis-server (is it on PATH?)")
    };
    let mut child = spawn().map_err(LaunchError::Failed)?;
    let addr = format!("127.0.0.1:{port}");
    let ready = wait_until(START_TIMEOUT, || {
        if let Some(status) = child.try_wait()? {
            return Err(anyhow::anyhow!("redis-server exited ({status})"));
        }
        Ok(matches!(resp::call(&addr, &["PING"]), Ok(Reply::Status(pong)) if pong == "PONG"))
    });
    match ready {
        Ok(()) => Ok(child),
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = format!(
                "{}\n{}",
                log_tail(&log_path, log_start, 30),
                log_tail(&out_path, out_start, 10)
            );
            let err = err.context(format!("redis-server on port {port} did not start\n{tail}"));
            Err(LaunchError::classify(err, &tail))
        }
    }
}

/// A Redis Cluster of real nodes on 127.0.0.1 (node timeout 3 s).
///
/// Dropping it kills every node and removes its dir.
#[derive(Debug)]
pub struct RedisCluster {
    /// Declared before `dir`: fields drop in order, so the nodes die before their dir goes.
    nodes: Vec<RedisNode>,
    dir: InstanceDir,
}

impl RedisCluster {
    /// 3 masters with 1 replica each.
    pub fn start() -> anyhow::Result<RedisCluster> {
        RedisCluster::start_with(3, 1)
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
        ensure!(
            masters >= 3,
            "a Redis Cluster needs at least 3 masters (redis-cli --cluster create refuses fewer)"
        );
        let dir = InstanceDir::create("redis")?;
        let total = masters * (1 + replicas_per_master);
        let nodes = (0..total)
            .map(|_| RedisNode::start(dir.path()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // From here on, dropping `cluster` on an error cleans everything up.
        let cluster = RedisCluster { nodes, dir };
        cluster.create(replicas_per_master)?;
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
        Ok(cluster)
    }

    /// `127.0.0.1:{port}` of every node, killed ones included: what clients are configured with.
    pub fn seed_nodes(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::addr).collect()
    }

    /// Every node, in start order; their roles change with failovers (see `masters`).
    pub fn nodes(&self) -> &[RedisNode] {
        &self.nodes
    }

    /// The instance dir, with one subdir per node.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The masters that serve slots and are not flagged as failing, per `CLUSTER NODES` of the
    /// first live node, sorted by port. Changes after a failover; call `wait_until_healthy`
    /// first for an answer that every node agrees with.
    pub fn masters(&self) -> anyhow::Result<Vec<String>> {
        let mut last_err = None;
        for node in self.nodes.iter().filter(|node| node.is_live()) {
            match resp::call_text(&node.addr(), &["CLUSTER", "NODES"]) {
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
        let view = parse_cluster_nodes(&resp::call_text(master, &["CLUSTER", "NODES"])?);
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
        let answer = resp::call_text(&replica, &["CLUSTER", "FAILOVER"])?;
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
        let info = resp::call_text(addr, &["INFO", "commandstats"])?;
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
        self.node(addr)?.signal(libc::SIGSTOP, true)
    }

    /// SIGCONTs a paused node.
    pub fn resume_node(&self, addr: &str) -> anyhow::Result<()> {
        self.node(addr)?.signal(libc::SIGCONT, false)
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
            let reply = resp::call_text(&master, &["FLUSHALL"])?;
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
        let log_path = self.dir.path().join("cluster-create.log");
        let log = File::create(&log_path).context("creating cluster-create.log")?;
        let mut cmd = Command::new("redis-cli");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .args(["--cluster", "create"])
            .args(self.seed_nodes())
            .args([
                "--cluster-replicas",
                &replicas_per_master.to_string(),
                "--cluster-yes",
            ]);
        let mut child =
            spawner::spawn(cmd, libc::SIGKILL).context("running redis-cli (is it on PATH?)")?;
        match wait_timeout(&mut child, CLUSTER_TIMEOUT)? {
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
            let Reply::Array(Some(ranges)) = resp::call(&addr, &["CLUSTER", "SLOTS"])? else {
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
            let info = resp::call_text(&addr, &["CLUSTER", "INFO"])?;
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

            let view = parse_cluster_nodes(&resp::call_text(&addr, &["CLUSTER", "NODES"])?);
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
                let replication = resp::call_text(&addr, &["INFO", "replication"])?;
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
            .map(|node| log_tail(&node.dir.join("redis.log"), 0, 10))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Who serves which slots, as one node sees it: `(addr, slot ranges)` sorted by addr.
type SlotOwners = Vec<(String, Vec<(u16, u16)>)>;

/// Checks the view for `masters` masters with `replicas` live replicas each.
fn check_topology(view: &[ClusterNode], masters: usize, replicas: usize) -> anyhow::Result<()> {
    let serving: Vec<&ClusterNode> = view
        .iter()
        .filter(|n| n.has_flag("master") && !n.slots.is_empty() && !n.failing())
        .collect();
    ensure!(
        serving.len() == masters,
        "{} of {masters} masters serve slots",
        serving.len()
    );
    for master in serving {
        let attached = view
            .iter()
            .filter(|n| n.has_flag("slave") && !n.failing())
            .filter(|n| n.master_id.as_deref() == Some(master.id.as_str()))
            .count();
        ensure!(
            attached == replicas,
            "master {} has {attached} of {replicas} replicas",
            master.addr
        );
    }
    Ok(())
}

/// Polls `check` every 50 ms until it returns `Ok(true)`; an `Err` ends the wait at once.
fn wait_until(
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `name:value` lines, as in INFO and CLUSTER INFO.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClusterNode {
    id: String,
    /// `ip:port`, without the bus port or hostname.
    addr: String,
    flags: Vec<String>,
    master_id: Option<String>,
    /// Inclusive ranges; importing/migrating markers are left out.
    slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Flagged as failed, or suspected to be by this node.
    fn failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }

    fn slot_count(&self) -> u32 {
        self.slots
            .iter()
            .map(|&(first, last)| u32::from(last) - u32::from(first) + 1)
            .sum()
    }

    fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or(0)
    }
}

/// Parses `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`.
fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let addr = fields[1].split(['@', ',']).next().unwrap_or_default();
            let slots = fields[8..]
                .iter()
                .filter(|slot| !slot.starts_with('['))
                .filter_map(|slot| match slot.split_once('-') {
                    Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
                    None => slot.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_owned(),
                addr: addr.to_owned(),
                flags: fields[2].split(',').map(str::to_owned).collect(),
                master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
a1 127.0.0.1:20001@30001,host myself,master - 0 0 1 connected 0-5460 [5461->-b2]
b2 127.0.0.1:20002@30002 master,fail? - 0 0 2 connected 5461 5462-16383
c3 127.0.0.1:20003@30003 slave a1 0 0 1 connected
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].addr, "127.0.0.1:20001");
        assert_eq!(nodes[0].slots, vec![(0, 5460)]);
        assert!(nodes[0].has_flag("myself") && !nodes[0].failing());
        assert!(nodes[1].failing());
        assert_eq!(nodes[0].slot_count() + nodes[1].slot_count(), SLOTS);
        assert_eq!(nodes[2].master_id.as_deref(), Some("a1"));
        assert_eq!(nodes[2].port(), 20003);
        assert!(check_topology(&nodes, 2, 0).is_err());
    }
}
