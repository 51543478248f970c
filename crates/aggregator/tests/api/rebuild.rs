//! Read-through: what the cache does not hold is served from PostgreSQL and rebuilt, merging
//! with whatever writes reached the cache meanwhile.

use std::{collections::HashMap, time::Duration};

use fred::interfaces::{HashesInterface, SortedSetsInterface};
use shardfeed_aggregator::read::rebuild::{Rebuilder, Target};
use shardfeed_cache::CacheChange;

use crate::harness::{flat, Harness};

impl Harness {
    pub(crate) async fn meta(&self, user: i64) -> HashMap<String, String> {
        self.writer
            .client()
            .hgetall(self.writer.layout().meta(user))
            .await
            .unwrap()
    }

    pub(crate) async fn cached_ids(&self, author: i64) -> Vec<i64> {
        let ids: Vec<String> = self
            .writer
            .client()
            .zrange(
                self.writer.layout().timeline(author),
                0,
                -1,
                None,
                true,
                None,
                false,
            )
            .await
            .unwrap();
        ids.iter().map(|id| id.parse().unwrap()).collect()
    }

    pub(crate) async fn eventually_loaded(&self, user: i64) {
        for _ in 0..100 {
            if self.meta(user).await.get("loaded").map(String::as_str) == Some("1") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("user {user} was not rebuilt into the cache");
    }

    pub(crate) fn rebuilder(&self, timeline_len: usize) -> Rebuilder {
        let pool = shardfeed_server::postgres::pool(&self.pg_settings()).unwrap();
        Rebuilder::new(self.writer.clone(), pool, timeline_len, 4)
    }
}

#[tokio::test]
async fn a_timeline_read_from_postgres_is_rebuilt_into_the_cache() {
    let mut h = Harness::start(800).await;
    let author = h.user(false).await;
    h.posts(author, 7, 2, false).await;
    let truth = h.truth(author).await;
    assert_eq!(flat(&h.walk(author, 5).await), truth);
    h.eventually_loaded(author).await;
    assert_eq!(
        h.cached_ids(author).await,
        truth,
        "the whole timeline, newest first"
    );
    assert_eq!(
        h.meta(author).await.get("complete").map(String::as_str),
        Some("1")
    );
    // Served from the cache from now on, and still right.
    assert_eq!(flat(&h.walk(author, 3).await), truth);
}

#[tokio::test]
async fn a_rebuild_never_resurrects_a_post_deleted_meanwhile_nor_drops_a_new_one() {
    let mut h = Harness::start(800).await;
    let author = h.user(false).await;
    let ids = h.posts(author, 4, 1, false).await;
    // Writes that reached the cache before the rebuild's script ran: a delete of a post the
    // snapshot still has, and a post the snapshot does not have yet.
    let snapshot_rebuilder = h.rebuilder(800);
    h.writer
        .apply(&CacheChange::PostDeleted {
            author_id: author,
            post_id: ids[1],
        })
        .await
        .unwrap();
    let newer = ids[3] + (1 << 22);
    h.writer
        .apply(&CacheChange::PostCreated {
            author_id: author,
            post_id: newer,
            time_ms: (newer >> 22) + 1_577_836_800_000,
            body: "post newer".into(),
        })
        .await
        .unwrap();
    snapshot_rebuilder
        .rebuild_now(Target::Timeline, author)
        .await
        .unwrap();
    let mut want = vec![newer, ids[3], ids[2], ids[0]];
    want.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(h.cached_ids(author).await, want);
}

#[tokio::test]
async fn a_trimmed_rebuild_is_marked_incomplete() {
    let mut h = Harness::start(3).await;
    let author = h.user(false).await;
    let ids = h.posts(author, 5, 1, false).await;
    h.rebuilder(3)
        .rebuild_now(Target::Timeline, author)
        .await
        .unwrap();
    assert_eq!(h.cached_ids(author).await, vec![ids[4], ids[3], ids[2]]);
    assert_eq!(
        h.meta(author).await.get("complete").map(String::as_str),
        Some("0")
    );
    assert_eq!(flat(&h.walk(author, 2).await), h.truth(author).await);
}

#[tokio::test]
async fn a_followee_set_read_from_postgres_is_rebuilt_and_newer_changes_win() {
    let mut h = Harness::start(800).await;
    let reader = h.user(false).await;
    let a = h.user(true).await;
    let b = h.user(true).await;
    h.posts(a, 2, 1, true).await;
    h.posts(b, 2, 1, true).await;
    for followee in [a, b] {
        h.sql
            .execute(
                "INSERT INTO follows (follower_id, followee_id) VALUES ($1, $2)",
                &[&reader, &followee],
            )
            .await
            .unwrap();
    }
    let _ = h.home_feed_ids(reader).await;
    let key = h.writer.layout().following(reader);
    let mut set: HashMap<String, String> = HashMap::new();
    for _ in 0..100 {
        set = h.writer.client().hgetall(&key).await.unwrap();
        if set.contains_key("_loaded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        set.get(&a.to_string()).map(String::as_str),
        Some("0"),
        "{set:?}"
    );
    assert_eq!(
        set.get(&b.to_string()).map(String::as_str),
        Some("0"),
        "{set:?}"
    );
    // A real unfollow (version 1) beats the snapshot's version 0.
    h.sql
        .execute(
            "DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2",
            &[&reader, &b],
        )
        .await
        .unwrap();
    h.writer
        .apply(&CacheChange::Unfollowed {
            follower_id: reader,
            followee_id: b,
            version: 1,
        })
        .await
        .unwrap();
    let feed = h.home_feed_ids(reader).await;
    assert_eq!(feed, h.truth(a).await);
}
