//! Loading the simulated network through the ingest API, with progress (a bar on a terminal, a
//! line per step in a log), and waiting for every change to reach the cache.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{stream, StreamExt};
use shardfeed_proto::v1::{
    graph_service_client::GraphServiceClient, post_service_client::PostServiceClient,
    user_service_client::UserServiceClient, CreatePostRequest, CreateUserRequest, FollowRequest,
};

use super::run::SimArgs;
use crate::client::Channels;
use crate::progress::Step;

/// Requests in flight while the population is loaded.
const LOAD_CONCURRENCY: usize = 48;

/// Creates the users, their follows and their first posts; returns user ids by rank.
pub async fn load_population(
    args: &SimArgs,
    ingest: &Channels,
    graph: &[Vec<usize>],
) -> anyhow::Result<Vec<i64>> {
    // Fresh handles on every invocation: the seed fixes the shape, not the names.
    let run_tag: u32 = rand::random();
    let started = Instant::now();
    eprintln!(
        "sim: loading the network through the ingest API ({})",
        args.ingest.url
    );

    let progress = Step::new(graph.len() as u64, "users", "users");
    let users: Vec<i64> = stream::iter(0..graph.len())
        .map(|rank| {
            let mut client = UserServiceClient::new(ingest.get(rank));
            let progress = progress.clone();
            async move {
                let user = client
                    .create_user(CreateUserRequest {
                        handle: format!("sim{run_tag:08x}_{rank}"),
                        display_name: format!("Author #{}", rank + 1),
                        request_id: uuid::Uuid::new_v4().to_string(),
                    })
                    .await
                    .with_context(|| format!("CreateUser for rank {rank}"))?
                    .into_inner()
                    .user
                    .context("CreateUser answered without a user")?;
                progress.inc(1);
                anyhow::Ok(user.user_id)
            }
        })
        .buffered(LOAD_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    progress.finish();

    let edges: Vec<(i64, i64)> = graph
        .iter()
        .enumerate()
        .flat_map(|(user, followees)| followees.iter().map(move |f| (user, *f)))
        .map(|(user, followee)| (users[user], users[followee]))
        .collect();
    for_each_with_progress("follows", edges, |i, (follower_id, followee_id)| {
        let mut client = GraphServiceClient::new(ingest.get(i));
        async move {
            client
                .follow(FollowRequest {
                    follower_id,
                    followee_id,
                })
                .await
                .with_context(|| format!("Follow {follower_id} -> {followee_id}"))?;
            Ok(())
        }
    })
    .await?;

    let posts: Vec<(usize, i64)> = (0..args.posts)
        .flat_map(|n| users.iter().map(move |u| (n, *u)))
        .collect();
    for_each_with_progress("posts", posts, |i, (n, author_id)| {
        let mut client = PostServiceClient::new(ingest.get(i));
        async move {
            client
                .create_post(CreatePostRequest {
                    author_id,
                    body: format!("post {n} of author {author_id}"),
                    request_id: uuid::Uuid::new_v4().to_string(),
                })
                .await
                .with_context(|| format!("CreatePost for {author_id}"))?;
            Ok(())
        }
    })
    .await?;
    eprintln!(
        "sim: network loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(users)
}

/// Runs `call` for every item, [`LOAD_CONCURRENCY`] at a time, with its progress; stops at the
/// first error.
async fn for_each_with_progress<T, F, Fut>(what: &str, items: Vec<T>, call: F) -> anyhow::Result<()>
where
    F: Fn(usize, T) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let progress = Step::new(items.len() as u64, what, what);
    let mut results = stream::iter(items.into_iter().enumerate())
        .map(|(i, item)| call(i, item))
        .buffer_unordered(LOAD_CONCURRENCY);
    while let Some(result) = results.next().await {
        result?;
        progress.inc(1);
    }
    progress.finish();
    Ok(())
}

/// Waits until every committed change has reached the cache (the outbox is empty).
pub async fn settle(pg: &tokio_postgres::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let depth: i64 = pg
            .query_one("SELECT count(*) FROM outbox", &[])
            .await
            .context("counting the outbox")?
            .get(0);
        if depth == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{depth} outbox rows still undelivered after 120 s: is the cache reachable?");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
