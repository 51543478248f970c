//! Feeds while stores fail: a master killed mid-walk costs nothing but latency (its authors
//! are read from PostgreSQL); with PostgreSQL down too, the feed says what it left out.

use std::time::Duration;

use fred::{interfaces::ClusterInterface, util::redis_keyslot};
use shardfeed_proto::v1::{GetHomeFeedRequest, GetHomeFeedResponse};
use shardfeed_testkit::RedisCluster;

use crate::harness::Harness;

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

/// Every post of `user`'s feed, walked page by page with PostgreSQL up (so never degraded);
/// `kill`: before page `n`, kill the `m`-th master of `cluster`.
async fn walk(
    h: &Harness,
    user: i64,
    page_size: i32,
    kill: Option<(usize, &RedisCluster, usize)>,
) -> Vec<i64> {
    let mut walked = Vec::new();
    let mut token = String::new();
    let mut page = 0;
    loop {
        if let Some((n, cluster, m)) = kill {
            if page == n {
                let victim = cluster.masters().unwrap()[m].clone();
                cluster.kill_node(&victim).unwrap();
            }
        }
        let r = h
            .feeds
            .clone()
            .get_home_feed(GetHomeFeedRequest {
                user_id: user,
                page_size,
                page_token: token.clone(),
            })
            .await
            .expect("PostgreSQL answers for the dead node's authors")
            .into_inner();
        assert!(!r.degraded, "PostgreSQL is up: nothing may be left out");
        walked.extend(r.posts.iter().map(|p| p.post_id));
        page += 1;
        if r.next_page_token.is_empty() {
            return walked;
        }
        token = r.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_walk_yields_the_exact_feed() {
    let cluster = RedisCluster::start_async().await.unwrap();
    let mut h = Harness::builder().redis(&cluster).start().await;
    let (reader, _) = world(&mut h, 12).await;
    let truth = h.home_truth(reader).await;

    let walked = walk(&h, reader, 5, Some((2, &cluster, 0))).await;
    assert_eq!(
        walked, truth,
        "no post lost or repeated across the failover"
    );
}

/// A reader following 12 cached authors, served by an aggregator whose PostgreSQL never
/// answers; `victim`, a master holding some of those authors but not the reader's followee set
/// (else the feed cannot even start: UNAVAILABLE), and how many authors it holds; and the whole
/// feed, read while every node answered.
struct NoPostgres {
    cluster: RedisCluster,
    h: Harness,
    reader: i64,
    victim: String,
    on_victim: usize,
    full: Vec<i64>,
}

async fn without_postgres() -> NoPostgres {
    let cluster = RedisCluster::start_async().await.unwrap();
    let mut h = Harness::builder()
        .aggregator_pg(crate::harness::unreachable_postgres())
        .redis(&cluster)
        .start()
        .await;
    let (reader, authors) = world(&mut h, 12).await;
    // Healthy: the whole feed from the cache alone.
    let full = home(&h, reader).await.unwrap();
    assert!(!full.degraded);
    assert_eq!(full.posts.len(), 48);

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
    NoPostgres {
        cluster,
        h,
        reader,
        victim,
        on_victim,
        full: full.posts.iter().map(|p| p.post_id).collect(),
    }
}

async fn home(h: &Harness, reader: i64) -> Result<GetHomeFeedResponse, tonic::Status> {
    h.feeds
        .clone()
        .get_home_feed(GetHomeFeedRequest {
            user_id: reader,
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

/// The page leaves out exactly the victim's authors, and what it returns is the full feed
/// without them, in order.
fn assert_only_the_victims_authors_left_out(w: &NoPostgres, partial: &GetHomeFeedResponse) {
    assert!(
        partial.degraded,
        "a node and PostgreSQL down: the feed must say so"
    );
    assert_eq!(
        partial.authors_omitted as usize, w.on_victim,
        "only the authors of the node that is down are left out"
    );
    assert_eq!(
        partial.posts.len(),
        48 - 4 * partial.authors_omitted as usize
    );
    let got: Vec<i64> = partial.posts.iter().map(|p| p.post_id).collect();
    let mut in_full = w
        .full
        .iter()
        .filter(|id| got.contains(id))
        .copied()
        .collect::<Vec<_>>();
    in_full.truncate(got.len());
    assert_eq!(got, in_full);
}

/// The random world of `home::every_page_of_every_feed_matches_the_sql_truth`, every user's
/// feed walked page by page, and a master killed a third of the way through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feed_of_a_random_world_stays_exact_across_a_killed_master() {
    let cluster = RedisCluster::start_async().await.unwrap();
    let mut h = Harness::builder().redis(&cluster).start().await;
    let users = crate::home::random_world(&mut h, 29).await;
    let mut killed_at = None;
    for (i, &user) in users.iter().enumerate() {
        let truth = h.home_truth(user).await;
        // Between the first and second page of the first feed of more than one page past a
        // third of the users.
        let kill = (killed_at.is_none() && i >= users.len() / 3 && truth.len() > 3)
            .then_some((1, &cluster, 1));
        if kill.is_some() {
            killed_at = Some(user);
        }
        let walked = walk(&h, user, 3, kill).await;
        assert_eq!(
            walked, truth,
            "user {user} (master killed at {killed_at:?})"
        );
    }
    assert!(killed_at.is_some(), "no feed of more than one page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_node_and_postgres_down_the_feed_is_flagged_degraded() {
    let w = without_postgres().await;
    w.cluster.pause_node(&w.victim).unwrap();
    let started = std::time::Instant::now();
    let partial = home(&w.h, w.reader).await.unwrap();
    w.cluster.resume_node(&w.victim).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the deadline"
    );
    assert_only_the_victims_authors_left_out(&w, &partial);
}

/// A killed master (its connections reset at once) must not hold up the reads of the others
/// while the client reconnects: the healthy nodes' authors still come from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_holds_up_no_other_node() {
    let w = without_postgres().await;
    w.cluster.kill_node(&w.victim).unwrap();
    // The aggregator's cluster client sees the connection reset and starts reconnecting
    // within milliseconds; a read already under way then waits for it (and goes to
    // PostgreSQL), the next ones do not. Failover takes the cluster node timeout (3 s) and
    // more: these reads come before it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let partial = home(&w.h, w.reader).await.unwrap();
        assert_only_the_victims_authors_left_out(&w, &partial);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    w.cluster.restart_node(&w.victim).unwrap();
}

/// A manual failover moves the victim's slots with no connection lost: the node clients keep
/// reading the old master, which now answers `MOVED`. That failed read refreshes the slot map,
/// and the feed is whole again from the cache (PostgreSQL is down here, so only the cache can
/// make it whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_manual_failover_the_feed_is_whole_again() {
    let w = without_postgres().await;
    let new_master = tokio::task::block_in_place(|| w.cluster.fail_over(&w.victim)).unwrap();
    assert_ne!(new_master, w.victim);
    let mut whole = None;
    for attempt in 0..20 {
        let page = home(&w.h, w.reader).await.unwrap();
        if !page.degraded {
            whole = Some((attempt, page));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, page) = whole.expect("the feed never came whole again after the failover");
    let got: Vec<i64> = page.posts.iter().map(|p| p.post_id).collect();
    assert_eq!(got, w.full);
}
