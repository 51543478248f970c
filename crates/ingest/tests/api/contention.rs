//! The write path under contention: an author locked for long by another transaction, and a
//! user with a million posts deleted while others write.

use std::time::{Duration, Instant};

use futures::future::join_all;
use shardfeed_proto::v1::{CreatePostRequest, DeleteUserRequest, GetPostRequest};
use tonic::Code;

use crate::{
    cache::eventually,
    helpers::{unique_handle, TestApp},
};

fn request(author_id: i64, body: &str) -> CreatePostRequest {
    CreatePostRequest {
        author_id,
        body: body.into(),
        request_id: String::new(),
    }
}

/// While another transaction holds author A's row (as a long `DeleteUser` does), posts of other
/// authors sent together with A's — so batched with it by the group commit — are written at
/// once; A's post waits for the lock and then gets the answer it would get alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_author_stalls_no_other_authors_post_in_its_group_commit() {
    let app = TestApp::spawn().await;
    let locked = app
        .create_user(&unique_handle("locked"), "Locked")
        .await
        .user_id;
    let mut others = Vec::new();
    for i in 0..6 {
        others.push(
            app.create_user(&unique_handle(&format!("free{i}")), "Free")
                .await
                .user_id,
        );
    }
    let mut holder = app.sql().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE",
        &[&locked],
    )
    .await
    .unwrap();

    let stalled = {
        let mut posts = app.posts.clone();
        tokio::spawn(async move {
            posts
                .create_post(request(locked, "waits for the lock"))
                .await
        })
    };
    let client = app.posts.clone();
    let writes = others.iter().flat_map(|&author| {
        let client = client.clone();
        (0..4).map(move |i| {
            let mut posts = client.clone();
            async move {
                posts
                    .create_post(request(author, &format!("free {i}")))
                    .await
            }
        })
    });
    let free = tokio::time::timeout(Duration::from_secs(10), join_all(writes))
        .await
        .expect("other authors' posts were held up by the locked author");
    assert!(free.iter().all(Result::is_ok), "{free:?}");
    if stalled.is_finished() {
        panic!(
            "the locked author's post did not wait for its lock: {:?}",
            stalled.await
        );
    }

    // The holder deletes the author: the waiting post gets what it would get alone.
    tx.execute("DELETE FROM users WHERE user_id = $1", &[&locked])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let answer = stalled.await.unwrap();
    assert_eq!(answer.unwrap_err().code(), Code::NotFound);
}

/// `DeleteUser` of an author with a million posts answers after one short transaction; the
/// posts are purged in the background in batches, invisible meanwhile, and other writers go
/// on. Prints what it measured (no timing is asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_with_a_million_posts_holds_up_no_other_writer() {
    const POSTS: i64 = 1_000_000;
    let app = TestApp::spawn().await;
    let big = app.create_user(&unique_handle("big"), "Big").await.user_id;
    let other = app
        .create_user(&unique_handle("other"), "Other")
        .await
        .user_id;
    let sql = app.sql().await;
    let seeding = Instant::now();
    sql.execute(
        "INSERT INTO posts (author_id, post_id, body, create_time)
         SELECT $1, g, 'old post', now() FROM generate_series(1::bigint, $2::bigint) g",
        &[&big, &POSTS],
    )
    .await
    .unwrap();
    let seeded = seeding.elapsed();

    let started = Instant::now();
    app.users
        .clone()
        .delete_user(DeleteUserRequest { user_id: big })
        .await
        .unwrap();
    let delete_took = started.elapsed();
    let s = app
        .posts
        .clone()
        .get_post(GetPostRequest { post_id: 17 })
        .await
        .unwrap_err();
    assert_eq!(
        s.code(),
        Code::NotFound,
        "a deleted user's post waiting for its purge"
    );

    let purge = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut writes = 0;
    loop {
        let left: i64 = sql
            .query_one("SELECT count(*) FROM posts WHERE author_id = $1", &[&big])
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            purge.elapsed() < Duration::from_secs(300),
            "{left} posts left"
        );
        let t = Instant::now();
        app.create_post(other, "while the purge runs").await;
        slowest = slowest.max(t.elapsed());
        writes += 1;
    }
    let purged = purge.elapsed();
    eventually(
        Duration::from_secs(10),
        "the deleted user is forgotten",
        || async {
            let rows: i64 = sql
                .query_one("SELECT count(*) FROM deleted_authors", &[])
                .await
                .unwrap()
                .get(0);
            rows == 0
        },
    )
    .await;
    eprintln!(
        "figures: {POSTS} posts seeded in {seeded:?}; DeleteUser answered in {delete_took:?}; \
         purged in {purged:?}; {writes} CreatePosts of another author meanwhile, the slowest \
         {slowest:?}"
    );
}

/// PostgreSQL refuses every statement that writes more than one post (a trigger here; a
/// deadlock victim or a constraint in life): each batch's posts are then written one by one,
/// and every one of them succeeds — none gets `UNAVAILABLE` while PostgreSQL is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_written_post_by_post_without_an_error() {
    let app = TestApp::spawn().await;
    let mut authors = Vec::new();
    for i in 0..8 {
        authors.push(
            app.create_user(&unique_handle(&format!("r{i}")), "Refused")
                .await
                .user_id,
        );
    }
    app.sql()
        .await
        .batch_execute(
            "CREATE SEQUENCE refusals;
             CREATE FUNCTION one_post_at_a_time() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF (SELECT count(*) FROM fresh) > 1 THEN
                 PERFORM nextval('refusals'); -- not rolled back with the statement
                 RAISE EXCEPTION 'refused: % posts in one statement', (SELECT count(*) FROM fresh);
               END IF;
               RETURN NULL;
             END $$;
             CREATE TRIGGER one_post_at_a_time AFTER INSERT ON outbox
                 REFERENCING NEW TABLE AS fresh
                 FOR EACH STATEMENT EXECUTE FUNCTION one_post_at_a_time();",
        )
        .await
        .unwrap();
    let client = app.posts.clone();
    let writes = (0..96).map(|i| {
        let mut posts = client.clone();
        let author = authors[i % authors.len()];
        async move {
            posts
                .create_post(request(author, &format!("refused {i}")))
                .await
        }
    });
    let results = join_all(writes).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    let written: i64 = app
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM posts WHERE author_id = ANY($1)",
            &[&authors],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 96, "every post written once");
    let refused: bool = app
        .sql()
        .await
        .query_one("SELECT is_called FROM refusals", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        refused,
        "no batch statement was refused: the test tested nothing"
    );
}
