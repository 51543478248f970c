//! Applies [`CacheChange`]s to the cluster.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use fred::{
    clients::{Client, Pipeline, WithOptions},
    error::{Error, ErrorKind},
    interfaces::{
        ClientLike, ClusterInterface, HashesInterface, KeysInterface, PubsubInterface,
        SortedSetsInterface,
    },
    types::{config::Server, ClusterHash, CustomCommand, Expiration, SetOptions, Value},
    util::redis_keyslot,
};
use prost::bytes::Bytes;
use prost::Message;
use shardfeed_proto::v1::Post;

use crate::{
    layout::{AuthorMeta, CacheLayout},
    scripts::{self, LuaScript},
    CacheChange,
};
use shardfeed_proto::ids::post_time_ms;
use shardfeed_server::{
    config::CacheSettings,
    metrics::{Outcome, RedisMetrics},
};

mod copies;
mod durable;
mod rebuild;

pub use rebuild::AuthorSnapshot;

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
    /// Hot authors whose timelines are copied (key replication), with their copy numbers:
    /// every change to them is applied to each copy too.
    mirrored: Arc<RwLock<HashMap<i64, Vec<u32>>>>,
    /// Where the per-node pipelines are measured.
    redis_metrics: RedisMetrics,
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
            mirrored: Arc::default(),
            redis_metrics: RedisMetrics::default(),
        }
    }

    /// Measures the confirmed per-node pipelines in `metrics`.
    pub fn with_metrics(mut self, metrics: &RedisMetrics) -> Self {
        self.redis_metrics = metrics.clone();
        self
    }

    pub fn layout(&self) -> &CacheLayout {
        &self.layout
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Announces delivered changes on the `changes` channel (see [`crate::announce`]), so that
    /// aggregators drop what they keep of the users in memory. Fails when Redis does not take
    /// the message: the caller then treats the changes as undelivered, and the outbox relay
    /// applies and announces them again.
    pub async fn announce<'a>(
        &self,
        delivered: impl IntoIterator<Item = &'a CacheChange>,
    ) -> Result<(), Error> {
        let Some(message) = crate::announce::encode(delivered) else {
            return Ok(());
        };
        let published = self
            .client
            .publish::<i64, _, _>(self.layout.changes_channel(), message);
        shardfeed_server::spans::redis("PUBLISH changes", None, 1, published).await?;
        Ok(())
    }

    /// Announces the changes of a batch that were delivered (`results[i]` is `Ok`); if the
    /// announcement fails, those results become that error.
    pub async fn announce_delivered(
        &self,
        changes: &[CacheChange],
        results: &mut [Result<(), Error>],
    ) {
        let delivered: Vec<&CacheChange> = changes
            .iter()
            .zip(results.iter())
            .filter(|(_, r)| r.is_ok())
            .map(|(c, _)| c)
            .collect();
        let mut announced = self.announce(delivered.iter().copied()).await;
        if announced.is_err() {
            // Once more before leaving the changes to the relay: a blip should not cost a
            // relay round.
            announced = self.announce(delivered.iter().copied()).await;
        }
        if let Err(error) = announced {
            tracing::warn!(%error, "could not announce delivered changes; the relay will redo them");
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(error.clone());
            }
        }
    }

    /// Applies one change (to the author's timeline copies too, when it is mirrored).
    pub async fn apply(&self, change: &CacheChange) -> Result<(), Error> {
        let writes = self.writes_of(change).into_iter().map(|write| async move {
            match write {
                Write::Script(script, keys, args) => self.run(script, keys, args).await,
                Write::Delete(keys) => self.client.del::<i64, _>(keys).await.map(|_| ()),
            }
        });
        futures::future::try_join_all(writes).await.map(|_| ())
    }

    /// What a change writes: its script on its user's keys and, when its author is mirrored,
    /// on each copy (or, for a deleted user, the copies' deletion). Each write touches one slot.
    fn writes_of(&self, change: &CacheChange) -> Vec<Write> {
        let (script, keys, args) = self.command(change);
        let mut writes = vec![Write::Script(script, keys, args)];
        let author_id = change.slot_owner();
        for n in self.copies_of(change) {
            let keys = self.layout.author_copy(author_id, n);
            writes.push(match self.post_command(change, &keys) {
                Some((script, keys, args)) => Write::Script(script, keys, args),
                // The user is gone: so are the copies.
                None => Write::Delete(keys.script_keys()),
            });
        }
        writes
    }

    /// Runs a script by SHA; a node that does not know it yet (new, restarted, just promoted)
    /// gets it loaded first.
    async fn run(
        &self,
        script: &LuaScript,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<(), Error> {
        let _: Value = script
            .script()
            .evalsha_with_reload(&self.client, keys, args)
            .await?;
        Ok(())
    }

    /// Applies a batch concurrently. fred pipelines concurrent commands on its one connection
    /// per node (auto-pipelining), so a batch costs about one round trip per node. Each change
    /// succeeds or fails on its own: one result per change, in order.
    pub async fn apply_all(&self, changes: &[CacheChange]) -> Vec<Result<(), Error>> {
        futures::future::join_all(changes.iter().map(|change| self.apply(change))).await
    }

    fn command(&self, change: &CacheChange) -> (&'static LuaScript, Vec<String>, Vec<Value>) {
        let ttl = Value::from(self.ttl_ms);
        match change {
            CacheChange::PostCreated { author_id, .. }
            | CacheChange::PostDeleted { author_id, .. } => self
                .post_command(change, &self.layout.author(*author_id))
                .expect("a post change has a post command"),
            CacheChange::UserCreated { user_id } | CacheChange::UserDeleted { user_id } => {
                let keys = self.layout.author(*user_id);
                let script: &'static LuaScript =
                    if matches!(change, CacheChange::UserCreated { .. }) {
                        &scripts::USER_CREATED
                    } else {
                        &scripts::USER_DELETED
                    };
                let mut keys = keys.script_keys();
                keys.push(self.layout.following(*user_id));
                (script, keys, vec![ttl, Value::from(self.timeline_len)])
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

/// One write of a change, to one slot.
enum Write {
    Script(&'static LuaScript, Vec<String>, Vec<Value>),
    Delete(Vec<String>),
}

impl Write {
    fn keys(&self) -> &[String] {
        match self {
            Write::Script(_, keys, _) | Write::Delete(keys) => keys,
        }
    }
}

impl CacheWriter {
    /// The script of a post change against the author keys `keys` (the original, or a copy);
    /// `None` for other changes.
    fn post_command(
        &self,
        change: &CacheChange,
        keys: &crate::layout::AuthorKeys,
    ) -> Option<(&'static LuaScript, Vec<String>, Vec<Value>)> {
        if !matches!(
            change,
            CacheChange::PostCreated { .. } | CacheChange::PostDeleted { .. }
        ) {
            return None;
        }
        let ttl = Value::from(self.ttl_ms);
        let keys = keys.script_keys();
        match change {
            CacheChange::PostCreated {
                author_id,
                post_id,
                time_ms,
                body,
            } => {
                let encoded = encode_post(*author_id, *post_id, *time_ms, body);
                Some((
                    &scripts::POST_CREATED,
                    keys,
                    vec![
                        Value::from(post_id.to_string()),
                        Value::from(*time_ms),
                        Value::Bytes(encoded.into()),
                        Value::from(self.timeline_len),
                        ttl,
                    ],
                ))
            }
            CacheChange::PostDeleted { post_id, .. } => Some((
                &scripts::POST_DELETED,
                keys,
                vec![
                    Value::from(post_id.to_string()),
                    Value::from(post_time_ms(*post_id)),
                    Value::from(self.timeline_len),
                    ttl,
                ],
            )),
            _ => None,
        }
    }
}

/// The cached form of a post: the wire message itself, so readers hand it out as is.
pub fn encode_post(author_id: i64, post_id: i64, time_ms: i64, body: &str) -> Vec<u8> {
    Post {
        post_id,
        author_id,
        body: body.to_owned(),
        create_time: Some(shardfeed_proto::time::from_ms(time_ms)),
    }
    .encode_to_vec()
}
