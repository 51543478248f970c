//! What both shardfeed services share: typed configuration, telemetry, the error → gRPC status
//! mapping, the PostgreSQL pool and migrations, the Redis Cluster client, and the gRPC server
//! plumbing (health, reflection, deadlines, shutdown).

#![forbid(unsafe_code)]

pub mod config;
pub mod deadline;
pub mod error;
pub mod postgres;
pub mod redis;
pub mod server;
pub mod shutdown;
pub mod telemetry;

pub use config::Settings;
pub use error::{ApiError, ApiResult};
