//! One author's page from the cache: meta and the timeline slice in one round trip to the
//! author's node, then the bodies of the posts on the page only.

use fred::{
    clients::Client,
    error::Error,
    interfaces::{ClientLike, HashesInterface, SortedSetsInterface},
    types::Value,
};
use prost::Message;
use shardfeed_core::cache::{
    layout::{meta, TOMBSTONE},
    CacheLayout,
};
use shardfeed_proto::v1::Post;

use super::cursor::Position;

/// Extra timeline entries fetched beyond the page, for posts that share the cursor's
/// millisecond (they are filtered out by id).
const TIE_SLACK: usize = 8;

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
    /// The cache cannot be trusted for this author: not loaded, evicted in part, or the page
    /// falls among many posts of one millisecond. Read PostgreSQL.
    Miss,
    /// The user was deleted.
    Gone,
}

/// Reads authors' timelines from the cluster.
#[derive(Clone)]
pub struct AuthorReader {
    client: Client,
    layout: CacheLayout,
}

impl AuthorReader {
    pub fn new(client: Client, layout: CacheLayout) -> Self {
        Self { client, layout }
    }

    /// The page of up to `size` posts of `author_id` after `after`.
    pub async fn page(
        &self,
        author_id: i64,
        after: Option<Position>,
        size: usize,
    ) -> Result<CachedPage, Error> {
        let keys = self.layout.author(author_id);
        let fetch = size + 1 + TIE_SLACK;
        let max = after.map_or(f64::INFINITY, |p| p.time_ms as f64);

        // Both keys share the author's slot: one pipeline, one round trip.
        let pipeline = self.client.pipeline();
        let _: () = pipeline
            .hmget(&keys.meta, vec![meta::LOADED, meta::COMPLETE, meta::GONE])
            .await?;
        let _: () = pipeline
            .zrevrangebyscore(
                &keys.timeline,
                max,
                f64::NEG_INFINITY,
                false,
                Some((0, fetch as i64)),
            )
            .await?;
        let mut replies = pipeline.try_all::<Value>().await.into_iter();
        let flags: Vec<Option<String>> = replies.next().expect("two replies")?.convert()?;
        // Scores are not needed: post ids order the posts (and carry their time).
        let raw: Vec<String> = replies.next().expect("two replies")?.convert()?;

        let flag = |i: usize| flags.get(i).and_then(|f| f.as_deref()) == Some("1");
        if flag(2) {
            return Ok(CachedPage::Gone);
        }
        if !flag(0) {
            return Ok(CachedPage::Miss);
        }
        let complete = flag(1);
        let before_id = Position::before_id(after);
        let mut ids: Vec<i64> = raw
            .iter()
            .filter_map(|member| member.parse::<i64>().ok())
            .filter(|id| *id < before_id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        if ids.len() <= size && raw.len() == fetch {
            // Everything fetched was at or above the cursor: too many ties to page in the cache.
            return Ok(CachedPage::Miss);
        }
        let more_cached = ids.len() > size;
        ids.truncate(size);

        let posts = match self.bodies(author_id, &ids).await? {
            Some(posts) => posts,
            None => return Ok(CachedPage::Miss),
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

    /// The cached posts `ids`, in that order; `None` if any is missing or a tombstone (the
    /// timeline and the bodies disagree: an eviction or a race with a delete).
    async fn bodies(&self, author_id: i64, ids: &[i64]) -> Result<Option<Vec<Post>>, Error> {
        if ids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let fields: Vec<String> = ids.iter().map(i64::to_string).collect();
        let values: Vec<Value> = self
            .client
            .hmget(self.layout.posts(author_id), fields)
            .await?;
        let mut posts = Vec::with_capacity(ids.len());
        for value in values {
            let bytes = match value {
                Value::Bytes(b) => b,
                Value::String(s) => s.into_inner(),
                _ => return Ok(None),
            };
            if bytes.as_ref() == TOMBSTONE.as_bytes() {
                return Ok(None);
            }
            match Post::decode(bytes.as_ref()) {
                Ok(post) => posts.push(post),
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(posts))
    }

    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }
}
