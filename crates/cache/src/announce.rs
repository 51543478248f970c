//! Announcements of delivered changes: after a batch of changes reaches the cluster, ingest
//! publishes on the `changes` channel the ids of the users whose cached state it altered (the
//! author of a timeline change, the follower of a follow change), and every aggregator drops
//! what it keeps of them in memory.
//!
//! The message is the ids in decimal, comma-separated: small, and readable with
//! `redis-cli SUBSCRIBE changes`. Pub/sub is at-most-once: a subscriber that reconnects has
//! missed messages and must drop everything it keeps (and every copy is also bounded by a
//! short TTL, so even a lost message delays a change by no more than that).

use super::CacheChange;

/// The message announcing `changes`, or `None` when none of them alters what readers keep.
pub fn encode<'a>(changes: impl IntoIterator<Item = &'a CacheChange>) -> Option<String> {
    let mut authors: Vec<i64> = changes
        .into_iter()
        .filter_map(CacheChange::announced_user)
        .collect();
    if authors.is_empty() {
        return None;
    }
    authors.sort_unstable();
    authors.dedup();
    Some(
        authors
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The author ids of an announcement; whatever does not parse is skipped.
pub fn decode(message: &str) -> Vec<i64> {
    message
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announces_each_changed_user_once() {
        let changes = [
            CacheChange::PostCreated {
                author_id: 9,
                post_id: 1,
                time_ms: 1,
                body: "a".into(),
            },
            CacheChange::Followed {
                follower_id: 4,
                followee_id: 5,
                version: 1,
            },
            CacheChange::PostDeleted {
                author_id: 9,
                post_id: 1,
            },
            CacheChange::UserDeleted { user_id: 3 },
        ];
        let message = encode(&changes).unwrap();
        assert_eq!(message, "3,4,9");
        assert_eq!(decode(&message), vec![3, 4, 9]);
        assert_eq!(encode(&changes[1..2]).as_deref(), Some("4"), "the follower");
        assert_eq!(encode(&[CacheChange::UserCreated { user_id: 8 }]), None);
        assert_eq!(decode("12,x,,7"), vec![12, 7]);
    }
}
