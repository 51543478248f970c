//! The aggregator under test: [`Harness`] runs the real server in-process on port 0 against
//! the shared stores (or a test's own), with a fresh database and key namespace, and writes the
//! SQL truth and the cache as ingest would; [`Harness::builder`] sets everything else.

use std::time::Duration;

use shardfeed_aggregator::Application;
use shardfeed_cache::{CacheChange, CacheLayout, CacheWriter};
use shardfeed_proto::auth::AuthChannel;
use shardfeed_proto::v1::{feed_service_client::FeedServiceClient, GetUserTimelineRequest};
use shardfeed_server::Settings;
use shardfeed_testkit::{InProcessServer, ServingStatus, TestDb};
use tonic::transport::Channel;

/// The post id epoch of migrations/V2.
const EPOCH_MS: i64 = 1_577_836_800_000;

pub(crate) struct Harness {
    pub(crate) db: TestDb,
    pub(crate) settings: Settings,
    pub(crate) sql: tokio_postgres::Client,
    pub(crate) writer: CacheWriter,
    /// Acts as a service (for any user).
    pub(crate) feeds: FeedServiceClient<AuthChannel>,
    pub(crate) channel: Channel,
    pub(crate) next_ms: i64,
    /// Where the aggregator's `/metrics` answers.
    pub(crate) metrics_addr: std::net::SocketAddr,
    _server: InProcessServer,
}

impl Harness {
    /// An aggregator on a fresh database and namespace of the shared stores; cached timelines
    /// hold `timeline_len`.
    pub(crate) async fn start(timeline_len: usize) -> Harness {
        Harness::builder().timeline_len(timeline_len).start().await
    }

    /// For anything else than [`Harness::start`]: another PostgreSQL or Redis Cluster for the
    /// aggregator, more settings.
    pub(crate) fn builder() -> HarnessBuilder {
        HarnessBuilder {
            timeline_len: 800,
            aggregator_pg: None,
            redis: None,
            settings: Vec::new(),
        }
    }

    /// Stops the aggregator and starts a fresh one on the same stores, database and namespace:
    /// nothing it kept in memory survives.
    pub(crate) async fn restart_aggregator(&mut self) {
        let app = Application::build(self.settings.clone()).await.unwrap();
        self.metrics_addr = app.metrics_addr();
        let server = InProcessServer::start(app.local_addr(), |s| app.run_until_stopped(s))
            .await
            .unwrap();
        self.feeds = FeedServiceClient::new(shardfeed_testkit::auth::as_service(
            server.channel.clone(),
            &self.settings,
        ));
        self.channel = server.channel.clone();
        self._server = server;
    }

    /// PostgreSQL settings pointing at the test's database.
    /// A real ingest service of this test (its database and key namespace), in-process on
    /// port 0, with the harness's settings as `tweak` changes them.
    pub(crate) async fn start_ingest(&self, tweak: impl FnOnce(&mut Settings)) -> InProcessServer {
        self.start_ingest_scraped(tweak).await.0
    }

    /// [`Self::start_ingest`], and where its `/metrics` answers.
    pub(crate) async fn start_ingest_scraped(
        &self,
        tweak: impl FnOnce(&mut Settings),
    ) -> (InProcessServer, std::net::SocketAddr) {
        let mut settings = self.settings.clone();
        settings.ingest.listen_addr = "127.0.0.1:0".parse().unwrap();
        settings.ingest.metrics_addr = "127.0.0.1:0".parse().unwrap();
        settings.ingest.run_migrations = false;
        tweak(&mut settings);
        let app = shardfeed_ingest::Application::build(settings)
            .await
            .unwrap();
        let metrics_addr = app.metrics_addr();
        let server = InProcessServer::start(app.local_addr(), |s| app.run_until_stopped(s))
            .await
            .unwrap();
        (server, metrics_addr)
    }

    pub(crate) fn pg_settings(&self) -> shardfeed_server::config::PostgresSettings {
        let mut pg = self.settings.postgres.clone();
        pg.url = self.db.url().to_string().into();
        pg
    }

    /// Waits until the health of FeedService is `want`.
    pub(crate) async fn wait_for_health(&self, want: ServingStatus) {
        shardfeed_testkit::wait_for_health(
            &self.channel,
            "shardfeed.v1.FeedService",
            want,
            Duration::from_secs(15),
        )
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
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
    // No server there: the password is never checked.
    format!("postgres://shardfeed:unchecked@127.0.0.1:{port}/x")
}

pub(crate) fn flat(pages: &[Vec<i64>]) -> Vec<i64> {
    pages.iter().flatten().copied().collect()
}

/// How [`Harness::builder`] starts the aggregator.
pub(crate) struct HarnessBuilder {
    timeline_len: usize,
    aggregator_pg: Option<String>,
    /// The settings of a test's own cluster (nodes and credentials).
    redis: Option<Vec<(String, String)>>,
    settings: Vec<(String, String)>,
}

impl HarnessBuilder {
    /// Posts per cached timeline (`cache.timeline_len`, 800 unless set).
    pub(crate) fn timeline_len(mut self, len: usize) -> Self {
        self.timeline_len = len;
        self
    }

    /// Points the aggregator at another PostgreSQL than the test's database (which the harness
    /// itself still writes to), e.g. [`unreachable_postgres`].
    pub(crate) fn aggregator_pg(mut self, url: String) -> Self {
        self.aggregator_pg = Some(url);
        self
    }

    /// `cluster` (a test's own, to break) instead of the shared one.
    pub(crate) fn redis(mut self, cluster: &shardfeed_testkit::RedisCluster) -> Self {
        self.redis = Some(cluster.settings_env());
        self
    }

    /// A setting (`SHARDFEED_*` variable) on top of the harness's.
    pub(crate) fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Settings on top, in order (a later one wins).
    pub(crate) fn settings(self, settings: &[(&str, &str)]) -> Self {
        settings
            .iter()
            .fold(self, |builder, (name, value)| builder.setting(name, value))
    }

    pub(crate) async fn start(self) -> Harness {
        let db = TestDb::new().await.unwrap();
        let redis = self
            .redis
            .unwrap_or_else(|| shardfeed_testkit::shared().redis.settings_env());
        let env = [
            (
                shardfeed_testkit::auth::DEV_MODE.0,
                shardfeed_testkit::auth::DEV_MODE.1.to_string(),
            ),
            (
                "SHARDFEED_POSTGRES__URL",
                self.aggregator_pg.unwrap_or_else(|| db.url().to_string()),
            ),
            ("SHARDFEED_REDIS__COMMAND_TIMEOUT_MS", "500".to_string()),
            (
                "SHARDFEED_REDIS__NAMESPACE",
                shardfeed_testkit::unique_namespace(),
            ),
            (
                "SHARDFEED_AGGREGATOR__LISTEN_ADDR",
                "127.0.0.1:0".to_string(),
            ),
            (
                "SHARDFEED_AGGREGATOR__METRICS_ADDR",
                "127.0.0.1:0".to_string(),
            ),
            (
                "SHARDFEED_CACHE__TIMELINE_LEN",
                self.timeline_len.to_string(),
            ),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into_iter()
        .chain(redis)
        .chain(self.settings);
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
        let metrics_addr = app.metrics_addr();
        let server = InProcessServer::start(app.local_addr(), |s| app.run_until_stopped(s))
            .await
            .unwrap();
        let sql = db.connect().await.unwrap();
        let feeds = FeedServiceClient::new(shardfeed_testkit::auth::as_service(
            server.channel.clone(),
            &kept,
        ));
        Harness {
            db,
            settings: kept,
            sql,
            writer,
            feeds,
            channel: server.channel.clone(),
            next_ms: 1_790_000_000_000,
            metrics_addr,
            _server: server,
        }
    }
}
