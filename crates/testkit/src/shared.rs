//! The stores shared by all tests of one test process, and per-test key namespaces.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;

use anyhow::{anyhow, Context};
use rand::Rng;

use crate::postgres::PgServer;
use crate::redis::RedisCluster;

/// One PostgreSQL and one Redis Cluster (3 masters, 1 replica each) for the whole test process.
///
/// Never dropped (it lives in a static): its processes die with the test process through
/// `PR_SET_PDEATHSIG`, and its dirs are removed by a later test process.
#[derive(Debug)]
pub struct SharedStores {
    pub pg: PgServer,
    pub redis: RedisCluster,
}

/// The process-wide stores, started on first use (both at once, a few seconds).
///
/// Tests must not stop or kill them; use a [`PgServer`] or [`RedisCluster`] of their own for
/// that. Panics if they cannot start; the failure is remembered, so later tests fail fast with
/// the same message.
pub fn shared() -> &'static SharedStores {
    try_shared().unwrap_or_else(|err| panic!("{err:#}"))
}

pub(crate) fn try_shared() -> anyhow::Result<&'static SharedStores> {
    static SHARED: OnceLock<Result<SharedStores, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| start().map_err(|err| format!("{err:#}")))
        .as_ref()
        .map_err(|err| anyhow!("the shared test stores could not start: {err}"))
}

fn start() -> anyhow::Result<SharedStores> {
    thread::scope(|scope| {
        let pg = scope.spawn(PgServer::start);
        let redis = RedisCluster::start().context("starting the shared Redis Cluster");
        let pg = pg
            .join()
            .unwrap_or_else(|_| Err(anyhow!("PgServer::start panicked")))
            .context("starting the shared PostgreSQL");
        Ok(SharedStores {
            pg: pg?,
            redis: redis?,
        })
    })
}

/// A key prefix unique within this test process, e.g. `t3fa91c0:`, so that tests sharing a
/// cluster never see each other's keys.
pub fn unique_namespace() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // The fixed-width salt keeps the counter part unambiguous, so prefixes never collide.
    let salt = rand::thread_rng().gen_range(0..0x100_0000u32);
    format!("t{salt:06x}{:x}:", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn namespaces_are_unique() {
        let namespaces: HashSet<String> = (0..10_000).map(|_| unique_namespace()).collect();
        assert_eq!(namespaces.len(), 10_000);
        assert!(namespaces
            .iter()
            .all(|ns| ns.starts_with('t') && ns.ends_with(':')));
    }
}
