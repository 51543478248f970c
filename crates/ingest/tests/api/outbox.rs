//! The transactional outbox: whatever the fast path does not deliver, the relay does — after a
//! simulated crash, after a Redis outage, after a master dies, and for rows that commit late.

use std::time::Duration;

use fred::interfaces::ClusterInterface;
use futures::future::join_all;
use shardfeed_cache::CacheChange;
use shardfeed_proto::v1::CreatePostRequest;
use shardfeed_testkit::{RedisCluster, TestDb};

use crate::{
    cache::eventually,
    helpers::{unique_handle, TestApp},
};

/// A server whose relay runs often and takes rows at once.
const EAGER_RELAY: [(&str, &str); 2] = [
    ("SHARDFEED_OUTBOX__RELAY_INTERVAL_MS", "50"),
    ("SHARDFEED_OUTBOX__GRACE_MS", "0"),
];

#[tokio::test]
async fn the_fast_path_delivers_and_clears_the_outbox() {
    let db = TestDb::new().await.unwrap();
    let app = TestApp::spawn_with(db, crate::helpers::FAST_PATH_ONLY).await;
    let author = app.create_user(&unique_handle("fast"), "Fast").await;
    let post = app.create_post(author.user_id, "warm at once").await;
    // Delivered before the response (there is no relay): no waiting.
    assert_eq!(app.timeline_ids(author.user_id).await, vec![post.post_id]);
    // The user's and the post's rows, delivered by the fast path, are deleted.
    app.settled_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_crash_between_commit_and_warm_is_caught_up_by_the_relay() {
    let db = TestDb::new().await.unwrap();
    let mut extra = EAGER_RELAY.to_vec();
    extra.push(("SHARDFEED_OUTBOX__FAST_PATH_ENABLED", "false"));
    let app = TestApp::spawn_with(db, &extra).await;
    let author = app.create_user(&unique_handle("crash"), "Crash").await;
    let fan = app.create_user(&unique_handle("fan"), "Fan").await;
    let post = app
        .create_post(author.user_id, "committed, never warmed")
        .await;
    app.follow(fan.user_id, author.user_id).await;

    eventually(
        Duration::from_secs(10),
        "the relay delivered everything",
        || async {
            app.timeline_ids(author.user_id).await == vec![post.post_id]
                && app
                    .following_cache(fan.user_id)
                    .await
                    .contains_key(&author.user_id.to_string())
        },
    )
    .await;
    app.settled_within(Duration::from_secs(10)).await;
    // The relay never replays a user's creation (it could mark a timeline complete that lost
    // posts meanwhile): the author is not loaded, and its first read rebuilds it.
    assert_ne!(
        app.meta(author.user_id)
            .await
            .get("loaded")
            .map(String::as_str),
        Some("1")
    );
}

#[tokio::test]
async fn several_replicas_relay_without_losing_or_blocking_each_other() {
    let db = TestDb::new().await.unwrap();
    let mut extra = EAGER_RELAY.to_vec();
    extra.push(("SHARDFEED_OUTBOX__FAST_PATH_ENABLED", "false"));
    extra.push(("SHARDFEED_OUTBOX__BATCH_SIZE", "4"));
    let app = TestApp::spawn_with(db, &extra).await;
    let replicas = [app.spawn_replica().await, app.spawn_replica().await];
    let author = app.create_user(&unique_handle("many"), "Many").await;

    // Writes through all three servers; only the relays (three of them) deliver.
    let mut clients = vec![app.posts.clone()];
    clients.extend(replicas.iter().map(|r| r.posts.clone()));
    let writes = (0..30).map(|i| {
        let mut posts = clients[i % clients.len()].clone();
        async move {
            posts
                .create_post(CreatePostRequest {
                    author_id: author.user_id,
                    body: format!("replica write {i}"),
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .post
                .unwrap()
                .post_id
        }
    });
    let mut acked = join_all(writes).await;
    acked.sort_unstable();
    eventually(
        Duration::from_secs(20),
        "every post is delivered once",
        || async { app.timeline_ids(author.user_id).await == acked },
    )
    .await;
    app.settled_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn rows_that_commit_out_of_id_order_are_all_delivered() {
    let db = TestDb::new().await.unwrap();
    let app = TestApp::spawn_with(db, &EAGER_RELAY).await;
    let author = app.create_user(&unique_handle("late"), "Late").await;
    let change = |post_id: i64| CacheChange::PostCreated {
        author_id: author.user_id,
        post_id,
        time_ms: 1_700_000_000_000 + post_id,
        body: format!("post {post_id}"),
    };

    // Transaction A takes the lower id but commits last.
    let mut slow = app.sql().await;
    let slow_tx = slow.transaction().await.unwrap();
    let low: i64 = slow_tx
        .query_one(
            "INSERT INTO outbox (change) VALUES ($1) RETURNING id",
            &[&serde_json::to_value(change(1)).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    let high: i64 = app
        .sql()
        .await
        .query_one(
            "INSERT INTO outbox (change) VALUES ($1) RETURNING id",
            &[&serde_json::to_value(change(2)).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(low < high);
    eventually(
        Duration::from_secs(10),
        "the committed later id is delivered",
        || async { app.timeline_ids(author.user_id).await == vec![2] },
    )
    .await;

    slow_tx.commit().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the late lower id is delivered too",
        || async { app.timeline_ids(author.user_id).await == vec![1, 2] },
    )
    .await;
}

/// A server on a Redis Cluster of the test's own, which the test may break.
/// A 6-node cluster of the test's own (for tests that stop nodes).
async fn own_cluster() -> RedisCluster {
    RedisCluster::start_async().await.unwrap()
}

/// `count` users to post as.
async fn writers(app: &TestApp, prefix: &str, count: usize) -> Vec<i64> {
    let mut authors = Vec::new();
    for i in 0..count {
        let handle = unique_handle(&format!("{prefix}{i}"));
        authors.push(app.create_user(&handle, "Writer").await.user_id);
    }
    authors
}

/// Waits until every acknowledged `(author, post)` is in its author's cached timeline.
async fn every_acknowledged_post_is_cached(app: &TestApp, authors: &[i64], acked: &[(i64, i64)]) {
    eventually(
        Duration::from_secs(30),
        "every acknowledged post is in its timeline",
        || async {
            let mut missing = 0;
            for author in authors {
                let Ok(cached) = app.try_timeline_ids(*author).await else {
                    return false; // that node is still failing over
                };
                missing += acked
                    .iter()
                    .filter(|(a, p)| a == author && !cached.contains(p))
                    .count();
            }
            missing == 0
        },
    )
    .await;
}

async fn spawn_on_own_cluster(cluster: &RedisCluster) -> TestApp {
    let db = TestDb::new().await.unwrap();
    let redis = cluster.settings_env();
    let mut extra = EAGER_RELAY.to_vec();
    extra.extend(redis.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    extra.push(("SHARDFEED_REDIS__COMMAND_TIMEOUT_MS", "500"));
    TestApp::spawn_with(db, &extra).await
}

#[tokio::test]
async fn writes_succeed_while_redis_is_down_and_reach_it_when_it_returns() {
    let cluster = own_cluster().await;
    let app = spawn_on_own_cluster(&cluster).await;
    let author = app.create_user(&unique_handle("outage"), "Outage").await;

    for node in cluster.seed_nodes() {
        cluster.pause_node(&node).unwrap();
    }
    let mut acked = Vec::new();
    for i in 0..5 {
        let started = std::time::Instant::now();
        acked.push(
            app.create_post(author.user_id, &format!("during the outage {i}"))
                .await
                .post_id,
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a write waited {:?} on Redis",
            started.elapsed()
        );
    }
    assert!(app.outbox_depth().await >= 5);
    for node in cluster.seed_nodes() {
        cluster.resume_node(&node).unwrap();
    }
    eventually(
        Duration::from_secs(30),
        "every acknowledged post reached Redis",
        || async { app.timeline_ids(author.user_id).await == acked },
    )
    .await;
    app.settled_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_during_writes_loses_no_acknowledged_post() {
    let cluster = own_cluster().await;
    let app = spawn_on_own_cluster(&cluster).await;
    let authors = writers(&app, "w", 12).await;
    let victim = cluster.masters().unwrap()[0].clone();

    // Four writers, 40 posts each, round-robin over the authors; a master dies a third of the way.
    let writers = (0..4).map(|w| {
        let mut posts = app.posts.clone();
        let authors = authors.clone();
        async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                let author_id = authors[(w * 40 + i) % authors.len()];
                let post = posts
                    .create_post(CreatePostRequest {
                        author_id,
                        body: format!("writer {w} post {i}"),
                        request_id: String::new(),
                    })
                    .await
                    .expect("PostgreSQL is up: every write is acknowledged")
                    .into_inner()
                    .post
                    .unwrap();
                acked.push((author_id, post.post_id));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        }
    });
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill_node(&victim).unwrap();
    };
    let (acked, ()) = tokio::join!(join_all(writers), killer);
    let acked: Vec<(i64, i64)> = acked.into_iter().flatten().collect();
    assert_eq!(acked.len(), 160);

    let cluster_ref = &cluster;
    tokio::task::block_in_place(|| cluster_ref.wait_until_healthy(Duration::from_secs(30)))
        .expect("a replica took over");
    every_acknowledged_post_is_cached(&app, &authors, &acked).await;
}

/// A master frozen (SIGSTOP) long enough for its replica to take over, then thawed: it rejoins
/// as a replica and the client must move to the new master. The service keeps answering every
/// write within its budget the whole time, and every acknowledged post reaches the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_frozen_until_it_fails_over_leaves_the_service_answering() {
    let cluster = own_cluster().await;
    let app = spawn_on_own_cluster(&cluster).await;
    let authors = writers(&app, "f", 6).await;
    let victim = cluster.masters().unwrap()[0].clone();
    let stop = std::sync::atomic::AtomicBool::new(false);

    // Two writers, one post after the other, until a while after the thaw; no call may take
    // longer than the fast-path budget and the request timeout allow.
    let writers = (0..2).map(|w| {
        let mut posts = app.posts.clone();
        let authors = authors.clone();
        let stop = &stop;
        async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let author_id = authors[(w + 2 * i) % authors.len()];
                let call = posts.create_post(CreatePostRequest {
                    author_id,
                    body: format!("writer {w} post {i}"),
                    request_id: String::new(),
                });
                let post = tokio::time::timeout(Duration::from_secs(10), call)
                    .await
                    .unwrap_or_else(|_| panic!("writer {w}: post {i} not answered within 10 s"))
                    .expect("PostgreSQL is up: every write is acknowledged")
                    .into_inner()
                    .post
                    .unwrap();
                acked.push((author_id, post.post_id));
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        }
    });
    let cluster_ref = &cluster;
    let freezer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster_ref.pause_node(&victim).unwrap();
        // Longer than cluster-node-timeout (3 s): the replica takes over.
        tokio::time::sleep(Duration::from_secs(6)).await;
        cluster_ref.resume_node(&victim).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (acked, ()) = tokio::join!(join_all(writers), freezer);
    let acked: Vec<(i64, i64)> = acked.into_iter().flatten().collect();
    assert!(acked.len() >= 20, "only {} posts acknowledged", acked.len());

    tokio::task::block_in_place(|| cluster_ref.wait_until_healthy(Duration::from_secs(30)))
        .expect("the cluster recovered");
    every_acknowledged_post_is_cached(&app, &authors, &acked).await;
}

/// The master (`host:port`) that owns `user`'s keys.
fn master_of(app: &TestApp, user: i64) -> String {
    let routing = app.redis.cached_cluster_state().expect("a slot map");
    let slot = fred::util::redis_keyslot(app.layout.meta(user).as_bytes());
    let server = routing.get_server(slot).expect("an owner");
    format!("{}:{}", server.host, server.port)
}

/// The replica of one master is stopped, so no change to that shard can be confirmed (`WAIT`):
/// those rows keep failing. They must hold up no other shard's change, be retried on their own
/// schedule (never parked: they wait for Redis, they are not wrong) and land once the shard has
/// a replica again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_without_replicas_holds_up_no_other_shard() {
    let cluster = own_cluster().await;
    let db = TestDb::new().await.unwrap();
    let redis = cluster.settings_env();
    let mut extra: Vec<(&str, &str)> = redis
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    extra.extend([
        ("SHARDFEED_REDIS__COMMAND_TIMEOUT_MS", "500"),
        ("SHARDFEED_OUTBOX__FAST_PATH_ENABLED", "false"),
        ("SHARDFEED_OUTBOX__BATCH_SIZE", "4"),
        ("SHARDFEED_OUTBOX__RELAY_INTERVAL_MS", "200"),
        ("SHARDFEED_OUTBOX__RETRY_BASE_MS", "200"),
        ("SHARDFEED_OUTBOX__RETRY_MAX_MS", "1000"),
        ("SHARDFEED_OUTBOX__GRACE_MS", "0"),
    ]);
    let app = TestApp::spawn_with(db, &extra).await;
    let master = cluster.masters().unwrap()[0].clone();
    let owner = |user: i64| master_of(&app, user);
    let (mut on_master, mut elsewhere) = (Vec::new(), None);
    let mut i = 0;
    while on_master.len() < 4 || elsewhere.is_none() {
        let user = app
            .create_user(&unique_handle(&format!("s{i}")), "Shard")
            .await
            .user_id;
        i += 1;
        if owner(user) == master {
            if on_master.len() < 4 {
                on_master.push(user);
            }
        } else if elsewhere.is_none() {
            elsewhere = Some(user);
        }
    }
    let elsewhere = elsewhere.unwrap();
    app.settled_within(Duration::from_secs(10)).await;
    let replica = cluster.replicas_of(&master).unwrap()[0].clone();
    cluster.kill_node(&replica).unwrap();

    let mut stuck = Vec::new();
    for author in &on_master {
        stuck.push(
            app.create_post(*author, "on the shard without a replica")
                .await,
        );
    }
    let free = app.create_post(elsewhere, "on a healthy shard").await;
    eventually(
        Duration::from_secs(3),
        "the healthy shard's post is delivered past the four stuck rows",
        || async { app.timeline_ids(elsewhere).await == vec![free.post_id] },
    )
    .await;
    let sql = app.sql().await;
    let retried: i64 = sql
        .query_one("SELECT count(*) FROM outbox WHERE attempts > 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(retried, 4, "the four rows of the shard wait, retried");
    let parked: i64 = sql
        .query_one("SELECT count(*) FROM outbox_dead_letters", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        parked, 0,
        "waiting for a replica is not a reason to give up"
    );

    tokio::task::block_in_place(|| {
        cluster.restart_node(&replica).unwrap();
        cluster.wait_until_healthy(Duration::from_secs(30)).unwrap();
    });
    app.settled_within(Duration::from_secs(30)).await;
    for (author, post) in on_master.iter().zip(&stuck) {
        assert_eq!(app.timeline_ids(*author).await, vec![post.post_id]);
    }
}

/// A row this version cannot decode is parked in the dead letters after `max_attempts`, with
/// its error, and delays no other change.
#[tokio::test]
async fn a_change_that_can_never_apply_is_parked_and_delays_nothing() {
    let db = TestDb::new().await.unwrap();
    let extra = [
        ("SHARDFEED_OUTBOX__FAST_PATH_ENABLED", "false"),
        ("SHARDFEED_OUTBOX__BATCH_SIZE", "1"),
        ("SHARDFEED_OUTBOX__RELAY_INTERVAL_MS", "50"),
        ("SHARDFEED_OUTBOX__RETRY_BASE_MS", "50"),
        ("SHARDFEED_OUTBOX__MAX_ATTEMPTS", "3"),
        ("SHARDFEED_OUTBOX__GRACE_MS", "0"),
    ];
    let app = TestApp::spawn_with(db, &extra).await;
    let sql = app.sql().await;
    sql.execute(
        r#"INSERT INTO outbox (change) VALUES ('{"kind": "from_a_newer_version"}')"#,
        &[],
    )
    .await
    .unwrap();
    let author = app.create_user(&unique_handle("dl"), "Dead letters").await;
    let post = app.create_post(author.user_id, "behind a bad row").await;
    eventually(
        Duration::from_secs(5),
        "the post behind the bad row is delivered",
        || async { app.timeline_ids(author.user_id).await == vec![post.post_id] },
    )
    .await;
    app.settled_within(Duration::from_secs(10)).await;
    let row = sql
        .query_one("SELECT attempts, last_error FROM outbox_dead_letters", &[])
        .await
        .unwrap();
    let attempts: i32 = row.get(0);
    let error: String = row.get(1);
    assert_eq!(attempts, 3);
    assert!(error.contains("undecodable"), "{error}");
}

/// A change applied while its master's replica does not answer is not confirmed. Applied again
/// by a writer on a fresh connection (another ingest replica's relay), its script writes nothing
/// — the post is already there — and it must not be confirmed either until the replica has the
/// change: the confirmation is that of the change, not of whatever the connection wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_change_is_confirmed_only_once_a_replica_has_it() {
    let cluster = own_cluster().await;
    let app = spawn_on_own_cluster(&cluster).await;
    let author = app
        .create_user(&unique_handle("wait"), "Wait")
        .await
        .user_id;
    let replica = cluster.replicas_of(&master_of(&app, author)).unwrap()[0].clone();
    let fresh_writer = || async {
        let client =
            shardfeed_server::redis::connect_and_wait(&app.settings.redis, Duration::from_secs(10))
                .await
                .unwrap();
        shardfeed_cache::CacheWriter::new(client, app.layout.clone(), &app.cache_settings)
    };
    let change = CacheChange::PostCreated {
        author_id: author,
        post_id: 1 << 40,
        time_ms: shardfeed_proto::ids::post_time_ms(1 << 40),
        body: "replicated?".into(),
    };
    cluster.pause_node(&replica).unwrap();
    let first = fresh_writer()
        .await
        .apply_durably(std::slice::from_ref(&change))
        .await;
    assert!(first[0].is_err(), "no replica answered: {first:?}");
    let replayed = fresh_writer()
        .await
        .apply_durably(std::slice::from_ref(&change))
        .await;
    cluster.resume_node(&replica).unwrap();
    assert!(
        replayed[0].is_err(),
        "confirmed by a replica that does not answer: {replayed:?}"
    );
    let writer = fresh_writer().await;
    eventually(
        Duration::from_secs(10),
        "the replica confirms the change",
        || async { writer.apply_durably(std::slice::from_ref(&change)).await[0].is_ok() },
    )
    .await;
}
