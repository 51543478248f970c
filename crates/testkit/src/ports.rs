//! Free TCP ports on 127.0.0.1.
//!
//! A port is free when it can be bound now; another test binary can still take it before our
//! server binds it, so callers retry on "Address already in use". Within this process, a lease
//! keeps the port from being handed out twice while its server lives.

use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::net::TcpListener;

use anyhow::bail;
use rand::Rng;

/// Redis Cluster's bus listens on the data port plus this.
pub(crate) const CLUSTER_BUS_OFFSET: u16 = 10_000;

static LEASED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port (and, for Redis, its cluster bus port) reserved within this process until dropped.
#[derive(Debug)]
pub(crate) struct PortLease {
    port: u16,
    with_bus: bool,
}

impl PortLease {
    /// Picks a random port in 20000..30000 that can be bound, and also `port + 10000` when
    /// `with_bus` is set.
    pub(crate) fn acquire(with_bus: bool) -> anyhow::Result<PortLease> {
        let mut rng = rand::thread_rng();
        for _ in 0..500 {
            let port = rng.gen_range(20_000..30_000u16);
            let bus = port + CLUSTER_BUS_OFFSET;
            let mut leased = LEASED.lock();
            if leased.contains(&port) || (with_bus && leased.contains(&bus)) {
                continue;
            }
            if !bindable(port) || (with_bus && !bindable(bus)) {
                continue;
            }
            leased.insert(port);
            if with_bus {
                leased.insert(bus);
            }
            return Ok(PortLease { port, with_bus });
        }
        bail!("found no free port in 20000..30000 after 500 tries")
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut leased = LEASED.lock();
        leased.remove(&self.port);
        if self.with_bus {
            leased.remove(&(self.port + CLUSTER_BUS_OFFSET));
        }
    }
}

/// Whether a server could bind 127.0.0.1:`port` now.
pub(crate) fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}
