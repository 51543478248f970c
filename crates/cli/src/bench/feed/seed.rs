//! Seeding the feed bench's data in bulk, not through the API: users with one `INSERT …
//! SELECT`, follows and posts with binary `COPY`, the cache with the write path's own
//! [`CacheWriter`] scripts; and removing all of it afterwards.

use std::ops::Range;
use std::pin::pin;
use std::time::Instant;

use anyhow::{bail, Context};
use fred::clients::Client as RedisClient;
use fred::interfaces::KeysInterface;
use futures::{stream, StreamExt};
use rand::rngs::StdRng;
use rand::SeedableRng;
use shardfeed_cache::{CacheChange, CacheLayout, CacheWriter};
use shardfeed_proto::ids::post_time_ms;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::dataset::{body_of, generate, now_ms, system_time, Dataset, Shape};
use super::FeedBenchArgs;
use crate::client::connect_postgres;

/// Cache changes per `CacheWriter::apply_all` batch, and batches in flight at once.
const CACHE_BATCH: usize = 5_000;
const CACHE_BATCHES_IN_FLIGHT: usize = 4;
/// A batch's failed changes are applied again (the scripts are idempotent) this many times.
const CACHE_ATTEMPTS: usize = 3;
/// Concurrent `COPY … posts` streams (each its own connection), beside the one for follows.
const POST_COPY_STREAMS: usize = 2;

/// What the bench created and must remove, whatever happens.
#[derive(Default)]
pub struct Created {
    pub user_ids: Vec<i64>,
}

/// Where the bench reads and writes beside the aggregator.
pub struct Stores {
    pub pg_config: crate::client::PostgresTarget,
    pub admin: tokio_postgres::Client,
    pub redis: RedisClient,
    pub layout: CacheLayout,
    pub writer: CacheWriter,
}

/// Users, follows and posts straight into PostgreSQL; returns the data set and the graph
/// version the cache's follow edges get.
pub async fn seed_postgres(
    args: &FeedBenchArgs,
    stores: &Stores,
    created: &mut Created,
) -> anyhow::Result<(Dataset, i64)> {
    let admin = &stores.admin;
    let users = args.users as usize;
    let run_tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    eprintln!(
        "bench feed: seeding PostgreSQL: {users} users (bf_{run_tag}_<i>), {} followees for each \
         of {} readers ({}), {} posts per author",
        args.followees,
        args.readers(),
        args.popularity(),
        args.posts_per_author
    );
    let mut step = Instant::now();
    let mut lap = |what: &str| {
        eprintln!(
            "  postgres: {what} in {:.1} s",
            step.elapsed().as_secs_f64()
        );
        step = Instant::now();
    };
    let rows = admin
        .query(
            "INSERT INTO users (handle, display_name) \
             SELECT 'bf_' || $1::text || '_' || i, 'Bench feed ' || i \
             FROM generate_series(0, $2::int - 1) AS i \
             RETURNING user_id, handle",
            &[&run_tag, &(users as i32)],
        )
        .await
        .context("inserting the bench users")?;
    let mut user_ids = vec![0i64; users];
    for row in &rows {
        let user_id: i64 = row.get(0);
        created.user_ids.push(user_id);
        let handle: &str = row.get(1);
        let index: usize = handle
            .rsplit('_')
            .next()
            .and_then(|i| i.parse().ok())
            .with_context(|| format!("unexpected handle {handle:?}"))?;
        user_ids[index] = user_id;
    }

    lap("users (INSERT … SELECT generate_series)");

    // One post_id_seq value per post, as the ingest service draws them.
    let post_count = users * args.posts_per_author as usize;
    let seqs: Vec<i64> = admin
        .query_one(
            "SELECT coalesce(array_agg(nextval('post_id_seq')), '{}') \
             FROM generate_series(1, $1::bigint)",
            &[&(post_count as i64)],
        )
        .await
        .context("drawing post ids from post_id_seq")?
        .get(0);
    // One graph version for every seeded edge: they are made "at once".
    let version: i64 = admin
        .query_one("SELECT nextval('graph_version_seq')", &[])
        .await
        .context("drawing a graph version")?
        .get(0);

    lap("post ids and a graph version drawn from the sequences");

    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let shape = Shape {
        followees: args.followees as usize,
        readers: args.readers() as usize,
        posts_per_author: args.posts_per_author as usize,
        zipf: args.zipf,
        body_bytes: args.body_bytes as usize,
    };
    let data = generate(&mut rng, user_ids, shape, &seqs, now_ms());
    drop(seqs);
    lap(&format!("data generated (seed {seed})"));

    // Follows on this connection, posts on their own, all at once.
    let mut post_clients = Vec::with_capacity(POST_COPY_STREAMS);
    for _ in 0..POST_COPY_STREAMS {
        post_clients.push(connect_postgres(&stores.pg_config).await?);
    }
    let per_stream = users.div_ceil(POST_COPY_STREAMS);
    let post_copies = post_clients.iter().enumerate().map(|(i, client)| {
        let range = (i * per_stream).min(users)..((i + 1) * per_stream).min(users);
        copy_posts(client, &data, range)
    });
    futures::try_join!(
        copy_follows(admin, &data),
        futures::future::try_join_all(post_copies)
    )?;
    lap(&format!(
        "follows and posts (binary COPY, {} streams)",
        POST_COPY_STREAMS + 1
    ));
    // Fresh statistics, so the planner sees the tables as they now are.
    admin
        .batch_execute("ANALYZE users, follows, posts")
        .await
        .context("ANALYZE after seeding")?;
    lap("ANALYZE");
    Ok((data, version))
}

async fn copy_follows(client: &tokio_postgres::Client, data: &Dataset) -> anyhow::Result<()> {
    let sink = client
        .copy_in("COPY follows (follower_id, followee_id) FROM STDIN (FORMAT binary)")
        .await
        .context("COPY follows")?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT8]));
    for (user, followees) in data.follows.iter().enumerate() {
        let follower_id = data.user_ids[user];
        for &followee in followees {
            let followee_id = data.user_ids[followee as usize];
            writer
                .as_mut()
                .write(&[&follower_id, &followee_id])
                .await
                .context("COPY follows")?;
        }
    }
    writer.finish().await.context("COPY follows")?;
    Ok(())
}

async fn copy_posts(
    client: &tokio_postgres::Client,
    data: &Dataset,
    authors: Range<usize>,
) -> anyhow::Result<()> {
    let sink = client
        .copy_in("COPY posts (author_id, post_id, body, create_time) FROM STDIN (FORMAT binary)")
        .await
        .context("COPY posts")?;
    let mut writer = pin!(BinaryCopyInWriter::new(
        sink,
        &[Type::INT8, Type::INT8, Type::TEXT, Type::TIMESTAMPTZ]
    ));
    for author in authors {
        let author_id = data.user_ids[author];
        for &post_id in &data.posts[author] {
            let body = body_of(post_id, data.body_bytes);
            let time = system_time(post_time_ms(post_id));
            writer
                .as_mut()
                .write(&[&author_id, &post_id, &body, &time])
                .await
                .context("COPY posts")?;
        }
    }
    writer.finish().await.context("COPY posts")?;
    Ok(())
}

/// The cache as the write path leaves it, with its own scripts: every post, then every follow
/// edge, then each user's `UserCreated` last (it marks the timeline and the followee set
/// loaded, so a reader never trusts a half-seeded user).
pub async fn seed_cache(writer: &CacheWriter, data: &Dataset, version: i64) -> anyhow::Result<()> {
    let posts = data.posts.iter().enumerate().flat_map(|(author, ids)| {
        let author_id = data.user_ids[author];
        ids.iter().map(move |&post_id| CacheChange::PostCreated {
            author_id,
            post_id,
            time_ms: post_time_ms(post_id),
            body: body_of(post_id, data.body_bytes),
        })
    });
    apply_changes(writer, "PostCreated", posts).await?;
    let follows = data
        .follows
        .iter()
        .enumerate()
        .flat_map(|(user, followees)| {
            let follower_id = data.user_ids[user];
            followees.iter().map(move |&f| CacheChange::Followed {
                follower_id,
                followee_id: data.user_ids[f as usize],
                version,
            })
        });
    apply_changes(writer, "Followed", follows).await?;
    let users = data
        .user_ids
        .iter()
        .map(|&user_id| CacheChange::UserCreated { user_id });
    apply_changes(writer, "UserCreated", users).await
}

/// Applies `changes` in batches of [`CACHE_BATCH`], [`CACHE_BATCHES_IN_FLIGHT`] at once.
async fn apply_changes(
    writer: &CacheWriter,
    kind: &str,
    changes: impl Iterator<Item = CacheChange>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut changes = changes;
    let batches = std::iter::from_fn(|| {
        let batch: Vec<CacheChange> = changes.by_ref().take(CACHE_BATCH).collect();
        (!batch.is_empty()).then_some(batch)
    });
    let mut results = stream::iter(batches)
        .map(|batch| apply_batch(writer, batch))
        .buffer_unordered(CACHE_BATCHES_IN_FLIGHT);
    let mut applied = 0usize;
    while let Some(result) = results.next().await {
        applied += result.with_context(|| format!("seeding the cache ({kind})"))?;
    }
    eprintln!(
        "  cache: {applied} {kind} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One batch; changes that fail are applied again (every script is idempotent).
async fn apply_batch(writer: &CacheWriter, batch: Vec<CacheChange>) -> anyhow::Result<usize> {
    let size = batch.len();
    let mut pending = batch;
    for _ in 0..CACHE_ATTEMPTS {
        let results = writer.apply_all(&pending).await;
        let mut failed = Vec::new();
        let mut first_error = None;
        for (change, result) in pending.into_iter().zip(results) {
            if let Err(err) = result {
                first_error.get_or_insert(err);
                failed.push(change);
            }
        }
        match first_error {
            None => return Ok(size),
            Some(err) if failed.len() == size => {
                // Nothing went through: no point in hammering a node that is down.
                bail!("{size} changes failed: {err}")
            }
            Some(_) => pending = failed,
        }
    }
    bail!(
        "{} of {size} changes still failed after {CACHE_ATTEMPTS} attempts",
        pending.len()
    )
}

/// Every key of these users (timeline, bodies, meta, followee set, rebuild leases): all in one
/// slot per user, so one `DEL` each.
pub async fn delete_user_keys(
    redis: &RedisClient,
    layout: &CacheLayout,
    user_ids: &[i64],
) -> anyhow::Result<()> {
    for chunk in user_ids.chunks(CACHE_BATCH) {
        let deletes = chunk.iter().map(|&user_id| {
            let keys = vec![
                layout.timeline(user_id),
                layout.posts(user_id),
                layout.meta(user_id),
                layout.following(user_id),
                layout.rebuild_lease(user_id, "tl"),
                layout.rebuild_lease(user_id, "fol"),
            ];
            async move { redis.del::<i64, _>(keys).await }
        });
        for result in futures::future::join_all(deletes).await {
            result.context("DEL")?;
        }
    }
    Ok(())
}

/// `EXPLAIN` of the feed query for one user: the plan's top line (returned), and on stderr the
/// first line that scans `posts_author_recent_idx` (on a partitioned table the plan names the
/// partitions' indexes, so those are looked up first).
/// Best effort: every failure is reported on stderr, none hides the figures.
pub async fn clean_up(stores: &Stores, created: &Created) {
    if created.user_ids.is_empty() {
        return;
    }
    let ids = &created.user_ids;
    eprintln!(
        "bench feed: deleting the {} bench users, their follows and posts (SQL) and their cache \
         keys",
        ids.len()
    );
    let started = Instant::now();
    for (what, sql) in [
        ("posts", "DELETE FROM posts WHERE author_id = ANY($1)"),
        ("follows", "DELETE FROM follows WHERE follower_id = ANY($1)"),
        ("users", "DELETE FROM users WHERE user_id = ANY($1)"),
    ] {
        if let Err(err) = stores.admin.execute(sql, &[ids]).await {
            eprintln!("warning: could not delete the bench {what}: {err:#}");
        }
    }
    if let Err(err) = delete_user_keys(&stores.redis, &stores.layout, ids).await {
        eprintln!(
            "warning: could not delete every cache key of the bench users (they expire after \
             cache.ttl_secs): {err:#}"
        );
    }
    eprintln!(
        "bench feed: cleaned up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
