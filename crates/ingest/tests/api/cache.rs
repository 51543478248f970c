//! Reading the cache the way a test wants to look at it: keys come from `CacheLayout` only.

use std::collections::HashMap;

use fred::{
    interfaces::{HashesInterface, KeysInterface, SortedSetsInterface},
    types::Value,
};
use prost::Message;
use shardfeed_proto::v1::Post;

use crate::helpers::TestApp;

/// What the cache holds for one post of an author.
#[derive(Debug, PartialEq)]
pub enum Entry {
    Missing,
    Tombstone,
    Body(Post),
}

impl TestApp {
    /// The cached timeline, oldest first: (post id, score).
    pub async fn timeline(&self, author_id: i64) -> Vec<(i64, i64)> {
        let raw: Vec<(String, f64)> = self
            .redis
            .zrange(
                self.layout.timeline(author_id),
                0,
                -1,
                None,
                false,
                None,
                true,
            )
            .await
            .expect("ZRANGE");
        raw.into_iter()
            .map(|(id, score)| (id.parse().unwrap(), score as i64))
            .collect()
    }

    pub async fn timeline_ids(&self, author_id: i64) -> Vec<i64> {
        self.timeline(author_id)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// A post's entry: its body in `posts`, or its tombstone in `del` (never both).
    pub async fn entry(&self, author_id: i64, post_id: i64) -> Entry {
        let value: Value = self
            .redis
            .hget(self.layout.posts(author_id), post_id.to_string())
            .await
            .expect("HGET");
        let deleted: Option<f64> = self
            .redis
            .zscore(self.layout.deleted(author_id), post_id.to_string())
            .await
            .expect("ZSCORE");
        match value {
            Value::Null if deleted.is_some() => Entry::Tombstone,
            Value::Null => Entry::Missing,
            _ if deleted.is_some() => panic!("post {post_id} has a body and a tombstone"),
            Value::Bytes(b) => {
                Entry::Body(Post::decode(b.as_ref()).expect("a cached post decodes"))
            }
            Value::String(s) => {
                Entry::Body(Post::decode(s.as_bytes()).expect("a cached post decodes"))
            }
            other => panic!("unexpected cached value {other:?}"),
        }
    }

    pub async fn meta(&self, author_id: i64) -> HashMap<String, String> {
        self.redis
            .hgetall(self.layout.meta(author_id))
            .await
            .expect("HGETALL meta")
    }

    /// The cached followee set: followee id → signed edge version.
    pub async fn following_cache(&self, user_id: i64) -> HashMap<String, String> {
        self.redis
            .hgetall(self.layout.following(user_id))
            .await
            .expect("HGETALL following")
    }

    pub async fn key_exists(&self, key: String) -> bool {
        let n: i64 = self.redis.exists(key).await.expect("EXISTS");
        n == 1
    }
}

/// The testkit's, under the name the tests import it by.
pub use shardfeed_testkit::eventually;

impl TestApp {
    /// Like `timeline_ids`, but a node that does not answer (mid-failover) is an error, not a
    /// panic.
    pub async fn try_timeline_ids(&self, author_id: i64) -> Result<Vec<i64>, fred::error::Error> {
        let raw: Vec<String> = self
            .redis
            .zrange(
                self.layout.timeline(author_id),
                0,
                -1,
                None,
                false,
                None,
                false,
            )
            .await?;
        Ok(raw.into_iter().map(|id| id.parse().unwrap()).collect())
    }
}
