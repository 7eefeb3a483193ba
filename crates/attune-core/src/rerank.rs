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

use std::hash::BuildHasher;

use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::item::{Item, ItemFeatures};
use crate::key::{Key, KeyIds};
use crate::rules::Rules;
use crate::session::{AffinityKind, Session};
use crate::time::Timestamp;

/// One retrieved result, in retrieval order.
#[derive(Debug, Clone, Copy)]
pub struct Retrieved<'a> {
    /// The item.
    pub item: &'a Item,
    /// Its affinity keys.
    pub features: &'a ItemFeatures,
    /// The fused retrieval score (reciprocal rank fusion).
    pub fused: f32,
    /// The relevance tier, in `[0, 1]`: e.g. the share of the query's terms the item matches.
    pub tier: f32,
    /// 1-based rank in the keyword list, if it was there.
    pub keyword_rank: Option<u32>,
    /// 1-based rank in the vector list, if it was there.
    pub vector_rank: Option<u32>,
    /// What reranking needs of the item, computed once per retrieval by the caller (retrievals
    /// are cached; reranking runs per request).
    pub prepared: &'a Prepared,
}

/// Per-candidate data the reranker reads on every request, computed once when the retrieval is
/// (and cached with it): hashes and key ids side by side, so ranking 200 candidates scans one
/// compact array instead of chasing each item's strings around the heap (those cache misses, not
/// the arithmetic, were most of reranking's time). A candidate's strings are read only to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Hash of (brand, title key): near-duplicates share it.
    dedupe_hash: u64,
    /// Hash of the item id, to look up seen and skipped items.
    id_hash: u64,
    len: u16,
    has_brand: bool,
    levels: u16,
    /// The [`KeyIds`] id of the brand (if any), of each category level, then of each attribute,
    /// in the order of the item's features: inline for items with up to [`INLINE_KEYS`] keys.
    inline: [u32; INLINE_KEYS],
    /// All of them, when there are more than fit inline.
    spill: Vec<u32>,
    /// The near-duplicate key: [`normalize_title`] of the title.
    pub title_key: String,
}

/// Key ids a [`Prepared`] holds without a separate allocation.
const INLINE_KEYS: usize = 20;

impl Prepared {
    /// Prepares an item and its features; `ids` are the features' [`KeyIds`] ids, in order: the
    /// brand (if any), each category level, then each attribute.
    ///
    /// # Panics
    /// If `ids` is not one id per feature key.
    pub fn new(item: &Item, features: &ItemFeatures, ids: &[u32]) -> Self {
        let levels = features.categories.len();
        let len = usize::from(features.brand.is_some()) + levels + features.attributes.len();
        assert_eq!(ids.len(), len, "one id per feature key");
        let title_key = normalize_title(&item.title);
        let dedupe_hash = FxBuildHasher.hash_one((item.brand.as_deref(), title_key.as_str()));
        let mut inline = [0; INLINE_KEYS];
        let spill = if len <= INLINE_KEYS {
            inline[..len].copy_from_slice(ids);
            Vec::new()
        } else {
            ids.to_vec()
        };
        let narrow = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        Prepared {
            dedupe_hash,
            id_hash: id_hash(item.id.as_str()),
            len: narrow(len),
            has_brand: features.brand.is_some(),
            levels: narrow(levels),
            inline,
            spill,
            title_key,
        }
    }

    /// The features' ids in [`Prepared::new`]'s order, interning them in `ids`.
    pub fn feature_ids(features: &ItemFeatures, ids: &mut KeyIds) -> Vec<u32> {
        features
            .brand
            .iter()
            .chain(&features.categories)
            .chain(&features.attributes)
            .map(|k| ids.intern(k).1)
            .collect()
    }

    fn keys(&self) -> &[u32] {
        if usize::from(self.len) <= INLINE_KEYS {
            &self.inline[..usize::from(self.len)]
        } else {
            &self.spill
        }
    }

    /// (brand, category levels, attributes) ids.
    fn parts(&self) -> (Option<u32>, &[u32], &[u32]) {
        let keys = self.keys();
        let (brand, rest) = if self.has_brand {
            (keys.first().copied(), keys.get(1..).unwrap_or(&[]))
        } else {
            (None, keys)
        };
        let levels = usize::from(self.levels).min(rest.len());
        (brand, &rest[..levels], &rest[levels..])
    }
}

fn id_hash(id: &str) -> u64 {
    FxBuildHasher.hash_one(id)
}

/// One kind of affinity of a visitor: key id → (affinity, intent affinity).
type Table = FxHashMap<u32, (f32, f32)>;

/// Affinities decayed to one time and indexed for constant-time lookups while ranking: built once
/// per request from a session (or a long-term profile).
///
/// Keyed by the [`KeyIds`] ids candidates carry in their [`Prepared`]: matching a candidate's
/// keys reads no string and hashes nothing but a `u32`. An affinity for a string the id source
/// does not know is left out: no candidate can have that key.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Brand affinities, with intents for brands.
    brand: Table,
    /// Category level affinities, with intents for category paths.
    category: Table,
    /// Attribute `key:value` affinities, with intents for attribute values.
    attribute: Table,
    /// Item id hash → the id (checked on a hit).
    seen: FxHashMap<u64, Key>,
    /// Item id hash → (the id, skips).
    skipped: FxHashMap<u64, (Key, u16)>,
}

impl Signals {
    /// The signals of a live session at `now`, with the [`KeyIds`] the candidates' [`Prepared`]
    /// were built with. The items the visitor engaged with are gathered only `with_seen` (for a
    /// request that drops them).
    pub fn from_session(
        session: &Session,
        now: Timestamp,
        rules: &Rules,
        ids: &KeyIds,
        with_seen: bool,
    ) -> Self {
        let count = |kind| session.affinity_count(kind);
        let intents = count(AffinityKind::Intent);
        let table = |n: usize| Table::with_capacity_and_hasher(n, Default::default());
        let mut s = Signals {
            brand: table(count(AffinityKind::Brand) + intents),
            category: table(count(AffinityKind::Category) + intents),
            attribute: table(count(AffinityKind::Attribute) + intents),
            ..Signals::default()
        };
        let put = |table: &mut Table, id: Option<u32>, v: f32, intent: bool| {
            if let Some(id) = id {
                let e = table.entry(id).or_insert((0.0, 0.0));
                if intent {
                    e.1 = v;
                } else {
                    e.0 = v;
                }
            }
        };
        session.visit_affinities(now, rules, |kind, key, score| match kind {
            AffinityKind::Brand => put(&mut s.brand, ids.id_of(key), score, false),
            AffinityKind::Category => put(&mut s.category, ids.id_of(key), score, false),
            AffinityKind::Attribute => put(&mut s.attribute, ids.id_of(key), score, false),
            AffinityKind::Intent => {
                if let Some(brand) = key.strip_prefix("brand:") {
                    put(&mut s.brand, ids.id(brand), score, true);
                } else if let Some(path) = key.strip_prefix("category:") {
                    put(&mut s.category, ids.id(path), score, true);
                } else {
                    put(&mut s.attribute, ids.id_of(key), score, true);
                }
            }
        });
        session.visit_items(|id, seen, skips| {
            let id = id.as_key();
            if with_seen && seen > 0 {
                s.seen.insert(id_hash(id), id.clone());
            }
            if skips > 0 {
                s.skipped.insert(id_hash(id), (id.clone(), skips));
            }
        });
        s
    }

    /// Whether there is nothing to personalize with.
    pub fn is_empty(&self) -> bool {
        self.brand.is_empty()
            && self.category.is_empty()
            && self.attribute.is_empty()
            && self.skipped.is_empty()
    }
}

/// A direct-mapped cache of values by key id, for one request: candidates of one result list
/// share few brands and category paths, so most of their boosts (each a `tanh`) and paths (a
/// lookup per level) are computed once. A slot holds one id at a time and is checked on every
/// read, so a clash only costs a recomputation.
struct Slots<T: Copy, const N: usize> {
    slots: [(u32, T); N],
}

impl<T: Copy + Default, const N: usize> Slots<T, N> {
    fn new() -> Self {
        Slots {
            slots: [(u32::MAX, T::default()); N],
        }
    }

    #[inline]
    fn get(&mut self, id: u32, compute: impl FnOnce() -> T) -> T {
        let slot = &mut self.slots[id as usize % N];
        if slot.0 != id {
            *slot = (id, compute());
        }
        slot.1
    }
}

/// Per-request memo of one set of signals' boosts (see [`Slots`]).
struct Memo {
    /// Brand id → the brand's boost.
    brand: Slots<f32, 64>,
    /// Deepest category level id → (the path's boost, its levels' intent affinities).
    path: Slots<(f32, f32), 64>,
}

impl Memo {
    fn new() -> Self {
        Memo {
            brand: Slots::new(),
            path: Slots::new(),
        }
    }
}

/// The value of key `id` in `table`, or zeros.
#[inline]
fn lookup(table: &Table, id: u32) -> (f32, f32) {
    if table.is_empty() {
        return (0.0, 0.0);
    }
    table.get(&id).copied().unwrap_or((0.0, 0.0))
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
    /// 1-based rank in the keyword list.
    pub keyword_rank: Option<u32>,
    /// 1-based rank in the vector list.
    pub vector_rank: Option<u32>,
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
    /// Why, when asked for.
    pub explanation: Option<Explanation>,
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

/// Lower-cases and keeps only letters and digits, single-spaced: the near-duplicate key
/// ([`Retrieved::title_key`]).
pub fn normalize_title(title: &str) -> String {
    crate::vocab::normalize(title)
}

fn boost(cap: f32, affinity: f32, scale: f32) -> f32 {
    if affinity == 0.0 || !affinity.is_finite() {
        return 0.0;
    }
    cap * tanh(affinity / scale)
}

/// `tanh` through one `exp` (libm's `tanhf` goes through `expm1f`, a fifth of reranking's time).
/// Absolute error below 1e-7, and exactly ±1 from |x| = 9 on; odd and monotone.
fn tanh(x: f32) -> f32 {
    if x.abs() >= 9.0 {
        return x.signum();
    }
    let e = (2.0 * x).exp();
    (e - 1.0) / (e + 1.0)
}

/// The personal boosts for one item from one set of signals.
///
/// Reads the candidate's [`Prepared`] key ids; the item's feature strings are read only to
/// explain.
fn boosts_for(
    r: &Retrieved<'_>,
    s: &Signals,
    memo: &mut Memo,
    source: Source,
    rules: &Rules,
    explain: bool,
    out: &mut Vec<Boost>,
) -> f32 {
    let caps = &rules.caps;
    let scale = rules.rerank.affinity_scale;
    let f = r.features;
    let (brand_hash, levels, attributes) = r.prepared.parts();
    let mut total = 0.0;
    let mut push = |kind, cap: f32, signals: Vec<(String, f32)>, b: f32, out: &mut Vec<Boost>| {
        if b != 0.0 {
            total += b;
            if explain {
                out.push(Boost {
                    source,
                    kind,
                    signals,
                    boost: b,
                    cap,
                });
            }
        }
    };
    let mut intent = 0.0;
    let mut intent_signals = Vec::new();

    if let Some(h) = brand_hash {
        // The item's strings are read only to explain.
        let brand = || f.brand.as_ref().map_or("", |b| b.as_str());
        let (a, i) = lookup(&s.brand, h);
        let b = memo.brand.get(h, || boost(caps.brand, a, scale));
        let signals = if explain && b != 0.0 {
            vec![(brand().to_owned(), a)]
        } else {
            Vec::new()
        };
        push(BoostKind::Brand, caps.brand, signals, b, out);
        if i != 0.0 {
            intent += i;
            if explain {
                intent_signals.push((format!("brand:{}", brand()), i));
            }
        }
    }

    if let Some(&leaf) = levels.last() {
        // The mean over the item's levels: liking the whole path counts fully. The levels are
        // the prefixes of the deepest one, so its id names the whole path.
        let (b, i) = memo.path.get(leaf, || {
            let (mut sum, mut intents) = (0.0, 0.0);
            for &h in levels {
                let (a, i) = lookup(&s.category, h);
                sum += a;
                intents += i;
            }
            (
                boost(caps.category, sum / levels.len() as f32, scale),
                intents,
            )
        });
        intent += i;
        let mut signals = Vec::new();
        if explain {
            for (c, &h) in f.categories.iter().zip(levels) {
                let (a, i) = lookup(&s.category, h);
                if a != 0.0 {
                    signals.push((c.to_string(), a));
                }
                if i != 0.0 {
                    intent_signals.push((format!("category:{c}"), i));
                }
            }
        }
        push(BoostKind::Category, caps.category, signals, b, out);
    }

    let mut sum = 0.0;
    let mut signals = Vec::new();
    if !(s.attribute.is_empty() || attributes.is_empty()) {
        for (n, &h) in attributes.iter().enumerate() {
            let attribute = || f.attributes.get(n).map_or("", |k| k.as_str());
            let (v, i) = lookup(&s.attribute, h);
            if v != 0.0 {
                sum += v;
                if explain {
                    signals.push((attribute().to_owned(), v));
                }
            }
            if i != 0.0 {
                intent += i;
                if explain {
                    intent_signals.push((attribute().to_owned(), i));
                }
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

    if !s.skipped.is_empty()
        && let Some((id, skips)) = s.skipped.get(&r.prepared.id_hash)
        && id.as_str() == r.item.id.as_str()
    {
        let b = caps.skip_penalty;
        total += b;
        if explain {
            out.push(Boost {
                source,
                kind: BoostKind::Skip,
                signals: vec![(r.item.id.to_string(), f32::from(*skips))],
                boost: b,
                cap: caps.skip_penalty,
            });
        }
    }
    total
}

/// Reranks retrieved results (in retrieval order) for one visitor. See the module docs.
pub fn rerank(
    retrieved: &[Retrieved<'_>],
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
    // Dedupe hash → index of the first result with it.
    let mut seen_titles: FxHashMap<u64, usize> =
        FxHashMap::with_capacity_and_hasher(retrieved.len(), Default::default());
    let mut session_memo = session.map(|_| Memo::new());
    let mut profile_memo = profile.map(|_| Memo::new());
    let mut ranked: Vec<Ranked> = Vec::with_capacity(retrieved.len());
    for (index, r) in retrieved.iter().enumerate() {
        if request.exclude_seen
            && steps.drop_seen
            && session.is_some_and(|s| {
                s.seen
                    .get(&r.prepared.id_hash)
                    .is_some_and(|id| id.as_str() == r.item.id.as_str())
            })
        {
            continue;
        }
        if steps.dedupe {
            // Equal hashes are compared in full: a hash collision never drops a result.
            match seen_titles.get(&r.prepared.dedupe_hash) {
                Some(&first) => {
                    let kept = &retrieved[first];
                    if kept.item.brand == r.item.brand
                        && kept.prepared.title_key == r.prepared.title_key
                    {
                        continue;
                    }
                }
                None => {
                    seen_titles.insert(r.prepared.dedupe_hash, index);
                }
            }
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
        let mut boosts = Vec::new();
        let mut sum = 0.0;
        if steps.profile_boosts
            && let Some(p) = profile
            && let Some(memo) = profile_memo.as_mut()
        {
            sum += boosts_for(
                r,
                p,
                memo,
                Source::Profile,
                rules,
                request.explain,
                &mut boosts,
            );
        }
        if steps.session_boosts
            && let Some(s) = session
            && let Some(memo) = session_memo.as_mut()
        {
            sum += boosts_for(
                r,
                s,
                memo,
                Source::Session,
                rules,
                request.explain,
                &mut boosts,
            );
        }
        let total_cap = rules.caps.total;
        let adjustment = sum.clamp(-total_cap, total_cap);
        let explanation = request.explain.then(|| Explanation {
            keyword_rank: r.keyword_rank,
            vector_rank: r.vector_rank,
            fused: r.fused,
            tier,
            relevance,
            retrieval_position: u32::try_from(index + 1).unwrap_or(u32::MAX),
            boosts,
            adjustment,
            capped: adjustment != sum,
            diversity_demoted: false,
        });
        ranked.push(Ranked {
            index,
            score: relevance + adjustment,
            explanation,
        });
    }
    // Equal scores keep retrieval order (the index breaks ties, so an unstable sort, which
    // needs no scratch allocation, gives the stable order).
    let order = |a: &Ranked, b: &Ranked| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index));
    let max_per_brand = rules.diversity.max_per_brand as usize;
    // Only the results that can fill the pages asked for need ordering: the best `needed`, and
    // as many again for results that diversity holds back (if more are needed, all are sorted).
    let head = request
        .needed
        .saturating_mul(2)
        .saturating_add(request.page_size)
        .max(1);
    if head < ranked.len() {
        ranked.select_nth_unstable_by(head - 1, order);
        let tail = ranked.split_off(head);
        ranked.sort_unstable_by(order);
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
    ranked.sort_unstable_by(order);
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
    let mut pending: std::collections::VecDeque<Ranked> = ranked.into();
    let mut out = Vec::with_capacity(pending.len());
    let mut complete = true;
    // Results of each brand on the page being filled, by brand id (a page holds few brands).
    let mut counts: Vec<(u32, usize)> = Vec::with_capacity(page_size.min(pending.len()));
    while !pending.is_empty() && out.len() < needed {
        counts.clear();
        let mut page = 0;
        let mut waiting = std::collections::VecDeque::new();
        while page < page_size {
            let Some(mut r) = pending.pop_front() else {
                complete &= out.len() >= needed;
                break;
            };
            let fits = match retrieved[r.index].prepared.parts().0 {
                Some(brand) => match counts.iter_mut().find(|(b, _)| *b == brand) {
                    Some((_, n)) if *n >= max_per_brand => false,
                    Some((_, n)) => {
                        *n += 1;
                        true
                    }
                    None => {
                        counts.push((brand, 1));
                        true
                    }
                },
                None => true,
            };
            if fits {
                out.push(r);
                page += 1;
            } else {
                if let Some(e) = r.explanation.as_mut() {
                    e.diversity_demoted = true;
                }
                waiting.push_back(r);
            }
        }
        // Held-back results go first in line for the next page, in score order.
        waiting.extend(pending);
        pending = waiting;
        if page == 0 {
            // Every remaining result is of a brand already full on this page: cannot happen
            // with an empty page, but never loop forever.
            out.extend(pending.drain(..));
        }
    }
    out.extend(pending);
    (out, complete)
}

#[cfg(test)]
mod tests;
