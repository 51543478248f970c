//! Hot partitions: seeing them, and taking their load off the node that owns them.
//!
//! **Detection.** Every read of an author's keys (a home feed reads each followee's, a profile
//! view one author's) is counted in a decaying top-k ([`topk::DecayingTopK`], bounded memory).
//! Every `hotspot.refresh_ms` the authors read at least `hotspot.min_rate_per_s` times per
//! second for certain (the estimate minus its error bound; at most `hotspot.max_hot_authors`)
//! become this aggregator's hot set. It is logged
//! when it changes and published to the shared sorted set `hot` (author → until when), whose
//! union over every aggregator is the hot set everyone acts on.
//!
//! **Mitigations** (each switchable): a hot author's timeline head is read by the hot path
//! ([`Hotspots::head`]) instead of the per-node batches:
//! 1. near-cache: the head is kept in memory ([`near_cache::NearCache`], bounded in bytes) for
//!    at most `hotspot.near_cache_ttl_ms`, and dropped as soon as ingest announces a change to
//!    the author (pub/sub `changes`);
//! 2. coalescing: concurrent loads of one author share one load;
//! 3. replica reads: loads go to a replica of the author's master (ingest confirms every change
//!    on a replica with `WAIT` before announcing it, so a load that follows an announcement
//!    sees the change);
//! 4. key replicas: for an author in the shared hot set, ingest keeps a copy of the timeline on
//!    every other master (`shardfeed_ingest::hot_copies`); loads take the original and the
//!    copies in turn, and the original whenever a copy is not (or no longer) there.

pub mod head;
pub mod near_cache;
pub mod topk;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use fred::{
    clients::Client,
    error::Error,
    interfaces::{ClientLike, ClusterInterface, EventInterface, PubsubInterface},
    types::config::Server,
    util::redis_keyslot,
};
use futures::{future::Shared, FutureExt};
use shardfeed_cache::{
    hot_set,
    layout::{copy_numbers, AuthorKeys},
    CacheLayout,
};
use shardfeed_proto::v1::Mitigation;
use shardfeed_server::config::HotspotSettings;

use self::{
    head::{Head, Source},
    near_cache::{NearCache, NearCacheStats},
    topk::{DecayingTopK, TopEntry},
};

type Load = Shared<futures::future::BoxFuture<'static, Result<Option<Arc<Head>>, String>>>;

/// A coalesced load of one author's head.
struct InFlight {
    started: Instant,
    number: u64,
    load: Load,
}

/// Detection and the hot read path; cheap to clone.
#[derive(Clone)]
pub struct Hotspots {
    inner: Arc<Inner>,
    /// The OpenTelemetry instruments reading this state (exported when OTLP is configured).
    _metrics: Arc<Metrics>,
}

/// Observable instruments on the global meter; each reads [`Inner`] when collected.
struct Metrics {
    _node_requests: opentelemetry::metrics::ObservableCounter<u64>,
    _hot_authors: opentelemetry::metrics::ObservableGauge<u64>,
    _near_cache: opentelemetry::metrics::ObservableCounter<u64>,
    _near_cache_bytes: opentelemetry::metrics::ObservableGauge<u64>,
}

impl Metrics {
    fn register(inner: &Arc<Inner>) -> Self {
        use opentelemetry::KeyValue;
        let meter = opentelemetry::global::meter("shardfeed-aggregator");
        let weak = Arc::downgrade(inner);
        let node_requests = meter
            .u64_observable_counter("shardfeed.aggregator.node_requests")
            .with_description("Requests (round trips) sent to each Redis Cluster node")
            .with_callback(move |observer| {
                if let Some(inner) = weak.upgrade() {
                    for (node, count) in lock(&inner.node_requests).iter() {
                        observer.observe(*count, &[KeyValue::new("node", node_name(node))]);
                    }
                }
            })
            .build();
        let weak = Arc::downgrade(inner);
        let hot_authors = meter
            .u64_observable_gauge("shardfeed.aggregator.hot_authors")
            .with_description("Authors in the hot set (labelled by author id)")
            .with_callback(move |observer| {
                if let Some(inner) = weak.upgrade() {
                    let hot = inner.hot.read().unwrap_or_else(|e| e.into_inner()).clone();
                    observer.observe(hot.len() as u64, &[]);
                    for (author, rate) in hot.iter() {
                        observer
                            .observe(rate.round() as u64, &[KeyValue::new("author_id", *author)]);
                    }
                }
            })
            .build();
        let weak = Arc::downgrade(inner);
        let near_cache = meter
            .u64_observable_counter("shardfeed.aggregator.near_cache.lookups")
            .with_description("Near-cache lookups by outcome (hit, miss)")
            .with_callback(move |observer| {
                if let Some(inner) = weak.upgrade() {
                    let stats = inner.near.stats();
                    observer.observe(stats.hits, &[KeyValue::new("outcome", "hit")]);
                    observer.observe(stats.misses, &[KeyValue::new("outcome", "miss")]);
                }
            })
            .build();
        let weak = Arc::downgrade(inner);
        let near_cache_bytes = meter
            .u64_observable_gauge("shardfeed.aggregator.near_cache.bytes")
            .with_description("Bytes the near-cache holds")
            .with_unit("By")
            .with_callback(move |observer| {
                if let Some(inner) = weak.upgrade() {
                    observer.observe(inner.near.stats().bytes as u64, &[]);
                }
            })
            .build();
        Self {
            _node_requests: node_requests,
            _hot_authors: hot_authors,
            _near_cache: near_cache,
            _near_cache_bytes: near_cache_bytes,
        }
    }
}

struct Inner {
    settings: HotspotSettings,
    client: Client,
    layout: CacheLayout,
    topk: Mutex<DecayingTopK>,
    /// The hot set acted on: author → access rate seen here (0 for authors only others saw).
    hot: RwLock<Arc<HashMap<i64, f64>>>,
    /// The shared hot set (every aggregator's): the authors ingest keeps copies of.
    shared: RwLock<Arc<BTreeSet<i64>>>,
    /// Turns over the original and the copies of a hot author.
    next_copy: AtomicU64,
    near: NearCache<Head>,
    /// Authors' newest-post times (home feeds skip authors by them), dropped on the same
    /// announcements as the near-cache.
    newest: NearCache<Newest>,
    /// Users' followee sets (home feeds start from them), dropped when ingest announces a
    /// follow or unfollow by the user.
    following: NearCache<Vec<i64>>,
    /// The in-memory caches are trusted only while the invalidation channel is subscribed.
    subscribed: AtomicBool,
    /// Loads in flight per author: when each started, its number, and the load.
    in_flight: Mutex<HashMap<i64, InFlight>>,
    next_load: AtomicU64,
    /// Round trips per node (`None`: sent before the routing table was known).
    node_requests: Mutex<HashMap<Option<Server>, u64>>,
    coalesced: AtomicU64,
    replica_reads: AtomicU64,
    copy_reads: AtomicU64,
    /// Numbers the long lists passed to `record`, for sampling.
    sampled: AtomicU64,
}

/// What home feeds keep in memory of the cache, each dropped when ingest announces a change
/// to its user and never older than its TTL. A zero budget turns one off.
#[derive(Debug, Clone, Copy)]
pub struct Remembered {
    /// Authors' newest-post times, in bytes.
    pub newest_bytes: usize,
    pub newest_ttl: Duration,
    /// Users' followee sets, in bytes.
    pub following_bytes: usize,
    pub following_ttl: Duration,
}

impl Inner {
    /// Drops everything kept in memory of the cache (an announcement may have been missed).
    fn forget_all(&self) {
        self.near.invalidate_all();
        self.newest.invalidate_all();
        self.following.invalidate_all();
    }
}

/// One home feed's followee list in this many is counted by detection (see
/// [`Hotspots::record`]).
const FEED_SAMPLING: u64 = 4;

/// What one remembered newest-post time costs, beyond the near-cache's per-entry overhead.
const NEWEST_BYTES: usize = 16;

/// What a home feed needs to know of an author before reading its timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Newest {
    /// The user was deleted.
    Gone,
    /// The time of its newest cached post, ms since the Unix epoch (0: none), and whether the
    /// cache held every live post of the author (its meta's `complete`).
    At { newest_ms: i64, complete: bool },
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

/// Counters for `GetHotAuthors` and metrics.
#[derive(Debug, Clone, Default)]
pub struct HotStats {
    pub nodes: Vec<(String, u64)>,
    pub near_cache: NearCacheStats,
    pub near_cache_capacity: usize,
    pub coalesced: u64,
    pub replica_reads: u64,
    pub copy_reads: u64,
}

impl Hotspots {
    /// `memory`: the budgets and TTL of what home feeds keep of Redis in memory.
    pub fn new(
        client: Client,
        layout: CacheLayout,
        settings: HotspotSettings,
        memory: Remembered,
    ) -> Self {
        let near_bytes = if settings.near_cache_enabled {
            settings.near_cache_bytes
        } else {
            0
        };
        let inner = Inner {
            topk: Mutex::new(DecayingTopK::new(
                settings.top_k_capacity,
                settings.half_life(),
            )),
            near: NearCache::new(near_bytes, settings.near_cache_ttl()),
            newest: NearCache::new(memory.newest_bytes, memory.newest_ttl),
            following: NearCache::new(memory.following_bytes, memory.following_ttl),
            hot: RwLock::new(Arc::new(HashMap::new())),
            shared: RwLock::new(Arc::new(BTreeSet::new())),
            next_copy: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            in_flight: Mutex::new(HashMap::new()),
            next_load: AtomicU64::new(0),
            node_requests: Mutex::new(HashMap::new()),
            coalesced: AtomicU64::new(0),
            replica_reads: AtomicU64::new(0),
            copy_reads: AtomicU64::new(0),
            sampled: AtomicU64::new(0),
            settings,
            client,
            layout,
        };
        let inner = Arc::new(inner);
        Self {
            _metrics: Arc::new(Metrics::register(&inner)),
            inner,
        }
    }

    /// Counts one read of each of `authors`' keys. A long list (a home feed's followees) is
    /// sampled: one in [`FEED_SAMPLING`] is recorded, that many times over, which keeps the
    /// rates unbiased at a fraction of the cost.
    pub fn record(&self, authors: &[i64]) {
        let now = Instant::now();
        if authors.len() <= 8 {
            lock(&self.inner.topk).record_all(authors.iter().copied(), now);
            return;
        }
        if self
            .inner
            .sampled
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(FEED_SAMPLING)
        {
            lock(&self.inner.topk).record_all_times(
                authors.iter().copied(),
                FEED_SAMPLING as f64,
                now,
            );
        }
    }

    /// The newest-post times of `authors` as last read, where still valid (one lock for all).
    pub fn newest_of(&self, authors: &[i64]) -> Vec<Option<Newest>> {
        if !self.inner.subscribed.load(Ordering::Acquire) {
            return vec![None; authors.len()];
        }
        self.inner.newest.peek_many(authors, Instant::now())
    }

    /// `user_id`'s followees as last read, if still valid.
    pub fn followees_of(&self, user_id: i64) -> Option<Arc<Vec<i64>>> {
        if !self.inner.subscribed.load(Ordering::Acquire) {
            return None;
        }
        self.inner.following.get(user_id, Instant::now())
    }

    /// A ticket to take before reading a followee set from Redis.
    pub fn followees_ticket(&self) -> near_cache::Ticket {
        self.inner.following.ticket()
    }

    /// Keeps a followee set read from Redis, unless a follow change by the user was announced
    /// since `ticket`.
    pub fn remember_followees(
        &self,
        user_id: i64,
        followees: Arc<Vec<i64>>,
        ticket: near_cache::Ticket,
    ) {
        if self.inner.subscribed.load(Ordering::Acquire) {
            let bytes = followees.len() * std::mem::size_of::<i64>();
            self.inner
                .following
                .insert(user_id, followees, bytes, ticket, Instant::now());
        }
    }

    /// A ticket to take before reading newest-post times from Redis.
    pub fn newest_ticket(&self) -> near_cache::Ticket {
        self.inner.newest.ticket()
    }

    /// Forgets what was remembered of `author_id` (a read found its timeline gone).
    pub fn forget_newest(&self, author_id: i64) {
        self.inner.newest.invalidate(author_id);
    }

    /// Keeps what a read found, unless a change to the author was announced since `ticket`.
    pub fn remember_newest(&self, author_id: i64, newest: Newest, ticket: near_cache::Ticket) {
        if self.inner.subscribed.load(Ordering::Acquire) {
            self.inner.newest.insert(
                author_id,
                Arc::new(newest),
                NEWEST_BYTES,
                ticket,
                Instant::now(),
            );
        }
    }

    /// Counts one request (round trip) to `node`.
    pub fn count_request(&self, node: Option<&Server>) {
        self.count_requests(node, 1);
    }

    /// Counts `n` requests (round trips) to `node`.
    pub fn count_requests(&self, node: Option<&Server>, n: u64) {
        *lock(&self.inner.node_requests)
            .entry(node.cloned())
            .or_insert(0) += n;
    }

    /// Whether `author_id` takes the hot read path: hot, and some mitigation is on.
    pub fn is_hot(&self, author_id: i64) -> bool {
        self.inner.settings.any_mitigation() && self.hot_set().contains_key(&author_id)
    }

    /// Splits `authors` into those that take the hot read path and the others (one look at
    /// the hot set for all of them).
    pub fn split_hot(&self, authors: &[i64]) -> (Vec<i64>, Vec<i64>) {
        if !self.inner.settings.any_mitigation() {
            return (Vec::new(), authors.to_vec());
        }
        let hot = self.hot_set();
        if hot.is_empty() {
            return (Vec::new(), authors.to_vec());
        }
        authors.iter().partition(|a| hot.contains_key(a))
    }

    fn hot_set(&self) -> Arc<HashMap<i64, f64>> {
        self.inner
            .hot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A hot author's timeline head: from the near-cache, or loaded (coalesced with loads in
    /// flight, from a replica) as configured. `Ok(None)`: the cache cannot answer for the
    /// author; take the ordinary path.
    pub async fn head(&self, author_id: i64) -> Result<Option<Arc<Head>>, Error> {
        let inner = &self.inner;
        let near = inner.settings.near_cache_enabled && inner.subscribed.load(Ordering::Acquire);
        if near {
            if let Some(head) = inner.near.get(author_id, Instant::now()) {
                return Ok(Some(head));
            }
        }
        if !inner.settings.coalescing_enabled {
            return self.load(author_id, near).await;
        }
        let (load, joined) = {
            let mut in_flight = lock(&inner.in_flight);
            // A load is joined only while young: one every waiter gave up on (a node slower
            // than `node_timeout`) is not resumed by a later request, which would be handed a
            // read older than the near-cache bound.
            let bound = inner.settings.near_cache_ttl();
            match in_flight.get(&author_id) {
                Some(running) if running.started.elapsed() < bound => (running.load.clone(), true),
                _ => {
                    let this = self.clone();
                    let number = inner.next_load.fetch_add(1, Ordering::Relaxed);
                    let load: Load = async move {
                        let result = this.load(author_id, near).await.map_err(|e| e.to_string());
                        let mut in_flight = lock(&this.inner.in_flight);
                        if in_flight.get(&author_id).map(|r| r.number) == Some(number) {
                            in_flight.remove(&author_id);
                        }
                        result
                    }
                    .boxed()
                    .shared();
                    in_flight.insert(
                        author_id,
                        InFlight {
                            started: Instant::now(),
                            number,
                            load: load.clone(),
                        },
                    );
                    (load, false)
                }
            }
        };
        if joined {
            inner.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        load.await
            .map_err(|e| Error::new(fred::error::ErrorKind::IO, e))
    }

    /// Reads a head from Redis and, when `store`, keeps it unless an announcement of a change
    /// to the author arrived meanwhile.
    async fn load(&self, author_id: i64, store: bool) -> Result<Option<Arc<Head>>, Error> {
        let inner = &self.inner;
        let ticket = inner.near.ticket();
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
            if store {
                let weight = head.weight();
                inner
                    .near
                    .insert(author_id, head.clone(), weight, ticket, Instant::now());
            }
            head
        }))
    }

    /// One head read from the keys `keys`, on a replica when replica reads are on.
    async fn load_from(&self, keys: &AuthorKeys) -> Result<Option<Head>, Error> {
        let inner = &self.inner;
        let replicas = inner.client.replicas();
        let source = if inner.settings.replica_reads_enabled {
            inner.replica_reads.fetch_add(1, Ordering::Relaxed);
            Source::Replica(&replicas)
        } else {
            self.count_request(self.owner_of(&keys.meta).as_ref());
            Source::Primary(&inner.client)
        };
        head::load(source, keys, inner.settings.near_cache_posts).await
    }

    /// With key replicas on and `author_id` in the shared hot set: the copy this read takes,
    /// or `None` for the original (the original and each copy in turn).
    fn copy_to_read(&self, author_id: i64) -> Option<AuthorKeys> {
        let inner = &self.inner;
        if !inner.settings.key_replicas_enabled {
            return None;
        }
        let shared = inner
            .shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !shared.contains(&author_id) {
            return None;
        }
        let routing = inner.client.cached_cluster_state()?;
        let copies = copy_numbers(&inner.layout, &routing, author_id);
        let turn = inner.next_copy.fetch_add(1, Ordering::Relaxed) as usize % (copies.len() + 1);
        if turn == 0 {
            return None;
        }
        inner.copy_reads.fetch_add(1, Ordering::Relaxed);
        Some(inner.layout.author_copy(author_id, copies[turn - 1]))
    }

    /// The master that owns `author_id`'s slot, by the client's cached routing table.
    pub fn owner(&self, author_id: i64) -> Option<Server> {
        self.owner_of(&self.inner.layout.meta(author_id))
    }

    fn owner_of(&self, key: &str) -> Option<Server> {
        let slot = redis_keyslot(key.as_bytes());
        self.inner
            .client
            .cached_cluster_state()
            .and_then(|state| state.get_server(slot).cloned())
    }

    /// The hot authors, hottest first.
    pub fn hot_authors(&self, limit: usize) -> Vec<HotAuthor> {
        let settings = &self.inner.settings;
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
        let shared = self
            .inner
            .shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut hot: Vec<(i64, f64)> = self.hot_set().iter().map(|(a, r)| (*a, *r)).collect();
        hot.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hot.truncate(limit);
        hot.into_iter()
            .map(|(author_id, rate_per_s)| HotAuthor {
                author_id,
                rate_per_s,
                node: self.owner(author_id).as_ref().map(server_name),
                slot: redis_keyslot(self.inner.layout.meta(author_id).as_bytes()),
                mitigations: {
                    let mut m = mitigations.clone();
                    if settings.key_replicas_enabled && shared.contains(&author_id) {
                        m.push(Mitigation::KeyReplicas);
                    }
                    m
                },
            })
            .collect()
    }

    pub fn stats(&self) -> HotStats {
        let mut nodes: Vec<(String, u64)> = lock(&self.inner.node_requests)
            .iter()
            .map(|(n, c)| (node_name(n), *c))
            .collect();
        nodes.sort();
        HotStats {
            nodes,
            near_cache: self.inner.near.stats(),
            near_cache_capacity: self.inner.near.capacity_bytes(),
            coalesced: self.inner.coalesced.load(Ordering::Relaxed),
            replica_reads: self.inner.replica_reads.load(Ordering::Relaxed),
            copy_reads: self.inner.copy_reads.load(Ordering::Relaxed),
        }
    }

    /// Recomputes the hot set now (the background task does it every `hotspot.refresh_ms`).
    pub async fn refresh(&self) {
        let inner = &self.inner;
        let settings = &inner.settings;
        let local: Vec<TopEntry> = lock(&inner.topk)
            .top(settings.max_hot_authors, Instant::now())
            .into_iter()
            // Space-Saving overestimates an author by at most its error: only the guaranteed
            // part counts, or a uniform load over more authors than the top-k tracks would
            // make every tracked one look hot.
            .filter(|e| e.rate_per_s - e.error_per_s >= settings.min_rate_per_s)
            .collect();
        let mut hot: HashMap<i64, f64> = local.iter().map(|e| (e.key, e.rate_per_s)).collect();
        if settings.any_mitigation() {
            match self.share(&local).await {
                Ok(shared) => {
                    for author in &shared {
                        hot.entry(*author).or_insert(0.0);
                    }
                    *inner.shared.write().unwrap_or_else(|e| e.into_inner()) =
                        Arc::new(shared.into_iter().collect());
                }
                Err(error) => {
                    tracing::debug!(%error, "could not share the hot set; acting on ours alone")
                }
            }
        }
        let before = self.hot_set();
        if hot.keys().collect::<BTreeSet<_>>() != before.keys().collect::<BTreeSet<_>>() {
            let added: Vec<i64> = hot
                .keys()
                .filter(|a| !before.contains_key(a))
                .copied()
                .collect();
            let removed: Vec<i64> = before
                .keys()
                .filter(|a| !hot.contains_key(a))
                .copied()
                .collect();
            tracing::info!(hot = hot.len(), ?added, ?removed, "hot set changed");
        }
        inner.near.retain(|author| hot.contains_key(&author));
        *inner.hot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(hot);
    }

    /// Publishes our hot authors to the shared set and returns the union of everyone's.
    async fn share(&self, local: &[TopEntry]) -> Result<Vec<i64>, Error> {
        let inner = &self.inner;
        let ours: Vec<i64> = local.iter().map(|e| e.key).collect();
        let ttl = Duration::from_millis(inner.settings.shared_ttl_ms);
        hot_set::publish(&inner.client, &inner.layout, &ours, ttl).await?;
        hot_set::current(&inner.client, &inner.layout).await
    }

    /// Starts the refresh loop and the invalidation subscriber. They stop with the returned
    /// handles (aborted on drop of the server).
    pub fn spawn(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let refresher = {
            let this = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(this.inner.settings.refresh());
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    this.refresh().await;
                }
            })
        };
        let mut handles = vec![refresher];
        if self.inner.settings.near_cache_enabled
            || self.inner.newest.capacity_bytes() > 0
            || self.inner.following.capacity_bytes() > 0
        {
            let this = self.clone();
            handles.push(tokio::spawn(async move { this.listen().await }));
        }
        handles
    }

    /// Follows the `changes` channel: each announced author is dropped from the near-cache.
    /// Messages missed while disconnected cannot be known: on every (re)connection the whole
    /// near-cache is dropped, and it is not used until the subscription is back.
    async fn listen(&self) {
        let inner = &self.inner;
        let subscriber = inner.client.clone_new();
        let channel = inner.layout.changes_channel();
        let mut messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
        subscriber.connect();
        loop {
            inner.subscribed.store(false, Ordering::Release);
            inner.forget_all();
            if subscriber.wait_for_connect().await.is_err() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            match subscriber.subscribe(&channel).await {
                Ok(()) => {
                    inner.forget_all();
                    inner.subscribed.store(true, Ordering::Release);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot subscribe to change announcements; near-cache off until then");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
            loop {
                tokio::select! {
                    message = messages.recv() => match message {
                        Ok(message) => {
                            if let Some(text) = message.value.as_str() {
                                for user in shardfeed_cache::announce::decode(&text) {
                                    inner.near.invalidate(user);
                                    inner.newest.invalidate(user);
                                    inner.following.invalidate(user);
                                }
                            }
                        }
                        // Fell behind: whatever was missed is unknown.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            inner.forget_all();
                        }
                        // The client is gone: nothing will tell of changes any more.
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
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

fn server_name(server: &Server) -> String {
    format!("{}:{}", server.host, server.port)
}

fn node_name(node: &Option<Server>) -> String {
    node.as_ref()
        .map_or_else(|| "unrouted".to_owned(), server_name)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
