//! Home feeds: the followees' timelines, read in one parallel round of pipelined batches, one
//! batch per Redis node, merged by post id; bodies fetched for the page only.
//!
//! 1. Followees from the cached set (`{u:F}:fol`), or PostgreSQL when it is not loaded.
//! 2. Group the followees by the node that owns their slot. Per node, one pipeline with, per
//!    author, `HMGET meta` and `ZREVRANGEBYSCORE tl` (ids only, at most page size + 1 below the
//!    cursor). All nodes at once, each bounded by `aggregator.node_timeout_ms`.
//! 3. Authors the cache cannot answer for (not loaded, evicted, page past the cached window,
//!    node too slow or down) are read from PostgreSQL in one LATERAL top-k query.
//! 4. Merge, keep page size + 1 (the extra one says whether another page exists).
//! 5. Bodies: one `HMGET` per author on the page, pipelined per node; a body the cache lacks
//!    comes from PostgreSQL.
//!
//! If PostgreSQL fails too, the page is built from what answered and says so: `degraded` and
//! the number of authors left out.

use std::{collections::HashMap, time::Duration};

use deadpool_postgres::Pool;
use fred::{
    clients::Client,
    interfaces::{ClusterInterface, HashesInterface},
    types::{config::Server, Value},
    util::redis_keyslot,
};
use prost::Message;
use shardfeed_core::{
    cache::{
        layout::{FOLLOWING_LOADED, TOMBSTONE},
        CacheLayout,
    },
    ApiResult,
};
use shardfeed_proto::v1::Post;

use super::{
    author::{queue_slice, take_slice, Slice},
    cursor::Position,
    postgres,
    rebuild::{Rebuilder, Target},
};

/// One page of a home feed.
#[derive(Debug, Default)]
pub struct HomePage {
    pub posts: Vec<Post>,
    /// Older posts exist.
    pub more: bool,
    /// Followees whose posts could be read from no store: the page may lack some of theirs.
    pub authors_omitted: usize,
}

/// A post on its way into the page: its body may still be in the cache.
struct Candidate {
    post_id: i64,
    author_id: i64,
    post: Option<Post>,
}

#[derive(Clone)]
pub struct HomeReader {
    client: Client,
    layout: CacheLayout,
    pool: Pool,
    node_timeout: Duration,
    rebuilder: Rebuilder,
}

impl HomeReader {
    pub fn new(
        client: Client,
        layout: CacheLayout,
        pool: Pool,
        node_timeout: Duration,
        rebuilder: Rebuilder,
    ) -> Self {
        Self {
            client,
            layout,
            pool,
            node_timeout,
            rebuilder,
        }
    }

    /// Whom `user_id` follows. `NOT_FOUND` for an unknown user.
    pub async fn followees(&self, user_id: i64) -> ApiResult<Vec<i64>> {
        let cached: Result<HashMap<String, String>, _> =
            self.client.hgetall(self.layout.following(user_id)).await;
        match cached {
            Ok(set) if set.contains_key(FOLLOWING_LOADED) => Ok(set
                .iter()
                .filter(|(field, version)| {
                    field.as_str() != FOLLOWING_LOADED && !version.starts_with('-')
                })
                .filter_map(|(field, _)| field.parse().ok())
                .collect()),
            Ok(_) => {
                self.rebuilder.request(Target::Following, user_id);
                postgres::followees(&self.pool, user_id).await
            }
            Err(err) => {
                tracing::warn!(user_id, error = %err, "followee set unreadable; reading PostgreSQL");
                postgres::followees(&self.pool, user_id).await
            }
        }
    }

    /// The page of up to `size` posts of `followees` after `after`.
    pub async fn page(
        &self,
        followees: &[i64],
        after: Option<Position>,
        size: usize,
    ) -> ApiResult<HomePage> {
        let mut candidates = Vec::new();
        let mut from_postgres = Vec::new();
        // Every node at once, one pipelined batch each.
        let batches = self
            .by_node(followees, |a| self.layout.meta(*a))
            .into_iter()
            .map(|(node, authors)| async move {
                let slices = self.read_node(&authors, after, size).await;
                (node, authors, slices)
            });
        for (node, authors, slices) in futures::future::join_all(batches).await {
            match slices {
                Ok(slices) => {
                    for (author, slice) in authors.iter().zip(slices) {
                        match slice {
                            Slice::Gone => {}
                            Slice::Miss => from_postgres.push(*author),
                            Slice::NotLoaded => {
                                self.rebuilder.request(Target::Timeline, *author);
                                from_postgres.push(*author);
                            }
                            Slice::Ids { ids, complete } => {
                                // Fewer than a page below the cursor and older posts exist
                                // only in PostgreSQL: the cache cannot rank this author.
                                if ids.len() <= size && !complete {
                                    from_postgres.push(*author);
                                    continue;
                                }
                                candidates.extend(ids.into_iter().map(|post_id| Candidate {
                                    post_id,
                                    author_id: *author,
                                    post: None,
                                }));
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(node = ?node, authors = authors.len(), error = %err,
                        "node did not answer its feed batch; reading its authors from PostgreSQL");
                    from_postgres.extend(authors);
                }
            }
        }
        let mut authors_omitted = 0;
        if !from_postgres.is_empty() {
            let before = Position::before_id(after);
            match postgres::timelines_page(&self.pool, &from_postgres, before, size as i64 + 1)
                .await
            {
                Ok(posts) => candidates.extend(posts.into_iter().map(|post| Candidate {
                    post_id: post.post_id,
                    author_id: post.author_id,
                    post: Some(post),
                })),
                Err(err) => {
                    tracing::warn!(authors = from_postgres.len(), error = %err,
                        "PostgreSQL did not answer either; the page leaves these authors out");
                    authors_omitted = from_postgres.len();
                }
            }
        }

        // The k-way merge: every author contributed at most size + 1 of its newest ids below
        // the cursor, so the newest size + 1 of the union are exactly the page and its lookahead.
        candidates.sort_unstable_by_key(|c| std::cmp::Reverse(c.post_id));
        let more = candidates.len() > size;
        candidates.truncate(size);
        let posts = self.fill_bodies(candidates).await?;
        Ok(HomePage {
            posts,
            more,
            authors_omitted,
        })
    }

    /// Groups ids by the node that owns the slot of `key(id)`. Unknown routing (no cluster
    /// state yet) puts everything in one group, which fred then routes command by command.
    fn by_node<F>(&self, ids: &[i64], key: F) -> HashMap<Option<Server>, Vec<i64>>
    where
        F: Fn(&i64) -> String,
    {
        let routing = self.client.cached_cluster_state();
        let mut groups: HashMap<Option<Server>, Vec<i64>> = HashMap::new();
        for id in ids {
            let server = routing
                .as_ref()
                .and_then(|r| r.get_server(redis_keyslot(key(id).as_bytes())).cloned());
            groups.entry(server).or_default().push(*id);
        }
        groups
    }

    /// One node's batch: meta flags and the timeline slice of each author, one pipeline.
    async fn read_node(
        &self,
        authors: &[i64],
        after: Option<Position>,
        size: usize,
    ) -> anyhow::Result<Vec<Slice>> {
        let pipeline = self.client.pipeline();
        for author in authors {
            queue_slice(&pipeline, &self.layout, *author, after, size).await?;
        }
        let replies = tokio::time::timeout(self.node_timeout, pipeline.try_all::<Value>())
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.node_timeout))?;
        let mut replies = replies.into_iter();
        let mut slices = Vec::with_capacity(authors.len());
        for _ in authors {
            slices.push(take_slice(&mut replies, after, size)?);
        }
        Ok(slices)
    }

    /// Bodies for the page: per author one `HMGET` of its posts on the page, pipelined per
    /// node; whatever the cache lacks comes from PostgreSQL.
    async fn fill_bodies(&self, page: Vec<Candidate>) -> ApiResult<Vec<Post>> {
        let mut wanted: HashMap<i64, Vec<i64>> = HashMap::new();
        for c in page.iter().filter(|c| c.post.is_none()) {
            wanted.entry(c.author_id).or_default().push(c.post_id);
        }
        let authors: Vec<i64> = wanted.keys().copied().collect();
        let mut found: HashMap<i64, Post> = HashMap::new();
        let batches = self
            .by_node(&authors, |a| self.layout.posts(*a))
            .into_values()
            .map(|group| {
                let wanted = &wanted;
                async move { self.read_bodies(&group, wanted).await }
            });
        for posts in futures::future::join_all(batches)
            .await
            .into_iter()
            .flatten()
        {
            found.extend(posts.into_iter().map(|p| (p.post_id, p)));
        }
        let missing: Vec<i64> = page
            .iter()
            .filter(|c| c.post.is_none() && !found.contains_key(&c.post_id))
            .map(|c| c.post_id)
            .collect();
        if !missing.is_empty() {
            for post in postgres::posts_by_id(&self.pool, &missing).await? {
                found.insert(post.post_id, post);
            }
        }
        // A post deleted since its id was read has no body anywhere: it drops out.
        Ok(page
            .into_iter()
            .filter_map(|c| c.post.or_else(|| found.remove(&c.post_id)))
            .collect())
    }

    async fn read_bodies(
        &self,
        authors: &[i64],
        wanted: &HashMap<i64, Vec<i64>>,
    ) -> anyhow::Result<Vec<Post>> {
        let pipeline = self.client.pipeline();
        for author in authors {
            let fields: Vec<String> = wanted[author].iter().map(i64::to_string).collect();
            let _: () = pipeline.hmget(self.layout.posts(*author), fields).await?;
        }
        let replies = tokio::time::timeout(self.node_timeout, pipeline.try_all::<Value>())
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.node_timeout))?;
        let mut posts = Vec::new();
        for reply in replies {
            let values: Vec<Value> = reply?.convert()?;
            for value in values {
                let bytes = match value {
                    Value::Bytes(b) => b,
                    Value::String(s) => s.into_inner(),
                    _ => continue,
                };
                if bytes.as_ref() != TOMBSTONE.as_bytes() {
                    if let Ok(post) = Post::decode(bytes.as_ref()) {
                        posts.push(post);
                    }
                }
            }
        }
        Ok(posts)
    }
}
