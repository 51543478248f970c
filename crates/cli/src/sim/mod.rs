//! `shardfeed sim`: the hot-partition simulation.
//!
//! 1. Builds a social graph whose author popularity follows a Zipf law and loads it through
//!    the ingest gRPC API (users, follows, posts), with progress bars.
//! 2. Runs the same mixed workload twice against an aggregator this command starts itself with
//!    the stack's settings: first with every hot-partition mitigation off, then with them on.
//!    The mix: home feeds of random users, profile views (`GetUserTimeline`) of authors drawn
//!    by popularity, and posts (`CreatePost`) by authors drawn by popularity too.
//! 3. Measures each run from the Redis masters themselves (`INFO commandstats` and `INFO cpu`
//!    deltas) and from the client (rates, latency percentiles, how long a hot author's new post
//!    takes to show), checks home feeds against PostgreSQL, prints the table, writes the report
//!    and ends with a one-line JSON summary.

mod drive;
mod figures;
mod masters;
mod population;
mod report;
mod run;
mod workload;

pub use run::{run, SimArgs};
