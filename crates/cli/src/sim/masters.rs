//! What the Redis masters say during a run (commands and CPU of each, from its own `INFO`), and
//! the check of served home feeds against PostgreSQL after it.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fred::clients::Client as RedisClient;
use fred::types::InfoKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardfeed_proto::v1::{feed_service_client::FeedServiceClient, GetHomeFeedRequest};

use super::figures::NodeFigures;
use super::run::{World, PAGE};
use crate::client::Channels;
use crate::redis_info::{info_field, is_housekeeping, masters_info, parse_commandstats};

/// The first page of `count` random users' home feeds from the aggregator against the same
/// page computed by PostgreSQL. Returns (checked, wrong).
pub async fn check_feeds(
    world: &World,
    channels: &Channels,
    count: usize,
    seed: u64,
) -> anyhow::Result<(usize, usize)> {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(99));
    let mut client = FeedServiceClient::new(channels.get(0));
    let statement = world
        .pg
        .prepare(
            "SELECT p.post_id FROM follows f CROSS JOIN LATERAL ( \
               SELECT post_id FROM posts WHERE posts.author_id = f.followee_id \
               AND delete_time IS NULL ORDER BY post_id DESC LIMIT $2) p \
             WHERE f.follower_id = $1 ORDER BY p.post_id DESC LIMIT $2",
        )
        .await
        .context("preparing the ground-truth query")?;
    // The most popular authors' followers first: their feeds are the ones mitigations touch.
    let mut picked: HashSet<i64> = HashSet::new();
    let mut wrong = 0;
    while picked.len() < count.min(world.users.len()) {
        let user = world.users[rng.gen_range(0..world.users.len())];
        if !picked.insert(user) {
            continue;
        }
        let served: Vec<i64> = client
            .get_home_feed(GetHomeFeedRequest {
                user_id: user,
                page_size: PAGE,
                page_token: String::new(),
            })
            .await
            .with_context(|| format!("GetHomeFeed of user {user}"))?
            .into_inner()
            .posts
            .iter()
            .map(|p| p.post_id)
            .collect();
        let truth: Vec<i64> = world
            .pg
            .query(&statement, &[&user, &i64::from(PAGE)])
            .await
            .context("the ground-truth query")?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if served != truth {
            wrong += 1;
            eprintln!(
                "sim: home feed of user {user} differs from PostgreSQL: served {served:?}, expected {truth:?}"
            );
        }
    }
    Ok((picked.len(), wrong))
}

/// Commands and CPU seconds of every master at one instant.
pub struct NodeSnapshot {
    at: Instant,
    /// node → (commands, cpu seconds)
    nodes: BTreeMap<String, (u64, f64)>,
}

impl NodeSnapshot {
    pub async fn take(redis: &RedisClient) -> anyhow::Result<Self> {
        let at = Instant::now();
        let commands = masters_info(redis, InfoKind::CommandStats).await?;
        let cpu = masters_info(redis, InfoKind::Cpu).await?;
        let mut nodes = BTreeMap::new();
        for (node, info) in commands {
            let calls: u64 = parse_commandstats(&info)
                .into_iter()
                .filter(|(command, _)| !is_housekeeping(command))
                .map(|(_, calls)| calls)
                .sum();
            let seconds = cpu.get(&node).map_or(0.0, |info| {
                ["used_cpu_sys", "used_cpu_user"]
                    .iter()
                    .filter_map(|f| info_field(info, f)?.trim().parse::<f64>().ok())
                    .sum()
            });
            nodes.insert(node, (calls, seconds));
        }
        Ok(Self { at, nodes })
    }

    pub fn delta(
        &self,
        after: &NodeSnapshot,
        window: Duration,
    ) -> anyhow::Result<Vec<NodeFigures>> {
        if self.nodes.keys().ne(after.nodes.keys()) {
            bail!("the masters changed during the run (a failover?): the figures would be void");
        }
        let secs = (after.at - self.at)
            .as_secs_f64()
            .max(window.as_secs_f64() / 2.0);
        Ok(self
            .nodes
            .iter()
            .map(|(node, (calls, cpu))| {
                let (calls_after, cpu_after) = after.nodes[node];
                NodeFigures {
                    addr: node.clone(),
                    commands_per_s: calls_after.saturating_sub(*calls) as f64 / secs,
                    cpu_percent: (cpu_after - cpu).max(0.0) / secs * 100.0,
                    hot_authors: Vec::new(),
                }
            })
            .collect())
    }
}
