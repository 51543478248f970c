//! Taking a hot author's load off the node that owns it: the hot read path chooses among the
//! ways to read the author's timeline head ([`crate::read::head`]) instead of the per-node
//! batches. Each mitigation is switchable:
//!
//! 1. near-cache: the head is kept in memory ([`crate::memory`], bounded in bytes) for at most
//!    `hotspot.near_cache_ttl_ms`, and dropped as soon as ingest announces a change to the
//!    author (pub/sub `changes`);
//! 2. coalescing: concurrent loads of one author share one load ([`coalesce`]);
//! 3. replica reads: loads go to a replica of the author's master (ingest confirms every change
//!    on a replica with `WAIT` before announcing it, so a load that follows an announcement
//!    sees the change);
//! 4. key replicas: for an author in the shared hot set, ingest keeps a copy of the timeline on
//!    every other master (`shardfeed_ingest::hot_copies`); loads take the original and the
//!    copies in turn, and the original whenever a copy is not (or no longer) there.
//!
//! Which authors are hot is [`crate::detect`]'s answer.

pub mod coalesce;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use fred::{error::Error, util::redis_keyslot};
use shardfeed_cache::layout::{copy_numbers, AuthorKeys};
use shardfeed_cache::CacheLayout;
use shardfeed_proto::v1::Mitigation;
use shardfeed_server::config::HotspotSettings;

use self::coalesce::Coalescer;
use crate::{
    detect::{server_name, Detector},
    memory::{cache::MemoryStats, Memories},
    read::{
        head::{self, Source},
        nodes::NodeClients,
    },
    slice::Head,
};

/// What a head read gives: the head, `None` when the cache cannot answer for the author, or
/// the error (shared by everyone who joined the load).
pub type Loaded = Result<Option<Arc<Head>>, Arc<Error>>;

/// The hot read path; cheap to clone.
#[derive(Clone)]
pub struct HotReads {
    inner: Arc<Inner>,
}

struct Inner {
    settings: HotspotSettings,
    nodes: NodeClients,
    layout: CacheLayout,
    detect: Detector,
    memories: Memories,
    loads: Coalescer<Loaded>,
    /// Turns over the original and the copies of a hot author.
    next_copy: AtomicU64,
    coalesced: AtomicU64,
    replica_reads: AtomicU64,
    copy_reads: AtomicU64,
}

/// One hot author as reported by `GetHotAuthors`.
#[derive(Debug, Clone, PartialEq)]
pub struct HotAuthor {
    pub author_id: i64,
    pub rate_per_s: f64,
    pub node: Option<String>,
    pub slot: u16,
    pub mitigations: Vec<Mitigation>,
}

/// Counters for `GetHotAuthors`.
#[derive(Debug, Clone, Default)]
pub struct HotStats {
    pub nodes: Vec<(String, u64)>,
    pub near_cache: MemoryStats,
    pub near_cache_capacity: usize,
    pub coalesced: u64,
    pub replica_reads: u64,
    pub copy_reads: u64,
}

impl HotReads {
    /// The hot path over `nodes`' cluster client, acting on `detect`'s hot set and keeping
    /// heads in `memories`.
    pub fn new(
        nodes: NodeClients,
        layout: CacheLayout,
        settings: HotspotSettings,
        detect: Detector,
        memories: Memories,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                loads: Coalescer::new(settings.near_cache_ttl()),
                settings,
                nodes,
                layout,
                detect,
                memories,
                next_copy: AtomicU64::new(0),
                coalesced: AtomicU64::new(0),
                replica_reads: AtomicU64::new(0),
                copy_reads: AtomicU64::new(0),
            }),
        }
    }

    /// Splits `authors` into those that take the hot read path (hot, and some mitigation is
    /// on) and the others, with one look at the hot set for all of them.
    fn split_hot(&self, authors: &[i64]) -> (Vec<i64>, Vec<i64>) {
        if !self.inner.settings.any_mitigation() {
            return (Vec::new(), authors.to_vec());
        }
        let hot = self.inner.detect.hot_set();
        if hot.is_empty() {
            return (Vec::new(), authors.to_vec());
        }
        authors.iter().partition(|a| hot.contains_key(a))
    }

    /// The heads of the hot authors among `authors`, each read within `timeout` (like a node's
    /// batch: a head read stuck behind a reconnecting cluster client falls back instead of
    /// waiting for the command timeout); and the authors left to the ordinary path (not hot,
    /// or their head could not be read).
    pub async fn heads(
        &self,
        authors: &[i64],
        timeout: Duration,
    ) -> (Vec<(i64, Arc<Head>)>, Vec<i64>) {
        let (hot, mut cold) = self.split_hot(authors);
        if hot.is_empty() {
            return (Vec::new(), cold);
        }
        let reads = futures::future::join_all(
            hot.iter()
                .map(|author| tokio::time::timeout(timeout, self.head(*author))),
        )
        .await;
        let mut heads = Vec::with_capacity(hot.len());
        for (author, read) in hot.into_iter().zip(reads) {
            match read {
                Ok(Ok(Some(head))) => heads.push((author, head)),
                Ok(Ok(None)) => cold.push(author),
                Ok(Err(error)) => {
                    tracing::debug!(author, %error, "hot read failed; ordinary path");
                    cold.push(author);
                }
                Err(_) => {
                    tracing::debug!(author, ?timeout, "hot read timed out; ordinary path");
                    cold.push(author);
                }
            }
        }
        (heads, cold)
    }

    /// A hot author's timeline head: from the near-cache, or loaded (coalesced with loads in
    /// flight, from a replica or a copy) as configured. `Ok(None)`: the cache cannot answer
    /// for the author; take the ordinary path.
    pub async fn head(&self, author_id: i64) -> Loaded {
        let inner = &self.inner;
        if let Some(head) = inner
            .memories
            .heads()
            .and_then(|heads| heads.get(author_id))
        {
            return Ok(Some(head));
        }
        if !inner.settings.coalescing_enabled {
            return self.load(author_id).await;
        }
        let this = self.clone();
        let (load, joined) = inner
            .loads
            .join_or_start(author_id, async move { this.load(author_id).await });
        if joined {
            inner.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        load.await
    }

    /// Reads a head from Redis and, while the near-cache is in use, keeps it unless an
    /// announcement of a change to the author arrived meanwhile (memories only ever go from in
    /// use to off, so a load never stores what its lookup could not have used).
    async fn load(&self, author_id: i64) -> Loaded {
        let inner = &self.inner;
        let heads = inner.memories.heads();
        let ticket = heads.map(|heads| heads.ticket());
        let original = inner.layout.author(author_id);
        let head = match self.copy_to_read(author_id) {
            Some(copy) => match self.load_from(&copy).await {
                Ok(Some(head)) => Some(head),
                // No copy there (not built yet, dropped, or placed for another topology): the
                // original answers.
                _ => self.load_from(&original).await?,
            },
            None => self.load_from(&original).await?,
        };
        Ok(head.map(|head| {
            let head = Arc::new(head);
            if let (Some(heads), Some(ticket)) = (heads, ticket) {
                heads.insert(author_id, Arc::clone(&head), head.weight(), ticket);
            }
            head
        }))
    }

    /// One head read from the keys `keys`, on a replica when replica reads are on.
    async fn load_from(&self, keys: &AuthorKeys) -> Result<Option<Head>, Arc<Error>> {
        let inner = &self.inner;
        let cluster = inner.nodes.cluster();
        let replicas = cluster.replicas();
        let source = if inner.settings.replica_reads_enabled {
            inner.replica_reads.fetch_add(1, Ordering::Relaxed);
            Source::Replica(&replicas)
        } else {
            inner
                .detect
                .count_request(inner.nodes.owner_of(&keys.meta).as_ref());
            Source::Primary(cluster)
        };
        head::load(source, keys, inner.settings.near_cache_posts)
            .await
            .map_err(Arc::new)
    }

    /// With key replicas on and `author_id` in the shared hot set: the copy this read takes,
    /// or `None` for the original (the original and each copy in turn).
    fn copy_to_read(&self, author_id: i64) -> Option<AuthorKeys> {
        let inner = &self.inner;
        if !inner.settings.key_replicas_enabled || !inner.detect.shared_set().contains(&author_id) {
            return None;
        }
        let routing = inner.nodes.routing()?;
        let copies = copy_numbers(&inner.layout, &routing, author_id);
        let turn = inner.next_copy.fetch_add(1, Ordering::Relaxed) as usize % (copies.len() + 1);
        if turn == 0 {
            return None;
        }
        inner.copy_reads.fetch_add(1, Ordering::Relaxed);
        Some(inner.layout.author_copy(author_id, copies[turn - 1]))
    }

    /// The hot authors, hottest first, with the mitigations applied to each.
    pub fn hot_authors(&self, limit: usize) -> Vec<HotAuthor> {
        let inner = &self.inner;
        let settings = &inner.settings;
        let mut mitigations = Vec::new();
        if settings.near_cache_enabled {
            mitigations.push(Mitigation::NearCache);
        }
        if settings.replica_reads_enabled {
            mitigations.push(Mitigation::ReplicaReads);
        }
        if settings.coalescing_enabled {
            mitigations.push(Mitigation::Coalescing);
        }
        let shared = inner.detect.shared_set();
        let mut hot: Vec<(i64, f64)> = inner
            .detect
            .hot_set()
            .iter()
            .map(|(a, r)| (*a, *r))
            .collect();
        hot.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hot.truncate(limit);
        hot.into_iter()
            .map(|(author_id, rate_per_s)| {
                let meta = inner.layout.meta(author_id);
                let mut mitigations = mitigations.clone();
                if settings.key_replicas_enabled && shared.contains(&author_id) {
                    mitigations.push(Mitigation::KeyReplicas);
                }
                HotAuthor {
                    author_id,
                    rate_per_s,
                    node: inner.nodes.owner_of(&meta).as_ref().map(server_name),
                    slot: redis_keyslot(meta.as_bytes()),
                    mitigations,
                }
            })
            .collect()
    }

    /// How many authors are hot here now.
    pub fn hot_set_len(&self) -> usize {
        self.inner.detect.hot_set().len()
    }

    pub fn stats(&self) -> HotStats {
        let inner = &self.inner;
        let (near_cache, near_cache_capacity) = inner.memories.heads_stats();
        HotStats {
            nodes: inner.detect.node_requests(),
            near_cache,
            near_cache_capacity,
            coalesced: inner.coalesced.load(Ordering::Relaxed),
            replica_reads: inner.replica_reads.load(Ordering::Relaxed),
            copy_reads: inner.copy_reads.load(Ordering::Relaxed),
        }
    }

    /// Recomputes the hot set now, and drops the heads of authors that left it.
    pub async fn refresh(&self) {
        let hot = self.inner.detect.refresh().await;
        self.inner
            .memories
            .retain_heads(|author| hot.contains_key(&author));
    }

    /// [`refresh`](Self::refresh) every `hotspot.refresh_ms`, until dropped.
    pub async fn refresh_every_period(self) {
        let mut tick = tokio::time::interval(self.inner.settings.refresh());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }
}
