//! The cache changes the write path makes, as stored in the outbox (JSON) and applied by
//! [`super::CacheWriter`].

use serde::{Deserialize, Serialize};

/// One change to the cache, mirroring one committed write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CacheChange {
    /// A new user: an empty, complete timeline and followee set.
    UserCreated {
        user_id: i64,
    },
    /// A user is gone: their keys are removed and their meta marked `gone`.
    UserDeleted {
        user_id: i64,
    },
    PostCreated {
        author_id: i64,
        post_id: i64,
        /// Creation time, ms since the Unix epoch: the timeline score.
        time_ms: i64,
        body: String,
    },
    PostDeleted {
        author_id: i64,
        post_id: i64,
    },
    /// `follower_id` now follows `followee_id`, as of graph version `version`.
    Followed {
        follower_id: i64,
        followee_id: i64,
        version: i64,
    },
    /// `follower_id` no longer follows `followee_id`, as of graph version `version`.
    Unfollowed {
        follower_id: i64,
        followee_id: i64,
        version: i64,
    },
}

impl CacheChange {
    /// The user whose hash tag (slot) the change touches.
    pub fn slot_owner(&self) -> i64 {
        match *self {
            CacheChange::UserCreated { user_id } | CacheChange::UserDeleted { user_id } => user_id,
            CacheChange::PostCreated { author_id, .. }
            | CacheChange::PostDeleted { author_id, .. } => author_id,
            CacheChange::Followed { follower_id, .. }
            | CacheChange::Unfollowed { follower_id, .. } => follower_id,
        }
    }
}

impl CacheChange {
    /// The author whose timeline the change alters, if any: what readers that keep a copy of
    /// timelines (the aggregator's near-cache) must hear about.
    pub fn timeline_author(&self) -> Option<i64> {
        match *self {
            CacheChange::PostCreated { author_id, .. }
            | CacheChange::PostDeleted { author_id, .. } => Some(author_id),
            CacheChange::UserDeleted { user_id } => Some(user_id),
            _ => None,
        }
    }

    /// The user whose cached state readers keep in memory and must forget when the change
    /// lands: the author of a timeline change (newest-post time, timeline head), the follower
    /// of a follow change (followee set). What ingest announces (see [`super::announce`]).
    pub fn announced_user(&self) -> Option<i64> {
        match *self {
            CacheChange::Followed { follower_id, .. }
            | CacheChange::Unfollowed { follower_id, .. } => Some(follower_id),
            _ => self.timeline_author(),
        }
    }
}

impl CacheChange {
    /// The SQL expression that builds this kind of change's outbox JSON from columns named like
    /// its fields, for statements that draw the values themselves (a post id from a sequence):
    /// `jsonb_build_object('kind', 'post_created', 'author_id', author_id, …)`. The field
    /// names come from the serde form, so the JSON the relay decodes is defined once.
    pub fn sql_json(&self) -> String {
        let value = serde_json::to_value(self).expect("a change serializes");
        let object = value.as_object().expect("a change is a JSON object");
        let mut parts = vec![format!(
            "'kind', '{}'",
            object["kind"].as_str().unwrap_or_default()
        )];
        parts.extend(
            object
                .keys()
                .filter(|k| *k != "kind")
                .map(|k| format!("'{k}', {k}")),
        );
        format!("jsonb_build_object({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_form_names_every_field() {
        let sql = CacheChange::PostCreated {
            author_id: 0,
            post_id: 0,
            time_ms: 0,
            body: String::new(),
        }
        .sql_json();
        assert_eq!(
            sql,
            "jsonb_build_object('kind', 'post_created', 'author_id', author_id, \
             'body', body, 'post_id', post_id, 'time_ms', time_ms)"
        );
        assert_eq!(
            CacheChange::UserCreated { user_id: 0 }.sql_json(),
            "jsonb_build_object('kind', 'user_created', 'user_id', user_id)"
        );
    }

    #[test]
    fn outbox_json_round_trips() {
        let change = CacheChange::PostCreated {
            author_id: 7,
            post_id: 123,
            time_ms: 1_700_000_000_000,
            body: "hello".into(),
        };
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(json["kind"], "post_created");
        assert_eq!(serde_json::from_value::<CacheChange>(json).unwrap(), change);
        assert_eq!(change.slot_owner(), 7);
    }
}
