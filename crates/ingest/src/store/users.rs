//! The `users` table.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use prost::Message;
use shardfeed_core::{ApiError, ApiResult};
use shardfeed_proto::v1::{CreateUserRequest, User};
use tokio_postgres::{error::SqlState, Row};

use super::{
    idempotency::{self, Claim},
    outbox,
    posts::Written,
};
use crate::domain::{DisplayName, Handle, RequestId};
use shardfeed_core::cache::CacheChange;

const CREATE_USER: &str = "CreateUser";

/// Inserts a user. With a `request_id`, a retry returns the user the first call created.
pub async fn create(
    pool: &Pool,
    handle: &Handle,
    display_name: &DisplayName,
    request_id: Option<RequestId>,
) -> ApiResult<Written<User>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if let Some(RequestId(id)) = request_id {
        let canonical = CreateUserRequest {
            handle: handle.as_str().to_owned(),
            display_name: display_name.as_str().to_owned(),
            request_id: String::new(),
        }
        .encode_to_vec();
        if let Claim::Replay(response) =
            idempotency::claim(&tx, CREATE_USER, id, &canonical).await?
        {
            let user = User::decode(response.as_slice()).map_err(ApiError::internal)?;
            return Ok(Written {
                value: user,
                pending: None,
            });
        }
    }
    let row = tx
        .query_one(
            "INSERT INTO users (handle, display_name) VALUES ($1, $2)
             RETURNING user_id, handle, display_name, create_time",
            &[&handle.as_str(), &display_name.as_str()],
        )
        .await
        .map_err(|err| match err.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
                ApiError::AlreadyExists(format!("handle {:?} is taken", handle.as_str()))
            }
            _ => err.into(),
        })?;
    let user = user_from_row(&row);
    let change = CacheChange::UserCreated {
        user_id: user.user_id,
    };
    let outbox_id = outbox::enqueue(&tx, &change).await?;
    if let Some(RequestId(id)) = request_id {
        idempotency::complete(&tx, CREATE_USER, id, &user.encode_to_vec()).await?;
    }
    tx.commit().await?;
    Ok(Written {
        value: user,
        pending: Some((outbox_id, change)),
    })
}

pub async fn get(pool: &Pool, user_id: i64) -> ApiResult<User> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT user_id, handle, display_name, create_time FROM users WHERE user_id = $1",
            &[&user_id],
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
    let row = client
        .query_opt(
            "UPDATE users SET display_name = $2, update_time = now() WHERE user_id = $1
             RETURNING user_id, handle, display_name, create_time",
            &[&user_id, &display_name.as_str()],
        )
        .await?;
    row.map(|r| user_from_row(&r))
        .ok_or_else(|| not_found(user_id))
}

/// Deletes a user with their posts and follow edges in both directions. The cache drops the
/// user's keys and marks them gone, so every feed that still lists them skips them.
pub async fn delete(pool: &Pool, user_id: i64) -> ApiResult<Written<()>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let locked = tx
        .query_opt(
            "SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE",
            &[&user_id],
        )
        .await?;
    if locked.is_none() {
        return Err(not_found(user_id));
    }
    tx.execute("DELETE FROM posts WHERE author_id = $1", &[&user_id])
        .await?;
    tx.execute(
        "DELETE FROM follows WHERE follower_id = $1 OR followee_id = $1",
        &[&user_id],
    )
    .await?;
    tx.execute("DELETE FROM users WHERE user_id = $1", &[&user_id])
        .await?;
    let change = CacheChange::UserDeleted { user_id };
    let outbox_id = outbox::enqueue(&tx, &change).await?;
    tx.commit().await?;
    Ok(Written {
        value: (),
        pending: Some((outbox_id, change)),
    })
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
        create_time: Some(timestamp(create_time)),
    }
}

/// Wire timestamp of a database time.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}
