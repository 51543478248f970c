//! The `users` table.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use prost::Message;
use shardfeed_proto::time;
use shardfeed_proto::v1::{CreateUserRequest, User};
use shardfeed_server::{spans, ApiError, ApiResult};
use tokio_postgres::{error::SqlState, Row};

use super::{idempotency, outbox, outbox::Written};
use crate::domain::{DisplayName, Handle, RequestId};
use shardfeed_cache::CacheChange;

const CREATE_USER: &str = "CreateUser";

/// Creates a user, its outbox row and (with a `request_id`) its idempotency key in one
/// statement.
static CREATE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
    WITH u AS (
        INSERT INTO users (handle, display_name) VALUES ($1, $2)
        RETURNING user_id, handle, display_name, create_time
    ), o AS (
        INSERT INTO outbox (change)
        SELECT {user_created} FROM u
        RETURNING id
    ), k AS (
        INSERT INTO idempotency_keys (operation, request_id, request, response)
        SELECT 'CreateUser', $3, $4,
               jsonb_build_object('user_id', user_id, 'handle', handle,
                                  'display_name', display_name,
                                  'create_time_us', (extract(epoch FROM create_time) * 1000000)::bigint)
        FROM u
        WHERE $3::uuid IS NOT NULL
    )
    SELECT u.user_id, u.handle, u.display_name, u.create_time, o.id FROM u, o",
        user_created = CacheChange::UserCreated { user_id: 0 }.sql_json()
    )
});

/// Inserts a user. With a `request_id`, a retry returns the user the first call created, even
/// when the handle is taken by then (by that very first call).
pub async fn create(
    pool: &Pool,
    handle: &Handle,
    display_name: &DisplayName,
    request_id: Option<RequestId>,
) -> ApiResult<Written<User>> {
    let client = pool.get().await?;
    let key = request_id.map(|RequestId(id)| id);
    let canonical = key.map(|_| {
        CreateUserRequest {
            handle: handle.as_str().to_owned(),
            display_name: display_name.as_str().to_owned(),
            request_id: String::new(),
        }
        .encode_to_vec()
    });
    let replay = || async {
        match (key, &canonical) {
            (Some(id), Some(request)) => {
                idempotency::first_result(&client, CREATE_USER, id, request).await
            }
            _ => Ok(None),
        }
    };
    if let Some(first) = replay().await? {
        return Ok(Written {
            value: user_from_json(&first)?,
            pending: None,
        });
    }
    let stmt = client.prepare_cached(&CREATE_SQL).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&handle.as_str(), &display_name.as_str(), &key, &canonical];
    let row = match spans::pg("INSERT users", client.query_one(&stmt, &params)).await {
        Ok(row) => row,
        Err(err) => {
            let taken = err.code() == Some(&SqlState::UNIQUE_VIOLATION);
            // A concurrent first call may have won: it holds the handle and the key.
            if taken {
                if let Some(first) = replay().await? {
                    return Ok(Written {
                        value: user_from_json(&first)?,
                        pending: None,
                    });
                }
                return Err(ApiError::AlreadyExists(format!(
                    "handle {:?} is taken",
                    handle.as_str()
                )));
            }
            return Err(err.into());
        }
    };
    let user = user_from_row(&row);
    let change = CacheChange::UserCreated {
        user_id: user.user_id,
    };
    Ok(Written {
        value: user,
        pending: Some((row.get(4), change)),
    })
}

/// The first result of a CreateUser, as its idempotency key stored it.
fn user_from_json(value: &serde_json::Value) -> ApiResult<User> {
    let missing =
        |name: &str| ApiError::internal(anyhow::anyhow!("stored CreateUser result lacks {name}"));
    let int = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_i64())
            .ok_or_else(|| missing(name))
    };
    let text = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| missing(name))
    };
    let micros = int("create_time_us")?;
    Ok(User {
        user_id: int("user_id")?,
        handle: text("handle")?,
        display_name: text("display_name")?,
        create_time: Some(time::from_micros(micros)),
    })
}

pub async fn get(pool: &Pool, user_id: i64) -> ApiResult<User> {
    let client = pool.get().await?;
    let row = spans::pg(
        "SELECT users.by_id",
        client.query_opt(
            "SELECT user_id, handle, display_name, create_time FROM users WHERE user_id = $1",
            &[&user_id],
        ),
    )
    .await?;
    row.map(|r| user_from_row(&r))
        .ok_or_else(|| not_found(user_id))
}

pub async fn update_display_name(
    pool: &Pool,
    user_id: i64,
    display_name: &DisplayName,
) -> ApiResult<User> {
    let client = pool.get().await?;
    let row = spans::pg(
        "UPDATE users.display_name",
        client.query_opt(
            "UPDATE users SET display_name = $2, update_time = now() WHERE user_id = $1
             RETURNING user_id, handle, display_name, create_time",
            &[&user_id, &display_name.as_str()],
        ),
    )
    .await?;
    row.map(|r| user_from_row(&r))
        .ok_or_else(|| not_found(user_id))
}

/// Deletes a user and their follow edges in both directions, in one short transaction, and
/// leaves their posts to [`purge_deleted_posts`] (recorded in `deleted_authors`): however many
/// posts the user had, the user's row is locked only that long. Reads of posts check that the
/// author exists, so none of them is visible meanwhile. The cache drops the user's keys and
/// marks them gone, so every feed that still lists them skips them.
pub async fn delete(pool: &Pool, user_id: i64) -> ApiResult<Written<()>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let locked = spans::pg(
        "SELECT users.lock",
        tx.query_opt(
            "SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE",
            &[&user_id],
        ),
    )
    .await?;
    if locked.is_none() {
        return Err(not_found(user_id));
    }
    spans::pg(
        "INSERT deleted_authors",
        tx.execute(
            "INSERT INTO deleted_authors (user_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&user_id],
        ),
    )
    .await?;
    spans::pg(
        "DELETE follows.of_user",
        tx.execute(
            "DELETE FROM follows WHERE follower_id = $1 OR followee_id = $1",
            &[&user_id],
        ),
    )
    .await?;
    spans::pg(
        "DELETE users",
        tx.execute("DELETE FROM users WHERE user_id = $1", &[&user_id]),
    )
    .await?;
    let change = CacheChange::UserDeleted { user_id };
    let outbox_id = outbox::enqueue(&tx, &change).await?;
    tx.commit().await?;
    Ok(Written {
        value: (),
        pending: Some((outbox_id, change)),
    })
}

/// Deletes up to `batch` posts of one deleted user (the longest waiting), in one short
/// transaction that locks only those rows, skipping an author another replica is purging;
/// forgets the user once none of its posts is left. Returns how many posts it deleted, or
/// `None` when no deleted user is waiting.
pub async fn purge_deleted_posts(pool: &Pool, batch: i64) -> ApiResult<Option<u64>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(author) = spans::pg(
        "SELECT deleted_authors.next",
        tx.query_opt(
            "SELECT user_id FROM deleted_authors ORDER BY delete_time LIMIT 1
             FOR UPDATE SKIP LOCKED",
            &[],
        ),
    )
    .await?
    else {
        return Ok(None);
    };
    let author: i64 = author.get(0);
    let deleted = spans::pg(
        "DELETE posts.of_deleted",
        tx.execute(
            "DELETE FROM posts WHERE author_id = $1 AND post_id = ANY(ARRAY(
                 SELECT post_id FROM posts WHERE author_id = $1 LIMIT $2))",
            &[&author, &batch],
        ),
    )
    .await?;
    if deleted < batch as u64 {
        spans::pg(
            "DELETE deleted_authors",
            tx.execute("DELETE FROM deleted_authors WHERE user_id = $1", &[&author]),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some(deleted))
}

/// Runs [`purge_deleted_posts`] until nothing is left, then every `interval` or as soon as
/// `kick` is notified (a user was deleted), until `stop`.
pub async fn purge_deleted_loop(
    pool: Pool,
    interval: std::time::Duration,
    kick: std::sync::Arc<tokio::sync::Notify>,
    stop: tokio_util::sync::CancellationToken,
) {
    const BATCH: i64 = 5000;
    loop {
        loop {
            match purge_deleted_posts(&pool, BATCH).await {
                Ok(None) => break,
                Ok(Some(n)) => tracing::debug!(deleted = n, "purged posts of a deleted user"),
                Err(error) => {
                    tracing::warn!(%error, "purging the posts of deleted users failed; will retry");
                    break;
                }
            }
            if stop.is_cancelled() {
                return;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = kick.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

fn not_found(user_id: i64) -> ApiError {
    ApiError::not_found(format!("user {user_id} does not exist"))
}

fn user_from_row(row: &Row) -> User {
    let create_time: DateTime<Utc> = row.get("create_time");
    User {
        user_id: row.get("user_id"),
        handle: row.get("handle"),
        display_name: row.get("display_name"),
        create_time: Some(time::from_micros(create_time.timestamp_micros())),
    }
}
