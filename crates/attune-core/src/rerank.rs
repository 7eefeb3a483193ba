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
use crate::key::Key;
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
/// (and cached with it): hashes and key addresses kept side by side, so ranking 200 candidates
/// scans one compact array instead of chasing each item's strings around the heap (those cache
/// misses, not the arithmetic, were most of reranking's time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The near-duplicate key: [`normalize_title`] of the title.
    pub title_key: String,
    /// Hash of (brand, title key): near-duplicates share it.
    dedupe_hash: u64,
    /// Hash of the item id, to look up seen and skipped items.
    id_hash: u64,
    /// [`Key::addr`] of the brand (0 if none), of the deepest category level (0 if none), then
    /// of each attribute, in the order of the item's features: inline (no pointer to chase) for
    /// items with up to [`INLINE_KEYS`] − 2 attribute values.
    inline: [usize; INLINE_KEYS],
    /// All the keys, when there are more than fit inline.
    spill: Vec<usize>,
    len: usize,
}

/// Key addresses a [`Prepared`] holds without a separate allocation.
const INLINE_KEYS: usize = 14;

impl Prepared {
    /// Prepares an item and its features (which must outlive any use of the result: the key
    /// addresses are only meaningful while those keys are alive).
    pub fn new(item: &Item, features: &ItemFeatures) -> Self {
        let title_key = normalize_title(&item.title);
        let dedupe_hash = FxBuildHasher.hash_one((item.brand.as_deref(), title_key.as_str()));
        let mut keys = Vec::with_capacity(2 + features.attributes.len());
        keys.push(features.brand.as_ref().map_or(0, Key::addr));
        keys.push(features.categories.last().map_or(0, Key::addr));
        keys.extend(features.attributes.iter().map(Key::addr));
        let mut inline = [0; INLINE_KEYS];
        let len = keys.len();
        let spill = if len <= INLINE_KEYS {
            inline[..len].copy_from_slice(&keys);
            Vec::new()
        } else {
            keys
        };
        Prepared {
            title_key,
            dedupe_hash,
            id_hash: id_hash(item.id.as_str()),
            inline,
            spill,
            len,
        }
    }

    fn keys(&self) -> &[usize] {
        if self.len <= INLINE_KEYS {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
}

fn id_hash(id: &str) -> u64 {
    FxBuildHasher.hash_one(id)
}

/// Affinities decayed to one time and indexed for constant-time lookups while ranking: built once
/// per request from a session (or a long-term profile).
///
/// The maps use the Fx hash: a result page looks up every key of every candidate (a few thousand
/// short strings per request), and the keys are catalog strings, not attacker-chosen map keys
/// that could be made to collide (a client can only name keys the catalog has).
#[derive(Debug, Clone, Default)]
pub struct Signals {
    brand: FxHashMap<Key, f32>,
    category: FxHashMap<Key, f32>,
    attribute: FxHashMap<Key, f32>,
    intent_brand: FxHashMap<String, f32>,
    intent_category: FxHashMap<String, f32>,
    intent_attribute: FxHashMap<String, f32>,
    /// Item id hash → the id (checked on a hit).
    seen: FxHashMap<u64, Key>,
    /// Item id hash → (the id, skips).
    skipped: FxHashMap<u64, (Key, u16)>,
    /// The same affinities by the catalog's key allocation, when built with the catalog's
    /// interner ([`Signals::from_session_interned`]).
    by_addr: Option<ByAddr>,
}

/// (affinity, intent affinity) by [`Key::addr`] of the catalog's interned key.
#[derive(Debug, Clone, Default)]
struct ByAddr {
    brand: FxHashMap<usize, (f32, f32)>,
    category: FxHashMap<usize, (f32, f32)>,
    attribute: FxHashMap<usize, (f32, f32)>,
}

impl Signals {
    /// The signals of a live session at `now`.
    pub fn from_session(session: &Session, now: Timestamp, rules: &Rules) -> Self {
        let mut s = Signals::default();
        session.visit_affinities(now, rules, |kind, key, score| match kind {
            AffinityKind::Brand => {
                s.brand.insert(key.clone(), score);
            }
            AffinityKind::Category => {
                s.category.insert(key.clone(), score);
            }
            AffinityKind::Attribute => {
                s.attribute.insert(key.clone(), score);
            }
            AffinityKind::Intent => {
                if let Some(brand) = key.strip_prefix("brand:") {
                    s.intent_brand.insert(brand.to_owned(), score);
                } else if let Some(path) = key.strip_prefix("category:") {
                    s.intent_category.insert(path.to_owned(), score);
                } else {
                    s.intent_attribute.insert(key.to_string(), score);
                }
            }
        });
        session.visit_items(|id, seen, skips| {
            let id = id.as_key();
            if seen > 0 {
                s.seen.insert(id_hash(id), id.clone());
            }
            if skips > 0 {
                s.skipped.insert(id_hash(id), (id.clone(), skips));
            }
        });
        s
    }

    /// [`Signals::from_session`], also indexed by the address of the catalog's interned key for
    /// each affinity (`interned` maps a brand, a category path or an attribute `key:value` to the
    /// [`Key::addr`] of the catalog's copy, `None` if no item has it). Reranking then never reads
    /// a candidate's strings. Only for candidates whose feature keys are the catalog's interned
    /// keys (the engine's retrievals): a key the catalog does not hold can match no such
    /// candidate, so nothing is lost by leaving it out.
    pub fn from_session_interned(
        session: &Session,
        now: Timestamp,
        rules: &Rules,
        interned: &dyn Fn(&str) -> Option<usize>,
    ) -> Self {
        let mut s = Self::from_session(session, now, rules);
        let mut t = ByAddr::default();
        let fill = |table: &mut FxHashMap<usize, (f32, f32)>, key: &str, v: f32, intent: bool| {
            if let Some(addr) = interned(key) {
                let e = table.entry(addr).or_insert((0.0, 0.0));
                if intent {
                    e.1 = v;
                } else {
                    e.0 = v;
                }
            }
        };
        for (k, &v) in &s.brand {
            fill(&mut t.brand, k, v, false);
        }
        for (k, &v) in &s.intent_brand {
            fill(&mut t.brand, k, v, true);
        }
        for (k, &v) in &s.category {
            fill(&mut t.category, k, v, false);
        }
        for (k, &v) in &s.intent_category {
            fill(&mut t.category, k, v, true);
        }
        for (k, &v) in &s.attribute {
            fill(&mut t.attribute, k, v, false);
        }
        for (k, &v) in &s.intent_attribute {
            fill(&mut t.attribute, k, v, true);
        }
        s.by_addr = Some(t);
        s
    }

    /// Whether there is nothing to personalize with.
    pub fn is_empty(&self) -> bool {
        self.brand.is_empty()
            && self.category.is_empty()
            && self.attribute.is_empty()
            && self.intent_brand.is_empty()
            && self.intent_category.is_empty()
            && self.intent_attribute.is_empty()
            && self.skipped.is_empty()
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
    /// How many leading results the caller will use (offset + limit): diversity fills the pages
    /// that cover them, and the results after them stay in score order (work saved per request).
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

/// Per-request memo of [`Signals`] lookups by key allocation.
///
/// A page of 200 candidates names a few thousand feature keys but only a few hundred distinct
/// ones (brands, category levels and attribute values repeat), and the catalog shares one
/// allocation per distinct string. So each distinct key is looked up by string (and its boost's
/// `tanh` computed) once, and every repeat costs one integer hash. Correctness never depends on
/// the sharing: two allocations of one string are two entries with the same value.
struct Memo {
    /// Brand key → (brand boost, intent affinity).
    brand: FxHashMap<usize, (f32, f32)>,
    /// Category level → (affinity, intent affinity).
    category: FxHashMap<usize, (f32, f32)>,
    /// Deepest category level → (category boost, intent affinity) of the whole path.
    path: FxHashMap<usize, (f32, f32)>,
    /// Attribute `key:value` → (affinity, intent affinity).
    attribute: FxHashMap<usize, (f32, f32)>,
}

impl Memo {
    fn new() -> Self {
        // Sized for a typical page of candidates: no rehash on the hot path.
        let map = || FxHashMap::with_capacity_and_hasher(128, Default::default());
        Memo {
            brand: map(),
            category: map(),
            path: FxHashMap::with_capacity_and_hasher(64, Default::default()),
            attribute: map(),
        }
    }
}

/// The personal boosts for one item from one set of signals.
///
/// Memo hits read only the candidate's [`Prepared`] keys; the item's feature strings are read on
/// a memo miss (once per distinct key per request) and to explain.
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
    let keys = r.prepared.keys();
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

    if let Some(&addr) = keys.first()
        && addr != 0
    {
        // The item's strings are read only on a memo miss, or to explain.
        let brand = || f.brand.as_ref().map_or("", |b| b.as_str());
        let (b, i) = *memo.brand.entry(addr).or_insert_with(|| {
            let (a, i) = match &s.by_addr {
                Some(t) => t.brand.get(&addr).copied().unwrap_or((0.0, 0.0)),
                None => (
                    s.brand.get(brand()).copied().unwrap_or(0.0),
                    s.intent_brand.get(brand()).copied().unwrap_or(0.0),
                ),
            };
            (boost(caps.brand, a, scale), i)
        });
        let signals = if explain && b != 0.0 {
            vec![(
                brand().to_owned(),
                s.brand.get(brand()).copied().unwrap_or(0.0),
            )]
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

    if let Some(&leaf) = keys.get(1)
        && leaf != 0
    {
        let mut level = |c: &Key| {
            *memo
                .category
                .entry(c.addr())
                .or_insert_with(|| match &s.by_addr {
                    Some(t) => t.category.get(&c.addr()).copied().unwrap_or((0.0, 0.0)),
                    None => (
                        s.category.get(c.as_str()).copied().unwrap_or(0.0),
                        s.intent_category.get(c.as_str()).copied().unwrap_or(0.0),
                    ),
                })
        };
        // The mean over the item's levels: liking the whole path counts fully. The levels are
        // the prefixes of the deepest one, so the path's boost and intent are memoized by it.
        let (b, path_intent) = match memo.path.get(&leaf) {
            Some(&found) => found,
            None => {
                let (mut sum, mut intents) = (0.0, 0.0);
                for c in &f.categories {
                    let (a, i) = level(c);
                    sum += a;
                    intents += i;
                }
                let levels = f.categories.len().max(1) as f32;
                let found = (boost(caps.category, sum / levels, scale), intents);
                memo.path.insert(leaf, found);
                found
            }
        };
        intent += path_intent;
        let mut signals = Vec::new();
        if explain {
            for c in &f.categories {
                let (a, i) = level(c);
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
    let attribute = |n: usize| f.attributes.get(n).map_or("", |k| k.as_str());
    for (n, &addr) in keys.iter().skip(2).enumerate() {
        let (v, i) = *memo
            .attribute
            .entry(addr)
            .or_insert_with(|| match &s.by_addr {
                Some(t) => t.attribute.get(&addr).copied().unwrap_or((0.0, 0.0)),
                None => (
                    s.attribute.get(attribute(n)).copied().unwrap_or(0.0),
                    s.intent_attribute.get(attribute(n)).copied().unwrap_or(0.0),
                ),
            });
        if v != 0.0 {
            sum += v;
            if explain {
                signals.push((attribute(n).to_owned(), v));
            }
        }
        if i != 0.0 {
            intent += i;
            if explain {
                intent_signals.push((attribute(n).to_owned(), i));
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
            && let Some(profile_memo) = profile_memo.as_mut()
        {
            sum += boosts_for(
                r,
                p,
                profile_memo,
                Source::Profile,
                rules,
                request.explain,
                &mut boosts,
            );
        }
        if steps.session_boosts
            && let Some(s) = session
            && let Some(session_memo) = session_memo.as_mut()
        {
            sum += boosts_for(
                r,
                s,
                session_memo,
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
    // Stable: equal scores keep retrieval order.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    if steps.brand_diversity {
        ranked = diversify(
            ranked,
            retrieved,
            rules.diversity.max_per_brand as usize,
            request.page_size,
            request.needed,
        );
    }
    ranked
}

/// Fills pages of `page_size` greedily in score order with at most `max_per_brand` results of one
/// brand each; a result that does not fit waits for the next page (items without a brand are never
/// held back). Keeps everything, only moves. Pages past the one that reaches `needed` results are
/// left in score order.
fn diversify(
    ranked: Vec<Ranked>,
    retrieved: &[Retrieved<'_>],
    max_per_brand: usize,
    page_size: usize,
    needed: usize,
) -> Vec<Ranked> {
    let page_size = page_size.max(1);
    let max_per_brand = max_per_brand.max(1);
    let mut pending: std::collections::VecDeque<Ranked> = ranked.into();
    let mut out = Vec::with_capacity(pending.len());
    while !pending.is_empty() && out.len() < needed {
        let mut counts: FxHashMap<&str, usize> = FxHashMap::default();
        let mut page = 0;
        let mut waiting = std::collections::VecDeque::new();
        while page < page_size {
            let Some(mut r) = pending.pop_front() else {
                break;
            };
            let brand = retrieved[r.index].item.brand.as_deref();
            let fits = match brand {
                Some(b) => {
                    let n = counts.entry(b).or_insert(0);
                    if *n < max_per_brand {
                        *n += 1;
                        true
                    } else {
                        false
                    }
                }
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
    out
}

#[cfg(test)]
mod tests;
