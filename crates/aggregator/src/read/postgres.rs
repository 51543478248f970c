//! The PostgreSQL side of the read path: the truth the cache is checked against and falls
//! back to.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use shardfeed_core::{ApiError, ApiResult};
use shardfeed_proto::v1::Post;

/// Up to `limit` live posts of `author_id` with ids below `before_id`, newest first.
pub async fn timeline_page(
    pool: &Pool,
    author_id: i64,
    before_id: i64,
    limit: i64,
) -> ApiResult<Vec<Post>> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT post_id, body, create_time FROM posts
             WHERE author_id = $1 AND delete_time IS NULL AND post_id < $2
             ORDER BY post_id DESC
             LIMIT $3",
        )
        .await?;
    let rows = client
        .query(&stmt, &[&author_id, &before_id, &limit])
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let time: DateTime<Utc> = row.get(2);
            Post {
                post_id: row.get(0),
                author_id,
                body: row.get(1),
                create_time: Some(prost_types::Timestamp {
                    seconds: time.timestamp(),
                    nanos: time.timestamp_subsec_nanos() as i32,
                }),
            }
        })
        .collect())
}

/// `NOT_FOUND` unless the user exists.
pub async fn require_user(pool: &Pool, user_id: i64) -> ApiResult<()> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached("SELECT 1 FROM users WHERE user_id = $1")
        .await?;
    match client.query_opt(&stmt, &[&user_id]).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!(
            "user {user_id} does not exist"
        ))),
    }
}
