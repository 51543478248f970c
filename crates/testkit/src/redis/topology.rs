//! What the nodes say about the cluster: `CLUSTER NODES` lines, `INFO` fields, and polling.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

/// The number of hash slots every healthy cluster covers.
pub(super) const SLOTS: u32 = 16_384;

/// Who serves which slots, as one node sees it: `(addr, slot ranges)` sorted by addr.
pub(super) type SlotOwners = Vec<(String, Vec<(u16, u16)>)>;

/// Checks the view for `masters` masters with `replicas` live replicas each.
pub(super) fn check_topology(
    view: &[ClusterNode],
    masters: usize,
    replicas: usize,
) -> anyhow::Result<()> {
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
pub(crate) fn wait_until(
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
pub(super) fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClusterNode {
    pub(super) id: String,
    /// `ip:port`, without the bus port or hostname.
    pub(super) addr: String,
    pub(super) flags: Vec<String>,
    pub(super) master_id: Option<String>,
    /// Inclusive ranges; importing/migrating markers are left out.
    pub(super) slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    pub(super) fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Flagged as failed, or suspected to be by this node.
    pub(super) fn failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }

    pub(super) fn slot_count(&self) -> u32 {
        self.slots
            .iter()
            .map(|&(first, last)| u32::from(last) - u32::from(first) + 1)
            .sum()
    }

    pub(super) fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or(0)
    }
}

/// Parses `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`.
pub(super) fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
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
