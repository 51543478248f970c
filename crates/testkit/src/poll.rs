//! Waiting in tests, and for the local stack: polling a condition, and a server's gRPC health.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use tonic::transport::Channel;
pub use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// How often both wait.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns true, failing the test after `timeout`; `what` names the
/// condition in the failure ("timed out waiting until {what}").
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `grpc.health.v1.Health/Check` of `service` ("" for the whole server).
pub async fn health(channel: &Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// Polls the health of `service` until it is `want`; an error after `timeout` names the last
/// answer. A server that does not answer yet (still starting) is polled like one that answers
/// something else.
pub async fn wait_for_health(
    channel: &Channel,
    service: &str,
    want: ServingStatus,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match health(channel, service).await {
            Ok(status) if status == want => return Ok(()),
            Ok(status) => format!("{status:?}"),
            Err(status) => format!("no answer ({})", status.message()),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("health of {service:?} stayed {last} for {timeout:?}, wanted {want:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
