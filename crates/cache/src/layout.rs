//! Redis key layout. Every key of one user carries the hash tag `{u:<id>}`, so an author's
//! timeline, post bodies and meta, and the user's followee set, live in one slot on one node
//! and can be changed together by one script.
//!
//! | key | type | content |
//! |---|---|---|
//! | `{u:42}:tl` | sorted set | score = post time (ms since the Unix epoch), member = post id; the newest `cache.timeline_len` live posts |
//! | `{u:42}:posts` | hash | post id → prost-encoded `shardfeed.v1.Post`: the body of every post in `tl`, and nothing else |
//! | `{u:42}:del` | sorted set | score = post time, member = post id: deleted posts at or above the floor, at most `cache.timeline_len` (tombstones) |
//! | `{u:42}:meta` | hash | `loaded` (1 once the timeline can be trusted), `complete` (1 while it holds every live post of the author), `floor`/`floor_ms` (when not complete: the post below which the cache knows nothing), `newest_ms`, `count` (entries of `tl` and of `posts`), `dels` (entries of `del`), `gone` (1 once the user is deleted) |
//! | `{u:42}:fol` | hash | followee id → edge version (positive: following; negative: unfollowed), and `_loaded` |
//!
//! The four keys of an author always carry one expiry time, set together by every script, and
//! `count`/`dels` let scripts and readers notice that one of them went missing on its own
//! (eviction, an operator): see `docs/cache.md`.
//!
//! Key replication of hot authors: copy `n` of author 42's timeline lives under the hash tag
//! `{u:42~n}` (`{u:42~3}:tl`, `:posts`, `:meta`, same content and scripts as the original),
//! with `n` picked per master so that each master holds one copy (see [`copy_numbers`]).
//!
//! Keys that belong to no user: `hot` (sorted set: author id → until when, ms since the Unix
//! epoch, it counts as hot; written by every aggregator, read by ingest), the pub/sub channel
//! `changes` (ingest announces the authors whose timelines a delivered change touched) and one
//! `{probe:N}` per master (a string the writer sets before each `WAIT`, see [`probe_key`]).
//!
//! An optional namespace is put in front of every key, outside the hash tag, so that several
//! deployments or test runs can share a cluster.

/// The value an older layout stored in `{u:A}:posts` for a deleted post; never a body.
pub const TOMBSTONE: &str = "~";

/// Meta fields of an author.
pub mod meta {
    pub const LOADED: &str = "loaded";
    pub const COMPLETE: &str = "complete";
    pub const NEWEST_MS: &str = "newest_ms";
    pub const COUNT: &str = "count";
    pub const DELS: &str = "dels";
    pub const FLOOR: &str = "floor";
    pub const FLOOR_MS: &str = "floor_ms";
    pub const GONE: &str = "gone";
}

/// An author's meta as readers and the writer see it: every field of `{u:A}:meta`, read with
/// one `HMGET meta` of [`AuthorMeta::FIELDS`] and decoded in one place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorMeta {
    /// The timeline can be trusted (rebuilt, or warmed from the first post on).
    pub loaded: bool,
    /// The timeline holds every live post of the author.
    pub complete: bool,
    /// The user is deleted; nothing is cached for them any more.
    pub gone: bool,
    /// Entries of `tl` (and of `posts`); `None` when absent or not a number.
    pub count: Option<i64>,
    /// Entries of `del`.
    pub dels: Option<i64>,
    /// The time of the newest post written, ms since the Unix epoch.
    pub newest_ms: Option<i64>,
    /// When not complete: the post id below which the cache knows nothing.
    pub floor: Option<String>,
    /// The time of the floor post.
    pub floor_ms: Option<i64>,
}

impl AuthorMeta {
    /// The fields to `HMGET`, in the order [`AuthorMeta::decode`] reads them.
    pub const FIELDS: [&'static str; 8] = [
        meta::LOADED,
        meta::COMPLETE,
        meta::GONE,
        meta::COUNT,
        meta::DELS,
        meta::NEWEST_MS,
        meta::FLOOR,
        meta::FLOOR_MS,
    ];

    /// The fields a reader of the timeline needs: [`AuthorMeta::FIELDS`] without the floor and
    /// the tombstone count, which only the writer uses.
    pub const READ_FIELDS: [&'static str; 5] = [
        meta::LOADED,
        meta::COMPLETE,
        meta::GONE,
        meta::COUNT,
        meta::NEWEST_MS,
    ];

    /// Decodes the replies of `HMGET meta` [`AuthorMeta::FIELDS`]. A missing meta (every
    /// reply nil) is the default: not loaded, nothing known.
    pub fn decode(values: &[Option<String>]) -> AuthorMeta {
        Self::decode_fields(&Self::FIELDS, values)
    }

    /// Decodes the replies of `HMGET meta` [`AuthorMeta::READ_FIELDS`].
    pub fn decode_read(values: &[Option<String>]) -> AuthorMeta {
        Self::decode_fields(&Self::READ_FIELDS, values)
    }

    /// Decodes the replies of `HMGET meta` of `fields` (names of [`meta`]), in that order;
    /// a field not asked for is left at its default.
    pub fn decode_fields(fields: &[&str], values: &[Option<String>]) -> AuthorMeta {
        let text = |name: &str| {
            let i = fields.iter().position(|f| *f == name)?;
            values.get(i)?.as_deref().filter(|v| !v.is_empty())
        };
        let flag = |name: &str| text(name) == Some("1");
        let number = |name: &str| text(name).and_then(|v| v.parse::<i64>().ok());
        AuthorMeta {
            loaded: flag(meta::LOADED),
            complete: flag(meta::COMPLETE),
            gone: flag(meta::GONE),
            count: number(meta::COUNT),
            dels: number(meta::DELS),
            newest_ms: number(meta::NEWEST_MS),
            floor: text(meta::FLOOR).map(str::to_owned),
            floor_ms: number(meta::FLOOR_MS),
        }
    }
}

/// The field of `{u:F}:fol` that marks the set as complete.
pub const FOLLOWING_LOADED: &str = "_loaded";

/// Builds every key shardfeed uses. Nothing else formats a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheLayout {
    namespace: String,
}

/// The keys of one author, all in one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorKeys {
    pub timeline: String,
    pub posts: String,
    pub meta: String,
    pub deleted: String,
}

impl AuthorKeys {
    /// The four keys in the order every timeline script takes them: `tl`, `posts`, `meta`,
    /// `del`.
    pub fn script_keys(&self) -> Vec<String> {
        vec![
            self.timeline.clone(),
            self.posts.clone(),
            self.meta.clone(),
            self.deleted.clone(),
        ]
    }
}

impl CacheLayout {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
        }
    }

    /// The hash tag shared by every key of `user_id`: it picks the slot.
    pub fn hash_tag(user_id: i64) -> String {
        format!("{{u:{user_id}}}")
    }

    fn key(&self, user_id: i64, suffix: &str) -> String {
        format!("{}{{u:{user_id}}}:{suffix}", self.namespace)
    }

    pub fn timeline(&self, author_id: i64) -> String {
        self.key(author_id, "tl")
    }

    pub fn posts(&self, author_id: i64) -> String {
        self.key(author_id, "posts")
    }

    pub fn meta(&self, author_id: i64) -> String {
        self.key(author_id, "meta")
    }

    pub fn deleted(&self, author_id: i64) -> String {
        self.key(author_id, "del")
    }

    pub fn following(&self, user_id: i64) -> String {
        self.key(user_id, "fol")
    }

    /// The lease one aggregator takes while it rebuilds a user's keys from PostgreSQL, so
    /// that replicas do not rebuild the same user at once.
    pub fn rebuild_lease(&self, user_id: i64, what: &str) -> String {
        self.key(user_id, &format!("lease:{what}"))
    }

    /// The shared hot set: author id → expiry time (ms since the Unix epoch).
    pub fn hot_set(&self) -> String {
        format!("{}hot", self.namespace)
    }

    /// The pub/sub channel on which ingest announces changed authors.
    pub fn changes_channel(&self) -> String {
        format!("{}changes", self.namespace)
    }

    /// The keys of copy `n` of `author_id`'s timeline (key replication of hot authors).
    pub fn author_copy(&self, author_id: i64, n: u32) -> AuthorKeys {
        let key = |suffix: &str| format!("{}{{u:{author_id}~{n}}}:{suffix}", self.namespace);
        AuthorKeys {
            timeline: key("tl"),
            posts: key("posts"),
            meta: key("meta"),
            deleted: key("del"),
        }
    }

    pub fn author(&self, author_id: i64) -> AuthorKeys {
        AuthorKeys {
            timeline: self.timeline(author_id),
            posts: self.posts(author_id),
            meta: self.meta(author_id),
            deleted: self.deleted(author_id),
        }
    }
}

/// The copy numbers of `author_id`'s timeline copies: for every master but the one owning the
/// author, the smallest `n` whose copy slot that master owns. Ingest (which writes copies) and
/// aggregators (which read them) compute the same numbers from the same topology; after a
/// topology change a reader may look for a copy that is not there, and then reads the original.
pub fn copy_numbers(
    layout: &CacheLayout,
    routing: &fred::types::cluster::ClusterRouting,
    author_id: i64,
) -> Vec<u32> {
    use fred::util::redis_keyslot;
    let slot_of = |keys: &AuthorKeys| redis_keyslot(keys.meta.as_bytes());
    let own = routing.get_server(slot_of(&layout.author(author_id)));
    let mut masters: Vec<_> = routing
        .unique_primary_nodes()
        .into_iter()
        .filter(|m| Some(m) != own)
        .collect();
    masters.sort_by_key(|m| (m.host.to_string(), m.port));
    masters
        .iter()
        .filter_map(|master| {
            // 16384 slots over a few masters: a handful of tries finds one of each.
            (1..=4096u32).find(|n| {
                routing.get_server(slot_of(&layout.author_copy(author_id, *n))) == Some(master)
            })
        })
        .collect()
}

/// A key on `server` (a master owning slots), written before each `WAIT` there so that the
/// connection has a write at least as new as the batch's (see `CacheWriter::apply_durably`).
pub fn probe_key(
    layout: &CacheLayout,
    routing: &fred::types::cluster::ClusterRouting,
    server: &fred::types::config::Server,
) -> Option<String> {
    (0..16384u32)
        .map(|n| format!("{}{{probe:{n}}}", layout.namespace))
        .find(|key| routing.get_server(fred::util::redis_keyslot(key.as_bytes())) == Some(server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_user_share_one_hash_tag() {
        let layout = CacheLayout::new("t1:");
        let keys = [
            layout.timeline(42),
            layout.posts(42),
            layout.meta(42),
            layout.deleted(42),
            layout.following(42),
        ];
        for key in &keys {
            assert!(key.starts_with("t1:{u:42}:"), "{key}");
            // Redis hashes the text between the first `{` and the next `}`.
            let tag = &key[key.find('{').unwrap() + 1..key.find('}').unwrap()];
            assert_eq!(tag, "u:42");
        }
        assert_eq!(layout.timeline(42), "t1:{u:42}:tl");
        assert_ne!(layout.timeline(4), layout.timeline(42));
    }

    #[test]
    fn copies_carry_their_own_hash_tag() {
        let copy = CacheLayout::new("t1:").author_copy(42, 3);
        assert_eq!(copy.timeline, "t1:{u:42~3}:tl");
        assert_eq!(copy.meta, "t1:{u:42~3}:meta");
        assert_ne!(
            fred::util::redis_keyslot(copy.meta.as_bytes()),
            fred::util::redis_keyslot(CacheLayout::new("t1:").meta(42).as_bytes())
        );
    }

    #[test]
    fn meta_decodes_by_field_name_not_by_guesswork() {
        let reply = |pairs: &[(&str, &str)]| -> Vec<Option<String>> {
            AuthorMeta::FIELDS
                .iter()
                .map(|f| {
                    pairs
                        .iter()
                        .find(|(k, _)| k == f)
                        .map(|(_, v)| (*v).to_owned())
                })
                .collect()
        };
        assert_eq!(AuthorMeta::decode(&reply(&[])), AuthorMeta::default());
        let m = AuthorMeta::decode(&reply(&[
            ("loaded", "1"),
            ("gone", "1"),
            ("count", "17"),
            ("dels", "2"),
            ("newest_ms", "1790000000123"),
            ("floor", "99"),
            ("floor_ms", "1790000000000"),
        ]));
        assert!(m.loaded && m.gone && !m.complete);
        assert_eq!((m.count, m.dels), (Some(17), Some(2)));
        assert_eq!(m.newest_ms, Some(1_790_000_000_123));
        assert_eq!(
            (m.floor.as_deref(), m.floor_ms),
            (Some("99"), Some(1_790_000_000_000))
        );
        // Only "1" is true; a garbled count is unknown, an empty floor is none.
        let m = AuthorMeta::decode(&reply(&[("loaded", "true"), ("count", "x"), ("floor", "")]));
        assert!(!m.loaded);
        assert_eq!((m.count, m.floor), (None, None));
        // A reader's shorter read decodes by the same names.
        let m = AuthorMeta::decode_fields(
            &AuthorMeta::READ_FIELDS,
            &[
                Some("1".into()),
                None,
                None,
                Some("4".into()),
                Some("9".into()),
            ],
        );
        assert_eq!(
            m,
            AuthorMeta {
                loaded: true,
                count: Some(4),
                newest_ms: Some(9),
                ..AuthorMeta::default()
            }
        );
    }

    #[test]
    fn no_namespace_means_bare_keys() {
        assert_eq!(CacheLayout::default().following(7), "{u:7}:fol");
    }
}
