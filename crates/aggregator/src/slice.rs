//! What the cache says about one author: its meta flags and a slice of its timeline, read in
//! one round trip and interpreted here only; and the head of a hot author, cut into pages.
//!
//! Every reader of an author's keys (a profile page, a home feed's batch, a hot author's head)
//! queues [`queue_slice`] (or [`queue_timeline`] when the meta is remembered), and judges the
//! replies with [`interpret`].

use fred::{
    clients::Pipeline,
    error::{Error, ErrorKind},
    interfaces::{HashesInterface, SortedSetsInterface},
    types::Value,
};
use prost::Message;
use shardfeed_cache::layout::{AuthorMeta, TOMBSTONE};
use shardfeed_proto::v1::Post;

use crate::cursor::Position;

/// Extra timeline entries fetched beyond the page, for posts that share the cursor's
/// millisecond (they are filtered out by id).
const TIE_SLACK: usize = 8;

/// What an earlier read of a loaded author's meta left in memory.
pub fn remembered_meta(newest_ms: i64, complete: bool) -> AuthorMeta {
    AuthorMeta {
        loaded: true,
        complete,
        newest_ms: Some(newest_ms),
        ..AuthorMeta::default()
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

/// Judges an author's `meta`, the timeline's size (`card`, `ZCARD tl`; `None` when the meta
/// was not read but remembered) and `raw`, the reply to
/// `ZREVRANGEBYSCORE tl <cursor time> -inf LIMIT 0 <fetch_len>`.
///
/// A timeline whose size is not the meta's count lost a key on its own since the meta was
/// written: not loaded. Without the size to check (a remembered meta), an empty first page of
/// an author known to have posts says the same.
pub fn interpret(
    meta: &AuthorMeta,
    card: Option<i64>,
    raw: &[i64],
    after: Option<Position>,
    size: usize,
) -> Slice {
    if meta.gone {
        return Slice::Gone;
    }
    if !meta.loaded {
        return Slice::NotLoaded;
    }
    match card {
        Some(card) if meta.count != Some(card) => return Slice::NotLoaded,
        None if after.is_none() && raw.is_empty() && meta.newest_ms.unwrap_or(0) > 0 => {
            return Slice::NotLoaded
        }
        _ => {}
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
        complete: meta.complete,
    }
}

/// How many timeline entries to fetch for a page of `size`: the page and one more (is there a
/// next page?), and after a cursor also room for posts that share its millisecond. A first page
/// needs no slack: the newest `size + 1` entries by score are the newest `size + 1` ids (ids
/// are time-ordered, and equal scores order members by id).
pub fn fetch_len(size: usize, after: Option<Position>) -> usize {
    size + 1 + if after.is_some() { TIE_SLACK } else { 0 }
}

/// The commands [`queue_slice`] queues.
pub const SLICE_COMMANDS: usize = 3;

/// The commands [`queue_timeline`] queues.
pub const TIMELINE_COMMANDS: usize = 1;

/// Queues on `pipeline` the three commands of one author's slice: `HMGET meta` of
/// [`AuthorMeta::READ_FIELDS`], `ZCARD tl` (checked against the meta's count) and the timeline read of
/// [`queue_timeline`]. Both keys share the author's slot: one round trip.
pub async fn queue_slice<C: HashesInterface + SortedSetsInterface>(
    pipeline: &Pipeline<C>,
    meta_key: String,
    timeline_key: String,
    after: Option<Position>,
    size: usize,
) -> Result<(), Error> {
    let _: () = pipeline
        .hmget(meta_key, AuthorMeta::READ_FIELDS.to_vec())
        .await?;
    let _: () = pipeline.zcard(timeline_key.clone()).await?;
    queue_timeline(pipeline, timeline_key, after, size).await
}

/// Queues `ZREVRANGEBYSCORE tl <cursor time> -inf LIMIT 0 <fetch_len>`, ids only: the scores
/// are not needed, the ids order the posts.
pub async fn queue_timeline<C: SortedSetsInterface>(
    pipeline: &Pipeline<C>,
    timeline_key: String,
    after: Option<Position>,
    size: usize,
) -> Result<(), Error> {
    let max = after.map_or(f64::INFINITY, |p| p.time_ms as f64);
    let _: () = pipeline
        .zrevrangebyscore(
            timeline_key,
            max,
            f64::NEG_INFINITY,
            false,
            Some((0, fetch_len(size, after) as i64)),
        )
        .await?;
    Ok(())
}

/// Reads the three replies [`queue_slice`] queued: the meta as read, and the slice.
pub fn take_slice(
    replies: &mut impl Iterator<Item = Result<Value, Error>>,
    after: Option<Position>,
    size: usize,
) -> Result<(AuthorMeta, Slice), Error> {
    let flags: Vec<Option<String>> = next_reply(replies)?.convert()?;
    let card: i64 = next_reply(replies)?.convert()?;
    let raw: Vec<i64> = next_reply(replies)?.convert()?;
    let meta = AuthorMeta::decode_read(&flags);
    let slice = interpret(&meta, Some(card), &raw, after, size);
    Ok((meta, slice))
}

/// Reads the reply [`queue_timeline`] queued and judges it by a remembered meta.
pub fn take_timeline(
    replies: &mut impl Iterator<Item = Result<Value, Error>>,
    meta: &AuthorMeta,
    after: Option<Position>,
    size: usize,
) -> Result<Slice, Error> {
    let raw: Vec<i64> = next_reply(replies)?.convert()?;
    Ok(interpret(meta, None, &raw, after, size))
}

fn next_reply(replies: &mut impl Iterator<Item = Result<Value, Error>>) -> Result<Value, Error> {
    replies
        .next()
        .ok_or_else(|| Error::new(ErrorKind::Protocol, "a reply is missing"))?
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

/// What the cache held for one hot author when its head was read (see `read::head`).
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// The user was deleted.
    Gone,
    /// The newest posts, newest first. `complete`: these are all of the author's live posts.
    Posts { posts: Vec<Post>, complete: bool },
}

/// One page cut from a head.
#[derive(Debug, PartialEq)]
pub struct HeadPage<'a> {
    /// Up to `size + 1` posts below the cursor, newest first (the extra one is the lookahead).
    pub posts: &'a [Post],
}

impl Head {
    /// Approximate bytes held (the near-cache's budget counts this).
    pub fn weight(&self) -> usize {
        match self {
            Head::Gone => 16,
            Head::Posts { posts, .. } => posts
                .iter()
                .map(|p| std::mem::size_of::<Post>() + p.body.len() + 16)
                .sum::<usize>()
                .max(16),
        }
    }

    /// The posts below `after`, at most `size + 1`; `None` when the head cannot tell (the page
    /// reaches below the head and older posts exist).
    pub fn page(&self, after: Option<Position>, size: usize) -> Option<HeadPage<'_>> {
        let Head::Posts { posts, complete } = self else {
            return Some(HeadPage { posts: &[] });
        };
        let before_id = Position::before_id(after);
        let start = posts.partition_point(|p| p.post_id >= before_id);
        let below = &posts[start..];
        if below.len() > size {
            Some(HeadPage {
                posts: &below[..=size],
            })
        } else if *complete {
            Some(HeadPage { posts: below })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(id: i64) -> Post {
        Post {
            post_id: id,
            ..Default::default()
        }
    }

    fn head(ids: &[i64], complete: bool) -> Head {
        Head::Posts {
            posts: ids.iter().copied().map(post).collect(),
            complete,
        }
    }

    fn ids(page: Option<HeadPage<'_>>) -> Option<Vec<i64>> {
        page.map(|p| p.posts.iter().map(|p| p.post_id).collect())
    }

    fn at(post_id: i64) -> Option<Position> {
        Some(Position {
            time_ms: 0,
            post_id,
        })
    }

    fn flags(values: &[&str]) -> Vec<Option<String>> {
        values
            .iter()
            .map(|v| (!v.is_empty()).then(|| v.to_string()))
            .collect()
    }

    #[test]
    fn pages_come_from_the_head_while_it_covers_them() {
        let h = head(&[9, 8, 7, 6, 5], false);
        assert_eq!(ids(h.page(None, 2)), Some(vec![9, 8, 7]));
        assert_eq!(ids(h.page(at(8), 2)), Some(vec![7, 6, 5]));
        // Only two below 7 and older posts exist outside the head: it cannot tell.
        assert_eq!(ids(h.page(at(7), 2)), None);
        let all = head(&[9, 8, 7], true);
        assert_eq!(ids(all.page(at(8), 5)), Some(vec![7]));
        assert_eq!(ids(all.page(at(7), 5)), Some(vec![]));
        assert_eq!(ids(Head::Gone.page(None, 5)), Some(vec![]));
    }

    #[test]
    fn the_meta_decides_before_the_timeline() {
        let gone = AuthorMeta::decode_read(&flags(&["1", "1", "1", "3", "5"]));
        assert_eq!(interpret(&gone, Some(3), &[3, 2, 1], None, 5), Slice::Gone);
        let unloaded = AuthorMeta::decode_read(&flags(&["", "", "", "", ""]));
        assert_eq!(
            interpret(&unloaded, Some(0), &[], None, 5),
            Slice::NotLoaded
        );
        let loaded = AuthorMeta::decode_read(&flags(&["1", "1", "", "3", "5"]));
        assert_eq!(
            loaded,
            AuthorMeta {
                loaded: true,
                complete: true,
                count: Some(3),
                newest_ms: Some(5),
                ..AuthorMeta::default()
            }
        );
        // A timeline that lost entries on its own no longer matches the meta's count.
        assert_eq!(
            interpret(&loaded, Some(2), &[3, 2], None, 5),
            Slice::NotLoaded
        );
        assert_eq!(
            interpret(&loaded, Some(3), &[3, 2, 1], at(3), 5),
            Slice::Ids {
                ids: vec![2, 1],
                complete: true
            }
        );
    }

    #[test]
    fn a_remembered_meta_takes_an_empty_first_page_for_an_evicted_timeline() {
        let had_posts = remembered_meta(42, false);
        assert_eq!(interpret(&had_posts, None, &[], None, 5), Slice::NotLoaded);
        let never_posted = remembered_meta(0, true);
        assert_eq!(
            interpret(&never_posted, None, &[], None, 5),
            Slice::Ids {
                ids: vec![],
                complete: true
            }
        );
    }

    #[test]
    fn a_page_lost_among_ties_is_a_miss() {
        let meta = AuthorMeta::decode_read(&flags(&["1", "0", "", "100", "5"]));
        // Every entry fetched shares the cursor's millisecond and sits above it.
        let raw: Vec<i64> = (0..fetch_len(2, at(50)) as i64).map(|i| 100 - i).collect();
        assert_eq!(interpret(&meta, Some(100), &raw, at(50), 2), Slice::Miss);
    }
}
