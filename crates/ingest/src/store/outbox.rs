//! The transactional outbox: cache changes committed with the writes they mirror.

use deadpool_postgres::{Pool, Transaction};
use shardfeed_cache::CacheChange;
use shardfeed_server::{spans, ApiError, ApiResult};

/// A committed write and the outbox row (id, change) the caller should apply after commit.
pub struct Written<T> {
    pub value: T,
    /// `None` when nothing changed (an idempotent replay).
    pub pending: Option<(i64, CacheChange)>,
}

/// Adds `change` to the outbox inside the caller's transaction; returns the row id.
pub async fn enqueue(tx: &Transaction<'_>, change: &CacheChange) -> ApiResult<i64> {
    let json = serde_json::to_value(change).map_err(ApiError::internal)?;
    let stmt = tx
        .prepare_cached("INSERT INTO outbox (change) VALUES ($1) RETURNING id")
        .await?;
    Ok(spans::pg("INSERT outbox", tx.query_one(&stmt, &[&json]))
        .await?
        .get(0))
}

/// Removes rows whose change reached Redis.
///
/// Planned afresh each time, on purpose. The outbox is a queue: autovacuum mostly finds it
/// empty, so its statistics say "no pages", and a cached (generic) plan of this statement is
/// then a sequential scan — kept while the table fills up with thousands of rows and dead
/// tuples between vacuums, so every delete reads the whole heap and writes slow down as the
/// queue churns. A plan made for the actual ids and the table's actual size uses the primary key.
pub async fn remove(pool: &Pool, ids: &[i64]) -> ApiResult<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let client = pool.get().await?;
    Ok(spans::pg(
        "DELETE outbox.delivered",
        client.execute("DELETE FROM outbox WHERE id = ANY($1)", &[&ids]),
    )
    .await?)
}

/// One claimed row.
pub struct Pending {
    pub id: i64,
    pub change: Result<CacheChange, String>,
}

/// Claims up to `limit` rows older than `grace_ms` that are due (their next attempt time has
/// come), skipping rows another relay holds: rows never tried first, then the least tried, each
/// oldest first, so that rows that keep failing never crowd out the others. The claim lasts as
/// long as `tx`.
pub async fn claim(tx: &Transaction<'_>, limit: i64, grace_ms: i64) -> ApiResult<Vec<Pending>> {
    let rows = spans::pg(
        "SELECT outbox.claim",
        tx.query(
            "SELECT id, change FROM outbox
             WHERE next_attempt_time <= now()
               AND create_time <= now() - make_interval(secs => $2::float8 / 1000)
             ORDER BY attempts, id
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
            &[&limit, &(grace_ms as f64)],
        ),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let json: serde_json::Value = row.get(1);
            Pending {
                id: row.get(0),
                change: serde_json::from_value(json).map_err(|e| e.to_string()),
            }
        })
        .collect())
}

/// A row the relay could not deliver this round.
#[derive(Debug, Clone)]
pub struct Failure {
    pub id: i64,
    pub error: String,
    /// It will never succeed as it is (undecodable, rejected by Redis): parked in the dead
    /// letters once `max_attempts` is reached (at once when `max_attempts` ≤ 1). Otherwise (a
    /// node down, replicas not acknowledging) it is retried for as long as it takes.
    pub permanent: bool,
}

/// How a relay retries rows.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// The first retry's delay; each further one doubles it.
    pub base_ms: u64,
    pub max_ms: u64,
    /// Attempts after which a permanent failure is parked.
    pub max_attempts: i32,
}

/// Settles a round in the claiming transaction: deletes delivered rows; pushes each failed row's
/// next attempt back exponentially (one statement for all of them); moves permanent failures
/// that ran out of attempts to `outbox_dead_letters`. Returns the ids parked.
pub async fn settle(
    tx: &Transaction<'_>,
    delivered: &[i64],
    failed: &[Failure],
    retry: Retry,
) -> ApiResult<Vec<i64>> {
    if !delivered.is_empty() {
        spans::pg(
            "DELETE outbox.delivered",
            tx.execute("DELETE FROM outbox WHERE id = ANY($1)", &[&delivered]),
        )
        .await?;
    }
    if failed.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = failed.iter().map(|f| f.id).collect();
    let errors: Vec<&str> = failed.iter().map(|f| f.error.as_str()).collect();
    let permanent: Vec<bool> = failed.iter().map(|f| f.permanent).collect();
    // Two statements for the whole round, whatever its size: the bump, then the parking (a
    // row changed by one part of a statement cannot be moved by another part of it).
    let bumped = spans::pg(
        "UPDATE outbox.retry",
        tx.query(
            "UPDATE outbox o
             SET attempts = o.attempts + 1,
                 last_error = f.error,
                 next_attempt_time = now() + make_interval(secs => least(
                     $5::float8, $4::float8 * power(2, least(o.attempts, 30))) / 1000)
             FROM unnest($1::bigint[], $2::text[], $3::bool[]) AS f(id, error, permanent)
             WHERE o.id = f.id
             RETURNING o.id, o.attempts, f.permanent",
            &[
                &ids,
                &errors,
                &permanent,
                &(retry.base_ms as f64),
                &(retry.max_ms as f64),
            ],
        ),
    )
    .await?;
    let spent: Vec<i64> = bumped
        .iter()
        .filter(|r| r.get::<_, bool>(2) && r.get::<_, i32>(1) >= retry.max_attempts)
        .map(|r| r.get(0))
        .collect();
    if spent.is_empty() {
        return Ok(Vec::new());
    }
    let parked = spans::pg(
        "INSERT outbox_dead_letters",
        tx.query(
            "WITH parked AS (
                 DELETE FROM outbox WHERE id = ANY($1)
                 RETURNING id, change, create_time, attempts, last_error
             )
             INSERT INTO outbox_dead_letters (id, change, create_time, attempts, last_error)
             SELECT id, change, create_time, attempts, last_error FROM parked
             RETURNING id",
            &[&spent],
        ),
    )
    .await?;
    Ok(parked.iter().map(|r| r.get(0)).collect())
}

/// Rows still waiting (for metrics and tests).
pub async fn depth(pool: &Pool) -> ApiResult<i64> {
    let client = pool.get().await?;
    Ok(spans::pg(
        "SELECT outbox.depth",
        client.query_one("SELECT count(*) FROM outbox", &[]),
    )
    .await?
    .get(0))
}
