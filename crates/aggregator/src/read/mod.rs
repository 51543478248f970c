//! Reading posts: from the Redis Cluster when it holds what a page needs, from PostgreSQL when
//! it does not (an author never cached or evicted, a page beyond the cached window, a node that
//! does not answer).
//!
//! Order everywhere is newest first, ties by post id descending. Post ids are time-ordered
//! (`post_id >> 22` is the time), so that order is simply `post_id` descending, and a keyset
//! position is "strictly below this post id".

pub mod author;
pub mod head;
pub mod home;
pub mod nodes;
pub mod postgres;
pub mod rebuild;
