//! The cache against the truth: a seeded random sequence of writes (applied, confirmed on a
//! replica and announced as ingest does) interleaved with cache faults — keys of any author or user deleted or expired in
//! any subset, every key of one master's authors wiped, old changes replayed out of order, the
//! aggregator restarted with nothing in memory — and after every step every page of every
//! timeline and home feed must equal PostgreSQL.
//!
//! Each run prints its seed; `SHARDFEED_MODEL_SEED` picks one (default 1, so the suite's run is
//! reproducible) and `SHARDFEED_MODEL_STEPS` runs longer (default 150).

use fred::{
    interfaces::{ClusterInterface, KeysInterface},
    util::redis_keyslot,
};
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use shardfeed_core::cache::CacheChange;

use crate::timeline::{flat, Harness};

struct World {
    users: Vec<i64>,
    /// Every change applied so far, for replays.
    log: Vec<CacheChange>,
    seq: i64,
}

impl Harness {
    /// Applies `change`, confirms it on a replica and announces it, as ingest's fast path does.
    async fn deliver(&self, change: CacheChange) {
        for result in self
            .writer
            .apply_durably(std::slice::from_ref(&change))
            .await
        {
            result.unwrap();
        }
        self.writer.announce([&change]).await.unwrap();
    }

    /// Every key `user` has, as an author and as a follower.
    fn keys_of(&self, user: i64) -> Vec<String> {
        let layout = self.writer.layout();
        let mut keys = layout.author(user).script_keys();
        keys.push(layout.following(user));
        keys
    }
}

async fn step(h: &mut Harness, w: &mut World, rng: &mut StdRng) -> String {
    let pick = |rng: &mut StdRng, w: &World| w.users[rng.gen_range(0..w.users.len())];
    match rng.gen_range(0..100) {
        // Writes: posts most often, then follows, unfollows, deletes.
        0..=34 => {
            let author = pick(rng, w);
            if rng.gen_bool(0.7) {
                h.next_ms += 1;
            }
            w.seq += 1;
            let id = h.post_at(author, h.next_ms, w.seq, false).await;
            let change = CacheChange::PostCreated {
                author_id: author,
                post_id: id,
                time_ms: h.next_ms,
                body: format!("post {} of {author}", w.seq),
            };
            h.deliver(change.clone()).await;
            w.log.push(change);
            format!("post {id} by {author}")
        }
        35..=44 => {
            let author = pick(rng, w);
            let live = h.truth(author).await;
            let Some(&post_id) = live.choose(rng) else {
                return "no post to delete".into();
            };
            h.sql
                .execute(
                    "UPDATE posts SET delete_time = now(), body = '' WHERE post_id = $1",
                    &[&post_id],
                )
                .await
                .unwrap();
            let change = CacheChange::PostDeleted {
                author_id: author,
                post_id,
            };
            h.deliver(change.clone()).await;
            w.log.push(change);
            format!("delete {post_id} of {author}")
        }
        45..=54 => {
            let (a, b) = (pick(rng, w), pick(rng, w));
            if a == b {
                return "no self-follow".into();
            }
            // As ingest does: the version drawn under the follower's row lock, in the statement
            // that changes the edge (rebuilds read under the same lock).
            let follows = rng.gen_bool(0.6);
            let sql = if follows {
                "WITH l AS (SELECT 1 FROM users WHERE user_id = $1 FOR NO KEY UPDATE),
                      v AS (SELECT nextval('graph_version_seq') AS version FROM l),
                      e AS (INSERT INTO follows (follower_id, followee_id)
                            SELECT $1, $2 FROM v ON CONFLICT DO NOTHING)
                 SELECT version FROM v"
            } else {
                "WITH l AS (SELECT 1 FROM users WHERE user_id = $1 FOR NO KEY UPDATE),
                      v AS (SELECT nextval('graph_version_seq') AS version FROM l),
                      e AS (DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2
                            AND EXISTS (SELECT 1 FROM v))
                 SELECT version FROM v"
            };
            let version: i64 = h.sql.query_one(sql, &[&a, &b]).await.unwrap().get(0);
            let change = if follows {
                CacheChange::Followed {
                    follower_id: a,
                    followee_id: b,
                    version,
                }
            } else {
                CacheChange::Unfollowed {
                    follower_id: a,
                    followee_id: b,
                    version,
                }
            };
            h.deliver(change.clone()).await;
            w.log.push(change);
            format!("{} {a} → {b}", if follows { "follow" } else { "unfollow" })
        }
        // Faults.
        55..=69 => {
            let user = pick(rng, w);
            let keys: Vec<String> = h
                .keys_of(user)
                .into_iter()
                .filter(|_| rng.gen_bool(0.5))
                .collect();
            if keys.is_empty() {
                return "nothing lost".into();
            }
            let expire = rng.gen_bool(0.5);
            for key in &keys {
                if expire {
                    let _: i64 = h.writer.client().pexpire(key, 1, None).await.unwrap();
                } else {
                    let _: i64 = h.writer.client().del(key).await.unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
            format!("{} {keys:?}", if expire { "expire" } else { "delete" })
        }
        70..=74 => {
            // One master loses everything this test has there (as a FLUSHALL would; the shared
            // cluster serves other tests, so only this namespace's keys go).
            let routing = h.writer.client().cached_cluster_state().unwrap();
            let masters = routing.unique_primary_nodes();
            let victim = masters.choose(rng).unwrap().clone();
            let mut lost = 0;
            for user in &w.users {
                for key in h.keys_of(*user) {
                    if routing.get_server(redis_keyslot(key.as_bytes())) == Some(&victim) {
                        let _: i64 = h.writer.client().del(&key).await.unwrap();
                        lost += 1;
                    }
                }
            }
            format!("wipe {victim:?} ({lost} keys)")
        }
        75..=89 => {
            // Old changes again, in a random order (the relay, a second replica, a late batch).
            let mut replays: Vec<CacheChange> = (0..rng.gen_range(1..6))
                .filter_map(|_| w.log.choose(rng).cloned())
                .collect();
            replays.shuffle(rng);
            for change in &replays {
                h.writer.apply(change).await.unwrap();
            }
            format!("replay {} changes", replays.len())
        }
        90..=91 => {
            h.restart_aggregator().await;
            "restart the aggregator".into()
        }
        _ => "read only".into(),
    }
}

/// Every page of every timeline and home feed against PostgreSQL: at once, or within `bound`
/// (what the in-process memories may lag an announced change by).
async fn check(h: &Harness, w: &World, rng: &mut StdRng, what: &str, bound: Option<Duration>) {
    let deadline = Instant::now() + bound.unwrap_or_default();
    for user in &w.users {
        let size = rng.gen_range(1..6);
        let truth = (h.truth(*user).await, h.home_truth(*user).await);
        loop {
            let read = (
                flat(&h.walk(*user, size).await),
                h.home_walk(*user, size).await.concat(),
            );
            if read == truth || Instant::now() >= deadline {
                assert_eq!(
                    read.0, truth.0,
                    "timeline of {user} (page size {size}) after {what}"
                );
                assert_eq!(
                    read.1, truth.1,
                    "home feed of {user} (page size {size}) after {what}"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The seed of a run without `SHARDFEED_MODEL_SEED`: the suite's run is reproducible.
const DEFAULT_SEED: u64 = 1;

async fn run(extra: &[(&str, &str)], bound: Option<Duration>) {
    let seed: u64 = std::env::var("SHARDFEED_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let steps: usize = std::env::var("SHARDFEED_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    eprintln!("model test: SHARDFEED_MODEL_SEED={seed} SHARDFEED_MODEL_STEPS={steps}");
    let mut rng = StdRng::seed_from_u64(seed);
    // A short window, so trimming, floors and reads past the window happen all the time.
    let nodes = shardfeed_testkit::shared().redis.seed_nodes();
    let mut h = Harness::start_configured(4, None, &nodes, extra).await;
    let mut w = World {
        users: Vec::new(),
        log: Vec::new(),
        seq: 0,
    };
    for _ in 0..6 {
        w.users.push(h.user(true).await);
    }
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..steps {
        let what = step(&mut h, &mut w, &mut rng).await;
        let kind = what
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        *tally.entry(kind).or_default() += 1;
        let what = format!("step {i} ({what}), seed {seed}");
        check(&h, &w, &mut rng, &what, bound).await;
    }
    eprintln!("model test: seed {seed}, steps by kind {tally:?}");
}

/// Redis against PostgreSQL, nothing kept in the aggregator's memory and no hot path: every
/// read right after every step must be exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_equals_postgres_whatever_the_cache_loses_or_replays() {
    run(
        &[
            ("SHARDFEED_AGGREGATOR__META_CACHE_ENABLED", "false"),
            ("SHARDFEED_AGGREGATOR__FOLLOWEE_CACHE_BYTES", "0"),
            ("SHARDFEED_HOTSPOT__NEAR_CACHE_ENABLED", "false"),
            ("SHARDFEED_HOTSPOT__COALESCING_ENABLED", "false"),
            ("SHARDFEED_HOTSPOT__REPLICA_READS_ENABLED", "false"),
            ("SHARDFEED_HOTSPOT__KEY_REPLICAS_ENABLED", "false"),
        ],
        None,
    )
    .await;
}

/// The same with every memory and mitigation on (the model's readers soon make every user
/// hot): those are dropped by announcements, which arrive asynchronously, so a read may lag a
/// change by the announcement's delivery; within the near-cache bound it must be exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_memory_on_reads_equal_postgres_within_the_announcement_bound() {
    run(&[], Some(Duration::from_millis(1000))).await;
}
