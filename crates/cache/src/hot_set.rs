//! The shared hot set: the sorted set `hot` (see [`super::layout`]), author id → until when
//! (ms since the Unix epoch) it counts as hot. Aggregators publish the authors they find hot;
//! the set acted on — by every aggregator, and by ingest for key replication — is the union of
//! the entries not yet expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::{
    clients::Client,
    error::Error,
    interfaces::{KeysInterface, SortedSetsInterface},
    types::{sorted_sets::Ordering, Limit},
};

use super::CacheLayout;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Marks `authors` hot for `ttl` from now (an entry only ever moves later) and drops the
/// entries that expired.
pub async fn publish(
    client: &Client,
    layout: &CacheLayout,
    authors: &[i64],
    ttl: Duration,
) -> Result<(), Error> {
    let key = layout.hot_set();
    let now = now_ms();
    if !authors.is_empty() {
        let until = (now + ttl.as_millis() as i64) as f64;
        let members: Vec<(f64, i64)> = authors.iter().map(|a| (until, *a)).collect();
        let _: i64 = client
            .zadd(
                &key,
                None,
                Some(Ordering::GreaterThan),
                false,
                false,
                members,
            )
            .await?;
    }
    let _: i64 = client
        .zremrangebyscore(&key, f64::NEG_INFINITY, now as f64)
        .await?;
    // The set itself goes once nobody publishes any more.
    let _: bool = client.expire(&key, ttl.as_secs() as i64 + 60, None).await?;
    Ok(())
}

/// The authors hot now, by everyone's account.
pub async fn current(client: &Client, layout: &CacheLayout) -> Result<Vec<i64>, Error> {
    let members: Vec<String> = client
        .zrangebyscore(
            layout.hot_set(),
            now_ms() as f64,
            f64::INFINITY,
            false,
            None::<Limit>,
        )
        .await?;
    Ok(members.iter().filter_map(|a| a.parse().ok()).collect())
}
