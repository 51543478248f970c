//! Coalescing: concurrent loads of one key share one load (a [`Shared`] future per key).
//!
//! A load is joined only while someone still waits on it and while it is younger than a bound
//! (the near-cache's time to live): a load every waiter gave up on (a node slower than the
//! readers' timeout) is dropped with its last waiter, never resumed by a later request, and a
//! slow load is not handed to a request that arrives long after it started, which would get a
//! read older than the bound.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use futures::{
    future::{BoxFuture, Shared, WeakShared},
    FutureExt,
};
use parking_lot::Mutex;

/// A load in flight, shared by everyone who waits on it.
pub type Load<T> = Shared<BoxFuture<'static, T>>;

/// Loads in flight by key.
pub struct Coalescer<T> {
    loads: Arc<Mutex<Loads<T>>>,
    bound: Duration,
}

struct Loads<T> {
    by_key: HashMap<i64, InFlight<T>>,
    /// Numbers loads, so that a finished one removes only itself.
    next: u64,
}

struct InFlight<T> {
    started: Instant,
    number: u64,
    /// Weak: a load lives only as long as someone waits on it.
    load: WeakShared<BoxFuture<'static, T>>,
}

impl<T: Clone + Send + Sync + 'static> Coalescer<T> {
    /// Loads are joined while younger than `bound`.
    pub fn new(bound: Duration) -> Self {
        Self {
            loads: Arc::new(Mutex::new(Loads {
                by_key: HashMap::new(),
                next: 0,
            })),
            bound,
        }
    }

    /// The load of `key` in flight, if one may be joined (`true`); else `load`, started now and
    /// offered to whoever asks next (`false`).
    pub fn join_or_start<F>(&self, key: i64, load: F) -> (Load<T>, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut loads = self.loads.lock();
        if let Some(running) = loads.by_key.get(&key) {
            if running.started.elapsed() < self.bound {
                if let Some(load) = running.load.upgrade() {
                    return (load, true);
                }
            }
        }
        let number = loads.next;
        loads.next += 1;
        let done = Done {
            loads: Arc::downgrade(&self.loads),
            key,
            number,
        };
        let load: Load<T> = async move {
            let _done = done;
            load.await
        }
        .boxed()
        .shared();
        let weak = load.downgrade().expect("a load not polled yet is pending");
        loads.by_key.insert(
            key,
            InFlight {
                started: Instant::now(),
                number,
                load: weak,
            },
        );
        (load, false)
    }

    /// How many loads are remembered (finished and abandoned ones are forgotten).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.loads.lock().by_key.len()
    }
}

/// Forgets its load when the load ends: finished, or dropped with its last waiter.
struct Done<T> {
    loads: Weak<Mutex<Loads<T>>>,
    key: i64,
    number: u64,
}

impl<T> Drop for Done<T> {
    fn drop(&mut self) {
        if let Some(loads) = self.loads.upgrade() {
            let mut loads = loads.lock();
            if loads.by_key.get(&self.key).map(|l| l.number) == Some(self.number) {
                loads.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::oneshot;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn concurrent_waiters_share_one_load() {
        let coalescer = Coalescer::<u32>::new(HOUR);
        let started = Arc::new(AtomicUsize::new(0));
        let (release, released) = oneshot::channel::<()>();
        let first = {
            let started = Arc::clone(&started);
            coalescer.join_or_start(1, async move {
                started.fetch_add(1, Ordering::SeqCst);
                released.await.unwrap();
                7
            })
        };
        assert!(!first.1);
        let second = coalescer.join_or_start(1, async { unreachable!("joined") });
        assert!(second.1);
        let other = coalescer.join_or_start(2, async { 9 });
        assert!(!other.1, "another key has its own load");
        release.send(()).unwrap();
        assert_eq!((first.0.await, second.0.await, other.0.await), (7, 7, 9));
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(coalescer.in_flight(), 0, "finished loads are forgotten");
    }

    #[tokio::test]
    async fn a_load_every_waiter_gave_up_on_is_dropped_not_joined() {
        let coalescer = Coalescer::<u32>::new(HOUR);
        let (load, joined) = coalescer.join_or_start(1, std::future::pending());
        assert!(!joined);
        assert!(tokio::time::timeout(Duration::from_millis(10), load)
            .await
            .is_err());
        assert_eq!(coalescer.in_flight(), 0, "dropped with its last waiter");
        let (load, joined) = coalescer.join_or_start(1, async { 3 });
        assert!(!joined);
        assert_eq!(load.await, 3);
    }

    #[tokio::test]
    async fn an_old_load_is_not_joined() {
        let coalescer = Coalescer::<u32>::new(Duration::from_millis(50));
        let (slow, _) = coalescer.join_or_start(1, std::future::pending());
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (fresh, joined) = coalescer.join_or_start(1, std::future::pending());
        assert!(!joined, "the slow load is past the bound");
        // The slow load's end does not forget the fresh one.
        drop(slow);
        let (_, joined) = coalescer.join_or_start(1, async { unreachable!("joined") });
        assert!(joined);
        drop(fresh);
    }
}
