//! What the Redis masters say about themselves: `INFO` of every master, its `field:value`
//! lines and its command statistics, with the housekeeping commands told apart.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use fred::clients::Client as RedisClient;
use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::InfoKind;

/// Commands that are not the read path: monitoring (ours included), replication, cluster upkeep
/// and client health probes. They are left out of the commands-per-request figures.
const HOUSEKEEPING_COMMANDS: &[&str] = &[
    "info", "replconf", "ping", "cluster", "client", "hello", "command", "readonly", "role",
    "config", "slowlog", "latency", "memory", "select", "psync", "sync",
];

/// `INFO <section>` of every master (a node whose `INFO replication` says `role:master`), by
/// node address.
pub async fn masters_info(
    redis: &RedisClient,
    kind: InfoKind,
) -> anyhow::Result<BTreeMap<String, String>> {
    let routing = redis
        .cached_cluster_state()
        .context("the client has no cluster state")?;
    let mut out = BTreeMap::new();
    for server in routing.unique_primary_nodes() {
        let node = redis.with_cluster_node(server.clone());
        let replication: String = node
            .info(Some(InfoKind::Replication))
            .await
            .with_context(|| format!("INFO replication on {server}"))?;
        if info_field(&replication, "role") != Some("master") {
            continue;
        }
        let info: String = node
            .info(Some(kind.clone()))
            .await
            .with_context(|| format!("INFO on {server}"))?;
        out.insert(server.to_string(), info);
    }
    if out.is_empty() {
        bail!("no node says role:master");
    }
    Ok(out)
}

/// A `field:value` line of an `INFO` reply.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// `cmdstat_<name>:calls=<n>,…` lines of `INFO commandstats`: calls by command (subcommands
/// such as `client|setname` keep their full name).
pub fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.trim_end().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

pub fn is_housekeeping(command: &str) -> bool {
    let base = command.split('|').next().unwrap_or(command);
    HOUSEKEEPING_COMMANDS.contains(&base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_replies_are_parsed() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n";
        assert_eq!(info_field(info, "role"), Some("master"));
        assert_eq!(info_field(info, "rol"), None);
        let memory = "# Memory\r\nused_memory:1234\r\nused_memory_human:1.21K\r\n";
        assert_eq!(info_field(memory, "used_memory"), Some("1234"));

        let stats = "# Commandstats\r\n\
            cmdstat_hmget:calls=10,usec=20,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_client|setname:calls=3,usec=1,usec_per_call=0.33,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_info:calls=5,usec=50,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n";
        let calls = parse_commandstats(stats);
        assert_eq!(calls["hmget"], 10);
        assert_eq!(calls["client|setname"], 3);
        assert_eq!(calls.len(), 3);
    }

    #[test]
    fn housekeeping_is_told_by_the_base_command() {
        assert!(is_housekeeping("client|setname"));
        assert!(is_housekeeping("info"));
        assert!(!is_housekeeping("hmget"));
        assert!(!is_housekeeping("evalsha"));
    }
}
