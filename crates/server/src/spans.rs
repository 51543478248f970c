//! The spans of the calls a service serves and makes, named and attributed by the
//! OpenTelemetry semantic conventions: every gRPC call served ([`rpc_server`], opened by the
//! auth layer, the caller's `traceparent` continued), each PostgreSQL statement ([`pg`]) and
//! each Redis command or per-node pipeline ([`redis`]).
//!
//! A store span is `debug`: while neither the log filter nor an exporter wants it, the callsite
//! is disabled and costs one cached check; no attribute is computed. It is always a child: a
//! store call outside any span is not traced, since the background loops poll the stores all
//! the time (the outbox relay, the purges, the hot set) and each poll would be a trace of its
//! own; background work that matters opens its span first (a relay round that claimed rows, a
//! rebuild, a fast-path batch). Its name is a summary `"<OPERATION> <target>"`
//! (`"SELECT posts.timeline"`, `"PIPELINE feed.slices"`), also its `db.query.summary`; the
//! operation is its `db.operation.name`.

use std::{future::Future, sync::OnceLock};

use http_body_util::BodyExt;
use opentelemetry::{propagation::Extractor, trace::TraceContextExt};
use tonic::{body::Body, Code};
use tracing::{field::Empty, Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `"<OPERATION>"` of a `"<OPERATION> <target>"` summary.
fn operation(summary: &'static str) -> &'static str {
    summary.split_once(' ').map_or(summary, |(op, _)| op)
}

/// The parent of a store call's span: the current span; `None` (not traced) outside any span,
/// or while no subscriber wants `debug` spans of this module.
fn store_parent() -> Option<Span> {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return None;
    }
    Some(Span::current()).filter(|span| !span.is_none())
}

/// Where this process's PostgreSQL is: host and port of the first pool built (a service has
/// one).
static PG_SERVER: OnceLock<(String, u16)> = OnceLock::new();

/// Remembers the server of `config` for the statements' `server.address` and `server.port`.
pub(crate) fn set_postgres_server(config: &tokio_postgres::Config) {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => return,
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let _ = PG_SERVER.set((host, port));
}

/// What a statement's result says of its rows.
pub trait Rows {
    fn record(&self, span: &Span);
}

impl Rows for Vec<tokio_postgres::Row> {
    fn record(&self, span: &Span) {
        span.record("db.response.returned_rows", self.len() as i64);
    }
}

impl Rows for tokio_postgres::Row {
    fn record(&self, span: &Span) {
        span.record("db.response.returned_rows", 1);
    }
}

impl Rows for Option<tokio_postgres::Row> {
    fn record(&self, span: &Span) {
        span.record("db.response.returned_rows", i64::from(self.is_some()));
    }
}

/// `execute`: the rows changed.
impl Rows for u64 {
    fn record(&self, span: &Span) {
        span.record("shardfeed.db.affected_rows", *self as i64);
    }
}

/// Runs one PostgreSQL statement (`client.query(…)` and the like, not yet awaited) in a client
/// span named `summary`: `db.system` `postgresql`, `server.address`/`server.port`, the rows
/// returned (`db.response.returned_rows`) or changed (`shardfeed.db.affected_rows`), and on
/// failure the SQLSTATE (`db.response.status_code`, `error.type`) and status `ERROR`.
pub async fn pg<T: Rows>(
    summary: &'static str,
    statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    let Some(parent) = store_parent() else {
        return statement.await;
    };
    let server = PG_SERVER.get();
    let span = tracing::debug_span!(
        parent: &parent,
        "postgres",
        otel.name = summary,
        otel.kind = "client",
        db.system = "postgresql",
        db.operation.name = operation(summary),
        db.query.summary = summary,
        server.address = server.map(|(host, _)| host.as_str()),
        server.port = server.map(|(_, port)| i64::from(*port)),
        db.response.returned_rows = Empty,
        shardfeed.db.affected_rows = Empty,
        db.response.status_code = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    );
    if span.is_disabled() {
        return statement.await;
    }
    let result = statement.instrument(span.clone()).await;
    match &result {
        Ok(rows) => rows.record(&span),
        Err(err) => {
            let error_type = match err.code() {
                Some(code) => {
                    span.record("db.response.status_code", code.code());
                    code.code()
                }
                None if err.is_closed() => "connection_closed",
                None => "tokio_postgres::Error",
            };
            span.record("error.type", error_type);
            span.record("otel.status_code", "ERROR");
        }
    }
    result
}

/// What a Redis call's result says of how it went: the kind of its (first) error, if any.
pub trait RedisOutcome {
    fn error_type(&self) -> Option<&'static str>;
}

impl<T> RedisOutcome for Result<T, fred::error::Error> {
    fn error_type(&self) -> Option<&'static str> {
        self.as_ref().err().map(|err| err.kind().to_str())
    }
}

/// A pipeline's replies (`try_all`): one result per command.
impl<T> RedisOutcome for Vec<Result<T, fred::error::Error>> {
    fn error_type(&self) -> Option<&'static str> {
        self.iter().find_map(RedisOutcome::error_type)
    }
}

/// A call bounded by `tokio::time::timeout`.
impl<T: RedisOutcome> RedisOutcome for Result<T, tokio::time::error::Elapsed> {
    fn error_type(&self) -> Option<&'static str> {
        match self {
            Ok(outcome) => outcome.error_type(),
            Err(_) => Some("timeout"),
        }
    }
}

/// Runs one Redis call (a command, or a pipeline of `commands` queued for one node, not yet
/// sent) in a client span named `summary`: `db.system` `redis`, `server.address`/`server.port`
/// of `node` when known (`None`: the cluster client routes it), `db.operation.batch.size` for
/// more than one command, and on failure `error.type` (fred's error kind, or `timeout`) and
/// status `ERROR`.
pub async fn redis<T: RedisOutcome>(
    summary: &'static str,
    node: Option<&fred::types::config::Server>,
    commands: usize,
    call: impl Future<Output = T>,
) -> T {
    let Some(parent) = store_parent() else {
        return call.await;
    };
    let span = tracing::debug_span!(
        parent: &parent,
        "redis",
        otel.name = summary,
        otel.kind = "client",
        db.system = "redis",
        db.operation.name = operation(summary),
        db.query.summary = summary,
        db.operation.batch.size = (commands > 1).then_some(commands as i64),
        server.address = node.map(|node| &*node.host),
        server.port = node.map(|node| i64::from(node.port)),
        error.type = Empty,
        otel.status_code = Empty,
    );
    if span.is_disabled() {
        return call.await;
    }
    let outcome = call.instrument(span.clone()).await;
    if let Some(error_type) = outcome.error_type() {
        span.record("error.type", error_type);
        span.record("otel.status_code", "ERROR");
    }
    outcome
}

/// The server span of the gRPC call `request`, named `<package>.<Service>/<Method>`: kind
/// `server`, `rpc.system` `grpc`, `rpc.service`, `rpc.method`; `enduser.id` and `enduser.role`
/// are recorded once the caller is known, `rpc.grpc.status_code` by [`rpc_response`]. A
/// `traceparent` (and `tracestate`) in the request continues the caller's trace: the span's
/// parent is the caller's span. Info level: the logs of the call carry its fields.
pub fn rpc_server<B>(request: &http::Request<B>) -> Span {
    let path = request.uri().path();
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        "rpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        enduser.id = Empty,
        enduser.role = Empty,
        rpc.grpc.status_code = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    if request.headers().contains_key("traceparent") && !span.is_disabled() {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&Headers(request.headers()))
        });
        if parent.span().span_context().is_valid() {
            // Fails only without an OpenTelemetry layer, when there is nothing to continue.
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// Records on `span` ([`rpc_server`]) the call's final gRPC status: from the response's
/// headers when it is trailers-only (a refusal, an error), else from the trailers that end its
/// body, which then holds the span open until it is sent.
pub fn rpc_response(span: &Span, response: http::Response<Body>) -> http::Response<Body> {
    if span.is_disabled() {
        return response;
    }
    if record_status(span, response.headers()) {
        return response;
    }
    let span = span.clone();
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            if let Some(trailers) = frame.trailers_ref() {
                record_status(&span, trailers);
            }
            frame
        }))
    })
}

/// Records the `grpc-status` of `headers`, if they hold one. A code that says the server
/// failed (semantic conventions: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS) makes the span's status `ERROR`, with the status message.
fn record_status(span: &Span, headers: &http::HeaderMap) -> bool {
    let Some(code) = grpc_status(headers) else {
        return false;
    };
    span.record("rpc.grpc.status_code", code);
    if is_server_fault(Code::from_i32(code)) {
        span.record("otel.status_code", "ERROR");
        if let Some(status) = tonic::Status::from_header_map(headers) {
            span.record("otel.status_description", status.message());
        }
    }
    true
}

/// The `grpc-status` of `headers` (a trailers-only response's, or the trailers'), if they hold
/// one. The span and the RPC metrics both read the final status through this.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
}

fn is_server_fault(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// A request's headers as the propagator reads them.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_their_operation() {
        assert_eq!(operation("SELECT posts.timeline"), "SELECT");
        assert_eq!(operation("PIPELINE feed.slices"), "PIPELINE");
        assert_eq!(operation("PING"), "PING");
    }

    #[test]
    fn server_faults_are_the_conventions_six() {
        let faults: Vec<i32> = (0..=16)
            .filter(|code| is_server_fault(Code::from_i32(*code)))
            .collect();
        assert_eq!(faults, [2, 4, 12, 13, 14, 15]);
    }

    #[test]
    fn headers_are_read_by_name() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "00-ab-cd-01".parse().unwrap());
        let extractor = Headers(&headers);
        assert_eq!(extractor.get("traceparent"), Some("00-ab-cd-01"));
        assert_eq!(extractor.get("tracestate"), None);
        assert_eq!(extractor.keys(), ["traceparent"]);
    }
}
