//! The caller's side of authentication: every RPC but health and reflection carries
//! `authorization: Bearer <JWT>`. Wrap a channel once and every generated client on it sends
//! the token:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use shardfeed_proto::{auth::Bearer, v1::feed_service_client::FeedServiceClient};
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50052").connect().await?;
//! let feeds = FeedServiceClient::with_interceptor(channel, Bearer::new("eyJ…")?);
//! # Ok(()) }
//! ```

use tonic::{
    metadata::{Ascii, MetadataValue},
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
        Ok(request)
    }
}

/// A channel whose every request carries the token: what the generated clients take.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// `channel` sending `bearer` with every request.
pub fn with_bearer(channel: Channel, bearer: Bearer) -> AuthChannel {
    InterceptedService::new(channel, bearer)
}
