//! The feed bench's data set, generated in memory so that every answer can be checked: the
//! follow graph, the posts (ids in the write path's own scheme, `shardfeed_proto::ids`), each
//! post's body, and the first page each reader must get.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
pub use shardfeed_proto::ids::post_id;

use super::PAGE_SIZE;
use crate::bench::body::ascii_body;
use crate::measure::OpError;
use crate::popularity::Popularity;

/// Seeded posts are spread over this window before now...
pub const SPREAD_MS: i64 = 30 * 24 * 3600 * 1000;
/// ...and are at least this old, so that none is in the future of a skewed clock.
pub const MIN_AGE_MS: i64 = 60 * 1000;
pub fn system_time(time_ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(time_ms).unwrap_or(0))
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// splitmix64: a tiny deterministic generator, so a post's body follows from its id alone.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The body of post `post_id`: `len` bytes of ASCII words, the same every time it is asked
/// for, so 1M bodies need not be held in memory between the PostgreSQL and the cache seeding.
pub fn body_of(post_id: i64, len: usize) -> String {
    let mut state = post_id as u64;
    ascii_body(len, |n| (splitmix64(&mut state) % n as u64) as usize)
}

/// `count` distinct followees of `user`, never `user` itself (`count` < number of users).
fn pick_followees(
    rng: &mut impl Rng,
    popularity: &Popularity,
    user: usize,
    count: usize,
) -> Vec<u32> {
    let mut chosen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    let mut draws = 0usize;
    while out.len() < count {
        // A steep Zipf head runs out of distinct users: finish uniformly.
        let candidate = if draws < count * 50 {
            popularity.sample(rng)
        } else {
            rng.gen_range(0..popularity.ranks())
        };
        draws += 1;
        if candidate != user && chosen.insert(candidate) {
            out.push(candidate as u32);
        }
    }
    out
}

/// Keeps the `k` items with the highest ids, newest (highest id) first.
pub fn keep_newest<T>(items: &mut Vec<T>, k: usize, id: impl Fn(&T) -> i64) {
    if k == 0 {
        items.clear();
        return;
    }
    if items.len() > k {
        items.select_nth_unstable_by(k - 1, |a, b| id(b).cmp(&id(a)));
        items.truncate(k);
    }
    items.sort_unstable_by_key(|item| std::cmp::Reverse(id(item)));
}

/// The bench users, whom they follow, what they posted, and the page each one must get.
pub struct Dataset {
    /// User index → user id.
    pub user_ids: Vec<i64>,
    /// User index → followee indexes.
    pub follows: Vec<Vec<u32>>,
    /// Author index → post ids, newest first.
    pub posts: Vec<Vec<i64>>,
    /// User index → the post ids of the first page of the home feed, newest first.
    pub expected: Vec<Vec<i64>>,
    pub body_bytes: usize,
}

impl Dataset {
    pub fn users(&self) -> usize {
        self.user_ids.len()
    }

    /// The users that follow others (the first ones): those whose feeds are read.
    pub fn readers(&self) -> usize {
        self.follows
            .iter()
            .take_while(|f| !f.is_empty())
            .count()
            .max(1)
    }

    pub fn post_count(&self) -> usize {
        self.posts.iter().map(Vec::len).sum()
    }

    pub fn follow_count(&self) -> usize {
        self.follows.iter().map(Vec::len).sum()
    }
}

/// What each user follows and posts.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub followees: usize,
    /// Users that follow (the first ones); the others only post.
    pub readers: usize,
    pub posts_per_author: usize,
    /// Zipf exponent of followee popularity (0: uniform).
    pub zipf: f64,
    pub body_bytes: usize,
}

/// The follow graph and the posts (ids from `seqs`, one per post, and random times in the last
/// 30 days before `now_ms`), then each user's expected first page.
pub fn generate(
    rng: &mut impl Rng,
    user_ids: Vec<i64>,
    shape: Shape,
    seqs: &[i64],
    now_ms: i64,
) -> Dataset {
    let Shape {
        followees,
        readers,
        posts_per_author,
        zipf,
        body_bytes,
    } = shape;
    let users = user_ids.len();
    let popularity = Popularity::new(users, zipf).expect("a valid --zipf");
    let follows: Vec<Vec<u32>> = (0..users)
        .map(|u| {
            if u < readers {
                pick_followees(rng, &popularity, u, followees)
            } else {
                Vec::new()
            }
        })
        .collect();
    let posts: Vec<Vec<i64>> = (0..users)
        .map(|a| {
            let mut ids: Vec<i64> = (0..posts_per_author)
                .map(|i| {
                    let time_ms = now_ms - rng.gen_range(MIN_AGE_MS..SPREAD_MS);
                    post_id(time_ms, seqs[a * posts_per_author + i])
                })
                .collect();
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids
        })
        .collect();
    let expected = follows
        .iter()
        .map(|followed| {
            let mut page: Vec<i64> = followed
                .iter()
                .flat_map(|&f| posts[f as usize].iter().take(PAGE_SIZE).copied())
                .collect();
            keep_newest(&mut page, PAGE_SIZE, |id| *id);
            page
        })
        .collect();
    Dataset {
        user_ids,
        follows,
        posts,
        expected,
        body_bytes,
    }
}

/// An answer counts only if it is exactly the expected page.
pub fn check_page(user_id: i64, got: &[i64], expected: &[i64]) -> Result<(), OpError> {
    if got == expected {
        return Ok(());
    }
    let detail = match got.iter().zip(expected).position(|(g, e)| g != e) {
        Some(i) => format!("post #{i} is {} instead of {}", got[i], expected[i]),
        None => format!("{} posts instead of {}", got.len(), expected.len()),
    };
    Err(OpError::new(
        "WrongPage",
        format!("user {user_id}: {detail}"),
    ))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use shardfeed_proto::ids::post_time_ms;

    use super::*;

    #[test]
    fn system_times_are_ms_since_the_epoch() {
        let t = 1_795_000_000_123;
        assert_eq!(
            system_time(t),
            UNIX_EPOCH + Duration::from_millis(1_795_000_000_123)
        );
    }

    #[test]
    fn bodies_are_deterministic_valid_posts() {
        for len in [1, 2, 7, 8, 9, 100, 500] {
            let body = body_of(42, len);
            assert_eq!(body.len(), len);
            assert_eq!(body, body_of(42, len));
            assert!(!body.trim().is_empty());
            assert!(!body.ends_with(' '));
            assert!(body.chars().all(|c| c == ' ' || c.is_ascii_alphanumeric()));
        }
        assert_ne!(body_of(1, 100), body_of(2, 100));
    }

    fn small_dataset(zipf: f64) -> Dataset {
        let mut rng = StdRng::seed_from_u64(7);
        let users = 50;
        let ids: Vec<i64> = (0..users).map(|i| 1000 + i as i64 * 3).collect();
        let seqs: Vec<i64> = (0..users as i64 * 30).map(|s| 900 + s).collect();
        let shape = Shape {
            followees: 12,
            readers: users,
            posts_per_author: 30,
            zipf,
            body_bytes: 100,
        };
        generate(&mut rng, ids, shape, &seqs, 1_795_000_000_000)
    }

    #[test]
    fn only_the_first_readers_follow_and_are_read() {
        let mut rng = StdRng::seed_from_u64(9);
        let ids: Vec<i64> = (0..40).map(|i| 2000 + i).collect();
        let seqs: Vec<i64> = (0..40 * 3).collect();
        let shape = Shape {
            followees: 30,
            readers: 4,
            posts_per_author: 3,
            zipf: 0.0,
            body_bytes: 10,
        };
        let data = generate(&mut rng, ids, shape, &seqs, 1_795_000_000_000);
        assert!(data.follows[..4].iter().all(|f| f.len() == 30));
        assert!(data.follows[4..].iter().all(Vec::is_empty));
        assert_eq!(data.readers(), 4);
        assert_eq!(data.follow_count(), 120);
    }

    #[test]
    fn generated_data_has_the_asked_shape() {
        for zipf in [0.0, 1.2, 3.0] {
            let now = 1_795_000_000_000;
            let data = small_dataset(zipf);
            assert_eq!(data.follow_count(), 50 * 12);
            assert_eq!(data.post_count(), 50 * 30);
            for (user, followees) in data.follows.iter().enumerate() {
                let distinct: HashSet<_> = followees.iter().collect();
                assert_eq!(distinct.len(), 12, "distinct followees");
                assert!(!followees.contains(&(user as u32)), "no self-follow");
            }
            let mut all = HashSet::new();
            for posts in &data.posts {
                assert!(posts.windows(2).all(|w| w[0] > w[1]), "newest first");
                for &id in posts {
                    let age = now - post_time_ms(id);
                    assert!((MIN_AGE_MS..SPREAD_MS).contains(&age), "age {age}");
                    assert!(all.insert(id), "unique ids");
                }
            }
        }
    }

    #[test]
    fn a_head_too_steep_for_enough_distinct_followees_still_ends() {
        let mut rng = StdRng::seed_from_u64(3);
        let very = Popularity::new(30, 8.0).unwrap();
        let picked = pick_followees(&mut rng, &very, 0, 29);
        assert_eq!(picked.iter().collect::<HashSet<_>>().len(), 29);
        assert!(!picked.contains(&0));
    }

    #[test]
    fn expected_page_is_the_newest_of_all_followees() {
        let data = small_dataset(0.0);
        for (user, followees) in data.follows.iter().enumerate() {
            let mut all: Vec<i64> = followees
                .iter()
                .flat_map(|&f| data.posts[f as usize].iter().copied())
                .collect();
            all.sort_unstable_by(|a, b| b.cmp(a));
            all.truncate(PAGE_SIZE);
            assert_eq!(data.expected[user], all);
        }
    }

    #[test]
    fn keep_newest_merges_by_id() {
        let mut items = vec![(5, 1), (9, 2), (1, 3), (7, 1), (8, 3), (2, 2)];
        keep_newest(&mut items, 3, |(id, _)| *id);
        assert_eq!(items, vec![(9, 2), (8, 3), (7, 1)]);
        let mut few = vec![3, 1, 2];
        keep_newest(&mut few, 20, |id| *id);
        assert_eq!(few, vec![3, 2, 1]);
        keep_newest(&mut few, 0, |id| *id);
        assert!(few.is_empty());
    }

    #[test]
    fn pages_are_checked_exactly() {
        assert!(check_page(1, &[3, 2, 1], &[3, 2, 1]).is_ok());
        let err = check_page(1, &[3, 1], &[3, 2, 1]).unwrap_err();
        assert_eq!(err.kind, "WrongPage");
        assert!(
            err.message.contains("post #1 is 1 instead of 2"),
            "{}",
            err.message
        );
        let err = check_page(1, &[3, 2], &[3, 2, 1]).unwrap_err();
        assert!(
            err.message.contains("2 posts instead of 3"),
            "{}",
            err.message
        );
    }
}
