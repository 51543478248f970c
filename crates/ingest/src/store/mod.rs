//! PostgreSQL access for the write path. Functions take a pool or a transaction and return
//! [`shardfeed_server::ApiError`]s already classified (unavailable, not found, conflict).

pub mod graph;
pub mod idempotency;
pub mod outbox;
pub mod posts;
pub mod users;
