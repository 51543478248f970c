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

use super::{
    layout::{AuthorMeta, CacheLayout},
    scripts::{self, LuaScript},
    CacheChange,
};
use shardfeed_proto::ids::post_time_ms;
use shardfeed_server::config::CacheSettings;

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
        }
    }

    pub fn layout(&self) -> &CacheLayout {
        &self.layout
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Announces delivered changes on the `changes` channel (see [`super::announce`]), so that
    /// aggregators drop what they keep of the users in memory. Fails when Redis does not take
    /// the message: the caller then treats the changes as undelivered, and the outbox relay
    /// applies and announces them again.
    pub async fn announce<'a>(
        &self,
        delivered: impl IntoIterator<Item = &'a CacheChange>,
    ) -> Result<(), Error> {
        let Some(message) = super::announce::encode(delivered) else {
            return Ok(());
        };
        let _: i64 = self
            .client
            .publish(self.layout.changes_channel(), message)
            .await?;
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

    /// The copy numbers a change must also be applied to: those of its author when the author
    /// is mirrored and the change alters the timeline.
    fn copies_of(&self, change: &CacheChange) -> Vec<u32> {
        let Some(author_id) = change.timeline_author() else {
            return Vec::new();
        };
        self.mirrored
            .read()
            .get(&author_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The authors whose timelines are mirrored now.
    pub fn mirrored(&self) -> Vec<i64> {
        let mut authors: Vec<i64> = self.mirrored.read().keys().copied().collect();
        authors.sort_unstable();
        authors
    }

    /// Starts key replication of `author_id`: from now on every change to it is applied to one
    /// copy on each other master, and the copies are filled from the original (see
    /// [`CacheWriter::sync_copies`]). Returns the copy numbers.
    pub async fn start_mirroring(&self, author_id: i64) -> Result<Vec<u32>, Error> {
        let routing = self
            .client
            .cached_cluster_state()
            .ok_or_else(|| Error::new(ErrorKind::Cluster, "no cluster state to place copies"))?;
        let numbers = super::layout::copy_numbers(&self.layout, &routing, author_id);
        // Mirror writes before taking the snapshot: a write is then in the snapshot, or
        // applied to the copies, or both (merging is idempotent).
        self.mirrored.write().insert(author_id, numbers.clone());
        self.sync_copies(author_id).await?;
        Ok(numbers)
    }

    /// Merges the original timeline of a mirrored author into each of its copies (as a rebuild
    /// does: entries already there stay, tombstones win) and marks them loaded. Run again now
    /// and then, it repairs a copy that missed a write (a failover of its master, a write that
    /// raced the start of mirroring).
    pub async fn sync_copies(&self, author_id: i64) -> Result<(), Error> {
        let Some(numbers) = self.mirrored.read().get(&author_id).cloned() else {
            return Ok(());
        };
        // The copies' first half of a rebuild, before the original is read.
        let copies: Vec<_> = numbers
            .iter()
            .map(|n| self.layout.author_copy(author_id, *n))
            .collect();
        futures::future::try_join_all(copies.iter().map(|copy| self.prepare_keys(copy))).await?;
        let keys = self.layout.author(author_id);
        let pipeline = self.client.pipeline();
        let _: () = pipeline
            .hmget(keys.meta.clone(), AuthorMeta::FIELDS.to_vec())
            .await?;
        let _: () = pipeline
            .zrange(keys.timeline.clone(), 0, -1, None, false, None, true)
            .await?;
        let _: () = pipeline.hgetall(keys.posts.clone()).await?;
        let _: () = pipeline
            .zrange(keys.deleted.clone(), 0, -1, None, false, None, true)
            .await?;
        let (flags, timeline, posts, deleted): OriginalSnapshot = pipeline.all().await?;
        let meta = AuthorMeta::decode(&flags);
        if meta.gone || !meta.loaded {
            // Gone, or the original is not loaded (a reader rebuilds it first): no copy to
            // trust. Readers find the copies not loaded and read the original.
            return self.drop_copies(author_id, &numbers).await;
        }
        let floor = meta.floor;
        let floor_ms = meta.floor_ms.map(|ms| ms.to_string()).unwrap_or_default();
        let live: Vec<(&str, i64, Bytes)> = timeline
            .iter()
            .filter_map(|(id, score)| {
                posts
                    .get(id)
                    .map(|body| (id.as_str(), *score as i64, body.clone()))
            })
            .collect();
        let mut args = vec![
            Value::from(self.ttl_ms),
            Value::from(self.timeline_len),
            Value::from(""),
            Value::from(floor.unwrap_or_default()),
            Value::from(floor_ms),
            Value::from(live.len() as i64),
        ];
        for (id, score, body) in live {
            args.push(Value::from(id));
            args.push(Value::from(score));
            args.push(Value::Bytes(body));
        }
        for (id, score) in &deleted {
            args.push(Value::from(id.as_str()));
            args.push(Value::from(*score as i64));
        }
        let merges = copies.into_iter().map(|copy| {
            let mut keys = copy.script_keys();
            keys.push(format!("{}:none", copy.meta));
            self.run(&scripts::AUTHOR_REBUILD, keys, args.clone())
        });
        futures::future::try_join_all(merges).await.map(|_| ())
    }

    /// Ends key replication of `author_id`: the copies are deleted before writes stop being
    /// mirrored (and once more after), so no reader finds a copy that misses a write.
    pub async fn stop_mirroring(&self, author_id: i64) -> Result<(), Error> {
        let numbers = self
            .mirrored
            .read()
            .get(&author_id)
            .cloned()
            .unwrap_or_default();
        self.drop_copies(author_id, &numbers).await?;
        self.mirrored.write().remove(&author_id);
        self.drop_copies(author_id, &numbers).await
    }

    async fn drop_copies(&self, author_id: i64, numbers: &[u32]) -> Result<(), Error> {
        let deletes = numbers.iter().map(|n| {
            let copy = self.layout.author_copy(author_id, *n);
            async move {
                let _: i64 = self.client.del(copy.script_keys()).await?;
                Ok::<_, Error>(())
            }
        });
        futures::future::try_join_all(deletes).await.map(|_| ())
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

    /// Applies a batch and confirms it durable: a change counts as delivered only once
    /// `cache.min_replica_acks` replicas of each master it wrote to have it, so a master that
    /// fails over right after cannot take an acknowledged change with it; unconfirmed changes
    /// come back as errors and stay in the outbox. Each master gets one pipeline on one
    /// connection (see [`CacheWriter::write_confirmed`]).
    pub async fn apply_durably(&self, changes: &[CacheChange]) -> Vec<Result<(), Error>> {
        if self.min_replica_acks <= 0 {
            return self.apply_all(changes).await;
        }
        let Some(routing) = self.client.cached_cluster_state() else {
            let error = Error::new(ErrorKind::Cluster, "no cluster state to confirm writes");
            return changes.iter().map(|_| Err(error.clone())).collect();
        };
        let mut results: Vec<Result<(), Error>> = changes.iter().map(|_| Ok(())).collect();
        let mut by_node: HashMap<Server, Vec<(usize, Write)>> = HashMap::new();
        for (i, change) in changes.iter().enumerate() {
            for write in self.writes_of(change) {
                let slot = redis_keyslot(write.keys()[0].as_bytes());
                match routing.get_server(slot) {
                    Some(server) => by_node.entry(server.clone()).or_default().push((i, write)),
                    None => {
                        results[i] = Err(Error::new(ErrorKind::Cluster, "slot has no known owner"))
                    }
                }
            }
        }
        let nodes = by_node.into_iter().map(|(server, writes)| {
            let routing = &routing;
            async move {
                let outcome = self.write_confirmed(&server, &writes, routing).await;
                (writes, outcome)
            }
        });
        for (writes, outcome) in futures::future::join_all(nodes).await {
            for ((i, _), result) in writes.iter().zip(outcome) {
                if let (Err(error), true) = (result, results[*i].is_ok()) {
                    results[*i] = Err(error);
                }
            }
        }
        results
    }

    /// Runs `writes` on `server` as one pipeline, so on one connection and in order:
    /// `CLIENT ID`, the writes, a write of the node's probe key, `WAIT`, `CLIENT ID`. `WAIT`
    /// counts the replicas that have every write its connection made, and a master replicates
    /// one ordered stream: the probe write makes sure there is one on this connection, after
    /// every write of the batch (a script that finds its change already applied — a replay —
    /// writes nothing), and the two `CLIENT ID`s equal prove that no reconnection came in
    /// between. So the acknowledgement is that of these changes, never a vacuous one. A node
    /// that does not know a script yet is sent it and the pipeline once more. One result per
    /// write.
    async fn write_confirmed(
        &self,
        server: &Server,
        writes: &[(usize, Write)],
        routing: &fred::types::cluster::ClusterRouting,
    ) -> Vec<Result<(), Error>> {
        let Some(probe) = super::layout::probe_key(&self.layout, routing, server) else {
            let error = Error::new(ErrorKind::Cluster, format!("{server} owns no slot"));
            return writes.iter().map(|_| Err(error.clone())).collect();
        };
        let node = self.client.with_cluster_node(server.clone());
        for attempt in 0..2 {
            let replies = match self.confirmed_pipeline(&node, writes, &probe).await {
                Ok(replies) => replies,
                Err(error) => return writes.iter().map(|_| Err(error.clone())).collect(),
            };
            let missing = |r: &Result<Value, Error>| {
                r.as_ref()
                    .err()
                    .is_some_and(|e| e.details().starts_with("NOSCRIPT"))
            };
            let (ids, rest) = (&replies[0], &replies[1..]);
            let (results, tail) = rest.split_at(writes.len());
            if attempt == 0 && results.iter().any(missing) {
                let scripts = writes.iter().filter_map(|(_, w)| match w {
                    Write::Script(script, ..) => Some(*script),
                    Write::Delete(_) => None,
                });
                if let Err(error) = self.load_scripts(&node, scripts).await {
                    return writes.iter().map(|_| Err(error.clone())).collect();
                }
                continue;
            }
            let mut confirmed = confirmation(ids, tail, self.min_replica_acks, server);
            if confirmed.is_ok() && !self.still_owns(server, writes) {
                // A slot moved meanwhile: a write may have been redirected to its new owner,
                // which this `WAIT` says nothing about.
                confirmed = Err(Error::new(
                    ErrorKind::Cluster,
                    format!("{server}: a slot moved during the write; not confirmed"),
                ));
            }
            return results
                .iter()
                .map(|r| match (r, &confirmed) {
                    (Err(error), _) | (Ok(_), Err(error)) => Err(error.clone()),
                    (Ok(_), Ok(())) => Ok(()),
                })
                .collect();
        }
        unreachable!("the second attempt returns")
    }

    /// Whether `server` owns every slot of `writes` by the routing table as it is now (fred
    /// refreshes it when a node answers `MOVED`).
    fn still_owns(&self, server: &Server, writes: &[(usize, Write)]) -> bool {
        let Some(routing) = self.client.cached_cluster_state() else {
            return false;
        };
        writes.iter().all(|(_, write)| {
            routing.get_server(redis_keyslot(write.keys()[0].as_bytes())) == Some(server)
        })
    }

    /// The replies of [`CacheWriter::write_confirmed`]'s pipeline, one per command (the writes
    /// plus four).
    async fn confirmed_pipeline(
        &self,
        node: &WithOptions<Client>,
        writes: &[(usize, Write)],
        probe: &str,
    ) -> Result<Vec<Result<Value, Error>>, Error> {
        // A pipeline of the node-pinned client: every command goes to `server`.
        let pipeline = Pipeline::from(node.clone());
        let command = |name: &'static str| CustomCommand::new(name, ClusterHash::Random, false);
        let _: () = pipeline.custom(command("CLIENT"), vec!["ID"]).await?;
        for (_, write) in writes {
            let _: () = match write {
                Write::Script(script, keys, args) => {
                    let mut all: Vec<Value> =
                        vec![Value::from(script.sha1()), Value::from(keys.len() as i64)];
                    all.extend(keys.iter().map(|k| Value::from(k.as_str())));
                    all.extend(args.iter().cloned());
                    pipeline.custom(command("EVALSHA"), all).await?
                }
                Write::Delete(keys) => pipeline.custom(command("DEL"), keys.clone()).await?,
            };
        }
        let ttl = self.ttl_ms.to_string();
        let _: () = pipeline
            .custom(command("SET"), vec![probe, "1", "PX", ttl.as_str()])
            .await?;
        let _: () = pipeline
            .custom(
                command("WAIT"),
                vec![
                    Value::from(self.min_replica_acks),
                    Value::from(self.replica_ack_timeout_ms),
                ],
            )
            .await?;
        let _: () = pipeline.custom(command("CLIENT"), vec!["ID"]).await?;
        let replies = pipeline.try_all::<Value>().await;
        if replies.len() != writes.len() + 4 {
            let error = replies
                .into_iter()
                .find_map(Result::err)
                .unwrap_or_else(|| Error::new(ErrorKind::Protocol, "a reply is missing"));
            return Err(error);
        }
        Ok(replies)
    }

    async fn load_scripts(
        &self,
        node: &WithOptions<Client>,
        scripts: impl Iterator<Item = &'static LuaScript>,
    ) -> Result<(), Error> {
        let mut loaded = std::collections::HashSet::new();
        for script in scripts {
            if loaded.insert(script.sha1()) {
                let command = CustomCommand::new("SCRIPT", ClusterHash::Random, false);
                let _: Value = node.custom(command, vec!["LOAD", script.source()]).await?;
            }
        }
        Ok(())
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

    /// The first half of a rebuild of `author_id`, before its PostgreSQL snapshot is taken
    /// (see the `AUTHOR_PREPARE` script): without it, a key lost between the snapshot and
    /// [`CacheWriter::rebuild_author`] could take a newer write with it unnoticed.
    pub async fn prepare_author(&self, author_id: i64) -> Result<(), Error> {
        self.prepare_keys(&self.layout.author(author_id)).await
    }

    async fn prepare_keys(&self, keys: &super::layout::AuthorKeys) -> Result<(), Error> {
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

    fn command(&self, change: &CacheChange) -> (&'static LuaScript, Vec<String>, Vec<Value>) {
        let ttl = Value::from(self.ttl_ms);
        if let Some(command) = self.post_command(change, &self.layout.author(change.slot_owner())) {
            return command;
        }
        match change {
            CacheChange::PostCreated { .. } | CacheChange::PostDeleted { .. } => {
                unreachable!("post_command answers for posts")
            }
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

/// Whether the tail of [`CacheWriter::write_confirmed`]'s pipeline confirms its writes: the
/// probe written, `WAIT` reaching `needed`, and both `CLIENT ID`s (`first`, the last of
/// `tail`) the same connection.
fn confirmation(
    first: &Result<Value, Error>,
    tail: &[Result<Value, Error>],
    needed: i64,
    server: &Server,
) -> Result<(), Error> {
    let [probe, acked, last] = tail else {
        return Err(Error::new(ErrorKind::Protocol, "a reply is missing"));
    };
    probe.clone()?;
    let acked: i64 = acked.clone()?.convert()?;
    let (first, last): (i64, i64) = (first.clone()?.convert()?, last.clone()?.convert()?);
    if first != last {
        return Err(Error::new(
            ErrorKind::IO,
            format!("{server}: the connection changed during the write; not confirmed"),
        ));
    }
    if acked < needed {
        return Err(Error::new(
            ErrorKind::Timeout,
            format!("{server}: {acked} replica(s) acknowledged, {needed} needed"),
        ));
    }
    Ok(())
}

/// An author's original keys as `sync_copies` reads them: meta fields (loaded, gone, floor,
/// floor_ms), the timeline with scores, the bodies, the deleted posts with scores.
type OriginalSnapshot = (
    Vec<Option<String>>,
    Vec<(String, f64)>,
    HashMap<String, Bytes>,
    Vec<(String, f64)>,
);

impl CacheWriter {
    /// The script of a post change against the author keys `keys` (the original, or a copy);
    /// `None` for other changes.
    fn post_command(
        &self,
        change: &CacheChange,
        keys: &super::layout::AuthorKeys,
    ) -> Option<(&'static LuaScript, Vec<String>, Vec<Value>)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn int(n: i64) -> Result<Value, Error> {
        Ok(Value::Integer(n))
    }

    #[test]
    fn a_write_is_confirmed_only_on_one_connection_with_enough_replicas() {
        let server = Server::new("127.0.0.1", 7000);
        let ok = Ok(Value::from("OK"));
        assert!(confirmation(&int(7), &[ok.clone(), int(1), int(7)], 1, &server).is_ok());
        // Another connection answered the second CLIENT ID: a reconnection came in between.
        let moved = confirmation(&int(7), &[ok.clone(), int(1), int(8)], 1, &server);
        assert!(moved.unwrap_err().details().contains("connection changed"));
        let short = confirmation(&int(7), &[ok.clone(), int(0), int(7)], 1, &server);
        assert_eq!(short.unwrap_err().kind(), &ErrorKind::Timeout);
        let probe_failed = Err(Error::new(ErrorKind::IO, "down"));
        assert!(confirmation(&int(7), &[probe_failed, int(1), int(7)], 1, &server).is_err());
        assert!(
            confirmation(&int(7), &[ok, int(1)], 1, &server).is_err(),
            "a reply missing"
        );
    }
}
