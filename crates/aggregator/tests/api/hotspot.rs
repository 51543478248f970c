//! Hot partitions against the real stores: detection of planted hot authors, the near-cache's
//! visibility bound for new and deleted posts, coalescing, replica reads.

use std::time::{Duration, Instant};

use fred::interfaces::{ClusterInterface, SortedSetsInterface};
use fred::util::redis_keyslot;
use futures::future::join_all;
use shardfeed_cache::{CacheChange, CacheLayout};
use shardfeed_proto::v1::{
    hotspot_service_client::HotspotServiceClient, GetHotAuthorsRequest, GetHotAuthorsResponse,
    Mitigation,
};
use tonic::Code;

use crate::harness::Harness;

/// Quick detection for tests: a few reads per second make an author hot.
const QUICK: &[(&str, &str)] = &[
    ("SHARDFEED_HOTSPOT__MIN_RATE_PER_S", "5"),
    ("SHARDFEED_HOTSPOT__HALF_LIFE_MS", "1000"),
    ("SHARDFEED_HOTSPOT__REFRESH_MS", "100"),
];

pub(crate) async fn start(extra: &[(&str, &str)]) -> Harness {
    Harness::builder()
        .timeline_len(100)
        .settings(QUICK)
        .settings(extra)
        .start()
        .await
}

async fn hot(h: &Harness, limit: i32) -> Result<GetHotAuthorsResponse, tonic::Status> {
    HotspotServiceClient::new(shardfeed_testkit::auth::as_admin(
        h.channel.clone(),
        &h.settings,
    ))
    .get_hot_authors(GetHotAuthorsRequest { limit })
    .await
    .map(|r| r.into_inner())
}

/// Views `author` until the aggregator lists it as hot.
pub(crate) async fn heat(h: &Harness, author: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for _ in 0..10 {
            h.page(author, 5, "").await.unwrap();
        }
        let listed = hot(h, 100).await.unwrap();
        if listed.authors.iter().any(|a| a.author_id == author) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "author {author} never became hot"
        );
    }
}

/// An author with `n` cached posts.
async fn author_with_posts(h: &mut Harness, n: usize) -> i64 {
    let author = h.user(true).await;
    h.posts(author, n, 1, true).await;
    author
}

/// Polls `author`'s first page until `done` holds; returns how long that took.
async fn until<F: Fn(&[i64]) -> bool>(h: &Harness, author: i64, done: F) -> Duration {
    let start = Instant::now();
    loop {
        let (ids, _) = h.page(author, 20, "").await.unwrap();
        if done(&ids) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the change never showed: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn detection_finds_the_planted_hot_authors() {
    let mut h = start(&[]).await;
    let mut authors = Vec::new();
    for _ in 0..12 {
        authors.push(author_with_posts(&mut h, 3).await);
    }
    let planted = [authors[2], authors[7], authors[11]];
    // A skewed stream: each planted author is read 20 times for every read of another.
    for round in 0..40 {
        for a in planted {
            h.page(a, 5, "").await.unwrap();
        }
        if round % 20 == 0 {
            for a in &authors {
                h.page(*a, 5, "").await.unwrap();
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = hot(&h, 3).await.unwrap();
    let mut found: Vec<i64> = listed.authors.iter().map(|a| a.author_id).collect();
    found.sort_unstable();
    let mut want = planted.to_vec();
    want.sort_unstable();
    assert_eq!(found, want, "{listed:?}");

    let redis =
        shardfeed_server::redis::connect_and_wait(&h.settings.redis, Duration::from_secs(10))
            .await
            .unwrap();
    let layout = CacheLayout::new(h.settings.redis.namespace.clone());
    let routing = redis.cached_cluster_state().unwrap();
    for a in &listed.authors {
        let slot = redis_keyslot(layout.timeline(a.author_id).as_bytes());
        assert_eq!(a.slot, i32::from(slot));
        let owner = routing.get_server(slot).unwrap();
        assert_eq!(a.owning_node, format!("{}:{}", owner.host, owner.port));
        assert!(a.access_rate >= 5.0, "{a:?}");
        assert!(a.mitigations.contains(&(Mitigation::NearCache as i32)));
    }
    // Shared with ingest (and every aggregator) through the cluster.
    let shared: Vec<String> = redis
        .zrange(layout.hot_set(), 0, -1, None, false, None, false)
        .await
        .unwrap();
    for a in planted {
        assert!(shared.contains(&a.to_string()), "{a} not in {shared:?}");
    }
    // Reads went to the nodes, and the counters say which.
    assert!(listed.nodes.iter().map(|n| n.requests).sum::<i64>() > 0);
}

#[tokio::test]
async fn get_hot_authors_checks_its_limit() {
    let h = start(&[]).await;
    let status = hot(&h, -1).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(hot(&h, 0).await.unwrap().authors.is_empty());
}

#[tokio::test]
async fn the_near_cache_shows_new_posts_within_the_bound_and_never_a_deleted_one_past_it() {
    let mut h = start(&[
        ("SHARDFEED_HOTSPOT__COALESCING_ENABLED", "false"),
        ("SHARDFEED_HOTSPOT__REPLICA_READS_ENABLED", "false"),
    ])
    .await;
    let author = author_with_posts(&mut h, 5).await;
    heat(&h, author).await;
    let before = hot(&h, 10).await.unwrap().near_cache.unwrap();
    for _ in 0..20 {
        h.page(author, 20, "").await.unwrap();
    }
    let after = hot(&h, 10).await.unwrap().near_cache.unwrap();
    assert!(after.hits >= before.hits + 15, "{before:?} -> {after:?}");
    assert!(after.bytes > 0 && after.bytes <= after.capacity_bytes);

    // A new post, announced as ingest announces it: shows within the bound.
    h.next_ms += 1;
    let new = h.post_at(author, h.next_ms, 0, true).await;
    let invalidations = hot(&h, 10).await.unwrap().near_cache.unwrap().invalidations;
    h.announce_post(author, new, h.next_ms).await;
    let took = until(&h, author, |ids| ids.first() == Some(&new)).await;
    // The announcement itself reached the aggregator and dropped the entry.
    let deadline = Instant::now() + Duration::from_secs(5);
    while hot(&h, 10).await.unwrap().near_cache.unwrap().invalidations == invalidations {
        assert!(Instant::now() < deadline, "the announcement never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        took <= Duration::from_secs(1),
        "new post visible after {took:?}"
    );

    // A deleted post whose announcement is lost: gone once the entry's TTL (500 ms) is past,
    // and never served again.
    h.sql
        .execute(
            "UPDATE posts SET delete_time = now() WHERE post_id = $1",
            &[&new],
        )
        .await
        .unwrap();
    h.writer
        .apply(&CacheChange::PostDeleted {
            author_id: author,
            post_id: new,
        })
        .await
        .unwrap();
    let deleted_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..30 {
        let (ids, _) = h.page(author, 20, "").await.unwrap();
        assert!(
            !ids.contains(&new),
            "a deleted post served {:?} after the delete",
            deleted_at.elapsed()
        );
    }
    assert_eq!(
        h.page(author, 20, "").await.unwrap().0,
        h.truth(author).await
    );

    // A delete that is announced: gone within the bound.
    let victim = h.truth(author).await[0];
    h.sql
        .execute(
            "UPDATE posts SET delete_time = now() WHERE post_id = $1",
            &[&victim],
        )
        .await
        .unwrap();
    let delete = CacheChange::PostDeleted {
        author_id: author,
        post_id: victim,
    };
    h.writer.apply(&delete).await.unwrap();
    h.writer.announce([&delete]).await.unwrap();
    let took = until(&h, author, |ids| !ids.contains(&victim)).await;
    assert!(
        took <= Duration::from_secs(1),
        "deleted post gone after {took:?}"
    );
    assert_eq!(
        h.page(author, 20, "").await.unwrap().0,
        h.truth(author).await
    );
}

#[tokio::test]
async fn coalescing_collapses_concurrent_reads_of_one_author() {
    let mut h = start(&[
        ("SHARDFEED_HOTSPOT__NEAR_CACHE_ENABLED", "false"),
        ("SHARDFEED_HOTSPOT__REPLICA_READS_ENABLED", "false"),
    ])
    .await;
    let author = author_with_posts(&mut h, 5).await;
    heat(&h, author).await;
    let requests = |r: &GetHotAuthorsResponse| r.nodes.iter().map(|n| n.requests).sum::<i64>();
    let before = hot(&h, 10).await.unwrap();
    let truth = h.truth(author).await;
    let pages = join_all((0..64).map(|_| h.page(author, 20, ""))).await;
    for page in pages {
        assert_eq!(page.unwrap().0, truth);
    }
    let after = hot(&h, 10).await.unwrap();
    let joined = after.coalesced_reads - before.coalesced_reads;
    let sent = requests(&after) - requests(&before);
    assert!(joined > 0, "no read joined another");
    // Each load is one request to the author's node; joined reads sent none.
    assert!(sent < 64, "{sent} requests for 64 reads");
    assert!(sent + joined >= 64, "{sent} sent + {joined} joined");
}

#[tokio::test]
async fn hot_authors_are_read_from_replicas() {
    let mut h = start(&[
        ("SHARDFEED_HOTSPOT__NEAR_CACHE_ENABLED", "false"),
        ("SHARDFEED_HOTSPOT__COALESCING_ENABLED", "false"),
    ])
    .await;
    let author = author_with_posts(&mut h, 5).await;
    heat(&h, author).await;
    let cluster = &shardfeed_testkit::shared().redis;
    let replica_reads = || -> u64 {
        cluster
            .replicas()
            .unwrap()
            .iter()
            .map(|r| cluster.command_calls(r, "zrevrangebyscore").unwrap())
            .sum()
    };
    let served_before = replica_reads();
    let before = hot(&h, 10).await.unwrap();
    let truth = h.truth(author).await;
    for _ in 0..10 {
        assert_eq!(h.page(author, 20, "").await.unwrap().0, truth);
    }
    let after = hot(&h, 10).await.unwrap();
    // The replicas themselves say they served the timeline reads.
    let served = replica_reads() - served_before;
    assert!(served >= 10, "replicas served {served} timeline reads");
    assert!(
        after.replica_reads >= before.replica_reads + 10,
        "{} -> {}",
        before.replica_reads,
        after.replica_reads
    );
    let listed = after
        .authors
        .iter()
        .find(|a| a.author_id == author)
        .unwrap();
    assert!(listed
        .mitigations
        .contains(&(Mitigation::ReplicaReads as i32)));
}

#[tokio::test]
async fn hot_authors_are_read_from_their_copies_on_the_other_masters() {
    let mut h = start(&[
        ("SHARDFEED_HOTSPOT__NEAR_CACHE_ENABLED", "false"),
        ("SHARDFEED_HOTSPOT__COALESCING_ENABLED", "false"),
        ("SHARDFEED_HOTSPOT__REPLICA_READS_ENABLED", "false"),
    ])
    .await;
    let author = author_with_posts(&mut h, 5).await;
    heat(&h, author).await;
    // Ingest's part (shardfeed_ingest::hot_copies): copies of the now shared hot author.
    let copies = h.writer.start_mirroring(author).await.unwrap();
    assert_eq!(copies.len(), 2, "one copy on each other master");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = hot(&h, 10).await.unwrap();
        let replicated = listed.authors.iter().any(|a| {
            a.author_id == author && a.mitigations.contains(&(Mitigation::KeyReplicas as i32))
        });
        if replicated {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never read from copies: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let before = hot(&h, 10).await.unwrap().copy_reads;
    // A write after mirroring started reaches every copy: each read, whichever copy it takes,
    // sees it.
    h.next_ms += 1;
    let new = h.post_at(author, h.next_ms, 0, true).await;
    let truth = h.truth(author).await;
    assert_eq!(truth[0], new);
    for _ in 0..12 {
        assert_eq!(h.page(author, 20, "").await.unwrap().0, truth);
    }
    let read = hot(&h, 10).await.unwrap().copy_reads - before;
    assert!(read >= 6, "{read} of 12 reads went to copies");

    // Copies gone (the author cooled down at ingest): reads fall back to the original.
    h.writer.stop_mirroring(author).await.unwrap();
    for _ in 0..6 {
        assert_eq!(h.page(author, 20, "").await.unwrap().0, truth);
    }
}

#[tokio::test]
async fn a_uniform_load_over_more_authors_than_tracked_makes_none_hot() {
    // Two counters for two hundred authors: every tracked estimate is inflated by the counts it
    // inherited, to about half of all reads, a hundred times an author's true rate; only what is
    // certain may make an author hot. The threshold sits between the two for any machine that
    // reads between 40 and 2,000 timelines a second.
    let mut h = start(&[
        ("SHARDFEED_HOTSPOT__TOP_K_CAPACITY", "2"),
        ("SHARDFEED_HOTSPOT__MIN_RATE_PER_S", "10"),
    ])
    .await;
    let mut authors = Vec::new();
    for _ in 0..200 {
        authors.push(author_with_posts(&mut h, 1).await);
    }
    let start = Instant::now();
    let mut reads = 0;
    while start.elapsed() < Duration::from_millis(2000) {
        for a in &authors {
            h.page(*a, 5, "").await.unwrap();
            reads += 1;
        }
    }
    let total = reads as f64 / start.elapsed().as_secs_f64();
    let per_author = total / authors.len() as f64;
    assert!(
        per_author < 10.0,
        "each author was read {per_author:.1} times a second"
    );
    assert!(
        total > 40.0,
        "{total:.0} reads a second: too few to inflate the estimates"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listed = hot(&h, 100).await.unwrap();
    assert!(listed.authors.is_empty(), "{:?}", listed.authors);
}

/// A coalesced load every reader gave up on (its node stopped answering for longer than
/// `node_timeout`) is never joined later: once the node is back, a read shows what was posted
/// meanwhile instead of the stale answer the abandoned load would get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_every_reader_gave_up_on_is_never_served_later() {
    let cluster = shardfeed_testkit::RedisCluster::start_async()
        .await
        .unwrap();
    let settings: Vec<(&str, &str)> = QUICK
        .iter()
        .copied()
        .chain([
            ("SHARDFEED_HOTSPOT__NEAR_CACHE_ENABLED", "false"),
            ("SHARDFEED_HOTSPOT__REPLICA_READS_ENABLED", "false"),
            ("SHARDFEED_HOTSPOT__KEY_REPLICAS_ENABLED", "false"),
            // Still hot after a few idle seconds.
            ("SHARDFEED_HOTSPOT__HALF_LIFE_MS", "30000"),
        ])
        .collect();
    let mut h = Harness::builder()
        .timeline_len(100)
        .redis(&cluster)
        .settings(&settings)
        .start()
        .await;
    let author = author_with_posts(&mut h, 3).await;
    heat(&h, author).await;
    let routing = h.writer.client().cached_cluster_state().unwrap();
    let slot = redis_keyslot(h.writer.layout().meta(author).as_bytes());
    let owner = routing.get_server(slot).unwrap();
    let master = format!("{}:{}", owner.host, owner.port);

    cluster.pause_node(&master).unwrap();
    // Every reader gives up on the node (the page comes from PostgreSQL); the load stays behind.
    assert_eq!(
        h.page(author, 20, "").await.unwrap().0,
        h.truth(author).await
    );
    h.next_ms += 1;
    let new = h.post_at(author, h.next_ms, 99, false).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Nobody is reading when the node comes back: the abandoned load's read runs then, before
    // the post reaches the cache, and its answer waits for whoever polls the load next.
    cluster.resume_node(&master).unwrap();
    // The post reaches the cache and is announced, as ingest does once the node answers.
    h.writer
        .apply(&CacheChange::PostCreated {
            author_id: author,
            post_id: new,
            time_ms: h.next_ms,
            body: "post 99".into(),
        })
        .await
        .unwrap();
    h.announce_post(author, new, h.next_ms).await;
    // Past the near-cache bound (500 ms): no read may be older than that.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (ids, _) = h.page(author, 20, "").await.unwrap();
    assert_eq!(
        ids,
        h.truth(author).await,
        "a read after the node came back"
    );
    assert_eq!(ids[0], new);
}
