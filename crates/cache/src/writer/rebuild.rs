//! Rebuilds in two halves: `prepare_*` before the PostgreSQL snapshot, `rebuild_*` with it,
//! under a rebuild lease.

use super::*;

impl CacheWriter {
    /// Takes the rebuild lease `key` for `ttl_ms` unless someone holds it.
    pub async fn try_lease(&self, key: String, token: &str, ttl_ms: i64) -> Result<bool, Error> {
        let set: Option<String> = self
            .client
            .set(
                key,
                token,
                Some(Expiration::PX(ttl_ms)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(set.is_some())
    }

    /// The first half of a rebuild of `author_id`, before its PostgreSQL snapshot is taken
    /// (see the `AUTHOR_PREPARE` script): without it, a key lost between the snapshot and
    /// [`CacheWriter::rebuild_author`] could take a newer write with it unnoticed.
    pub async fn prepare_author(&self, author_id: i64) -> Result<(), Error> {
        self.prepare_keys(&self.layout.author(author_id)).await
    }

    pub(super) async fn prepare_keys(&self, keys: &crate::layout::AuthorKeys) -> Result<(), Error> {
        self.run(
            &scripts::AUTHOR_PREPARE,
            keys.script_keys(),
            vec![Value::from(self.ttl_ms)],
        )
        .await
    }

    /// The first half of a rebuild of `user_id`'s followee set, before its snapshot is taken
    /// (see the `FOLLOWING_PREPARE` script).
    pub async fn prepare_following(&self, user_id: i64, lease_token: &str) -> Result<(), Error> {
        self.run(
            &scripts::FOLLOWING_PREPARE,
            vec![self.layout.following(user_id)],
            vec![Value::from(self.ttl_ms), Value::from(lease_token)],
        )
        .await
    }

    /// Merges a PostgreSQL snapshot of an author, taken after [`CacheWriter::prepare_author`],
    /// into the cache and marks it loaded (see the `AUTHOR_REBUILD` script), then releases
    /// `lease_token`.
    pub async fn rebuild_author(
        &self,
        author_id: i64,
        snapshot: &AuthorSnapshot,
        lease_token: &str,
    ) -> Result<(), Error> {
        let keys = self.layout.author(author_id);
        let mut args = vec![
            Value::from(self.ttl_ms),
            Value::from(self.timeline_len),
            Value::from(lease_token),
            Value::from(snapshot.floor.map(|f| f.to_string()).unwrap_or_default()),
            Value::from(snapshot.floor.map_or(0, post_time_ms)),
            Value::from(snapshot.posts.len() as i64),
        ];
        for post in &snapshot.posts {
            let time_ms = post
                .create_time
                .as_ref()
                .map_or(0, shardfeed_proto::time::to_ms);
            args.push(Value::from(post.post_id.to_string()));
            args.push(Value::from(time_ms));
            args.push(Value::Bytes(post.encode_to_vec().into()));
        }
        for post_id in &snapshot.deleted {
            args.push(Value::from(post_id.to_string()));
            args.push(Value::from(post_time_ms(*post_id)));
        }
        let mut keys = keys.script_keys();
        keys.push(self.layout.rebuild_lease(author_id, "tl"));
        self.run(&scripts::AUTHOR_REBUILD, keys, args).await
    }

    /// Merges a PostgreSQL snapshot of a user's followees, which holds every change of the user
    /// up to graph version `since`, into the cached set and marks it loaded, then releases
    /// `lease_token`.
    pub async fn rebuild_following(
        &self,
        user_id: i64,
        followees: &[i64],
        since: i64,
        lease_token: &str,
    ) -> Result<(), Error> {
        let mut args = vec![
            Value::from(self.ttl_ms),
            Value::from(lease_token),
            Value::from(since),
        ];
        args.extend(followees.iter().map(|id| Value::from(id.to_string())));
        let keys = vec![
            self.layout.following(user_id),
            self.layout.rebuild_lease(user_id, "fol"),
        ];
        self.run(&scripts::FOLLOWING_REBUILD, keys, args).await
    }
}

/// What PostgreSQL holds for one author, for [`CacheWriter::rebuild_author`].
#[derive(Debug, Clone, Default)]
pub struct AuthorSnapshot {
    /// Live posts, newest first, at most `cache.timeline_len`, all at or above the floor.
    pub posts: Vec<Post>,
    /// Deleted posts at or above the floor, at most `cache.timeline_len`: kept in `del` so that
    /// a late replay of their create cannot bring them back.
    pub deleted: Vec<i64>,
    /// The post below which the snapshot says nothing (older posts live only in PostgreSQL);
    /// `None` when it holds every live post of the author.
    pub floor: Option<i64>,
}
