//! The PostgreSQL side of the read path: the truth the cache is checked against and falls
//! back to.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use shardfeed_proto::v1::Post;
use shardfeed_server::{spans, ApiError, ApiResult};

/// The users `user_id` follows and the graph version up to which that is exact: read under the
/// user's row lock, which every follow change of the user takes before drawing its version, so
/// every change at or below the version returned is in the list and every later one gets a
/// higher version. `NOT_FOUND` if the user does not exist.
pub async fn followees_snapshot(pool: &Pool, user_id: i64) -> ApiResult<(Vec<i64>, i64)> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if spans::pg(
        "SELECT users.lock",
        tx.query_opt(
            "SELECT 1 FROM users WHERE user_id = $1 FOR SHARE",
            &[&user_id],
        ),
    )
    .await?
    .is_none()
    {
        return Err(ApiError::not_found(format!(
            "user {user_id} does not exist"
        )));
    }
    // Before the first version is drawn, `last_value` already says 1: none is taken yet.
    let since: i64 = spans::pg(
        "SELECT graph_version_seq.last",
        tx.query_one(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM graph_version_seq",
            &[],
        ),
    )
    .await?
    .get(0);
    let rows = spans::pg(
        "SELECT follows.followees",
        tx.query(
            "SELECT followee_id FROM follows WHERE follower_id = $1",
            &[&user_id],
        ),
    )
    .await?;
    tx.commit().await?;
    Ok((rows.iter().map(|r| r.get(0)).collect(), since))
}

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
            "SELECT author_id, post_id, body, create_time FROM posts
             WHERE author_id = $1 AND delete_time IS NULL AND post_id < $2
             ORDER BY post_id DESC
             LIMIT $3",
        )
        .await?;
    let rows = spans::pg(
        "SELECT posts.timeline_page",
        client.query(&stmt, &[&author_id, &before_id, &limit]),
    )
    .await?;
    Ok(rows.iter().map(post_from_row).collect())
}

/// `NOT_FOUND` unless the user exists.
pub async fn require_user(pool: &Pool, user_id: i64) -> ApiResult<()> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached("SELECT 1 FROM users WHERE user_id = $1")
        .await?;
    match spans::pg("SELECT users.exists", client.query_opt(&stmt, &[&user_id])).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!(
            "user {user_id} does not exist"
        ))),
    }
}

fn post_from_row(row: &deadpool_postgres::tokio_postgres::Row) -> Post {
    let time: DateTime<Utc> = row.get("create_time");
    Post {
        post_id: row.get("post_id"),
        author_id: row.get("author_id"),
        body: row.get("body"),
        create_time: Some(shardfeed_proto::time::from_micros(time.timestamp_micros())),
    }
}

/// The users `user_id` follows; `NOT_FOUND` if the user does not exist.
pub async fn followees(pool: &Pool, user_id: i64) -> ApiResult<Vec<i64>> {
    require_user(pool, user_id).await?;
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached("SELECT followee_id FROM follows WHERE follower_id = $1")
        .await?;
    let rows = spans::pg("SELECT follows.followees", client.query(&stmt, &[&user_id])).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// For each of `authors`, up to `limit` live posts below `before_id`, newest first: one
/// LATERAL top-k query for all of them.
pub async fn timelines_page(
    pool: &Pool,
    authors: &[i64],
    before_id: i64,
    limit: i64,
) -> ApiResult<Vec<Post>> {
    if authors.is_empty() {
        return Ok(Vec::new());
    }
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT p.author_id, p.post_id, p.body, p.create_time
             FROM unnest($1::bigint[]) AS a(author_id)
             -- A deleted user's posts may wait for their purge: never read.
             JOIN users u ON u.user_id = a.author_id
             CROSS JOIN LATERAL (
                 SELECT author_id, post_id, body, create_time FROM posts
                 WHERE posts.author_id = a.author_id AND delete_time IS NULL AND post_id < $2
                 ORDER BY post_id DESC
                 LIMIT $3
             ) p",
        )
        .await?;
    let rows = spans::pg(
        "SELECT posts.timelines_top_k",
        client.query(&stmt, &[&authors, &before_id, &limit]),
    )
    .await?;
    Ok(rows.iter().map(post_from_row).collect())
}

/// The live posts among `post_ids`.
pub async fn posts_by_id(pool: &Pool, post_ids: &[i64]) -> ApiResult<Vec<Post>> {
    if post_ids.is_empty() {
        return Ok(Vec::new());
    }
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT author_id, post_id, body, create_time FROM posts
             WHERE post_id = ANY($1) AND delete_time IS NULL
               AND EXISTS (SELECT 1 FROM users WHERE user_id = posts.author_id)",
        )
        .await?;
    let rows = spans::pg("SELECT posts.by_ids", client.query(&stmt, &[&post_ids])).await?;
    Ok(rows.iter().map(post_from_row).collect())
}

/// What PostgreSQL holds for `author_id` for the cache: the newest `timeline_len` live posts,
/// the newest `timeline_len` deleted posts among them, and the floor below which the snapshot
/// says nothing (none when it holds every live post; raised to the oldest deleted post sent
/// when more were deleted than that). `None` if the user does not exist.
pub async fn author_snapshot(
    pool: &Pool,
    author_id: i64,
    timeline_len: i64,
) -> ApiResult<Option<shardfeed_cache::AuthorSnapshot>> {
    let client = pool.get().await?;
    if spans::pg(
        "SELECT users.exists",
        client.query_opt("SELECT 1 FROM users WHERE user_id = $1", &[&author_id]),
    )
    .await?
    .is_none()
    {
        return Ok(None);
    }
    let stmt = client
        .prepare_cached(
            "SELECT author_id, post_id, body, create_time FROM posts
             WHERE author_id = $1 AND delete_time IS NULL
             ORDER BY post_id DESC
             LIMIT $2",
        )
        .await?;
    let rows = spans::pg(
        "SELECT posts.snapshot",
        client.query(&stmt, &[&author_id, &(timeline_len + 1)]),
    )
    .await?;
    let complete = rows.len() as i64 <= timeline_len;
    let posts: Vec<Post> = rows
        .iter()
        .take(timeline_len as usize)
        .map(post_from_row)
        .collect();
    let mut floor = if complete {
        None
    } else {
        posts.last().map(|p| p.post_id)
    };
    let deleted_stmt = client
        .prepare_cached(
            "SELECT post_id FROM posts
             WHERE author_id = $1 AND delete_time IS NOT NULL AND post_id >= $2
             ORDER BY post_id DESC
             LIMIT $3",
        )
        .await?;
    let mut deleted: Vec<i64> = spans::pg(
        "SELECT posts.snapshot_deleted",
        client.query(
            &deleted_stmt,
            &[&author_id, &floor.unwrap_or(0), &(timeline_len + 1)],
        ),
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    if deleted.len() as i64 > timeline_len {
        // More deletions than the cache keeps: what lies below the oldest one kept is left to
        // PostgreSQL.
        deleted.truncate(timeline_len as usize);
        floor = floor.max(deleted.last().copied());
    }
    let posts = match floor {
        Some(floor) => posts.into_iter().filter(|p| p.post_id >= floor).collect(),
        None => posts,
    };
    Ok(Some(shardfeed_cache::AuthorSnapshot {
        posts,
        deleted,
        floor,
    }))
}
