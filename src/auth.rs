//! The caller's side of authentication: every RPC but health and reflection carries
//! `authorization: Bearer <JWT>`. Wrap a channel once and every generated client on it sends
//! the token, and the caller's trace context: the W3C `traceparent` (and `tracestate`) of the
//! current span, when the process has installed a propagator (`opentelemetry::global`) and
//! traces, so that the services' spans continue the caller's trace:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use shardfeed_proto::{auth::Bearer, v1::feed_service_client::FeedServiceClient};
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50052").connect().await?;
//! let feeds = FeedServiceClient::with_interceptor(channel, Bearer::new("eyJ…")?);
//! # Ok(()) }
//! ```

use opentelemetry::{propagation::Injector, trace::TraceContextExt};
use tonic::{
    metadata::{Ascii, MetadataKey, MetadataMap, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::Channel,
    Request, Status,
};

/// Sends one bearer token with every request. Cheap to clone.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(…)")
    }
}

impl Bearer {
    /// `token` as `authorization` metadata; an error when it holds bytes no header may.
    pub fn new(token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse()?;
        value.set_sensitive(true);
        Ok(Bearer(value))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        inject_trace_context(request.metadata_mut());
        Ok(request)
    }
}

/// Adds the current trace context to `metadata`, as the global propagator writes it (nothing
/// with the default, which propagates nothing, or outside a recorded span).
pub fn inject_trace_context(metadata: &mut MetadataMap) {
    let context = opentelemetry::Context::current();
    // The usual case of a process that records no trace: no look at the global propagator.
    if !context.has_active_span() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut Metadata(metadata));
    });
}

/// Request metadata as a propagator writes it.
struct Metadata<'a>(&'a mut MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// A channel whose every request carries the token: what the generated clients take.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// `channel` sending `bearer` with every request.
pub fn with_bearer(channel: Channel, bearer: Bearer) -> AuthChannel {
    InterceptedService::new(channel, bearer)
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    /// The only test of this crate that touches the global propagator.
    #[test]
    fn the_current_trace_context_travels_with_the_token() {
        let mut bearer = Bearer::new("t").unwrap();
        // The default propagator sends nothing.
        let request = bearer.call(Request::new(())).unwrap();
        assert!(request.metadata().get("traceparent").is_none());

        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let caller = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("shardfeed", "1")]).unwrap(),
        );
        let request = {
            let _current = opentelemetry::Context::current()
                .with_remote_span_context(caller)
                .attach();
            bearer.call(Request::new(())).unwrap()
        };
        let metadata = request.metadata();
        assert_eq!(
            metadata.get("traceparent").unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(metadata.get("tracestate").unwrap(), "shardfeed=1");
        assert!(metadata.get("authorization").is_some());
        // Outside any span: nothing to continue.
        let request = bearer.call(Request::new(())).unwrap();
        assert!(request.metadata().get("traceparent").is_none());
    }
}
