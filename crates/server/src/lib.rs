//! What both shardfeed services share: typed configuration, telemetry, the error → gRPC status
//! mapping, the PostgreSQL pool and migrations, the Redis Cluster client, and the gRPC server
//! plumbing (health, reflection, deadlines, shutdown).

#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
pub mod deadline;
pub mod error;
pub mod ids;
pub mod paging;
pub mod postgres;
pub mod redis;
pub mod server;
pub mod shutdown;
pub mod telemetry;

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
