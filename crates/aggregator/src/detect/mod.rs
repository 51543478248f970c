//! Seeing hot partitions: which authors are read most, and where the reads go.
//!
//! Every read of an author's keys (a home feed reads each followee's, a profile view one
//! author's) is counted in a decaying top-k ([`topk::DecayingTopK`], bounded memory). On each
//! [`Detector::refresh`] the authors read at least `hotspot.min_rate_per_s` times per second for
//! certain (the estimate minus its error bound; at most `hotspot.max_hot_authors`) become this
//! aggregator's hot set. It is logged when it changes and, while some mitigation is on,
//! published to the shared sorted set `hot` (author → until when), whose union over every
//! aggregator is the hot set everyone acts on.
//!
//! Round trips are counted per node as well, for `GetHotAuthors` and the metrics.

pub mod topk;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use fred::{clients::Client, error::Error, types::config::Server};
use parking_lot::{Mutex, RwLock};
use shardfeed_cache::{hot_set, CacheLayout};
use shardfeed_server::config::HotspotSettings;

use self::topk::{DecayingTopK, TopEntry};

/// One home feed's followee list in this many is counted (see [`Detector::record`]).
const FEED_SAMPLING: u64 = 4;

/// Detection state; cheap to clone.
#[derive(Clone)]
pub struct Detector {
    inner: Arc<Inner>,
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
    /// Round trips per node (`None`: sent before the routing table was known).
    node_requests: Mutex<HashMap<Option<Server>, u64>>,
    /// Numbers the long lists passed to `record`, for sampling.
    sampled: AtomicU64,
}

impl Detector {
    /// `client` publishes to and reads the shared hot set.
    pub fn new(client: Client, layout: CacheLayout, settings: HotspotSettings) -> Self {
        let inner = Arc::new(Inner {
            topk: Mutex::new(DecayingTopK::new(
                settings.top_k_capacity,
                settings.half_life(),
            )),
            hot: RwLock::new(Arc::default()),
            shared: RwLock::new(Arc::default()),
            node_requests: Mutex::new(HashMap::new()),
            sampled: AtomicU64::new(0),
            settings,
            client,
            layout,
        });
        Self { inner }
    }

    /// Counts one read of each of `authors`' keys. A long list (a home feed's followees) is
    /// sampled: one in [`FEED_SAMPLING`] is recorded, that many times over, which keeps the
    /// rates unbiased at a fraction of the cost.
    pub fn record(&self, authors: &[i64]) {
        let now = Instant::now();
        if authors.len() <= 8 {
            self.inner
                .topk
                .lock()
                .record_all(authors.iter().copied(), now);
            return;
        }
        if self
            .inner
            .sampled
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(FEED_SAMPLING)
        {
            self.inner.topk.lock().record_all_times(
                authors.iter().copied(),
                FEED_SAMPLING as f64,
                now,
            );
        }
    }

    /// Counts one request (round trip) to `node`.
    pub fn count_request(&self, node: Option<&Server>) {
        self.count_requests(node, 1);
    }

    /// Counts `n` requests (round trips) to `node`.
    pub fn count_requests(&self, node: Option<&Server>, n: u64) {
        *self
            .inner
            .node_requests
            .lock()
            .entry(node.cloned())
            .or_insert(0) += n;
    }

    /// Round trips so far per node (`unrouted`: before the routing table was known), by name.
    pub fn node_requests(&self) -> Vec<(String, u64)> {
        let mut nodes: Vec<(String, u64)> = self
            .inner
            .node_requests
            .lock()
            .iter()
            .map(|(n, c)| (node_name(n), *c))
            .collect();
        nodes.sort();
        nodes
    }

    /// The hot set: author → access rate seen here (0 for authors only others saw).
    pub fn hot_set(&self) -> Arc<HashMap<i64, f64>> {
        self.inner.hot.read().clone()
    }

    /// The shared hot set as last read (empty while no mitigation is on).
    pub fn shared_set(&self) -> Arc<BTreeSet<i64>> {
        self.inner.shared.read().clone()
    }

    /// Recomputes the hot set now and returns it.
    pub async fn refresh(&self) -> Arc<HashMap<i64, f64>> {
        let inner = &self.inner;
        let settings = &inner.settings;
        let local: Vec<TopEntry> = inner
            .topk
            .lock()
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
                    *inner.shared.write() = Arc::new(shared.into_iter().collect());
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
            // A trace of its own per change, one event per decision: who, at what rate (0: only
            // other aggregators saw it; for an author leaving, its last rate).
            let span = tracing::info_span!(
                "hot_set",
                otel.name = "hotspot.change",
                shardfeed.hotspot.hot_authors = hot.len(),
                shardfeed.hotspot.entered = added.len(),
                shardfeed.hotspot.left = removed.len(),
            );
            span.in_scope(|| {
                tracing::info!(hot = hot.len(), ?added, ?removed, "hot set changed");
                for author in &added {
                    tracing::debug!(
                        shardfeed.author.id = author,
                        shardfeed.author.rate_per_s = hot[author],
                        "author entered the hot set"
                    );
                }
                for author in &removed {
                    tracing::debug!(
                        shardfeed.author.id = author,
                        shardfeed.author.rate_per_s = before[author],
                        "author left the hot set"
                    );
                }
            });
        }
        let hot = Arc::new(hot);
        *inner.hot.write() = Arc::clone(&hot);
        hot
    }

    /// Publishes our hot authors to the shared set and returns the union of everyone's.
    async fn share(&self, local: &[TopEntry]) -> Result<Vec<i64>, Error> {
        let inner = &self.inner;
        let ours: Vec<i64> = local.iter().map(|e| e.key).collect();
        let ttl = Duration::from_millis(inner.settings.shared_ttl_ms);
        hot_set::publish(&inner.client, &inner.layout, &ours, ttl).await?;
        hot_set::current(&inner.client, &inner.layout).await
    }
}

/// `host:port`.
pub fn server_name(server: &Server) -> String {
    format!("{}:{}", server.host, server.port)
}

fn node_name(node: &Option<Server>) -> String {
    node.as_ref()
        .map_or_else(|| "unrouted".to_owned(), server_name)
}
