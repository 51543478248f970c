//! The keyset position carried by page tokens.

use serde::{Deserialize, Serialize};

/// The last post a page ended with: the next page starts strictly after it (older).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The post's time, ms since the Unix epoch (its timeline score).
    pub time_ms: i64,
    pub post_id: i64,
}

impl Position {
    /// The first post id that may appear after this position, exclusive bound.
    pub fn before_id(position: Option<Position>) -> i64 {
        position.map_or(i64::MAX, |p| p.post_id)
    }
}
