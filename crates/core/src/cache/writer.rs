//! Applies [`CacheChange`]s to the cluster.

use std::collections::HashMap;

use fred::{
    clients::Client,
    error::{Error, ErrorKind},
    interfaces::{ClusterInterface, KeysInterface, LuaInterface, PubsubInterface, ServerInterface},
    types::{config::Server, Expiration, SetOptions, Value},
    util::redis_keyslot,
};
use prost::Message;
use shardfeed_proto::v1::Post;

use super::{
    layout::CacheLayout,
    scripts::{self, LuaScript},
    CacheChange,
};
use crate::config::CacheSettings;

/// Writes cache changes: one script call per change; a batch is sent concurrently, and fred
/// pipelines it on its one connection per node.
#[derive(Clone)]
pub struct CacheWriter {
    client: Client,
    layout: CacheLayout,
    timeline_len: i64,
    ttl_ms: i64,
    min_replica_acks: i64,
    replica_ack_timeout_ms: i64,
}

impl CacheWriter {
    pub fn new(client: Client, layout: CacheLayout, settings: &CacheSettings) -> Self {
        Self {
            client,
            layout,
            timeline_len: settings.timeline_len as i64,
            ttl_ms: (settings.ttl_secs * 1000) as i64,
            min_replica_acks: settings.min_replica_acks,
            replica_ack_timeout_ms: settings.replica_ack_timeout_ms,
        }
    }

    pub fn layout(&self) -> &CacheLayout {
        &self.layout
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Announces delivered changes on the `changes` channel (see [`super::announce`]), so that
    /// aggregators drop what they keep of the authors in memory. Best effort: readers bound
    /// their staleness by a TTL too.
    pub async fn announce<'a>(&self, delivered: impl IntoIterator<Item = &'a CacheChange>) {
        let Some(message) = super::announce::encode(delivered) else {
            return;
        };
        let published: Result<i64, Error> = self
            .client
            .publish(self.layout.changes_channel(), message)
            .await;
        if let Err(error) = published {
            tracing::debug!(%error, "could not announce delivered changes");
        }
    }

    /// Announces the changes of a batch that were delivered (`results[i]` is `Ok`).
    pub async fn announce_delivered<T, E>(
        &self,
        changes: &[CacheChange],
        results: &[Result<T, E>],
    ) {
        self.announce(
            changes
                .iter()
                .zip(results)
                .filter(|(_, r)| r.is_ok())
                .map(|(c, _)| c),
        )
        .await;
    }

    /// Applies one change.
    pub async fn apply(&self, change: &CacheChange) -> Result<(), Error> {
        let (script, keys, args) = self.command(change);
        self.run(script, keys, args).await
    }

    /// Runs a script by SHA, or by source on a node that does not know it yet.
    async fn run(
        &self,
        script: &LuaScript,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<(), Error> {
        let by_sha: Result<Value, Error> = self
            .client
            .evalsha(script.sha1.as_str(), keys.clone(), args.clone())
            .await;
        match by_sha {
            // A node that has not seen the script yet (new, restarted, just promoted): EVAL
            // runs it and caches it there.
            Err(err) if err.details().starts_with("NOSCRIPT") => {
                let _: Value = self.client.eval(script.source, keys, args).await?;
                Ok(())
            }
            result => result.map(|_| ()),
        }
    }

    /// Applies a batch concurrently. fred pipelines concurrent commands on its one connection
    /// per node (auto-pipelining), so a batch costs about one round trip per node. Each change
    /// succeeds or fails on its own: one result per change, in order.
    pub async fn apply_all(&self, changes: &[CacheChange]) -> Vec<Result<(), Error>> {
        futures::future::join_all(changes.iter().map(|change| self.apply(change))).await
    }

    /// Applies a batch and confirms it durable: after the scripts, one `WAIT` per node that
    /// took changes, so a change counts as delivered only once `cache.min_replica_acks`
    /// replicas of its master have it. A master that fails over right after cannot take an
    /// acknowledged change with it: unconfirmed changes come back as errors and stay in the
    /// outbox. `WAIT` covers every earlier write on the connection, and fred keeps one
    /// connection per node, so it is sent to the node the scripts went to.
    pub async fn apply_durably(&self, changes: &[CacheChange]) -> Vec<Result<(), Error>> {
        let mut results = self.apply_all(changes).await;
        if self.min_replica_acks <= 0 {
            return results;
        }
        let Some(routing) = self.client.cached_cluster_state() else {
            return results
                .into_iter()
                .map(|_| {
                    Err(Error::new(
                        ErrorKind::Cluster,
                        "no cluster state to confirm writes",
                    ))
                })
                .collect();
        };
        // Which node each applied change went to.
        let mut by_node: HashMap<Server, Vec<usize>> = HashMap::new();
        for (i, change) in changes.iter().enumerate() {
            if results[i].is_err() {
                continue;
            }
            let slot = redis_keyslot(self.slot_key(change).as_bytes());
            match routing.get_server(slot) {
                Some(server) => by_node.entry(server.clone()).or_default().push(i),
                None => results[i] = Err(Error::new(ErrorKind::Cluster, "slot has no known owner")),
            }
        }
        let waits = by_node.into_iter().map(|(server, indexes)| async move {
            let acked: Result<i64, Error> = self
                .client
                .with_cluster_node(server.clone())
                .wait(self.min_replica_acks, self.replica_ack_timeout_ms)
                .await;
            (server, indexes, acked)
        });
        for (server, indexes, acked) in futures::future::join_all(waits).await {
            let failure = match acked {
                Ok(n) if n >= self.min_replica_acks => continue,
                Ok(n) => Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{server}: {n} replica(s) acknowledged, {} needed",
                        self.min_replica_acks
                    ),
                ),
                Err(err) => err,
            };
            for i in indexes {
                results[i] = Err(failure.clone());
            }
        }
        results
    }

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

    /// Merges a PostgreSQL snapshot of an author into the cache and marks it loaded (see the
    /// `AUTHOR_REBUILD` script), then releases `lease_token`.
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
            Value::from(i64::from(snapshot.complete)),
            Value::from(lease_token),
        ];
        for post in &snapshot.posts {
            let time_ms = post
                .create_time
                .as_ref()
                .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
            args.push(Value::from(post.post_id.to_string()));
            args.push(Value::from(time_ms));
            args.push(Value::Bytes(post.encode_to_vec().into()));
        }
        for post_id in &snapshot.tombstones {
            args.push(Value::from(post_id.to_string()));
            args.push(Value::from(0));
            args.push(Value::from(super::layout::TOMBSTONE));
        }
        let lease = self.layout.rebuild_lease(author_id, "tl");
        self.run(
            &scripts::AUTHOR_REBUILD,
            vec![keys.timeline, keys.posts, keys.meta, lease],
            args,
        )
        .await
    }

    /// Merges a PostgreSQL snapshot of a user's followees into the cached set and marks it
    /// loaded, then releases `lease_token`.
    pub async fn rebuild_following(
        &self,
        user_id: i64,
        followees: &[i64],
        lease_token: &str,
    ) -> Result<(), Error> {
        let mut args = vec![Value::from(self.ttl_ms), Value::from(lease_token)];
        args.extend(followees.iter().map(|id| Value::from(id.to_string())));
        let keys = vec![
            self.layout.following(user_id),
            self.layout.rebuild_lease(user_id, "fol"),
        ];
        self.run(&scripts::FOLLOWING_REBUILD, keys, args).await
    }

    /// A key of the slot a change is written to.
    fn slot_key(&self, change: &CacheChange) -> String {
        self.layout.meta(change.slot_owner())
    }

    fn command(&self, change: &CacheChange) -> (&'static LuaScript, Vec<String>, Vec<Value>) {
        let ttl = Value::from(self.ttl_ms);
        match change {
            CacheChange::PostCreated {
                author_id,
                post_id,
                time_ms,
                body,
            } => {
                let keys = self.layout.author(*author_id);
                let encoded = encode_post(*author_id, *post_id, *time_ms, body);
                (
                    &scripts::POST_CREATED,
                    vec![keys.timeline, keys.posts, keys.meta],
                    vec![
                        Value::from(post_id.to_string()),
                        Value::from(*time_ms),
                        Value::Bytes(encoded.into()),
                        Value::from(self.timeline_len),
                        ttl,
                    ],
                )
            }
            CacheChange::PostDeleted { author_id, post_id } => {
                let keys = self.layout.author(*author_id);
                (
                    &scripts::POST_DELETED,
                    vec![keys.timeline, keys.posts, keys.meta],
                    vec![Value::from(post_id.to_string()), ttl],
                )
            }
            CacheChange::UserCreated { user_id } | CacheChange::UserDeleted { user_id } => {
                let keys = self.layout.author(*user_id);
                let script: &'static LuaScript =
                    if matches!(change, CacheChange::UserCreated { .. }) {
                        &scripts::USER_CREATED
                    } else {
                        &scripts::USER_DELETED
                    };
                (
                    script,
                    vec![
                        keys.timeline,
                        keys.posts,
                        keys.meta,
                        self.layout.following(*user_id),
                    ],
                    vec![ttl],
                )
            }
            CacheChange::Followed {
                follower_id,
                followee_id,
                version,
            }
            | CacheChange::Unfollowed {
                follower_id,
                followee_id,
                version,
            } => {
                let state = i64::from(matches!(change, CacheChange::Followed { .. }));
                (
                    &scripts::FOLLOW_EDGE,
                    vec![self.layout.following(*follower_id)],
                    vec![
                        Value::from(followee_id.to_string()),
                        Value::from(*version),
                        Value::from(state),
                        ttl,
                    ],
                )
            }
        }
    }
}

/// The cached form of a post: the wire message itself, so readers hand it out as is.
pub fn encode_post(author_id: i64, post_id: i64, time_ms: i64, body: &str) -> Vec<u8> {
    Post {
        post_id,
        author_id,
        body: body.to_owned(),
        create_time: Some(prost_types::Timestamp {
            seconds: time_ms.div_euclid(1000),
            nanos: (time_ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
    }
    .encode_to_vec()
}

/// What PostgreSQL holds for one author, for [`CacheWriter::rebuild_author`].
#[derive(Debug, Clone, Default)]
pub struct AuthorSnapshot {
    /// Live posts, newest first, at most `cache.timeline_len`.
    pub posts: Vec<Post>,
    /// Deleted posts as new as the oldest snapshot post or newer: written as tombstones so a
    /// late replay of their create cannot bring them back.
    pub tombstones: Vec<i64>,
    /// The snapshot holds every live post of the author.
    pub complete: bool,
}
