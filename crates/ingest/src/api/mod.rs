//! gRPC handlers of the write path: validate, call the store, map to the wire.

pub mod graph;
pub mod posts;
pub mod users;
