//! Who is calling, and what they may do.
//!
//! Every RPC but health and reflection carries `authorization: Bearer <JWT>`. [`AuthLayer`]
//! (one tower layer, installed by [`crate::grpc::GrpcServer`] in both services) verifies it
//! ([`Verifier`]), applies the function-level rule of the method ([`policy`]) and the caller's
//! rate limit ([`limits`]), and hands the [`Caller`] to the handlers in the request extensions.
//! Object-level rules (a user acts only as themselves) need the request's ids: handlers check
//! them with [`Caller::act_as`]. The table of who may call what is [`policy::RULES`].

pub mod layer;
pub mod limits;
pub mod policy;
pub mod verify;

use std::fmt;

use crate::error::ApiError;
use serde::{Deserialize, Serialize};

pub use layer::AuthLayer;
pub use verify::{mint, sign_hs256, AuthError, Claims, Verifier};

/// What a caller is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An end user: acts only as the user id of its subject.
    User,
    /// Another backend acting for its users: may act as any user.
    Service,
    /// An operator: what a service may, plus the operator RPCs and `CreateUser`.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Service => "service",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "user" => Ok(Role::User),
            "service" => Ok(Role::Service),
            "admin" => Ok(Role::Admin),
            other => Err(format!("{other:?} is not a role (user, service or admin)")),
        }
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A bearer JWT.
    Token,
    /// A client certificate verified by mutual TLS (`auth.client_cert_role`).
    Certificate,
    /// None: authentication is off (`auth.enabled = false`, development mode only).
    Nothing,
}

/// The authenticated caller of one request: in its extensions for the handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub` (a user id for a `user`), or the certificate's identity.
    pub subject: String,
    pub role: Role,
    /// The user a `user` caller is; `None` for services and admins.
    pub user_id: Option<i64>,
    pub proof: Proof,
}

impl Caller {
    /// The caller of `request`, as the layer left it. A request without one never passed the
    /// layer: refused, so that a handler mounted without it fails closed.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Caller, ApiError> {
        request
            .extensions()
            .get::<Caller>()
            .ok_or_else(|| ApiError::Unauthenticated(AuthError::Missing.to_string()))
    }

    /// May this caller act as (or on the objects of) `user_id`? Users only as themselves;
    /// services and admins for anyone. A refusal is `PERMISSION_DENIED` naming what was tried.
    pub fn act_as(&self, user_id: i64, what: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Service | Role::Admin => Ok(()),
            Role::User if self.user_id == Some(user_id) => Ok(()),
            Role::User => Err(ApiError::PermissionDenied(format!(
                "user {} may not {what} of user {user_id}: users act only as themselves",
                self.subject
            ))),
        }
    }

    /// `act_as` for a request: its caller, checked against `user_id`.
    pub fn check<T>(request: &tonic::Request<T>, user_id: i64, what: &str) -> Result<(), ApiError> {
        Caller::of(request)?.act_as(user_id, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, user_id: Option<i64>) -> Caller {
        Caller {
            subject: user_id.map_or_else(|| "svc".into(), |id| id.to_string()),
            role,
            user_id,
            proof: Proof::Token,
        }
    }

    #[test]
    fn users_act_only_as_themselves_and_services_for_anyone() {
        let user = caller(Role::User, Some(7));
        assert!(user.act_as(7, "post").is_ok());
        let denied = user.act_as(8, "post as the author").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied
            .to_string()
            .contains("user 7 may not post as the author of user 8"));
        for role in [Role::Service, Role::Admin] {
            assert!(caller(role, None).act_as(8, "post").is_ok());
        }
    }

    #[test]
    fn a_request_that_skipped_the_layer_is_unauthenticated() {
        let request = tonic::Request::new(());
        let err = Caller::check(&request, 1, "read the feed").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn roles_parse_and_print() {
        for role in [Role::User, Role::Service, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
