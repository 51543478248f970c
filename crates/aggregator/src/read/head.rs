//! A hot author's timeline head: the newest posts with their bodies, read in two round trips
//! (the slice, then the bodies) from the author's master or one of its replicas.

use fred::{
    clients::{Client, Pipeline, Replicas},
    error::Error,
    interfaces::{HashesInterface, SortedSetsInterface},
    types::Value,
};
use shardfeed_cache::layout::AuthorKeys;

use shardfeed_server::spans;

use crate::slice::{all_cached_posts, queue_slice, take_slice, Head, Slice, SLICE_COMMANDS};

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
    let read = async {
        match source {
            Source::Primary(client) => read_slice(client.pipeline(), keys, len).await,
            Source::Replica(replicas) => read_slice(replicas.pipeline(), keys, len).await,
        }
    };
    let replies = spans::redis("PIPELINE head.slice", None, SLICE_COMMANDS, read).await?;
    // The head is the first page of `len` posts, judged like any other page.
    let (mut ids, complete) = match take_slice(&mut replies.into_iter(), None, len)?.1 {
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
    let read = async {
        match source {
            Source::Primary(client) => client.hmget(key, fields).await,
            Source::Replica(replicas) => replicas.hmget(key, fields).await,
        }
    };
    let values: Vec<Value> = spans::redis("HMGET head.bodies", None, 1, read).await?;
    Ok(all_cached_posts(values).map(|posts| Head::Posts { posts, complete }))
}

/// The replies to the first page of `len` of the slice under `keys`, in one round trip.
async fn read_slice<C: HashesInterface + SortedSetsInterface>(
    pipeline: Pipeline<C>,
    keys: &AuthorKeys,
    len: usize,
) -> Result<Vec<Result<Value, Error>>, Error> {
    queue_slice(
        &pipeline,
        keys.meta.clone(),
        keys.timeline.clone(),
        None,
        len,
    )
    .await?;
    Ok(pipeline.try_all::<Value>().await)
}
