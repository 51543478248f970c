//! Cache truth when keys disappear on their own: expiry, eviction of one key, an operator's
//! `DEL`, late replays below the cached window. Every read must still equal PostgreSQL.

use std::time::Duration;

use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use shardfeed_aggregator::read::{postgres, rebuild::Target};
use shardfeed_cache::CacheChange;
use shardfeed_proto::v1::GetHomeFeedRequest;
use tonic::Code;

use crate::harness::{flat, unreachable_postgres, Harness};

impl Harness {
    async fn del(&self, key: String) {
        let _: i64 = self.writer.client().del(key).await.unwrap();
    }

    async fn loaded(&self, author: i64) -> bool {
        self.meta(author).await.get("loaded").map(String::as_str) == Some("1")
    }

    /// Until the rebuilds reads ask for have put `author`'s whole timeline back and marked it
    /// loaded.
    async fn eventually_rebuilt(&self, author: i64) {
        let truth = self.truth(author).await;
        for _ in 0..200 {
            if self.loaded(author).await && self.cached_ids(author).await == truth {
                return;
            }
            let _ = self.page(author, 100, "").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("author {author} was not rebuilt");
    }

    async fn home(&self, user: i64) -> shardfeed_proto::v1::GetHomeFeedResponse {
        self.feeds
            .clone()
            .get_home_feed(GetHomeFeedRequest {
                user_id: user,
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
    }
}

#[tokio::test]
async fn keys_written_at_different_times_expire_together() {
    // The scenario of a user whose meta was written before the first post: each key used to
    // renew its own TTL, so the timeline expired while the meta still vouched for two posts.
    let mut h = Harness::builder()
        .setting("SHARDFEED_CACHE__TTL_SECS", "3")
        .start()
        .await;
    let author = h.user(true).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    h.posts(author, 1, 1, true).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    h.posts(author, 1, 1, true).await;
    let layout = h.writer.layout().clone();
    let client = h.writer.client().clone();
    let mut ttls = Vec::new();
    for key in [
        layout.timeline(author),
        layout.posts(author),
        layout.meta(author),
    ] {
        let ttl: i64 = client.pttl(key).await.unwrap();
        ttls.push(ttl);
    }
    let spread = ttls.iter().max().unwrap() - ttls.iter().min().unwrap();
    assert!(spread <= 5, "one expiry for all keys, got PTTLs {ttls:?}");
    // Past the expiry and with one more post: the timeline is all three posts, not the last.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    h.posts(author, 1, 1, true).await;
    let truth = h.truth(author).await;
    assert_eq!(truth.len(), 3);
    assert_eq!(flat(&h.walk(author, 2).await), truth);
    h.eventually_rebuilt(author).await;
    assert_eq!(h.cached_ids(author).await, truth);
    assert_eq!(flat(&h.walk(author, 2).await), truth);
}

#[tokio::test]
async fn a_timeline_or_its_bodies_lost_alone_are_read_from_postgres_and_rebuilt_whole() {
    for lost in ["tl", "posts", "del", "meta"] {
        let mut h = Harness::start(800).await;
        let author = h.user(true).await;
        let fan = h.user(true).await;
        h.follow_cached(fan, author, 1).await;
        let ids = h.posts(author, 6, 1, true).await;
        h.delete_post(author, ids[2], true).await;
        let truth = h.truth(author).await;
        assert_eq!(
            flat(&h.walk(author, 4).await),
            truth,
            "before losing {lost}"
        );
        let layout = h.writer.layout();
        let key = match lost {
            "tl" => layout.timeline(author),
            "posts" => layout.posts(author),
            "del" => layout.deleted(author),
            _ => layout.meta(author),
        };
        h.del(key).await;
        if lost == "del" {
            // Losing only the tombstones breaks nothing a reader sees; the next write notices,
            // and a replayed create of the deleted post must not come back.
            h.writer
                .apply(&CacheChange::PostCreated {
                    author_id: author,
                    post_id: ids[2],
                    time_ms: shardfeed_proto::ids::post_time_ms(ids[2]),
                    body: format!("post 2 of {author}"),
                })
                .await
                .unwrap();
        }
        assert_eq!(
            flat(&h.walk(author, 4).await),
            truth,
            "timeline, {lost} lost"
        );
        assert_eq!(h.home_feed_ids(fan).await, truth, "feed, {lost} lost");
        h.eventually_rebuilt(author).await;
        assert_eq!(
            h.cached_ids(author).await,
            truth,
            "the rebuild restored all, {lost} lost"
        );
        assert_eq!(
            flat(&h.walk(author, 4).await),
            truth,
            "after the rebuild, {lost} lost"
        );
        assert_eq!(h.home_feed_ids(fan).await, truth);
    }
}

#[tokio::test]
async fn a_rebuild_restores_every_post_whatever_keys_were_left() {
    let mut h = Harness::start(800).await;
    let author = h.user(true).await;
    h.posts(author, 5, 1, true).await;
    // The timeline went, the bodies stayed: a rebuild used to skip every post whose body it
    // found and write `count 0`.
    h.del(h.writer.layout().timeline(author)).await;
    // One rebuild: its first half drops the leftovers (bodies without entries) before the
    // snapshot is taken.
    h.rebuilder(h.settings.cache.timeline_len)
        .rebuild_now(Target::Timeline, author)
        .await
        .unwrap();
    assert!(h.loaded(author).await);
    assert_eq!(h.cached_ids(author).await, h.truth(author).await);
    let meta: std::collections::HashMap<String, String> = h
        .writer
        .client()
        .hgetall(h.writer.layout().meta(author))
        .await
        .unwrap();
    assert_eq!(meta.get("count").map(String::as_str), Some("5"), "{meta:?}");
}

#[tokio::test]
async fn a_late_create_below_the_cached_window_opens_no_gap() {
    let mut h = Harness::start(5).await;
    let author = h.user(true).await;
    let ids = h.posts(author, 8, 1, true).await;
    // The window is the newest 5; deleting the newest leaves 4 cached, fewer than it holds.
    h.delete_post(author, ids[7], true).await;
    // A replay of the oldest post's create arrives: it lies below posts never re-cached.
    h.writer
        .apply(&CacheChange::PostCreated {
            author_id: author,
            post_id: ids[0],
            time_ms: shardfeed_proto::ids::post_time_ms(ids[0]),
            body: format!("post 0 of {author}"),
        })
        .await
        .unwrap();
    assert!(!h.cached_ids(author).await.contains(&ids[0]));
    let truth = h.truth(author).await;
    for size in [2, 4, 10] {
        assert_eq!(flat(&h.walk(author, size).await), truth, "page size {size}");
    }
}

#[tokio::test]
async fn tombstones_stay_within_the_window() {
    let mut h = Harness::start(3).await;
    let author = h.user(true).await;
    let ids = h.posts(author, 12, 1, true).await;
    for id in &ids[..10] {
        h.delete_post(author, *id, true).await;
    }
    let deleted = h.writer.layout().deleted(author);
    let kept: i64 = h.writer.client().zcard(&deleted).await.unwrap();
    assert!(kept <= 3, "{kept} tombstones for a window of 3");
    assert_eq!(flat(&h.walk(author, 2).await), h.truth(author).await);
    // A rebuild sends no more than the window either.
    h.del(h.writer.layout().meta(author)).await;
    h.rebuilder(h.settings.cache.timeline_len)
        .rebuild_now(Target::Timeline, author)
        .await
        .unwrap();
    let kept: i64 = h.writer.client().zcard(&deleted).await.unwrap();
    assert!(kept <= 3, "{kept} tombstones after a rebuild");
    assert_eq!(flat(&h.walk(author, 2).await), h.truth(author).await);
}

#[tokio::test]
async fn feeds_of_unknown_users_take_no_rebuild() {
    let h = Harness::start(800).await;
    for user in [987_654_321_i64, 987_654_322, 987_654_323] {
        let s = h
            .feeds
            .clone()
            .get_home_feed(GetHomeFeedRequest {
                user_id: user,
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::NotFound, "{s:?}");
        // A rebuild would have taken its lease first (and kept it: nothing to release it).
        let lease = h.writer.layout().rebuild_lease(user, "fol");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let taken: i64 = h.writer.client().exists(lease).await.unwrap();
        assert_eq!(taken, 0, "a rebuild was started for unknown user {user}");
    }
}

#[tokio::test]
async fn bodies_lost_while_postgres_is_down_give_a_degraded_page() {
    let mut h = Harness::builder()
        .aggregator_pg(unreachable_postgres())
        .start()
        .await;
    let reader = h.user(true).await;
    let kept = h.user(true).await;
    let lost = h.user(true).await;
    h.follow_cached(reader, kept, 1).await;
    h.follow_cached(reader, lost, 2).await;
    h.posts(kept, 3, 1, true).await;
    h.posts(lost, 3, 1, true).await;
    h.del(h.writer.layout().posts(lost)).await;
    let page = h.home(reader).await;
    assert!(page.degraded, "{page:?}");
    assert_eq!(page.authors_omitted, 1);
    let ids: Vec<i64> = page.posts.iter().map(|p| p.post_id).collect();
    assert_eq!(ids, h.truth(kept).await, "what could be read");
}

#[tokio::test]
async fn a_key_lost_while_a_rebuild_runs_leaves_the_author_to_the_next_read() {
    let mut h = Harness::start(800).await;
    let author = h.user(false).await;
    let ids = h.posts(author, 3, 1, false).await;
    let pool = shardfeed_server::postgres::pool(&h.pg_settings()).unwrap();
    h.writer.prepare_author(author).await.unwrap();
    let snapshot = postgres::author_snapshot(&pool, author, 800)
        .await
        .unwrap()
        .unwrap();
    // Between the snapshot and the merge: a post deleted, then its tombstone lost.
    h.delete_post(author, ids[1], true).await;
    h.del(h.writer.layout().deleted(author)).await;
    h.writer
        .rebuild_author(author, &snapshot, "token")
        .await
        .unwrap();
    assert!(
        !h.loaded(author).await,
        "a key lost since the prepare step: the merge is not trusted"
    );
    let truth = h.truth(author).await;
    assert_eq!(flat(&h.walk(author, 2).await), truth);
    h.eventually_rebuilt(author).await;
    assert_eq!(h.cached_ids(author).await, truth);
}

#[tokio::test]
async fn a_followee_set_lost_while_it_is_rebuilt_is_not_marked_complete() {
    let mut h = Harness::start(800).await;
    let reader = h.user(false).await;
    let author = h.user(true).await;
    h.posts(author, 2, 1, true).await;
    let pool = shardfeed_server::postgres::pool(&h.pg_settings()).unwrap();
    h.writer.prepare_following(reader, "token").await.unwrap();
    let (followees, since) = postgres::followees_snapshot(&pool, reader).await.unwrap();
    // Between the snapshot and the merge: a follow, applied, then the set lost.
    h.follow_cached(reader, author, since + 1).await;
    h.del(h.writer.layout().following(reader)).await;
    h.writer
        .rebuild_following(reader, &followees, since, "token")
        .await
        .unwrap();
    let set: std::collections::HashMap<String, String> = h
        .writer
        .client()
        .hgetall(h.writer.layout().following(reader))
        .await
        .unwrap();
    assert!(!set.contains_key("_loaded"), "{set:?}");
    assert_eq!(h.home_feed_ids(reader).await, h.truth(author).await);
}
