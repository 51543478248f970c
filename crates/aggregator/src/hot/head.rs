//! A hot author's timeline head: the newest posts with their bodies, read in two round trips
//! and answered from memory for every page it covers.

use fred::{
    clients::{Client, Pipeline, Replicas},
    error::{Error, ErrorKind},
    interfaces::{HashesInterface, SortedSetsInterface},
    types::Value,
};
use shardfeed_cache::layout::AuthorKeys;
use shardfeed_proto::v1::Post;

use crate::read::{
    author::{all_cached_posts, interpret, Slice, META_FIELDS},
    cursor::Position,
};

/// What the cache held for one author when it was read.
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

/// Where a head is read from: the author's master, or one of its replicas.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    Primary(&'a Client),
    Replica(&'a Replicas<Client>),
}

/// Reads the head of `len` posts stored under `keys` (an author's, or one of its copies').
/// `Ok(None)`: the cache cannot answer for the author (not loaded, or timeline and bodies
/// disagree after an eviction or a delete in flight): the caller reads elsewhere.
pub async fn load(
    source: Source<'_>,
    keys: &AuthorKeys,
    len: usize,
) -> Result<Option<Head>, Error> {
    let (flags, card, raw) = match source {
        Source::Primary(client) => read_ids(client.pipeline(), keys, len).await?,
        Source::Replica(replicas) => read_ids(replicas.pipeline(), keys, len).await?,
    };
    // The head is the first page of `len` posts, judged like any other page.
    let (mut ids, complete) = match interpret(&flags, Some(card), &raw, None, len) {
        Slice::Gone => return Ok(Some(Head::Gone)),
        Slice::NotLoaded | Slice::Miss => return Ok(None),
        Slice::Ids { ids, complete } => (ids, complete),
    };
    let complete = complete && ids.len() <= len;
    ids.truncate(len);
    if ids.is_empty() {
        return Ok(Some(Head::Posts {
            posts: Vec::new(),
            complete,
        }));
    }
    let fields: Vec<String> = ids.iter().map(i64::to_string).collect();
    let key = keys.posts.clone();
    let values: Vec<Value> = match source {
        Source::Primary(client) => client.hmget(key, fields).await?,
        Source::Replica(replicas) => replicas.hmget(key, fields).await?,
    };
    Ok(all_cached_posts(values).map(|posts| Head::Posts { posts, complete }))
}

/// The meta flags, the timeline's size and the newest `len + 1` ids, in one round trip.
async fn read_ids<C: HashesInterface + SortedSetsInterface>(
    pipeline: Pipeline<C>,
    keys: &AuthorKeys,
    len: usize,
) -> Result<(Vec<Option<String>>, i64, Vec<i64>), Error> {
    let _: () = pipeline
        .hmget(keys.meta.clone(), META_FIELDS.to_vec())
        .await?;
    let _: () = pipeline.zcard(keys.timeline.clone()).await?;
    let _: () = pipeline
        .zrevrangebyscore(
            keys.timeline.clone(),
            f64::INFINITY,
            f64::NEG_INFINITY,
            false,
            Some((0, len as i64 + 1)),
        )
        .await?;
    let mut replies = pipeline.try_all::<Value>().await.into_iter();
    let missing = || Error::new(ErrorKind::Protocol, "a reply is missing");
    let flags: Vec<Option<String>> = replies.next().ok_or_else(missing)??.convert()?;
    let card: i64 = replies.next().ok_or_else(missing)??.convert()?;
    let raw: Vec<i64> = replies.next().ok_or_else(missing)??.convert()?;
    Ok((flags, card, raw))
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
}
