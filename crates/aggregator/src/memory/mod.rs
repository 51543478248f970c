//! What this aggregator keeps in memory of the Redis Cluster, each dropped when ingest announces
//! a change to its user and never older than its time to live:
//!
//! - the **near-cache**: hot authors' timeline heads (`hotspot.near_cache_bytes`, at most
//!   `hotspot.near_cache_ttl_ms` old), the first mitigation of a hot partition;
//! - authors' **newest-post times** (home feeds skip authors by them; `aggregator.meta_cache_*`);
//! - users' **followee sets** (home feeds start from them; `aggregator.followee_cache_*`).
//!
//! All three are trusted only while the invalidation channel (`changes`) is subscribed: pub/sub
//! is at most once, so on every (re)connection, and when the subscriber falls behind, they are
//! emptied, and while it is down they are neither read nor filled. Once the client is gone for
//! good they are emptied and never used again.
//!
//! Each memory is a [`cache::Memory`]: a quick_cache cache with tickets, so that a load racing
//! an announcement cannot store what it read before the change.

pub mod cache;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use fred::{
    clients::Client,
    interfaces::{ClientLike, EventInterface, PubsubInterface},
};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use self::cache::{Memory, MemoryStats, Ticket};
use crate::slice::Head;

/// What one remembered newest-post time costs, beyond a memory's per-entry overhead.
const NEWEST_BYTES: usize = 16;

/// How long the subscriber waits before trying again after a failed (re)subscription.
const RETRY: Duration = Duration::from_millis(500);

/// How long a stopping subscriber waits for its connection to close.
const QUIT_WAIT: Duration = Duration::from_secs(1);

/// What a home feed needs to know of an author before reading its timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Newest {
    /// The user was deleted.
    Gone,
    /// The time of its newest cached post, ms since the Unix epoch (0: none), and whether the
    /// cache held every live post of the author (its meta's `complete`).
    At { newest_ms: i64, complete: bool },
}

/// The budgets (bytes, overhead included) and times to live of the memories. A zero budget
/// turns one off.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    pub heads_bytes: usize,
    pub heads_ttl: Duration,
    pub newest_bytes: usize,
    pub newest_ttl: Duration,
    pub following_bytes: usize,
    pub following_ttl: Duration,
}

/// The memories and the subscription that gates them; cheap to clone.
#[derive(Clone)]
pub struct Memories {
    inner: Arc<Inner>,
}

struct Inner {
    heads: Memory<Arc<Head>>,
    newest: Memory<Newest>,
    following: Memory<Arc<Vec<i64>>>,
    /// Whether the invalidation channel is subscribed: the memories are used only then.
    subscribed: AtomicBool,
}

impl Inner {
    /// Drops everything kept (an announcement may have been missed).
    fn forget_all(&self) {
        self.heads.invalidate_all();
        self.newest.invalidate_all();
        self.following.invalidate_all();
    }

    fn forget(&self, user_id: i64) {
        self.heads.invalidate(user_id);
        self.newest.invalidate(user_id);
        self.following.invalidate(user_id);
    }

    fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }
}

impl Memories {
    /// Memories within `budgets`, unused until [`follow_changes`](Self::follow_changes) has
    /// subscribed.
    pub fn new(budgets: Budgets) -> Self {
        let inner = Arc::new(Inner {
            heads: Memory::new(budgets.heads_bytes, budgets.heads_ttl),
            newest: Memory::new(budgets.newest_bytes, budgets.newest_ttl),
            following: Memory::new(budgets.following_bytes, budgets.following_ttl),
            subscribed: AtomicBool::new(false),
        });
        Self { inner }
    }

    /// Whether any memory is on (else nothing needs the subscription).
    pub fn any_enabled(&self) -> bool {
        let inner = &self.inner;
        inner.heads.is_enabled() || inner.newest.is_enabled() || inner.following.is_enabled()
    }

    /// The near-cache of hot authors' heads, while it may be used (on, and subscribed).
    pub fn heads(&self) -> Option<&Memory<Arc<Head>>> {
        let inner = &self.inner;
        (inner.heads.is_enabled() && inner.subscribed()).then_some(&inner.heads)
    }

    /// The near-cache's counters, and its budget.
    pub fn heads_stats(&self) -> (MemoryStats, usize) {
        (self.inner.heads.stats(), self.inner.heads.capacity_bytes())
    }

    /// Drops the heads of authors `keep` rejects (they left the hot set).
    pub fn retain_heads(&self, keep: impl Fn(i64) -> bool) {
        self.inner.heads.retain(keep);
    }

    /// The newest-post times of `authors` as last read, where still valid.
    pub fn newest_of(&self, authors: &[i64]) -> Vec<Option<Newest>> {
        if !self.inner.subscribed() {
            return vec![None; authors.len()];
        }
        self.inner.newest.peek_many(authors)
    }

    /// A ticket to take before reading newest-post times from Redis.
    pub fn newest_ticket(&self) -> Ticket {
        self.inner.newest.ticket()
    }

    /// Keeps what a read found, unless a change to the author was announced since `ticket`.
    pub fn remember_newest(&self, author_id: i64, newest: Newest, ticket: Ticket) {
        if self.inner.subscribed() {
            self.inner
                .newest
                .insert(author_id, newest, NEWEST_BYTES, ticket);
        }
    }

    /// Forgets what was remembered of `author_id` (a read found its timeline gone).
    pub fn forget_newest(&self, author_id: i64) {
        self.inner.newest.invalidate(author_id);
    }

    /// `user_id`'s followees as last read, if still valid.
    pub fn followees_of(&self, user_id: i64) -> Option<Arc<Vec<i64>>> {
        if !self.inner.subscribed() {
            return None;
        }
        self.inner.following.get(user_id)
    }

    /// A ticket to take before reading a followee set from Redis.
    pub fn followees_ticket(&self) -> Ticket {
        self.inner.following.ticket()
    }

    /// Keeps a followee set read from Redis, unless a follow change by the user was announced
    /// since `ticket`.
    pub fn remember_followees(&self, user_id: i64, followees: Arc<Vec<i64>>, ticket: Ticket) {
        if self.inner.subscribed() {
            let bytes = followees.len() * std::mem::size_of::<i64>();
            self.inner
                .following
                .insert(user_id, followees, bytes, ticket);
        }
    }

    /// Follows the `channel` of change announcements on a client of its own (cloned from
    /// `client`) until `stop`: each announced user is dropped from every memory. Messages missed
    /// while disconnected cannot be known: on every (re)connection everything is dropped, and
    /// nothing is used until the subscription is back. Returns early, with everything dropped
    /// and the memories off for good, when the client is gone.
    pub async fn follow_changes(self, client: Client, channel: String, stop: CancellationToken) {
        let subscriber = client.clone_new();
        stop.run_until_cancelled(self.follow(&subscriber, &channel))
            .await;
        self.inner.subscribed.store(false, Ordering::Release);
        // Bounded: a subscriber that cannot reach its node has nothing to close.
        let _ = tokio::time::timeout(QUIT_WAIT, subscriber.quit()).await;
    }

    async fn follow(&self, subscriber: &Client, channel: &str) {
        let inner = &self.inner;
        let mut messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
        subscriber.connect();
        loop {
            inner.subscribed.store(false, Ordering::Release);
            inner.forget_all();
            if subscriber.wait_for_connect().await.is_err() {
                tokio::time::sleep(RETRY).await;
                continue;
            }
            if let Err(error) = subscriber.subscribe(channel).await {
                tracing::warn!(%error, "cannot subscribe to change announcements; memories off until then");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            inner.forget_all();
            inner.subscribed.store(true, Ordering::Release);
            loop {
                tokio::select! {
                    message = messages.recv() => match message {
                        Ok(message) => {
                            if let Some(text) = message.value.as_str() {
                                for user in shardfeed_cache::announce::decode(&text) {
                                    inner.forget(user);
                                }
                            }
                        }
                        // Fell behind: whatever was missed is unknown.
                        Err(RecvError::Lagged(_)) => inner.forget_all(),
                        // The client is gone: nothing will tell of changes any more.
                        Err(RecvError::Closed) => {
                            inner.subscribed.store(false, Ordering::Release);
                            inner.forget_all();
                            return;
                        }
                    },
                    _ = reconnects.recv() => break,
                }
            }
        }
    }
}
