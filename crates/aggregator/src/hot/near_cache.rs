//! An in-process cache in front of the Redis Cluster, for the few hot authors whose node would
//! otherwise serve every feed: bounded in bytes, least-recently-used eviction, a time to live,
//! and invalidation that a concurrent load cannot undo.
//!
//! # Budget
//!
//! Each entry costs the size its caller gives to [`NearCache::insert`] plus
//! [`ENTRY_OVERHEAD_BYTES`] for the cache's own bookkeeping (the map and LRU slots, the `Arc`
//! header, the timestamps). The sum over the entries never exceeds the budget: an insert evicts
//! least-recently-used entries (a hit counts as a use) until the new one fits, and an entry
//! that cannot fit even in an empty cache is refused. A budget of zero disables the cache.
//!
//! # Staleness
//!
//! An entry lives for the time to live from its insertion; after that it is a miss. This bounds
//! how stale an answer can be even if an invalidation is lost (a write path that died between
//! its commit and its invalidation), to the time to live plus the load that filled the entry.
//!
//! # Invalidation against concurrent loads
//!
//! A reader that misses loads the value from the store and inserts it, while a writer may
//! change the store and invalidate the key in between; inserting the value it read before the
//! write would undo the invalidation until the time to live runs out. So a reader takes a
//! [`Ticket`] *before* it loads, and the insert is refused if the key, or everything, was
//! invalidated after the ticket was taken:
//!
//! - a monotonic sequence numbers invalidations; a ticket is the sequence when it is taken;
//! - [`invalidate`](NearCache::invalidate) bumps the sequence and remembers it for the key,
//!   [`invalidate_all`](NearCache::invalidate_all) bumps it and makes it a floor for every
//!   key;
//! - an insert is refused if its ticket is older than the floor or than the key's last
//!   invalidation.
//!
//! Since the writer invalidates after it changes the store, a value inserted under a ticket
//! taken after the last invalidation was loaded after the last change, and an insert under an
//! older ticket is refused: once `invalidate` returns, the cache holds no value older than the
//! write it follows.
//!
//! The per-key invalidations are kept for the last [`REMEMBERED_INVALIDATIONS`] only. Forgetting
//! the oldest raises the floor to it, so a ticket older than that is refused for every key:
//! a load that overlaps more invalidations than that (of any keys) is discarded, which is
//! conservative, never wrong. Memory stays bounded whatever the rate of invalidations.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

/// What each entry costs on top of the size given to [`NearCache::insert`].
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

/// How many recent per-key invalidations are remembered: a ticket taken before the oldest of
/// them is refused for every key.
pub const REMEMBERED_INVALIDATIONS: usize = 4096;

/// Counters and occupancy of a [`NearCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NearCacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads not answered: absent or expired.
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
    /// Bytes held now, overhead included; never above the budget.
    pub bytes: usize,
    /// Entries dropped to make room for others.
    pub evictions: u64,
    /// Calls to `invalidate` and `invalidate_all`.
    pub invalidations: u64,
    /// Inserts refused because their ticket predates an invalidation.
    pub rejected_stale: u64,
}

/// Taken before loading a value from the store; an insert with a ticket older than an
/// invalidation of that key (or of everything) is refused.
///
/// Only meaningful for the cache that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// A thread-safe in-process cache of values by key (an author id), bounded in bytes. See the
/// module documentation for the budget, staleness and invalidation rules.
///
/// One mutex guards the state; every operation holds it for O(log n) work (`retain` and
/// `invalidate_all`: O(n)).
pub struct NearCache<V> {
    capacity_bytes: usize,
    ttl: Duration,
    state: Mutex<State<V>>,
}

struct State<V> {
    entries: HashMap<i64, Entry<V>>,
    /// Keys by their last use, least recent first.
    lru: BTreeMap<u64, i64>,
    /// Numbers uses for `lru`.
    clock: u64,
    /// Sum of the entries' costs.
    bytes: usize,
    invalidations: Invalidations,
    /// The counters; `entries` and `bytes` are filled in by `NearCache::stats`.
    stats: NearCacheStats,
}

struct Entry<V> {
    value: Arc<V>,
    /// Size given to `insert` plus the overhead.
    cost: usize,
    inserted_at: Instant,
    /// This entry's key in `lru`.
    last_use: u64,
}

/// Which tickets are too old, per key.
#[derive(Default)]
struct Invalidations {
    /// The last sequence number given to an invalidation.
    sequence: u64,
    /// Tickets below this are refused for every key: the last `invalidate_all`, or the last
    /// per-key invalidation forgotten.
    floor: u64,
    /// Each key's last remembered invalidation.
    by_key: HashMap<i64, u64>,
    /// Remembered invalidations, oldest first (a key invalidated again appears more than once;
    /// `by_key` has its latest).
    order: VecDeque<(u64, i64)>,
}

impl Invalidations {
    fn ticket(&self) -> Ticket {
        Ticket(self.sequence)
    }

    fn is_stale(&self, key: i64, ticket: Ticket) -> bool {
        ticket.0 < self.floor
            || self
                .by_key
                .get(&key)
                .is_some_and(|&invalidated| invalidated > ticket.0)
    }

    fn invalidate(&mut self, key: i64) {
        self.sequence += 1;
        self.by_key.insert(key, self.sequence);
        self.order.push_back((self.sequence, key));
        if self.order.len() > REMEMBERED_INVALIDATIONS {
            let (forgotten, key) = self.order.pop_front().expect("the queue is not empty");
            if self.by_key.get(&key) == Some(&forgotten) {
                self.by_key.remove(&key);
            }
            self.floor = self.floor.max(forgotten);
        }
    }

    fn invalidate_all(&mut self) {
        self.sequence += 1;
        self.floor = self.sequence;
        self.by_key.clear();
        self.order.clear();
    }
}

impl<V> State<V> {
    fn remove(&mut self, key: i64) -> Option<Entry<V>> {
        let entry = self.entries.remove(&key)?;
        self.lru.remove(&entry.last_use);
        self.bytes -= entry.cost;
        Some(entry)
    }
}

impl<V> NearCache<V> {
    /// A cache holding at most `capacity_bytes` (the sizes given to `insert` plus
    /// [`ENTRY_OVERHEAD_BYTES`] per entry) whose entries are misses once older than `ttl`.
    /// A zero budget disables it.
    pub fn new(capacity_bytes: usize, ttl: Duration) -> Self {
        Self {
            capacity_bytes,
            ttl,
            state: Mutex::new(State {
                entries: HashMap::new(),
                lru: BTreeMap::new(),
                clock: 0,
                bytes: 0,
                invalidations: Invalidations::default(),
                stats: NearCacheStats::default(),
            }),
        }
    }

    /// The value cached for `key`, if it is younger than the time to live. Counts a hit or a
    /// miss (a disabled cache counts neither); an expired entry is removed and is a miss.
    pub fn get(&self, key: i64, now: Instant) -> Option<Arc<V>> {
        if self.capacity_bytes == 0 {
            return None;
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        match state.entries.get_mut(&key) {
            Some(entry) if now.saturating_duration_since(entry.inserted_at) < self.ttl => {
                state.clock += 1;
                state.lru.remove(&entry.last_use);
                state.lru.insert(state.clock, key);
                entry.last_use = state.clock;
                state.stats.hits += 1;
                Some(Arc::clone(&entry.value))
            }
            Some(_) => {
                state.remove(key);
                state.stats.misses += 1;
                None
            }
            None => {
                state.stats.misses += 1;
                None
            }
        }
    }

    /// [`get`](Self::get) of several keys under one lock: each hit counts as a use.
    pub fn get_many(&self, keys: &[i64], now: Instant) -> Vec<Option<Arc<V>>> {
        if self.capacity_bytes == 0 {
            return vec![None; keys.len()];
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut expired = Vec::new();
        let found: Vec<Option<Arc<V>>> = keys
            .iter()
            .map(|key| match state.entries.get_mut(key) {
                Some(entry) if now.saturating_duration_since(entry.inserted_at) < self.ttl => {
                    state.clock += 1;
                    state.lru.remove(&entry.last_use);
                    state.lru.insert(state.clock, *key);
                    entry.last_use = state.clock;
                    Some(Arc::clone(&entry.value))
                }
                Some(_) => {
                    expired.push(*key);
                    None
                }
                None => None,
            })
            .collect();
        for key in expired {
            state.remove(key);
        }
        let hits = found.iter().filter(|f| f.is_some()).count() as u64;
        state.stats.hits += hits;
        state.stats.misses += keys.len() as u64 - hits;
        found
    }

    /// Looks up several keys under one lock, without refreshing their recency (they then leave
    /// in insertion order, or with their TTL): for small values read in bulk, such as the
    /// newest-post times of a feed's hundred followees. Counts a hit or a miss per key.
    pub fn peek_many(&self, keys: &[i64], now: Instant) -> Vec<Option<V>>
    where
        V: Copy,
    {
        if self.capacity_bytes == 0 {
            return vec![None; keys.len()];
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        let found: Vec<Option<V>> = keys
            .iter()
            .map(|key| match state.entries.get(key) {
                Some(entry) if now.saturating_duration_since(entry.inserted_at) < self.ttl => {
                    Some(*entry.value)
                }
                _ => None,
            })
            .collect();
        let hits = found.iter().filter(|f| f.is_some()).count() as u64;
        state.stats.hits += hits;
        state.stats.misses += keys.len() as u64 - hits;
        found
    }

    /// A ticket to take before loading a value from the store, for the `insert` that follows.
    pub fn ticket(&self) -> Ticket {
        self.lock().invalidations.ticket()
    }

    /// Caches `value` for `key`, replacing any entry, unless `key` (or everything) was
    /// invalidated after `ticket` was taken, or the entry (`bytes` plus the overhead) exceeds
    /// the whole budget. Evicts least-recently-used entries to fit. Returns whether it was
    /// inserted.
    pub fn insert(
        &self,
        key: i64,
        value: Arc<V>,
        bytes: usize,
        ticket: Ticket,
        now: Instant,
    ) -> bool {
        let cost = bytes.saturating_add(ENTRY_OVERHEAD_BYTES);
        if cost > self.capacity_bytes {
            return false;
        }
        let mut state = self.lock();
        if state.invalidations.is_stale(key, ticket) {
            state.stats.rejected_stale += 1;
            return false;
        }
        state.remove(key);
        while state.bytes + cost > self.capacity_bytes {
            let (_, evicted) = state
                .lru
                .pop_first()
                .expect("a cache over its budget holds entries");
            let entry = state
                .entries
                .remove(&evicted)
                .expect("every key in the LRU order has an entry");
            state.bytes -= entry.cost;
            state.stats.evictions += 1;
        }
        state.clock += 1;
        let last_use = state.clock;
        state.lru.insert(last_use, key);
        state.bytes += cost;
        state.entries.insert(
            key,
            Entry {
                value,
                cost,
                inserted_at: now,
                last_use,
            },
        );
        true
    }

    /// Drops `key`'s entry and refuses inserts for it under tickets taken before now.
    pub fn invalidate(&self, key: i64) {
        let mut state = self.lock();
        state.invalidations.invalidate(key);
        state.remove(key);
        state.stats.invalidations += 1;
    }

    /// Drops every entry and refuses inserts under tickets taken before now.
    pub fn invalidate_all(&self) {
        let mut state = self.lock();
        state.invalidations.invalidate_all();
        let entries = std::mem::take(&mut state.entries);
        state.lru.clear();
        state.bytes = 0;
        state.stats.invalidations += 1;
        drop(state);
        // The values are dropped outside the lock.
        drop(entries);
    }

    /// Drops every entry whose key `keep` rejects (an author that cooled down). `keep` runs
    /// under the cache's lock: it must not call the cache.
    pub fn retain(&self, keep: impl Fn(i64) -> bool) {
        let mut guard = self.lock();
        let State {
            entries,
            lru,
            bytes,
            ..
        } = &mut *guard;
        entries.retain(|&key, entry| {
            let kept = keep(key);
            if !kept {
                lru.remove(&entry.last_use);
                *bytes -= entry.cost;
            }
            kept
        });
    }

    /// The counters so far and the current occupancy.
    pub fn stats(&self) -> NearCacheStats {
        let state = self.lock();
        NearCacheStats {
            entries: state.entries.len(),
            bytes: state.bytes,
            ..state.stats
        }
    }

    /// The budget, overhead included.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// How long an entry is served after its insertion.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The state is consistent whenever code that could panic runs under the lock (`keep`, a
    /// value's drop), so a poisoned lock still guards a usable cache.
    fn lock(&self) -> MutexGuard<'_, State<V>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V> fmt::Debug for NearCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NearCache")
            .field("capacity_bytes", &self.capacity_bytes)
            .field("ttl", &self.ttl)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicBool, AtomicU64, Ordering},
            Barrier,
        },
        thread,
    };

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// Room for `n` entries of `size` bytes.
    fn room(n: usize, size: usize) -> usize {
        n * (size + ENTRY_OVERHEAD_BYTES)
    }

    fn put(cache: &NearCache<u64>, key: i64, size: usize, now: Instant) -> bool {
        cache.insert(key, Arc::new(key as u64), size, cache.ticket(), now)
    }

    /// xorshift64: deterministic per thread.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    #[test]
    fn get_many_reads_in_bulk_and_refreshes_recency() {
        let start = Instant::now();
        const TTL: Duration = Duration::from_secs(1);
        let cache: NearCache<u8> = NearCache::new(3 * (ENTRY_OVERHEAD_BYTES + 1), TTL);
        for key in 1..=3 {
            assert!(cache.insert(key, Arc::new(key as u8), 1, cache.ticket(), start));
        }
        let got: Vec<Option<u8>> = cache
            .get_many(&[1, 9, 3], start)
            .into_iter()
            .map(|v| v.map(|v| *v))
            .collect();
        assert_eq!(got, vec![Some(1), None, Some(3)]);
        // Reading key 1 made it recent: key 2 is the first to go.
        assert!(cache.insert(4, Arc::new(4), 1, cache.ticket(), start));
        assert_eq!(
            cache.peek_many(&[1, 2, 3, 4], start),
            vec![Some(1), None, Some(3), Some(4)]
        );
        // Expired entries are misses and leave.
        assert_eq!(cache.get_many(&[1], start + TTL).len(), 1);
        assert!(cache.get_many(&[1], start + TTL)[0].is_none());
        assert_eq!(cache.stats().entries, 2);
    }

    #[test]
    fn peek_many_reads_in_bulk_without_refreshing_recency() {
        let start = Instant::now();
        const TTL: Duration = Duration::from_secs(1);
        let cache: NearCache<u8> = NearCache::new(3 * (ENTRY_OVERHEAD_BYTES + 1), TTL);
        for key in 1..=3 {
            assert!(cache.insert(key, Arc::new(key as u8), 1, cache.ticket(), start));
        }
        assert_eq!(
            cache.peek_many(&[3, 9, 1], start),
            vec![Some(3), None, Some(1)]
        );
        // Peeking did not make key 1 recent: it is still the first to go.
        assert!(cache.insert(4, Arc::new(4), 1, cache.ticket(), start));
        assert_eq!(cache.peek_many(&[1, 2], start), vec![None, Some(2)]);
        assert_eq!(cache.peek_many(&[2], start + TTL), vec![None], "expired");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (3, 3));
    }

    #[test]
    fn evicts_least_recently_used_within_the_budget() {
        let cache = NearCache::new(room(10, 100), HOUR);
        let now = Instant::now();
        for key in 0..10 {
            assert!(put(&cache, key, 100, now));
        }
        assert_eq!(cache.stats().bytes, room(10, 100));
        // Key 0 is read, so key 1 is now the least recently used.
        assert!(cache.get(0, now).is_some());
        assert!(put(&cache, 10, 100, now));
        assert!(cache.get(0, now).is_some());
        assert!(cache.get(1, now).is_none());
        assert_eq!(cache.stats().evictions, 1);

        // Many inserts of all sizes: the budget holds and the entry read each time survives.
        let mut rng = Rng(0x1234_5678);
        for key in 100..2_100 {
            put(&cache, key, rng.below(500) as usize, now);
            let stats = cache.stats();
            assert!(stats.bytes <= cache.capacity_bytes(), "{stats:?}");
            assert_eq!(cache.get(0, now).as_deref(), Some(&0));
        }
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_refused() {
        let cache = NearCache::new(room(2, 100), HOUR);
        let now = Instant::now();
        assert!(put(&cache, 1, 100, now));
        assert!(!put(&cache, 2, room(2, 100), now));
        assert!(!put(&cache, 3, usize::MAX, now));
        assert!(put(&cache, 4, room(2, 100) - ENTRY_OVERHEAD_BYTES, now));
        let stats = cache.stats();
        assert_eq!(
            (stats.entries, stats.bytes, stats.evictions),
            (1, room(2, 100), 1)
        );
    }

    #[test]
    fn an_expired_entry_is_a_miss() {
        let cache = NearCache::new(room(4, 10), Duration::from_secs(10));
        let start = Instant::now();
        assert!(put(&cache, 7, 10, start));
        assert!(cache.get(7, start + Duration::from_secs(9)).is_some());
        assert!(cache.get(7, start + Duration::from_secs(10)).is_none());
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.entries, stats.bytes),
            (1, 1, 0, 0)
        );
    }

    #[test]
    fn an_insert_loaded_before_an_invalidation_is_refused() {
        let cache = NearCache::new(room(4, 10), HOUR);
        let now = Instant::now();
        assert!(put(&cache, 5, 10, now));

        let before = cache.ticket();
        cache.invalidate(5);
        assert!(cache.get(5, now).is_none());
        assert!(!cache.insert(5, Arc::new(1), 10, before, now));
        // Other keys were not invalidated.
        assert!(cache.insert(6, Arc::new(1), 10, before, now));

        let after = cache.ticket();
        assert_ne!(before, after);
        assert!(cache.insert(5, Arc::new(2), 10, after, now));
        assert_eq!(cache.get(5, now).as_deref(), Some(&2));
        let stats = cache.stats();
        assert_eq!((stats.invalidations, stats.rejected_stale), (1, 1));
    }

    #[test]
    fn invalidate_all_refuses_older_tickets_for_every_key() {
        let cache = NearCache::new(room(4, 10), HOUR);
        let now = Instant::now();
        let before = cache.ticket();
        for key in 0..3 {
            assert!(cache.insert(key, Arc::new(0), 10, before, now));
        }
        cache.invalidate_all();
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(cache.stats().bytes, 0);
        for key in 0..4 {
            assert!(!cache.insert(key, Arc::new(0), 10, before, now));
        }
        let after = cache.ticket();
        for key in 0..4 {
            assert!(cache.insert(key, Arc::new(1), 10, after, now));
        }
        assert_eq!(cache.stats().rejected_stale, 4);
    }

    #[test]
    fn forgotten_invalidations_refuse_older_tickets() {
        let cache = NearCache::<u64>::new(room(4, 10), HOUR);
        let now = Instant::now();
        let old = cache.ticket();
        // Key 1 is never invalidated; others are, more often than remembered.
        for i in 0..=REMEMBERED_INVALIDATIONS as i64 {
            cache.invalidate(1_000 + i % 100);
        }
        let recent = cache.ticket();
        cache.invalidate(2);
        {
            let state = cache.lock();
            assert!(state.invalidations.order.len() <= REMEMBERED_INVALIDATIONS);
            assert!(state.invalidations.by_key.len() <= REMEMBERED_INVALIDATIONS);
        }
        assert!(!cache.insert(1, Arc::new(0), 10, old, now));
        assert!(cache.insert(1, Arc::new(0), 10, recent, now));
        assert!(!cache.insert(2, Arc::new(0), 10, recent, now));
    }

    #[test]
    fn retain_drops_rejected_keys() {
        let cache = NearCache::new(room(10, 10), HOUR);
        let now = Instant::now();
        for key in 0..10 {
            assert!(put(&cache, key, 10, now));
        }
        cache.retain(|key| key % 2 == 0);
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes), (5, room(5, 10)));
        for key in 0..10 {
            assert_eq!(cache.get(key, now).is_some(), key % 2 == 0);
        }
        // The freed room is usable.
        for key in 10..15 {
            assert!(put(&cache, key, 10, now));
        }
        assert_eq!(cache.stats().evictions, 0);
    }

    #[test]
    fn counts_hits_and_misses() {
        let cache = NearCache::new(room(4, 10), HOUR);
        let now = Instant::now();
        assert!(cache.get(1, now).is_none());
        assert!(put(&cache, 1, 10, now));
        for _ in 0..3 {
            assert_eq!(cache.get(1, now).as_deref(), Some(&1));
        }
        assert!(cache.get(2, now).is_none());
        assert_eq!(
            cache.stats(),
            NearCacheStats {
                hits: 3,
                misses: 2,
                entries: 1,
                bytes: room(1, 10),
                ..NearCacheStats::default()
            }
        );
    }

    #[test]
    fn a_zero_budget_disables_the_cache() {
        let cache = NearCache::new(0, HOUR);
        let now = Instant::now();
        assert!(!put(&cache, 1, 0, now));
        assert!(cache.get(1, now).is_none());
        assert_eq!(cache.stats(), NearCacheStats::default());
        assert_eq!(cache.capacity_bytes(), 0);
    }

    /// Loaders race a writer that changes a store, then invalidates, then publishes the version
    /// it invalidated for. A reader that sees a published version must never get an older
    /// value from the cache afterwards: no racing load undid an invalidation. The budget holds
    /// throughout.
    #[test]
    fn concurrent_loads_never_undo_an_invalidation() {
        const KEYS: usize = 32;
        let cache = NearCache::new(room(12, 64), HOUR);
        let store: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(0)).collect();
        let published: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(0)).collect();
        let writing = AtomicBool::new(true);
        let started = Barrier::new(4);

        thread::scope(|scope| {
            for seed in 1..=3_u64 {
                let (cache, store, published, writing, started) =
                    (&cache, &store, &published, &writing, &started);
                scope.spawn(move || {
                    let mut rng = Rng(seed * 0x9e37_79b9);
                    started.wait();
                    while writing.load(Ordering::SeqCst) {
                        let key = rng.below(KEYS as u64) as usize;
                        let now = Instant::now();
                        let floor = published[key].load(Ordering::SeqCst);
                        if let Some(cached) = cache.get(key as i64, now) {
                            assert!(*cached >= floor, "key {key}: {cached} after {floor}");
                        } else {
                            let ticket = cache.ticket();
                            let value = store[key].load(Ordering::SeqCst);
                            // A slow load, so that invalidations land in the middle of it.
                            for _ in 0..rng.below(4) {
                                thread::yield_now();
                            }
                            let size = rng.below(128) as usize;
                            cache.insert(key as i64, Arc::new(value), size, ticket, now);
                        }
                        let stats = cache.stats();
                        assert!(stats.bytes <= cache.capacity_bytes(), "{stats:?}");
                    }
                });
            }
            started.wait();
            let mut rng = Rng(0xdead_beef);
            for round in 0..20_000 {
                let key = rng.below(KEYS as u64) as usize;
                let version = store[key].fetch_add(1, Ordering::SeqCst) + 1;
                if round % 1_000 == 999 {
                    cache.invalidate_all();
                } else {
                    cache.invalidate(key as i64);
                }
                published[key].store(version, Ordering::SeqCst);
                if round % 16 == 0 {
                    thread::yield_now();
                }
            }
            writing.store(false, Ordering::SeqCst);
        });

        let now = Instant::now();
        for (key, current) in store.iter().enumerate() {
            if let Some(cached) = cache.get(key as i64, now) {
                assert_eq!(*cached, current.load(Ordering::SeqCst), "key {key}");
            }
        }
        let stats = cache.stats();
        assert!(stats.bytes <= cache.capacity_bytes(), "{stats:?}");
        assert!(stats.hits > 0, "{stats:?}");
    }
}
