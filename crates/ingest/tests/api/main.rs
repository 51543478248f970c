//! Integration tests of the ingest service: the real server, in-process on port 0, against a
//! real PostgreSQL (and Redis Cluster) started by shardfeed-testkit, called through the
//! generated clients.

mod auth;
mod cache;
mod contention;
mod copies;
mod graph;
mod helpers;
mod outbox;
mod posts;
mod server;
mod tls;
mod users;
