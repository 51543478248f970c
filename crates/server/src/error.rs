//! The one place where failures become gRPC statuses.
//!
//! Handlers return [`ApiError`]; its `From` impl for [`tonic::Status`] picks the code, writes the
//! client-facing message and attaches `BadRequest` field violations. Internal causes are logged
//! with their whole chain and never leak into the message.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One field at fault in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path as the caller wrote it, e.g. `display_name`.
    pub field: String,
    pub description: String,
}

/// Every way a request can fail, as the caller should see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidArgument {
        message: String,
        violations: Vec<FieldViolation>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request conflicts with an earlier one (e.g. a reused `request_id`).
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller is not who it must be to do this (`auth::Caller::act_as`).
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A backing store did not answer. `store` names it for the caller; the cause is logged.
    #[error("{store} is unavailable; retry with backoff")]
    Unavailable {
        store: &'static str,
        #[source]
        source: anyhow::Error,
    },
    #[error("the deadline passed before the request completed")]
    DeadlineExceeded,
    #[error("not implemented yet: {0}")]
    Unimplemented(&'static str),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The id a request carries in `field`, as a typed id of the contract
/// (`shardfeed_proto::ids::UserId`, `PostId`): a value that is no id is `INVALID_ARGUMENT`
/// blaming the field.
pub fn parse_id<T: TryFrom<i64>>(field: &'static str, value: i64) -> ApiResult<T> {
    T::try_from(value).map_err(|_| ApiError::invalid_field(field, "must be a positive id"))
}

impl ApiError {
    /// `INVALID_ARGUMENT` blaming one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let field = field.into();
        let description = description.into();
        ApiError::InvalidArgument {
            message: format!("invalid {field}: {description}"),
            violations: vec![FieldViolation { field, description }],
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::NotFound(what.into())
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(source.into())
    }

    pub fn postgres_unavailable(source: impl Into<anyhow::Error>) -> Self {
        ApiError::Unavailable {
            store: "PostgreSQL",
            source: source.into(),
        }
    }

    pub fn redis_unavailable(source: impl Into<anyhow::Error>) -> Self {
        ApiError::Unavailable {
            store: "Redis",
            source: source.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument { .. } => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Aborted(_) => Code::Aborted,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::Unavailable { .. } => Code::Unavailable,
            ApiError::DeadlineExceeded => Code::DeadlineExceeded,
            ApiError::Unimplemented(_) => Code::Unimplemented,
            ApiError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let code = err.code();
        match &err {
            ApiError::Internal(source) => {
                tracing::error!(error = format!("{source:#}"), "internal error");
            }
            ApiError::Unavailable { store, source } => {
                tracing::warn!(store, error = format!("{source:#}"), "store unavailable");
            }
            _ => {}
        }
        let message = err.to_string();
        match err {
            ApiError::InvalidArgument { violations, .. } if !violations.is_empty() => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(code, message, details)
            }
            _ => Status::new(code, message),
        }
    }
}

/// Classifies a PostgreSQL client error: lost connections, a server shutting down or refusing
/// connections, and exhausted resources are `UNAVAILABLE`; a cancelled statement (our
/// `statement_timeout`) is `DEADLINE_EXCEEDED`; anything else is a bug or a schema mismatch.
impl From<tokio_postgres::Error> for ApiError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let code = db.code().code();
            return if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") {
                ApiError::postgres_unavailable(err)
            } else if code == "57014" {
                ApiError::DeadlineExceeded
            } else {
                ApiError::internal(err)
            };
        }
        // No server-side error: the connection broke or could not be made.
        ApiError::postgres_unavailable(err)
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match err {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(_) | PoolError::Closed => ApiError::postgres_unavailable(err),
            PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => ApiError::internal(err),
        }
    }
}

/// Whether a Redis error is one that passes: connection trouble, a timeout, or the cluster
/// being reconfigured (a failover, a moved slot, a node loading its data or read-only while it
/// is a replica). Retrying later can succeed; anything else will fail the same way again.
pub fn redis_error_is_transient(err: &fred::error::Error) -> bool {
    use fred::error::ErrorKind;
    const PASSING_REPLIES: [&str; 8] = [
        "CLUSTERDOWN",
        "MOVED",
        "ASK",
        "TRYAGAIN",
        "LOADING",
        "MASTERDOWN",
        "READONLY",
        "BUSY",
    ];
    matches!(
        err.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Cluster
            | ErrorKind::Canceled
            | ErrorKind::Routing
            | ErrorKind::Backpressure
    ) || PASSING_REPLIES
        .iter()
        .any(|reply| err.details().starts_with(reply))
}

/// Redis errors that pass ([`redis_error_is_transient`]) are `UNAVAILABLE`; others `INTERNAL`.
impl From<fred::error::Error> for ApiError {
    fn from(err: fred::error::Error) -> Self {
        if redis_error_is_transient(&err) {
            ApiError::redis_unavailable(err)
        } else {
            ApiError::internal(err)
        }
    }
}

/// Result alias for handlers and the code under them.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_carries_a_bad_request_violation() {
        let status: Status = ApiError::invalid_field("handle", "must be 3-30 characters").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("handle"));
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("a BadRequest detail");
        assert_eq!(bad_request.field_violations.len(), 1);
        assert_eq!(bad_request.field_violations[0].field, "handle");
    }

    #[test]
    fn internal_causes_do_not_leak() {
        let status: Status =
            ApiError::internal(anyhow::anyhow!("relation \"users\" does not exist")).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("relation"));
    }

    #[test]
    fn unavailable_names_the_store_only() {
        let status: Status =
            ApiError::postgres_unavailable(anyhow::anyhow!("connection refused 10.1.2.3")).into();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("PostgreSQL"));
        assert!(!status.message().contains("10.1.2.3"));
    }
}
