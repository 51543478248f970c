//! Tokens for tests: servers under test run in development mode, so the development key signs.

use std::time::Duration;

use shardfeed_proto::auth::{with_bearer, AuthChannel, Bearer};
use shardfeed_server::{
    auth::{mint, Role},
    Settings,
};
use tonic::transport::Channel;

/// The setting every service under test needs: development mode (the built-in secrets).
pub const DEV_MODE: (&str, &str) = ("SHARDFEED_DEV_MODE", "true");

/// The subject of the suite's own service token.
pub const TEST_SERVICE: &str = "shardfeed-tests";

/// A bearer token for `subject` in `role`, valid for an hour, minted with the key of
/// `settings` (the development key in development mode).
pub fn bearer(settings: &Settings, subject: &str, role: Role) -> Bearer {
    let token = mint(settings, subject, role, Duration::from_secs(3600))
        .expect("the test settings have a key to sign with");
    Bearer::new(&token).expect("a JWT is valid header text")
}

/// `channel` acting as a service (for any user): what the suite's helpers use.
pub fn as_service(channel: Channel, settings: &Settings) -> AuthChannel {
    with_bearer(channel, bearer(settings, TEST_SERVICE, Role::Service))
}

/// `channel` acting as user `user_id`.
pub fn as_user(channel: Channel, settings: &Settings, user_id: i64) -> AuthChannel {
    with_bearer(channel, bearer(settings, &user_id.to_string(), Role::User))
}

/// `channel` acting as an operator.
pub fn as_admin(channel: Channel, settings: &Settings) -> AuthChannel {
    with_bearer(
        channel,
        bearer(settings, "shardfeed-test-admin", Role::Admin),
    )
}
