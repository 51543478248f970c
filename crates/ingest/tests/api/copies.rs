//! Key replication of hot authors: once an author is in the shared hot set, ingest keeps a copy
//! of its timeline on every other master, consistent with the original through creates and
//! deletes, and deletes the copies when the author cools down.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::interfaces::{ClusterInterface, HashesInterface, KeysInterface, SortedSetsInterface};
use fred::types::Value;
use fred::util::redis_keyslot;
use shardfeed_cache::layout::{copy_numbers, AuthorKeys};
use shardfeed_proto::v1::DeletePostRequest;

use crate::{
    cache::eventually,
    helpers::{unique_handle, TestApp},
};

/// What one set of author keys holds: the timeline (id, score) and every post entry.
async fn contents(
    app: &TestApp,
    keys: &AuthorKeys,
) -> (Vec<(String, f64)>, HashMap<String, Value>) {
    let timeline: Vec<(String, f64)> = app
        .redis
        .zrange(keys.timeline.clone(), 0, -1, None, false, None, true)
        .await
        .unwrap();
    let posts: HashMap<String, Value> = app.redis.hgetall(keys.posts.clone()).await.unwrap();
    (timeline, posts)
}

async fn loaded(app: &TestApp, keys: &AuthorKeys) -> bool {
    let flag: Option<String> = app.redis.hget(keys.meta.clone(), "loaded").await.unwrap();
    flag.as_deref() == Some("1")
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64
}

#[tokio::test]
async fn copies_follow_the_original_through_creates_and_deletes_and_go_when_it_cools() {
    let app = TestApp::spawn_with(
        shardfeed_testkit::TestDb::new().await.unwrap(),
        &[("SHARDFEED_HOTSPOT__REFRESH_MS", "100")],
    )
    .await;
    let author = app
        .create_user(&unique_handle("star"), "Star")
        .await
        .user_id;
    let mut posts = Vec::new();
    for i in 0..5 {
        posts.push(
            app.create_post(author, &format!("before {i}"))
                .await
                .post_id,
        );
    }
    app.settled().await;

    // An aggregator finds the author hot.
    let hot = app.layout.hot_set();
    let _: i64 = app
        .redis
        .zadd(
            &hot,
            None,
            None,
            false,
            false,
            (now_ms() + 60_000.0, author),
        )
        .await
        .unwrap();
    let routing = app.redis.cached_cluster_state().unwrap();
    let copies: Vec<AuthorKeys> = copy_numbers(&app.layout, &routing, author)
        .into_iter()
        .map(|n| app.layout.author_copy(author, n))
        .collect();
    assert_eq!(copies.len(), routing.unique_primary_nodes().len() - 1);
    // One copy on each other master.
    let mut masters: Vec<String> = copies
        .iter()
        .chain([&app.layout.author(author)])
        .map(|k| {
            routing
                .get_server(redis_keyslot(k.meta.as_bytes()))
                .unwrap()
                .to_string()
        })
        .collect();
    masters.sort();
    masters.dedup();
    assert_eq!(masters.len(), copies.len() + 1);

    eventually(Duration::from_secs(10), "the copies are built", || async {
        for copy in &copies {
            if !loaded(&app, copy).await {
                return false;
            }
        }
        true
    })
    .await;

    // Writes while hot: new posts and deletes, old and new.
    for i in 0..4 {
        posts.push(
            app.create_post(author, &format!("while hot {i}"))
                .await
                .post_id,
        );
    }
    for victim in [posts[1], posts[7]] {
        app.posts
            .clone()
            .delete_post(DeletePostRequest { post_id: victim })
            .await
            .unwrap();
    }
    app.settled().await;
    let original = contents(&app, &app.layout.author(author)).await;
    assert_eq!(original.0.len(), 7, "{original:?}");
    for copy in &copies {
        assert_eq!(contents(&app, copy).await, original, "copy {copy:?}");
        let complete: Option<String> = app.redis.hget(copy.meta.clone(), "complete").await.unwrap();
        assert_eq!(complete.as_deref(), Some("1"));
    }

    // Cooled down: the copies go.
    let _: i64 = app.redis.zrem(&hot, author).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the copies are deleted",
        || async {
            for copy in &copies {
                let n: i64 = app
                    .redis
                    .exists(vec![
                        copy.timeline.clone(),
                        copy.posts.clone(),
                        copy.meta.clone(),
                    ])
                    .await
                    .unwrap();
                if n > 0 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    // And later writes touch the original only.
    app.create_post(author, "after").await;
    app.settled().await;
    for copy in &copies {
        let n: i64 = app.redis.exists(copy.meta.clone()).await.unwrap();
        assert_eq!(n, 0);
    }
}
