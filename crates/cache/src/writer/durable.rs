//! Durable writes: one pinned pipeline per master that ends with `WAIT`, confirmed only when
//! the same connection carried the writes and enough replicas acknowledged them.

use super::*;
use shardfeed_server::spans;

impl CacheWriter {
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
                // The writes and four more: CLIENT ID, the probe, WAIT, CLIENT ID.
                let commands = writes.len() + 4;
                let write = self.write_confirmed(&server, &writes, routing);
                let outcome = spans::redis("PIPELINE cache.write", Some(&server), commands, write);
                let outcome = outcome.await;
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
    pub(super) async fn write_confirmed(
        &self,
        server: &Server,
        writes: &[(usize, Write)],
        routing: &fred::types::cluster::ClusterRouting,
    ) -> Vec<Result<(), Error>> {
        let Some(probe) = crate::layout::probe_key(&self.layout, routing, server) else {
            let error = Error::new(ErrorKind::Cluster, format!("{server} owns no slot"));
            return writes.iter().map(|_| Err(error.clone())).collect();
        };
        let node = self.client.with_cluster_node(server.clone());
        for attempt in 0..2 {
            let started = std::time::Instant::now();
            let sent = self.confirmed_pipeline(&node, writes, &probe).await;
            // A reply that is an error (a script to reload, too few replica acks) is the
            // node's answer; only a pipeline that got no answers is the node's failure.
            let outcome = match &sent {
                Ok(_) => Outcome::Ok,
                Err(_) => Outcome::Error,
            };
            self.redis_metrics
                .record(Some(server), writes.len() + 4, started.elapsed(), outcome);
            let replies = match sent {
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
    pub(super) fn still_owns(&self, server: &Server, writes: &[(usize, Write)]) -> bool {
        let Some(routing) = self.client.cached_cluster_state() else {
            return false;
        };
        writes.iter().all(|(_, write)| {
            routing.get_server(redis_keyslot(write.keys()[0].as_bytes())) == Some(server)
        })
    }

    /// The replies of [`CacheWriter::write_confirmed`]'s pipeline, one per command (the writes
    /// plus four).
    pub(super) async fn confirmed_pipeline(
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

    pub(super) async fn load_scripts(
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
