//! The retrieval cache: the unpersonalized candidates of a (query, filters, limit), reused across
//! visitors until they expire or the catalog changes.
//!
//! - [`CacheKey`] is canonical: the query is lowercased with whitespace collapsed, filter values are
//!   sorted and deduplicated, prices compare by their bits. Two requests that must retrieve the same
//!   candidates get the same key.
//! - [`RetrievalCache`] is a bounded LRU map (O(1) get, put and eviction: an `IndexMap` threaded by
//!   a doubly linked list of indices) with a time to live counted from the put. It is bounded by
//!   entries and, for values put with their size ([`RetrievalCache::put_sized`]), by bytes: a
//!   retrieval with its facets weighs tens of kilobytes, so a count alone lets a run of distinct
//!   queries hold hundreds of megabytes.
//! - [`RetrievalCache::invalidate_all`] bumps a generation counter in O(1): entries of an older
//!   generation never serve again and are dropped when touched or evicted.
//!
//! Time is an argument (`now_ms`), never read here, so expiry is testable.

use std::sync::atomic::{AtomicU64, Ordering};

use attune_core::SearchFilters;
use indexmap::IndexMap;
use parking_lot::Mutex;

/// What a cached retrieval is keyed by: the normalized query, the filters in canonical form, and
/// the number of candidates asked for.
///
/// ```
/// use attune_core::SearchFilters;
/// use attune_search::cache::CacheKey;
///
/// let mut a = SearchFilters::default();
/// a.brand = vec!["Oatly".into(), "Alpro".into()];
/// let mut b = SearchFilters::default();
/// b.brand = vec!["Alpro".into(), "Oatly".into(), "Alpro".into()];
///
/// assert_eq!(CacheKey::new("  Oat   MILK ", &a, 50), CacheKey::new("oat milk", &b, 50));
/// assert_ne!(CacheKey::new("oat milk", &a, 50), CacheKey::new("oat milk", &a, 20));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    query: String,
    filters: CanonicalFilters,
    limit: usize,
}

/// [`SearchFilters`] with every list sorted and deduplicated and prices as bits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CanonicalFilters {
    brand: Vec<String>,
    category: Vec<String>,
    /// Sorted by key (from the `BTreeMap`); each key's values sorted and deduplicated. A key with
    /// no values is kept: it is not the same filter as an absent key.
    attributes: Vec<(String, Vec<String>)>,
    price_min: Option<u64>,
    price_max: Option<u64>,
    in_stock: Option<bool>,
}

impl CacheKey {
    /// The key of a retrieval of `limit` candidates for `query` under `filters`.
    ///
    /// The query is lowercased and its whitespace collapsed to single spaces (retrieval tokenizes
    /// the same way). Filter values keep their case: they are matched exactly. "Any of" lists are
    /// sorted and deduplicated; prices compare by their `f64` bits, with `-0.0` taken as `0.0`.
    pub fn new(query: &str, filters: &SearchFilters, limit: usize) -> Self {
        Self {
            query: normalize_query(query),
            filters: CanonicalFilters {
                brand: canonical_values(&filters.brand),
                category: canonical_values(&filters.category),
                attributes: filters
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), canonical_values(v)))
                    .collect(),
                price_min: filters.price_min.map(price_bits),
                price_max: filters.price_max.map(price_bits),
                in_stock: filters.in_stock,
            },
            limit,
        }
    }

    /// The normalized query.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The number of candidates asked for.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// About how many bytes the key holds on the heap and inline.
    pub fn heap_bytes(&self) -> usize {
        let strings = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
        let f = &self.filters;
        std::mem::size_of::<Self>()
            + self.query.len()
            + strings(&f.brand)
            + strings(&f.category)
            + f.attributes
                .iter()
                .map(|(k, v)| k.len() + 48 + strings(v))
                .sum::<usize>()
    }
}

fn normalize_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for word in query.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

fn canonical_values(values: &[String]) -> Vec<String> {
    let mut out = values.to_vec();
    out.sort_unstable();
    out.dedup();
    out
}

fn price_bits(price: f64) -> u64 {
    // Adding 0.0 turns -0.0 into 0.0 and leaves every other value as it is.
    (price + 0.0).to_bits()
}

/// Counters since the cache was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Gets that returned a value.
    pub hits: u64,
    /// Gets that found nothing usable (absent, expired, or of an older generation).
    pub misses: u64,
    /// Entries dropped to make room for a new one.
    pub evictions: u64,
}

/// No neighbour in the recency list.
const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Node<V> {
    value: V,
    /// The size the value was put with (0 if unknown), with the key's.
    bytes: usize,
    stored_at_ms: i64,
    generation: u64,
    /// Toward the most recently used end.
    prev: usize,
    /// Toward the least recently used end.
    next: usize,
}

/// Entries in an `IndexMap` (O(1) lookup, O(1) `swap_remove`), threaded by a doubly linked list of
/// indices from the most recently used (`head`) to the least (`tail`).
#[derive(Debug)]
struct Lru<V> {
    map: IndexMap<CacheKey, Node<V>>,
    head: usize,
    tail: usize,
    /// The sum of the entries' `bytes`.
    bytes: usize,
    stats: CacheStats,
}

impl<V> Lru<V> {
    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.map[i].prev, self.map[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.map[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.map[next].prev = prev;
        }
    }

    fn push_front(&mut self, i: usize) {
        let old_head = self.head;
        self.map[i].prev = NIL;
        self.map[i].next = old_head;
        if old_head == NIL {
            self.tail = i;
        } else {
            self.map[old_head].prev = i;
        }
        self.head = i;
    }

    fn remove(&mut self, i: usize) {
        self.unlink(i);
        self.bytes -= self.map[i].bytes;
        self.map.swap_remove_index(i);
        // The last entry moved into slot `i`: point its neighbours at its new index.
        if i < self.map.len() {
            let (prev, next) = (self.map[i].prev, self.map[i].next);
            if prev == NIL {
                self.head = i;
            } else {
                self.map[prev].next = i;
            }
            if next == NIL {
                self.tail = i;
            } else {
                self.map[next].prev = i;
            }
        }
    }
}

/// A bounded, expiring, invalidatable map from [`CacheKey`] to retrieved candidates.
///
/// Methods take `&self` (one short mutex inside); values are cloned out, so keep them cheap to
/// clone (an `Arc`).
///
/// ```
/// use attune_core::SearchFilters;
/// use attune_search::cache::{CacheKey, RetrievalCache};
///
/// let cache = RetrievalCache::new(1_000, 60_000);
/// let key = CacheKey::new("oat milk", &SearchFilters::default(), 50);
/// cache.put(key.clone(), vec!["oat-1", "oat-2"], 0);
/// assert_eq!(cache.get(&key, 30_000), Some(vec!["oat-1", "oat-2"]));
/// assert_eq!(cache.get(&key, 60_000), None); // expired
///
/// cache.put(key.clone(), vec!["oat-1"], 60_000);
/// cache.invalidate_all(); // the catalog changed
/// assert_eq!(cache.get(&key, 60_001), None);
/// ```
#[derive(Debug)]
pub struct RetrievalCache<V: Clone> {
    capacity: usize,
    max_bytes: usize,
    ttl_ms: i64,
    generation: AtomicU64,
    inner: Mutex<Lru<V>>,
}

impl<V: Clone> RetrievalCache<V> {
    /// A cache of at most `capacity` entries, each served for `ttl_ms` after it was put. A capacity
    /// of 0 or a TTL of 0 or less caches nothing.
    pub fn new(capacity: usize, ttl_ms: i64) -> Self {
        Self::with_max_bytes(capacity, usize::MAX, ttl_ms)
    }

    /// A cache of at most `capacity` entries whose sizes (as given to
    /// [`put_sized`](Self::put_sized), keys included) add up to at most `max_bytes`.
    ///
    /// ```
    /// use attune_core::SearchFilters;
    /// use attune_search::cache::{CacheKey, RetrievalCache};
    ///
    /// let cache = RetrievalCache::with_max_bytes(1_000, 100_000, 60_000);
    /// let key = |q: &str| CacheKey::new(q, &SearchFilters::default(), 50);
    /// cache.put_sized(key("shirt"), "shirts", 60_000, 0, cache.generation());
    /// cache.put_sized(key("jeans"), "jeans", 60_000, 0, cache.generation());
    /// // Two entries would pass 100,000 bytes: the least recently used made room.
    /// assert_eq!(cache.get(&key("shirt"), 1), None);
    /// assert_eq!(cache.get(&key("jeans"), 1), Some("jeans"));
    /// assert!(cache.bytes() <= 100_000);
    /// ```
    pub fn with_max_bytes(capacity: usize, max_bytes: usize, ttl_ms: i64) -> Self {
        Self {
            capacity,
            max_bytes,
            ttl_ms,
            generation: AtomicU64::new(0),
            inner: Mutex::new(Lru {
                map: IndexMap::with_capacity(capacity.min(1 << 12)),
                head: NIL,
                tail: NIL,
                bytes: 0,
                stats: CacheStats::default(),
            }),
        }
    }

    /// The value stored under `key`, if it was put less than the TTL before `now_ms` and since the
    /// last [`invalidate_all`](Self::invalidate_all). A hit makes the entry the most recently used.
    pub fn get(&self, key: &CacheKey, now_ms: i64) -> Option<V> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut lru = self.inner.lock();
        let Some(i) = lru.map.get_index_of(key) else {
            lru.stats.misses += 1;
            return None;
        };
        let node = &lru.map[i];
        if node.generation != generation || self.expired(node.stored_at_ms, now_ms) {
            lru.remove(i);
            lru.stats.misses += 1;
            return None;
        }
        let value = node.value.clone();
        lru.unlink(i);
        lru.push_front(i);
        lru.stats.hits += 1;
        Some(value)
    }

    /// Stores `value` under `key` as of `now_ms`, replacing any entry for the key; when full, the
    /// least recently used entry makes room.
    ///
    /// If the value was computed while the catalog changed, it may be stale: read
    /// [`generation`](Self::generation) before retrieving and store with [`put_at`](Self::put_at).
    pub fn put(&self, key: CacheKey, value: V, now_ms: i64) {
        self.put_at(key, value, now_ms, self.generation());
    }

    /// Like [`put`](Self::put), for a value retrieved when the cache was at `generation`: if the
    /// cache was invalidated since, the value is dropped instead of stored.
    pub fn put_at(&self, key: CacheKey, value: V, now_ms: i64, generation: u64) {
        self.put_sized(key, value, 0, now_ms, generation);
    }

    /// Like [`put_at`](Self::put_at) for a value of `bytes` bytes (what it holds on the heap;
    /// the key's own size is added here): least recently used entries are dropped until the
    /// total fits `max_bytes`. A value larger than that alone is not stored.
    pub fn put_sized(&self, key: CacheKey, value: V, bytes: usize, now_ms: i64, generation: u64) {
        if self.capacity == 0 || self.ttl_ms <= 0 {
            return;
        }
        let bytes = bytes.saturating_add(key.heap_bytes());
        if bytes > self.max_bytes {
            return;
        }
        let mut lru = self.inner.lock();
        // Checked under the lock, so an invalidation either precedes this check or follows the put.
        if generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        if let Some(i) = lru.map.get_index_of(&key) {
            // Replaced as a new entry, so that the byte bound below holds for the new size.
            lru.remove(i);
        }
        while lru.map.len() >= self.capacity || lru.bytes + bytes > self.max_bytes {
            let oldest = lru.tail;
            if oldest == NIL {
                break;
            }
            lru.remove(oldest);
            lru.stats.evictions += 1;
        }
        lru.bytes += bytes;
        let (i, _) = lru.map.insert_full(
            key,
            Node {
                value,
                bytes,
                stored_at_ms: now_ms,
                generation,
                prev: NIL,
                next: NIL,
            },
        );
        lru.push_front(i);
    }

    /// Makes every entry stale, in O(1): call it on any catalog change. Stale entries still take
    /// room until they are touched or evicted, but never serve.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The current generation (how many times the cache was invalidated), for [`put_at`](Self::put_at).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The number of entries held, stale and expired ones included until they are dropped.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sizes of the entries held, as put with [`put_sized`](Self::put_sized) (keys included).
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// Hits, misses and evictions so far.
    pub fn stats(&self) -> CacheStats {
        self.inner.lock().stats
    }

    fn expired(&self, stored_at_ms: i64, now_ms: i64) -> bool {
        now_ms.saturating_sub(stored_at_ms) >= self.ttl_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn key(q: &str) -> CacheKey {
        CacheKey::new(q, &SearchFilters::default(), 10)
    }

    fn filters(
        brand: &[&str],
        category: &[&str],
        attributes: &[(&str, &[&str])],
        price: (Option<f64>, Option<f64>),
    ) -> SearchFilters {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        SearchFilters {
            brand: strings(brand),
            category: strings(category),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), strings(v)))
                .collect::<BTreeMap<_, _>>(),
            price_min: price.0,
            price_max: price.1,
            in_stock: Some(true),
        }
    }

    #[test]
    fn keys_are_canonical() {
        let a = filters(
            &["Oatly", "Alpro"],
            &["Dairy > Milk", "Drinks"],
            &[("diet", &["vegan", "gluten-free"]), ("size", &["1l"])],
            (Some(-0.0), Some(4.5)),
        );
        let b = filters(
            &["Alpro", "Oatly", "Oatly"],
            &["Drinks", "Dairy > Milk"],
            &[
                ("size", &["1l"]),
                ("diet", &["gluten-free", "vegan", "vegan"]),
            ],
            (Some(0.0), Some(4.5)),
        );
        let same = CacheKey::new("oat milk", &a, 20);
        assert_eq!(CacheKey::new("oat milk", &b, 20), same);
        assert_eq!(CacheKey::new("  OAT\t\n Milk ", &a, 20), same);
        assert_eq!(same.query(), "oat milk");

        let different = [
            CacheKey::new("oat milk", &a, 21),
            CacheKey::new("oatmilk", &a, 20),
            CacheKey::new("oat milk", &SearchFilters::default(), 20),
            CacheKey::new(
                "oat milk",
                &filters(&["oatly", "alpro"], &[], &[], (None, None)),
                20,
            ),
            CacheKey::new(
                "oat milk",
                &SearchFilters {
                    price_max: Some(4.500001),
                    ..a.clone()
                },
                20,
            ),
            CacheKey::new(
                "oat milk",
                &SearchFilters {
                    in_stock: None,
                    ..a.clone()
                },
                20,
            ),
            // An attribute key with no values is not an absent key.
            CacheKey::new(
                "oat milk",
                &filters(&[], &[], &[("diet", &[])], (None, None)),
                20,
            ),
        ];
        for d in &different {
            assert_ne!(d, &same);
        }
        assert_ne!(different[2], different[6]);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = RetrievalCache::new(10, 100);
        cache.put(key("a"), 1, 1_000);
        assert_eq!(cache.get(&key("a"), 1_000), Some(1));
        assert_eq!(cache.get(&key("a"), 1_099), Some(1));
        // A hit does not extend the TTL.
        assert_eq!(cache.get(&key("a"), 1_100), None);
        assert_eq!(cache.len(), 0);
        // A clock that steps back does not expire anything.
        cache.put(key("b"), 2, 5_000);
        assert_eq!(cache.get(&key("b"), 4_000), Some(2));
        // Re-putting restarts the TTL.
        cache.put(key("b"), 3, 5_090);
        assert_eq!(cache.get(&key("b"), 5_150), Some(3));
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 4,
                misses: 1,
                evictions: 0
            }
        );
    }

    #[test]
    fn invalidation_hides_everything_put_before_it() {
        let cache = RetrievalCache::new(10, 1_000);
        cache.put(key("a"), 1, 0);
        cache.put(key("b"), 2, 0);
        let before = cache.generation();
        cache.invalidate_all();
        assert_eq!(cache.get(&key("a"), 1), None);
        assert_eq!(cache.get(&key("b"), 1), None);
        // A value retrieved before the invalidation is not stored after it.
        cache.put_at(key("c"), 3, 1, before);
        assert_eq!(cache.get(&key("c"), 2), None);
        // New puts serve again.
        cache.put(key("a"), 4, 2);
        assert_eq!(cache.get(&key("a"), 3), Some(4));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn capacity_bounds_the_entries_and_evicts_the_least_recently_used() {
        let cache = RetrievalCache::new(3, 1_000);
        for (i, q) in ["a", "b", "c"].into_iter().enumerate() {
            cache.put(key(q), i, 0);
        }
        // Using "a" makes "b" the least recently used.
        assert_eq!(cache.get(&key("a"), 1), Some(0));
        cache.put(key("d"), 3, 2);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&key("b"), 3), None);
        cache.put(key("e"), 4, 4);
        assert_eq!(cache.get(&key("c"), 5), None);
        for q in ["a", "d", "e"] {
            assert!(cache.get(&key(q), 6).is_some(), "{q}");
        }
        assert_eq!(cache.stats().evictions, 2);
        // Replacing a key does not evict.
        cache.put(key("a"), 9, 7);
        assert_eq!((cache.len(), cache.stats().evictions), (3, 2));
        assert_eq!(cache.get(&key("a"), 8), Some(9));
    }

    #[test]
    fn bytes_bound_the_entries_and_evict_the_least_recently_used() {
        let k = key("a").heap_bytes();
        assert_eq!(k, key("b").heap_bytes());
        // Room for 1,000 bytes of values over three keys.
        let cache = RetrievalCache::with_max_bytes(100, 1_000 + 3 * k, 1_000);
        let g = cache.generation();
        cache.put_sized(key("a"), 1, 400, 0, g);
        cache.put_sized(key("b"), 2, 400, 0, g);
        assert_eq!(cache.bytes(), 800 + 2 * k);
        assert_eq!(cache.get(&key("a"), 1), Some(1));
        // "b" is the least recently used: it makes room for "c".
        cache.put_sized(key("c"), 3, 500, 2, g);
        assert_eq!(cache.get(&key("b"), 3), None);
        assert_eq!((cache.len(), cache.bytes()), (2, 900 + 2 * k));
        // Growing "a" in place evicts "c", the older of the others.
        assert_eq!(cache.get(&key("a"), 4), Some(1));
        cache.put_sized(key("a"), 4, 700, 5, g);
        assert_eq!(cache.get(&key("c"), 6), None);
        assert_eq!((cache.len(), cache.bytes()), (1, 700 + k));
        // Larger than the whole budget: not stored, nothing evicted.
        cache.put_sized(key("d"), 5, 2_000, 7, g);
        assert_eq!(cache.get(&key("d"), 8), None);
        assert_eq!(cache.get(&key("a"), 8), Some(4));
        assert_eq!(cache.stats().evictions, 2);
        // Dropping an entry gives its bytes back.
        cache.invalidate_all();
        assert_eq!(cache.get(&key("a"), 9), None);
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    #[test]
    fn zero_capacity_or_ttl_caches_nothing() {
        for cache in [RetrievalCache::new(0, 1_000), RetrievalCache::new(5, 0)] {
            cache.put(key("a"), 1, 0);
            assert!(cache.is_empty());
            assert_eq!(cache.get(&key("a"), 0), None);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Get(u8),
        Put(u8, u32),
        Invalidate,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..12).prop_map(Op::Get),
            4 => (0u8..12, any::<u32>()).prop_map(|(k, v)| Op::Put(k, v)),
            1 => Just(Op::Invalidate),
        ]
    }

    proptest! {
        /// The cache agrees with a plain model: a list ordered most recently used first.
        #[test]
        fn behaves_like_a_simple_lru(ops in prop::collection::vec(op(), 0..200), cap in 1usize..6) {
            let cache = RetrievalCache::new(cap, 50);
            let mut model: Vec<(u8, u32, i64)> = Vec::new();
            for (t, op) in ops.into_iter().enumerate() {
                let now = t as i64;
                match op {
                    Op::Get(k) => {
                        let got = cache.get(&key(&k.to_string()), now);
                        let want = match model.iter().position(|e| e.0 == k) {
                            Some(i) if now - model[i].2 < 50 => {
                                let e = model.remove(i);
                                model.insert(0, e);
                                Some(e.1)
                            }
                            Some(i) => {
                                model.remove(i);
                                None
                            }
                            None => None,
                        };
                        prop_assert_eq!(got, want);
                    }
                    Op::Put(k, v) => {
                        cache.put(key(&k.to_string()), v, now);
                        if let Some(i) = model.iter().position(|e| e.0 == k) {
                            model.remove(i);
                        } else if model.len() >= cap {
                            model.pop();
                        }
                        model.insert(0, (k, v, now));
                    }
                    Op::Invalidate => {
                        cache.invalidate_all();
                        // Stale entries keep their places (and room) until touched or evicted;
                        // model them as values that can no longer be read.
                        for e in &mut model {
                            e.2 = i64::MIN / 2;
                        }
                    }
                }
                prop_assert_eq!(cache.len(), model.len());
                prop_assert!(cache.len() <= cap);
                let bytes: usize = model.iter().map(|e| key(&e.0.to_string()).heap_bytes()).sum();
                prop_assert_eq!(cache.bytes(), bytes);
            }
        }
    }
}
