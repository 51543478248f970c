//! One author's page from the cache: meta and the timeline slice in one round trip to the
//! author's node, then the bodies of the posts on the page only.

use fred::{
    clients::{Client, Pipeline},
    error::Error,
    interfaces::{HashesInterface, SortedSetsInterface},
    types::Value,
};
use prost::Message;
use shardfeed_cache::{
    layout::{meta, TOMBSTONE},
    CacheLayout,
};
use shardfeed_proto::v1::Post;

use super::{
    cursor::Position,
    nodes::NodeClients,
    rebuild::{Rebuilder, Target},
};

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
}

impl AuthorReader {
    pub fn new(nodes: NodeClients, layout: CacheLayout, rebuilder: Rebuilder) -> Self {
        Self {
            nodes,
            layout,
            rebuilder,
        }
    }

    /// The page of up to `size` posts of `author_id` after `after`.
    pub async fn page(
        &self,
        author_id: i64,
        after: Option<Position>,
        size: usize,
    ) -> Result<CachedPage, Error> {
        // Both keys share the author's slot: one pipeline, one round trip.
        let pipeline = self.nodes.for_key(&self.layout.meta(author_id)).pipeline();
        queue_slice(&pipeline, &self.layout, author_id, after, size).await?;
        let mut replies = pipeline.try_all::<Value>().await.into_iter();
        let slice = take_slice(&mut replies, after, size).inspect_err(|_| self.nodes.read_failed());
        let (ids, complete) = match slice? {
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
    pub async fn bodies(&self, author_id: i64, ids: &[i64]) -> Result<Option<Vec<Post>>, Error> {
        if ids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let fields: Vec<String> = ids.iter().map(i64::to_string).collect();
        let key = self.layout.posts(author_id);
        let values: Vec<Value> = self.nodes.for_key(&key).hmget(key, fields).await?;
        Ok(all_cached_posts(values))
    }
}

/// What one author's meta flags and timeline slice say, before any body is read.
#[derive(Debug, PartialEq, Eq)]
pub enum Slice {
    Gone,
    /// The author's timeline is not in the cache (never cached, expired, evicted), or its keys
    /// disagree (one of them was lost on its own): rebuild it.
    NotLoaded,
    /// Loaded, but this page cannot be answered from it (too many posts of one millisecond).
    Miss,
    /// Post ids below the cursor, newest first, at most `size + 1` of them; `complete`: the
    /// cache holds every live post of the author (nothing older lives only in PostgreSQL).
    Ids {
        ids: Vec<i64>,
        complete: bool,
    },
}

/// Reads the replies to `HMGET meta loaded complete gone count`, `ZCARD tl` (`card`; `None`
/// when the meta was not read but remembered) and
/// `ZREVRANGEBYSCORE tl <cursor time> -inf LIMIT 0 <size + 1 + slack>`. A timeline whose size
/// is not the meta's count lost a key on its own since the meta was written: not loaded.
pub fn interpret(
    flags: &[Option<String>],
    card: Option<i64>,
    raw: &[i64],
    after: Option<Position>,
    size: usize,
) -> Slice {
    let flag = |i: usize| flags.get(i).and_then(|f| f.as_deref()) == Some("1");
    if flag(2) {
        return Slice::Gone;
    }
    if !flag(0) {
        return Slice::NotLoaded;
    }
    if let Some(card) = card {
        let count = flags.get(3).and_then(|f| f.as_deref()?.parse::<i64>().ok());
        if count != Some(card) {
            return Slice::NotLoaded;
        }
    }
    let before_id = Position::before_id(after);
    let mut ids: Vec<i64> = raw.iter().copied().filter(|id| *id < before_id).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    if ids.len() <= size && raw.len() == fetch_len(size, after) {
        // Everything fetched was at or above the cursor: too many ties to page in the cache.
        return Slice::Miss;
    }
    ids.truncate(size + 1);
    Slice::Ids {
        ids,
        complete: flag(1),
    }
}

/// How many timeline entries to fetch for a page of `size`: the page and one more (is there a
/// next page?), and after a cursor also room for posts that share its millisecond. A first page
/// needs no slack: the newest `size + 1` entries by score are the newest `size + 1` ids (ids
/// are time-ordered, and equal scores order members by id).
pub fn fetch_len(size: usize, after: Option<Position>) -> usize {
    size + 1 + if after.is_some() { TIE_SLACK } else { 0 }
}

/// A post body as the cache holds it (a `{u:A}:posts` field): `None` for a missing field, a
/// tombstone, or bytes that do not decode.
pub fn cached_post(value: Value) -> Option<Post> {
    let bytes = match value {
        Value::Bytes(b) => b,
        Value::String(s) => s.into_inner(),
        _ => return None,
    };
    if bytes.as_ref() == TOMBSTONE.as_bytes() {
        return None;
    }
    Post::decode(bytes.as_ref()).ok()
}

/// The posts of an `HMGET` of bodies, in order; `None` if any is not a live post (the timeline
/// and the bodies disagree: an eviction or a race with a delete).
pub fn all_cached_posts(values: Vec<Value>) -> Option<Vec<Post>> {
    values.into_iter().map(cached_post).collect()
}

/// The fields of `HMGET meta …` that [`interpret`] reads, in its order.
pub const META_FIELDS: [&str; 4] = [meta::LOADED, meta::COMPLETE, meta::GONE, meta::COUNT];

/// Queues on `pipeline` the three commands of one author's slice: `HMGET meta`, `ZCARD tl`
/// (checked against the meta's count) and the timeline read of [`queue_timeline`].
pub async fn queue_slice(
    pipeline: &Pipeline<Client>,
    layout: &CacheLayout,
    author_id: i64,
    after: Option<Position>,
    size: usize,
) -> Result<(), Error> {
    let _: () = pipeline
        .hmget(layout.meta(author_id), META_FIELDS.to_vec())
        .await?;
    let _: () = pipeline.zcard(layout.timeline(author_id)).await?;
    queue_timeline(pipeline, layout, author_id, after, size).await
}

/// Queues `ZREVRANGEBYSCORE tl <cursor time> -inf LIMIT 0 <size + 1 + slack>`, ids only: the
/// scores are not needed, the ids order the posts.
pub async fn queue_timeline(
    pipeline: &Pipeline<Client>,
    layout: &CacheLayout,
    author_id: i64,
    after: Option<Position>,
    size: usize,
) -> Result<(), Error> {
    let max = after.map_or(f64::INFINITY, |p| p.time_ms as f64);
    let _: () = pipeline
        .zrevrangebyscore(
            layout.timeline(author_id),
            max,
            f64::NEG_INFINITY,
            false,
            Some((0, fetch_len(size, after) as i64)),
        )
        .await?;
    Ok(())
}

/// Reads the three replies [`queue_slice`] queued.
pub fn take_slice(
    replies: &mut impl Iterator<Item = Result<Value, Error>>,
    after: Option<Position>,
    size: usize,
) -> Result<Slice, Error> {
    let missing = || Error::new(fred::error::ErrorKind::Protocol, "a reply is missing");
    let flags: Vec<Option<String>> = replies.next().ok_or_else(missing)??.convert()?;
    let card: i64 = replies.next().ok_or_else(missing)??.convert()?;
    let raw: Vec<i64> = replies.next().ok_or_else(missing)??.convert()?;
    Ok(interpret(&flags, Some(card), &raw, after, size))
}
