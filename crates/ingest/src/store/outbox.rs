//! The transactional outbox: cache changes committed with the writes they mirror.

use deadpool_postgres::{Pool, Transaction};
use shardfeed_core::{cache::CacheChange, ApiError, ApiResult};

/// Adds `change` to the outbox inside the caller's transaction; returns the row id.
pub async fn enqueue(tx: &Transaction<'_>, change: &CacheChange) -> ApiResult<i64> {
    let json = serde_json::to_value(change).map_err(ApiError::internal)?;
    let stmt = tx
        .prepare_cached("INSERT INTO outbox (change) VALUES ($1) RETURNING id")
        .await?;
    Ok(tx.query_one(&stmt, &[&json]).await?.get(0))
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
    Ok(client
        .execute("DELETE FROM outbox WHERE id = ANY($1)", &[&ids])
        .await?)
}

/// One claimed row.
pub struct Pending {
    pub id: i64,
    pub change: Result<CacheChange, String>,
}

/// Claims up to `limit` rows older than `grace_ms`, oldest first, skipping rows another relay
/// holds. The claim lasts as long as `tx`.
pub async fn claim(tx: &Transaction<'_>, limit: i64, grace_ms: i64) -> ApiResult<Vec<Pending>> {
    let rows = tx
        .query(
            "SELECT id, change FROM outbox
             WHERE create_time <= now() - make_interval(secs => $2::float8 / 1000)
             ORDER BY id
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
            &[&limit, &(grace_ms as f64)],
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

/// Deletes delivered rows and records the failure of the others, in the claiming transaction.
pub async fn settle(
    tx: &Transaction<'_>,
    delivered: &[i64],
    failed: &[(i64, String)],
) -> ApiResult<()> {
    if !delivered.is_empty() {
        tx.execute("DELETE FROM outbox WHERE id = ANY($1)", &[&delivered])
            .await?;
    }
    for (id, error) in failed {
        tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
            &[id, error],
        )
        .await?;
    }
    Ok(())
}

/// Rows still waiting (for metrics and tests).
pub async fn depth(pool: &Pool) -> ApiResult<i64> {
    let client = pool.get().await?;
    Ok(client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await?
        .get(0))
}
