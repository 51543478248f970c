//! GetUserTimeline against the SQL ground truth: cached authors, authors whose older posts live
//! only in PostgreSQL, authors never cached, and every bad argument and token.

use shardfeed_aggregator::Application;
use shardfeed_cache::{CacheChange, CacheLayout, CacheWriter};
use shardfeed_proto::v1::{feed_service_client::FeedServiceClient, GetUserTimelineRequest};
use shardfeed_server::Settings;
use shardfeed_testkit::{InProcessServer, TestDb};
use tonic::{transport::Channel, Code};
use tonic_types::StatusExt;

/// The post id epoch of migrations/V2.
const EPOCH_MS: i64 = 1_577_836_800_000;

pub(crate) struct Harness {
    pub(crate) db: TestDb,
    pub(crate) settings: Settings,
    pub(crate) sql: tokio_postgres::Client,
    pub(crate) writer: CacheWriter,
    pub(crate) feeds: FeedServiceClient<Channel>,
    pub(crate) channel: Channel,
    pub(crate) next_ms: i64,
    _server: InProcessServer,
}

impl Harness {
    /// An aggregator on a fresh database and namespace; cached timelines hold `timeline_len`.
    pub(crate) async fn start(timeline_len: usize) -> Harness {
        Self::start_with(timeline_len, None).await
    }

    /// Like `start`, with the aggregator pointed at `aggregator_pg` instead of the test's
    /// database (the harness itself still writes to the database).
    pub(crate) async fn start_with(timeline_len: usize, aggregator_pg: Option<String>) -> Harness {
        let nodes = shardfeed_testkit::shared().redis.seed_nodes();
        Self::start_on(timeline_len, aggregator_pg, &nodes).await
    }

    /// Like `start_with`, on the Redis Cluster of `redis_nodes` (a test's own, to break).
    pub(crate) async fn start_on(
        timeline_len: usize,
        aggregator_pg: Option<String>,
        redis_nodes: &[String],
    ) -> Harness {
        Self::start_configured(timeline_len, aggregator_pg, redis_nodes, &[]).await
    }

    /// Like `start_on`, with `extra` settings (`SHARDFEED_*` variables) on top.
    pub(crate) async fn start_configured(
        timeline_len: usize,
        aggregator_pg: Option<String>,
        redis_nodes: &[String],
        extra: &[(&str, &str)],
    ) -> Harness {
        let db = TestDb::new().await.unwrap();
        let env = [
            (
                "SHARDFEED_POSTGRES__URL",
                aggregator_pg.unwrap_or_else(|| db.url().to_string()),
            ),
            ("SHARDFEED_REDIS__NODES", redis_nodes.join(",")),
            ("SHARDFEED_REDIS__COMMAND_TIMEOUT_MS", "500".to_string()),
            (
                "SHARDFEED_REDIS__NAMESPACE",
                shardfeed_testkit::unique_namespace(),
            ),
            (
                "SHARDFEED_AGGREGATOR__LISTEN_ADDR",
                "127.0.0.1:0".to_string(),
            ),
            ("SHARDFEED_CACHE__TIMELINE_LEN", timeline_len.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = Settings::load_from(None, env).unwrap();
        let kept = settings.clone();
        let redis = shardfeed_server::redis::connect_and_wait(
            &settings.redis,
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
        let writer = CacheWriter::new(
            redis,
            CacheLayout::new(settings.redis.namespace.clone()),
            &settings.cache,
        );
        let app = Application::build(settings).await.unwrap();
        let server = InProcessServer::start(app.local_addr(), |s| app.run_until_stopped(s))
            .await
            .unwrap();
        let (sql, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        Harness {
            db,
            settings: kept,
            sql,
            writer,
            feeds: FeedServiceClient::new(server.channel.clone()),
            channel: server.channel.clone(),
            next_ms: 1_790_000_000_000,
            _server: server,
        }
    }

    /// Stops the aggregator and starts a fresh one on the same stores, database and namespace:
    /// nothing it kept in memory survives.
    pub(crate) async fn restart_aggregator(&mut self) {
        let app = Application::build(self.settings.clone()).await.unwrap();
        let server = InProcessServer::start(app.local_addr(), |s| app.run_until_stopped(s))
            .await
            .unwrap();
        self.feeds = FeedServiceClient::new(server.channel.clone());
        self.channel = server.channel.clone();
        self._server = server;
    }

    /// PostgreSQL settings pointing at the test's database.
    pub(crate) fn pg_settings(&self) -> shardfeed_server::config::PostgresSettings {
        let mut pg = self.settings.postgres.clone();
        pg.url = self.db.url().to_string().into();
        pg
    }

    /// A user in PostgreSQL; with `cached`, also initialised in the cache as ingest would.
    pub(crate) async fn user(&self, cached: bool) -> i64 {
        let handle = format!("u_{:08x}", rand::random::<u32>());
        let id: i64 = self
            .sql
            .query_one(
                "INSERT INTO users (handle, display_name) VALUES ($1, 'T') RETURNING user_id",
                &[&handle],
            )
            .await
            .unwrap()
            .get(0);
        if cached {
            self.writer
                .apply(&CacheChange::UserCreated { user_id: id })
                .await
                .unwrap();
        }
        id
    }

    /// `n` posts of `author`, `per_ms` of them in each millisecond, written to PostgreSQL and
    /// (with `cached`) applied to the cache as ingest would. Returns their ids.
    pub(crate) async fn posts(
        &mut self,
        author: i64,
        n: usize,
        per_ms: usize,
        cached: bool,
    ) -> Vec<i64> {
        let mut ids = Vec::new();
        for i in 0..n {
            if i % per_ms == 0 {
                self.next_ms += 1;
            }
            ids.push(self.post_at(author, self.next_ms, i as i64, cached).await);
        }
        ids
    }

    /// One post of `author` at `time_ms` (`seq` tells apart posts of one millisecond), in
    /// PostgreSQL and (with `cached`) in the cache, as ingest would write it.
    pub(crate) async fn post_at(&self, author: i64, time_ms: i64, seq: i64, cached: bool) -> i64 {
        let post_id = ((time_ms - EPOCH_MS) << 22) | (seq % 4_194_304);
        let body = format!("post {seq} of {author}");
        self.sql
            .execute(
                "INSERT INTO posts (author_id, post_id, body, create_time)
                 VALUES ($1, $2, $3, to_timestamp($4::float8 / 1000))",
                &[&author, &post_id, &body, &(time_ms as f64)],
            )
            .await
            .unwrap();
        if cached {
            self.writer
                .apply(&CacheChange::PostCreated {
                    author_id: author,
                    post_id,
                    time_ms,
                    body,
                })
                .await
                .unwrap();
        }
        post_id
    }

    /// Announces post `post_id` of `author` (at `time_ms`) as ingest does once it is in the
    /// cache: the aggregator drops what it remembers of the author.
    pub(crate) async fn announce_post(&self, author: i64, post_id: i64, time_ms: i64) {
        let change = CacheChange::PostCreated {
            author_id: author,
            post_id,
            time_ms,
            body: String::new(),
        };
        self.writer.announce([&change]).await.unwrap();
    }

    /// The SQL ground truth: live posts, newest first, ties by id descending.
    pub(crate) async fn truth(&self, author: i64) -> Vec<i64> {
        self.sql
            .query(
                "SELECT post_id FROM posts WHERE author_id = $1 AND delete_time IS NULL
                 ORDER BY create_time DESC, post_id DESC",
                &[&author],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    pub(crate) async fn page(
        &self,
        user_id: i64,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<i64>, String), tonic::Status> {
        let r = self
            .feeds
            .clone()
            .get_user_timeline(GetUserTimelineRequest {
                user_id,
                page_size,
                page_token: page_token.to_string(),
            })
            .await?
            .into_inner();
        for post in &r.posts {
            assert_eq!(post.author_id, user_id);
            assert!(post.body.starts_with("post "), "{post:?}");
        }
        Ok((
            r.posts.iter().map(|p| p.post_id).collect(),
            r.next_page_token,
        ))
    }

    /// Every page, in order.
    pub(crate) async fn walk(&self, user_id: i64, page_size: i32) -> Vec<Vec<i64>> {
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let (ids, next) = self.page(user_id, page_size, &token).await.unwrap();
            pages.push(ids);
            if next.is_empty() {
                return pages;
            }
            assert!(pages.len() < 1000, "paging does not end");
            token = next;
        }
    }
}

/// A PostgreSQL URL nothing answers at (a free port), for an aggregator that must do without.
pub(crate) fn unreachable_postgres() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("postgres://shardfeed@127.0.0.1:{port}/x")
}

pub(crate) fn flat(pages: &[Vec<i64>]) -> Vec<i64> {
    pages.iter().flatten().copied().collect()
}

#[tokio::test]
async fn a_cached_timeline_pages_like_the_sql_truth() {
    let mut h = Harness::start(800).await;
    let author = h.user(true).await;
    // Three posts per millisecond: ties are broken by post id.
    h.posts(author, 7, 3, true).await;
    let pages = h.walk(author, 3).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    assert_eq!(flat(&pages), h.truth(author).await);
    // page_size 0 means 20: everything in one page, no token.
    assert_eq!(
        h.page(author, 0, "").await.unwrap(),
        (h.truth(author).await, String::new())
    );
}

#[tokio::test]
async fn pages_past_the_cached_window_come_from_postgres() {
    let mut h = Harness::start(5).await;
    let author = h.user(true).await;
    h.posts(author, 12, 2, true).await;
    for size in [1, 3, 4, 5, 7] {
        assert_eq!(
            flat(&h.walk(author, size).await),
            h.truth(author).await,
            "page size {size}"
        );
    }
}

#[tokio::test]
async fn an_author_the_cache_never_saw_is_read_from_postgres() {
    let mut h = Harness::start(800).await;
    let author = h.user(false).await;
    h.posts(author, 9, 1, false).await;
    assert_eq!(flat(&h.walk(author, 4).await), h.truth(author).await);
    let empty = h.user(false).await;
    assert_eq!(
        h.page(empty, 10, "").await.unwrap(),
        (vec![], String::new())
    );
}

#[tokio::test]
async fn page_size_is_clamped_to_100() {
    let mut h = Harness::start(800).await;
    let author = h.user(true).await;
    h.posts(author, 105, 1, true).await;
    let (first, token) = h.page(author, 1000, "").await.unwrap();
    assert_eq!(first.len(), 100);
    let (rest, last) = h.page(author, 1000, &token).await.unwrap();
    assert_eq!((rest.len(), last.as_str()), (5, ""));
}

#[tokio::test]
async fn unknown_and_deleted_users_are_not_found() {
    let h = Harness::start(800).await;
    let s = h.page(987_654_321, 10, "").await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let gone = h.user(true).await;
    h.writer
        .apply(&CacheChange::UserDeleted { user_id: gone })
        .await
        .unwrap();
    let s = h.page(gone, 10, "").await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    drop(h.db);
}

pub(crate) fn assert_violation(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations;
    assert!(
        violations.iter().any(|v| v.field == field),
        "{violations:?}"
    );
}

#[tokio::test]
async fn bad_arguments_and_tokens_are_invalid_argument() {
    let mut h = Harness::start(800).await;
    let a = h.user(true).await;
    let b = h.user(true).await;
    h.posts(a, 5, 1, true).await;
    h.posts(b, 5, 1, true).await;
    assert_violation(&h.page(0, 10, "").await.unwrap_err(), "user_id");
    assert_violation(&h.page(-4, 10, "").await.unwrap_err(), "user_id");
    assert_violation(&h.page(a, -1, "").await.unwrap_err(), "page_size");

    let (_, token) = h.page(a, 2, "").await.unwrap();
    assert!(!token.is_empty());
    let mut tampered = token.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (what, user, bad) in [
        ("garbled", a, "%%%"),
        ("truncated", a, &token[..token.len() / 2]),
        ("tampered", a, tampered.as_str()),
        ("another user's", b, token.as_str()),
    ] {
        let s = h.page(user, 2, bad).await.unwrap_err();
        assert_violation(&s, "page_token");
        assert!(!s.message().is_empty(), "{what}");
    }
}

#[tokio::test]
async fn a_cached_timeline_is_served_without_postgres() {
    // The aggregator's PostgreSQL is a port nothing listens on: only the cache can answer.
    let mut h = Harness::start_with(800, Some(unreachable_postgres())).await;
    let author = h.user(true).await;
    h.posts(author, 6, 2, true).await;
    assert_eq!(flat(&h.walk(author, 4).await), h.truth(author).await);
    // An author the cache does not hold needs PostgreSQL: UNAVAILABLE, not an empty page.
    let uncached = h.user(false).await;
    let s = h.page(uncached, 4, "").await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
}
