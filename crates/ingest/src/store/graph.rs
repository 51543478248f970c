//! The `follows` table.

use deadpool_postgres::{Pool, Transaction};
use shardfeed_cache::CacheChange;
use shardfeed_server::{spans, ApiError, ApiResult};

use super::{outbox, outbox::Written};

/// Which side of the edge a listing walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The users `user_id` follows.
    Following,
    /// The users who follow `user_id`.
    Followers,
}

/// Locks the follower's row, so that graph changes of one follower serialize and take their
/// versions in commit order; checks that both users exist.
async fn lock_edge(tx: &Transaction<'_>, follower_id: i64, followee_id: i64) -> ApiResult<()> {
    let follower = spans::pg(
        "SELECT users.lock_follower",
        tx.query_opt(
            "SELECT 1 FROM users WHERE user_id = $1 FOR NO KEY UPDATE",
            &[&follower_id],
        ),
    )
    .await?;
    if follower.is_none() {
        return Err(ApiError::not_found(format!(
            "user {follower_id} (follower_id) does not exist"
        )));
    }
    let followee = spans::pg(
        "SELECT users.lock_followee",
        tx.query_opt(
            "SELECT 1 FROM users WHERE user_id = $1 FOR KEY SHARE",
            &[&followee_id],
        ),
    )
    .await?;
    if followee.is_none() {
        return Err(ApiError::not_found(format!(
            "user {followee_id} (followee_id) does not exist"
        )));
    }
    Ok(())
}

async fn next_version(tx: &Transaction<'_>) -> ApiResult<i64> {
    Ok(spans::pg(
        "SELECT graph_version_seq.next",
        tx.query_one("SELECT nextval('graph_version_seq')", &[]),
    )
    .await?
    .get(0))
}

/// What a graph write does to one edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeChange {
    Follow,
    Unfollow,
}

/// Adds or removes the edge. Idempotent: following twice, or unfollowing a non-followee,
/// changes nothing and enqueues nothing. A follow that would make the follower follow more
/// than `max_followees` users is `FAILED_PRECONDITION` and changes nothing.
pub async fn change_edge(
    pool: &Pool,
    follower_id: i64,
    followee_id: i64,
    edge: EdgeChange,
    max_followees: i64,
) -> ApiResult<Written<()>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    lock_edge(&tx, follower_id, followee_id).await?;
    let (summary, sql) = match edge {
        EdgeChange::Follow => (
            "INSERT follows",
            "INSERT INTO follows (follower_id, followee_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        ),
        EdgeChange::Unfollow => (
            "DELETE follows",
            "DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2",
        ),
    };
    let changed = spans::pg(summary, tx.execute(sql, &[&follower_id, &followee_id])).await? == 1;
    if changed && edge == EdgeChange::Follow {
        // Under the follower's row lock: concurrent follows of one user count one by one.
        let following: i64 = spans::pg(
            "SELECT follows.count",
            tx.query_one(
                "SELECT count(*) FROM follows WHERE follower_id = $1",
                &[&follower_id],
            ),
        )
        .await?
        .get(0);
        if following > max_followees {
            // Dropping the transaction rolls the insert back.
            return Err(ApiError::FailedPrecondition(format!(
                "user {follower_id} already follows {max_followees} users, the most allowed \
                 (ingest.max_followees); unfollow someone first"
            )));
        }
    }
    let pending = if changed {
        let version = next_version(&tx).await?;
        let change = match edge {
            EdgeChange::Follow => CacheChange::Followed {
                follower_id,
                followee_id,
                version,
            },
            EdgeChange::Unfollow => CacheChange::Unfollowed {
                follower_id,
                followee_id,
                version,
            },
        };
        Some((outbox::enqueue(&tx, &change).await?, change))
    } else {
        None
    };
    tx.commit().await?;
    Ok(Written { value: (), pending })
}

/// One page of a user's followees or followers, ordered by id, after `after` (exclusive).
/// Returns up to `limit + 1` ids so the caller can tell whether another page exists.
pub async fn list(
    pool: &Pool,
    direction: Direction,
    user_id: i64,
    after: i64,
    limit: i64,
) -> ApiResult<Vec<i64>> {
    let client = pool.get().await?;
    let exists = spans::pg(
        "SELECT users.exists",
        client.query_opt("SELECT 1 FROM users WHERE user_id = $1", &[&user_id]),
    )
    .await?;
    if exists.is_none() {
        return Err(ApiError::not_found(format!(
            "user {user_id} does not exist"
        )));
    }
    let sql = match direction {
        Direction::Following => {
            "SELECT followee_id FROM follows WHERE follower_id = $1 AND followee_id > $2
             ORDER BY followee_id LIMIT $3"
        }
        Direction::Followers => {
            "SELECT follower_id FROM follows WHERE followee_id = $1 AND follower_id > $2
             ORDER BY follower_id LIMIT $3"
        }
    };
    let stmt = client.prepare_cached(sql).await?;
    let rows = spans::pg(
        "SELECT follows.page",
        client.query(&stmt, &[&user_id, &after, &(limit + 1)]),
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
