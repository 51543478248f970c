//! GetHomeFeed against the SQL ground truth, on random follow graphs with equal timestamps,
//! deletes, unfollows, authors the cache never saw, and posts arriving mid-walk.

use std::collections::HashSet;

use rand::{rngs::StdRng, Rng, SeedableRng};
use shardfeed_cache::CacheChange;
use shardfeed_proto::v1::GetHomeFeedRequest;
use tonic::Code;

use crate::harness::{flat, Harness};
use crate::timeline::assert_violation;

impl Harness {
    pub(crate) async fn follow_cached(&self, follower: i64, followee: i64, version: i64) {
        self.follow(follower, followee, version, true).await
    }

    pub(crate) async fn follow(&self, follower: i64, followee: i64, version: i64, cached: bool) {
        self.sql
            .execute(
                "INSERT INTO follows (follower_id, followee_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&follower, &followee],
            )
            .await
            .unwrap();
        if cached {
            // Applied and announced, as ingest does.
            let change = CacheChange::Followed {
                follower_id: follower,
                followee_id: followee,
                version,
            };
            self.writer.apply(&change).await.unwrap();
            self.writer.announce([&change]).await.unwrap();
        }
    }

    async fn unfollow(&self, follower: i64, followee: i64, version: i64, cached: bool) {
        self.sql
            .execute(
                "DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2",
                &[&follower, &followee],
            )
            .await
            .unwrap();
        if cached {
            let change = CacheChange::Unfollowed {
                follower_id: follower,
                followee_id: followee,
                version,
            };
            self.writer.apply(&change).await.unwrap();
            self.writer.announce([&change]).await.unwrap();
        }
    }

    pub(crate) async fn delete_post(&self, author: i64, post_id: i64, cached: bool) {
        self.sql
            .execute(
                "UPDATE posts SET delete_time = now(), body = '' WHERE author_id = $1 AND post_id = $2",
                &[&author, &post_id],
            )
            .await
            .unwrap();
        if cached {
            self.writer
                .apply(&CacheChange::PostDeleted {
                    author_id: author,
                    post_id,
                })
                .await
                .unwrap();
        }
    }

    /// The SQL ground truth of a home feed.
    pub(crate) async fn home_truth(&self, user: i64) -> Vec<i64> {
        self.sql
            .query(
                "SELECT p.post_id FROM follows f JOIN posts p ON p.author_id = f.followee_id
                 WHERE f.follower_id = $1 AND p.delete_time IS NULL
                 ORDER BY p.create_time DESC, p.post_id DESC",
                &[&user],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    async fn home_page(
        &self,
        user_id: i64,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<i64>, String), tonic::Status> {
        let r = self
            .feeds
            .clone()
            .get_home_feed(GetHomeFeedRequest {
                user_id,
                page_size,
                page_token: page_token.into(),
            })
            .await?
            .into_inner();
        assert!(
            !r.degraded,
            "no store is down: the feed must not be degraded"
        );
        assert_eq!(r.authors_omitted, 0);
        for post in &r.posts {
            assert!(post.body.starts_with("post "), "a real body: {post:?}");
        }
        Ok((
            r.posts.iter().map(|p| p.post_id).collect(),
            r.next_page_token,
        ))
    }

    pub(crate) async fn home_feed_ids(&self, user_id: i64) -> Vec<i64> {
        self.home_page(user_id, 100, "").await.unwrap().0
    }

    pub(crate) async fn home_walk(&self, user_id: i64, page_size: i32) -> Vec<Vec<i64>> {
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let (ids, next) = self.home_page(user_id, page_size, &token).await.unwrap();
            assert!(ids.len() <= page_size.max(1) as usize);
            pages.push(ids);
            if next.is_empty() {
                return pages;
            }
            assert!(pages.len() < 1000, "paging does not end");
            token = next;
        }
    }
}

/// A random world: users (some never cached), random follows, posts in shared milliseconds,
/// deletes and unfollows. Returns the user ids.
pub(crate) async fn random_world(h: &mut Harness, seed: u64) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut users = Vec::new();
    let mut cached = HashSet::new();
    for _ in 0..12 {
        let is_cached = rng.gen_bool(0.75);
        let id = h.user(is_cached).await;
        if is_cached {
            cached.insert(id);
        }
        users.push(id);
    }
    let mut version = 0;
    let mut edges = Vec::new();
    for &a in &users {
        for &b in &users {
            if a != b && rng.gen_bool(0.4) {
                version += 1;
                h.follow(a, b, version, cached.contains(&a)).await;
                edges.push((a, b));
            }
        }
    }
    // Posts interleaved across authors, several in one millisecond now and then (also by
    // different authors), some deleted.
    let mut seq = 0;
    for _ in 0..120 {
        if rng.gen_bool(0.6) {
            h.next_ms += 1;
        }
        let author = users[rng.gen_range(0..users.len())];
        seq += 1;
        let id = h
            .post_at(author, h.next_ms, seq, cached.contains(&author))
            .await;
        if rng.gen_bool(0.2) {
            h.delete_post(author, id, cached.contains(&author)).await;
        }
    }
    for (a, b) in edges {
        if rng.gen_bool(0.15) {
            version += 1;
            h.unfollow(a, b, version, cached.contains(&a)).await;
        }
    }
    users
}

#[tokio::test]
async fn every_page_of_every_feed_matches_the_sql_truth() {
    let mut h = Harness::start(800).await;
    let users = random_world(&mut h, 7).await;
    for &user in &users {
        let truth = h.home_truth(user).await;
        for size in [1, 3, 7, 20] {
            assert_eq!(
                flat(&h.home_walk(user, size).await),
                truth,
                "user {user}, page size {size}"
            );
        }
    }
}

#[tokio::test]
async fn feeds_stay_exact_when_hot_authors_come_from_the_mitigations() {
    // Heads of three posts: deeper pages of a hot author fall back to the ordinary path.
    let mut h = crate::hotspot::start(&[("SHARDFEED_HOTSPOT__NEAR_CACHE_POSTS", "3")]).await;
    let users = random_world(&mut h, 11).await;
    for &author in &users[..4] {
        crate::hotspot::heat(&h, author).await;
    }
    for &user in &users {
        let truth = h.home_truth(user).await;
        for size in [1, 2, 20] {
            assert_eq!(
                flat(&h.home_walk(user, size).await),
                truth,
                "user {user}, page size {size}"
            );
        }
    }
}

#[tokio::test]
async fn feeds_stay_exact_when_older_posts_live_only_in_postgres() {
    // Timelines of 4: most authors' older posts were trimmed from the cache.
    let mut h = Harness::start(4).await;
    let users = random_world(&mut h, 11).await;
    for &user in &users {
        let truth = h.home_truth(user).await;
        for size in [2, 5] {
            assert_eq!(
                flat(&h.home_walk(user, size).await),
                truth,
                "user {user}, page size {size}"
            );
        }
    }
}

#[tokio::test]
async fn posts_arriving_mid_walk_appear_only_on_a_fresh_first_page() {
    let mut h = Harness::start(800).await;
    let reader = h.user(true).await;
    let authors = [h.user(true).await, h.user(true).await];
    for (i, a) in authors.iter().enumerate() {
        h.follow(reader, *a, i as i64 + 1, true).await;
        h.posts(*a, 6, 2, true).await;
    }
    let before = h.home_truth(reader).await;
    let (first, mut token) = h.home_page(reader, 4, "").await.unwrap();
    let mut walked = first;
    // New posts arrive while the reader pages on.
    h.posts(authors[0], 3, 1, true).await;
    while !token.is_empty() {
        let (ids, next) = h.home_page(reader, 4, &token).await.unwrap();
        walked.extend(ids);
        token = next;
    }
    assert_eq!(
        walked, before,
        "every post that existed at the first page, once, in order"
    );
    let fresh = h.home_page(reader, 3, "").await.unwrap().0;
    assert_eq!(
        fresh,
        h.home_truth(reader).await[..3].to_vec(),
        "the new posts lead a fresh first page"
    );
}

#[tokio::test]
async fn every_feed_stays_exact_while_posts_arrive_mid_walk() {
    let mut h = Harness::start(800).await;
    let users = random_world(&mut h, 23).await;
    let mut rng = StdRng::seed_from_u64(23);
    let mut seq = 10_000;
    for &user in &users {
        let truth = h.home_truth(user).await;
        let (mut walked, mut token) = h.home_page(user, 3, "").await.unwrap();
        while !token.is_empty() {
            // New posts (newer than everything) by random users, some followed by `user`,
            // sometimes two in one millisecond.
            for _ in 0..2 {
                if rng.gen_bool(0.7) {
                    h.next_ms += 1;
                }
                seq += 1;
                let author = users[rng.gen_range(0..users.len())];
                // Applied to the cache and announced, as ingest does with every post: an
                // author whose timeline is not loaded stays not loaded (the script does not
                // mark it), one the aggregator has rebuilt meanwhile gets the post.
                let post_id = h.post_at(author, h.next_ms, seq, true).await;
                h.announce_post(author, post_id, h.next_ms).await;
            }
            let (ids, next) = h.home_page(user, 3, &token).await.unwrap();
            walked.extend(ids);
            token = next;
        }
        assert_eq!(
            walked, truth,
            "user {user}: every post that existed at the first page, once, in order"
        );
        // A fresh walk has the new posts too, once the announcements have arrived
        // (milliseconds; the remembered newest-post times expire after 1 s in any case).
        let now = h.home_truth(user).await;
        let start = std::time::Instant::now();
        loop {
            let fresh = flat(&h.home_walk(user, 7).await);
            if fresh == now {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_millis(1500),
                "user {user}: a fresh walk lacks new posts: {fresh:?} against {now:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn empty_unknown_and_bad_requests() {
    let mut h = Harness::start(800).await;
    let loner = h.user(true).await;
    assert_eq!(
        h.home_page(loner, 0, "").await.unwrap(),
        (vec![], String::new())
    );
    let s = h.home_page(987_654_321, 10, "").await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert_violation(&h.home_page(0, 10, "").await.unwrap_err(), "user_id");
    assert_violation(&h.home_page(loner, -1, "").await.unwrap_err(), "page_size");

    let fan = h.user(true).await;
    let star = h.user(true).await;
    h.follow(fan, star, 1, true).await;
    h.posts(star, 5, 1, true).await;
    let (_, token) = h.home_page(fan, 2, "").await.unwrap();
    // A home-feed token is bound to its user and its RPC.
    assert_violation(
        &h.home_page(loner, 2, &token).await.unwrap_err(),
        "page_token",
    );
    assert_violation(&h.page(fan, 2, &token).await.unwrap_err(), "page_token");
    assert_violation(
        &h.home_page(fan, 2, "garbage!").await.unwrap_err(),
        "page_token",
    );
}

#[tokio::test]
async fn an_author_whose_older_posts_were_trimmed_is_continued_from_postgres() {
    let mut h = Harness::start(4).await;
    let reader = h.user(true).await;
    let a = h.user(true).await;
    let b = h.user(true).await;
    h.follow(reader, a, 1, true).await;
    h.follow(reader, b, 2, true).await;
    h.posts(a, 10, 1, true).await;
    h.posts(b, 2, 1, true).await;
    let truth = h.home_truth(reader).await;
    // b's two posts are the newest; a's last six live only in PostgreSQL.
    assert_eq!(flat(&h.home_walk(reader, 2).await), truth);
}

#[tokio::test]
async fn authors_tied_at_the_cut_off_millisecond_are_still_read() {
    let mut h = Harness::start(800).await;
    let reader = h.user(true).await;
    let mut authors = Vec::new();
    for i in 0..6 {
        let a = h.user(true).await;
        h.follow(reader, a, i + 1, true).await;
        authors.push(a);
    }
    // Every author's newest post in the same millisecond: whichever authors the first wave
    // reads, the others tie the cut-off and must be read too.
    for round in 0..3 {
        h.next_ms += 1;
        for (i, a) in authors.iter().enumerate() {
            h.post_at(*a, h.next_ms, (round * 10 + i) as i64, true)
                .await;
        }
    }
    let truth = h.home_truth(reader).await;
    for size in [1, 2, 4] {
        assert_eq!(
            flat(&h.home_walk(reader, size).await),
            truth,
            "page size {size}"
        );
    }
}

#[tokio::test]
async fn an_author_skipped_by_its_remembered_newest_post_time_shows_once_it_posts() {
    let mut h = Harness::start(800).await;
    let reader = h.user(true).await;
    let mut authors = Vec::new();
    for i in 0..30 {
        let a = h.user(true).await;
        h.follow(reader, a, i + 1, true).await;
        authors.push(a);
    }
    // The first author posted long ago, everyone else since: a page of 5 skips it, and the
    // aggregator remembers its newest-post time.
    h.posts(authors[0], 1, 1, true).await;
    for a in &authors[1..] {
        h.posts(*a, 2, 1, true).await;
    }
    let (first, _) = h.home_page(reader, 5, "").await.unwrap();
    assert_eq!(first, h.home_truth(reader).await[..5].to_vec());

    // It posts again, and ingest announces it: a first page has it on top well before the
    // remembered time would expire (1 s).
    h.next_ms += 1;
    let announced = h.post_at(authors[0], h.next_ms, 0, true).await;
    h.announce_post(authors[0], announced, h.next_ms).await;
    let start = std::time::Instant::now();
    loop {
        let (page, _) = h.home_page(reader, 5, "").await.unwrap();
        if page.first() == Some(&announced) {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_millis(500),
            "the announced post is not on top after {:?}: {page:?}",
            start.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // Even with its announcement lost, a post shows once the remembered time expires (1 s).
    h.next_ms += 1;
    let silent = h.post_at(authors[0], h.next_ms, 1, true).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (page, _) = h.home_page(reader, 5, "").await.unwrap();
    assert_eq!(page.first(), Some(&silent));
    assert_eq!(page, h.home_truth(reader).await[..5].to_vec());
}

#[tokio::test]
async fn a_timeline_evicted_after_its_author_was_remembered_is_read_from_postgres() {
    use fred::interfaces::KeysInterface;
    let mut h = Harness::start(800).await;
    let reader = h.user(true).await;
    let mut authors = Vec::new();
    for i in 0..10 {
        let a = h.user(true).await;
        h.follow(reader, a, i + 1, true).await;
        h.posts(a, 3, 1, true).await;
        authors.push(a);
    }
    let truth = h.home_truth(reader).await;
    assert_eq!(
        h.home_page(reader, 20, "").await.unwrap().0,
        truth[..20].to_vec()
    );

    // Redis evicts the newest author's timeline (its meta stays): nothing is announced.
    let newest_author = *authors.last().unwrap();
    let layout = shardfeed_cache::CacheLayout::new(h.settings.redis.namespace.clone());
    let _: i64 = h
        .writer
        .client()
        .del(layout.timeline(newest_author))
        .await
        .unwrap();
    assert_eq!(
        h.home_page(reader, 20, "").await.unwrap().0,
        truth[..20].to_vec()
    );
}

/// Bodies are kept in memory once read, but a post deleted since leaves every feed at once:
/// whether a post is there is what its author's timeline says, read every time.
#[tokio::test]
async fn a_deleted_post_leaves_feeds_at_once_though_its_body_is_remembered() {
    let mut h = Harness::start(800).await;
    let reader = h.user(true).await;
    let mut authors = Vec::new();
    for i in 0..4 {
        let a = h.user(true).await;
        h.follow(reader, a, i + 1, true).await;
        h.posts(a, 3, 1, true).await;
        authors.push(a);
    }
    let truth = h.home_truth(reader).await;
    // Twice: the second page's bodies all come from memory.
    for _ in 0..2 {
        assert_eq!(h.home_page(reader, 10, "").await.unwrap().0, truth[..10]);
    }
    let newest = truth[0];
    let author = h
        .sql
        .query_one("SELECT author_id FROM posts WHERE post_id = $1", &[&newest])
        .await
        .unwrap()
        .get(0);
    h.delete_post(author, newest, true).await;
    let after = h.home_truth(reader).await;
    assert!(!after.contains(&newest));
    assert_eq!(h.home_page(reader, 10, "").await.unwrap().0, after[..10]);
}

/// A reader's followee set is kept in memory once read: an announced follow change drops it at
/// once, and even an unannounced one shows once the remembered set expires.
#[tokio::test]
async fn a_remembered_followee_set_follows_announced_and_unannounced_changes() {
    let mut h = Harness::builder()
        .setting("SHARDFEED_AGGREGATOR__FOLLOWEE_CACHE_TTL_MS", "1000")
        .start()
        .await;
    let reader = h.user(true).await;
    let (old, new) = (h.user(true).await, h.user(true).await);
    h.follow(reader, old, 1, true).await;
    h.posts(old, 2, 1, true).await;
    h.posts(new, 2, 1, true).await;
    assert_eq!(h.home_feed_ids(reader).await, h.home_truth(reader).await);

    // Followed, and announced as ingest does: the new author's posts show well within 500 ms.
    h.follow(reader, new, 2, true).await;
    let truth = h.home_truth(reader).await;
    assert_eq!(truth.len(), 4);
    let start = std::time::Instant::now();
    while h.home_feed_ids(reader).await != truth {
        assert!(
            start.elapsed() < std::time::Duration::from_millis(500),
            "the announced follow did not show"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // Unfollowed without an announcement: still there while remembered, gone once the
    // remembered set expires (1 s here).
    h.sql
        .execute(
            "DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2",
            &[&reader, &old],
        )
        .await
        .unwrap();
    h.writer
        .apply(&CacheChange::Unfollowed {
            follower_id: reader,
            followee_id: old,
            version: 3,
        })
        .await
        .unwrap();
    assert_eq!(h.home_feed_ids(reader).await, truth, "remembered");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let after = h.home_truth(reader).await;
    assert_eq!(after.len(), 2);
    assert_eq!(h.home_feed_ids(reader).await, after);
}
