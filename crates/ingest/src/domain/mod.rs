//! Validated request values. Each `parse` returns the field violation the caller will see.

mod ids;
mod post;
mod user;

pub use ids::RequestId;
pub use post::PostBody;
pub use user::{DisplayName, Handle};
