//! [`Ranked`]: a sequence's scored state and its best items over the whole table, computed once
//! and kept by a [`RankCache`], so that later requests for the same sequence run neither the
//! network nor the scan of the table.
//!
//! A served model is frozen, so what it says of a sequence depends on the sequence alone: a
//! session asked about again with no new event (a page reloaded, the `home` and `next` lists of
//! one page, a second page of results) has the same sequence, and its answer can be read from
//! what the first request computed. Keys are the sequence as the model reads it (its known
//! items, the last `max_len`), so a new event makes a new key and an entry never goes stale.
//!
//! Exactness: [`Serving::top_accepted`] is the first `k` accepted items of every item sorted
//! best first (higher score, then lower index). A [`Ranked`] keeps the first `depth` items of
//! that order (nothing filtered); walking them through `accept` gives the same first `k`
//! whenever `k` of them are accepted, or when they are every item with a finite score. Otherwise
//! (too many rejected) the answer is computed from the kept state as before. So a cached answer
//! is the uncached one, scores bit for bit included (tests).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Gather, Serving, with_state};
use crate::sasrec::tile;

/// A sequence's scored state and its `depth` best items (see the module docs).
#[derive(Debug)]
pub struct Ranked {
    /// The [`Serving`] that computed it.
    serving: u64,
    /// The scored state (see [`Serving::state`]).
    state: Box<[f32]>,
    /// The best items, best first, over every item (nothing filtered; finite scores only).
    top: Box<[(u32, f32)]>,
    /// `top` holds every item with a finite score (there were fewer than `depth`).
    complete: bool,
}

impl Serving {
    /// The model's reading of `sequence` (its items `1..=num_items`, the last `max_len`),
    /// oldest first: two sequences with the same reading get the same scores.
    pub fn reading(&self, sequence: &[u32]) -> Vec<u32> {
        let mut items: Vec<u32> = sequence
            .iter()
            .rev()
            .copied()
            .filter(|&i| i != 0 && i as usize <= self.num_items)
            .take(self.config.max_len)
            .collect();
        items.reverse();
        items
    }

    /// The scored state of `sequence` and its `depth` best items: what [`Ranked::top_accepted`]
    /// and [`Ranked::score_candidates_into`] answer from without running the network again.
    pub fn ranked(&self, sequence: &[u32], depth: usize) -> Ranked {
        with_state(self, sequence, |h| {
            let top = self.top_accepted_of_state(h, depth, &mut |_| true);
            Ranked {
                serving: self.id,
                state: h.into(),
                complete: top.len() < depth,
                top: top.into_boxed_slice(),
            }
        })
    }
}

impl Ranked {
    /// How many best items are kept.
    pub fn depth(&self) -> usize {
        self.top.len()
    }

    /// [`Serving::top_accepted`] for the sequence this was computed from, by the same
    /// `serving`: the kept items walked through `accept`, or, when fewer than `k` of them are
    /// accepted and there are more items, the selection run again from the kept state.
    pub fn top_accepted(
        &self,
        serving: &Serving,
        k: usize,
        accept: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        assert_eq!(self.serving, serving.id, "a Ranked from another Serving");
        let mut out = Vec::with_capacity(k.min(self.top.len()));
        if k == 0 {
            return out;
        }
        for &(i, s) in &self.top {
            if accept(i) {
                out.push((i, s));
                if out.len() == k {
                    return out;
                }
            }
        }
        if self.complete {
            return out;
        }
        serving.top_accepted_of_state(&self.state, k, accept)
    }

    /// [`Serving::score_candidates_into`] for the sequence this was computed from, by the same
    /// `serving`, from the kept state.
    pub fn score_candidates_into(
        &self,
        serving: &Serving,
        candidates: &[u32],
        scores: &mut Vec<f32>,
    ) {
        assert_eq!(self.serving, serving.id, "a Ranked from another Serving");
        scores.clear();
        scores.resize(candidates.len(), f32::NEG_INFINITY);
        tile::dispatch(Gather {
            table: &serving.table,
            num_items: serving.num_items,
            h: &self.state,
            candidates,
            out: scores,
        });
    }

    /// Bytes this entry holds (its buffers, not counting the allocator's rounding).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Ranked>()
            + std::mem::size_of_val(&*self.state)
            + std::mem::size_of_val(&*self.top)
    }
}

/// Shards of a [`RankCache`] (each its own lock).
const SHARDS: usize = 16;

/// One shard: entries by reading, and the readings in insertion order (the oldest is evicted
/// first).
#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u32]>, Arc<Ranked>>,
    order: VecDeque<Box<[u32]>>,
}

/// A bounded cache of [`Ranked`] entries of one [`Serving`], keyed by the model's reading of
/// the sequence: at most `capacity` entries (each `depth` best items and a state, about
/// `8 · depth + 4 · d` bytes), the oldest evicted first.
///
/// ```
/// use attune_model::sasrec::{RankCache, SasRec, SasRecConfig};
///
/// let config = SasRecConfig { max_len: 5, hidden: 8, ..SasRecConfig::default() };
/// let serving = SasRec::new(&config, 50).unwrap().serving().unwrap();
/// let cache = RankCache::new(100, 10);
/// let ranked = cache.get(&serving, &[4, 9]);
/// let best = ranked.top_accepted(&serving, 3, &mut |i| i % 2 == 0);
/// assert_eq!(best, serving.top_accepted(&[4, 9], 3, &mut |i| i % 2 == 0));
/// assert!(std::sync::Arc::ptr_eq(&ranked, &cache.get(&serving, &[0, 4, 9])));
/// ```
pub struct RankCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    depth: usize,
}

impl std::fmt::Debug for RankCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankCache")
            .field("capacity", &(self.per_shard * self.shards.len()))
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

impl RankCache {
    /// A cache of about `capacity` entries (rounded up to a multiple of its shards; 0 keeps
    /// nothing), each holding a sequence's `depth` best items.
    pub fn new(capacity: usize, depth: usize) -> RankCache {
        RankCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            depth,
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry of `sequence` under `serving`: the kept one, or one computed now (outside
    /// the lock) and kept. Use one cache per [`Serving`].
    pub fn get(&self, serving: &Serving, sequence: &[u32]) -> Arc<Ranked> {
        if self.per_shard == 0 {
            return Arc::new(serving.ranked(sequence, self.depth));
        }
        let key = serving.reading(sequence);
        let shard = &self.shards[shard_of(&key)];
        if let Some(hit) = shard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .get(key.as_slice())
            && hit.serving == serving.id
        {
            return Arc::clone(hit);
        }
        let ranked = Arc::new(serving.ranked(&key, self.depth));
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let key: Box<[u32]> = key.into();
        if shard.map.insert(key.clone(), Arc::clone(&ranked)).is_none() {
            shard.order.push_back(key);
            while shard.map.len() > self.per_shard {
                let Some(old) = shard.order.pop_front() else {
                    break;
                };
                shard.map.remove(&old);
            }
        }
        ranked
    }
}

/// The shard of a reading (each item mixed in by multiply and rotate, then a splitmix64
/// finish so every bit of the result depends on every item).
fn shard_of(key: &[u32]) -> usize {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for &i in key {
        h = (h ^ u64::from(i))
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            .rotate_left(27);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    #[allow(clippy::cast_possible_truncation)]
    let at = (h % SHARDS as u64) as usize;
    at
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::sasrec::{SasRec, SasRecConfig};

    fn serving(n: usize) -> Serving {
        let config = SasRecConfig {
            max_len: 6,
            hidden: 16,
            heads: 2,
            cosine_scale: 8.0,
            seed: 9,
            ..SasRecConfig::default()
        };
        SasRec::new(&config, n)
            .expect("model")
            .serving()
            .expect("serving")
    }

    #[test]
    fn cached_answers_are_the_uncached_ones_bit_for_bit() {
        let n = 400;
        let s = serving(n);
        let cache = RankCache::new(64, 40);
        let mut rng = StdRng::seed_from_u64(3);
        for case in 0..60 {
            let len = rng.random_range(0..9);
            let seq: Vec<u32> = (0..len)
                .map(|_| rng.random_range(0..=n as u32 + 3))
                .collect();
            // Accept everything, most, or few: a walk that ends inside the kept items, one that
            // runs past them and falls back, and a `k` larger than the depth.
            let modulus = [1u32, 2, 17][case % 3];
            let accept = |i: u32| i.is_multiple_of(modulus);
            let ranked = cache.get(&s, &seq);
            assert_eq!(ranked.depth(), 40);
            for k in [0, 1, 20, 40, 55] {
                let want = s.top_accepted(&seq, k, &mut |i| accept(i));
                let got = ranked.top_accepted(&s, k, &mut |i| accept(i));
                assert_eq!(got, want, "case {case}, k {k}");
            }
            let candidates: Vec<u32> = (0..30)
                .map(|_| rng.random_range(0..=n as u32 + 2))
                .collect();
            let (mut want, mut got) = (Vec::new(), Vec::new());
            s.score_candidates_into(&seq, &candidates, &mut want);
            ranked.score_candidates_into(&s, &candidates, &mut got);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "case {case}"
            );
        }
    }

    #[test]
    fn a_small_catalog_is_kept_whole_and_answers_any_k() {
        let s = serving(12);
        let ranked = s.ranked(&[3, 5], 50);
        assert_eq!(ranked.depth(), 12);
        let want = s.top_accepted(&[3, 5], 30, &mut |i| i != 4);
        assert_eq!(want.len(), 11);
        assert_eq!(ranked.top_accepted(&s, 30, &mut |i| i != 4), want);
    }

    #[test]
    fn entries_are_keyed_by_the_models_reading_and_bounded() {
        let s = serving(100);
        let cache = RankCache::new(SHARDS * 2, 10);
        // Padding and unknown indices are not read, nor items past the last `max_len`.
        let a = cache.get(&s, &[1, 2, 3, 4, 5, 6, 7]);
        let b = cache.get(&s, &[0, 2, 3, 500, 4, 5, 6, 7]);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);
        for i in 1..=100u32 {
            cache.get(&s, &[i, i]);
        }
        assert!(cache.len() <= SHARDS * 2, "{}", cache.len());
        assert!(cache.len() >= SHARDS, "{}", cache.len());
        // The newest is still there; nothing is kept with no capacity.
        let newest = cache.get(&s, &[100, 100]);
        assert!(Arc::ptr_eq(&newest, &cache.get(&s, &[100, 100])));
        let none = RankCache::new(0, 10);
        none.get(&s, &[1]);
        assert!(none.is_empty());
    }
}
