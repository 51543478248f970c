//! The frame both shardfeed services run in: the typed configuration ([`config`]), telemetry,
//! the error → gRPC status mapping ([`error`]), deadlines, signed page tokens ([`paging`]), the
//! store clients ([`postgres`]: the pool and the migrations; [`redis`]: the cluster client; both
//! authenticated, with TLS as an option), and the gRPC server builder with health, reflection,
//! limits, authentication ([`auth`]), TLS ([`tls`]) and graceful shutdown ([`grpc`]); the spans
//! of the calls served and of the store calls ([`spans`]).

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod deadline;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod paging;
pub mod postgres;
pub mod redis;
pub mod shutdown;
pub mod spans;
pub mod store_tls;
pub mod telemetry;
pub mod tls;

pub use config::Settings;
pub use error::{ApiError, ApiResult};

/// Ends a binary: success, or the error with its cause chain on one line and exit status 1.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
