//! [`Trending`]: time-decayed popularity per item.
//!
//! An item's score at `now` is `Σ wₖ · 2^(−(now − tₖ) / half_life)` over the weights `wₖ` it was
//! observed with at times `tₖ`. Scores are stored in the scaled form of the
//! [module docs](super) (`Σ wₖ · 2^((tₖ − origin) / half_life)`), which all decay at the same
//! rate, so their order does not depend on `now`: an ordered index answers [`Trending::top`] by
//! reading its first entries, without touching the rest of the catalog.
//!
//! # Memory
//! One entry per tracked item, at most [`TrendingConfig::max_items`]: a hash-map entry (id and
//! score, 16 bytes, at most 8/7 overhead plus a control byte: about 20 bytes) and an entry of the
//! ordered index (score and id, 16 bytes, in B-tree nodes at least half full: at most about 40
//! bytes with node overhead), so at most about **64 bytes per item**, plus the id's own allocation
//! (about 56 bytes and its length) when nothing else (the catalog) holds it. When a new item
//! arrives and the table is full, the item with the lowest score is dropped.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{Accept, Canonical, Scale, clean, shared};
use crate::error::{Error, Result};
use crate::id::ItemId;
use crate::time::Timestamp;

/// Stored values are rebased once events are this many half-lives past the origin (`2^256`, far
/// below `f64`'s range even times a large weight sum).
const REBASE_LIMIT: f64 = 256.0;

/// The largest weight one observation adds (larger ones are clamped).
pub const MAX_WEIGHT: f32 = 1e9;

/// Settings of [`Trending`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrendingConfig {
    /// Time for an observation's weight to halve, in seconds (finite, `> 0`).
    pub half_life_secs: f64,
    /// The most items tracked (`>= 1`); past it the lowest-scoring item makes way for a new one
    /// that scores at least as much.
    pub max_items: usize,
}

impl Default for TrendingConfig {
    fn default() -> Self {
        TrendingConfig {
            half_life_secs: 6.0 * 3600.0,
            max_items: 200_000,
        }
    }
}

impl TrendingConfig {
    /// Checks the ranges: a finite positive half-life, at least one item.
    pub fn validate(&self) -> Result<()> {
        if !(self.half_life_secs.is_finite() && self.half_life_secs > 0.0) {
            return Err(Error::invalid(
                "trending.half_life_secs",
                "must be a finite number > 0",
            ));
        }
        if self.max_items == 0 {
            return Err(Error::invalid("trending.max_items", "must be at least 1"));
        }
        Ok(())
    }
}

/// An entry of the ordered index: higher scores first, ties by id ascending.
#[derive(Debug, Clone, PartialEq)]
struct Ranked {
    score: f64,
    id: ItemId,
}

impl Eq for Ranked {}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Time-decayed popularity per item. See the [module docs](self).
///
/// ```
/// use attune_core::online::{Trending, TrendingConfig};
/// use attune_core::{ItemId, Timestamp};
///
/// let config = TrendingConfig { half_life_secs: 3600.0, max_items: 1000 };
/// let mut trending = Trending::new(config).unwrap();
/// let t0 = Timestamp::from_millis(1_700_000_000_000);
/// let (a, b) = (ItemId::new("a").unwrap(), ItemId::new("b").unwrap());
/// trending.observe(&a, 1.0, t0);
/// trending.observe(&b, 1.0, t0);
/// trending.observe(&b, 1.0, t0);
/// let hour_later = t0.plus_millis(3_600_000);
/// let top = trending.top(10, hour_later, &|_| true);
/// assert_eq!(top, vec![(b.clone(), 1.0), (a.clone(), 0.5)]);
/// // Drop what the visitor already has: the next best fills in.
/// assert_eq!(trending.top(1, hour_later, &|id| id != &b), vec![(a, 0.5)]);
/// ```
#[derive(Debug, Clone)]
pub struct Trending {
    config: TrendingConfig,
    scale: Scale,
    scores: FxHashMap<ItemId, f64>,
    order: BTreeSet<Ranked>,
}

impl Trending {
    /// An empty table.
    pub fn new(config: TrendingConfig) -> Result<Self> {
        config.validate()?;
        Ok(Trending {
            scale: Scale::new(Some(config.half_life_secs)),
            config,
            scores: FxHashMap::default(),
            order: BTreeSet::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &TrendingConfig {
        &self.config
    }

    /// Items tracked.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether no item is tracked.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Adds `weight` to `item` at time `at` (any time: older events count less, by their age).
    /// A weight that is not finite or not `> 0` is ignored; one above [`MAX_WEIGHT`] is clamped.
    pub fn observe(&mut self, item: &ItemId, weight: f32, at: Timestamp) {
        if !(weight.is_finite() && weight > 0.0) {
            return;
        }
        if let Some(k) = self.scale.rebase(at, REBASE_LIMIT) {
            self.rescale(k);
        }
        let add = f64::from(weight.min(MAX_WEIGHT)) * self.scale.factor(at);
        match self.scores.get_mut(item) {
            Some(score) => {
                let old = *score;
                *score = (old + add).min(f64::MAX);
                let new = *score;
                if new != old {
                    // Moves the entry: take it out (reusing its id) and put it back.
                    let id = self
                        .order
                        .take(&Ranked {
                            score: old,
                            id: item.clone(),
                        })
                        .map_or_else(|| item.clone(), |r| r.id);
                    self.order.insert(Ranked { score: new, id });
                }
            }
            None => {
                if self.scores.len() >= self.config.max_items {
                    // Full: the new item takes the weakest one's place only if it is not weaker
                    // (as time passes, new weights weigh more on the scale and get in).
                    match self.order.last() {
                        Some(last) if last.score <= add => {
                            self.scores.remove(&last.id);
                            self.order.pop_last();
                        }
                        _ => return,
                    }
                }
                self.scores.insert(item.clone(), add);
                self.order.insert(Ranked {
                    score: add,
                    id: item.clone(),
                });
            }
        }
    }

    /// Bulk load: adds each `(item, weight)` as observed at `at` (e.g. the popularity counts of
    /// `attune train`, all dated at the end of the training data).
    pub fn seed_counts<'a>(
        &mut self,
        counts: impl IntoIterator<Item = (&'a ItemId, f32)>,
        at: Timestamp,
    ) {
        for (item, weight) in counts {
            self.observe(item, weight, at);
        }
    }

    /// `item`'s decayed weight at `now` (0 for an item not tracked).
    pub fn score(&self, item: &ItemId, now: Timestamp) -> f32 {
        self.scores
            .get(item)
            .map_or(0.0, |&s| clean(s * self.scale.decay_to(now)))
    }

    /// Keeps, for each item id held, the equal copy `canonical` gives (the catalog's, say), so
    /// that lookups by that copy compare pointers, not strings, and the strings are held once.
    /// Changes no answer.
    pub fn share_ids(&mut self, canonical: Canonical<'_>) {
        self.scores = std::mem::take(&mut self.scores)
            .into_iter()
            .map(|(id, s)| (shared(id, canonical), s))
            .collect();
        self.order = std::mem::take(&mut self.order)
            .into_iter()
            .map(|r| Ranked {
                score: r.score,
                id: shared(r.id, canonical),
            })
            .collect();
    }

    /// [`Trending::score`] of each item, in order (the decay computed once).
    pub fn scores(&self, items: &[ItemId], now: Timestamp) -> Vec<f32> {
        let decay = self.scale.decay_to(now);
        items
            .iter()
            .map(|item| self.scores.get(item).map_or(0.0, |&s| clean(s * decay)))
            .collect()
    }

    /// The `n` highest-scoring accepted items with their decayed weights at `now`, best first,
    /// ties by id. Reads the ordered index from the top: costs `O(log items)` plus one step per
    /// item returned or rejected.
    pub fn top(&self, n: usize, now: Timestamp, accept: Accept<'_>) -> Vec<(ItemId, f32)> {
        let decay = self.scale.decay_to(now);
        self.order
            .iter()
            .filter(|r| accept(&r.id))
            .take(n)
            .map(|r| (r.id.clone(), clean(r.score * decay)))
            .collect()
    }

    /// Multiplies every stored value by `k` (a power of two: the order is kept, up to ties of
    /// values that underflow to 0, which the rebuilt index orders by id).
    fn rescale(&mut self, k: f64) {
        for score in self.scores.values_mut() {
            *score *= k;
        }
        self.order = self
            .scores
            .iter()
            .map(|(id, &score)| Ranked {
                score,
                id: id.clone(),
            })
            .collect();
    }
}

/// The stored form of [`Trending`]: settings, scale and items best first.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    config: &'a TrendingConfig,
    scale: &'a Scale,
    items: Vec<(&'a ItemId, f64)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    config: TrendingConfig,
    scale: Scale,
    items: Vec<(ItemId, f64)>,
}

impl Serialize for Trending {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        SnapshotRef {
            config: &self.config,
            scale: &self.scale,
            items: self.order.iter().map(|r| (&r.id, r.score)).collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Trending {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let snap = Snapshot::deserialize(d)?;
        let mut t = Trending::new(snap.config).map_err(D::Error::custom)?;
        if !snap.scale.check(Some(t.config.half_life_secs)) {
            return Err(D::Error::custom(
                "trending: the scale does not match the half-life",
            ));
        }
        t.scale = snap.scale;
        if snap.items.len() > t.config.max_items {
            return Err(D::Error::custom("trending: more items than max_items"));
        }
        for (id, score) in snap.items {
            if !(score.is_finite() && score >= 0.0) {
                return Err(D::Error::custom(format!("trending: bad score for {id}")));
            }
            if t.scores.insert(id.clone(), score).is_some() {
                return Err(D::Error::custom(format!("trending: {id} appears twice")));
            }
            t.order.insert(Ranked { score, id });
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000;

    fn id(s: &str) -> ItemId {
        ItemId::new(s).unwrap()
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + ms)
    }

    fn hourly(max_items: usize) -> Trending {
        Trending::new(TrendingConfig {
            half_life_secs: 3600.0,
            max_items,
        })
        .unwrap()
    }

    fn all(_: &ItemId) -> bool {
        true
    }

    #[test]
    fn scores_are_decayed_weights() {
        let mut t = hourly(10);
        t.observe(&id("a"), 4.0, at(0));
        t.observe(&id("a"), 2.0, at(HOUR));
        t.observe(&id("b"), 3.0, at(2 * HOUR));
        // At 2h: a = 4/4 + 2/2 = 2, b = 3.
        assert_eq!(t.score(&id("a"), at(2 * HOUR)), 2.0);
        assert_eq!(t.score(&id("b"), at(2 * HOUR)), 3.0);
        assert_eq!(
            t.top(5, at(2 * HOUR), &all),
            vec![(id("b"), 3.0), (id("a"), 2.0)]
        );
        // An hour later both halve; the order does not depend on now.
        assert_eq!(
            t.top(5, at(3 * HOUR), &all),
            vec![(id("b"), 1.5), (id("a"), 1.0)]
        );
        assert_eq!(t.score(&id("zzz"), at(0)), 0.0);
        // An event older than the rest counts by its age.
        t.observe(&id("c"), 8.0, at(-HOUR));
        assert_eq!(t.score(&id("c"), at(2 * HOUR)), 1.0);
    }

    #[test]
    fn bad_weights_are_ignored_and_huge_ones_clamped() {
        let mut t = hourly(10);
        for w in [f32::NAN, f32::NEG_INFINITY, -1.0, 0.0, f32::INFINITY] {
            t.observe(&id("a"), w, at(0));
        }
        assert!(t.is_empty());
        t.observe(&id("a"), f32::MAX, at(0));
        assert_eq!(t.score(&id("a"), at(0)), MAX_WEIGHT);
    }

    #[test]
    fn ties_are_broken_by_id() {
        let mut t = hourly(10);
        for name in ["c", "a", "b"] {
            t.observe(&id(name), 1.0, at(0));
        }
        let ids: Vec<_> = t.top(3, at(0), &all).into_iter().map(|(i, _)| i).collect();
        assert_eq!(ids, vec![id("a"), id("b"), id("c")]);
    }

    #[test]
    fn exclusion_still_returns_n() {
        let mut t = hourly(100);
        for i in 0..20 {
            t.observe(&id(&format!("i{i:02}")), 20.0 - i as f32, at(0));
        }
        let even = |x: &ItemId| x.as_str().ends_with(['0', '2', '4', '6', '8']);
        let got = t.top(5, at(0), &even);
        let ids: Vec<_> = got.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["i00", "i02", "i04", "i06", "i08"]);
        // Fewer than asked only when fewer exist.
        assert_eq!(t.top(50, at(0), &even).len(), 10);
        assert!(t.top(0, at(0), &all).is_empty());
    }

    #[test]
    fn the_cap_holds_and_the_weakest_goes() {
        let mut t = hourly(50);
        for i in 0..5000 {
            let w = if i % 125 == 0 { 1000.0 } else { 1.0 };
            t.observe(&id(&format!("i{i}")), w, at(i));
            assert!(t.len() <= 50);
            assert_eq!(t.order.len(), t.scores.len());
        }
        assert_eq!(t.len(), 50);
        // The 40 heavy items survive the flood of light ones.
        let top: Vec<_> = t.top(50, at(5000), &all);
        for i in (0..5000).step_by(125) {
            assert!(top.iter().any(|(x, _)| x.as_str() == format!("i{i}")));
        }
        // A weaker newcomer stays out of a full table; one as strong gets in, in the weakest's
        // place.
        let weakest = top[49].clone();
        t.observe(&id("weak"), weakest.1 / 2.0, at(5000));
        assert_eq!(t.score(&id("weak"), at(5000)), 0.0);
        t.observe(&id("strong"), 2000.0, at(5000));
        assert!(t.score(&id("strong"), at(5000)) > 0.0);
        assert_eq!(t.score(&weakest.0, at(5000)), 0.0);
        assert_eq!(t.len(), 50);
        // Later, decay lets a light newcomer in.
        t.observe(&id("later"), 1.0, at(30 * HOUR));
        assert!(t.score(&id("later"), at(30 * HOUR)) > 0.0);
    }

    #[test]
    fn rebasing_keeps_scores_and_order() {
        let mut t = hourly(100);
        t.observe(&id("a"), 3.0, at(0));
        t.observe(&id("b"), 1.0, at(0));
        // 300 half-lives later: past the rebase limit, a and b underflow to nothing.
        let late = 300 * HOUR;
        t.observe(&id("c"), 3.0, at(late));
        t.observe(&id("d"), 1.0, at(late + HOUR));
        assert_eq!(t.score(&id("c"), at(late + HOUR)), 1.5);
        assert_eq!(t.score(&id("d"), at(late + HOUR)), 1.0);
        let ids: Vec<_> = t
            .top(4, at(late), &all)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ids, vec![id("c"), id("d"), id("a"), id("b")]);
        assert!(t.scale.origin_ms > 0.0);
    }

    #[test]
    fn snapshot_round_trip_answers_the_same() {
        let mut t = hourly(100);
        for i in 0..60 {
            t.observe(
                &id(&format!("i{}", i % 17)),
                1.0 + (i % 5) as f32,
                at(i * 60_000),
            );
        }
        let json = serde_json::to_string(&t).unwrap();
        let back: Trending = serde_json::from_str(&json).unwrap();
        for now in [at(0), at(HOUR), at(10 * HOUR)] {
            assert_eq!(back.top(100, now, &all), t.top(100, now, &all));
        }
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        // It keeps learning the same way.
        let (mut a, mut b) = (t, back);
        a.observe(&id("new"), 2.0, at(2 * HOUR));
        b.observe(&id("new"), 2.0, at(2 * HOUR));
        assert_eq!(
            a.top(100, at(2 * HOUR), &all),
            b.top(100, at(2 * HOUR), &all)
        );
    }

    #[test]
    fn bad_snapshots_and_configs_are_rejected() {
        assert!(
            Trending::new(TrendingConfig {
                half_life_secs: 0.0,
                max_items: 1
            })
            .is_err()
        );
        assert!(
            Trending::new(TrendingConfig {
                half_life_secs: f64::NAN,
                max_items: 1
            })
            .is_err()
        );
        assert!(
            Trending::new(TrendingConfig {
                half_life_secs: 1.0,
                max_items: 0
            })
            .is_err()
        );
        let mut t = hourly(2);
        t.observe(&id("a"), 1.0, at(0));
        let good = serde_json::to_value(&t).unwrap();
        let mut twice = good.clone();
        twice["items"] = serde_json::json!([["a", 1.0], ["a", 2.0]]);
        assert!(serde_json::from_value::<Trending>(twice).is_err());
        let mut negative = good.clone();
        negative["items"] = serde_json::json!([["a", -1.0]]);
        assert!(serde_json::from_value::<Trending>(negative).is_err());
        let mut too_many = good;
        too_many["items"] = serde_json::json!([["a", 1.0], ["b", 1.0], ["c", 1.0]]);
        assert!(serde_json::from_value::<Trending>(too_many).is_err());
    }

    #[test]
    fn sizes_are_as_documented() {
        assert_eq!(std::mem::size_of::<Ranked>(), 16);
        assert_eq!(std::mem::size_of::<(ItemId, f64)>(), 16);
    }

    proptest! {
        #[test]
        fn scores_stay_finite_ordered_and_capped(
            events in prop::collection::vec(
                (0usize..30, prop::num::f32::ANY, -1_000i64..1_000),
                1..200,
            ),
            half_life in 0.001f64..1e7,
            now in -2_000i64..2_000,
        ) {
            let config = TrendingConfig { half_life_secs: half_life, max_items: 10 };
            let mut t = Trending::new(config).unwrap();
            for (item, w, hours) in events {
                t.observe(&id(&format!("i{item}")), w, at(hours * HOUR));
            }
            prop_assert!(t.len() <= 10);
            let top = t.top(20, at(now * HOUR), &all);
            prop_assert_eq!(top.len(), t.len());
            // Best first (ties in the stored scores go by id; decayed to f32, equal scores may
            // come from stored ones a hair apart).
            for w in top.windows(2) {
                prop_assert!(w[0].1 >= w[1].1);
            }
            for (item, s) in &top {
                prop_assert!(s.is_finite() && *s >= 0.0);
                prop_assert_eq!(*s, t.score(item, at(now * HOUR)));
            }
        }

        #[test]
        fn decay_is_monotone(
            w in 0.001f32..1e6,
            t1 in 0i64..1_000_000_000,
            dt in 0i64..1_000_000_000,
        ) {
            let mut t = hourly(4);
            t.observe(&id("a"), w, at(0));
            prop_assert!(t.score(&id("a"), at(t1 + dt)) <= t.score(&id("a"), at(t1)));
        }
    }
}
