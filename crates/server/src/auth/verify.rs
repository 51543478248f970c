//! Bearer JWTs: verification against the configured keys, and minting with the HS256 key.

use std::{collections::HashMap, path::Path, time::Duration};

use jsonwebtoken::{
    decode, decode_header, encode,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet},
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};

use super::{Caller, Proof, Role};
use crate::config::{ConfigError, Settings};

/// The claims shardfeed reads and mints. `aud` may be one string or a list (RFC 7519).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// `user` when absent.
    #[serde(default = "user_role")]
    pub role: Role,
    pub iss: String,
    pub aud: Audience,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

fn user_role() -> Role {
    Role::User
}

/// Why a request is `UNAUTHENTICATED`. The message says which check failed and never echoes
/// the token or any key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send `authorization: Bearer <JWT>` metadata")]
    Missing,
    #[error("the authorization metadata must be `Bearer <JWT>`")]
    NotBearer,
    #[error("malformed token: not a signed JWT")]
    Malformed,
    #[error("the token names a key id this service does not know")]
    UnknownKey,
    #[error("the token has no key id (kid) and this service has several keys")]
    NoKeyId,
    #[error("the token's algorithm is not the one of its key")]
    WrongAlgorithm,
    #[error("the token's signature does not verify (forged or tampered)")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token is issued in the future (iat)")]
    IssuedInFuture,
    #[error("the token's issuer (iss) is not accepted")]
    WrongIssuer,
    #[error("the token's audience (aud) does not include this service")]
    WrongAudience,
    #[error("the token lacks the {0} claim")]
    MissingClaim(String),
    #[error("the token's claims are not valid: {0}")]
    BadClaims(String),
    #[error("a user token's subject must be a positive user id")]
    SubjectNotAUser,
}

impl From<AuthError> for tonic::Status {
    fn from(err: AuthError) -> Self {
        tonic::Status::unauthenticated(err.to_string())
    }
}

struct Key {
    algorithm: Algorithm,
    key: DecodingKey,
    /// The checks of a token of this key, built once (not per request).
    validation: Validation,
}

impl Key {
    fn new(algorithm: Algorithm, key: DecodingKey) -> Self {
        Key {
            algorithm,
            key,
            validation: Validation::new(algorithm),
        }
    }
}

/// The claims checks of `auth` for tokens signed with `algorithm`.
fn validation(algorithm: Algorithm, auth: &crate::config::AuthSettings) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = auth.leeway_secs;
    validation.validate_nbf = true;
    validation.set_issuer(&[&auth.issuer]);
    validation.set_audience(&[&auth.audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
    validation
}

/// Verifies bearer tokens: signature by the key the header's `kid` selects (the HS256 key for
/// a token without one), algorithm of that key only, `exp`/`nbf`/`iat` with a bounded skew,
/// `iss` and `aud`.
pub struct Verifier {
    by_kid: HashMap<String, Key>,
    /// The key of tokens without a `kid`: the HS256 key, else the only key there is.
    default: Option<String>,
    issuer: String,
    audience: String,
    leeway: u64,
}

/// The `kid` under which the HS256 key is also known (`shardfeed token` sets it).
pub const HS256_KID: &str = "hs256";

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl Verifier {
    /// The keys of `settings.auth` (files read now); the error names the setting at fault.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let auth = &settings.auth;
        let mut by_kid = HashMap::new();
        if let Some(secret) = settings.hs256_secret() {
            by_kid.insert(
                HS256_KID.to_owned(),
                Key::new(
                    Algorithm::HS256,
                    DecodingKey::from_secret(secret.as_bytes()).map_err(|e| {
                        ConfigError::new(format!("auth.hs256_secret: not a usable key: {e}"))
                    })?,
                ),
            );
        }
        for (i, pk) in auth.public_keys.iter().enumerate() {
            let name = format!("auth.public_keys[{i}]");
            let algorithm: Algorithm = pk.algorithm.parse().map_err(|_| {
                ConfigError::new(format!("{name}.algorithm: {:?} is unknown", pk.algorithm))
            })?;
            let pem = std::fs::read(&pk.file).map_err(|e| {
                ConfigError::new(format!(
                    "{name}.file: cannot read {}: {e}",
                    pk.file.display()
                ))
            })?;
            let key = pem_key(algorithm, &pem)
                .map_err(|why| ConfigError::new(format!("{name}.file: {why}")))?;
            if by_kid
                .insert(pk.kid.clone(), Key::new(algorithm, key))
                .is_some()
            {
                return Err(ConfigError::new(format!("{name}.kid: {:?} twice", pk.kid)));
            }
        }
        if let Some(path) = &auth.jwks_file {
            for (kid, key) in jwks_keys(path)? {
                if by_kid.insert(kid.clone(), key).is_some() {
                    return Err(ConfigError::new(format!(
                        "auth.jwks_file: key id {kid:?} is configured twice"
                    )));
                }
            }
        }
        if by_kid.is_empty() {
            return Err(ConfigError::new(
                "auth: no key to verify tokens with (auth.hs256_secret, auth.public_keys, \
                 auth.jwks_file, or dev_mode for the development key)"
                    .into(),
            ));
        }
        for key in by_kid.values_mut() {
            key.validation = validation(key.algorithm, auth);
        }
        let default = if by_kid.contains_key(HS256_KID) {
            Some(HS256_KID.to_owned())
        } else if by_kid.len() == 1 {
            by_kid.keys().next().cloned()
        } else {
            None
        };
        Ok(Verifier {
            by_kid,
            default,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            leeway: auth.leeway_secs,
        })
    }

    /// The value of an `authorization` header: `Bearer <JWT>` (scheme case-insensitive).
    pub fn verify_header(&self, value: &[u8]) -> Result<Caller, AuthError> {
        let value = std::str::from_utf8(value).map_err(|_| AuthError::NotBearer)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        self.verify(token.trim())
    }

    /// A compact JWT → its caller.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Malformed)?;
        let kid = match header.kid.as_deref() {
            Some(kid) => kid,
            None => self.default.as_deref().ok_or(AuthError::NoKeyId)?,
        };
        let key = self.by_kid.get(kid).ok_or(AuthError::UnknownKey)?;
        if header.alg != key.algorithm {
            return Err(AuthError::WrongAlgorithm);
        }
        let claims = decode::<Claims>(token, &key.key, &key.validation)
            .map_err(|e| match e.into_kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
                ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
                ErrorKind::InvalidClaimFormat(claim) => {
                    AuthError::BadClaims(format!("{claim} has the wrong type"))
                }
                ErrorKind::Json(e) => claims_error(&e),
                _ => AuthError::Malformed,
            })?
            .claims;
        if claims.iat > now_secs() + self.leeway {
            return Err(AuthError::IssuedInFuture);
        }
        let user_id = match claims.role {
            Role::User => Some(
                claims
                    .sub
                    .parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or(AuthError::SubjectNotAUser)?,
            ),
            Role::Service | Role::Admin => None,
        };
        Ok(Caller {
            subject: claims.sub,
            role: claims.role,
            user_id,
            proof: Proof::Token,
        })
    }
}

/// A serde error on the claims: a missing claim by name, else what serde says about the
/// claim (e.g. ``unknown variant `root` ``), without the position.
fn claims_error(e: &serde_json::Error) -> AuthError {
    let text = e.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text);
    match text
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        Some(claim) => AuthError::MissingClaim(claim.to_owned()),
        None => AuthError::BadClaims(text.to_owned()),
    }
}

fn pem_key(algorithm: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    let parsed = match algorithm {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem),
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return Err("a public key cannot be HMAC; use auth.hs256_secret".into())
        }
        other => return Err(format!("{other:?} is not supported")),
    };
    parsed.map_err(|e| format!("not a {algorithm:?} public key in PEM: {e}"))
}

fn jwks_keys(path: &Path) -> Result<Vec<(String, Key)>, ConfigError> {
    let err = |why: String| ConfigError::new(format!("auth.jwks_file {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| err(format!("not a JWKS: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| err("every key needs a kid".into()))?;
        let algorithm = jwk_algorithm(jwk).map_err(|why| err(format!("key {kid:?}: {why}")))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| err(format!("key {kid:?}: {e}")))?;
        keys.push((kid, Key::new(algorithm, key)));
    }
    Ok(keys)
}

/// The key's `alg`, else the one its key type implies.
fn jwk_algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    if let Some(alg) = jwk.common.key_algorithm {
        return Algorithm::try_from(alg).map_err(|_| format!("{alg:?} is no signature algorithm"));
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Ok(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(Algorithm::ES256),
            EllipticCurve::P384 => Ok(Algorithm::ES384),
            ref other => Err(format!("curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(_) => Ok(Algorithm::EdDSA),
        AlgorithmParameters::OctetKey(_) => Err("symmetric keys do not belong in a JWKS".into()),
        _ => Err("the key type is not supported".into()),
    }
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A token for `subject` in `role`, valid for `ttl` from now, signed with the HS256 key of
/// `settings` (the development key in development mode).
pub fn mint(
    settings: &Settings,
    subject: &str,
    role: Role,
    ttl: Duration,
) -> anyhow::Result<String> {
    let secret = settings.hs256_secret().ok_or_else(|| {
        anyhow::anyhow!(
            "no HS256 key to sign with: set auth.hs256_secret(_file), or dev_mode = true \
             (SHARDFEED_DEV_MODE=true) for the development key"
        )
    })?;
    let now = now_secs();
    let claims = Claims {
        sub: subject.to_owned(),
        role,
        iss: settings.auth.issuer.clone(),
        aud: Audience::One(settings.auth.audience.clone()),
        exp: now + ttl.as_secs(),
        nbf: now,
        iat: now,
    };
    sign_hs256(&claims, secret)
}

/// `claims` signed with `secret`, with the `kid` of the HS256 key.
pub fn sign_hs256(claims: &Claims, secret: &str) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(HS256_KID.to_owned());
    Ok(encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes())?,
    )?)
}
