//! Traces across both services and every store. Both services run as processes of their own
//! (the tracing subscriber is global to a process) on the shared test stores and export over
//! OTLP/gRPC to a collector in this test, built from opentelemetry-proto's TraceService server.
//! The calls carry a known `traceparent`; the spans received must form its tree: the same trace
//! id throughout, every server span a child of the caller's span, the PostgreSQL and Redis
//! spans under the server span of the call that made them, each service under its own name.
//!
//! The services are configured the way an operator would, the OpenTelemetry environment over
//! the settings: the ingest service's endpoint is the setting `telemetry.otlp_endpoint`, its
//! name `OTEL_SERVICE_NAME` (over `telemetry.service_name`); the aggregator's endpoint is
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (over a setting that points nowhere), its sampler
//! `OTEL_TRACES_SAMPLER` (over a setting that samples nothing), its name the default one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use parking_lot::Mutex;
use shardfeed_proto::v1::{
    feed_service_client::FeedServiceClient, graph_service_client::GraphServiceClient,
    post_service_client::PostServiceClient, user_service_client::UserServiceClient,
    CreatePostRequest, CreateUserRequest, FollowRequest, GetHomeFeedRequest, GetUserRequest,
    GetUserTimelineRequest,
};
use shardfeed_server::Settings;
use shardfeed_testkit::{auth, ServiceProcess, TestDb};
use tonic::Code;

/// The caller's trace and span: every call of the test carries them.
const TRACE_ID: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
const PARENT_ID: &str = "051581bf3cb55c13";

const SERVICE: &str = env!("CARGO_BIN_EXE_shardfeed-e2e-service");

/// The spans as they arrived, flattened.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[derive(Debug, Clone)]
struct Received {
    service: String,
    resource: HashMap<String, String>,
    trace_id: String,
    span_id: String,
    parent_id: String,
    name: String,
    kind: SpanKind,
    attributes: HashMap<String, String>,
    /// The attributes whose value is an integer (the semantic conventions' int attributes
    /// must not arrive as strings).
    ints: std::collections::HashSet<String>,
    error: bool,
}

impl Received {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// [`Self::attr`] of an attribute that must be an integer.
    fn int(&self, key: &str) -> Option<&str> {
        assert!(
            !self.attributes.contains_key(key) || self.ints.contains(key),
            "{key} is not an integer: {self:#?}"
        );
        self.attr(key)
    }
}

fn to_map(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.spans.lock();
        for resource_spans in request.into_inner().resource_spans {
            let resource = to_map(
                &resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default(),
            );
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Received {
                    service: service.clone(),
                    resource: resource.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_id: hex(&span.parent_span_id),
                    kind: span.kind(),
                    error: span
                        .status
                        .as_ref()
                        .is_some_and(|s| s.code() == StatusCode::Error),
                    attributes: to_map(&span.attributes),
                    ints: span
                        .attributes
                        .iter()
                        .filter(|kv| {
                            matches!(
                                kv.value.as_ref().and_then(|v| v.value.as_ref()),
                                Some(any_value::Value::IntValue(_))
                            )
                        })
                        .map(|kv| kv.key.clone())
                        .collect(),
                    name: span.name,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> (Collector, SocketAddr) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        (collector, addr)
    }

    /// The spans of the test's trace, once `done` says they are all there; fails after 30 s
    /// naming what arrived.
    async fn trace(&self, done: impl Fn(&Trace) -> bool) -> Trace {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let trace = Trace(
                self.spans
                    .lock()
                    .iter()
                    .filter(|s| s.trace_id == TRACE_ID)
                    .cloned()
                    .collect(),
            );
            if done(&trace) {
                return trace;
            }
            if tokio::time::Instant::now() >= deadline {
                let names: Vec<String> = trace
                    .0
                    .iter()
                    .map(|s| format!("{}: {}", s.service, s.name))
                    .collect();
                panic!("the trace stayed incomplete; it has {names:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The spans of one trace.
struct Trace(Vec<Received>);

impl Trace {
    fn server(&self, service: &str, name: &str) -> Vec<&Received> {
        self.0
            .iter()
            .filter(|s| s.kind == SpanKind::Server && s.service == service && s.name == name)
            .collect()
    }

    fn has(&self, service: &str, name: &str) -> bool {
        self.0
            .iter()
            .any(|s| s.service == service && s.name == name)
    }

    fn by_id(&self, id: &str) -> Option<&Received> {
        self.0.iter().find(|s| s.span_id == id)
    }

    /// The server span `span` runs under: itself, or its nearest server ancestor.
    fn server_of<'a>(&'a self, span: &'a Received) -> Option<&'a Received> {
        let mut at = span;
        for _ in 0..64 {
            if at.kind == SpanKind::Server {
                return Some(at);
            }
            at = self.by_id(&at.parent_id)?;
        }
        None
    }

    /// The client spans of `system` (`postgresql`, `redis`) under the server span `server`.
    fn store_spans(&self, server: &Received, system: &str) -> Vec<&Received> {
        self.0
            .iter()
            .filter(|s| s.attr("db.system") == Some(system))
            .filter(|s| {
                self.server_of(s)
                    .is_some_and(|o| o.span_id == server.span_id)
            })
            .collect()
    }
}

/// Whether `span` is the rebuild of `user_id`'s cache.
fn is_rebuild_of(span: &Received, user_id: i64) -> bool {
    span.name == "cache.rebuild" && span.attr("shardfeed.user.id") == Some(&user_id.to_string())
}

/// `message` with the test's `traceparent`.
fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
        .metadata_mut()
        .insert("tracestate", "shardfeed=e2e".parse().unwrap());
    request
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_crosses_both_services_and_every_store() {
    let (collector, collector_addr) = Collector::start().await;
    let collector_url = format!("http://{collector_addr}");
    let db = TestDb::new().await.unwrap();
    let redis = &shardfeed_testkit::shared().redis;
    let mut stores = env(&[
        (auth::DEV_MODE.0, auth::DEV_MODE.1.to_owned()),
        ("SHARDFEED_POSTGRES__URL", db.url().to_owned()),
        (
            "SHARDFEED_REDIS__NAMESPACE",
            shardfeed_testkit::unique_namespace(),
        ),
        ("SHARDFEED_INGEST__RUN_MIGRATIONS", "false".to_owned()),
        // Spans leave within 100 ms rather than 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]);
    stores.extend(redis.settings_env());

    let mut ingest_env = stores.clone();
    ingest_env.extend(env(&[
        ("SHARDFEED_TELEMETRY__OTLP_ENDPOINT", collector_url.clone()),
        (
            "SHARDFEED_TELEMETRY__SERVICE_NAME",
            "not-this-name".to_owned(),
        ),
        ("OTEL_SERVICE_NAME", "shardfeed-ingest".to_owned()),
    ]));
    let mut aggregator_env = stores.clone();
    aggregator_env.extend(env(&[
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector_url.clone()),
        // Nothing listens there: the variable wins.
        (
            "SHARDFEED_TELEMETRY__OTLP_ENDPOINT",
            "http://127.0.0.1:9".to_owned(),
        ),
        ("SHARDFEED_TELEMETRY__SAMPLER", "always_off".to_owned()),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=e2e".to_owned(),
        ),
    ]));
    let (ingest, aggregator) = tokio::join!(
        ServiceProcess::start(
            Path::new(SERVICE),
            &["ingest"],
            "SHARDFEED_INGEST__LISTEN_ADDR",
            &ingest_env,
        ),
        ServiceProcess::start(
            Path::new(SERVICE),
            &["aggregator"],
            "SHARDFEED_AGGREGATOR__LISTEN_ADDR",
            &aggregator_env,
        ),
    );
    let (mut ingest, mut aggregator) = (ingest.unwrap(), aggregator.unwrap());

    let settings = Settings::load_from(None, stores.clone()).unwrap();
    let ingest_channel = ingest.channel().await.unwrap();
    let aggregator_channel = aggregator.channel().await.unwrap();
    let as_service = auth::as_service(ingest_channel, &settings);
    let mut users = UserServiceClient::new(as_service.clone());
    let mut graph = GraphServiceClient::new(as_service.clone());
    let mut posts = PostServiceClient::new(as_service);

    // The write path: two users, a follow, a post.
    let mut ids = Vec::new();
    for handle in ["e2e_author", "e2e_reader"] {
        let request = traced(CreateUserRequest {
            handle: handle.to_owned(),
            display_name: handle.to_owned(),
            request_id: String::new(),
        });
        let created = users.create_user(request).await.unwrap().into_inner();
        ids.push(created.user.unwrap().user_id);
    }
    let (author, reader) = (ids[0], ids[1]);
    graph
        .follow(traced(FollowRequest {
            follower_id: reader,
            followee_id: author,
        }))
        .await
        .unwrap();
    posts
        .create_post(traced(CreatePostRequest {
            author_id: author,
            body: "traced all the way".to_owned(),
            request_id: String::new(),
        }))
        .await
        .unwrap();

    // The read path: the reader's feed from the cache; a user the cache never saw (written to
    // PostgreSQL alone), read through and rebuilt; one that does not exist; a caller without
    // a token; a method this service does not serve.
    let sql = db.connect().await.unwrap();
    let uncached: i64 = sql
        .query_one(
            "INSERT INTO users (handle, display_name) VALUES ('e2e_uncached', 'U') RETURNING user_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut feeds =
        FeedServiceClient::new(auth::as_user(aggregator_channel.clone(), &settings, reader));
    // The fast path has normally warmed the cache before the writes were answered; when it
    // ran out of its budget, the relay does within seconds.
    let read = tokio::time::Instant::now();
    loop {
        let page = feeds
            .get_home_feed(traced(GetHomeFeedRequest {
                user_id: reader,
                page_size: 10,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        if page.posts.len() == 1 {
            break;
        }
        assert!(read.elapsed() < Duration::from_secs(15), "{page:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut as_service =
        FeedServiceClient::new(auth::as_service(aggregator_channel.clone(), &settings));
    let timeline = |user_id| {
        traced(GetUserTimelineRequest {
            user_id,
            page_size: 10,
            page_token: String::new(),
        })
    };
    as_service
        .get_user_timeline(timeline(uncached))
        .await
        .unwrap();
    let missing = as_service
        .get_user_timeline(timeline(uncached + 1_000_000))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let anonymous = FeedServiceClient::new(aggregator_channel.clone())
        .get_user_timeline(timeline(uncached))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let elsewhere = UserServiceClient::new(auth::as_service(aggregator_channel, &settings))
        .get_user(traced(GetUserRequest { user_id: author }))
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Code::Unimplemented);

    const INGEST: &str = "shardfeed-ingest";
    const AGGREGATOR: &str = "shardfeed-aggregator";
    let trace = collector
        .trace(|t| {
            t.server(INGEST, "shardfeed.v1.UserService/CreateUser")
                .len()
                == 2
                && t.has(INGEST, "shardfeed.v1.GraphService/Follow")
                && t.has(INGEST, "shardfeed.v1.PostService/CreatePost")
                && t.has(INGEST, "PIPELINE cache.write")
                && t.has(AGGREGATOR, "shardfeed.v1.FeedService/GetHomeFeed")
                && t.server(AGGREGATOR, "shardfeed.v1.FeedService/GetUserTimeline")
                    .len()
                    == 3
                && t.has(AGGREGATOR, "shardfeed.v1.UserService/GetUser")
                && t.has(AGGREGATOR, "PIPELINE feed.slices")
                && t.0.iter().any(|s| {
                    is_rebuild_of(s, uncached)
                        && s.attr("shardfeed.rebuild.outcome") == Some("rebuilt")
                })
        })
        .await;

    // One trace, every server span a child of the caller's span, each service by its name.
    for span in trace.0.iter().filter(|s| s.kind == SpanKind::Server) {
        assert_eq!(span.parent_id, PARENT_ID, "{span:#?}");
        assert_eq!(span.attr("rpc.system"), Some("grpc"), "{span:#?}");
        let (service, method) = span.name.split_once('/').unwrap();
        assert_eq!(span.attr("rpc.service"), Some(service), "{span:#?}");
        assert_eq!(span.attr("rpc.method"), Some(method), "{span:#?}");
        assert!(span.attr("rpc.grpc.status_code").is_some(), "{span:#?}");
    }
    for span in &trace.0 {
        assert!(
            [INGEST, AGGREGATOR].contains(&span.service.as_str()),
            "{span:#?}"
        );
    }
    let some_aggregator_span = trace.0.iter().find(|s| s.service == AGGREGATOR).unwrap();
    assert_eq!(
        some_aggregator_span
            .resource
            .get("deployment.environment.name")
            .map(String::as_str),
        Some("e2e")
    );

    // The write path: who called, what was written where.
    let create_post = trace.server(INGEST, "shardfeed.v1.PostService/CreatePost")[0];
    assert_eq!(create_post.attr("enduser.id"), Some(auth::TEST_SERVICE));
    assert_eq!(create_post.attr("enduser.role"), Some("service"));
    assert_eq!(create_post.attr("rpc.grpc.status_code"), Some("0"));
    assert!(!create_post.error);
    let inserts = trace.store_spans(create_post, "postgresql");
    assert!(
        inserts
            .iter()
            .any(|s| s.name.starts_with("INSERT posts") && s.kind == SpanKind::Client),
        "{inserts:#?}"
    );
    let writes = trace.store_spans(create_post, "redis");
    let write = writes
        .iter()
        .find(|s| s.name == "PIPELINE cache.write")
        .unwrap_or_else(|| panic!("{writes:#?}"));
    assert_eq!(write.kind, SpanKind::Client);
    assert_eq!(write.attr("db.operation.name"), Some("PIPELINE"));
    assert_eq!(write.attr("server.address"), Some("127.0.0.1"));
    assert!(write.int("server.port").is_some(), "{write:#?}");
    // The post's script and CLIENT ID, the probe, WAIT, CLIENT ID.
    assert_eq!(
        write.int("db.operation.batch.size"),
        Some("5"),
        "{write:#?}"
    );
    for create_user in trace.server(INGEST, "shardfeed.v1.UserService/CreateUser") {
        let inserts = trace.store_spans(create_user, "postgresql");
        let insert = inserts
            .iter()
            .find(|s| s.name == "INSERT users")
            .unwrap_or_else(|| panic!("{inserts:#?}"));
        assert_eq!(insert.attr("db.operation.name"), Some("INSERT"));
        assert_eq!(insert.attr("db.query.summary"), Some("INSERT users"));
        assert_eq!(insert.int("db.response.returned_rows"), Some("1"));
        assert!(insert.int("server.port").is_some());
        assert_eq!(insert.attr("server.address"), Some("127.0.0.1"));
    }

    // The read path.
    let home = trace.server(AGGREGATOR, "shardfeed.v1.FeedService/GetHomeFeed")[0];
    assert_eq!(home.attr("enduser.id"), Some(reader.to_string().as_str()));
    assert_eq!(home.attr("enduser.role"), Some("user"));
    let reads = trace.store_spans(home, "redis");
    let slices = reads
        .iter()
        .find(|s| s.name == "PIPELINE feed.slices")
        .unwrap_or_else(|| panic!("{reads:#?}"));
    assert_eq!(slices.kind, SpanKind::Client);
    assert!(slices.attr("server.address").is_some(), "{slices:#?}");
    let timelines = trace.server(AGGREGATOR, "shardfeed.v1.FeedService/GetUserTimeline");
    let code = |span: &&Received| span.attr("rpc.grpc.status_code").map(str::to_owned);
    let read_through = timelines
        .iter()
        .find(|s| code(s).as_deref() == Some("0"))
        .unwrap();
    assert!(
        !trace.store_spans(read_through, "postgresql").is_empty(),
        "a read-through reads PostgreSQL"
    );
    let rebuild = trace.0.iter().find(|s| is_rebuild_of(s, uncached)).unwrap();
    assert_eq!(
        trace.server_of(rebuild).map(|s| &s.span_id),
        Some(&read_through.span_id),
        "the rebuild runs under the read that asked for it"
    );
    assert_eq!(rebuild.attr("shardfeed.rebuild.target"), Some("timeline"));
    assert!(trace
        .0
        .iter()
        .any(|s| s.parent_id == rebuild.span_id && s.attr("db.system") == Some("postgresql")));

    // Final codes, from trailers-only responses too; only server faults are errors.
    let not_found = timelines
        .iter()
        .find(|s| code(s).as_deref() == Some("5"))
        .unwrap();
    assert!(!not_found.error);
    let refused = timelines
        .iter()
        .find(|s| code(s).as_deref() == Some("16"))
        .unwrap();
    assert!(refused.attr("enduser.id").is_none(), "{refused:#?}");
    assert!(!refused.error);
    let unimplemented = trace.server(AGGREGATOR, "shardfeed.v1.UserService/GetUser")[0];
    assert_eq!(unimplemented.attr("rpc.grpc.status_code"), Some("12"));
    assert!(unimplemented.error, "{unimplemented:#?}");

    // Both stop as an orchestrator stops them.
    for service in [&mut ingest, &mut aggregator] {
        let status = service.stop().unwrap();
        assert!(status.success(), "{status}; its log:\n{}", service.log());
    }
}
