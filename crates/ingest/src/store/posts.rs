//! The `posts` table. Ids and times come from PostgreSQL's clock, so every ingest replica
//! draws from one ordered source (see migrations/V2).

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use prost::Message;
use shardfeed_core::{cache::CacheChange, ApiError, ApiResult};
use shardfeed_proto::v1::{CreatePostRequest, Post};

use super::{
    idempotency::{self, Claim},
    outbox,
    users::timestamp,
};
use crate::domain::{PostBody, RequestId};

const CREATE_POST: &str = "CreatePost";

/// Milliseconds from the Unix epoch to 2020-01-01T00:00:00Z, the post id epoch.
pub const POST_ID_EPOCH_MS: i64 = 1_577_836_800_000;

/// A committed write and the cache change the caller should apply after commit.
pub struct Written<T> {
    pub value: T,
    /// `None` when nothing changed (an idempotent replay).
    pub pending: Option<(i64, CacheChange)>,
}

pub async fn create(
    pool: &Pool,
    author_id: i64,
    body: &PostBody,
    request_id: Option<RequestId>,
) -> ApiResult<Written<Post>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if let Some(RequestId(id)) = request_id {
        let canonical = CreatePostRequest {
            author_id,
            body: body.as_str().to_owned(),
            request_id: String::new(),
        }
        .encode_to_vec();
        if let Claim::Replay(response) =
            idempotency::claim(&tx, CREATE_POST, id, &canonical).await?
        {
            let post = Post::decode(response.as_slice()).map_err(ApiError::internal)?;
            return Ok(Written {
                value: post,
                pending: None,
            });
        }
    }
    // The author row is share-locked so a concurrent DeleteUser waits for this post (and then
    // deletes it) instead of leaving an orphan.
    let stmt = tx
        .prepare_cached(
            "WITH author AS (
                 SELECT user_id FROM users WHERE user_id = $1 FOR KEY SHARE
             ), now_ms AS (
                 SELECT date_trunc('milliseconds', clock_timestamp()) AS t
             )
             INSERT INTO posts (author_id, post_id, body, create_time)
             SELECT author.user_id,
                    ((floor(extract(epoch FROM now_ms.t) * 1000)::bigint - $3) << 22)
                        | (nextval('post_id_seq') % 4194304),
                    $2,
                    now_ms.t
             FROM author, now_ms
             RETURNING post_id, create_time",
        )
        .await?;
    let row = tx
        .query_opt(&stmt, &[&author_id, &body.as_str(), &POST_ID_EPOCH_MS])
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user {author_id} does not exist")))?;
    let post_id: i64 = row.get(0);
    let create_time: DateTime<Utc> = row.get(1);
    let post = Post {
        post_id,
        author_id,
        body: body.as_str().to_owned(),
        create_time: Some(timestamp(create_time)),
    };
    let change = CacheChange::PostCreated {
        author_id,
        post_id,
        time_ms: create_time.timestamp_millis(),
        body: post.body.clone(),
    };
    let outbox_id = outbox::enqueue(&tx, &change).await?;
    if let Some(RequestId(id)) = request_id {
        idempotency::complete(&tx, CREATE_POST, id, &post.encode_to_vec()).await?;
    }
    tx.commit().await?;
    Ok(Written {
        value: post,
        pending: Some((outbox_id, change)),
    })
}

pub async fn get(pool: &Pool, post_id: i64) -> ApiResult<Post> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT author_id, post_id, body, create_time FROM posts
             WHERE post_id = $1 AND delete_time IS NULL",
        )
        .await?;
    let row = client
        .query_opt(&stmt, &[&post_id])
        .await?
        .ok_or_else(|| not_found(post_id))?;
    let create_time: DateTime<Utc> = row.get(3);
    Ok(Post {
        author_id: row.get(0),
        post_id: row.get(1),
        body: row.get(2),
        create_time: Some(timestamp(create_time)),
    })
}

/// Marks a post deleted. The row stays (without its body) so that cache rebuilds write a
/// tombstone for it.
pub async fn delete(pool: &Pool, post_id: i64) -> ApiResult<Written<()>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "UPDATE posts SET delete_time = now(), body = ''
             WHERE post_id = $1 AND delete_time IS NULL
             RETURNING author_id",
            &[&post_id],
        )
        .await?
        .ok_or_else(|| not_found(post_id))?;
    let change = CacheChange::PostDeleted {
        author_id: row.get(0),
        post_id,
    };
    let outbox_id = outbox::enqueue(&tx, &change).await?;
    tx.commit().await?;
    Ok(Written {
        value: (),
        pending: Some((outbox_id, change)),
    })
}

fn not_found(post_id: i64) -> ApiError {
    ApiError::not_found(format!("post {post_id} does not exist"))
}
