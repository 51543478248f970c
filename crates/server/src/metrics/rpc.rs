//! The latency of every call, by method and final gRPC code: a tower layer outside every other
//! (a call refused for its token, its rate or its deadline is counted too).
//!
//! The code is the response's `grpc-status` header when the answer is trailers-only (every
//! error tonic returns), else the trailer at the end of the body; a body dropped before its end
//! (the client went away) counts as `CANCELLED`. The time runs until then. Health and
//! reflection are not measured; a path that is no method of the contract is counted under
//! `unknown`, so no caller can grow the label set.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body as HttpBody, Frame};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, histogram::Histogram},
    registry::Registry,
};
use tonic::body::Body;
use tower::{Layer, Service};

use super::HistogramFamily;
use crate::{auth::policy, spans::grpc_status};

/// From 250 µs to 10 s (the default request timeout).
const RPC_BUCKETS: [f64; 15] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

/// `shardfeed_rpc_duration_seconds{grpc_service, grpc_method, grpc_code}`.
#[derive(Clone)]
pub struct RpcMetrics {
    duration: HistogramFamily<RpcLabels>,
}

impl RpcMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let duration: HistogramFamily<RpcLabels> =
            Family::new_with_constructor(|| Histogram::new(RPC_BUCKETS));
        registry.register(
            "rpc_duration_seconds",
            "Time from a call's arrival to its final status, by service, method and gRPC code",
            duration.clone(),
        );
        Self { duration }
    }

    /// The layer that measures every call.
    pub fn layer(&self) -> RpcMetricsLayer {
        RpcMetricsLayer {
            metrics: self.clone(),
        }
    }
}

/// Installs [`RpcMetricsService`].
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: RpcMetrics,
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: RpcMetrics,
}

/// The method of a path, as `(service, method)` of the contract, or `unknown`.
fn method_of(path: &str) -> (&'static str, &'static str) {
    policy::rule_of(path)
        .and_then(|rule| rule.method.strip_prefix('/')?.split_once('/'))
        .unwrap_or(("unknown", "unknown"))
}

impl<S> Service<http::Request<Body>> for RpcMetricsService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if policy::is_open(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let (grpc_service, grpc_method) = method_of(request.uri().path());
        let pending = Pending {
            metrics: self.metrics.clone(),
            grpc_service,
            grpc_method,
            started: Instant::now(),
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            if let Some(code) = grpc_status(response.headers()) {
                pending.finish(code_name(code));
                return Ok(response);
            }
            Ok(response.map(|body| {
                Body::new(Observed {
                    body,
                    pending: Some(pending),
                })
            }))
        })
    }
}

/// A call whose final code is not known yet.
struct Pending {
    metrics: RpcMetrics,
    grpc_service: &'static str,
    grpc_method: &'static str,
    started: Instant,
}

impl Pending {
    fn finish(self, grpc_code: &'static str) {
        self.metrics
            .duration
            .get_or_create(&RpcLabels {
                grpc_service: self.grpc_service,
                grpc_method: self.grpc_method,
                grpc_code,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// A response body that records its call when the trailers pass (or the body ends or is
/// dropped).
struct Observed {
    body: Body,
    pending: Option<Pending>,
}

impl HttpBody for Observed {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    if let Some(pending) = self.pending.take() {
                        pending.finish(code_name(code));
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(pending) = self.pending.take() {
                    pending.finish("INTERNAL");
                }
            }
            // A body that ends without a status: grpc says the call failed.
            Poll::Ready(None) => {
                if let Some(pending) = self.pending.take() {
                    pending.finish("UNKNOWN");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.finish("CANCELLED");
        }
    }
}

/// The name of a gRPC code, as the gRPC spec spells it (`UNKNOWN` for a number it does not
/// define).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_spec_name() {
        for code in 0..=16 {
            let name = code_name(code);
            let tonic = tonic::Code::from_i32(code);
            // tonic's Debug is the CamelCase of the spec's name.
            assert_eq!(
                name.replace('_', ""),
                format!("{tonic:?}").to_uppercase(),
                "{code}"
            );
        }
        assert_eq!(code_name(17), "UNKNOWN");
        assert_eq!(code_name(-1), "UNKNOWN");
    }

    #[test]
    fn only_methods_of_the_contract_get_their_own_label() {
        assert_eq!(
            method_of("/shardfeed.v1.FeedService/GetHomeFeed"),
            ("shardfeed.v1.FeedService", "GetHomeFeed")
        );
        assert_eq!(
            method_of("/shardfeed.v1.FeedService/Nope"),
            ("unknown", "unknown")
        );
        assert_eq!(method_of("/anything/else"), ("unknown", "unknown"));
    }
}
