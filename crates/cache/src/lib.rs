//! The Redis Cluster cache: what is stored per author and per user ([`layout`], the only place
//! that builds keys), the changes the write path makes to it ([`CacheChange`]) and how they are
//! applied ([`CacheWriter`]: atomic per-author Lua scripts, pipelined per node).
//!
//! Invariants every script keeps, so that replays, races and reorderings are harmless:
//! - A post is added once: a post id already present — as a body in `posts` or as a tombstone
//!   in `del` — is never written again, so a replayed create cannot resurrect a deleted post.
//! - An author's keys agree with its meta (`count`, `dels`) and expire together; a key lost on
//!   its own makes the next script (and any reader) treat the author as not loaded.
//! - Below the floor the cache holds nothing: a late change there is dropped.
//! - A follow edge keeps the highest version seen; older changes are ignored.
//! - An author's timeline is trusted by readers only when its meta says `loaded=1`: writes to an
//!   author that is not loaded still land (so a concurrent rebuild merges them) but do not make
//!   the partial timeline look complete.
//! - A deleted user's meta says `gone=1`; nothing is written for them afterwards.

pub mod announce;
mod change;
pub mod hot_set;
pub mod layout;
mod scripts;
mod writer;

pub use change::CacheChange;
pub use layout::CacheLayout;
pub use writer::{AuthorSnapshot, CacheWriter};
