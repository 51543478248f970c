//! The shardfeed wire contract: the protobuf messages and gRPC services of package
//! `shardfeed.v1`, generated from `proto/` at build time.
//!
//! Both services and every client depend on this crate and on nothing else for the contract.
//! Beside the generated code stand the hand-written helpers every side needs: the post id
//! scheme ([`ids`]), `Timestamp` ↔ milliseconds ([`time`]) and the bearer token a client sends
//! ([`auth`]).

#![forbid(unsafe_code)]

pub mod auth;
pub mod ids;
pub mod time;

/// Package `shardfeed.v1`: users, the follow graph, posts, feeds and hot-spot reports.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("shardfeed.v1");
}

/// The encoded `FileDescriptorSet` of every shardfeed proto and its imports, for server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/shardfeed_descriptor.bin"));
