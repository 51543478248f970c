//! RedisCluster against real redis-server nodes.

use std::process::Command;
use std::time::{Duration, Instant};

use shardfeed_testkit::{shared, unique_namespace, RedisCluster, RedisCredentials};

const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a command through `redis-cli -c` (which follows cluster redirections) as `auth`'s user.
fn redis_cli_as(auth: &RedisCredentials, addr: &str, args: &[&str]) -> String {
    let (host, port) = addr.split_once(':').unwrap();
    let output = Command::new("redis-cli")
        .env("REDISCLI_AUTH", &auth.password)
        .args(["--user", &auth.username, "--no-auth-warning"])
        .args(["-c", "-h", host, "-p", port])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed: {output:?}"
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The reply of a single `command` sent on a fresh connection, after `auth` (`AUTH user
/// password`) when given: what a client that does not know the credentials sees.
fn raw_reply(addr: &str, auth: Option<(&str, &str)>, command: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if let Some((user, password)) = auth {
        write!(stream, "AUTH {user} {password}\r\n").unwrap();
        reader.read_line(&mut line).unwrap();
        if line.starts_with('-') {
            return line.trim().to_owned();
        }
        line.clear();
    }
    write!(stream, "{command}\r\n").unwrap();
    reader.read_line(&mut line).unwrap();
    line.trim().to_owned()
}

#[test]
fn cluster_starts_with_three_masters_and_a_replica_each() {
    let started = Instant::now();
    let cluster = RedisCluster::start().unwrap();
    eprintln!("RedisCluster::start took {:?}", started.elapsed());
    assert_eq!(cluster.nodes().len(), 6);
    assert_eq!(cluster.seed_nodes().len(), 6);
    assert_eq!(cluster.masters().unwrap().len(), 3);
    for node in cluster.nodes() {
        assert_eq!(node.addr(), format!("127.0.0.1:{}", node.port()));
        assert_eq!(
            redis_cli_as(cluster.credentials(), &node.addr(), &["PING"]),
            "PONG"
        );
    }

    let seed = &cluster.seed_nodes()[0];
    let key = format!("{}greeting", unique_namespace());
    assert_eq!(
        redis_cli_as(cluster.credentials(), seed, &["SET", &key, "hello"]),
        "OK"
    );
    assert_eq!(
        redis_cli_as(cluster.credentials(), seed, &["GET", &key]),
        "hello"
    );
    cluster.flush_all().unwrap();
    assert_eq!(
        redis_cli_as(cluster.credentials(), seed, &["GET", &key]),
        ""
    );

    let (pids, dir): (Vec<u32>, _) = (
        cluster.nodes().iter().filter_map(|n| n.pid()).collect(),
        cluster.dir().to_owned(),
    );
    drop(cluster);
    assert!(!dir.exists(), "{} is left behind", dir.display());
    for pid in pids {
        assert!(!alive(pid), "redis-server {pid} survived the drop");
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn killing_a_master_promotes_its_replica_and_the_master_rejoins_as_replica() {
    let cluster = RedisCluster::start().unwrap();
    let before = cluster.masters().unwrap();
    let victim = before[0].clone();

    cluster.kill_node(&victim).unwrap();
    assert!(
        cluster
            .wait_until_healthy(Duration::from_millis(200))
            .is_err(),
        "healthy right after a master died"
    );
    let started = Instant::now();
    cluster.wait_until_healthy(FAILOVER_TIMEOUT).unwrap();
    eprintln!("failover took {:?}", started.elapsed());
    let after = cluster.masters().unwrap();
    assert_eq!(after.len(), 3);
    assert!(
        !after.contains(&victim),
        "{victim} still a master: {after:?}"
    );
    assert_ne!(before, after);

    cluster.restart_node(&victim).unwrap();
    cluster.wait_until_healthy(FAILOVER_TIMEOUT).unwrap();
    assert_eq!(
        cluster.masters().unwrap(),
        after,
        "the old master came back as a replica"
    );
    let victim_node = cluster.nodes().iter().find(|n| n.addr() == victim).unwrap();
    assert!(victim_node.is_live());
    assert!(redis_cli_as(cluster.credentials(), &victim, &["ROLE"]).starts_with("slave"));
}

#[test]
fn a_paused_master_is_failed_over_and_resumes_as_replica() {
    let cluster = RedisCluster::start().unwrap();
    let victim = cluster.masters().unwrap()[1].clone();

    cluster.pause_node(&victim).unwrap();
    cluster.wait_until_healthy(FAILOVER_TIMEOUT).unwrap();
    assert!(!cluster.masters().unwrap().contains(&victim));

    cluster.resume_node(&victim).unwrap();
    cluster.wait_until_healthy(FAILOVER_TIMEOUT).unwrap();
    assert_eq!(cluster.masters().unwrap().len(), 3);
    assert!(redis_cli_as(cluster.credentials(), &victim, &["ROLE"]).starts_with("slave"));
}

#[test]
fn start_with_makes_the_requested_topology() {
    let cluster = RedisCluster::start_with(3, 0).unwrap();
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.masters().unwrap().len(), 3);
    assert!(RedisCluster::start_with(2, 1).is_err());
    assert!(cluster.kill_node("127.0.0.1:1").is_err());
}

#[test]
fn the_shared_cluster_is_healthy() {
    let redis = &shared().redis;
    redis.wait_until_healthy(Duration::from_secs(10)).unwrap();
    assert_eq!(redis.masters().unwrap().len(), 3);
    assert!(std::ptr::eq(redis, &shared().redis));
}

#[test]
fn the_nodes_accept_the_acl_user_alone() {
    let redis = &shared().redis;
    let auth = redis.credentials();
    assert_eq!(auth.username, "shardfeed");
    assert!(auth.password.len() >= 16, "a random password");
    assert!(!format!("{auth:?}").contains(&auth.password), "{auth:?}");
    let env = redis.settings_env();
    assert!(env.contains(&("SHARDFEED_REDIS__USERNAME".into(), auth.username.clone())));
    assert!(env.contains(&("SHARDFEED_REDIS__PASSWORD".into(), auth.password.clone())));
    assert!(env.contains(&(
        "SHARDFEED_REDIS__NODES".into(),
        redis.seed_nodes().join(",")
    )));

    for node in redis.nodes() {
        let addr = node.addr();
        let user = auth.username.as_str();
        assert!(
            raw_reply(&addr, None, "PING").starts_with("-NOAUTH"),
            "{addr} answers without AUTH"
        );
        let wrong = raw_reply(&addr, Some((user, "not-the-password")), "PING");
        assert!(wrong.starts_with("-WRONGPASS"), "{addr}: {wrong}");
        // The `default` user is off, even with the right password.
        let default = raw_reply(&addr, Some(("default", &auth.password)), "PING");
        assert!(default.starts_with("-WRONGPASS"), "{addr}: {default}");
        assert_eq!(
            raw_reply(&addr, Some((user, &auth.password)), "PING"),
            "+PONG"
        );
    }
    // Replicas authenticate to their masters with the same user.
    for replica in redis.replicas().unwrap() {
        let info = redis_cli_as(auth, &replica, &["INFO", "replication"]);
        assert!(info.contains("master_link_status:up"), "{replica}: {info}");
    }
    // The password is on no command line.
    for node in redis.nodes() {
        let pid = node.pid().unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(!String::from_utf8_lossy(&cmdline).contains(&auth.password));
    }
}

#[test]
fn every_cluster_has_a_password_of_its_own() {
    let cluster = RedisCluster::start_with(3, 0).unwrap();
    let (mine, shared_auth) = (cluster.credentials(), shared().redis.credentials());
    assert_ne!(mine.password, shared_auth.password);
    let addr = &cluster.seed_nodes()[0];
    let other = raw_reply(
        addr,
        Some((&shared_auth.username, &shared_auth.password)),
        "PING",
    );
    assert!(other.starts_with("-WRONGPASS"), "{other}");
}
