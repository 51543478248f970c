//! Feeds while stores fail: a master killed mid-walk costs nothing but latency (its authors
//! are read from PostgreSQL); with PostgreSQL down too, the feed says what it left out.

use std::time::Duration;

use fred::{interfaces::ClusterInterface, util::redis_keyslot};
use shardfeed_proto::v1::GetHomeFeedRequest;
use shardfeed_testkit::RedisCluster;

use crate::timeline::Harness;

/// A reader following `n` cached authors with a few posts each.
async fn world(h: &mut Harness, n: usize) -> (i64, Vec<i64>) {
    let reader = h.user(true).await;
    let mut authors = Vec::new();
    for i in 0..n {
        let a = h.user(true).await;
        h.follow_cached(reader, a, i as i64 + 1).await;
        h.posts(a, 4, 1, true).await;
        authors.push(a);
    }
    (reader, authors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_walk_yields_the_exact_feed() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap()
        .unwrap();
    let mut h = Harness::start_on(800, None, &cluster.seed_nodes()).await;
    let (reader, _) = world(&mut h, 12).await;
    let truth = h.home_truth(reader).await;

    let mut walked = Vec::new();
    let mut token = String::new();
    let mut page = 0;
    loop {
        if page == 2 {
            let victim = cluster.masters().unwrap()[0].clone();
            cluster.kill_node(&victim).unwrap();
        }
        let r = h
            .feeds
            .clone()
            .get_home_feed(GetHomeFeedRequest {
                user_id: reader,
                page_size: 5,
                page_token: token.clone(),
            })
            .await
            .expect("PostgreSQL answers for the dead node's authors")
            .into_inner();
        assert!(!r.degraded, "PostgreSQL is up: nothing may be left out");
        walked.extend(r.posts.iter().map(|p| p.post_id));
        page += 1;
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(
        walked, truth,
        "no post lost or repeated across the failover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_node_and_postgres_down_the_feed_is_flagged_degraded() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap()
        .unwrap();
    let dead_pg = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut h = Harness::start_on(
        800,
        Some(format!("postgres://shardfeed@127.0.0.1:{dead_pg}/x")),
        &cluster.seed_nodes(),
    )
    .await;
    let (reader, authors) = world(&mut h, 12).await;
    // Healthy: the whole feed from the cache alone.
    let full = h
        .feeds
        .clone()
        .get_home_feed(GetHomeFeedRequest {
            user_id: reader,
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!full.degraded);
    assert_eq!(full.posts.len(), 48);

    // A master that does not hold the reader's own followee set (else the feed cannot even
    // start: UNAVAILABLE), but holds some followed authors.
    let routing = h
        .writer
        .client()
        .cached_cluster_state()
        .expect("cluster state");
    let owner = |key: String| {
        routing
            .get_server(redis_keyslot(key.as_bytes()))
            .unwrap()
            .to_string()
    };
    let reader_node = owner(h.writer.layout().following(reader));
    let victim = cluster
        .masters()
        .unwrap()
        .into_iter()
        .find(|m| {
            *m != reader_node
                && authors
                    .iter()
                    .any(|a| owner(h.writer.layout().meta(*a)) == *m)
        })
        .expect("12 authors over 3 masters: another master holds some");
    let on_victim = authors
        .iter()
        .filter(|a| owner(h.writer.layout().meta(**a)) == victim)
        .count();
    cluster.pause_node(&victim).unwrap();
    let started = std::time::Instant::now();
    let partial = h
        .feeds
        .clone()
        .get_home_feed(GetHomeFeedRequest {
            user_id: reader,
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    cluster.resume_node(&victim).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the deadline"
    );
    assert!(
        partial.degraded,
        "a node and PostgreSQL down: the feed must say so"
    );
    assert_eq!(partial.authors_omitted as usize, on_victim);
    assert_eq!(
        partial.posts.len(),
        48 - 4 * partial.authors_omitted as usize
    );
    // What it did return is right: a subset of the full feed, in order.
    let full_ids: Vec<i64> = full.posts.iter().map(|p| p.post_id).collect();
    let got: Vec<i64> = partial.posts.iter().map(|p| p.post_id).collect();
    let mut in_full = full_ids
        .iter()
        .filter(|id| got.contains(id))
        .copied()
        .collect::<Vec<_>>();
    in_full.truncate(got.len());
    assert_eq!(got, in_full);
}
