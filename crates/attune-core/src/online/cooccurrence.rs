//! [`Cooccurrence`]: item-to-item co-occurrence within sessions, one graph per [`CoKind`].
//!
//! # Counting
//! [`Cooccurrence::observe`] is called when a session does something of a kind (views or clicks an
//! item, adds it to the cart, buys it) with that session's earlier items of the same kind, most
//! recent last. The item's popularity `pop(i)` grows by 1, and for each of the last
//! [`CooccurrenceConfig::window`] distinct earlier items `e` at distance `d` (1 for the item just
//! before) the pair count grows by `1/d` both ways: `c(i, e) += 1/d` and `c(e, i) += 1/d`. Closer
//! pairs count more, as in sequential rules (Ludewig & Jannach).
//!
//! Counts and popularities decay with [`CooccurrenceConfig::half_life_secs`] (or not, with
//! `None`), kept in the scaled form of the [module docs](super). Every similarity below is a ratio
//! of values on one scale, so decay changes what the recent past weighs without any query
//! having to know `now`. Decay also lets new pairs into full neighbour lists as old counts fade.
//! The default half-life is 90 days: on DIGINETICA's five months of sessions (replayed about a
//! minute apart, close to the real rate) co-view next-item hits at 20 were 41.9% with 90 days,
//! 41.6% with 30 days or none, 39.8% with 14 and 37.4% with 7: what co-occurs stays true for
//! months, and a short half-life throws that evidence away.
//!
//! # Similarity
//! `sim(i → j) = c(i, j) / (pop(i)^(1−β) · pop(j)^β)` with `β` =
//! [`CooccurrenceConfig::popularity_exponent`]. `β = 0` is the conditional frequency `c/pop(i)`
//! (the chance of seeing `j` near `i`; popular `j` rank high), `β = 0.5` the cosine-like
//! `c/√(pop(i)·pop(j))` (popular `j` pay for their popularity). The default `β = 0.2` sits near
//! the first: on DIGINETICA (all training sessions without decay, the first 20,000 test prefixes,
//! the last five items as anchors weighing 1, 1/2, 1/4, …) the next item was in the top 20 for
//! 41.5–41.7% of the prefixes at `β` from 0 to 0.25 (0.15 best by a hair), 41.0% at 0.35 and
//! 40.0% at the cosine's 0.5: the item that comes next is often a popular one. The window
//! mattered less (5 or 10 within 0.1 points; 3 about half a point worse), so the default is the
//! cheaper 5. The `pop(i)` factor matters only across the anchors of
//! [`Cooccurrence::recommend`], where it keeps a popular anchor from drowning the others.
//!
//! # Memory
//! Per kind, at most [`CooccurrenceConfig::max_items`] items, each with at most
//! [`CooccurrenceConfig::max_neighbors`] neighbours. An item costs a node (id, popularity,
//! generation, mark, two column headers of its neighbour list: 72 bytes), a hash-map entry
//! (about 20 bytes) and 12 bytes per neighbour (slot and generation, count; the list never grows
//! past its cap), so at most **about `92 + 12 · max_neighbors` bytes per item per kind** (1,292
//! bytes at the default 100 neighbours), plus the id's allocation when nothing else holds it.
//!
//! A full list drops its weakest neighbour for a new one at least as strong (of equal ones, the
//! earliest added). A full table evicts one item per new one, chosen by a clock (second chance):
//! the hand sweeps the slots, spares an item touched since it last passed (clearing its mark)
//! and evicts the first untouched one, which approximates least-recently-used in O(1) amortised
//! time without a pause. Entries in other lists that name the evicted item go stale (the slot's
//! generation moves on): queries skip them, and they fade and get dropped like weak ones. A
//! snapshot leaves stale entries out, so a restored graph answers exactly as the saved one but
//! may later evict a little differently (its lists have the room the stale entries took).

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{Accept, Canonical, Scale, SnapshotId, clean, push_capped, share_index, top_accepted};
use crate::error::{Error, Result};
use crate::id::ItemId;
use crate::time::Timestamp;

/// Stored values are rebased once events are this many half-lives past the origin (`2^32`: the
/// counts are `f32`).
const REBASE_LIMIT: f64 = 32.0;

/// The largest [`CooccurrenceConfig::window`].
pub const MAX_WINDOW: usize = 32;

/// The largest count or popularity one seeding call adds (larger ones are clamped).
pub const MAX_SEED: f32 = 1e9;

/// Which behaviour the co-occurrence is about. The three graphs are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoKind {
    /// Items viewed or clicked in the same session.
    View,
    /// Items added to the cart in the same session.
    Cart,
    /// Items bought in the same session.
    Purchase,
}

impl CoKind {
    /// All kinds, in storage order.
    pub const ALL: [CoKind; 3] = [CoKind::View, CoKind::Cart, CoKind::Purchase];

    const fn index(self) -> usize {
        self as usize
    }
}

/// Settings of [`Cooccurrence`] (shared by the three kinds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CooccurrenceConfig {
    /// Time for a count to halve, in seconds (`None`: counts never decay).
    pub half_life_secs: Option<f64>,
    /// The most items tracked per kind (at least twice `1 + max(max_neighbors, window)`).
    pub max_items: usize,
    /// The most neighbours kept per item and kind (`>= 1`).
    pub max_neighbors: usize,
    /// How many of the most recent earlier items pair with a new one (1 to [`MAX_WINDOW`]).
    pub window: usize,
    /// `β` of the similarity `c(i, j) / (pop(i)^(1−β) · pop(j)^β)`, in `[0, 1]`.
    pub popularity_exponent: f32,
}

impl Default for CooccurrenceConfig {
    fn default() -> Self {
        CooccurrenceConfig {
            half_life_secs: Some(90.0 * 24.0 * 3600.0),
            max_items: 200_000,
            max_neighbors: 100,
            window: 5,
            popularity_exponent: 0.2,
        }
    }
}

impl CooccurrenceConfig {
    /// Checks the ranges given on each field.
    pub fn validate(&self) -> Result<()> {
        if let Some(h) = self.half_life_secs
            && !(h.is_finite() && h > 0.0)
        {
            return Err(Error::invalid(
                "cooccurrence.half_life_secs",
                "must be a finite number > 0",
            ));
        }
        if self.max_items < 2 * (1 + self.max_neighbors.max(self.window)) {
            return Err(Error::invalid(
                "cooccurrence.max_items",
                "must be at least twice 1 + max(max_neighbors, window)",
            ));
        }
        if self.max_neighbors == 0 || self.max_neighbors > u32::MAX as usize {
            return Err(Error::invalid(
                "cooccurrence.max_neighbors",
                "must be at least 1",
            ));
        }
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return Err(Error::invalid(
                "cooccurrence.window",
                "must be between 1 and 32",
            ));
        }
        if !(0.0..=1.0).contains(&self.popularity_exponent) {
            return Err(Error::invalid(
                "cooccurrence.popularity_exponent",
                "must be between 0 and 1",
            ));
        }
        Ok(())
    }
}

/// One item of one kind's graph.
#[derive(Debug, Clone, Default)]
struct Node {
    /// `None` while the slot is free.
    id: Option<ItemId>,
    /// Scaled popularity.
    pop: f32,
    /// Bumped each time the slot is freed: an entry naming the slot with an older generation
    /// is about an evicted item, and ignored.
    era: u32,
    /// Touched since the eviction hand last passed (the "second chance" of the clock).
    referenced: bool,
    /// A lower bound of the weakest count in `nbrs`: a full list's weakest only ever grows (a
    /// count grows, or the weakest makes way for a stronger one), so a new pair weaker than
    /// this cannot get in, and needs no scan.
    floor: f32,
    /// At most `max_neighbors`, in the order they were added.
    nbrs: Neighbors,
}

/// One neighbour in a list: the slot and generation it names, and the scaled count.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Nbr {
    slot: u32,
    era: u32,
    count: f32,
}

/// A neighbour list, its columns apart so that the two scans of an update (find a neighbour,
/// find the weakest) read plain arrays the compiler turns into vector instructions: those scans
/// are most of the cost of an update.
#[derive(Debug, Clone, Default)]
struct Neighbors {
    /// `era << 32 | slot` of each neighbour.
    keys: Vec<u64>,
    /// Scaled counts.
    counts: Vec<f32>,
}

fn key(slot: u32, era: u32) -> u64 {
    (u64::from(era) << 32) | u64::from(slot)
}

impl Neighbors {
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn iter(&self) -> impl Iterator<Item = Nbr> + '_ {
        self.keys.iter().zip(&self.counts).map(|(&k, &count)| Nbr {
            slot: k as u32,
            era: (k >> 32) as u32,
            count,
        })
    }

    /// The position of `key`, eight entries at a time (no early exit inside a group).
    fn find(&self, key: u64) -> Option<usize> {
        let mut chunks = self.keys.chunks_exact(8);
        for (c, chunk) in chunks.by_ref().enumerate() {
            if chunk.iter().fold(false, |hit, &k| hit | (k == key)) {
                return chunk.iter().position(|&k| k == key).map(|p| c * 8 + p);
            }
        }
        let done = self.keys.len() - chunks.remainder().len();
        chunks
            .remainder()
            .iter()
            .position(|&k| k == key)
            .map(|p| done + p)
    }

    /// The position of the weakest (of equal ones, the earliest added), if any.
    fn weakest(&self) -> Option<usize> {
        let mut lanes = [f32::INFINITY; 8];
        let mut chunks = self.counts.chunks_exact(8);
        for chunk in chunks.by_ref() {
            for (lane, &c) in lanes.iter_mut().zip(chunk) {
                *lane = if c < *lane { c } else { *lane };
            }
        }
        let mut min = lanes
            .iter()
            .fold(f32::INFINITY, |m, &c| if c < m { c } else { m });
        for &c in chunks.remainder() {
            min = if c < min { c } else { min };
        }
        self.counts.iter().position(|&c| c == min)
    }

    fn push(&mut self, key: u64, count: f32, cap: usize) {
        push_capped(&mut self.keys, key, cap);
        push_capped(&mut self.counts, count, cap);
    }

    fn remove(&mut self, at: usize) {
        self.keys.remove(at);
        self.counts.remove(at);
    }
}

/// One kind's graph.
#[derive(Debug, Clone)]
struct Graph {
    scale: Scale,
    index: FxHashMap<ItemId, u32>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// The eviction clock's hand: the next slot it looks at.
    hand: u32,
}

impl Graph {
    /// See [`Cooccurrence::share_ids`].
    fn share_ids(&mut self, canonical: Canonical<'_>) {
        share_index(&mut self.index, &mut self.nodes, |n| &mut n.id, canonical);
    }

    fn new(half_life_secs: Option<f64>) -> Self {
        Graph {
            scale: Scale::new(half_life_secs),
            index: FxHashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            hand: 0,
        }
    }

    fn rebase(&mut self, at: Timestamp) {
        if let Some(k) = self.scale.rebase(at, REBASE_LIMIT) {
            let k = k as f32;
            for node in &mut self.nodes {
                node.pop *= k;
                node.floor *= k;
                for c in &mut node.nbrs.counts {
                    *c *= k;
                }
            }
        }
    }

    /// Makes room for the items of `touched` that are not tracked yet. While the table is too
    /// full for them, the clock's hand sweeps the slots, giving each touched item a second
    /// chance (clearing its mark) and evicting the first untouched one: an approximation of
    /// least-recently-used that costs O(1) amortised and never pauses. References to an evicted
    /// item in other lists go stale (the slot's generation moves on) instead of being searched
    /// for. The tracked items of `touched` are marked first, so the hand spares them unless it
    /// goes all the way round; the count of new ones is taken again after each eviction, in case
    /// it took one of them.
    fn make_room(&mut self, touched: &[Option<(usize, &ItemId)>], max_items: usize) {
        if self.index.len() + touched.len() <= max_items {
            return;
        }
        for &(_, x) in touched.iter().flatten() {
            if let Some(&slot) = self.index.get(x) {
                self.touch(slot);
            }
        }
        loop {
            let new = touched
                .iter()
                .flatten()
                .filter(|(_, x)| !self.index.contains_key(*x))
                .count();
            if self.index.is_empty() || self.index.len() + new <= max_items {
                return;
            }
            self.evict_one();
        }
    }

    /// Moves the clock's hand to the next untouched item, clearing marks on the way, and
    /// evicts it.
    fn evict_one(&mut self) {
        while !self.index.is_empty() {
            let slot = self.hand;
            self.hand = (self.hand + 1) % self.nodes.len() as u32;
            let node = &mut self.nodes[slot as usize];
            if node.id.is_none() || std::mem::replace(&mut node.referenced, false) {
                continue;
            }
            if let Some(id) = node.id.take() {
                self.index.remove(&id);
            }
            node.era = node.era.wrapping_add(1);
            node.pop = 0.0;
            node.floor = 0.0;
            node.nbrs = Neighbors::default();
            self.free.push(slot);
            return;
        }
    }

    /// The slot of `item`, added if new (the caller has reserved room).
    fn slot(&mut self, item: &ItemId) -> u32 {
        if let Some(&slot) = self.index.get(item) {
            return slot;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.nodes.push(Node::default());
                (self.nodes.len() - 1) as u32
            }
        };
        let node = &mut self.nodes[slot as usize];
        node.id = Some(item.clone());
        node.referenced = true;
        self.index.insert(item.clone(), slot);
        slot
    }

    fn touch(&mut self, slot: u32) {
        self.nodes[slot as usize].referenced = true;
    }

    /// Whether an entry still names a tracked item.
    fn live(&self, e: &Nbr) -> bool {
        let node = &self.nodes[e.slot as usize];
        node.era == e.era && node.id.is_some()
    }

    /// `c(i, j) += w`. A full list makes room by dropping its weakest neighbour, if that one is
    /// not stronger than `w` (of equal ones, the earliest added), and appends the new one: a list
    /// is in the order its entries were added, which snapshots keep, so ties fall the same way
    /// after a restart.
    fn add(&mut self, i: u32, j: u32, w: f32, max_neighbors: usize) {
        let key = key(j, self.nodes[j as usize].era);
        let node = &mut self.nodes[i as usize];
        let nbrs = &mut node.nbrs;
        if let Some(k) = nbrs.find(key) {
            let count = &mut nbrs.counts[k];
            *count = (*count + w).min(f32::MAX);
            return;
        }
        if nbrs.len() >= max_neighbors {
            if w < node.floor {
                return;
            }
            let Some(k) = nbrs.weakest() else {
                return;
            };
            node.floor = nbrs.counts[k];
            if node.floor > w {
                return;
            }
            nbrs.remove(k);
        }
        nbrs.push(key, w, max_neighbors);
        node.floor = node.floor.min(w);
    }

    fn id(&self, slot: u32) -> Option<&ItemId> {
        self.nodes[slot as usize].id.as_ref()
    }

    /// `sim(i → j)` for every live neighbour `j` of `i`, times `weight`, passed to `f`.
    fn similarities(&self, i: u32, beta: f32, weight: f32, mut f: impl FnMut(u32, f32)) {
        let node = &self.nodes[i as usize];
        let pi = node.pop.max(f32::MIN_POSITIVE).powf(1.0 - beta);
        for e in node.nbrs.iter() {
            let other = &self.nodes[e.slot as usize];
            if other.era != e.era || other.id.is_none() {
                continue;
            }
            let pj = other.pop.max(f32::MIN_POSITIVE).powf(beta);
            let s = clean(f64::from(weight) * f64::from(e.count) / (f64::from(pi) * f64::from(pj)));
            if s > 0.0 {
                f(e.slot, s);
            }
        }
    }
}

/// Co-occurrence of items within sessions, per [`CoKind`]. See the [module docs](self).
///
/// ```
/// use attune_core::online::{CoKind, Cooccurrence, CooccurrenceConfig};
/// use attune_core::{ItemId, Timestamp};
///
/// let mut co = Cooccurrence::new(CooccurrenceConfig::default()).unwrap();
/// let t = Timestamp::from_millis(1_700_000_000_000);
/// let [tent, mat, stove] = ["tent", "mat", "stove"].map(|s| ItemId::new(s).unwrap());
/// // One session views the tent, then the mat, then the stove.
/// co.observe(CoKind::View, &tent, &[], t);
/// co.observe(CoKind::View, &mat, &[tent.clone()], t);
/// co.observe(CoKind::View, &stove, &[tent.clone(), mat.clone()], t);
/// let near_tent = co.neighbors(CoKind::View, &tent, 5, &|_| true);
/// assert_eq!(near_tent[0].0, mat); // distance 1 beats distance 2
/// assert_eq!(near_tent[1].0, stove);
/// // Other kinds know nothing of views.
/// assert!(co.neighbors(CoKind::Cart, &tent, 5, &|_| true).is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct Cooccurrence {
    config: CooccurrenceConfig,
    graphs: [Graph; 3],
}

impl Cooccurrence {
    /// Empty graphs.
    pub fn new(config: CooccurrenceConfig) -> Result<Self> {
        config.validate()?;
        let h = config.half_life_secs;
        Ok(Cooccurrence {
            config,
            graphs: [Graph::new(h), Graph::new(h), Graph::new(h)],
        })
    }

    /// The settings.
    pub fn config(&self) -> &CooccurrenceConfig {
        &self.config
    }

    /// Keeps, for each item id held, the equal copy `canonical` gives (the catalog's, say), so
    /// that lookups by that copy compare pointers, not strings, and the strings are held once.
    /// Changes no answer.
    pub fn share_ids(&mut self, canonical: Canonical<'_>) {
        for g in &mut self.graphs {
            g.share_ids(canonical);
        }
    }

    /// Items tracked for `kind`.
    pub fn len(&self, kind: CoKind) -> usize {
        self.graphs[kind.index()].index.len()
    }

    /// Whether no kind tracks any item.
    pub fn is_empty(&self) -> bool {
        self.graphs.iter().all(|g| g.index.is_empty())
    }

    /// How many neighbours `item` keeps for `kind` (0 if not tracked).
    pub fn neighbor_count(&self, kind: CoKind, item: &ItemId) -> usize {
        let g = &self.graphs[kind.index()];
        g.index.get(item).map_or(0, |&slot| {
            g.nodes[slot as usize]
                .nbrs
                .iter()
                .filter(|e| g.live(e))
                .count()
        })
    }

    /// One event of `kind` on `item` at `at`; `earlier` are the same session's earlier items of
    /// that kind, most recent last (only the last `window` distinct ones other than `item` pair
    /// with it). See the [module docs](self) for the counts.
    pub fn observe(&mut self, kind: CoKind, item: &ItemId, earlier: &[ItemId], at: Timestamp) {
        let max_neighbors = self.config.max_neighbors;
        let window = self.config.window;
        // The items this event touches: `item`, then up to `window` distinct earlier ones,
        // latest first, with their distances.
        let mut touched: [Option<(usize, &ItemId)>; MAX_WINDOW + 1] = [None; MAX_WINDOW + 1];
        touched[0] = Some((0, item));
        let mut n = 1;
        for (d, e) in earlier.iter().rev().enumerate() {
            if n > window {
                break;
            }
            if !touched[..n].iter().flatten().any(|&(_, x)| x == e) {
                touched[n] = Some((d + 1, e));
                n += 1;
            }
        }
        let g = &mut self.graphs[kind.index()];
        g.rebase(at);
        let f = g.scale.factor(at) as f32;
        g.make_room(&touched[..n], self.config.max_items);
        let i = g.slot(item);
        g.touch(i);
        let node = &mut g.nodes[i as usize];
        node.pop = (node.pop + f).min(f32::MAX);
        for &(d, e) in touched[1..n].iter().flatten() {
            let j = g.slot(e);
            g.touch(j);
            let w = f / d as f32;
            g.add(i, j, w, max_neighbors);
            g.add(j, i, w, max_neighbors);
        }
    }

    /// Bulk load: replays one training session of `kind` (items in order) as if each item were
    /// observed at `at` with the ones before it as `earlier`.
    pub fn observe_session(&mut self, kind: CoKind, items: &[ItemId], at: Timestamp) {
        for k in 0..items.len() {
            self.observe(kind, &items[k], &items[..k], at);
        }
    }

    /// Bulk load of counts computed elsewhere (such as `attune train`'s co-occurrence lists):
    /// adds `pop` to `item`'s popularity and each `(neighbour, count)` to `c(item → neighbour)`
    /// only (one way: call it for each item of a symmetric list), as of `at`. Counts are raw
    /// counts on the popularity's scale (not normalised similarities: to load those, pass
    /// `pop = 1` and set `popularity_exponent` to 0, and each neighbour then keeps its own weight).
    /// Non-finite or negative values are ignored, values above [`MAX_SEED`] clamped.
    pub fn seed_neighbors(
        &mut self,
        kind: CoKind,
        item: &ItemId,
        pop: f32,
        neighbors: &[(ItemId, f32)],
        at: Timestamp,
    ) {
        let ok = |v: f32| v.is_finite() && v > 0.0;
        let max_neighbors = self.config.max_neighbors;
        // Only the strongest `max_neighbors` can stay: keep those (and so bound the new slots).
        let mut strongest: Vec<(&ItemId, f32)> = neighbors
            .iter()
            .filter(|(j, c)| j != item && ok(*c))
            .map(|(j, c)| (j, c.min(MAX_SEED)))
            .collect();
        strongest.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        strongest.truncate(max_neighbors);
        let g = &mut self.graphs[kind.index()];
        g.rebase(at);
        let f = g.scale.factor(at) as f32;
        let touched: Vec<Option<(usize, &ItemId)>> = std::iter::once(item)
            .chain(strongest.iter().map(|&(j, _)| j))
            .map(|x| Some((0, x)))
            .collect();
        g.make_room(&touched, self.config.max_items);
        let i = g.slot(item);
        g.touch(i);
        if ok(pop) {
            let node = &mut g.nodes[i as usize];
            node.pop = (node.pop + pop.min(MAX_SEED) * f).min(f32::MAX);
        }
        for (j_id, c) in strongest {
            let j = g.slot(j_id);
            g.touch(j);
            g.add(i, j, (c * f).min(f32::MAX), max_neighbors);
        }
    }

    /// The `n` best accepted neighbours of `item` for `kind`, by `sim(item → j)`, best first,
    /// ties by id. Empty for an unknown item.
    pub fn neighbors(
        &self,
        kind: CoKind,
        item: &ItemId,
        n: usize,
        accept: Accept<'_>,
    ) -> Vec<(ItemId, f32)> {
        self.recommend(kind, &[(item.clone(), 1.0)], n, accept)
    }

    /// The `n` best accepted items for a set of weighted anchors (say a session's recent items,
    /// the latest weighing most): `score(j) = Σₐ wₐ · sim(a → j)`, best first, ties by id.
    /// Anchors whose weight is not finite and `> 0`, or that are not tracked, add nothing; the
    /// anchors themselves are candidates like any item (drop them with `accept`).
    pub fn recommend(
        &self,
        kind: CoKind,
        anchors: &[(ItemId, f32)],
        n: usize,
        accept: Accept<'_>,
    ) -> Vec<(ItemId, f32)> {
        let g = &self.graphs[kind.index()];
        let beta = self.config.popularity_exponent;
        let mut scores: FxHashMap<u32, f32> = FxHashMap::default();
        for (anchor, w) in anchors {
            if !(w.is_finite() && *w > 0.0) {
                continue;
            }
            let Some(&i) = g.index.get(anchor) else {
                continue;
            };
            g.similarities(i, beta, *w, |j, s| {
                let e = scores.entry(j).or_insert(0.0);
                *e = (*e + s).min(f32::MAX);
            });
        }
        let candidates = scores
            .into_iter()
            .filter_map(|(j, s)| g.id(j).map(|id| (id, s)))
            .collect();
        top_accepted(candidates, n, accept)
    }
}

/// One item of one kind in a snapshot.
#[derive(Serialize)]
struct ItemSnapshot {
    id: ItemId,
    pop: f32,
    /// The eviction clock's mark.
    referenced: bool,
    /// Neighbours in the order they were added (which decides ties when a full list drops one).
    neighbors: Vec<(ItemId, f32)>,
}

/// [`ItemSnapshot`] as it is read (neighbours by borrowed id).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemSnapshotIn<'a> {
    id: ItemId,
    pop: f32,
    referenced: bool,
    #[serde(borrow)]
    neighbors: Vec<(SnapshotId<'a>, f32)>,
}

#[derive(Serialize)]
struct GraphSnapshot {
    scale: Scale,
    /// Items in the order the eviction clock visits them.
    items: Vec<ItemSnapshot>,
    /// The position in `items` the clock's hand points at.
    hand: usize,
}

/// [`GraphSnapshot`] as it is read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphSnapshotIn<'a> {
    scale: Scale,
    #[serde(borrow)]
    items: Vec<ItemSnapshotIn<'a>>,
    hand: usize,
}

#[derive(Serialize)]
struct Snapshot {
    config: CooccurrenceConfig,
    view: GraphSnapshot,
    cart: GraphSnapshot,
    purchase: GraphSnapshot,
}

/// [`Snapshot`] as it is read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn<'a> {
    config: CooccurrenceConfig,
    #[serde(borrow)]
    view: GraphSnapshotIn<'a>,
    #[serde(borrow)]
    cart: GraphSnapshotIn<'a>,
    #[serde(borrow)]
    purchase: GraphSnapshotIn<'a>,
}

impl Graph {
    fn snapshot(&self) -> GraphSnapshot {
        let mut items = Vec::with_capacity(self.index.len());
        let mut hand = 0;
        for (slot, node) in self.nodes.iter().enumerate() {
            let Some(id) = &node.id else {
                continue;
            };
            if slot < self.hand as usize {
                hand += 1;
            }
            let neighbors = node
                .nbrs
                .iter()
                .filter(|e| self.live(e))
                .filter_map(|e| self.id(e.slot).map(|j| (j.clone(), e.count)))
                .collect();
            items.push(ItemSnapshot {
                id: id.clone(),
                pop: node.pop,
                referenced: node.referenced,
                neighbors,
            });
        }
        GraphSnapshot {
            scale: self.scale,
            hand: if hand == items.len() { 0 } else { hand },
            items,
        }
    }

    fn restore(
        snap: GraphSnapshotIn<'_>,
        config: &CooccurrenceConfig,
    ) -> std::result::Result<Graph, String> {
        if !snap.scale.check(config.half_life_secs) {
            return Err("the scale does not match the half-life".to_owned());
        }
        if snap.items.len() > config.max_items {
            return Err("more items than max_items".to_owned());
        }
        let ok = |v: f32| v.is_finite() && v >= 0.0;
        let mut g = Graph::new(config.half_life_secs);
        g.scale = snap.scale;
        for item in &snap.items {
            if !ok(item.pop) {
                return Err(format!("bad popularity for {}", item.id));
            }
            if g.index.contains_key(&item.id) {
                return Err(format!("{} appears twice", item.id));
            }
            let slot = g.slot(&item.id);
            let node = &mut g.nodes[slot as usize];
            node.pop = item.pop;
            node.referenced = item.referenced;
        }
        if snap.hand > snap.items.len() {
            return Err("the clock's hand points past the items".to_owned());
        }
        g.hand = if snap.hand == snap.items.len() {
            0
        } else {
            snap.hand as u32
        };
        for item in snap.items {
            if item.neighbors.len() > config.max_neighbors {
                return Err(format!("{} has more than max_neighbors", item.id));
            }
            let i = g.index[&item.id];
            let mut nbrs = Neighbors::default();
            for (j_id, c) in item.neighbors {
                let j_id = j_id.as_str();
                let Some(&j) = g.index.get(j_id) else {
                    return Err(format!("{} names an unknown neighbour {j_id}", item.id));
                };
                if !ok(c) || j == i || nbrs.find(key(j, 0)).is_some() {
                    return Err(format!("bad neighbour {j_id} of {}", item.id));
                }
                nbrs.push(key(j, 0), c, config.max_neighbors);
            }
            g.nodes[i as usize].nbrs = nbrs;
        }
        Ok(g)
    }
}

impl Serialize for Cooccurrence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let [view, cart, purchase] = &self.graphs;
        Snapshot {
            config: self.config.clone(),
            view: view.snapshot(),
            cart: cart.snapshot(),
            purchase: purchase.snapshot(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Cooccurrence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let snap = SnapshotIn::deserialize(d)?;
        snap.config.validate().map_err(D::Error::custom)?;
        let restore = |g, kind: &str| {
            Graph::restore(g, &snap.config)
                .map_err(|e| D::Error::custom(format!("cooccurrence {kind}: {e}")))
        };
        Ok(Cooccurrence {
            graphs: [
                restore(snap.view, "view")?,
                restore(snap.cart, "cart")?,
                restore(snap.purchase, "purchase")?,
            ],
            config: snap.config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> ItemId {
        ItemId::new(s).unwrap()
    }

    fn ids(s: &[&str]) -> Vec<ItemId> {
        s.iter().map(|x| id(x)).collect()
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + ms)
    }

    fn all(_: &ItemId) -> bool {
        true
    }

    fn config(beta: f32) -> CooccurrenceConfig {
        CooccurrenceConfig {
            half_life_secs: None,
            max_items: 1000,
            max_neighbors: 10,
            window: 5,
            popularity_exponent: beta,
        }
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn counts_weigh_distance_and_go_both_ways() {
        let mut co = Cooccurrence::new(config(0.0)).unwrap();
        co.observe_session(CoKind::View, &ids(&["a", "b", "c"]), at(0));
        // pop = 1 each; c(a,b) = 1, c(a,c) = 1/2, c(b,c) = 1; β = 0: sim = c / pop(i).
        let got = co.neighbors(CoKind::View, &id("a"), 5, &all);
        assert_eq!(got, vec![(id("b"), 1.0), (id("c"), 0.5)]);
        let got = co.neighbors(CoKind::View, &id("c"), 5, &all);
        assert_eq!(got, vec![(id("b"), 1.0), (id("a"), 0.5)]);
        // A second session makes b popular: pop(b) = 2, c(a,b) = 1, c(b,d) = 1.
        co.observe_session(CoKind::View, &ids(&["b", "d"]), at(0));
        let got = co.neighbors(CoKind::View, &id("b"), 5, &all);
        // sim(b → x) = c / pop(b) = c / 2; a and c tie at 0.5, d at 0.5: by id.
        assert_eq!(got, vec![(id("a"), 0.5), (id("c"), 0.5), (id("d"), 0.5)]);
    }

    #[test]
    fn cosine_normalisation() {
        let mut co = Cooccurrence::new(config(0.5)).unwrap();
        co.observe_session(CoKind::View, &ids(&["a", "b"]), at(0));
        co.observe_session(CoKind::View, &ids(&["b", "c"]), at(0));
        co.observe_session(CoKind::View, &ids(&["b"]), at(0));
        // pop: a 1, b 3, c 1; c(a,b) = c(b,c) = 1. sim(a → b) = 1/√3.
        let got = co.neighbors(CoKind::View, &id("a"), 5, &all);
        assert_eq!(got.len(), 1);
        assert!(close(got[0].1, 1.0 / 3f32.sqrt()));
        // recommend sums weighted anchors: from a (w 1) and c (w 0.5), b scores 1.5/√3.
        let got = co.recommend(CoKind::View, &[(id("a"), 1.0), (id("c"), 0.5)], 5, &all);
        assert_eq!(got[0].0, id("b"));
        assert!(close(got[0].1, 1.5 / 3f32.sqrt()));
        // Bad weights and unknown anchors add nothing.
        let got = co.recommend(
            CoKind::View,
            &[(id("a"), f32::NAN), (id("zz"), 1.0), (id("c"), -1.0)],
            5,
            &all,
        );
        assert!(got.is_empty());
    }

    #[test]
    fn the_window_repeats_and_self_pairs() {
        let mut cfg = config(0.0);
        cfg.window = 2;
        let mut co = Cooccurrence::new(cfg).unwrap();
        // e pairs with d (distance 1) and c (distance 4 in `earlier`); b and a are past the two
        // distinct items of the window; the repeated d counts once, at its closest, and e never
        // pairs with itself.
        co.observe(
            CoKind::View,
            &id("e"),
            &ids(&["a", "b", "c", "d", "e", "d"]),
            at(0),
        );
        let got = co.neighbors(CoKind::View, &id("e"), 5, &all);
        assert_eq!(got, vec![(id("d"), 1.0), (id("c"), 0.25)]);
    }

    #[test]
    fn kinds_are_kept_apart() {
        let mut co = Cooccurrence::new(config(0.0)).unwrap();
        co.observe_session(CoKind::Purchase, &ids(&["a", "b"]), at(0));
        co.observe_session(CoKind::Cart, &ids(&["a", "c"]), at(0));
        assert_eq!(
            co.neighbors(CoKind::Purchase, &id("a"), 5, &all)[0].0,
            id("b")
        );
        assert_eq!(co.neighbors(CoKind::Cart, &id("a"), 5, &all)[0].0, id("c"));
        assert!(co.neighbors(CoKind::View, &id("a"), 5, &all).is_empty());
        assert_eq!(co.len(CoKind::View), 0);
    }

    #[test]
    fn counts_decay_with_the_half_life() {
        let mut cfg = config(0.0);
        cfg.half_life_secs = Some(3600.0);
        let mut co = Cooccurrence::new(cfg).unwrap();
        // a-b at 0, a-c twice an hour later... then a-b counts 1, a-c 2 · 2 = 4 on the scale of 0.
        co.observe_session(CoKind::View, &ids(&["a", "b"]), at(0));
        co.observe_session(CoKind::View, &ids(&["a", "c"]), at(3_600_000));
        // pop(a) = 1 + 2 = 3 (scaled); c(a,b) = 1, c(a,c) = 2.
        let got = co.neighbors(CoKind::View, &id("a"), 5, &all);
        assert_eq!(got[0].0, id("c"));
        assert!(close(got[0].1, 2.0 / 3.0) && close(got[1].1, 1.0 / 3.0));
        // Rebasing far in the future leaves the new pairs and drops nothing it should keep.
        co.observe_session(CoKind::View, &ids(&["x", "y"]), at(100 * 3_600_000));
        let got = co.neighbors(CoKind::View, &id("x"), 5, &all);
        assert_eq!(got, vec![(id("y"), 1.0)]);
    }

    #[test]
    fn exclusion_still_returns_n() {
        let mut co = Cooccurrence::new(config(0.0)).unwrap();
        for k in 0..8 {
            // Hub "h" seen with each of n0..n7, n_k k+1 times.
            for _ in 0..=k {
                co.observe_session(CoKind::View, &ids(&["h", &format!("n{k}")]), at(0));
            }
        }
        let odd = |x: &ItemId| x.as_str().ends_with(['1', '3', '5', '7']);
        let got: Vec<_> = co
            .neighbors(CoKind::View, &id("h"), 3, &odd)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(got, ids(&["n7", "n5", "n3"]));
        assert_eq!(co.neighbors(CoKind::View, &id("h"), 30, &odd).len(), 4);
    }

    #[test]
    fn caps_hold_under_a_flood() {
        let mut cfg = config(0.25);
        cfg.max_items = 64;
        cfg.max_neighbors = 5;
        let mut co = Cooccurrence::new(cfg).unwrap();
        let mut earlier: Vec<ItemId> = Vec::new();
        for k in 0..5000u32 {
            let item = id(&format!("i{}", (k * 7919) % 1500));
            co.observe(CoKind::View, &item, &earlier, at(i64::from(k)));
            earlier.push(item);
            if earlier.len() > 20 {
                earlier.remove(0);
            }
            let g = &co.graphs[0];
            assert!(g.index.len() <= 64);
            assert!(g.nodes.len() <= 64);
        }
        let g = &co.graphs[0];
        let mut stale = 0;
        for (id, &slot) in &g.index {
            let node = &g.nodes[slot as usize];
            let caps = (node.nbrs.keys.capacity(), node.nbrs.counts.capacity());
            assert!(node.nbrs.len() <= 5 && caps.0 <= 5 && caps.1 <= 5, "{id}");
            for e in node.nbrs.iter() {
                if !g.live(&e) {
                    stale += 1;
                }
            }
            // Queries see live neighbours only.
            for (n, _) in co.neighbors(CoKind::View, id, 10, &all) {
                assert!(g.index.contains_key(&n));
            }
        }
        assert!(stale > 0, "the flood evicted items that others still named");
        // The most recent items are still there.
        assert!(co.neighbor_count(CoKind::View, earlier.last().unwrap()) > 0);
    }

    #[test]
    fn a_full_list_keeps_the_strongest() {
        let mut cfg = config(0.0);
        cfg.max_neighbors = 2;
        let mut co = Cooccurrence::new(cfg).unwrap();
        for (n, times) in [("x", 3), ("y", 2), ("z", 1)] {
            for _ in 0..times {
                co.observe_session(CoKind::View, &ids(&["h", n]), at(0));
            }
        }
        let got: Vec<_> = co
            .neighbors(CoKind::View, &id("h"), 5, &all)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(got, ids(&["x", "y"]));
    }

    #[test]
    fn seeding_loads_counts() {
        let mut co = Cooccurrence::new(config(0.0)).unwrap();
        co.seed_neighbors(
            CoKind::View,
            &id("a"),
            4.0,
            &[
                (id("b"), 2.0),
                (id("c"), 1.0),
                (id("a"), 9.0),
                (id("d"), f32::NAN),
            ],
            at(0),
        );
        let got = co.neighbors(CoKind::View, &id("a"), 5, &all);
        assert_eq!(got, vec![(id("b"), 0.5), (id("c"), 0.25)]);
        // One way only.
        assert!(co.neighbors(CoKind::View, &id("b"), 5, &all).is_empty());
    }

    #[test]
    fn snapshot_round_trip_answers_the_same() {
        let mut cfg = config(0.25);
        cfg.half_life_secs = Some(600.0);
        let mut co = Cooccurrence::new(cfg).unwrap();
        for s in 0..40i64 {
            let items: Vec<ItemId> = (0..6)
                .map(|k| id(&format!("i{}", (s * 3 + k * k) % 23)))
                .collect();
            co.observe_session(CoKind::ALL[(s % 3) as usize], &items, at(s * 60_000));
        }
        let json = serde_json::to_string(&co).unwrap();
        let back: Cooccurrence = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        for kind in CoKind::ALL {
            for k in 0..23 {
                let item = id(&format!("i{k}"));
                assert_eq!(
                    co.neighbors(kind, &item, 10, &all),
                    back.neighbors(kind, &item, 10, &all)
                );
            }
            let anchors = [(id("i1"), 1.0), (id("i5"), 0.5), (id("i7"), 0.25)];
            assert_eq!(
                co.recommend(kind, &anchors, 20, &all),
                back.recommend(kind, &anchors, 20, &all)
            );
        }
    }

    #[test]
    fn bad_configs_and_snapshots_are_rejected() {
        for bad in [
            CooccurrenceConfig {
                half_life_secs: Some(0.0),
                ..config(0.0)
            },
            CooccurrenceConfig {
                max_items: 3,
                ..config(0.0)
            },
            CooccurrenceConfig {
                max_neighbors: 0,
                ..config(0.0)
            },
            CooccurrenceConfig {
                window: 0,
                ..config(0.0)
            },
            CooccurrenceConfig {
                window: 33,
                ..config(0.0)
            },
            CooccurrenceConfig {
                popularity_exponent: 1.5,
                ..config(0.0)
            },
            CooccurrenceConfig {
                popularity_exponent: f32::NAN,
                ..config(0.0)
            },
        ] {
            assert!(Cooccurrence::new(bad).is_err());
        }
        let mut co = Cooccurrence::new(config(0.0)).unwrap();
        co.observe_session(CoKind::View, &ids(&["a", "b"]), at(0));
        let good = serde_json::to_value(&co).unwrap();
        let mut unknown = good.clone();
        unknown["view"]["items"][0]["neighbors"] = serde_json::json!([["zz", 1.0]]);
        assert!(serde_json::from_value::<Cooccurrence>(unknown).is_err());
        let mut selfish = good.clone();
        selfish["view"]["items"][0]["neighbors"] = serde_json::json!([["a", 1.0]]);
        assert!(serde_json::from_value::<Cooccurrence>(selfish).is_err());
        let mut negative = good;
        negative["view"]["items"][0]["pop"] = serde_json::json!(-1.0);
        assert!(serde_json::from_value::<Cooccurrence>(negative).is_err());
    }

    #[test]
    fn sizes_are_as_documented() {
        assert!(std::mem::size_of::<Node>() <= 72);
    }

    #[test]
    fn the_clock_spares_what_was_touched() {
        let mut cfg = config(0.0);
        cfg.max_items = 22;
        let mut co = Cooccurrence::new(cfg).unwrap();
        for k in 0..22 {
            co.observe(CoKind::View, &id(&format!("i{k:02}")), &[], at(0));
        }
        // The first new item sends the hand round once, clearing every mark, and takes i00.
        // Then i02 is touched again, and two new items come: the hand takes i01, spares i02
        // (clearing its mark) and takes i03.
        co.observe(CoKind::View, &id("new0"), &[], at(1));
        co.observe(CoKind::View, &id("i02"), &[], at(2));
        co.observe(CoKind::View, &id("new1"), &[], at(3));
        co.observe(CoKind::View, &id("new2"), &[], at(4));
        let g = &co.graphs[0];
        assert_eq!(g.index.len(), 22);
        for (name, tracked) in [
            ("i00", false),
            ("i01", false),
            ("i02", true),
            ("i03", false),
            ("i04", true),
            ("new2", true),
        ] {
            assert_eq!(g.index.contains_key(name), tracked, "{name}");
        }
        // References to an evicted item go stale, and stay so when it comes back.
        co.observe(CoKind::View, &id("i05"), &[id("i04")], at(5));
        assert_eq!(co.neighbor_count(CoKind::View, &id("i04")), 1);
        let mut k = 0;
        while co.graphs[0].index.contains_key("i05") {
            co.observe(CoKind::View, &id(&format!("y{k}")), &[], at(6));
            co.observe(CoKind::View, &id("i04"), &[], at(6));
            k += 1;
        }
        assert!(co.graphs[0].index.contains_key("i04"));
        assert_eq!(co.neighbor_count(CoKind::View, &id("i04")), 0);
        co.observe(CoKind::View, &id("i05"), &[], at(7));
        assert_eq!(co.neighbor_count(CoKind::View, &id("i04")), 0);
        assert!(co.neighbors(CoKind::View, &id("i04"), 5, &all).is_empty());
        assert_eq!(
            co.graphs[0].nodes[co.graphs[0].index["i04"] as usize]
                .nbrs
                .len(),
            1
        );
    }

    proptest! {
        #[test]
        fn scores_are_finite_ordered_and_deterministic(
            sessions in prop::collection::vec(
                (prop::collection::vec(0u8..40, 1..12), -1_000_000i64..1_000_000_000),
                1..30,
            ),
            anchors in prop::collection::vec((0u8..40, prop::num::f32::ANY), 0..6),
            beta in 0.0f32..=1.0,
            half_life in prop::option::of(0.001f64..1e6),
        ) {
            let cfg = CooccurrenceConfig {
                half_life_secs: half_life,
                max_items: 16,
                max_neighbors: 4,
                window: 3,
                popularity_exponent: beta,
            };
            let mut a = Cooccurrence::new(cfg.clone()).unwrap();
            let mut b = Cooccurrence::new(cfg).unwrap();
            for (items, t) in &sessions {
                let items: Vec<ItemId> = items.iter().map(|k| id(&format!("i{k}"))).collect();
                a.observe_session(CoKind::View, &items, at(*t));
                b.observe_session(CoKind::View, &items, at(*t));
            }
            prop_assert!(a.len(CoKind::View) <= 16);
            let anchors: Vec<(ItemId, f32)> =
                anchors.iter().map(|(k, w)| (id(&format!("i{k}")), *w)).collect();
            let got = a.recommend(CoKind::View, &anchors, 10, &all);
            prop_assert_eq!(&got, &b.recommend(CoKind::View, &anchors, 10, &all));
            for w in got.windows(2) {
                prop_assert!(w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0));
            }
            for (_, s) in &got {
                prop_assert!(s.is_finite() && *s > 0.0);
            }
        }
    }
}
