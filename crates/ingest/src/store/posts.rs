//! The `posts` table. Ids and times come from PostgreSQL's clock, so every ingest replica
//! draws from one ordered source (see migrations/V2).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use prost::Message;
use shardfeed_cache::CacheChange;
use shardfeed_proto::ids::POST_ID_EPOCH_MS;
use shardfeed_proto::time;
use shardfeed_proto::v1::{CreatePostRequest, Post};
use shardfeed_server::{spans, ApiError, ApiResult};

use super::{idempotency, outbox, outbox::Written};
use crate::domain::{PostBody, RequestId};

const CREATE_POST: &str = "CreatePost";

/// Creates a post, its outbox row and (with a `request_id`) its idempotency key in one
/// statement: one round trip, one commit. The author row is share-locked so that a concurrent
/// DeleteUser waits for this post (and then deletes it) instead of leaving an orphan.
static CREATE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
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
        SELECT {post_created}
        FROM p
        RETURNING id
    ), k AS (
        INSERT INTO idempotency_keys (operation, request_id, request, response)
        SELECT 'CreatePost', $4, $5,
               jsonb_build_object('post_id', post_id, 'author_id', author_id, 'time_ms', time_ms)
        FROM p
        WHERE $4::uuid IS NOT NULL
    )
    SELECT p.post_id, p.time_ms, o.id FROM p, o",
        post_created = post_created_json()
    )
});

/// The outbox JSON of a new post, from the columns `author_id`, `post_id`, `time_ms`, `body`.
fn post_created_json() -> String {
    CacheChange::PostCreated {
        author_id: 0,
        post_id: 0,
        time_ms: 0,
        body: String::new(),
    }
    .sql_json()
}

/// The request an idempotency key stands for: the CreatePost without its `request_id`, so a
/// retry with the same key must carry the same author and body.
fn canonical_request(author_id: i64, body: &PostBody) -> Vec<u8> {
    CreatePostRequest {
        author_id,
        body: body.as_str().to_owned(),
        request_id: String::new(),
    }
    .encode_to_vec()
}

pub async fn create(
    pool: &Pool,
    author_id: i64,
    body: &PostBody,
    request_id: Option<RequestId>,
) -> ApiResult<Written<Post>> {
    let client = pool.get().await?;
    let key = request_id.map(|RequestId(id)| id);
    let canonical = key.map(|_| canonical_request(author_id, body));
    let stmt = client.prepare_cached(&CREATE_SQL).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
        &author_id,
        &body.as_str(),
        &POST_ID_EPOCH_MS,
        &key,
        &canonical,
    ];
    let row = match spans::pg("INSERT posts", client.query_opt(&stmt, &params)).await {
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
            return first_post(&client, id, &request, body)
                .await?
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("key conflict without a key")));
        }
        Err(err) => return Err(err.into()),
    };
    Ok(created(author_id, body, row.get(0), row.get(1), row.get(2)))
}

/// The result of a create that wrote its post: the post and its pending cache change.
fn created(
    author_id: i64,
    body: &PostBody,
    post_id: i64,
    time_ms: i64,
    outbox_id: i64,
) -> Written<Post> {
    let post = Post {
        post_id,
        author_id,
        body: body.as_str().to_owned(),
        create_time: Some(time::from_ms(time_ms)),
    };
    let change = CacheChange::PostCreated {
        author_id,
        post_id,
        time_ms,
        body: post.body.clone(),
    };
    Written {
        value: post,
        pending: Some((outbox_id, change)),
    }
}

/// One CreatePost of a batch (see [`create_many`]).
pub struct NewPost {
    pub author_id: i64,
    pub body: PostBody,
    pub request_id: Option<RequestId>,
}

/// What [`create_many`] did with one post of its batch.
pub enum BatchOutcome {
    Created(Written<Post>),
    /// No such author: nothing was written for this post.
    AuthorMissing,
    /// Its `request_id` was taken, by an earlier request or by an earlier post of this batch:
    /// nothing was written for it. [`replay`] answers it once the batch has committed.
    KeyTaken,
}

/// Creates many posts, their outbox rows and idempotency keys in one statement: one round trip
/// and one commit for the whole batch (group commit). Each post gets the same answer it would
/// get alone, except that a post whose key is taken is left for [`replay`] rather than failing
/// the statement: keys are claimed with `ON CONFLICT DO NOTHING` (waiting, like the single
/// create, for a concurrent claim of the same key to commit or roll back), in key order, so two
/// batches claiming the same keys cannot deadlock, and only posts whose key was claimed are
/// written. An author whose row another transaction holds (a `DeleteUser` deleting many posts)
/// is skipped rather than waited for, so it holds up no other author's post: its posts come
/// back as [`BatchOutcome::AuthorMissing`] and the caller tells locked from missing. Post ids are drawn per row from the shared sequence; every post of a batch gets the
/// batch's commit-time millisecond, so ids still follow creation order.
static CREATE_MANY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
    WITH input AS (
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::bytea[], $5::int[])
            AS i(author_id, body, request_id, request, ord)
    ), author AS (
        SELECT user_id FROM users WHERE user_id = ANY($1::bigint[]) FOR KEY SHARE SKIP LOCKED
    ), now_ms AS (
        SELECT date_trunc('milliseconds', clock_timestamp()) AS t
    ), ids AS MATERIALIZED (
        SELECT input.*,
               ((floor(extract(epoch FROM now_ms.t) * 1000)::bigint - $6) << 22)
                   | (nextval('post_id_seq') % 4194304) AS post_id,
               now_ms.t AS create_time,
               (extract(epoch FROM now_ms.t) * 1000)::bigint AS time_ms
        FROM input JOIN author ON author.user_id = input.author_id, now_ms
    ), k AS (
        INSERT INTO idempotency_keys (operation, request_id, request, response)
        SELECT 'CreatePost', request_id, request,
               jsonb_build_object('post_id', post_id, 'author_id', author_id, 'time_ms', time_ms)
        FROM ids
        WHERE request_id IS NOT NULL
        ORDER BY request_id
        ON CONFLICT DO NOTHING
        RETURNING request_id
    ), fresh AS (
        SELECT * FROM ids WHERE request_id IS NULL OR request_id IN (SELECT request_id FROM k)
    ), p AS (
        INSERT INTO posts (author_id, post_id, body, create_time)
        SELECT author_id, post_id, body, create_time FROM fresh
    ), o AS (
        INSERT INTO outbox (change)
        SELECT {post_created}
        FROM fresh
        RETURNING id, (change->>'post_id')::bigint AS post_id
    )
    SELECT ids.ord, ids.post_id, ids.time_ms, o.id
    FROM ids LEFT JOIN o ON o.post_id = ids.post_id",
        post_created = post_created_json()
    )
});

pub async fn create_many(pool: &Pool, posts: &[NewPost]) -> ApiResult<Vec<BatchOutcome>> {
    let mut outcomes: Vec<BatchOutcome> = Vec::with_capacity(posts.len());
    let (mut authors, mut bodies, mut keys, mut requests, mut ords) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut claimed = std::collections::HashSet::new();
    for (i, post) in posts.iter().enumerate() {
        let key = post.request_id.map(|RequestId(id)| id);
        // A second post with a key of this batch waits for the first one's result.
        if let Some(key) = key {
            if !claimed.insert(key) {
                outcomes.push(BatchOutcome::KeyTaken);
                continue;
            }
        }
        outcomes.push(BatchOutcome::AuthorMissing); // until the statement says otherwise
        authors.push(post.author_id);
        bodies.push(post.body.as_str());
        keys.push(key);
        requests.push(key.map(|_| canonical_request(post.author_id, &post.body)));
        ords.push(i as i32);
    }
    let client = pool.get().await?;
    let stmt = client.prepare_cached(&CREATE_MANY_SQL).await?;
    let rows = spans::pg(
        "INSERT posts.batch",
        client.query(
            &stmt,
            &[
                &authors,
                &bodies,
                &keys,
                &requests,
                &ords,
                &POST_ID_EPOCH_MS,
            ],
        ),
    )
    .await?;
    for row in rows {
        let i = row.get::<_, i32>(0) as usize;
        let post = &posts[i];
        outcomes[i] = match row.get::<_, Option<i64>>(3) {
            Some(outbox_id) => BatchOutcome::Created(created(
                post.author_id,
                &post.body,
                row.get(1),
                row.get(2),
                outbox_id,
            )),
            None => BatchOutcome::KeyTaken,
        };
    }
    Ok(outcomes)
}

/// Answers a create whose key was taken: the first result, `ABORTED` for a different request
/// under the same key, or — when the key is free after all (its first request failed) — a
/// create of its own.
pub async fn replay(pool: &Pool, post: &NewPost) -> ApiResult<Written<Post>> {
    if let Some(RequestId(key)) = post.request_id {
        let client = pool.get().await?;
        let request = canonical_request(post.author_id, &post.body);
        if let Some(first) = first_post(&client, key, &request, &post.body).await? {
            return Ok(first);
        }
    }
    create(pool, post.author_id, &post.body, post.request_id).await
}

/// The first result stored under `key`, as the answer to a retry (it changes nothing), or
/// `ABORTED` if `request` differs from the first one.
async fn first_post(
    client: &deadpool_postgres::Client,
    key: uuid::Uuid,
    request: &[u8],
    body: &PostBody,
) -> ApiResult<Option<Written<Post>>> {
    let Some(first) = idempotency::first_result(client, CREATE_POST, key, request).await? else {
        return Ok(None);
    };
    Ok(Some(Written {
        value: post_from_json(&first, body)?,
        pending: None,
    }))
}

/// The first result of a CreatePost, as its idempotency key stored it. The body is not stored
/// there (the post's row and the key's `request` hold it already): a retry's request equals the
/// first one, so its `body` is the first one's.
fn post_from_json(value: &serde_json::Value, body: &PostBody) -> ApiResult<Post> {
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
        body: body.as_str().to_owned(),
        create_time: Some(time::from_ms(int("time_ms")?)),
    })
}

pub async fn get(pool: &Pool, post_id: i64) -> ApiResult<Post> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT author_id, post_id, body, create_time FROM posts
             WHERE post_id = $1 AND delete_time IS NULL
               AND EXISTS (SELECT 1 FROM users WHERE user_id = posts.author_id)",
        )
        .await?;
    let row = spans::pg("SELECT posts.by_id", client.query_opt(&stmt, &[&post_id]))
        .await?
        .ok_or_else(|| not_found(post_id))?;
    let create_time: DateTime<Utc> = row.get(3);
    Ok(Post {
        author_id: row.get(0),
        post_id: row.get(1),
        body: row.get(2),
        create_time: Some(time::from_micros(create_time.timestamp_micros())),
    })
}

/// Marks a post deleted. The row stays (without its body) so that cache rebuilds write a
/// tombstone for it.
/// Deletes a live post, if `may_delete` admits its author (else its refusal, and nothing
/// changes).
pub async fn delete(
    pool: &Pool,
    post_id: i64,
    may_delete: impl FnOnce(i64) -> ApiResult<()>,
) -> ApiResult<Written<()>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let author_id: i64 = spans::pg(
        "SELECT posts.lock",
        tx.query_opt(
            "SELECT author_id FROM posts
             WHERE post_id = $1 AND delete_time IS NULL
               AND EXISTS (SELECT 1 FROM users WHERE user_id = posts.author_id)
             FOR UPDATE",
            &[&post_id],
        ),
    )
    .await?
    .ok_or_else(|| not_found(post_id))?
    .get(0);
    may_delete(author_id)?;
    spans::pg(
        "UPDATE posts.delete",
        tx.execute(
            "UPDATE posts SET delete_time = now(), body = '' WHERE post_id = $1",
            &[&post_id],
        ),
    )
    .await?;
    let change = CacheChange::PostDeleted { author_id, post_id };
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
