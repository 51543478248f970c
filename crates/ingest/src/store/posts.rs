//! The `posts` table. Ids and times come from PostgreSQL's clock, so every ingest replica
//! draws from one ordered source (see migrations/V2).

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use prost::Message;
use shardfeed_core::{cache::CacheChange, ids::POST_ID_EPOCH_MS, ApiError, ApiResult};
use shardfeed_proto::v1::{CreatePostRequest, Post};

use super::{idempotency, outbox, users::timestamp};
use crate::domain::{PostBody, RequestId};

const CREATE_POST: &str = "CreatePost";

/// A committed write and the cache change the caller should apply after commit.
pub struct Written<T> {
    pub value: T,
    /// `None` when nothing changed (an idempotent replay).
    pub pending: Option<(i64, CacheChange)>,
}

/// Creates a post, its outbox row and (with a `request_id`) its idempotency key in one
/// statement: one round trip, one commit. The author row is share-locked so that a concurrent
/// DeleteUser waits for this post (and then deletes it) instead of leaving an orphan.
const CREATE_SQL: &str = "
    WITH author AS (
        SELECT user_id FROM users WHERE user_id = $1 FOR KEY SHARE
    ), now_ms AS (
        SELECT date_trunc('milliseconds', clock_timestamp()) AS t
    ), p AS (
        INSERT INTO posts (author_id, post_id, body, create_time)
        SELECT author.user_id,
               ((floor(extract(epoch FROM now_ms.t) * 1000)::bigint - $3) << 22)
                   | (nextval('post_id_seq') % 4194304),
               $2,
               now_ms.t
        FROM author, now_ms
        RETURNING author_id, post_id, body, (extract(epoch FROM create_time) * 1000)::bigint AS time_ms
    ), o AS (
        INSERT INTO outbox (change)
        SELECT jsonb_build_object('kind', 'post_created', 'author_id', author_id,
                                  'post_id', post_id, 'time_ms', time_ms, 'body', body)
        FROM p
        RETURNING id
    ), k AS (
        INSERT INTO idempotency_keys (operation, request_id, request, response)
        SELECT 'CreatePost', $4, $5,
               jsonb_build_object('post_id', post_id, 'author_id', author_id,
                                  'body', body, 'time_ms', time_ms)
        FROM p
        WHERE $4::uuid IS NOT NULL
    )
    SELECT p.post_id, p.time_ms, o.id FROM p, o";

pub async fn create(
    pool: &Pool,
    author_id: i64,
    body: &PostBody,
    request_id: Option<RequestId>,
) -> ApiResult<Written<Post>> {
    let client = pool.get().await?;
    let key = request_id.map(|RequestId(id)| id);
    let canonical = key.map(|_| {
        CreatePostRequest {
            author_id,
            body: body.as_str().to_owned(),
            request_id: String::new(),
        }
        .encode_to_vec()
    });
    let stmt = client.prepare_cached(CREATE_SQL).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
        &author_id,
        &body.as_str(),
        &POST_ID_EPOCH_MS,
        &key,
        &canonical,
    ];
    let row = match client.query_opt(&stmt, &params).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return Err(ApiError::not_found(format!(
                "user {author_id} does not exist"
            )))
        }
        Err(err) if idempotency::is_key_conflict(&err) => {
            // A retry: nothing of this statement was written; return the first result.
            let (Some(id), Some(request)) = (key, canonical) else {
                return Err(err.into());
            };
            let first = idempotency::first_result(&client, CREATE_POST, id, &request)
                .await?
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("key conflict without a key")))?;
            return Ok(Written {
                value: post_from_json(&first)?,
                pending: None,
            });
        }
        Err(err) => return Err(err.into()),
    };
    let post_id: i64 = row.get(0);
    let time_ms: i64 = row.get(1);
    let outbox_id: i64 = row.get(2);
    let post = Post {
        post_id,
        author_id,
        body: body.as_str().to_owned(),
        create_time: Some(timestamp_from_ms(time_ms)),
    };
    let change = CacheChange::PostCreated {
        author_id,
        post_id,
        time_ms,
        body: post.body.clone(),
    };
    Ok(Written {
        value: post,
        pending: Some((outbox_id, change)),
    })
}

/// The first result of a CreatePost, as its idempotency key stored it.
fn post_from_json(value: &serde_json::Value) -> ApiResult<Post> {
    let field = |name: &str| {
        value.get(name).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("stored CreatePost result lacks {name}"))
        })
    };
    let int = |name: &str| -> ApiResult<i64> {
        field(name)?
            .as_i64()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("stored {name} is not an integer")))
    };
    Ok(Post {
        post_id: int("post_id")?,
        author_id: int("author_id")?,
        body: field("body")?.as_str().unwrap_or_default().to_owned(),
        create_time: Some(timestamp_from_ms(int("time_ms")?)),
    })
}

fn timestamp_from_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
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
