//! Which authors are hot right now: a decaying top-k of key accesses in bounded memory.
//!
//! The aggregator records every author a feed read touches; a few authors draw most of the
//! traffic, and this finds them without keeping a counter per author ever seen.
//!
//! # Algorithm
//!
//! **Space-Saving** (Metwally, Agrawal and El Abbadi, 2005) keeps at most `capacity` counters.
//! An access to a tracked key adds to its counter; an access to an untracked key, when every
//! counter is taken, replaces the key with the smallest counter, and the newcomer inherits that
//! smallest count (plus its own access) and records it as its error: it may have been accessed
//! at most that often while untracked.
//!
//! **Forward decay** (Cormode, Shkapenyuk, Srivastava and Xu, 2009) makes old accesses count
//! less: an access at time `t` weighs `2^-(now - t) / half_life` at time `now`. Rather than
//! decaying every counter as time passes, each access adds `e^(λ (t - t0))` (with
//! `λ = ln 2 / half_life` and `t0` a landmark) and readers divide by `e^(λ (now - t0))`. All
//! counters are divided by the same factor, so decay never changes their order and
//! Space-Saving's replace-the-minimum stays valid. When the weight of a new access would exceed
//! 1e100, every counter is divided by it once and the landmark moves to the present (about
//! every 330 half-lives, O(capacity log capacity)), so nothing overflows however long the
//! process runs.
//!
//! Counters sit in a map by key and in an ordered set by (count, key), so `record` is
//! O(log capacity) and `top(limit)` is O(limit).
//!
//! # Guarantees
//!
//! Every statement is about decayed counts at the time of the query; `W` is the decayed weight
//! of all accesses recorded so far (accesses to untracked keys included):
//!
//! - at most `capacity` keys are tracked, whatever the number of distinct keys;
//! - a key whose decayed count exceeds `W / capacity` (a decayed share above `1 / capacity`)
//!   is tracked, so it is in `top(capacity)`;
//! - a tracked key's reported count is never below its true decayed count and exceeds it by at
//!   most the reported error: `rate_per_s - error_per_s <= true rate <= rate_per_s`.
//!
//! Counts are reported as rates: `decayed count × λ`. A key accessed steadily `r` times per
//! second has a decayed count tending to `r / λ`, so it reports about `r` once a few
//! half-lives have passed (`1 - 2^-n` of it after `n` half-lives).

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

/// Stored weights are renormalised before a new access would weigh more than this.
const MAX_WEIGHT: f64 = 1e100;

/// One tracked key: its estimated access rate and the estimate's error bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopEntry {
    pub key: i64,
    /// Decayed accesses per second; never below the true rate.
    pub rate_per_s: f64,
    /// How much `rate_per_s` may overestimate the true rate (what the key inherited when it
    /// replaced another one).
    pub error_per_s: f64,
}

/// A key's counter, in forward-decay units (relative to the landmark).
#[derive(Debug, Clone, Copy)]
struct Counter {
    count: f64,
    error: f64,
}

/// Orders counters by count, then key. Counts are finite and non-negative, and for those the
/// bit patterns of `f64` order like the values.
type Rank = (u64, i64);

fn rank(key: i64, count: f64) -> Rank {
    (count.to_bits(), key)
}

/// A decaying top-k of key accesses: Space-Saving over forward-decayed counts (see the module
/// documentation for the algorithm and its guarantees).
///
/// Not synchronised: callers share it behind a lock, and [`record_all`](Self::record_all)
/// records a whole feed's followees under one acquisition.
#[derive(Debug, Clone)]
pub struct DecayingTopK {
    capacity: usize,
    half_life: Duration,
    /// `ln 2 / half_life`, per second.
    lambda: f64,
    /// Set by the first access and moved by renormalisation.
    landmark: Option<Instant>,
    counters: HashMap<i64, Counter>,
    by_count: BTreeSet<Rank>,
}

impl DecayingTopK {
    /// Tracks at most `capacity` keys; counts decay with `half_life` (rates are estimated over
    /// roughly that window). A capacity of zero tracks nothing.
    ///
    /// # Panics
    ///
    /// If `half_life` is zero.
    pub fn new(capacity: usize, half_life: Duration) -> Self {
        assert!(!half_life.is_zero(), "the half-life must be positive");
        Self {
            capacity,
            half_life,
            lambda: std::f64::consts::LN_2 / half_life.as_secs_f64(),
            landmark: None,
            counters: HashMap::with_capacity(capacity),
            by_count: BTreeSet::new(),
        }
    }

    /// One access of `key` at `now` (weight 1).
    ///
    /// A `now` earlier than the landmark (the first access, or the last renormalisation) counts
    /// as at the landmark.
    pub fn record(&mut self, key: i64, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let weight = self.weight_at(now);
        self.add(key, weight);
    }

    /// Several accesses at `now`, one per key (a key listed twice counts twice).
    pub fn record_all(&mut self, keys: impl IntoIterator<Item = i64>, now: Instant) {
        self.record_all_times(keys, 1.0, now);
    }

    /// Like [`DecayingTopK::record_all`], each key counting `times` accesses: a caller that
    /// records one batch in `n` records it `n` times over, and rates stay unbiased.
    pub fn record_all_times(
        &mut self,
        keys: impl IntoIterator<Item = i64>,
        times: f64,
        now: Instant,
    ) {
        if self.capacity == 0 {
            return;
        }
        let weight = self.weight_at(now) * times;
        for key in keys {
            self.add(key, weight);
        }
    }

    /// The `limit` keys with the highest decayed counts, highest first (ties: higher key
    /// first), as rates per second: `decayed count × ln 2 / half_life`.
    pub fn top(&self, limit: usize, now: Instant) -> Vec<TopEntry> {
        let Some(landmark) = self.landmark else {
            return Vec::new();
        };
        // Forward-decay units to accesses per second at `now`. Past ~1000 half-lives without an
        // access this underflows to zero, which is the right answer.
        let to_rate = self.lambda * (-self.exponent(landmark, now)).exp();
        self.by_count
            .iter()
            .rev()
            .take(limit)
            .map(|&(_, key)| {
                let counter = self.counters[&key];
                TopEntry {
                    key,
                    rate_per_s: counter.count * to_rate,
                    error_per_s: counter.error * to_rate,
                }
            })
            .collect()
    }

    /// How many keys are tracked (never more than [`capacity`](Self::capacity)).
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// The most keys tracked at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The half-life counts decay with.
    pub fn half_life(&self) -> Duration {
        self.half_life
    }

    /// `λ (now - landmark)`, zero when `now` is earlier.
    fn exponent(&self, landmark: Instant, now: Instant) -> f64 {
        self.lambda * now.saturating_duration_since(landmark).as_secs_f64()
    }

    /// The forward-decay weight of an access at `now`, renormalising first if it would be too
    /// large.
    fn weight_at(&mut self, now: Instant) -> f64 {
        let landmark = *self.landmark.get_or_insert(now);
        let exponent = self.exponent(landmark, now);
        if exponent <= MAX_WEIGHT.ln() {
            return exponent.exp();
        }
        self.renormalise(now, exponent);
        1.0
    }

    /// Moves the landmark to `now`: divides every counter by `e^exponent`, the weight of an
    /// access at `now` under the old landmark. Counters that had decayed to nothing become
    /// zero; none changes order, but the ranks (bit patterns) must be rebuilt.
    fn renormalise(&mut self, now: Instant, exponent: f64) {
        let factor = (-exponent).exp();
        for counter in self.counters.values_mut() {
            counter.count *= factor;
            counter.error *= factor;
        }
        self.by_count = self
            .counters
            .iter()
            .map(|(&key, counter)| rank(key, counter.count))
            .collect();
        self.landmark = Some(now);
    }

    /// Space-Saving's update with an access of `weight` (capacity is not zero).
    fn add(&mut self, key: i64, weight: f64) {
        if let Some(counter) = self.counters.get_mut(&key) {
            self.by_count.remove(&rank(key, counter.count));
            counter.count += weight;
            self.by_count.insert(rank(key, counter.count));
            return;
        }
        let counter = if self.counters.len() < self.capacity {
            Counter {
                count: weight,
                error: 0.0,
            }
        } else {
            let (_, evicted) = self
                .by_count
                .pop_first()
                .expect("a full top-k has a smallest counter");
            let floor = self
                .counters
                .remove(&evicted)
                .expect("every ranked key has a counter")
                .count;
            Counter {
                count: floor + weight,
                error: floor,
            }
        };
        self.by_count.insert(rank(key, counter.count));
        self.counters.insert(key, counter);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// xorshift64*: deterministic and good enough to scatter test keys.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    fn rate_of(top: &[TopEntry], key: i64) -> f64 {
        top.iter()
            .find(|entry| entry.key == key)
            .map_or(0.0, |entry| entry.rate_per_s)
    }

    fn assert_close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance * expected.abs(),
            "{actual} is not within {tolerance} of {expected}"
        );
    }

    #[test]
    fn finds_planted_hot_keys_among_many_cold_ones() {
        const ACCESSES: u64 = 200_000;
        let hot: [i64; 5] = [7, 1_001, 20_202, 33_333, 49_999];
        let half_life = 30 * SECOND;
        let lambda = std::f64::consts::LN_2 / half_life.as_secs_f64();
        let mut topk = DecayingTopK::new(64, half_life);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let start = Instant::now();
        // Exact decayed counts of the hot keys, in forward-decay units from `start`.
        let mut exact = [0.0_f64; 5];
        let mut now = start;
        for i in 0..ACCESSES {
            // One access a millisecond: 200 s, several half-lives.
            now = start + Duration::from_millis(i);
            // One access in five goes to a hot key (4 % each), the rest to 50,000 cold keys
            // (0.0016 % each).
            let key = if rng.below(5) == 0 {
                let which = rng.below(5) as usize;
                exact[which] += (lambda * (now - start).as_secs_f64()).exp();
                hot[which]
            } else {
                rng.below(50_000) as i64 + 100_000
            };
            topk.record(key, now);
            assert!(topk.len() <= topk.capacity());
        }

        let top = topk.top(5, now);
        let found: HashSet<i64> = top.iter().map(|entry| entry.key).collect();
        assert_eq!(found, HashSet::from(hot), "{top:?}");
        let to_rate = lambda * (-lambda * (now - start).as_secs_f64()).exp();
        for (key, exact) in hot.iter().zip(exact) {
            let entry = top.iter().find(|entry| entry.key == *key).unwrap();
            let true_rate = exact * to_rate;
            // The Space-Saving bounds, up to float rounding.
            assert!(
                entry.rate_per_s >= true_rate * (1.0 - 1e-9),
                "{entry:?} {true_rate}"
            );
            assert!(
                entry.rate_per_s - entry.error_per_s <= true_rate * (1.0 + 1e-9),
                "{entry:?} {true_rate}"
            );
        }
        // Every hot key beats the best-ranked cold one by a wide margin.
        let sixth = topk.top(6, now)[5];
        assert!(
            top[4].rate_per_s > 2.0 * sixth.rate_per_s,
            "{top:?} {sixth:?}"
        );
    }

    #[test]
    fn steady_accesses_report_their_rate() {
        let mut topk = DecayingTopK::new(8, SECOND);
        let start = Instant::now();
        let mut now = start;
        // 100 accesses per simulated second for 10 half-lives.
        for i in 0..1_000 {
            now = start + Duration::from_millis(10 * i);
            topk.record(42, now);
        }
        let top = topk.top(1, now);
        assert_eq!(top[0].key, 42);
        assert_close(top[0].rate_per_s, 100.0, 0.1);
        assert_eq!(top[0].error_per_s, 0.0);
    }

    #[test]
    fn a_key_that_stops_decays_and_is_overtaken() {
        let mut topk = DecayingTopK::new(8, SECOND);
        let start = Instant::now();
        let (hot, warm) = (1, 2);
        // `hot` at 100/s and `warm` at 10/s for 10 half-lives.
        for i in 0..1_000 {
            let now = start + Duration::from_millis(10 * i);
            topk.record(hot, now);
            if i % 10 == 0 {
                topk.record(warm, now);
            }
        }
        let before = start + 10 * SECOND;
        let hot_before = rate_of(&topk.top(2, before), hot);
        assert_eq!(topk.top(1, before)[0].key, hot);

        // `hot` stops; `warm` goes on for 5 more half-lives.
        for i in 1_000..1_500 {
            if i % 10 == 0 {
                topk.record(warm, start + Duration::from_millis(10 * i));
            }
        }
        let after = start + 15 * SECOND;
        let top = topk.top(2, after);
        assert!(
            rate_of(&top, hot) < hot_before / 20.0,
            "{hot_before} then {top:?}"
        );
        assert_eq!(top[0].key, warm, "{top:?}");
        assert_close(top[0].rate_per_s, 10.0, 0.1);
    }

    #[test]
    fn memory_is_bounded_by_capacity() {
        let mut topk = DecayingTopK::new(16, SECOND);
        assert!(topk.is_empty());
        assert_eq!(topk.capacity(), 16);
        let start = Instant::now();
        for key in 0..10_000 {
            topk.record(key, start + Duration::from_millis(key as u64));
            assert!(topk.len() <= 16);
        }
        assert_eq!(topk.len(), 16);
        assert_eq!(topk.top(100, start + 10 * SECOND).len(), 16);

        let mut disabled = DecayingTopK::new(0, SECOND);
        disabled.record_all(0..100, start);
        assert!(disabled.is_empty());
        assert!(disabled.top(10, start).is_empty());
    }

    #[test]
    fn a_newcomer_inherits_the_minimum_as_its_error() {
        let mut topk = DecayingTopK::new(2, SECOND);
        let now = Instant::now();
        topk.record_all([1, 2, 2, 2], now);
        topk.record(3, now);
        let lambda = std::f64::consts::LN_2;
        let top = topk.top(10, now);
        assert_eq!(top.len(), 2);
        // Key 1 (count 1) was replaced: key 3 reports 1 + 1 with an error of 1.
        assert_eq!(top[0].key, 2);
        assert_close(top[0].rate_per_s, 3.0 * lambda, 1e-12);
        assert_eq!(top[0].error_per_s, 0.0);
        assert_eq!(top[1].key, 3);
        assert_close(top[1].rate_per_s, 2.0 * lambda, 1e-12);
        assert_close(top[1].error_per_s, lambda, 1e-12);
    }

    #[test]
    fn top_is_sorted_and_limited() {
        let mut topk = DecayingTopK::new(10, SECOND);
        let now = Instant::now();
        for key in 1..=5_i64 {
            topk.record_all(std::iter::repeat_n(key, key as usize), now);
        }
        let keys: Vec<i64> = topk.top(3, now).iter().map(|entry| entry.key).collect();
        assert_eq!(keys, [5, 4, 3]);
        assert!(topk.top(0, now).is_empty());
    }

    #[test]
    fn renormalisation_keeps_values_finite_and_unchanged() {
        let mut topk = DecayingTopK::new(4, SECOND);
        let start = Instant::now();
        // Two accesses a second: compare the rate after 20 half-lives with the rate after
        // 10,000 (about 30 renormalisations later), at the same phase.
        let mut early = None;
        for i in 0..20_000_u64 {
            let now = start + Duration::from_millis(500 * i);
            topk.record(9, now);
            topk.record(i as i64 % 3, now);
            if i == 40 {
                early = Some(topk.top(1, now)[0]);
            }
        }
        let late = topk.top(4, start + Duration::from_millis(500 * 19_999));
        let early = early.unwrap();
        assert_eq!(late[0].key, 9);
        for entry in &late {
            assert!(entry.rate_per_s.is_finite() && entry.error_per_s.is_finite());
        }
        assert_close(late[0].rate_per_s, early.rate_per_s, 1e-3);

        // A single jump of 10,000 half-lives: the old key has decayed to nothing.
        let later = start + 20_000 * SECOND;
        topk.record(77, later);
        let top = topk.top(4, later);
        assert_eq!(top[0].key, 77);
        assert_close(top[0].rate_per_s, std::f64::consts::LN_2, 1e-12);
        for entry in &top[1..] {
            assert_eq!(entry.rate_per_s, 0.0);
        }
        // Queries far past the last access underflow to zero, not to NaN.
        let top = topk.top(4, later + 100_000 * SECOND);
        assert!(top.iter().all(|entry| entry.rate_per_s == 0.0));
    }
}
