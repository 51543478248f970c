//! One author's page from the cache: meta and the timeline slice in one round trip to the
//! author's node, then the bodies of the posts on the page only.

use std::time::Instant;

use fred::{error::Error, interfaces::HashesInterface, types::Value};
use shardfeed_cache::CacheLayout;
use shardfeed_proto::v1::Post;
use shardfeed_server::metrics::Outcome;

use super::{
    nodes::NodeClients,
    rebuild::{Rebuilder, Target},
};
use crate::{
    cursor::Position,
    detect::Detector,
    metrics::{Fallback, ReadMetrics},
    slice::{all_cached_posts, queue_slice, take_slice, Slice, SLICE_COMMANDS},
};
use shardfeed_server::spans;

/// What the cache can say about a page of one author.
#[derive(Debug, PartialEq)]
pub enum CachedPage {
    /// The whole page. `more`: older posts exist.
    Hit { posts: Vec<Post>, more: bool },
    /// The start of the page; the rest (and whether more exist) is older than the cached window
    /// and must come from PostgreSQL, below `continue_below`.
    Partial {
        posts: Vec<Post>,
        continue_below: i64,
    },
    /// The page falls among many posts of one millisecond: read PostgreSQL.
    Miss,
    /// The cache cannot be trusted for this author (not loaded, or a key lost on its own):
    /// read PostgreSQL, and rebuild the author once PostgreSQL says it exists
    /// ([`AuthorReader::rebuild`]).
    NotLoaded,
    /// The user was deleted.
    Gone,
}

/// Reads authors' timelines from the cluster, through the client of the author's node (see
/// `super::nodes`).
#[derive(Clone)]
pub struct AuthorReader {
    nodes: NodeClients,
    layout: CacheLayout,
    rebuilder: Rebuilder,
    detect: Detector,
    metrics: ReadMetrics,
}

impl AuthorReader {
    /// `detect` counts the round trips to each node, `metrics` them and how pages were found.
    pub fn new(
        nodes: NodeClients,
        layout: CacheLayout,
        rebuilder: Rebuilder,
        detect: Detector,
        metrics: ReadMetrics,
    ) -> Self {
        Self {
            nodes,
            layout,
            rebuilder,
            detect,
            metrics,
        }
    }

    /// The page of up to `size` posts of `author_id` after `after`.
    pub async fn page(
        &self,
        author_id: i64,
        after: Option<Position>,
        size: usize,
    ) -> Result<CachedPage, Error> {
        let page = self.read(author_id, after, size).await;
        let metrics = &self.metrics;
        let fallback = match &page {
            Ok(CachedPage::Hit { .. } | CachedPage::Gone) => None,
            Ok(CachedPage::Partial { .. }) => {
                metrics.cache_hits(1);
                metrics.fell_back(Fallback::PastWindow, 1);
                return page;
            }
            Ok(CachedPage::Miss) => Some(Fallback::PastWindow),
            Ok(CachedPage::NotLoaded) => Some(Fallback::NotCached),
            Err(_) => Some(Fallback::NodeError),
        };
        match fallback {
            None => metrics.cache_hits(1),
            Some(reason) => {
                metrics.cache_misses(1);
                metrics.fell_back(reason, 1);
            }
        }
        page
    }

    async fn read(
        &self,
        author_id: i64,
        after: Option<Position>,
        size: usize,
    ) -> Result<CachedPage, Error> {
        // The slice and then the bodies: two round trips to the author's node.
        let meta_key = self.layout.meta(author_id);
        let node = self.nodes.owner_of(&meta_key);
        self.detect.count_requests(node.as_ref(), 2);
        let pipeline = self.nodes.for_key(&meta_key).pipeline();
        let timeline_key = self.layout.timeline(author_id);
        queue_slice(&pipeline, meta_key, timeline_key, after, size).await?;
        let started = Instant::now();
        let send = pipeline.try_all::<Value>();
        let replies = spans::redis(
            "PIPELINE timeline.slice",
            node.as_ref(),
            SLICE_COMMANDS,
            send,
        )
        .await;
        self.metrics.redis.record(
            node.as_ref(),
            SLICE_COMMANDS,
            started.elapsed(),
            Outcome::of_replies(&replies),
        );
        let mut replies = replies.into_iter();
        let slice = take_slice(&mut replies, after, size).inspect_err(|_| self.nodes.read_failed());
        let (ids, complete) = match slice?.1 {
            Slice::Gone => return Ok(CachedPage::Gone),
            Slice::Miss => return Ok(CachedPage::Miss),
            Slice::NotLoaded => return Ok(CachedPage::NotLoaded),
            Slice::Ids { ids, complete } => (ids, complete),
        };
        let mut ids = ids;
        let before_id = Position::before_id(after);
        let more_cached = ids.len() > size;
        ids.truncate(size);

        let bodies = self.bodies(author_id, &ids).await;
        let posts = match bodies.inspect_err(|_| self.nodes.read_failed())? {
            Some(posts) => posts,
            // The timeline lists a post whose body is gone: a key was lost on its own (or a
            // delete is landing right now).
            None => return Ok(CachedPage::NotLoaded),
        };
        if more_cached || complete {
            return Ok(CachedPage::Hit {
                posts,
                more: more_cached,
            });
        }
        let continue_below = ids.last().copied().unwrap_or(before_id);
        Ok(CachedPage::Partial {
            posts,
            continue_below,
        })
    }

    /// Rebuilds `author_id`'s timeline in the background (see [`Rebuilder::request`]): after a
    /// [`CachedPage::NotLoaded`], once the user is known to exist.
    pub fn rebuild(&self, author_id: i64) {
        self.rebuilder.request(Target::Timeline, author_id);
    }

    /// The cached posts `ids`, in that order; `None` if any is missing or a tombstone (the
    /// timeline and the bodies disagree: an eviction or a race with a delete).
    async fn bodies(&self, author_id: i64, ids: &[i64]) -> Result<Option<Vec<Post>>, Error> {
        if ids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let fields: Vec<String> = ids.iter().map(i64::to_string).collect();
        let key = self.layout.posts(author_id);
        let client = self.nodes.for_key(&key);
        let read = client.hmget(key, fields);
        let values: Vec<Value> = spans::redis("HMGET timeline.bodies", None, 1, read).await?;
        Ok(all_cached_posts(values))
    }
}
