//! Validated request values. Each `parse` returns the field violation the caller will see.

mod ids;
mod user;

pub use ids::{parse_id, RequestId};
pub use user::{DisplayName, Handle};
