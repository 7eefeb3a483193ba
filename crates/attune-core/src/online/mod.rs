//! Recommendation sources that learn online: every accepted event updates them, so what a visitor
//! did a second ago already counts.
//!
//! - [`Trending`]: time-decayed popularity per item (half-life configurable).
//! - [`Cooccurrence`]: item-to-item co-occurrence within sessions, co-view, co-cart and
//!   co-purchase kept apart ([`CoKind`]).
//! - [`SessionKnn`]: VMIS-kNN session-based nearest neighbours (Kersbergen et al., SIGMOD 2022),
//!   the variant of V-SKNN (Ludewig & Jannach) that reads its neighbours from an index of the
//!   most recent sessions per item.
//!
//! All three are plain data structures: no I/O, no clock (every update and query takes the time),
//! no locks (the engine wraps each in one), no randomness. They share these rules:
//!
//! - **Bounded memory.** Each has caps (items tracked, neighbours per item, sessions tracked,
//!   items per session) and evicts when full, one entry at a time so that no update pauses:
//!   trending drops its lowest score, co-occurrence its least recently touched item (a clock
//!   approximation) and weakest neighbour, session kNN the session that started first and a
//!   session's oldest item. Each type's docs give the worst-case bytes per item and per session.
//! - **Snapshots.** Each is `Serialize`/`Deserialize` (serde) as a whole, in a layout that names
//!   items by id (not by internal slot), so the engine can write it to disk and load it at restart.
//!   Loading validates the snapshot and rebuilds the internal indexes; a loaded structure answers
//!   exactly as the saved one did.
//! - **Seeding.** Each has a bulk load for what `attune train` produces offline (popularity counts,
//!   co-occurrence counts, training sessions).
//! - **Queries** take an `accept` predicate ([`Accept`]) and keep going down the ranking until
//!   they have `n` accepted items or run out, so the caller can drop items (already in the
//!   session, blocked, out of stock) without getting fewer than asked when more exist.
//! - **Scores** are finite and `>= 0`, best first; ties are broken by item id, ascending, so
//!   answers do not depend on insertion order or hash seeds.
//!
//! Decay uses one trick throughout: a weight `w` observed at time `t` is stored as
//! `w · 2^((t − origin) / half_life)`. All stored values share the same scale, so their order does
//! not change as time passes and no per-item timestamp is needed; the decayed value at `now` is
//! the stored value times `2^((origin − now) / half_life)`. When new events get far enough past the
//! origin that stored values could overflow, the origin moves forward by a whole number of
//! half-lives and every stored value is multiplied by the matching power of two (exact, so the
//! order is kept).

pub mod cooccurrence;
pub mod session_knn;
pub mod trending;

pub use cooccurrence::{CoKind, Cooccurrence, CooccurrenceConfig};
pub use session_knn::{SessionKnn, SessionKnnConfig, session_key};
pub use trending::{Trending, TrendingConfig};

use serde::{Deserialize, Serialize};

use crate::id::ItemId;
use crate::time::Timestamp;

/// The filter queries take: `true` keeps an item, `false` drops it (and the query looks further
/// down its ranking for a replacement).
pub type Accept<'a> = &'a dyn Fn(&ItemId) -> bool;

/// What [`Trending::share_ids`] and its siblings take: an item id's copy to keep instead (an
/// equal id in another allocation, such as the catalog's), or `None` to keep the one held.
pub type Canonical<'a> = &'a dyn Fn(&ItemId) -> Option<ItemId>;

/// The copy of `id` to keep: `canonical`'s when it is equal, else `id`'s own.
fn shared(id: ItemId, canonical: Canonical<'_>) -> ItemId {
    match canonical(&id) {
        Some(c) if c == id => c,
        _ => id,
    }
}

/// [`shared`] over an id → slot index whose slots also name their id (`slot_id`): both end up
/// holding `canonical`'s copy.
fn share_index<S>(
    index: &mut rustc_hash::FxHashMap<ItemId, u32>,
    slots: &mut [S],
    slot_id: impl Fn(&mut S) -> &mut Option<ItemId>,
    canonical: Canonical<'_>,
) {
    *index = std::mem::take(index)
        .into_iter()
        .map(|(id, slot)| {
            let id = shared(id, canonical);
            *slot_id(&mut slots[slot as usize]) = Some(id.clone());
            (id, slot)
        })
        .collect();
}

/// An item id as a snapshot is read: borrowed from the input where it can be (postcard always,
/// JSON without escapes), so that reading a snapshot does not allocate an id per mention
/// (neighbour lists and sessions name the same items over and over: a DIGINETICA seed makes
/// millions of them, and their allocations, freed among the ones kept, left the process a
/// hundred megabytes larger); the structure then keeps one id per item.
#[derive(Deserialize)]
#[serde(transparent)]
struct SnapshotId<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

impl SnapshotId<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

/// The time-invariant decay scale described in the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Scale {
    /// The half-life in milliseconds; `None` for no decay (the factor is always 1).
    half_life_ms: Option<f64>,
    /// Milliseconds since the epoch at which a stored value equals its decayed value.
    origin_ms: f64,
}

impl Scale {
    /// A scale with `half_life_secs` (none for no decay), its origin at the epoch (the first
    /// observation rebases it).
    pub(crate) fn new(half_life_secs: Option<f64>) -> Self {
        Scale {
            half_life_ms: half_life_secs.map(|h| h * 1000.0),
            origin_ms: 0.0,
        }
    }

    /// `(t − origin) / half_life` (0 without decay).
    fn exponent(&self, at: Timestamp) -> f64 {
        match self.half_life_ms {
            Some(h) => (at.as_millis() as f64 - self.origin_ms) / h,
            None => 0.0,
        }
    }

    /// The factor a weight observed at `at` is stored with: `2^((at − origin) / half_life)`.
    pub(crate) fn factor(&self, at: Timestamp) -> f64 {
        self.exponent(at).exp2()
    }

    /// The factor that turns a stored value into its decayed value at `now`:
    /// `2^((origin − now) / half_life)`.
    pub(crate) fn decay_to(&self, now: Timestamp) -> f64 {
        (-self.exponent(now)).exp2()
    }

    /// If `at` is more than `limit` half-lives past the origin, moves the origin forward by whole
    /// half-lives to just before `at` and returns the factor (an exact power of two, `< 1`) that
    /// every stored value must be multiplied by.
    pub(crate) fn rebase(&mut self, at: Timestamp, limit: f64) -> Option<f64> {
        let h = self.half_life_ms?;
        let e = self.exponent(at);
        if e <= limit {
            return None;
        }
        let k = e.floor();
        self.origin_ms += k * h;
        // 2^-k for an integer k: exact, or 0 once it underflows.
        Some((-k).exp2())
    }

    /// Checks a loaded scale against the configured half-life.
    pub(crate) fn check(&self, half_life_secs: Option<f64>) -> bool {
        self.half_life_ms == half_life_secs.map(|h| h * 1000.0) && self.origin_ms.is_finite()
    }
}

/// A score made safe to return: finite and `>= 0` (NaN and negatives become 0, infinity the
/// largest `f32`).
pub(crate) fn clean(score: f64) -> f32 {
    if score.is_nan() || score <= 0.0 {
        0.0
    } else {
        (score.min(f64::from(f32::MAX))) as f32
    }
}

/// Best first by score, ties by id ascending.
fn by_rank(a: &(&ItemId, f32), b: &(&ItemId, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0))
}

/// The `n` best accepted candidates, best first, ties by id. Sorts only as much of the list as
/// it needs: a first chunk of about `2n`, then doubling chunks while `accept` drops too many.
pub(crate) fn top_accepted(
    mut candidates: Vec<(&ItemId, f32)>,
    n: usize,
    accept: Accept<'_>,
) -> Vec<(ItemId, f32)> {
    let mut out = Vec::with_capacity(n.min(candidates.len()));
    let mut start = 0;
    let mut chunk = n.saturating_mul(2).max(16);
    while out.len() < n && start < candidates.len() {
        let rest = &mut candidates[start..];
        let take = chunk.min(rest.len());
        if take < rest.len() {
            rest.select_nth_unstable_by(take - 1, by_rank);
        }
        let head = &mut rest[..take];
        head.sort_unstable_by(by_rank);
        for &(id, score) in head.iter() {
            if accept(id) {
                out.push((id.clone(), score));
                if out.len() == n {
                    break;
                }
            }
        }
        start += take;
        chunk = chunk.saturating_mul(2);
    }
    out
}

/// Grows `v` by one slot without letting its capacity pass `cap` (a plain push may double it).
pub(crate) fn push_capped<T>(v: &mut Vec<T>, x: T, cap: usize) {
    if v.len() == v.capacity() {
        let want = v.len().max(4).min(cap.saturating_sub(v.len())).max(1);
        v.reserve_exact(want);
    }
    v.push(x);
}

#[cfg(test)]
mod tests;
