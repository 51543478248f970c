//! The four requests the feed bench measures, each checked against the expected page:
//! GetHomeFeed over gRPC, the best single SQL query, and the naive one-command-at-a-time read
//! of the same Redis cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use fred::clients::Client as RedisClient;
use fred::interfaces::{HashesInterface, SortedSetsInterface};
use fred::types::Value;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardfeed_cache::CacheLayout;
use shardfeed_proto::auth::AuthChannel;
use shardfeed_proto::v1::{feed_service_client::FeedServiceClient, GetHomeFeedRequest, Post};
use tokio_postgres::Statement;
use tonic::Code;

use super::dataset::{check_page, keep_newest, Dataset};
use super::{FEED_SQL, PAGE_SIZE};
use crate::client::{connect_postgres, pg_error, status_error, Channels};
use crate::measure::{Op, OpError};

/// `concurrency` GetHomeFeed workers over `channels`, counting every answer in `served`.
pub fn grpc_ops(
    channels: &Channels,
    data: &Arc<Dataset>,
    concurrency: usize,
    served: &Arc<AtomicU64>,
) -> Vec<GrpcFeed> {
    (0..concurrency)
        .map(|i| GrpcFeed {
            client: FeedServiceClient::new(channels.get(i)),
            data: data.clone(),
            rng: StdRng::from_entropy(),
            served: served.clone(),
        })
        .collect()
}

/// `concurrency` SQL workers, one PostgreSQL connection each.
pub async fn sql_ops(
    config: &crate::client::PostgresTarget,
    data: &Arc<Dataset>,
    concurrency: usize,
) -> anyhow::Result<Vec<SqlFeed>> {
    let mut ops = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = connect_postgres(config).await?;
        let statement = client
            .prepare(FEED_SQL)
            .await
            .context("preparing the feed query")?;
        ops.push(SqlFeed {
            client,
            statement,
            data: data.clone(),
            rng: StdRng::from_entropy(),
        });
    }
    Ok(ops)
}

/// `concurrency` naive Redis workers sharing `redis`, counting every answer in `served`.
pub fn naive_ops(
    redis: &RedisClient,
    layout: &CacheLayout,
    data: &Arc<Dataset>,
    concurrency: usize,
    served: &Arc<AtomicU64>,
) -> Vec<NaiveFeed> {
    (0..concurrency)
        .map(|_| NaiveFeed {
            redis: redis.clone(),
            layout: layout.clone(),
            data: data.clone(),
            rng: StdRng::from_entropy(),
            served: served.clone(),
        })
        .collect()
}

pub struct GrpcFeed {
    client: FeedServiceClient<AuthChannel>,
    data: Arc<Dataset>,
    rng: StdRng,
    /// Every answered call, measured or not: the denominator of commands per feed.
    served: Arc<AtomicU64>,
}

impl Op for GrpcFeed {
    async fn call(&mut self) -> Result<(), OpError> {
        let user = self.rng.gen_range(0..self.data.readers());
        let user_id = self.data.user_ids[user];
        let request = GetHomeFeedRequest {
            user_id,
            page_size: PAGE_SIZE as i32,
            page_token: String::new(),
        };
        let response = self.client.get_home_feed(request).await;
        self.served.fetch_add(1, Ordering::Relaxed);
        let response = response
            .map_err(|status| status_error(&status))?
            .into_inner();
        if response.degraded {
            return Err(OpError::new(
                "Degraded",
                format!(
                    "user {user_id}: degraded page, {} author(s) omitted",
                    response.authors_omitted
                ),
            ));
        }
        let got: Vec<i64> = response.posts.iter().map(|p| p.post_id).collect();
        check_page(user_id, &got, &self.data.expected[user])
    }
}

pub struct SqlFeed {
    client: tokio_postgres::Client,
    statement: Statement,
    data: Arc<Dataset>,
    rng: StdRng,
}

impl Op for SqlFeed {
    async fn call(&mut self) -> Result<(), OpError> {
        let user = self.rng.gen_range(0..self.data.readers());
        let user_id = self.data.user_ids[user];
        let rows = self
            .client
            .query(&self.statement, &[&user_id])
            .await
            .map_err(pg_error)?;
        // Decoded as a client would, into the wire message.
        let posts: Vec<Post> = rows
            .iter()
            .map(|row| {
                let time: SystemTime = row.get(3);
                let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
                Post {
                    post_id: row.get(0),
                    author_id: row.get(1),
                    body: row.get(2),
                    create_time: Some(timestamp(since)),
                }
            })
            .collect();
        let got: Vec<i64> = posts.iter().map(|p| p.post_id).collect();
        check_page(user_id, &got, &self.data.expected[user])
    }
}

fn timestamp(since_epoch: Duration) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: since_epoch.as_secs() as i64,
        nanos: since_epoch.subsec_nanos() as i32,
    }
}

/// What a user would write by hand against the same cache: one command at a time.
pub struct NaiveFeed {
    redis: RedisClient,
    layout: CacheLayout,
    data: Arc<Dataset>,
    rng: StdRng,
    served: Arc<AtomicU64>,
}

impl Op for NaiveFeed {
    async fn call(&mut self) -> Result<(), OpError> {
        let user = self.rng.gen_range(0..self.data.readers());
        let user_id = self.data.user_ids[user];
        let result = naive_page(&self.redis, &self.layout, user_id).await;
        self.served.fetch_add(1, Ordering::Relaxed);
        let posts = result.map_err(redis_error)?;
        let got: Vec<i64> = posts.iter().map(|p| p.post_id).collect();
        check_page(user_id, &got, &self.data.expected[user])
    }
}

/// `HGETALL {u:U}:fol`, then per followee `ZREVRANGE {u:A}:tl 0 19`, merge, then per post of
/// the page `HGET {u:A}:posts <id>`: each awaited before the next is sent.
async fn naive_page(
    redis: &RedisClient,
    layout: &CacheLayout,
    user_id: i64,
) -> Result<Vec<Post>, fred::error::Error> {
    let following: HashMap<String, String> = redis.hgetall(layout.following(user_id)).await?;
    let followees = naive_followees(&following);
    let mut candidates: Vec<(i64, i64)> = Vec::with_capacity(followees.len() * PAGE_SIZE);
    for author in followees {
        let ids: Vec<String> = redis
            .zrevrange(layout.timeline(author), 0, PAGE_SIZE as i64 - 1, false)
            .await?;
        candidates.extend(
            ids.iter()
                .filter_map(|id| id.parse().ok())
                .map(|id| (id, author)),
        );
    }
    keep_newest(&mut candidates, PAGE_SIZE, |(id, _)| *id);
    let mut posts = Vec::with_capacity(candidates.len());
    for (post_id, author) in candidates {
        let value: Value = redis
            .hget(layout.posts(author), post_id.to_string())
            .await?;
        let bytes = match value {
            Value::Bytes(b) => b,
            Value::String(s) => s.into_inner(),
            _ => continue,
        };
        if let Ok(post) = Post::decode(bytes.as_ref()) {
            posts.push(post);
        }
    }
    Ok(posts)
}

/// The followees in a cached `{u:U}:fol` hash: followee id → edge version, where a negative
/// version is an unfollow and `_loaded` a marker.
fn naive_followees(fields: &HashMap<String, String>) -> Vec<i64> {
    fields
        .iter()
        .filter(|(_, version)| !version.starts_with('-'))
        .filter_map(|(field, _)| field.parse().ok())
        .collect()
}

fn redis_error(err: fred::error::Error) -> OpError {
    OpError::new(format!("Redis {:?}", err.kind()), err.details())
}

/// One GetHomeFeed for a user that does not exist, before seeding anything: an aggregator that
/// cannot serve feeds stops the bench right here.
pub async fn probe_aggregator(channel: AuthChannel, aggregator: &str) -> anyhow::Result<()> {
    let mut client = FeedServiceClient::new(channel);
    let request = GetHomeFeedRequest {
        user_id: i64::MAX,
        page_size: PAGE_SIZE as i32,
        page_token: String::new(),
    };
    match client.get_home_feed(request).await {
        Err(status) if status.code() == Code::Unimplemented => bail!(
            "FeedService.GetHomeFeed answers UNIMPLEMENTED at {aggregator}: this \
             shardfeed-aggregator does not serve home feeds yet"
        ),
        Err(status) if status.code() == Code::Unavailable => bail!(
            "the aggregator at {aggregator} is unavailable: {}",
            status.message()
        ),
        // NOT_FOUND (or a page) is the answer of a service that works.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_reads_the_followee_hash_as_the_cache_writes_it() {
        let fields: HashMap<String, String> =
            [("12", "4"), ("_loaded", "1"), ("13", "-9"), ("14", "0")]
                .iter()
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect();
        let mut followees = naive_followees(&fields);
        followees.sort_unstable();
        assert_eq!(followees, vec![12, 14]);
    }
}
