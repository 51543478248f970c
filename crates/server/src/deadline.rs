//! Caller deadlines: a tower layer that bounds every request by the sooner of the caller's
//! `grpc-timeout` and the server's own request timeout, answers `DEADLINE_EXCEEDED` when it
//! passes, and hands the deadline to handlers (as a [`Deadline`] request extension) so that they
//! can budget their store calls.
//!
//! tonic's built-in `Server::timeout` answers `CANCELLED`; the gRPC spec wants
//! `DEADLINE_EXCEEDED`, hence this layer.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tonic::{body::Body, Status};
use tower::{Layer, Service};

/// When the current request must be answered by. Present in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// The deadline of a tonic request, or `fallback` from now when the layer is not installed
    /// (e.g. a handler called directly in a unit test).
    pub fn of<T>(request: &tonic::Request<T>, fallback: Duration) -> Deadline {
        request
            .extensions()
            .get::<Deadline>()
            .copied()
            .unwrap_or_else(|| Deadline(Instant::now() + fallback))
    }

    /// Runs `fut` until the deadline; `DEADLINE_EXCEEDED` after it.
    pub async fn run<F, T>(&self, fut: F) -> Result<T, crate::error::ApiError>
    where
        F: Future<Output = T>,
    {
        tokio::time::timeout_at(self.0, fut)
            .await
            .map_err(|_| crate::error::ApiError::DeadlineExceeded)
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Installs [`DeadlineService`] around the router.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    server_timeout: Duration,
}

impl DeadlineLayer {
    pub fn new(server_timeout: Duration) -> Self {
        Self { server_timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            server_timeout: self.server_timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    server_timeout: Duration,
}

impl<S> Service<http::Request<Body>> for DeadlineService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let caller = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let budget = caller.map_or(self.server_timeout, |c| c.min(self.server_timeout));
        let deadline = Instant::now() + budget;
        request.extensions_mut().insert(Deadline(deadline));
        let fut = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, fut).await {
                Ok(result) => result,
                Err(_) => Ok(Status::deadline_exceeded(
                    "the deadline passed before the request completed",
                )
                .into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
    }

    type Reply = Result<http::Response<Body>, std::convert::Infallible>;
    type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

    /// An inner service that answers OK after `delay`, recording the deadline it was handed.
    fn slow_service(
        delay: Duration,
        seen: std::sync::Arc<std::sync::Mutex<Option<Deadline>>>,
    ) -> impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = std::convert::Infallible,
        Future = ReplyFuture,
    > + Clone {
        tower::service_fn(move |req: http::Request<Body>| {
            *seen.lock().unwrap() = req.extensions().get::<Deadline>().copied();
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(http::Response::new(Body::empty()))
            }) as ReplyFuture
        })
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_caller_deadline_shorter_than_the_server_timeout_wins() {
        let seen = Default::default();
        let mut svc = DeadlineLayer::new(Duration::from_secs(30)).layer(slow_service(
            Duration::from_secs(5),
            std::sync::Arc::clone(&seen),
        ));
        let mut request = http::Request::new(Body::empty());
        request
            .headers_mut()
            .insert("grpc-timeout", "100m".parse().unwrap());
        let started = Instant::now();
        let response = svc.call(request).await.unwrap();
        assert_eq!(
            grpc_status(&response),
            Some("4"),
            "DEADLINE_EXCEEDED is code 4"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        let handed = seen.lock().unwrap().expect("the handler sees the deadline");
        assert!(handed.0 <= started + Duration::from_millis(150));
    }

    #[tokio::test]
    async fn the_server_timeout_bounds_a_longer_caller_deadline() {
        let seen = Default::default();
        let mut svc = DeadlineLayer::new(Duration::from_millis(100))
            .layer(slow_service(Duration::from_secs(5), seen));
        let mut request = http::Request::new(Body::empty());
        request
            .headers_mut()
            .insert("grpc-timeout", "1H".parse().unwrap());
        let started = Instant::now();
        let response = svc.call(request).await.unwrap();
        assert_eq!(grpc_status(&response), Some("4"));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn requests_within_the_deadline_pass_through() {
        let seen = Default::default();
        let mut svc = DeadlineLayer::new(Duration::from_secs(5))
            .layer(slow_service(Duration::from_millis(10), seen));
        let response = svc.call(http::Request::new(Body::empty())).await.unwrap();
        assert_eq!(
            grpc_status(&response),
            None,
            "the inner response is untouched"
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "S", "10", "123456789S", "-1S", "1.5S", "10x", "1 S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
