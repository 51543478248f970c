//! AIP-155 idempotency keys.
//!
//! A create inserts its key in the same statement as the resource, with the response built from
//! the inserted row, so the key exists exactly when the resource was created. A second create
//! with the same key fails that statement on the key's primary key — after waiting for the first
//! to commit, when they race — and nothing of it is written; the caller then reads the first
//! result here. So a retry, also a concurrent one, gets the first result.
//!
//! Keys are kept for `ingest.idempotency_key_ttl_secs` (a day by default) and then purged
//! ([`purge_expired`]): a retry later than that is a new request.

use deadpool_postgres::Client;
use shardfeed_server::{spans, ApiError, ApiResult};
use tokio_postgres::error::{DbError, SqlState};
use uuid::Uuid;

/// The primary key of `idempotency_keys`, as named in violations.
const KEY_CONSTRAINT: &str = "idempotency_keys_pkey";

/// True when `err` says the key of a create was already taken.
pub fn is_key_conflict(err: &tokio_postgres::Error) -> bool {
    err.as_db_error().is_some_and(|db: &DbError| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(KEY_CONSTRAINT)
    })
}

/// The first result stored under `(operation, request_id)`, if any. The same id with a
/// different request (`request`: the canonical request without its id) is `ABORTED`.
pub async fn first_result(
    client: &Client,
    operation: &str,
    request_id: Uuid,
    request: &[u8],
) -> ApiResult<Option<serde_json::Value>> {
    let stmt = client
        .prepare_cached(
            "SELECT request, response FROM idempotency_keys
             WHERE operation = $1 AND request_id = $2",
        )
        .await?;
    let Some(row) = spans::pg(
        "SELECT idempotency_keys",
        client.query_opt(&stmt, &[&operation, &request_id]),
    )
    .await?
    else {
        return Ok(None);
    };
    let first_request: Vec<u8> = row.get(0);
    if first_request != request {
        return Err(ApiError::Aborted(format!(
            "request_id {request_id} was already used for a different {operation} request"
        )));
    }
    Ok(Some(row.get(1)))
}

/// Deletes up to `limit` keys older than `ttl`, oldest first, skipping rows another replica is
/// purging; returns how many it deleted.
pub async fn purge_expired(
    pool: &deadpool_postgres::Pool,
    ttl: std::time::Duration,
    limit: i64,
) -> ApiResult<u64> {
    let client = pool.get().await?;
    Ok(spans::pg(
        "DELETE idempotency_keys.expired",
        client.execute(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM idempotency_keys
                 WHERE create_time < now() - make_interval(secs => $1)
                 ORDER BY create_time
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED))",
            &[&ttl.as_secs_f64(), &limit],
        ),
    )
    .await?)
}

/// Purges expired keys every `interval` until `stop`, in batches so that no statement holds
/// many locks or runs long.
pub async fn purge_loop(
    pool: deadpool_postgres::Pool,
    ttl: std::time::Duration,
    interval: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    const BATCH: i64 = 5000;
    loop {
        loop {
            match purge_expired(&pool, ttl, BATCH).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(deleted = n, "purged expired idempotency keys");
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "purging expired idempotency keys failed; will retry");
                    break;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
