//! Spawning the real ingest server for a test, and typed helpers around its clients.

use std::time::Duration;

use shardfeed_cache::CacheLayout;
use shardfeed_ingest::Application;
use shardfeed_proto::auth::AuthChannel;
use shardfeed_proto::v1::{
    graph_service_client::GraphServiceClient, post_service_client::PostServiceClient,
    user_service_client::UserServiceClient, CreatePostRequest, CreateUserRequest, FollowRequest,
    Post, User,
};
use shardfeed_server::Settings;
use shardfeed_testkit::{InProcessServer, PgServer, ServingStatus, TestDb};
use tonic::transport::{Channel, ClientTlsConfig};

pub struct TestApp {
    pub db: TestDb,
    /// Without credentials: health, reflection, and calls that must be refused.
    pub channel: Channel,
    /// The clients act as a service (for any user); `as_user` makes clients of one user.
    pub users: UserServiceClient<AuthChannel>,
    pub graph: GraphServiceClient<AuthChannel>,
    pub posts: PostServiceClient<AuthChannel>,
    /// Where this test's keys live in the shared cluster.
    pub layout: CacheLayout,
    /// A client of the cluster the server writes to, for looking at the cache.
    pub redis: fred::clients::Client,
    pub cache_settings: shardfeed_server::config::CacheSettings,
    /// What the server was started with, for starting replicas of it.
    pub settings: Settings,
    /// Stops the server when the test drops the app.
    server: InProcessServer,
}

/// A server whose cache is warmed by the fast path alone (no relay), with budgets no loaded
/// machine exceeds: a warm cache after a write then proves the fast path delivered it.
pub const FAST_PATH_ONLY: &[(&str, &str)] = &[
    ("SHARDFEED_OUTBOX__RELAY_ENABLED", "false"),
    ("SHARDFEED_OUTBOX__FAST_PATH_BUDGET_MS", "10000"),
    ("SHARDFEED_CACHE__REPLICA_ACK_TIMEOUT_MS", "5000"),
];

/// Settings for a test: its own database, port 0, quick readiness probes.
pub fn settings(db: &TestDb, extra: &[(&str, &str)]) -> Settings {
    let stores = shardfeed_testkit::shared();
    let mut env = stores.redis.settings_env();
    env.extend([
        (
            shardfeed_testkit::auth::DEV_MODE.0.to_string(),
            shardfeed_testkit::auth::DEV_MODE.1.to_string(),
        ),
        ("SHARDFEED_POSTGRES__URL".to_string(), db.url().to_string()),
        (
            "SHARDFEED_POSTGRES__CONNECT_TIMEOUT_MS".into(),
            "1000".into(),
        ),
        (
            "SHARDFEED_REDIS__NAMESPACE".into(),
            shardfeed_testkit::unique_namespace(),
        ),
        ("SHARDFEED_INGEST__LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        (
            "SHARDFEED_INGEST__METRICS_ADDR".into(),
            "127.0.0.1:0".into(),
        ),
        ("SHARDFEED_INGEST__RUN_MIGRATIONS".into(), "false".into()),
        (
            "SHARDFEED_GRPC__HEALTH_PROBE_INTERVAL_MS".into(),
            "100".into(),
        ),
        ("SHARDFEED_GRPC__SHUTDOWN_GRACE_MS".into(), "2000".into()),
    ]);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::load_from(None, env).expect("test settings are valid")
}

impl TestApp {
    /// A server on the shared PostgreSQL with a fresh database.
    pub async fn spawn() -> TestApp {
        let db = TestDb::new().await.expect("test database");
        Self::spawn_with(db, &[]).await
    }

    /// A server on a PostgreSQL of the test's own (for tests that stop it).
    pub async fn spawn_on(pg: &PgServer) -> TestApp {
        let db = TestDb::on(pg).await.expect("test database");
        Self::spawn_with(db, &[]).await
    }

    pub async fn spawn_with(db: TestDb, extra: &[(&str, &str)]) -> TestApp {
        Self::spawn_connected(db, extra, None).await
    }

    /// A server with `extra` settings that serve TLS (`SHARDFEED_GRPC__TLS_*`), reached
    /// through `tls`.
    pub async fn spawn_tls(db: TestDb, extra: &[(&str, &str)], tls: ClientTlsConfig) -> TestApp {
        Self::spawn_connected(db, extra, Some(tls)).await
    }

    async fn spawn_connected(
        db: TestDb,
        extra: &[(&str, &str)],
        tls: Option<ClientTlsConfig>,
    ) -> TestApp {
        let settings = settings(&db, extra);
        let layout = CacheLayout::new(settings.redis.namespace.clone());
        let cache_settings = settings.cache.clone();
        let replica_settings = settings.clone();
        let redis =
            shardfeed_server::redis::connect_and_wait(&settings.redis, Duration::from_secs(10))
                .await
                .expect("connect to the Redis Cluster");
        let app = Application::build(settings).await.expect("ingest builds");
        let addr = app.local_addr();
        let run = |s| app.run_until_stopped(s);
        let server = match tls {
            None => InProcessServer::start(addr, run).await,
            Some(tls) => InProcessServer::start_tls(addr, tls, run).await,
        }
        .expect("start the test server");
        let channel = server.channel.clone();
        let service = shardfeed_testkit::auth::as_service(channel.clone(), &replica_settings);
        TestApp {
            db,
            users: UserServiceClient::new(service.clone()),
            graph: GraphServiceClient::new(service.clone()),
            posts: PostServiceClient::new(service),
            layout,
            redis,
            cache_settings,
            settings: replica_settings,
            channel,
            server,
        }
    }

    /// A second ingest server on the same database and cluster, as another replica.
    pub async fn spawn_replica(&self) -> Replica {
        let app = Application::build(self.settings.clone())
            .await
            .expect("replica builds");
        let server = InProcessServer::start(app.local_addr(), |s| app.run_until_stopped(s))
            .await
            .expect("start the replica");
        Replica {
            posts: PostServiceClient::new(shardfeed_testkit::auth::as_service(
                server.channel.clone(),
                &self.settings,
            )),
            _server: server,
        }
    }

    pub async fn create_user(&self, handle: &str, display_name: &str) -> User {
        self.users
            .clone()
            .create_user(CreateUserRequest {
                handle: handle.into(),
                display_name: display_name.into(),
                request_id: String::new(),
            })
            .await
            .expect("create user")
            .into_inner()
            .user
            .expect("a user in the response")
    }

    pub async fn create_post(&self, author_id: i64, body: &str) -> Post {
        self.send_create_post(CreatePostRequest {
            author_id,
            body: body.into(),
            request_id: String::new(),
        })
        .await
    }

    /// Sends `request` as is; the post of a successful answer.
    pub async fn send_create_post(&self, request: CreatePostRequest) -> Post {
        self.posts
            .clone()
            .create_post(request)
            .await
            .expect("create post")
            .into_inner()
            .post
            .expect("a post in the response")
    }

    pub async fn follow(&self, follower_id: i64, followee_id: i64) {
        self.graph
            .clone()
            .follow(FollowRequest {
                follower_id,
                followee_id,
            })
            .await
            .expect("follow");
    }

    /// A cache writer with the server's layout and settings, to replay changes as the relay
    /// or another replica would.
    pub fn writer(&self) -> shardfeed_cache::CacheWriter {
        shardfeed_cache::CacheWriter::new(
            self.redis.clone(),
            self.layout.clone(),
            &self.cache_settings,
        )
    }

    /// Outbox rows not delivered (or not yet deleted) yet.
    pub async fn outbox_depth(&self) -> i64 {
        self.sql()
            .await
            .query_one("SELECT count(*) FROM outbox", &[])
            .await
            .expect("count the outbox")
            .get(0)
    }

    /// How many outbox ids were ever drawn, delivered or not: rows the fast path or the relay
    /// already deleted still count, and so does a row of a rolled-back transaction.
    pub async fn outbox_ids_drawn(&self) -> i64 {
        self.sql()
            .await
            .query_one(
                "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('outbox', 'id')), 0)",
                &[],
            )
            .await
            .expect("read the outbox sequence")
            .get(0)
    }

    /// Waits until every committed change has reached the cache: the outbox is empty once the
    /// fast path or the relay has delivered each row. The fast path is best effort (it gives
    /// up after `outbox.fast_path_budget_ms`, and a loaded machine can take longer), so a test
    /// that looks at the cache after a write waits for this rather than for luck.
    pub async fn settled(&self) {
        self.settled_within(Duration::from_secs(20)).await;
    }

    /// [`Self::settled`] with a deadline of `timeout`; a failure lists the rows left.
    pub async fn settled_within(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.outbox_depth().await == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let rows: Vec<String> = self
                    .sql()
                    .await
                    .query(
                        "SELECT format('%s %s attempts=%s error=%s', id, change, attempts, last_error)
                         FROM outbox ORDER BY id",
                        &[],
                    )
                    .await
                    .expect("list the outbox")
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                panic!("outbox rows still undelivered after {timeout:?}: {rows:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A direct PostgreSQL connection to this test's database.
    pub async fn sql(&self) -> tokio_postgres::Client {
        self.db
            .connect()
            .await
            .expect("connect to the test database")
    }

    /// Polls the server's health until it reports `want` (readiness probes run every 100 ms
    /// in tests).
    pub async fn wait_for_health(&self, want: ServingStatus) {
        shardfeed_testkit::wait_for_health(&self.channel, "", want, Duration::from_secs(15))
            .await
            .unwrap_or_else(|err| panic!("{err:#}"));
    }

    /// Rows in `users`, straight from PostgreSQL.
    /// Live posts of `author_id` in PostgreSQL.
    pub async fn count_posts(&self, author_id: i64) -> i64 {
        self.sql()
            .await
            .query_one(
                "SELECT count(*) FROM posts WHERE author_id = $1 AND delete_time IS NULL",
                &[&author_id],
            )
            .await
            .expect("count posts")
            .get(0)
    }

    pub async fn count_users(&self) -> i64 {
        self.sql()
            .await
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .expect("count users")
            .get(0)
    }

    /// Where the server listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr
    }

    /// Stops the server as SIGTERM would and returns how it ended.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.server.shutdown().await
    }
}

/// Another ingest server of a test; stops when dropped.
pub struct Replica {
    pub posts: PostServiceClient<AuthChannel>,
    _server: InProcessServer,
}

/// A handle unique to this test run, valid by the handle rules.
pub fn unique_handle(prefix: &str) -> String {
    let n: u32 = rand::random();
    format!("{prefix}_{n:08x}")
}

/// The status carries INVALID_ARGUMENT and a BadRequest violation naming `field`.
pub fn assert_field_violation(status: &tonic::Status, field: &str) {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad_request = details
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest detail in {status:?}"));
    assert!(
        bad_request
            .field_violations
            .iter()
            .any(|v| v.field == field),
        "expected a violation of {field}, got {:?}",
        bad_request.field_violations
    );
    assert!(
        status.message().contains(field),
        "message should name {field}: {}",
        status.message()
    );
}
