//! gRPC handlers of the read path.

pub mod feed;
pub mod hotspot;
