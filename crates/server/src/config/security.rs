//! Who may call and with what: bearer tokens (`auth`), per-caller rate limits (`limits`), the
//! page-token secret (`paging`), and development mode, which alone accepts the built-in
//! development secrets.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ConfigError, Settings};

/// Page tokens are authenticated with this secret: every replica of a service must share it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingSettings {
    pub token_secret: SecretString,
    /// A file whose content (without a trailing newline) replaces `token_secret`, for secrets
    /// mounted as files (Kubernetes Secrets, compose secrets).
    #[serde(default)]
    pub token_secret_file: Option<PathBuf>,
}

/// Who may call: bearer JWTs (see `auth`), verified against these keys and claims.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Off, every request is made as an anonymous admin: for measuring what authentication
    /// costs (`shardfeed bench feed`), in development mode only.
    pub enabled: bool,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (one of its audiences).
    pub audience: String,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// A shared HS256 key (at least 32 bytes). Unset in development mode means the built-in
    /// development key, which the services refuse outside it.
    #[serde(default)]
    pub hs256_secret: Option<SecretString>,
    /// A file whose content replaces `hs256_secret`.
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// Public keys (PEM), each selected by the `kid` of a token's header: several at once
    /// for rotation.
    #[serde(default)]
    pub public_keys: Vec<PublicKeySettings>,
    /// A JWKS file (`{"keys": [...]}`) of further public keys, selected by `kid`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// With client certificates (`grpc.tls_client_auth`), a request without a bearer token
    /// is made as the verified certificate's identity (its first URI or DNS name, else its
    /// CN) in this role; `none` (the default) requires a token always.
    pub client_cert_role: ClientCertRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertRole {
    None,
    Service,
    Admin,
}

/// One verification key from a PEM file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeySettings {
    pub kid: String,
    /// `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`, `ES256`, `ES384` or `EdDSA`.
    pub algorithm: String,
    pub file: PathBuf,
}

/// Per-caller rate limits: a token bucket per subject and request class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub enabled: bool,
    /// Reads (feeds, timelines, lookups, lists) by a `user` caller.
    pub user_reads: Quota,
    /// Writes (posts, follows, profile changes) by a `user` caller.
    pub user_writes: Quota,
    /// Reads by a `service` or `admin` caller, which acts for many users.
    pub service_reads: Quota,
    pub service_writes: Quota,
    /// Operator RPCs (`HotspotService`), whoever calls.
    pub operator: Quota,
}

/// A sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub per_second: u32,
    pub burst: u32,
}

/// The page-token secret of the defaults: anyone can read it here, so the services accept it
/// in development mode only.
pub const DEV_PAGE_TOKEN_SECRET: &str = "shardfeed-development-page-token-secret";

/// The JWT key of development mode when no key is configured (`shardfeed token` mints with
/// it). Refused outside development mode.
pub const DEV_JWT_SECRET: &str = "shardfeed-development-jwt-signing-key-not-for-production";

impl Settings {
    /// The HS256 key tokens are verified (and `shardfeed token` mints) with: the configured
    /// one, else the built-in development key in development mode.
    pub fn hs256_secret(&self) -> Option<&str> {
        match &self.auth.hs256_secret {
            Some(secret) => Some(secret.expose_secret()),
            None if self.dev_mode => Some(DEV_JWT_SECRET),
            None => None,
        }
    }

    /// What a service checks before it starts: outside development mode, no built-in
    /// development secret and at least one way to verify tokens. The error says why and what
    /// to set.
    pub fn refuse_development_secrets(&self) -> Result<(), ConfigError> {
        if self.dev_mode {
            return Ok(());
        }
        if !self.auth.enabled {
            return Err(ConfigError(
                "auth.enabled = false admits anyone as an admin: development mode only".into(),
            ));
        }
        let why = "it is published in the source; set your own (or dev_mode = true, \
                   SHARDFEED_DEV_MODE=true, for local development only)";
        if self.paging.token_secret.expose_secret() == DEV_PAGE_TOKEN_SECRET {
            return Err(ConfigError(format!(
                "paging.token_secret is the built-in development secret: {why}, e.g. \
                 paging.token_secret_file"
            )));
        }
        if self.hs256_secret() == Some(DEV_JWT_SECRET) {
            return Err(ConfigError(format!(
                "auth.hs256_secret is the built-in development key: {why}"
            )));
        }
        if self.hs256_secret().is_none()
            && self.auth.public_keys.is_empty()
            && self.auth.jwks_file.is_none()
        {
            return Err(ConfigError(
                "auth: no key to verify tokens with; set auth.hs256_secret(_file), \
                 auth.public_keys or auth.jwks_file (or dev_mode = true for the built-in \
                 development key)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The checks of the `auth`, `limits` and `paging` sections.
    pub(super) fn validate_security(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if let Some(secret) = &self.auth.hs256_secret {
            if secret.expose_secret().len() < 32 {
                return bad("auth.hs256_secret", "must be at least 32 bytes");
            }
        }
        if self.auth.client_cert_role != ClientCertRole::None
            && self.grpc.tls_client_auth == crate::tls::ClientAuth::None
        {
            return bad(
                "auth.client_cert_role",
                "needs client certificates: set grpc.tls_client_auth (and its CA)",
            );
        }
        if self.auth.issuer.is_empty() || self.auth.audience.is_empty() {
            return bad("auth.issuer", "and auth.audience must not be empty");
        }
        for (name, quota) in [
            ("limits.user_reads", self.limits.user_reads),
            ("limits.user_writes", self.limits.user_writes),
            ("limits.service_reads", self.limits.service_reads),
            ("limits.service_writes", self.limits.service_writes),
            ("limits.operator", self.limits.operator),
        ] {
            if quota.per_second == 0 || quota.burst == 0 {
                return bad(name, "per_second and burst must be positive");
            }
        }
        if self.paging.token_secret.expose_secret().len() < 16 {
            return bad("paging.token_secret", "must be at least 16 bytes");
        }
        Ok(())
    }
}
