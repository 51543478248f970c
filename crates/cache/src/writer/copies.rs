//! Key replication: copies of a hot author's keys on the other masters, kept in step with the
//! original.

use super::*;

impl CacheWriter {
    /// The copy numbers a change must also be applied to: those of its author when the author
    /// is mirrored and the change alters the timeline.
    pub(super) fn copies_of(&self, change: &CacheChange) -> Vec<u32> {
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
        let numbers = crate::layout::copy_numbers(&self.layout, &routing, author_id);
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

    pub(super) async fn drop_copies(&self, author_id: i64, numbers: &[u32]) -> Result<(), Error> {
        let deletes = numbers.iter().map(|n| {
            let copy = self.layout.author_copy(author_id, *n);
            async move {
                let _: i64 = self.client.del(copy.script_keys()).await?;
                Ok::<_, Error>(())
            }
        });
        futures::future::try_join_all(deletes).await.map(|_| ())
    }
}

/// An author's original keys as `sync_copies` reads them: meta fields (loaded, gone, floor,
/// floor_ms), the timeline with scores, the bodies, the deleted posts with scores.
type OriginalSnapshot = (
    Vec<Option<String>>,
    Vec<(String, f64)>,
    HashMap<String, Bytes>,
    Vec<(String, f64)>,
);
