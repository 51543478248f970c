//! The tower layer both services put in front of their routes: authenticate, check the
//! method's rule, count the caller's rate, and run the call in its server span
//! ([`spans::rpc_server`]), which names the caller and ends with the call's gRPC status.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use tonic::{body::Body, Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};
use tracing::Instrument;

use super::{limits::Limits, policy, AuthError, Caller, Proof, Role, Verifier};
use crate::spans;
use crate::{
    config::{ClientCertRole, ConfigError, Settings},
    metrics::Metrics,
};

/// Installs [`AuthService`] around the router.
#[derive(Clone)]
pub struct AuthLayer {
    state: Arc<State>,
}

struct State {
    verifier: Verifier,
    limits: Limits,
    /// The role of a caller known by its client certificate alone; `None`: a token always.
    cert_role: Option<Role>,
    /// `auth.enabled`.
    enabled: bool,
    /// Where refusals by the rate limits are counted, once the server has its metrics.
    metrics: OnceLock<Metrics>,
}

impl AuthLayer {
    pub fn new(verifier: Verifier, limits: Limits, cert_role: Option<Role>) -> Self {
        AuthLayer {
            state: Arc::new(State {
                verifier,
                limits,
                cert_role,
                enabled: true,
                metrics: OnceLock::new(),
            }),
        }
    }

    /// The keys and the certificate role of `settings.auth`, the quotas of `settings.limits`.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let cert_role = match settings.auth.client_cert_role {
            ClientCertRole::None => None,
            ClientCertRole::Service => Some(Role::Service),
            ClientCertRole::Admin => Some(Role::Admin),
        };
        let mut layer = AuthLayer::new(
            Verifier::from_settings(settings)?,
            Limits::new(&settings.limits),
            cert_role,
        );
        if !settings.auth.enabled {
            tracing::warn!("auth.enabled = false: every caller is an anonymous admin");
            Arc::get_mut(&mut layer.state)
                .expect("the layer is not shared yet")
                .enabled = false;
        }
        Ok(layer)
    }

    /// Counts the calls the rate limits refuse in `metrics` (the first metrics given stay).
    pub fn count_in(&self, metrics: &Metrics) {
        let _ = self.state.metrics.set(metrics.clone());
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    state: Arc<State>,
}

impl State {
    /// The caller of `request`, or the status that refuses it.
    fn admit(&self, request: &http::Request<Body>) -> Result<Caller, Status> {
        let path = request.uri().path();
        if !self.enabled {
            return Ok(Caller {
                subject: "anonymous".into(),
                role: Role::Admin,
                user_id: None,
                proof: Proof::Nothing,
            });
        }
        let header = request.headers().get(http::header::AUTHORIZATION);
        // A token wins; without one, a verified client certificate may stand for the caller.
        let certified = || {
            let role = self.cert_role?;
            let subject = crate::tls::peer_identity(request.extensions())?;
            Some(Caller {
                subject,
                role,
                user_id: None,
                proof: Proof::Certificate,
            })
        };
        let caller = match header {
            Some(value) => self.verifier.verify_header(value.as_bytes())?,
            None => certified().ok_or(AuthError::Missing)?,
        };
        let Some(rule) = policy::rule_of(path) else {
            return Err(Status::unimplemented(format!(
                "{path} is not a method of this service"
            )));
        };
        if !rule.access.admits(caller.role) {
            return Err(Status::permission_denied(format!(
                "{} may be called by {} only; this caller is a {}",
                rule.method,
                rule.access.roles(),
                caller.role
            )));
        }
        if let Err(wait) = self.limits.check(&caller, rule.class) {
            if let Some(metrics) = self.metrics.get() {
                metrics.rate_limited(super::limits::quota_name(rule.class, caller.role));
            }
            let message = format!(
                "rate limit of {} {:?} requests exceeded; retry in {} ms",
                caller.role,
                rule.class,
                wait.as_millis().max(1)
            );
            return Err(Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(wait)),
            ));
        }
        Ok(caller)
    }
}

impl<S> Service<http::Request<Body>> for AuthService<S>
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

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if policy::is_open(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        // Refused calls too are in the span (`crate::spans`): their status is its outcome.
        let span = spans::rpc_server(&request);
        match self.state.admit(&request) {
            Ok(caller) => {
                span.record("enduser.id", caller.subject.as_str());
                span.record("enduser.role", caller.role.as_str());
                request.extensions_mut().insert(caller);
                let fut = span.in_scope(|| self.inner.call(request));
                Box::pin(async move {
                    let response = fut.instrument(span.clone()).await?;
                    Ok(spans::rpc_response(&span, response))
                })
            }
            Err(status) => {
                span.in_scope(|| {
                    tracing::debug!(
                        method = request.uri().path(),
                        code = ?status.code(),
                        reason = status.message(),
                        "request refused"
                    )
                });
                let response = spans::rpc_response(&span, status.into_http());
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}
