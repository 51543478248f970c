//! Measuring requests against a running stack, shared by every `shardfeed bench` and by
//! `shardfeed sim`: per-worker recording of latencies and errors, the closed-loop driver, the
//! figures of one measured phase, and their tables.

pub mod driver;
pub mod record;
pub mod summary;
pub mod table;

pub use driver::{closed_loop, Op, Timing};
pub use record::{OpError, Record};
pub use summary::{median_by, round, PhaseJson, Summary};
