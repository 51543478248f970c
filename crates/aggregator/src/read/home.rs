//! Home feeds: the followees' timelines, read in one parallel round of pipelined batches, one
//! batch per Redis node, merged by post id; bodies fetched for the page only.
//!
//! 0. Hot authors come with their timeline heads, read by the hot path (`crate::mitigate`):
//!    a head that covers the page answers for its author. The rest as follows.
//! 1. Followees from memory when read lately (dropped when ingest announces a follow change
//!    by the user, at most `aggregator.followee_cache_ttl_ms` old), else from the cached set
//!    (`{u:F}:fol`), or PostgreSQL when it is not loaded.
//! 2. Each followee's newest-post time, from memory: learnt from an earlier read of the
//!    author's meta and kept until ingest announces a change to the author (at most
//!    `aggregator.meta_cache_ttl_ms`).
//! 3. Read the timelines (`HMGET meta` flags and newest-post time, `ZREVRANGEBYSCORE tl`, ids
//!    only, at most page size + 1 below the cursor), grouped by the node that owns the author's
//!    slot, one pipeline per node, all nodes at once, each bounded by
//!    `aggregator.node_timeout_ms`: first of the page size + 1 authors with the newest posts
//!    and of every author whose time is not in memory; then only of the authors whose newest
//!    post is not older than the page's cut-off so far. The others cannot make the page and
//!    are not read at all.
//! 4. Authors the cache cannot answer for (not loaded, evicted, page past the cached window,
//!    node too slow or down) are read from PostgreSQL in one LATERAL top-k query.
//! 5. Merge, keep page size + 1 (the extra one says whether another page exists).
//! 6. Bodies: from memory when read before (a post's body never changes; whether the post is
//!    still there is what the timeline read said), else one `HMGET` per author on the page,
//!    pipelined per node; a body the cache lacks comes from PostgreSQL.
//!
//! If PostgreSQL fails too, the page is built from what answered and says so: `degraded` and
//! the number of authors left out.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use deadpool_postgres::Pool;
use fred::{
    interfaces::HashesInterface,
    types::{config::Server, Value},
    util::redis_keyslot,
};
use shardfeed_cache::{layout::FOLLOWING_LOADED, CacheLayout};
use shardfeed_proto::ids::post_time_ms;
use shardfeed_proto::v1::Post;
use shardfeed_server::{spans, ApiResult};

use super::{
    nodes::{send, NoAnswer, NodeClients},
    postgres,
    rebuild::{Rebuilder, Target},
};
use crate::{
    cursor::Position,
    detect::Detector,
    memory::{cache::Memory, Memories, Newest},
    metrics::{Fallback, ReadMetrics},
    slice::{
        cached_post, queue_slice, queue_timeline, remembered_meta, take_slice, take_timeline, Head,
        Slice, SLICE_COMMANDS, TIMELINE_COMMANDS,
    },
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

/// How long a body stays in memory at most. Bodies never change, so this only bounds how long
/// the text of a deleted post can linger in the process (it is never served: a deleted post is
/// not in its author's timeline, so it never reaches the body lookup).
pub const BODY_TTL: Duration = Duration::from_secs(600);

/// What a cached body costs on top of its text: the `Post` and its timestamp.
const BODY_OVERHEAD_BYTES: usize = std::mem::size_of::<Post>();

/// Post bodies read before, by post id (see [`HomeReader::new`]).
pub type Bodies = Arc<Memory<Arc<Post>>>;

#[derive(Clone)]
pub struct HomeReader {
    nodes: NodeClients,
    layout: CacheLayout,
    pool: Pool,
    node_timeout: Duration,
    rebuilder: Rebuilder,
    detect: Detector,
    memories: Memories,
    bodies: Bodies,
    metrics: ReadMetrics,
}

/// What a home reader reads with besides the stores.
pub struct HomeParts {
    /// Counts the round trips to each node.
    pub detect: Detector,
    /// Followee sets and newest-post times.
    pub memories: Memories,
    /// The in-process body cache, bounded in bytes (a zero budget turns it off).
    pub bodies: Bodies,
    /// Counts hits, misses, fallbacks and the per-node round trips.
    pub metrics: ReadMetrics,
}

impl HomeReader {
    pub fn new(
        nodes: NodeClients,
        layout: CacheLayout,
        pool: Pool,
        node_timeout: Duration,
        rebuilder: Rebuilder,
        parts: HomeParts,
    ) -> Self {
        Self {
            nodes,
            layout,
            pool,
            node_timeout,
            rebuilder,
            detect: parts.detect,
            memories: parts.memories,
            bodies: parts.bodies,
            metrics: parts.metrics,
        }
    }

    /// How long one node may take for its part of a page (`aggregator.node_timeout_ms`).
    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    /// A body cache of `bytes` at most.
    pub fn body_cache(bytes: usize) -> Bodies {
        Arc::new(Memory::new(bytes, BODY_TTL))
    }

    /// Whom `user_id` follows: from memory when read lately (dropped when ingest announces a
    /// follow change by the user), else from the cached set. `NOT_FOUND` for an unknown user.
    pub async fn followees(&self, user_id: i64) -> ApiResult<Arc<Vec<i64>>> {
        if let Some(followees) = self.memories.followees_of(user_id) {
            return Ok(followees);
        }
        let ticket = self.memories.followees_ticket();
        let key = self.layout.following(user_id);
        let owner = self.nodes.owner_of(&key);
        self.detect.count_request(owner.as_ref());
        let cached: Result<HashMap<String, String>, _> = spans::redis(
            "HGETALL following",
            owner.as_ref(),
            1,
            self.nodes.for_key(&key).hgetall(&key),
        )
        .await;
        match cached {
            Ok(set) if set.contains_key(FOLLOWING_LOADED) => {
                let followees: Arc<Vec<i64>> = Arc::new(
                    set.iter()
                        .filter(|(field, version)| {
                            field.as_str() != FOLLOWING_LOADED && !version.starts_with('-')
                        })
                        .filter_map(|(field, _)| field.parse().ok())
                        .collect(),
                );
                self.memories
                    .remember_followees(user_id, Arc::clone(&followees), ticket);
                Ok(followees)
            }
            Ok(_) => {
                // Rebuilt only once PostgreSQL says the user exists: unknown ids take no slot.
                let followees = postgres::followees(&self.pool, user_id).await?;
                self.rebuilder.request(Target::Following, user_id);
                Ok(Arc::new(followees))
            }
            Err(err) => {
                self.nodes.read_failed();
                tracing::warn!(user_id, error = %err, "followee set unreadable; reading PostgreSQL");
                postgres::followees(&self.pool, user_id).await.map(Arc::new)
            }
        }
    }

    /// The page of up to `size` posts after `after` of the authors of `heads` (hot authors,
    /// read by the hot path) and of `followees` (the others).
    pub async fn page(
        &self,
        heads: &[(i64, Arc<Head>)],
        followees: Vec<i64>,
        after: Option<Position>,
        size: usize,
    ) -> ApiResult<HomePage> {
        // 0. The posts of hot authors whose head covers the page are candidates before any
        //    node is asked.
        let (mut candidates, cold) = from_heads(heads, followees, after, size);

        // 1. Every other followee's newest-post time, from memory. Authors it does not know are
        //    read in the first wave whatever their time (their meta comes with the timeline).
        let (mut ranked, unknown) = self.known_newest(&cold);
        ranked.sort_unstable_by_key(|r| std::cmp::Reverse(r.newest_ms));

        // 2. The authors most likely to fill the page: the page + 1 with the newest posts, and
        //    the unknown ones.
        let first_wave: Vec<ToRead> = ranked
            .iter()
            .take(size + 1)
            .map(|r| ToRead {
                author: r.author,
                known: Some(*r),
            })
            .chain(unknown.into_iter().map(|author| ToRead {
                author,
                known: None,
            }))
            .collect();
        let (mut candidates_read, mut from_postgres) =
            self.read_slices(&first_wave, after, size).await;
        candidates.append(&mut candidates_read);

        // 3. An author whose newest post is older than the page's current cut-off cannot make
        //    the page: read only the others.
        let cutoff_ms = cutoff_ms(&mut candidates, size);
        let second_wave: Vec<ToRead> = ranked
            .iter()
            .skip(size + 1)
            .filter(|r| r.newest_ms >= cutoff_ms)
            .map(|r| ToRead {
                author: r.author,
                known: Some(*r),
            })
            .collect();
        if !second_wave.is_empty() {
            let (more_candidates, late) = self.read_slices(&second_wave, after, size).await;
            candidates.extend(more_candidates);
            from_postgres.extend(late);
        }
        let mut authors_omitted = 0;
        if !from_postgres.is_empty() {
            let (db_candidates, omitted) = self.read_postgres(&from_postgres, after, size).await;
            candidates.extend(db_candidates);
            authors_omitted += omitted;
        }

        // 4. The k-way merge: every author read contributed at most size + 1 of its newest ids
        //    below the cursor, so the newest size + 1 of the union are exactly the page and its
        //    lookahead.
        candidates.sort_unstable_by_key(|c| std::cmp::Reverse(c.post_id));
        let more = candidates.len() > size;
        candidates.truncate(size);
        let (posts, bodiless) = self.fill_bodies(candidates).await;
        Ok(HomePage {
            posts,
            more,
            authors_omitted: authors_omitted + bodiless,
        })
    }

    /// The followees whose newest-post time is in memory (see `Memories::newest_of`),
    /// with it, and the others. Deleted users are left out.
    fn known_newest(&self, followees: &[i64]) -> (Vec<Ranked>, Vec<i64>) {
        let mut ranked = Vec::with_capacity(followees.len());
        let mut unknown = Vec::new();
        for (author, newest) in followees.iter().zip(self.memories.newest_of(followees)) {
            match newest {
                Some(Newest::Gone) => {}
                Some(Newest::At {
                    newest_ms,
                    complete,
                }) => ranked.push(Ranked {
                    author: *author,
                    newest_ms,
                    complete,
                }),
                None => unknown.push(*author),
            }
        }
        (ranked, unknown)
    }

    /// The timeline slices of `authors`, one pipeline per node, all nodes at once. Returns the
    /// candidates, and the authors the cache could not rank (read them from PostgreSQL).
    async fn read_slices(
        &self,
        wave: &[ToRead],
        after: Option<Position>,
        size: usize,
    ) -> (Vec<Candidate>, Vec<i64>) {
        let ticket = self.memories.newest_ticket();
        let known: HashMap<i64, Ranked> = wave
            .iter()
            .filter_map(|r| r.known.map(|k| (r.author, k)))
            .collect();
        let authors: Vec<i64> = wave.iter().map(|r| r.author).collect();
        let batches = self
            .by_node(&authors, |a| self.layout.meta(*a))
            .into_iter()
            .map(|(node, authors)| {
                let known = &known;
                async move {
                    self.detect.count_request(node.as_ref());
                    let slices = self
                        .read_node(node.as_ref(), &authors, known, after, size)
                        .await;
                    (node, authors, slices)
                }
            });
        let mut candidates = Vec::new();
        let mut from_postgres = Vec::new();
        let metrics = &self.metrics;
        for (node, authors, slices) in futures::future::join_all(batches).await {
            match slices {
                Ok(slices) => {
                    for (author, (slice, newest)) in authors.iter().zip(slices) {
                        let hit = matches!(slice, Slice::Gone | Slice::Ids { .. });
                        if hit {
                            metrics.cache_hits(1);
                        } else {
                            metrics.cache_misses(1);
                        }
                        match newest {
                            Some(newest) => self.memories.remember_newest(*author, newest, ticket),
                            None if matches!(slice, Slice::NotLoaded) => {
                                self.memories.forget_newest(*author)
                            }
                            None => {}
                        }
                        match slice {
                            Slice::Gone => {}
                            Slice::Miss => {
                                metrics.fell_back(Fallback::PastWindow, 1);
                                from_postgres.push(*author)
                            }
                            Slice::NotLoaded => {
                                metrics.fell_back(Fallback::NotCached, 1);
                                self.rebuilder.request(Target::Timeline, *author);
                                from_postgres.push(*author);
                            }
                            Slice::Ids { ids, complete } => {
                                // Fewer than a page below the cursor and older posts exist
                                // only in PostgreSQL: the cache cannot rank this author.
                                if ids.len() <= size && !complete {
                                    metrics.fell_back(Fallback::PastWindow, 1);
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
                    self.nodes.read_failed();
                    let reason = if err.is::<NoAnswer>() {
                        Fallback::NodeTimeout
                    } else {
                        Fallback::NodeError
                    };
                    metrics.cache_misses(authors.len() as u64);
                    metrics.fell_back(reason, authors.len() as u64);
                    tracing::warn!(node = ?node, authors = authors.len(), error = %err,
                        "node did not answer its feed batch; reading its authors from PostgreSQL");
                    from_postgres.extend(authors);
                }
            }
        }
        (candidates, from_postgres)
    }

    /// The candidates of `authors` from PostgreSQL (one LATERAL query), and how many authors
    /// were left out because it did not answer either.
    async fn read_postgres(
        &self,
        authors: &[i64],
        after: Option<Position>,
        size: usize,
    ) -> (Vec<Candidate>, usize) {
        if authors.is_empty() {
            return (Vec::new(), 0);
        }
        let before = Position::before_id(after);
        match postgres::timelines_page(&self.pool, authors, before, size as i64 + 1).await {
            Ok(posts) => (
                posts
                    .into_iter()
                    .map(|post| Candidate {
                        post_id: post.post_id,
                        author_id: post.author_id,
                        post: Some(post),
                    })
                    .collect(),
                0,
            ),
            Err(err) => {
                tracing::warn!(authors = authors.len(), error = %err,
                    "PostgreSQL did not answer either; the page leaves these authors out");
                (Vec::new(), authors.len())
            }
        }
    }

    /// Groups ids by the node that owns the slot of `key(id)`. Unknown routing (no cluster
    /// state yet) puts everything in one group, which fred then routes command by command.
    fn by_node<F>(&self, ids: &[i64], key: F) -> HashMap<Option<Server>, Vec<i64>>
    where
        F: Fn(&i64) -> String,
    {
        let routing = self.nodes.routing();
        let mut groups: HashMap<Option<Server>, Vec<i64>> = HashMap::new();
        for id in ids {
            let server = routing
                .as_ref()
                .and_then(|r| r.get_server(redis_keyslot(key(id).as_bytes())).cloned());
            groups.entry(server).or_default().push(*id);
        }
        groups
    }

    /// One node's batch: the timeline slice of each author, with its meta flags (and
    /// newest-post time) — one pipeline. On a first page an author whose meta is remembered is
    /// judged by what is remembered (an announcement of any change to it drops that), and a
    /// timeline found empty although the author had posts means the keys were evicted: not
    /// loaded. Any other page reads the flags again with the timeline. Returns each author's
    /// slice and what to remember of it.
    async fn read_node(
        &self,
        node: Option<&Server>,
        authors: &[i64],
        known: &HashMap<i64, Ranked>,
        after: Option<Position>,
        size: usize,
    ) -> anyhow::Result<Vec<(Slice, Option<Newest>)>> {
        let remembered = |author: &i64| after.is_none().then(|| known.get(author)).flatten();
        let pipeline = self.nodes.on(node).pipeline();
        let mut commands = 0;
        for author in authors {
            let timeline = self.layout.timeline(*author);
            if remembered(author).is_some() {
                queue_timeline(&pipeline, timeline, after, size).await?;
                commands += TIMELINE_COMMANDS;
            } else {
                queue_slice(&pipeline, self.layout.meta(*author), timeline, after, size).await?;
                commands += SLICE_COMMANDS;
            }
        }
        let replies = send(
            "PIPELINE feed.slices",
            &self.metrics.redis,
            node,
            pipeline,
            commands,
            self.node_timeout,
        )
        .await?;
        let mut replies = replies.into_iter();
        authors
            .iter()
            .map(|author| {
                if let Some(known) = remembered(author) {
                    let meta = remembered_meta(known.newest_ms, known.complete);
                    return Ok((take_timeline(&mut replies, &meta, after, size)?, None));
                }
                let (meta, slice) = take_slice(&mut replies, after, size)?;
                let newest = match &slice {
                    Slice::Gone => Some(Newest::Gone),
                    Slice::NotLoaded => None,
                    Slice::Miss | Slice::Ids { .. } => meta.newest_ms.map(|newest_ms| Newest::At {
                        newest_ms,
                        complete: meta.complete,
                    }),
                };
                Ok((slice, newest))
            })
            .collect()
    }

    /// Bodies for the page: from memory if read before, else per author one `HMGET` of its
    /// posts on the page, pipelined per node; whatever the cache lacks comes from PostgreSQL,
    /// and its author is rebuilt (a timeline entry without a body means a key was lost). If
    /// PostgreSQL does not answer either, those posts are left out: returns the page and how
    /// many authors lost posts that way.
    async fn fill_bodies(&self, mut page: Vec<Candidate>) -> (Vec<Post>, usize) {
        let ticket = self.bodies.ticket();
        let unknown: Vec<i64> = page
            .iter()
            .filter(|c| c.post.is_none())
            .map(|c| c.post_id)
            .collect();
        if !unknown.is_empty() {
            let mut remembered = self.bodies.get_many(&unknown).into_iter();
            for c in page.iter_mut().filter(|c| c.post.is_none()) {
                c.post = remembered.next().flatten().map(|post| (*post).clone());
            }
        }
        let mut wanted: HashMap<i64, Vec<i64>> = HashMap::new();
        for c in page.iter().filter(|c| c.post.is_none()) {
            wanted.entry(c.author_id).or_default().push(c.post_id);
        }
        let authors: Vec<i64> = wanted.keys().copied().collect();
        let mut found: HashMap<i64, Post> = HashMap::new();
        let batches = self
            .by_node(&authors, |a| self.layout.posts(*a))
            .into_iter()
            .map(|(node, group)| {
                let wanted = &wanted;
                async move {
                    self.detect.count_request(node.as_ref());
                    let read = self.read_bodies(node.as_ref(), &group, wanted).await;
                    if read.is_err() {
                        self.nodes.read_failed();
                    }
                    (group, read)
                }
            });
        let mut unread = HashSet::new();
        for (group, read) in futures::future::join_all(batches).await {
            match read {
                Ok(posts) => found.extend(posts.into_iter().map(|p| (p.post_id, p))),
                Err(_) => unread.extend(group),
            }
        }
        let missing: Vec<&Candidate> = page
            .iter()
            .filter(|c| c.post.is_none() && !found.contains_key(&c.post_id))
            .collect();
        let mut bodiless = 0;
        if !missing.is_empty() {
            let mut authors: Vec<i64> = missing.iter().map(|c| c.author_id).collect();
            authors.sort_unstable();
            authors.dedup();
            // An author whose node answered without the body lost a key: rebuild it.
            for author in authors.iter().filter(|a| !unread.contains(*a)) {
                self.rebuilder.request(Target::Timeline, *author);
            }
            let ids: Vec<i64> = missing.iter().map(|c| c.post_id).collect();
            match postgres::posts_by_id(&self.pool, &ids).await {
                Ok(posts) => found.extend(posts.into_iter().map(|p| (p.post_id, p))),
                Err(err) => {
                    tracing::warn!(authors = authors.len(), error = %err,
                        "bodies missing from the cache and PostgreSQL did not answer; the page leaves them out");
                    bodiless = authors.len();
                }
            }
        }
        for post in found.values() {
            let bytes = post.body.len() + BODY_OVERHEAD_BYTES;
            self.bodies
                .insert(post.post_id, Arc::new(post.clone()), bytes, ticket);
        }
        // A post deleted since its id was read has no body anywhere: it drops out.
        let posts = page
            .into_iter()
            .filter_map(|c| c.post.or_else(|| found.remove(&c.post_id)))
            .collect();
        (posts, bodiless)
    }

    async fn read_bodies(
        &self,
        node: Option<&Server>,
        authors: &[i64],
        wanted: &HashMap<i64, Vec<i64>>,
    ) -> anyhow::Result<Vec<Post>> {
        let pipeline = self.nodes.on(node).pipeline();
        for author in authors {
            let fields: Vec<String> = wanted[author].iter().map(i64::to_string).collect();
            let _: () = pipeline.hmget(self.layout.posts(*author), fields).await?;
        }
        let replies = send(
            "PIPELINE feed.bodies",
            &self.metrics.redis,
            node,
            pipeline,
            authors.len(),
            self.node_timeout,
        )
        .await?;
        let mut posts = Vec::new();
        for reply in replies {
            let values: Vec<Value> = reply?.convert()?;
            // A body missing or deleted since its id was read is simply not found here.
            posts.extend(values.into_iter().filter_map(cached_post));
        }
        Ok(posts)
    }
}

/// A cached author, the time of its newest post and whether the cache holds all its posts,
/// as remembered.
#[derive(Clone, Copy)]
struct Ranked {
    author: i64,
    newest_ms: i64,
    complete: bool,
}

/// An author whose timeline a wave reads, with what is remembered of it.
#[derive(Clone, Copy)]
struct ToRead {
    author: i64,
    known: Option<Ranked>,
}

/// The candidates of the authors of `heads` whose head covers the page (a deleted author has
/// none), and `followees` with the authors whose head does not.
fn from_heads(
    heads: &[(i64, Arc<Head>)],
    mut cold: Vec<i64>,
    after: Option<Position>,
    size: usize,
) -> (Vec<Candidate>, Vec<i64>) {
    let mut candidates = Vec::new();
    for (author, head) in heads {
        if matches!(**head, Head::Gone) {
            continue;
        }
        match head.page(after, size) {
            Some(page) => candidates.extend(page.posts.iter().map(|post| Candidate {
                post_id: post.post_id,
                author_id: *author,
                post: Some(post.clone()),
            })),
            None => cold.push(*author),
        }
    }
    (candidates, cold)
}

/// The time of the post that would be the page's lookahead (the `size + 1`-th newest
/// candidate so far), or the smallest time when there are not that many yet. An author whose
/// newest post is older than this cannot make the page.
fn cutoff_ms(candidates: &mut [Candidate], size: usize) -> i64 {
    if candidates.len() <= size {
        return i64::MIN;
    }
    candidates.select_nth_unstable_by_key(size, |c| std::cmp::Reverse(c.post_id));
    post_time_ms(candidates[size].post_id)
}
