//! AIP-155 idempotency keys, stored in the same transaction as the change they guard.
//!
//! `claim` inserts the key first. A concurrent request with the same key blocks on that row
//! until the first transaction ends, then sees its committed result (or, if the first rolled
//! back, claims the key itself). So a retry — also a concurrent one — returns the first result.

use deadpool_postgres::Transaction;
use shardfeed_core::{ApiError, ApiResult};
use uuid::Uuid;

/// Outcome of claiming an idempotency key.
pub enum Claim {
    /// First use: do the work, then [`complete`] with the response.
    New,
    /// A retry of a completed request: return this encoded response as is.
    Replay(Vec<u8>),
}

/// Claims `(operation, request_id)` for `request` (the canonical request without its id).
/// The same id with a different request is `ABORTED`.
pub async fn claim(
    tx: &Transaction<'_>,
    operation: &str,
    request_id: Uuid,
    request: &[u8],
) -> ApiResult<Claim> {
    let inserted = tx
        .execute(
            "INSERT INTO idempotency_keys (operation, request_id, request)
             VALUES ($1, $2, $3)
             ON CONFLICT (operation, request_id) DO NOTHING",
            &[&operation, &request_id, &request],
        )
        .await?;
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let row = tx
        .query_one(
            "SELECT request, response FROM idempotency_keys
             WHERE operation = $1 AND request_id = $2",
            &[&operation, &request_id],
        )
        .await?;
    let first_request: Vec<u8> = row.get(0);
    if first_request != request {
        return Err(ApiError::Aborted(format!(
            "request_id {request_id} was already used for a different {operation} request"
        )));
    }
    let response: Option<Vec<u8>> = row.get(1);
    response.map(Claim::Replay).ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!(
            "idempotency key {operation}/{request_id} committed without a response"
        ))
    })
}

/// Records the response of a claimed key; commits with the caller's transaction.
pub async fn complete(
    tx: &Transaction<'_>,
    operation: &str,
    request_id: Uuid,
    response: &[u8],
) -> ApiResult<()> {
    tx.execute(
        "UPDATE idempotency_keys SET response = $3 WHERE operation = $1 AND request_id = $2",
        &[&operation, &request_id, &response],
    )
    .await?;
    Ok(())
}
