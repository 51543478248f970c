//! One measured run: the mixed workload (home feeds, profile views, posts) from closed-loop
//! clients, the visibility probe beside it, the masters' figures around it, the check after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardfeed_proto::auth::AuthChannel;
use shardfeed_proto::v1::{
    feed_service_client::FeedServiceClient, hotspot_service_client::HotspotServiceClient,
    post_service_client::PostServiceClient, CreatePostRequest, GetHomeFeedRequest,
    GetHotAuthorsRequest, GetHotAuthorsResponse, GetUserTimelineRequest,
};
use tokio::task::JoinSet;

use super::figures::{Latency, RunFigures};
use super::masters::{check_feeds, NodeSnapshot};
use super::population::settle;
use super::run::{SimArgs, World, PAGE};
use crate::client::{status_error, Channels};
use crate::measure::driver::within_timeout;
use crate::measure::record::latency_histogram;
use crate::measure::summary::ns_to_ms;
use crate::measure::{OpError, Record, Summary};
use crate::popularity::Popularity;
use crate::progress::Step;

/// The authors whose new posts the visibility probe watches: the most popular ones.
const PROBED_AUTHORS: usize = 3;

/// What each kind of request recorded in the measured window.
#[derive(Default)]
struct Records {
    feeds: Record,
    views: Record,
    posts: Record,
}

pub async fn drive(
    args: &SimArgs,
    world: &World,
    channels: &Channels,
    label: &str,
) -> anyhow::Result<RunFigures> {
    let start = Instant::now();
    let measure_start = start + Duration::from_secs_f64(args.warmup);
    let end = measure_start + Duration::from_secs_f64(args.seconds);

    let mut workers = JoinSet::new();
    for worker in 0..args.concurrency {
        let mix = Mix {
            feeds: FeedServiceClient::new(channels.get(worker)),
            posts: PostServiceClient::new(world.ingest.get(worker)),
            rng: StdRng::seed_from_u64(args.seed ^ ((worker as u64 + 1) * 0x9E37_79B9)),
            users: world.users.clone(),
            views: world.views.clone(),
            posters: world.posters.clone(),
            feed_share: args.feed_share,
            view_share: args.view_share,
        };
        workers.spawn(mix.run(measure_start, end));
    }
    let probe = tokio::spawn(probe_visibility(
        FeedServiceClient::new(channels.get(0)),
        PostServiceClient::new(world.ingest.get(0)),
        world.users.iter().take(PROBED_AUTHORS).copied().collect(),
        measure_start,
        end,
    ));
    let mut hotspot = HotspotServiceClient::new(channels.get(0));

    tokio::time::sleep_until(measure_start.into()).await;
    let before = NodeSnapshot::take(&world.redis).await?;
    let hot_before = hot_stats(&mut hotspot).await?;
    let progress = Step::new(args.seconds.round() as u64, &format!("run {label}"), "s");
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        progress.set_position(measure_start.elapsed().as_secs_f64().round() as u64);
    }
    let after = NodeSnapshot::take(&world.redis).await?;
    let hot_after = hot_stats(&mut hotspot).await?;
    progress.finish();

    let mut records = Records::default();
    while let Some(worker) = workers.join_next().await {
        let worker = worker.context("a simulation worker panicked")?;
        records.feeds.merge(worker.feeds);
        records.views.merge(worker.views);
        records.posts.merge(worker.posts);
    }
    let lags = probe.await.context("the visibility probe panicked")?;
    let window = Duration::from_secs_f64(args.seconds);
    let latency = |label: &str, record: Record| {
        let summary = Summary::new(label, record, window);
        Latency {
            count: summary.requests - summary.errors,
            errors: summary.errors,
            per_s: summary.ops_per_s,
            p50_ms: summary.p50_ms,
            p99_ms: summary.p99_ms,
        }
    };

    let hot_authors: Vec<i64> = hot_after.authors.iter().map(|a| a.author_id).collect();
    let ranks: BTreeMap<i64, i64> = world
        .users
        .iter()
        .enumerate()
        .map(|(rank, id)| (*id, rank as i64 + 1))
        .collect();
    let mut nodes = before.delta(&after, window)?;
    for node in &mut nodes {
        node.hot_authors = hot_after
            .authors
            .iter()
            .filter(|a| a.owning_node == node.addr)
            .filter_map(|a| ranks.get(&a.author_id).copied())
            .collect();
    }
    let cpu_skew = skew(nodes.iter().map(|n| n.cpu_percent));
    let skew = skew(nodes.iter().map(|n| n.commands_per_s));
    let near_cache_hit = if label == "on" {
        let (b, a) = (
            hot_before.near_cache.unwrap_or_default(),
            hot_after.near_cache.unwrap_or_default(),
        );
        let hits = (a.hits - b.hits) as f64;
        let lookups = hits + (a.misses - b.misses) as f64;
        Some(if lookups > 0.0 { hits / lookups } else { 0.0 })
    } else {
        None
    };
    eprintln!(
        "sim: run {label}: hot authors detected (popularity rank): {:?}",
        hot_authors
            .iter()
            .filter_map(|a| ranks.get(a))
            .collect::<Vec<_>>()
    );

    // Correctness: once everything written is delivered (and any near-cache entry has
    // expired), feeds must equal PostgreSQL's.
    settle(&world.pg).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (feeds_checked, feeds_wrong) =
        check_feeds(world, channels, args.check_feeds, args.seed).await?;

    let lag = |q: f64| (!lags.is_empty()).then(|| ns_to_ms(lags.value_at_quantile(q)));
    Ok(RunFigures {
        label: label.to_owned(),
        duration_s: args.seconds,
        nodes,
        skew,
        cpu_skew,
        feeds: latency("feeds", records.feeds),
        timelines: latency("views", records.views),
        posts: latency("posts", records.posts),
        near_cache_hit,
        lag_p50_ms: lag(0.50),
        lag_p99_ms: lag(0.99),
        feeds_checked,
        feeds_wrong,
    })
}

async fn hot_stats(
    client: &mut HotspotServiceClient<AuthChannel>,
) -> anyhow::Result<GetHotAuthorsResponse> {
    Ok(client
        .get_hot_authors(GetHotAuthorsRequest { limit: 100 })
        .await
        .context("GetHotAuthors")?
        .into_inner())
}

/// Busiest ÷ mean.
fn skew(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let max = values.iter().copied().fold(0.0, f64::max);
    if mean > 0.0 {
        max / mean
    } else {
        0.0
    }
}

/// One client's share of the mixed workload.
struct Mix {
    feeds: FeedServiceClient<AuthChannel>,
    posts: PostServiceClient<AuthChannel>,
    rng: StdRng,
    users: Arc<Vec<i64>>,
    views: Arc<Popularity>,
    posters: Arc<Popularity>,
    feed_share: f64,
    view_share: f64,
}

impl Mix {
    async fn run(mut self, measure_start: Instant, end: Instant) -> Records {
        let mut records = Records::default();
        let mut n = 0u64;
        loop {
            let pick: f64 = self.rng.gen_range(0.0..100.0);
            let t0 = Instant::now();
            let (result, kind) = if pick < self.feed_share {
                let user_id = self.users[self.rng.gen_range(0..self.users.len())];
                let call = self.feeds.get_home_feed(GetHomeFeedRequest {
                    user_id,
                    page_size: PAGE,
                    page_token: String::new(),
                });
                (timed(call).await, 0)
            } else if pick < self.feed_share + self.view_share {
                let user_id = self.users[self.views.sample(&mut self.rng)];
                let call = self.feeds.get_user_timeline(GetUserTimelineRequest {
                    user_id,
                    page_size: PAGE,
                    page_token: String::new(),
                });
                (timed(call).await, 1)
            } else {
                let author_id = self.users[self.posters.sample(&mut self.rng)];
                n += 1;
                let call = self.posts.create_post(CreatePostRequest {
                    author_id,
                    body: format!("simulated post {n}"),
                    request_id: uuid::Uuid::new_v4().to_string(),
                });
                (timed(call).await, 2)
            };
            let t1 = Instant::now();
            if t1 >= end {
                return records;
            }
            if t1 >= measure_start {
                let record = match kind {
                    0 => &mut records.feeds,
                    1 => &mut records.views,
                    _ => &mut records.posts,
                };
                record.record(result, t1 - t0);
            }
        }
    }
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<(), OpError> {
    within_timeout(async { call.await.map(drop).map_err(|status| status_error(&status)) }).await
}

/// Posts as the most popular authors, one after the other, and measures how long each new
/// post takes to show at the top of the author's timeline as the aggregator serves it.
async fn probe_visibility(
    mut feeds: FeedServiceClient<AuthChannel>,
    mut posts: PostServiceClient<AuthChannel>,
    authors: Vec<i64>,
    measure_start: Instant,
    end: Instant,
) -> Histogram<u64> {
    const GIVE_UP: Duration = Duration::from_secs(5);
    tokio::time::sleep_until(measure_start.into()).await;
    let mut lags = latency_histogram();
    let mut n = 0usize;
    while Instant::now() + GIVE_UP < end {
        let author_id = authors[n % authors.len()];
        n += 1;
        let Ok(created) = posts
            .create_post(CreatePostRequest {
                author_id,
                body: format!("visibility probe {n}"),
                request_id: uuid::Uuid::new_v4().to_string(),
            })
            .await
        else {
            continue;
        };
        let acked = Instant::now();
        let Some(post) = created.into_inner().post else {
            continue;
        };
        loop {
            let top = feeds
                .get_user_timeline(GetUserTimelineRequest {
                    user_id: author_id,
                    page_size: 1,
                    page_token: String::new(),
                })
                .await
                .ok()
                .and_then(|r| r.into_inner().posts.first().map(|p| p.post_id));
            // A newer post by the same author also proves this one visible.
            if top.is_some_and(|id| id >= post.post_id) || acked.elapsed() > GIVE_UP {
                lags.saturating_record(
                    u64::try_from(acked.elapsed().as_nanos()).unwrap_or(u64::MAX),
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_the_busiest_over_the_mean() {
        assert!((skew([1.0, 1.0, 4.0].into_iter()) - 2.0).abs() < 1e-12);
        assert_eq!(skew([3.0, 3.0].into_iter()), 1.0);
        assert_eq!(skew([0.0, 0.0].into_iter()), 0.0);
        assert_eq!(skew(std::iter::empty()), 0.0);
    }
}
