//! The personal reranker: retrieved results in, a page that is relevant first and personal second
//! out, each result able to say why it moved.
//!
//! Steps, in order, each switchable in the rules (`rerank:`):
//! 1. drop items the visitor already engaged with (when the request asks),
//! 2. collapse near-duplicates (same brand and normalized title; the better-retrieved one stays),
//! 3. long-term profile boosts (when a signed-in user's profile is known),
//! 4. live session boosts: brand, category, attribute and search intent, each
//!    `cap × tanh(affinity / affinity_scale)`, plus the skip penalty; their sum is capped again,
//! 5. re-sort by relevance + boosts,
//! 6. the brand-diversity cap: at most `max_per_brand` results of one brand in each page; the rest
//!    move to later pages in order.
//!
//! Relevance comes in tiers, as in tie-breaking ranking formulas: the caller grades each result
//! (`tier`, e.g. the share of query terms it matches), and within a tier the fused retrieval score
//! counts for at most `rerank.fused_weight`:
//! `relevance = tier + fused_weight × fused / best_fused`. Rank fusion spreads results that are
//! textually equal (every "yogurt" matches "yogurt") by a few percent per position; within a tier
//! the personal boosts (at most ±`caps.total`) can reorder them, while a result of a lower tier
//! cannot climb over a higher one once tiers are further apart than the caps.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::id::ItemId;
use crate::item::{Item, ItemFeatures};
use crate::key::KeyIds;
use crate::rules::Rules;
use crate::session::{AffinityKind, Session};
use crate::time::Timestamp;

/// One source's vote for a candidate: which source proposed it, at which rank, with which score.
/// Search and recommendations share it, so the reranker, the explanations and the caches serve
/// both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceHit {
    /// The source's name (`keyword`, `vector`, `sequential`, `session_knn`, `cooccurrence`,
    /// `content`, `trending`, `bandit`, …).
    pub source: &'static str,
    /// 1-based rank in that source's list.
    pub rank: u32,
    /// The source's own score for the candidate (BM25, cosine, a model's logit, a count…).
    pub score: f32,
}

/// One retrieved result, in retrieval order.
#[derive(Debug, Clone, Copy)]
pub struct Retrieved<'a> {
    /// The item.
    pub item: &'a Item,
    /// Its affinity keys.
    pub features: &'a ItemFeatures,
    /// The fused retrieval score (reciprocal rank fusion in search, the weighted blend of the
    /// sources' normalized scores in recommendations).
    pub fused: f32,
    /// The relevance tier, in `[0, 1]`: e.g. the share of the query's terms the item matches.
    pub tier: f32,
    /// The sources that proposed it, each with its rank and score there (search: `keyword`,
    /// `vector`; recommendations: `sequential`, `session_knn`, …).
    pub sources: &'a [SourceHit],
    /// What reranking needs of the item, computed once per retrieval by the caller (retrievals
    /// are cached; reranking runs per request).
    pub prepared: &'a Prepared,
}

/// Per-candidate data the reranker reads on every request, computed once when the retrieval is
/// (and cached with it): the candidate's near-duplicate group and keys as indices into its
/// list's [`KeySpace`], so ranking 200 candidates scans compact arrays instead of chasing each
/// item's strings around the heap. A candidate's strings are read only to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Its near-duplicate group in the key space: candidates of the same brand and normalized
    /// title ([`normalize_title`]) share it. Numbered when the list is prepared, where the
    /// strings are compared in full; reranking compares the numbers only (it used to confirm
    /// equal hashes by comparing the items' brands and titles, a cache miss per duplicate).
    group: u32,
    /// The candidate's position in its key space (the order of [`KeySpace::prepare`] calls).
    slot: u32,
    /// Local brand index, or [`NONE`].
    brand: u32,
    /// Local category path index (a path is named by its deepest level), or [`NONE`].
    path: u32,
    /// The item's attributes: a range of [`KeySpace::item_attributes`], in the item's order.
    attributes: (u32, u32),
}

/// No key of this kind.
const NONE: u32 = u32::MAX;

impl Prepared {
    fn brand(&self) -> Option<u32> {
        (self.brand != NONE).then_some(self.brand)
    }
}

/// The distinct feature keys of one result list, numbered locally: the brands, category levels
/// and paths, attribute values and items its candidates carry. Built with the list's
/// [`Prepared`] candidates (once per retrieval, cached with it). A visitor's [`Signals`] are
/// matched to it once per request, only for the keys the list holds (a retrieval of 200 fashion
/// items has about a hundred), and each candidate then reads its signals by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    /// Distinguishes key spaces: [`Signals`] name the one they were matched to.
    id: u64,
    /// Local brand → its [`KeyIds`] id.
    brands: Vec<u32>,
    /// Local category level → its [`KeyIds`] id.
    levels: Vec<u32>,
    /// Local path → its range of `path_levels`.
    paths: Vec<(u32, u32)>,
    /// Each path's local levels, top level first.
    path_levels: Vec<u32>,
    /// Local attribute value → its [`KeyIds`] id.
    attributes: Vec<u32>,
    /// Every candidate's local attributes (each candidate holds its range).
    item_attributes: Vec<u32>,
    /// Slots in use (candidates prepared).
    slots: u32,
    /// [`KeyIds`] id → local index.
    brand_of: FxHashMap<u32, u32>,
    level_of: FxHashMap<u32, u32>,
    /// By the id of the deepest level.
    path_of: FxHashMap<u32, u32>,
    attribute_of: FxHashMap<u32, u32>,
    /// Item id → slot (of its first candidate).
    item_of: FxHashMap<ItemId, u32>,
    /// (Brand, normalized title) → near-duplicate group ([`KeySpace::prepare`]).
    groups: FxHashMap<(Option<Arc<str>>, String), u32>,
    /// Caller's duplicate key → near-duplicate group ([`KeySpace::prepare_keyed`]).
    keyed_groups: FxHashMap<u32, u32>,
    /// Groups numbered so far (by either map; a list uses one of them).
    group_count: u32,
}

impl Default for KeySpace {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        KeySpace {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            brands: Vec::new(),
            levels: Vec::new(),
            paths: Vec::new(),
            path_levels: Vec::new(),
            attributes: Vec::new(),
            item_attributes: Vec::new(),
            slots: 0,
            brand_of: FxHashMap::default(),
            level_of: FxHashMap::default(),
            path_of: FxHashMap::default(),
            attribute_of: FxHashMap::default(),
            item_of: FxHashMap::default(),
            groups: FxHashMap::default(),
            keyed_groups: FxHashMap::default(),
            group_count: 0,
        }
    }
}

fn local(n: usize) -> u32 {
    u32::try_from(n).expect("fewer than 2^32 keys in one result list")
}

/// The local index of `id` in `of`, appending it to `list` if new.
fn number(of: &mut FxHashMap<u32, u32>, list: &mut Vec<u32>, id: u32) -> u32 {
    let next = local(list.len());
    *of.entry(id).or_insert_with(|| {
        list.push(id);
        next
    })
}

impl KeySpace {
    /// About how many bytes the key space holds on the heap (its tables' capacities), for a
    /// cache bounded by bytes. The near-duplicate groups' titles are counted at 32 bytes each.
    pub fn heap_bytes(&self) -> usize {
        fn table<K, V>(m: &FxHashMap<K, V>) -> usize {
            // hashbrown: one control byte per bucket, buckets a power of two above 8/7 of the
            // capacity.
            let buckets = (m.capacity() * 8 / 7).next_power_of_two();
            buckets * (std::mem::size_of::<(K, V)>() + 1)
        }
        let vecs = [
            &self.brands,
            &self.levels,
            &self.path_levels,
            &self.attributes,
            &self.item_attributes,
        ];
        vecs.iter().map(|v| v.capacity() * 4).sum::<usize>()
            + self.paths.capacity() * 8
            + table(&self.brand_of)
            + table(&self.level_of)
            + table(&self.path_of)
            + table(&self.attribute_of)
            + table(&self.item_of)
            + table(&self.groups)
            + self.groups.len() * 32
            + table(&self.keyed_groups)
    }

    /// An empty key space with room for `candidates` items (and as many near-duplicate
    /// groups) before its tables grow.
    pub fn with_capacity(candidates: usize) -> Self {
        let mut keys = KeySpace::default();
        keys.item_of.reserve(candidates);
        keys.keyed_groups.reserve(candidates);
        keys
    }

    /// Prepares the next candidate of this list; `ids` are its features' [`KeyIds`] ids, in
    /// order: the brand (if any), each category level, then each attribute (as
    /// [`KeySpace::feature_ids`] gives them). The levels are the prefixes of the deepest one, so
    /// its id names the whole path.
    ///
    /// # Panics
    /// If `ids` is not one id per feature key.
    pub fn prepare(&mut self, item: &Item, features: &ItemFeatures, ids: &[u32]) -> Prepared {
        debug_assert!(self.keyed_groups.is_empty(), "one way of grouping per list");
        let mut prepared = self.prepare_keys(item, features, ids);
        let next = self.group_count;
        prepared.group = *self
            .groups
            .entry((item.brand.clone(), normalize_title(&item.title)))
            .or_insert(next);
        if prepared.group == next {
            self.group_count += 1;
        }
        prepared
    }

    /// [`KeySpace::prepare`] with the candidate's near-duplicate key computed by the caller, once
    /// per item instead of once per list: `duplicate` must be equal for two candidates exactly
    /// when their brands and normalized titles ([`normalize_title`]) are (the engine's catalog
    /// numbers each distinct pair when an item is upserted). Gives the same [`Prepared`] as
    /// [`KeySpace::prepare`] without reading the title. A list prepares all its candidates one
    /// way or the other, never both.
    ///
    /// # Panics
    /// If `ids` is not one id per feature key.
    pub fn prepare_keyed(
        &mut self,
        item: &Item,
        features: &ItemFeatures,
        ids: &[u32],
        duplicate: u32,
    ) -> Prepared {
        debug_assert!(self.groups.is_empty(), "one way of grouping per list");
        let mut prepared = self.prepare_keys(item, features, ids);
        let next = self.group_count;
        prepared.group = *self.keyed_groups.entry(duplicate).or_insert(next);
        if prepared.group == next {
            self.group_count += 1;
        }
        prepared
    }

    /// Everything of [`Prepared`] but the near-duplicate group (left 0).
    fn prepare_keys(&mut self, item: &Item, features: &ItemFeatures, ids: &[u32]) -> Prepared {
        let levels = features.categories.len();
        let has_brand = features.brand.is_some();
        let len = usize::from(has_brand) + levels + features.attributes.len();
        assert_eq!(ids.len(), len, "one id per feature key");
        let (brand_ids, rest) = ids.split_at(usize::from(has_brand));
        let (level_ids, attribute_ids) = rest.split_at(levels);
        let brand = match brand_ids.first() {
            Some(&id) => number(&mut self.brand_of, &mut self.brands, id),
            None => NONE,
        };
        let path = match level_ids.last() {
            Some(&leaf) => match self.path_of.get(&leaf) {
                Some(&p) => p,
                None => {
                    let p = local(self.paths.len());
                    let start = local(self.path_levels.len());
                    for &id in level_ids {
                        let l = number(&mut self.level_of, &mut self.levels, id);
                        self.path_levels.push(l);
                    }
                    self.paths.push((start, local(self.path_levels.len())));
                    self.path_of.insert(leaf, p);
                    p
                }
            },
            None => NONE,
        };
        let start = local(self.item_attributes.len());
        for &id in attribute_ids {
            let a = number(&mut self.attribute_of, &mut self.attributes, id);
            self.item_attributes.push(a);
        }
        let slot = self.slots;
        self.slots += 1;
        self.item_of.entry(item.id.clone()).or_insert(slot);
        Prepared {
            group: 0,
            slot,
            brand,
            path,
            attributes: (start, local(self.item_attributes.len())),
        }
    }

    /// The features' ids in [`KeySpace::prepare`]'s order, interning them in `ids`.
    pub fn feature_ids(features: &ItemFeatures, ids: &mut KeyIds) -> Vec<u32> {
        features
            .brand
            .iter()
            .chain(&features.categories)
            .chain(&features.attributes)
            .map(|k| ids.intern(k).1)
            .collect()
    }

    /// Distinct keys: (brands, category levels, category paths, attribute values).
    pub fn distinct(&self) -> (usize, usize, usize, usize) {
        (
            self.brands.len(),
            self.levels.len(),
            self.paths.len(),
            self.attributes.len(),
        )
    }

    /// A path's local levels, top first.
    fn levels_of(&self, path: u32) -> &[u32] {
        self.paths
            .get(path as usize)
            .map_or(&[], |&(a, b)| &self.path_levels[a as usize..b as usize])
    }

    fn attributes_of(&self, p: &Prepared) -> &[u32] {
        self.item_attributes
            .get(p.attributes.0 as usize..p.attributes.1 as usize)
            .unwrap_or(&[])
    }
}

/// Which table of [`Signals`] a signal goes to.
#[derive(Clone, Copy)]
enum Target {
    Brand(u32),
    Level(u32),
    Attribute(u32),
}

/// One visitor's signals (a live session or a long-term profile), decayed to one time and
/// matched to one result list's [`KeySpace`]: built once per request, only for the keys the list
/// holds (an affinity for anything else cannot move a candidate, so it is not even decayed).
/// Each table holds (affinity, intent affinity) per local key; a table of a kind the visitor has
/// no signal of is empty.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// The [`KeySpace`] matched to (0: none).
    space: u64,
    brand: Vec<(f32, f32)>,
    level: Vec<(f32, f32)>,
    attribute: Vec<(f32, f32)>,
    /// Skips per slot (empty if none of the list was skipped).
    skips: Vec<u16>,
    /// Whether the visitor engaged with each slot's item (empty unless asked for, or none).
    seen: Vec<bool>,
    /// Whether any signal is non-zero.
    active: bool,
}

impl Signals {
    /// The signals of a live session (or profile) at `now` for the list of `keys`, with the
    /// [`KeyIds`] that list was prepared with. The items the visitor engaged with are gathered
    /// only `with_seen` (for a request that drops them).
    pub fn from_session(
        session: &Session,
        now: Timestamp,
        rules: &Rules,
        ids: &KeyIds,
        keys: &KeySpace,
        with_seen: bool,
    ) -> Self {
        let has = |kind| session.affinity_count(kind) > 0;
        let intents = has(AffinityKind::Intent);
        let table = |kind, n: usize| {
            if has(kind) || intents {
                vec![(0.0, 0.0); n]
            } else {
                Vec::new()
            }
        };
        let mut s = Signals {
            space: keys.id,
            brand: table(AffinityKind::Brand, keys.brands.len()),
            level: table(AffinityKind::Category, keys.levels.len()),
            attribute: table(AffinityKind::Attribute, keys.attributes.len()),
            ..Signals::default()
        };
        let target = |kind, id: u32| {
            let local = |of: &FxHashMap<u32, u32>| of.get(&id).copied();
            match kind {
                AffinityKind::Brand => local(&keys.brand_of).map(Target::Brand),
                AffinityKind::Category => local(&keys.level_of).map(Target::Level),
                AffinityKind::Attribute | AffinityKind::Intent => {
                    local(&keys.attribute_of).map(Target::Attribute)
                }
            }
        };
        session.visit_affinities(
            now,
            rules,
            |kind, key| match kind {
                AffinityKind::Intent => {
                    let (kind, id) = ids.intent_of(key)?;
                    Some((target(kind, id)?, true))
                }
                _ => Some((target(kind, ids.id_of(key)?)?, false)),
            },
            |(target, intent), v| {
                let (table, i) = match target {
                    Target::Brand(i) => (&mut s.brand, i),
                    Target::Level(i) => (&mut s.level, i),
                    Target::Attribute(i) => (&mut s.attribute, i),
                };
                if let Some(e) = table.get_mut(i as usize) {
                    if intent {
                        e.1 = v;
                    } else {
                        e.0 = v;
                    }
                    s.active |= v != 0.0;
                }
            },
        );
        let slots = keys.slots as usize;
        session.visit_items(|id, seen, skips| {
            if (skips == 0 && !(with_seen && seen > 0)) || keys.item_of.is_empty() {
                return;
            }
            let Some(&slot) = keys.item_of.get(id) else {
                return;
            };
            if skips > 0 {
                s.skips.resize(slots, 0);
                s.skips[slot as usize] = skips;
                s.active = true;
            }
            if with_seen && seen > 0 {
                s.seen.resize(slots, false);
                s.seen[slot as usize] = true;
                s.active = true;
            }
        });
        s
    }

    /// Whether there is nothing to personalize with: no affinity, skip or (when gathered) seen
    /// item touches the list.
    pub fn is_empty(&self) -> bool {
        !self.active
    }

    fn seen(&self, p: &Prepared) -> bool {
        self.seen.get(p.slot as usize).copied().unwrap_or(false)
    }
}

/// Boosts of one set of signals per distinct brand and category path of a list, computed once
/// per request (each a `tanh`): (boost, intent affinity) by local brand, and by local path (the
/// boost of the mean of its levels' affinities, the sum of their intents).
struct Resolved {
    brand: Vec<(f32, f32)>,
    path: Vec<(f32, f32)>,
}

impl Resolved {
    fn new(keys: &KeySpace, s: &Signals, rules: &Rules) -> Self {
        let caps = &rules.caps;
        let scale = rules.rerank.affinity_scale;
        let brand = s
            .brand
            .iter()
            .map(|&(a, i)| (boost(caps.brand, a, scale), i))
            .collect();
        let path = if s.level.is_empty() {
            Vec::new()
        } else {
            (0..keys.paths.len())
                .map(|p| {
                    // The mean over the item's levels: liking the whole path counts fully.
                    let levels = keys.levels_of(local(p));
                    let (mut sum, mut intents) = (0.0, 0.0);
                    for &l in levels {
                        let (a, i) = s.level[l as usize];
                        sum += a;
                        intents += i;
                    }
                    let mean = sum / levels.len().max(1) as f32;
                    (boost(caps.category, mean, scale), intents)
                })
                .collect()
        };
        Resolved { brand, path }
    }
}

/// Where a boost came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The live session.
    Session,
    /// The signed-in user's long-term profile.
    Profile,
}

/// What a boost is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoostKind {
    /// The item's brand.
    Brand,
    /// The item's category levels.
    Category,
    /// The item's attributes.
    Attribute,
    /// What the visitor searched for.
    Intent,
    /// The visitor scrolled past this item.
    Skip,
}

/// One boost that applied to a result, with the signal behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Boost {
    /// Session or profile.
    pub source: Source,
    /// What it is about.
    pub kind: BoostKind,
    /// The affinities that caused it (key and value), strongest first.
    pub signals: Vec<(String, f32)>,
    /// The boost applied (after its cap).
    pub boost: f32,
    /// The cap of this kind of boost.
    pub cap: f32,
}

/// Why a result sits where it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The sources that proposed the result, with their ranks and scores.
    pub sources: Vec<SourceHit>,
    /// The fused retrieval score.
    pub fused: f32,
    /// The relevance tier given by retrieval.
    pub tier: f32,
    /// Relevance: the tier plus `fused_weight` × the fused score over the best fused score.
    pub relevance: f32,
    /// 1-based position before reranking.
    pub retrieval_position: u32,
    /// Every boost that applied.
    pub boosts: Vec<Boost>,
    /// The sum of all boosts after the total cap.
    pub adjustment: f32,
    /// Whether the total cap cut the sum.
    pub capped: bool,
    /// Whether the brand-diversity cap moved this result to a later page.
    pub diversity_demoted: bool,
}

/// One reranked result.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// Index of the result in the retrieved list.
    pub index: usize,
    /// Relevance plus boosts.
    pub score: f32,
    /// Why, when asked for (boxed: a ranked list is sorted, and stays small to move).
    pub explanation: Option<Box<Explanation>>,
}

/// What the request asks of the reranker.
#[derive(Debug, Clone, Copy)]
pub struct RerankRequest {
    /// Drop items the visitor has already engaged with (if the rules allow the step).
    pub exclude_seen: bool,
    /// The page size the diversity cap applies to.
    pub page_size: usize,
    /// How many leading results the caller will use (offset + limit): only they are ordered
    /// (and diversity fills only the pages that cover them); the results after them follow in
    /// no particular order (work saved per request).
    pub needed: usize,
    /// Build explanations.
    pub explain: bool,
}

/// Lower-cases and keeps only letters and digits, single-spaced: the near-duplicate key (with
/// the brand; see [`Prepared`]).
pub fn normalize_title(title: &str) -> String {
    crate::vocab::normalize(title)
}

/// `cap × tanh(affinity / scale)`; a non-finite affinity (which no session produces) counts as
/// none. Branch-free (selects, no jumps), so that a loop over a result list's candidates
/// vectorizes and no candidate pays a mispredicted branch for whether it has an affinity.
#[inline]
fn boost(cap: f32, affinity: f32, scale: f32) -> f32 {
    let a = if affinity.is_finite() { affinity } else { 0.0 };
    cap * tanh(a / scale)
}

/// `tanh` as a rational function (the minimax fit Eigen uses for `float`): a dozen multiplies and
/// adds and one division, no `exp` (libm's `tanhf` goes through `expm1f`, a fifth of reranking's
/// time; `mul_add` would be a library call without the `fma` target feature). Absolute error
/// below 5e-7 (a few units in the last place near ±1), exactly ±1 from |x| = 9 on; odd; 0 at 0.
/// The special ranges are selects, not branches (see [`boost`]).
#[inline]
fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    let c = x.clamp(-CLAMP, CLAMP);
    let x2 = c * c;
    let mut p = x2 * -2.760_768_5e-16 + 2.000_188e-13;
    p = x2 * p - 8.604_672e-11;
    p = x2 * p + 5.122_297e-8;
    p = x2 * p + 1.485_722_4e-5;
    p = x2 * p + 6.372_619_3e-4;
    p = x2 * p + 4.893_524_6e-3;
    let mut q = x2 * 1.198_258_4e-6 + 1.185_347_1e-4;
    q = x2 * q + 2.268_434_6e-3;
    q = x2 * q + 4.893_525e-3;
    let r = (c * p / q).clamp(-1.0, 1.0);
    let m = x.abs();
    let r = if m >= 9.0 { 1.0f32.copysign(x) } else { r };
    if m < 0.0004 { x } else { r }
}

/// The sums of the personal boosts from one set of signals, without explaining them, added to
/// `sums` (one per `ranked` result): for each, what [`explained_boosts`] returns, in the same
/// order of additions (so the same score to the bit). Most requests ask for no explanation; this
/// is their hot loop, in two passes: gathering each candidate's brand and path boosts and its
/// attribute and intent affinities (table reads by index), then the boosts of those affinities
/// over the whole list at once, branch-free, in a loop the compiler vectorizes.
#[allow(clippy::too_many_arguments)]
fn quiet_boosts(
    ranked: &[Ranked],
    retrieved: &[Retrieved<'_>],
    keys: &KeySpace,
    s: &Signals,
    resolved: &Resolved,
    rules: &Rules,
    scratch: &mut Vec<f32>,
    sums: &mut [f32],
) {
    let caps = &rules.caps;
    let scale = rules.rerank.affinity_scale;
    let n = ranked.len();
    scratch.clear();
    scratch.resize(4 * n, 0.0);
    let (fixed, rest) = scratch.split_at_mut(n);
    let (attribute, rest) = rest.split_at_mut(n);
    let (intent, skip) = rest.split_at_mut(n);
    for (i, r) in ranked.iter().enumerate() {
        let p = retrieved[r.index].prepared;
        let (mut total, mut intents) = (0.0, 0.0);
        if let Some(brand) = p.brand()
            && let Some(&(b, i)) = resolved.brand.get(brand as usize)
        {
            total += b;
            intents += i;
        }
        if let Some(&(b, i)) = resolved.path.get(p.path as usize) {
            total += b;
            intents += i;
        }
        let mut sum = 0.0;
        if !s.attribute.is_empty() {
            for &a in keys.attributes_of(p) {
                let (v, i) = s.attribute[a as usize];
                sum += v;
                intents += i;
            }
        }
        fixed[i] = total;
        attribute[i] = sum;
        intent[i] = intents;
        if s.skips.get(p.slot as usize).is_some_and(|&n| n > 0) {
            skip[i] = caps.skip_penalty;
        }
    }
    let (ca, ci) = (caps.attribute, caps.intent);
    for ((((out, &f), &a), &i), &k) in sums
        .iter_mut()
        .zip(&*fixed)
        .zip(&*attribute)
        .zip(&*intent)
        .zip(&*skip)
    {
        *out += f + boost(ca, a, scale) + boost(ci, i, scale) + k;
    }
}

/// The personal boosts for one item from one set of signals, each explained: pushed to `out`
/// with the affinities behind it. Returns their sum, equal to the bit to what [`quiet_boosts`] adds.
fn explained_boosts(
    r: &Retrieved<'_>,
    keys: &KeySpace,
    s: &Signals,
    resolved: &Resolved,
    source: Source,
    rules: &Rules,
    out: &mut Vec<Boost>,
) -> f32 {
    let caps = &rules.caps;
    let scale = rules.rerank.affinity_scale;
    let f = r.features;
    let p = r.prepared;
    let mut total = 0.0;
    let mut push = |kind, cap: f32, signals: Vec<(String, f32)>, b: f32, out: &mut Vec<Boost>| {
        if b != 0.0 {
            total += b;
            out.push(Boost {
                source,
                kind,
                signals,
                boost: b,
                cap,
            });
        }
    };
    let mut intent = 0.0;
    let mut intent_signals = Vec::new();

    if let Some(brand) = p.brand()
        && let Some(&(b, i)) = resolved.brand.get(brand as usize)
    {
        intent += i;
        let mut signals = Vec::new();
        let name = f.brand.as_ref().map_or("", |b| b.as_str());
        if b != 0.0 {
            signals.push((name.to_owned(), s.brand[brand as usize].0));
        }
        if i != 0.0 {
            intent_signals.push((format!("brand:{name}"), i));
        }
        push(BoostKind::Brand, caps.brand, signals, b, out);
    }

    if let Some(&(b, i)) = resolved.path.get(p.path as usize) {
        intent += i;
        let mut signals = Vec::new();
        for (c, &l) in f.categories.iter().zip(keys.levels_of(p.path)) {
            let (a, i) = s.level[l as usize];
            if a != 0.0 {
                signals.push((c.to_string(), a));
            }
            if i != 0.0 {
                intent_signals.push((format!("category:{c}"), i));
            }
        }
        push(BoostKind::Category, caps.category, signals, b, out);
    }

    let mut sum = 0.0;
    let mut signals = Vec::new();
    if !s.attribute.is_empty() {
        for (n, &a) in keys.attributes_of(p).iter().enumerate() {
            let (v, i) = s.attribute[a as usize];
            let attribute = || f.attributes.get(n).map_or("", |k| k.as_str());
            if v != 0.0 {
                sum += v;
                signals.push((attribute().to_owned(), v));
            }
            if i != 0.0 {
                intent += i;
                intent_signals.push((attribute().to_owned(), i));
            }
        }
    }
    push(
        BoostKind::Attribute,
        caps.attribute,
        signals,
        boost(caps.attribute, sum, scale),
        out,
    );
    push(
        BoostKind::Intent,
        caps.intent,
        intent_signals,
        boost(caps.intent, intent, scale),
        out,
    );

    if let Some(&skips) = s.skips.get(p.slot as usize)
        && skips > 0
    {
        let b = caps.skip_penalty;
        total += b;
        out.push(Boost {
            source,
            kind: BoostKind::Skip,
            signals: vec![(r.item.id.to_string(), f32::from(skips))],
            boost: b,
            cap: caps.skip_penalty,
        });
    }
    total
}

/// Reranks retrieved results (in retrieval order) for one visitor. See the module docs.
///
/// `keys` is the [`KeySpace`] the results' [`Prepared`] were built in (any part of that list may
/// be reranked with it).
pub fn rerank(
    retrieved: &[Retrieved<'_>],
    keys: &KeySpace,
    session: Option<&Signals>,
    profile: Option<&Signals>,
    rules: &Rules,
    request: &RerankRequest,
) -> Vec<Ranked> {
    let steps = &rules.rerank;
    let best = retrieved
        .iter()
        .map(|r| r.fused)
        .filter(|f| f.is_finite())
        .fold(0.0f32, f32::max);
    // Whether a result of each near-duplicate group is already in.
    let mut taken = vec![false; keys.group_count as usize];
    // Signals matched to another list would boost the wrong keys: a caller's bug, ignored.
    debug_assert!(
        [session, profile]
            .iter()
            .flatten()
            .all(|s| s.space == keys.id),
        "signals of another list"
    );
    let session = session.filter(|s| s.space == keys.id);
    let profile = profile.filter(|s| s.space == keys.id);
    // Each source's boosts, computed once per distinct brand and path of the list.
    let sources = [
        profile
            .filter(|_| steps.profile_boosts)
            .map(|p| (p, Resolved::new(keys, p, rules), Source::Profile)),
        session
            .filter(|_| steps.session_boosts)
            .map(|s| (s, Resolved::new(keys, s, rules), Source::Session)),
    ];
    let total_cap = rules.caps.total;
    let mut ranked: Vec<Ranked> = Vec::with_capacity(retrieved.len());
    for (index, r) in retrieved.iter().enumerate() {
        if request.exclude_seen && steps.drop_seen && session.is_some_and(|s| s.seen(r.prepared)) {
            continue;
        }
        if steps.dedupe
            && let Some(taken) = taken.get_mut(r.prepared.group as usize)
        {
            if *taken {
                continue;
            }
            *taken = true;
        }
        let share = if best > 0.0 && r.fused.is_finite() {
            (r.fused / best).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let tier = if r.tier.is_finite() {
            r.tier.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let relevance = tier + steps.fused_weight * share;
        if !request.explain {
            // The boosts are added below, for the whole list at once.
            ranked.push(Ranked {
                index,
                score: relevance,
                explanation: None,
            });
            continue;
        }
        let mut boosts = Vec::new();
        let mut sum = 0.0;
        for (signals, resolved, source) in sources.iter().flatten() {
            sum += explained_boosts(r, keys, signals, resolved, *source, rules, &mut boosts);
        }
        let adjustment = sum.clamp(-total_cap, total_cap);
        ranked.push(Ranked {
            index,
            score: relevance + adjustment,
            explanation: Some(Box::new(Explanation {
                sources: r.sources.to_vec(),
                fused: r.fused,
                tier,
                relevance,
                retrieval_position: u32::try_from(index + 1).unwrap_or(u32::MAX),
                boosts,
                adjustment,
                capped: adjustment != sum,
                diversity_demoted: false,
            })),
        });
    }
    if !request.explain && sources.iter().any(Option::is_some) {
        let mut sums = vec![0.0f32; ranked.len()];
        let mut scratch = Vec::new();
        for (signals, resolved, _) in sources.iter().flatten() {
            quiet_boosts(
                &ranked,
                retrieved,
                keys,
                signals,
                resolved,
                rules,
                &mut scratch,
                &mut sums,
            );
        }
        for (r, sum) in ranked.iter_mut().zip(sums) {
            r.score += sum.clamp(-total_cap, total_cap);
        }
    }
    // Equal scores keep retrieval order (the index breaks ties, so an unstable sort, which
    // needs no scratch allocation, gives the stable order).
    let max_per_brand = rules.diversity.max_per_brand as usize;
    // Only the results that can fill the pages asked for need ordering: the best `needed`, and
    // as many again for results that diversity holds back (if more are needed, all are sorted).
    let head = request
        .needed
        .saturating_mul(2)
        .saturating_add(request.page_size)
        .max(1);
    if head < ranked.len() {
        ranked.select_nth_unstable_by_key(head - 1, sort_key);
        let tail = ranked.split_off(head);
        ranked.sort_unstable_by_key(sort_key);
        if !steps.brand_diversity {
            ranked.extend(tail);
            return ranked;
        }
        let (mut out, complete) = diversify(
            ranked,
            retrieved,
            max_per_brand,
            request.page_size,
            request.needed,
        );
        out.extend(tail);
        if complete {
            return out;
        }
        // Diversity went past the head: start again with everything in order.
        ranked = out;
        for r in &mut ranked {
            if let Some(e) = r.explanation.as_mut() {
                e.diversity_demoted = false;
            }
        }
    }
    ranked.sort_unstable_by_key(sort_key);
    if steps.brand_diversity {
        ranked = diversify(
            ranked,
            retrieved,
            max_per_brand,
            request.page_size,
            request.needed,
        )
        .0;
    }
    ranked
}

/// Best first: the higher score (in `f32::total_cmp`'s order), then the lower index, as one
/// integer: cheaper to compare than the float and the index one after the other (a personal
/// ranking reorders the head of the list, which is then sorted from scratch on every request).
fn sort_key(r: &Ranked) -> u64 {
    let bits = r.score.to_bits();
    // Flipping the sign bit of a positive float, or every bit of a negative one, orders the
    // bits as `total_cmp` orders the floats.
    let ascending = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    let index = u32::try_from(r.index).unwrap_or(u32::MAX);
    (u64::from(!ascending) << 32) | u64::from(index)
}

/// Whether a result of `brand` fits on a page whose results of each brand are `counts`
/// (counting it in if so): at most `max_per_brand` of one brand; a result without one always fits.
fn fits_page(counts: &mut Vec<(u32, usize)>, brand: Option<u32>, max_per_brand: usize) -> bool {
    let Some(brand) = brand else {
        return true;
    };
    match counts.iter_mut().find(|(b, _)| *b == brand) {
        Some((_, n)) if *n >= max_per_brand => false,
        Some((_, n)) => {
            *n += 1;
            true
        }
        None => {
            counts.push((brand, 1));
            true
        }
    }
}

/// Fills pages of `page_size` greedily in score order with at most `max_per_brand` results of one
/// brand each; a result that does not fit waits for the next page (items without a brand are never
/// held back). Keeps everything, only moves. Pages past the one that reaches `needed` results are
/// left as they come.
///
/// Also says whether the first `needed` results were placed without running out of `ranked`
/// (if `ranked` is the head of a longer list, they are then those of the whole list).
fn diversify(
    ranked: Vec<Ranked>,
    retrieved: &[Retrieved<'_>],
    max_per_brand: usize,
    page_size: usize,
    needed: usize,
) -> (Vec<Ranked>, bool) {
    let page_size = page_size.max(1);
    let max_per_brand = max_per_brand.max(1);
    // The results not placed yet, in score order. Those a page held back stay where they are,
    // ahead of every later result: first in line for the next page, in score order. Each page
    // takes what fits out of it in one pass, without moving the rest to a new queue.
    let mut rest = ranked;
    let mut out = Vec::with_capacity(rest.len());
    let mut complete = true;
    // Results of each brand on the page being filled, by brand id (a page holds few brands).
    let mut counts: Vec<(u32, usize)> = Vec::with_capacity(page_size.min(rest.len()));
    while !rest.is_empty() && out.len() < needed {
        counts.clear();
        let mut page = 0;
        out.extend(rest.extract_if(.., |r| {
            if page == page_size {
                return false;
            }
            let fits = fits_page(
                &mut counts,
                retrieved[r.index].prepared.brand(),
                max_per_brand,
            );
            if fits {
                page += 1;
            } else if let Some(e) = r.explanation.as_mut() {
                e.diversity_demoted = true;
            }
            fits
        }));
        if page < page_size {
            // Every remaining result was looked at and the page is still not full.
            complete &= out.len() >= needed;
        }
        if page == 0 {
            // Every remaining result is of a brand already full on this page: cannot happen
            // with an empty page, but never loop forever.
            out.append(&mut rest);
        }
    }
    out.append(&mut rest);
    (out, complete)
}

#[cfg(test)]
mod tests;
