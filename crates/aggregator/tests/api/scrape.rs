//! `/metrics` of both services, scraped while a load runs and read with a real exposition
//! parser: every family of `docs/operations.md` is there with its type, and the figures move
//! with the calls — RPCs by method and code, per-node Redis round trips, cache lookups, pages
//! answered, rate-limit refusals, the outbox.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use shardfeed_proto::v1::{
    feed_service_client::FeedServiceClient, graph_service_client::GraphServiceClient,
    post_service_client::PostServiceClient, user_service_client::UserServiceClient, *,
};
use shardfeed_testkit::{scrape, Exposition, Format};
use tonic::Code;

use crate::harness::Harness;

async fn scraped(addr: SocketAddr) -> Exposition {
    scrape(addr, Format::OpenMetrics)
        .await
        .unwrap_or_else(|e| panic!("scraping {addr}: {e:#}"))
}

/// Every family `docs/operations.md` lists for a service, with its type.
fn assert_families(scrape: &Exposition, families: &[(&str, &str)]) {
    for (name, kind) in families {
        assert_eq!(
            scrape.kind(name),
            Some(*kind),
            "{name} missing or of another type in:\n{}",
            scrape.text
        );
    }
}

const BOTH: &[(&str, &str)] = &[
    ("shardfeed_rpc_duration_seconds", "histogram"),
    ("shardfeed_redis_node_duration_seconds", "histogram"),
    ("shardfeed_redis_node_commands", "counter"),
    ("shardfeed_build_info", "gauge"),
];
const AGGREGATOR: &[(&str, &str)] = &[
    ("shardfeed_cache_lookups", "counter"),
    ("shardfeed_postgres_fallbacks", "counter"),
    ("shardfeed_feeds", "counter"),
    ("shardfeed_feeds_degraded", "counter"),
    ("shardfeed_hot_authors", "gauge"),
    ("shardfeed_hot_mitigations", "counter"),
    ("shardfeed_near_cache_lookups", "counter"),
    ("shardfeed_near_cache_bytes", "gauge"),
    ("shardfeed_rate_limited", "counter"),
];
const INGEST: &[(&str, &str)] = &[
    ("shardfeed_outbox_depth", "gauge"),
    ("shardfeed_outbox_oldest_age_seconds", "gauge"),
    ("shardfeed_outbox_dead_letters", "gauge"),
    ("shardfeed_outbox_relayed", "counter"),
    ("shardfeed_outbox_dead_lettered", "counter"),
    ("shardfeed_outbox_relay_batch_duration_seconds", "histogram"),
];

fn home_feeds_ok(scrape: &Exposition) -> f64 {
    scrape.sum(
        "shardfeed_rpc_duration_seconds",
        &[("grpc_method", "GetHomeFeed"), ("grpc_code", "OK")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_serve_their_figures_while_under_load() {
    // A user may read 3 pages at once and 1 more a second: the test exceeds it on purpose.
    let h = Harness::builder()
        .settings(&[
            ("SHARDFEED_LIMITS__USER_READS__BURST", "3"),
            ("SHARDFEED_LIMITS__USER_READS__PER_SECOND", "1"),
        ])
        .start()
        .await;
    let (ingest, ingest_metrics) = h.start_ingest_scraped(|_| {}).await;
    let service = shardfeed_testkit::auth::as_service(ingest.channel.clone(), &h.settings);
    let admin = shardfeed_testkit::auth::as_admin(ingest.channel.clone(), &h.settings);

    // A reader who follows three authors with posts, made through ingest.
    let mut users = UserServiceClient::new(admin);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let user = users
            .create_user(CreateUserRequest {
                handle: format!("m_{:08x}", rand::random::<u32>()),
                display_name: "Scraped".into(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        ids.push(user.user_id);
    }
    let (reader, authors) = (ids[0], ids[1..].to_vec());
    let mut graph = GraphServiceClient::new(service.clone());
    let mut posts = PostServiceClient::new(service.clone());
    for author in &authors {
        graph
            .follow(FollowRequest {
                follower_id: reader,
                followee_id: *author,
            })
            .await
            .unwrap();
        for n in 0..3 {
            posts
                .create_post(CreatePostRequest {
                    author_id: *author,
                    body: format!("post {n}"),
                    request_id: String::new(),
                })
                .await
                .unwrap();
        }
    }

    let before_aggregator = scraped(h.metrics_addr).await;
    let before_ingest = scraped(ingest_metrics).await;
    // A labelled family shows once it has a series: the aggregator's after its load.
    assert_families(&before_ingest, BOTH);
    assert_families(&before_ingest, INGEST);
    assert!(
        before_ingest.sum(
            "shardfeed_rpc_duration_seconds",
            &[("grpc_method", "CreatePost"), ("grpc_code", "OK")]
        ) >= 9.0,
        "{}",
        before_ingest.text
    );
    assert_eq!(
        before_aggregator.sum("shardfeed_build_info", &[]),
        1.0,
        "one build"
    );

    // The load: home feeds as a service, posts, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let feeds_done = Arc::new(AtomicU64::new(0));
    let load = {
        let mut feeds = h.feeds.clone();
        let mut posts = posts.clone();
        let (stop, feeds_done, author) = (stop.clone(), feeds_done.clone(), authors[0]);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                feeds
                    .get_home_feed(GetHomeFeedRequest {
                        user_id: reader,
                        page_size: 5,
                        page_token: String::new(),
                    })
                    .await
                    .unwrap();
                feeds_done.fetch_add(1, Ordering::Relaxed);
                if feeds_done.load(Ordering::Relaxed) % 5 == 0 {
                    posts
                        .create_post(CreatePostRequest {
                            author_id: author,
                            body: "under load".into(),
                            request_id: String::new(),
                        })
                        .await
                        .unwrap();
                }
            }
        })
    };
    // Scraped during the load until the figures have moved by at least 20 pages.
    let start = home_feeds_ok(&before_aggregator);
    let mut during = None;
    for _ in 0..200 {
        let now = scraped(h.metrics_addr).await;
        if home_feeds_ok(&now) >= start + 20.0 {
            during = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during_ingest = scraped(ingest_metrics).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let during = during.expect("the home-feed figures moved within 10 s of load");
    assert!(
        !stop.load(Ordering::Relaxed) || feeds_done.load(Ordering::Relaxed) > 0,
        "the load ran"
    );

    // No token, and a user over their quota: both counted.
    let mut anonymous = FeedServiceClient::new(h.channel.clone());
    let refused = anonymous
        .get_home_feed(GetHomeFeedRequest {
            user_id: reader,
            page_size: 5,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut as_reader = FeedServiceClient::new(shardfeed_testkit::auth::as_user(
        h.channel.clone(),
        &h.settings,
        reader,
    ));
    let mut exhausted = 0;
    for _ in 0..6 {
        let answer = as_reader
            .get_home_feed(GetHomeFeedRequest {
                user_id: reader,
                page_size: 5,
                page_token: String::new(),
            })
            .await;
        if answer.is_err_and(|s| s.code() == Code::ResourceExhausted) {
            exhausted += 1;
        }
    }
    assert!(
        exhausted >= 2,
        "6 reads against a burst of 3: {exhausted} refused"
    );

    let after = scrape(h.metrics_addr, Format::OpenMetrics).await.unwrap();
    let after_text = scrape(h.metrics_addr, Format::PrometheusText)
        .await
        .unwrap();
    assert!(
        after.text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    assert_families(&after, BOTH);
    assert_families(&after, AGGREGATOR);
    let mut names: Vec<_> = after.families.keys().collect();
    let mut text_names: Vec<_> = after_text.families.keys().collect();
    names.sort();
    text_names.sort();
    assert_eq!(names, text_names, "both formats expose the same families");

    // RPCs: by method and code.
    let ok = home_feeds_ok(&after);
    assert!(ok >= start + 20.0, "{start} → {ok}");
    assert!(
        after.sum(
            "shardfeed_rpc_duration_seconds",
            &[
                ("grpc_method", "GetHomeFeed"),
                ("grpc_code", "UNAUTHENTICATED")
            ]
        ) >= 1.0
    );
    assert_eq!(
        after.sum(
            "shardfeed_rpc_duration_seconds",
            &[
                ("grpc_method", "GetHomeFeed"),
                ("grpc_code", "RESOURCE_EXHAUSTED")
            ]
        ),
        exhausted as f64
    );
    assert_eq!(
        after.sum("shardfeed_rate_limited", &[("class", "user_reads")]),
        exhausted as f64
    );
    // Pages, cache lookups and per-node round trips moved with the load.
    let moved = |family: &str, labels: &[(&str, &str)]| {
        after.sum(family, labels) - before_aggregator.sum(family, labels)
    };
    assert!(moved("shardfeed_feeds", &[]) >= 20.0);
    assert_eq!(
        after.sum("shardfeed_feeds_degraded", &[]),
        0.0,
        "the stores all answered"
    );
    assert!(
        moved("shardfeed_cache_lookups", &[]) >= 20.0,
        "{}",
        after.text
    );
    let nodes: Vec<&str> = after
        .samples("shardfeed_redis_node_duration_seconds", &[])
        .filter(|s| s.value > 0.0)
        .filter_map(|s| s.labels.get("node").map(String::as_str))
        .collect();
    assert!(
        nodes.iter().any(|n| n.starts_with("127.0.0.1:")),
        "round trips by node: {nodes:?}"
    );
    assert!(moved("shardfeed_redis_node_commands", &[]) >= 20.0);
    assert_eq!(
        after.samples("shardfeed_hot_mitigations", &[]).count(),
        4,
        "one series per mitigation"
    );
    // The scrape in the middle saw a part of it.
    assert!(home_feeds_ok(&during) > start);
    assert!(home_feeds_ok(&during) <= ok);

    // Ingest: the posts under load, its writes to the nodes, the outbox.
    let ingest_after = scraped(ingest_metrics).await;
    let posts_ok = |s: &Exposition| {
        s.sum(
            "shardfeed_rpc_duration_seconds",
            &[("grpc_method", "CreatePost"), ("grpc_code", "OK")],
        )
    };
    assert!(posts_ok(&during_ingest) >= posts_ok(&before_ingest));
    assert!(posts_ok(&ingest_after) > posts_ok(&before_ingest));
    assert!(
        ingest_after.sum("shardfeed_redis_node_commands", &[])
            > before_ingest.sum("shardfeed_redis_node_commands", &[]),
        "{}",
        ingest_after.text
    );
    assert!(ingest_after.sum("shardfeed_outbox_depth", &[]) >= 0.0);
    assert_eq!(ingest_after.sum("shardfeed_outbox_dead_letters", &[]), 0.0);
}
