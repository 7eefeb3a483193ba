//! Recommendations: five surfaces from one staged pipeline.
//!
//! 1. **Context**: the visitor's session (recent engagements, cart, purchases, seen items) and the
//!    anchors the surface is about (the item asked about, the cart, the latest engagements).
//! 2. **Candidates**: each source the surface's rules name ([`CandidateSource`]) proposes up to
//!    its budget, every proposal passing the exclusions (blocked, out of stock, the anchor, the
//!    cart on the cart surface, items already bought unless their category is repeat-purchase,
//!    items already seen where the surface says so).
//! 3. **Hybrid scoring**: each source's scores are divided by its best (so a weight means the
//!    same for every source), sources that can score any item score the others' proposals too,
//!    and the blend is `Σ weight × normalized score` plus the new-arrival boost.
//! 4. **Personal rerank**: the same reranker and caps as search (session and profile boosts,
//!    near-duplicates collapsed, brand diversity), reading the session already in hand.
//! 5. **Business rules**: at most `max_per_category` per category (the rest move down), then the
//!    pinned items first.
//!
//! Every item can say why it is there: the sources that proposed it with their ranks and scores,
//! the blend, the boosts with their caps, and each rule that moved it.

mod content;
mod online;
mod source;

use std::collections::HashMap;
use std::sync::Arc;

use attune_core::bandit::{self, Draw};
use attune_core::rerank::{
    self, Explanation, KeySpace, RerankRequest, Retrieved, Signals, SourceHit,
};
use attune_core::rules::{RecommendRules, Surface};
use attune_core::session::ItemSummary;
use attune_core::{AffinityKind, EventKind, ItemId, Key, Session, SessionId, Timestamp, UserId};
use attune_store::bandit::BanditStore;
use attune_store::bandit::memory::{MemoryBanditConfig, MemoryBanditStore};
use parking_lot::RwLock;
use rand::SeedableRng;
use rustc_hash::FxHashMap;

pub(crate) use content::ContentSource;
pub use online::{
    CooccurrenceSource, OnlineConfig, OnlineSources, SessionKnnSource, TrendingSource,
};
pub use source::{CandidateSource, Observation, Proposal, RecContext, SourceError};

use crate::catalog::{Catalog, CatalogItem};
use crate::error::{Error, Result};
use crate::personal::Personal;

/// Largest list.
pub const MAX_LIMIT: usize = 100;

/// The catalog lookups a request's memo has room for before it grows.
const LOOKUPS: usize = 512;

/// Intents of the session a feed follows.
const MAX_INTENTS: usize = 5;

/// A recommendation request, as the API asks for it.
#[derive(Debug, Clone)]
pub struct RecommendRequest {
    /// Which surface.
    pub surface: Surface,
    /// The visitor's session.
    pub session_id: Option<SessionId>,
    /// The signed-in user (long-term profile).
    pub user_id: Option<UserId>,
    /// The anchor item: required for `similar` and `bought-together`; for `next` and `cart`
    /// the item being looked at, if any.
    pub item_id: Option<ItemId>,
    /// How many items (1 to [`MAX_LIMIT`]).
    pub limit: usize,
    /// Attach an explanation to each item.
    pub explain: bool,
    /// Restrict the pipeline to these sources (evaluation, debugging); `None`: the surface's.
    pub sources: Option<Vec<String>>,
}

/// One rule that moved an item.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleEffect {
    /// Created within `new_arrival_days`: `boost` added to the blend.
    NewArrival {
        /// What was added.
        boost: f32,
    },
    /// Bought before, in a repeat-purchase category: kept ("buy again").
    BuyAgain,
    /// Pinned on this surface by the rules.
    Pinned,
    /// Moved down: its category already had `max` items higher in the list.
    CategoryCap {
        /// The cap.
        max: u32,
    },
}

/// Why an item is in the list, where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct RecExplanation {
    /// The sources that proposed or scored it: rank (0 when it only scored the item) and score.
    pub sources: Vec<SourceHit>,
    /// Each source's normalized score times its weight, by source.
    pub contributions: Vec<(&'static str, f32)>,
    /// The blend: the sum of the contributions plus rule boosts.
    pub blended: f32,
    /// The personal rerank's explanation (boosts, caps, brand diversity).
    pub rerank: Explanation,
    /// The bandit's draw, when a cold visitor's list was made by the bandit.
    pub bandit: Option<Draw>,
    /// The business rules that moved it.
    pub rules: Vec<RuleEffect>,
}

/// One recommended item.
#[derive(Debug, Clone)]
pub struct Recommendation {
    /// The item.
    pub item: Arc<CatalogItem>,
    /// Its final score (blend share plus personal boosts).
    pub score: f32,
    /// How many the visitor usually takes, when known (cart adds and purchases).
    pub usual_quantity: Option<f32>,
    /// Why, when asked.
    pub explanation: Option<Box<RecExplanation>>,
}

/// How a list was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// The staged pipeline over these sources.
    Pipeline(Vec<&'static str>),
    /// A cold visitor: the bandit over trending and new items.
    Bandit,
    /// Nothing proposed anything (no history yet): new arrivals, then the catalog in order.
    Fallback,
}

/// A recommendation list.
#[derive(Debug, Clone)]
pub struct RecommendOutcome {
    /// Which surface.
    pub surface: Surface,
    /// How it was made.
    pub strategy: Strategy,
    /// The list.
    pub items: Vec<Recommendation>,
    /// Whether session or profile signals took part.
    pub personalized: bool,
    /// Stores (`sessions`, `profiles`) and sources that failed for this request: the list was
    /// made without them.
    pub degraded: Vec<&'static str>,
}

/// The engine's recommendation side: the sources, by name.
pub(crate) struct Recommender {
    sources: RwLock<Vec<Arc<dyn CandidateSource>>>,
    content: Arc<ContentSource>,
    bandit: Arc<dyn BanditStore>,
    /// Whether any source learns from events (so ingest prepares observations only then).
    learns: std::sync::atomic::AtomicBool,
    newest: parking_lot::Mutex<Option<Newest>>,
}

impl Recommender {
    pub(crate) fn new(catalog: Arc<dyn Catalog>) -> Self {
        let content = Arc::new(ContentSource::new(catalog));
        let sources: Vec<Arc<dyn CandidateSource>> = vec![content.clone()];
        Recommender {
            sources: RwLock::new(sources),
            content,
            bandit: Arc::new(MemoryBanditStore::new(MemoryBanditConfig::default())),
            learns: std::sync::atomic::AtomicBool::new(false),
            newest: parking_lot::Mutex::new(None),
        }
    }

    pub(crate) fn content(&self) -> &ContentSource {
        &self.content
    }

    /// Serves from another catalog: the content source reads it.
    pub(crate) fn set_catalog(&mut self, catalog: Arc<dyn Catalog>) {
        let content = Arc::new(ContentSource::new(catalog));
        self.add(content.clone());
        self.content = content;
    }

    pub(crate) fn set_bandit(&mut self, store: Arc<dyn BanditStore>) {
        self.bandit = store;
    }

    pub(crate) fn bandit(&self) -> &dyn BanditStore {
        &*self.bandit
    }

    /// Forgets what sources keep of one session (privacy: "forget me").
    pub(crate) fn forget_session(&self, session: &SessionId) {
        for s in self.sources.read().iter() {
            s.forget_session(session);
        }
    }

    /// Adds a source, replacing one of the same name.
    pub(crate) fn add(&self, source: Arc<dyn CandidateSource>) {
        let mut sources = self.sources.write();
        sources.retain(|s| s.name() != source.name());
        sources.push(source);
        let learns = sources.iter().any(|s| s.learns());
        self.learns
            .store(learns, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn learns(&self) -> bool {
        self.learns.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.sources.read().iter().map(|s| s.name()).collect()
    }

    fn source(&self, name: &str) -> Option<Arc<dyn CandidateSource>> {
        self.sources
            .read()
            .iter()
            .find(|s| s.name() == name)
            .cloned()
    }

    /// Lets every source learn from accepted events of one session, in order.
    pub(crate) fn observe(&self, session_id: &SessionId, events: &[Observed]) {
        // Observing takes microseconds and never waits: the list is read under its lock.
        let sources = self.sources.read();
        for e in events {
            let o = Observation {
                session_id,
                kind: e.kind,
                item_id: &e.item_id,
                quantity: e.quantity,
                at: e.at,
                earlier: &e.earlier,
            };
            for s in sources.iter() {
                s.observe(&o);
            }
        }
    }

    /// Writes every source's state that must survive a restart.
    pub(crate) fn save(&self) -> Vec<SourceError> {
        let sources = self.sources.read().clone();
        sources.iter().filter_map(|s| s.save().err()).collect()
    }
}

/// One applied item event, ready for the online sources.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub(crate) kind: EventKind,
    pub(crate) item_id: ItemId,
    pub(crate) quantity: u32,
    pub(crate) at: Timestamp,
    pub(crate) earlier: Vec<(EventKind, ItemId)>,
}

/// Engagements that say the visitor was interested (what sequences and neighbours are made of;
/// a source's `recent` items are the session's engagements).
pub fn is_engagement(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::View
            | EventKind::Click
            | EventKind::AddToCart
            | EventKind::Purchase
            | EventKind::Wishlist
            | EventKind::RecommendationClick
    )
}

/// What the pipeline knows of the visitor.
struct Visitor {
    session: Option<Session>,
    recent: Vec<ItemId>,
    items: Vec<ItemSummary>,
    /// `items` by id: the exclusions ask once per proposed candidate (hundreds per request).
    by_id: FxHashMap<ItemId, usize>,
}

impl Visitor {
    fn of(session: Option<Session>) -> Visitor {
        let (recent, items) = match &session {
            Some(s) => (
                s.recent_items()
                    .into_iter()
                    .filter(|r| is_engagement(r.kind))
                    .map(|r| r.item_id)
                    .collect(),
                s.items(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let by_id = items
            .iter()
            .enumerate()
            .map(|(i, s)| (s.item_id.clone(), i))
            .collect();
        Visitor {
            session,
            recent,
            items,
            by_id,
        }
    }

    fn summary(&self, id: &ItemId) -> Option<&ItemSummary> {
        self.by_id.get(id).map(|&i| &self.items[i])
    }

    fn cart(&self) -> Vec<ItemId> {
        self.items
            .iter()
            .filter(|s| s.in_cart > 0)
            .map(|s| s.item_id.clone())
            .collect()
    }
}

/// The items a surface is about, strongest first.
fn anchors(surface: Surface, item: Option<&ItemId>, visitor: &Visitor) -> Vec<ItemId> {
    let latest = |n: usize| -> Vec<ItemId> {
        let mut out: Vec<ItemId> = Vec::new();
        for id in visitor.recent.iter().rev() {
            if !out.contains(id) {
                out.push(id.clone());
            }
            if out.len() == n {
                break;
            }
        }
        out
    };
    let mut out = match surface {
        Surface::Similar | Surface::BoughtTogether => Vec::new(),
        Surface::Cart => {
            let cart = visitor.cart();
            if cart.is_empty() { latest(3) } else { cart }
        }
        Surface::Home => latest(5),
        Surface::Next => latest(3),
    };
    if let Some(item) = item {
        out.retain(|a| a != item);
        out.insert(0, item.clone());
    }
    out
}

fn known_sources(names: &[String]) -> Result<()> {
    for (i, n) in names.iter().enumerate() {
        if !attune_core::rules::SOURCE_NAMES.contains(&n.as_str()) {
            return Err(Error::Invalid {
                field: "sources".into(),
                message: format!(
                    "sources[{i}] {n:?} is not a source; use {}",
                    attune_core::rules::SOURCE_NAMES.join(", ")
                ),
            });
        }
    }
    if names.is_empty() {
        return Err(Error::Invalid {
            field: "sources".into(),
            message: "name at least one source".into(),
        });
    }
    Ok(())
}

/// Whether an item's category path (any level) is one the rules mark as repeat-purchase.
fn repeat_purchase(item: &CatalogItem, rules: &RecommendRules) -> bool {
    !rules.repeat_purchase_categories.is_empty()
        && item.features.categories.iter().any(|c| {
            rules
                .repeat_purchase_categories
                .iter()
                .any(|r| r == c.as_str())
        })
}

fn is_new(item: &CatalogItem, now: Timestamp, rules: &RecommendRules) -> bool {
    let window = i64::from(rules.new_arrival_days) * 86_400_000;
    window > 0 && item.item.created_at.as_millis() >= now.as_millis() - window
}

/// One source's answer: its name, weight, proposals, and the source (to score others').
type SourceList = (
    &'static str,
    f32,
    Vec<Proposal>,
    Option<Arc<dyn CandidateSource>>,
);

/// A catalog item a request looked up, and whether it passed the exclusions.
type LookedUp = (Arc<CatalogItem>, bool);

/// One candidate on its way through the pipeline.
struct Candidate {
    item: Arc<CatalogItem>,
    hits: Vec<SourceHit>,
    contributions: Vec<(&'static str, f32)>,
    blended: f32,
    rules: Vec<RuleEffect>,
    draw: Option<Draw>,
}

impl Candidate {
    fn new(item: Arc<CatalogItem>) -> Candidate {
        Candidate {
            item,
            hits: Vec::new(),
            contributions: Vec::new(),
            blended: 0.0,
            rules: Vec::new(),
            draw: None,
        }
    }
}

/// Runs the pipeline. See the module docs.
pub(crate) async fn recommend(
    personal: &Personal<'_>,
    recommender: &Recommender,
    req: RecommendRequest,
) -> Result<RecommendOutcome> {
    if req.limit == 0 || req.limit > MAX_LIMIT {
        return Err(Error::Invalid {
            field: "limit".into(),
            message: format!("must be from 1 to {MAX_LIMIT}"),
        });
    }
    if let Some(names) = &req.sources {
        known_sources(names)?;
    }
    let catalog = personal.catalog;
    let anchor_item = match &req.item_id {
        Some(id) => Some(
            catalog
                .get(id.as_str())
                .ok_or_else(|| Error::AnchorNotFound(id.to_string()))?,
        ),
        None if req.surface.needs_anchor() => {
            return Err(Error::Invalid {
                field: "item_id".into(),
                message: format!(
                    "the {} surface needs the item it is about",
                    req.surface.path_name()
                ),
            });
        }
        None => None,
    };
    let rules = &personal.rules;
    let rec = &rules.recommend;
    let now = personal.now;
    let session = match &req.session_id {
        Some(id) => personal.session(id).await?,
        None => None,
    };
    let visitor = Visitor::of(session);
    let anchors = anchors(req.surface, req.item_id.as_ref(), &visitor);
    let mut recent = visitor.recent.clone();
    if req.surface == Surface::Next
        && let Some(item) = &req.item_id
        && recent.last() != Some(item)
    {
        recent.push(item.clone());
    }
    // Feeds follow what the visitor searched for; lists about an item follow the item.
    let intents: Vec<(Key, f32)> = match (&visitor.session, req.surface) {
        (Some(s), Surface::Home | Surface::Next | Surface::Cart) => s
            .top(now, rules, MAX_INTENTS)
            .of(AffinityKind::Intent)
            .iter()
            .filter(|a| a.score > 0.0)
            .map(|a| (a.key.clone(), a.score))
            .collect(),
        _ => Vec::new(),
    };
    let ctx = RecContext {
        surface: req.surface,
        session_id: req.session_id.as_ref(),
        recent: &recent,
        anchors: &anchors,
        intents: &intents,
        now,
    };
    let surface_rules = rec.surfaces.of(req.surface);
    let cart: Vec<ItemId> = if req.surface == Surface::Cart {
        visitor.cart()
    } else {
        Vec::new()
    };

    // Exclusions, as one predicate every source applies to what it proposes.
    let excluded_item = |c: &CatalogItem| -> bool {
        let id = &c.item.id;
        if rec.in_stock_only && !c.item.in_stock {
            return true;
        }
        if rec.blocked.iter().any(|b| b == id.as_str()) {
            return true;
        }
        if anchor_item.as_ref().is_some_and(|a| &a.item.id == id) && req.surface != Surface::Next {
            return true;
        }
        if cart.contains(id) {
            return true;
        }
        if let Some(s) = visitor.summary(id) {
            if s.purchases > 0 && !repeat_purchase(c, rec) {
                return true;
            }
            if surface_rules.exclude_seen && s.seen > 0 && s.purchases == 0 {
                return true;
            }
        }
        false
    };
    // Each proposed id is looked up once per request: the exclusions ask, the candidates reuse.
    // (A mutex only because the request's future must be `Send`: one task holds it, never
    // across an await.)
    // (Sized for the proposals of a usual recipe: growing it took a tenth of a request.)
    let looked_up: parking_lot::Mutex<FxHashMap<ItemId, Option<LookedUp>>> =
        parking_lot::Mutex::new(FxHashMap::with_capacity_and_hasher(
            LOOKUPS,
            Default::default(),
        ));
    let lookup = |memo: &mut FxHashMap<ItemId, Option<LookedUp>>, id: &ItemId| {
        if let Some(hit) = memo.get(id) {
            return hit.as_ref().is_some_and(|(_, ok)| *ok);
        }
        let hit = catalog.get_id(id).map(|c| {
            let ok = !excluded_item(&c);
            (c, ok)
        });
        let ok = hit.as_ref().is_some_and(|(_, ok)| *ok);
        memo.insert(id.clone(), hit);
        ok
    };
    // One lock per call: the task holding it is the only one.
    let accept = |id: &ItemId| lookup(&mut looked_up.lock(), id);

    // Cold start: the bandit serves a visitor the sources know nothing about.
    let configured: Vec<(&'static str, attune_core::rules::SourceWeight)> = match &req.sources {
        Some(names) => surface_rules
            .sources
            .iter()
            .filter(|(n, _)| names.iter().any(|m| m == n))
            .chain(
                // A source asked for but not configured on this surface still runs alone,
                // with a default budget (evaluation of a single source).
                attune_core::rules::SOURCE_NAMES
                    .into_iter()
                    .filter(|n| {
                        names.iter().any(|m| m == n)
                            && !surface_rules.sources.iter().any(|(c, _)| c == *n)
                    })
                    .map(|n| {
                        (
                            n,
                            attune_core::rules::SourceWeight {
                                budget: 100,
                                weight: 1.0,
                            },
                        )
                    }),
            )
            .collect(),
        None => surface_rules.sources.iter().collect(),
    };

    // Candidates from each source, or, for a cold visitor's home feed, from the bandit.
    let mut degraded = Vec::new();
    let mut used = Vec::new();
    let cold = req.surface == Surface::Home
        && req.sources.is_none()
        && visitor.session.as_ref().map_or(0, Session::event_count) < rec.cold_start_events;
    let mut draws: FxHashMap<ItemId, Draw> = FxHashMap::default();
    let mut bandit_list = None;
    if cold {
        match bandit_pool(recommender, catalog, &ctx, rec, &accept, &|c| {
            !excluded_item(c)
        })
        .await
        {
            Ok(list) if !list.is_empty() => {
                for (id, d) in &list {
                    draws.insert(id.clone(), *d);
                }
                bandit_list = Some(
                    list.into_iter()
                        .map(|(item_id, d)| Proposal {
                            item_id,
                            // A draw of 0 (which a Beta can give) still ranks, just last.
                            score: (d.sample as f32).max(f32::MIN_POSITIVE),
                        })
                        .collect::<Vec<_>>(),
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the bandit store failed; serving the pipeline");
                degraded.push("bandit");
            }
        }
    }
    let mut by_item: FxHashMap<ItemId, usize> =
        FxHashMap::with_capacity_and_hasher(LOOKUPS, Default::default());
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut lists: Vec<SourceList> = Vec::new();
    if let Some(list) = bandit_list {
        used.push("bandit");
        lists.push(("bandit", 1.0, list, None));
    }
    let from_sources = if lists.is_empty() {
        configured.as_slice()
    } else {
        &[]
    };
    {
        // The sources ask from this thread, without an await between: the memo is locked once
        // for all of them (not once per proposal).
        let mut locked = looked_up.lock();
        let memo = std::cell::RefCell::new(&mut *locked);
        let accept = |id: &ItemId| lookup(&mut memo.borrow_mut(), id);
        for (name, weight) in from_sources {
            let Some(source) = recommender.source(name) else {
                continue;
            };
            match source.candidates(&ctx, weight.budget as usize, &accept) {
                Ok(list) => {
                    if !list.is_empty() {
                        used.push(*name);
                    }
                    lists.push((name, weight.weight, list, Some(source)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recommendation source failed");
                    degraded.push(*name);
                }
            }
        }
    }
    // Each candidate's item is moved out of the memo (an Arc count touched once, not twice: the
    // items are shared by every request in flight).
    let mut memo = looked_up.into_inner();
    // Each list's proposals' candidates (`usize::MAX`: not in the catalog), for the blend.
    let mut positions: Vec<Vec<usize>> = Vec::with_capacity(lists.len());
    for (name, _, list, _) in &lists {
        let mut at = Vec::with_capacity(list.len());
        for (rank, p) in list.iter().enumerate() {
            let i = match by_item.get(&p.item_id) {
                Some(&i) => i,
                None => {
                    let found = match memo.get_mut(&p.item_id) {
                        Some(hit) => hit.take().map(|(item, _)| item),
                        None => catalog.get_id(&p.item_id),
                    };
                    let Some(item) = found else {
                        at.push(usize::MAX);
                        continue;
                    };
                    by_item.insert(p.item_id.clone(), candidates.len());
                    candidates.push(Candidate::new(item));
                    candidates.len() - 1
                }
            };
            at.push(i);
            // What proposed each candidate, and the blend's parts below, only explain it: a
            // quiet request keeps none (two allocations per candidate, hundreds per request).
            if req.explain {
                candidates[i].hits.push(SourceHit {
                    source: name,
                    rank: u32::try_from(rank + 1).unwrap_or(u32::MAX),
                    score: p.score,
                });
            }
        }
        positions.push(at);
    }

    // Hybrid scoring: each source's scores over its best, times its weight; sources that can
    // score any item score what the others proposed.
    // (The candidates' ids, made when a source is first asked to score them.)
    let mut ids: Option<Vec<ItemId>> = None;
    for ((name, weight, list, source), at) in lists.iter().zip(&positions) {
        let mut scores: Vec<Option<f32>> = vec![None; candidates.len()];
        for (p, &i) in list.iter().zip(at) {
            if i != usize::MAX {
                scores[i] = Some(p.score);
            }
        }
        if scores.iter().any(Option::is_none)
            && let Some(source) = source
            && let Some(extra) = source.score(
                &ctx,
                ids.get_or_insert_with(|| {
                    candidates.iter().map(|c| c.item.item.id.clone()).collect()
                }),
            )
        {
            match extra {
                Ok(extra) => {
                    for (s, e) in scores.iter_mut().zip(extra) {
                        if s.is_none() && e.is_finite() && e > 0.0 {
                            *s = Some(e);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "recommendation source could not score"),
            }
        }
        let best = scores
            .iter()
            .flatten()
            .copied()
            .filter(|s| s.is_finite())
            .fold(0.0f32, f32::max);
        if best <= 0.0 {
            continue;
        }
        for (c, s) in candidates.iter_mut().zip(&scores) {
            if let Some(s) = s
                && s.is_finite()
                && *s > 0.0
            {
                let part = weight * (s / best).min(1.0);
                c.blended += part;
                if !req.explain {
                    continue;
                }
                c.contributions.push((name, part));
                if !c.hits.iter().any(|h| h.source == *name) {
                    c.hits.push(SourceHit {
                        source: name,
                        rank: 0,
                        score: *s,
                    });
                }
            }
        }
    }

    if !draws.is_empty() {
        for c in &mut candidates {
            c.draw = draws.get(&c.item.item.id).copied();
        }
    }
    let mut strategy = if draws.is_empty() {
        Strategy::Pipeline(used)
    } else {
        Strategy::Bandit
    };
    if candidates.is_empty() && req.sources.is_none() {
        // Nothing to go on: new arrivals first, then the catalog (stable, never empty).
        strategy = Strategy::Fallback;
        for c in fallback(recommender, catalog, now, req.limit * 4, &|c| {
            !excluded_item(c)
        }) {
            candidates.push(Candidate::new(c));
        }
    }

    // Rules that move the blend: a new arrival gains `new_arrival_boost` of the best blend (a
    // share, so it means the same whichever sources answered).
    let best_blend = candidates.iter().map(|c| c.blended).fold(0.0f32, f32::max);
    let arrival = rec.new_arrival_boost * if best_blend > 0.0 { best_blend } else { 1.0 };
    for c in candidates.iter_mut().filter(|c| c.draw.is_none()) {
        if arrival > 0.0 && is_new(&c.item, now, rec) {
            c.blended += arrival;
            if req.explain {
                c.rules.push(RuleEffect::NewArrival { boost: arrival });
            }
        }
        // (Explanations only.)
        if req.explain
            && visitor
                .summary(&c.item.item.id)
                .is_some_and(|s| s.purchases > 0)
        {
            c.rules.push(RuleEffect::BuyAgain);
        }
    }

    // The personal rerank, with the session in hand and the profile.
    let mut keys = KeySpace::with_capacity(candidates.len());
    let prepared: Vec<rerank::Prepared> = candidates
        .iter()
        .map(|c| {
            let c = &c.item;
            keys.prepare_keyed(&c.item, &c.features, &c.feature_ids, c.duplicate)
        })
        .collect();
    let best = candidates.iter().map(|c| c.blended).fold(0.0f32, f32::max);
    let retrieved: Vec<Retrieved<'_>> = candidates
        .iter()
        .zip(&prepared)
        .map(|(c, prepared)| Retrieved {
            item: &c.item.item,
            features: &c.item.features,
            fused: c.blended,
            tier: if best > 0.0 { c.blended / best } else { 0.0 },
            sources: &c.hits,
            prepared,
        })
        .collect();
    let signals: Option<Signals> = visitor
        .session
        .as_ref()
        .filter(|s| s.event_count() > 0)
        .map(|s| catalog.with_ids(|ids| Signals::from_session(s, now, rules, ids, &keys, false)))
        .filter(|s| !s.is_empty());
    let profile_signals = match &req.user_id {
        Some(user) => personal.profile_signals(user, &keys).await?,
        None => None,
    }
    .filter(|s| !s.is_empty());
    let needed = (req.limit * 4).min(retrieved.len().max(1));
    let ranked = rerank::rerank(
        &retrieved,
        &keys,
        signals.as_ref(),
        profile_signals.as_ref(),
        rules,
        &RerankRequest {
            exclude_seen: false,
            page_size: req.limit,
            needed,
            explain: req.explain,
        },
    );

    // Business rules: the category cap, then the pinned items first.
    let mut per_category: HashMap<&str, u32> = HashMap::new();
    let mut kept = Vec::with_capacity(req.limit);
    let mut demoted = Vec::new();
    for r in ranked {
        let c = &candidates[r.index];
        let leaf = c.item.features.categories.last().map(|k| k.as_str());
        let full = match (leaf, rec.max_per_category) {
            (_, 0) | (None, _) => false,
            (Some(leaf), max) => {
                let n = per_category.entry(leaf).or_insert(0);
                *n += 1;
                *n > max
            }
        };
        if full {
            demoted.push(r);
        } else {
            kept.push((r, None));
        }
        if kept.len() >= req.limit {
            break;
        }
    }
    for r in demoted {
        if kept.len() >= req.limit {
            break;
        }
        kept.push((
            r,
            Some(RuleEffect::CategoryCap {
                max: rec.max_per_category,
            }),
        ));
    }
    let pinned: Vec<Arc<CatalogItem>> = rec
        .pinned
        .get(&req.surface)
        .map(|ids| {
            ids.iter()
                .filter_map(|id| catalog.get(id))
                .filter(|c| {
                    rec.blocked.iter().all(|b| b != c.item.id.as_str())
                        && (c.item.in_stock || !rec.in_stock_only)
                })
                .collect()
        })
        .unwrap_or_default();

    let usual = |id: &ItemId| {
        visitor
            .summary(id)
            .map(|s| s.usual_quantity)
            .filter(|q| *q > 0.0)
    };
    let mut items: Vec<Recommendation> = Vec::with_capacity(req.limit);
    for p in &pinned {
        items.push(Recommendation {
            item: Arc::clone(p),
            score: 0.0,
            usual_quantity: usual(&p.item.id),
            explanation: req.explain.then(|| {
                Box::new(RecExplanation {
                    sources: Vec::new(),
                    contributions: Vec::new(),
                    blended: 0.0,
                    rerank: empty_explanation(),
                    bandit: None,
                    rules: vec![RuleEffect::Pinned],
                })
            }),
        });
    }
    for (r, effect) in kept {
        if items.len() >= req.limit {
            break;
        }
        let c = &candidates[r.index];
        if pinned.iter().any(|p| p.item.id == c.item.item.id) {
            continue;
        }
        let explanation = r.explanation.map(|e| {
            let mut rules = c.rules.clone();
            rules.extend(effect);
            Box::new(RecExplanation {
                sources: c.hits.clone(),
                contributions: c.contributions.clone(),
                blended: c.blended,
                rerank: *e,
                bandit: c.draw,
                rules,
            })
        });
        items.push(Recommendation {
            item: Arc::clone(&c.item),
            score: r.score,
            usual_quantity: usual(&c.item.item.id),
            explanation,
        });
    }
    Ok(RecommendOutcome {
        surface: req.surface,
        strategy,
        items,
        personalized: signals.is_some() || profile_signals.is_some(),
        degraded: {
            let mut all = personal.degraded();
            all.extend(degraded);
            all
        },
    })
}

fn empty_explanation() -> Explanation {
    Explanation {
        sources: Vec::new(),
        fused: 0.0,
        tier: 0.0,
        relevance: 0.0,
        retrieval_position: 0,
        boosts: Vec::new(),
        adjustment: 0.0,
        capped: false,
        diversity_demoted: false,
    }
}

/// How long the newest-first ordering of the catalog is reused.
const NEWEST_TTL_MS: i64 = 60_000;

/// How many of the newest items that ordering keeps.
const NEWEST_KEPT: usize = 2_000;

/// The catalog's newest items, newest first, as of `at` (the fallback and the bandit's new
/// arrivals read it on every cold request; sorting a 44k catalog each time would not do).
struct Newest {
    at: Timestamp,
    catalog_len: usize,
    items: Arc<[ItemId]>,
}

impl Recommender {
    /// The newest `NEWEST_KEPT` items' ids, newest first (then by id), recomputed when older
    /// than a minute or when the catalog's size changed.
    fn newest(&self, catalog: &dyn Catalog, now: Timestamp) -> Arc<[ItemId]> {
        let mut cached = self.newest.lock();
        if let Some(n) = cached.as_ref()
            && now.as_millis() - n.at.as_millis() < NEWEST_TTL_MS
            && n.catalog_len == catalog.len()
        {
            return Arc::clone(&n.items);
        }
        let mut all = catalog.all();
        let order = |a: &Arc<CatalogItem>, b: &Arc<CatalogItem>| {
            b.item
                .created_at
                .cmp(&a.item.created_at)
                .then_with(|| a.item.id.as_str().cmp(b.item.id.as_str()))
        };
        if all.len() > NEWEST_KEPT {
            all.select_nth_unstable_by(NEWEST_KEPT - 1, order);
            all.truncate(NEWEST_KEPT);
        }
        all.sort_by(order);
        let items: Arc<[ItemId]> = all.iter().map(|c| c.item.id.clone()).collect();
        *cached = Some(Newest {
            at: now,
            catalog_len: catalog.len(),
            items: Arc::clone(&items),
        });
        items
    }
}

/// The newest items that `keep` lets through, as far as `n` (new arrivals come first, being
/// the newest), read from the catalog as it is now.
fn fallback(
    recommender: &Recommender,
    catalog: &dyn Catalog,
    now: Timestamp,
    n: usize,
    keep: &dyn Fn(&CatalogItem) -> bool,
) -> Vec<Arc<CatalogItem>> {
    let mut out = Vec::with_capacity(n);
    for id in recommender.newest(catalog, now).iter() {
        if out.len() >= n {
            break;
        }
        if let Some(c) = catalog.get(id.as_str())
            && keep(&c)
        {
            out.push(c);
        }
    }
    out
}

/// The bandit's candidates for a cold visitor: the top trending items and the newest arrivals
/// (or, with neither, the catalog's first items), each with a Thompson draw from its arm on the
/// surface, best draw first. The draws are seeded by the session and the time, so one request
/// is reproducible and two visitors see different explorations.
async fn bandit_pool(
    recommender: &Recommender,
    catalog: &dyn Catalog,
    ctx: &RecContext<'_>,
    rules: &RecommendRules,
    accept: &(dyn Fn(&ItemId) -> bool + Sync),
    keep: &(dyn Fn(&CatalogItem) -> bool + Sync),
) -> Result<Vec<(ItemId, Draw)>> {
    let n = rules.bandit_candidates as usize;
    let mut pool: Vec<Arc<CatalogItem>> = Vec::with_capacity(2 * n);
    if let Some(trending) = recommender.source("trending")
        && let Ok(top) = trending.candidates(ctx, n, accept)
    {
        let ids: Vec<&str> = top.iter().map(|p| p.item_id.as_str()).collect();
        pool.extend(catalog.get_many(&ids).into_iter().flatten());
    }
    let fresh = fallback(recommender, catalog, ctx.now, n, keep);
    let new: Vec<Arc<CatalogItem>> = fresh
        .iter()
        .filter(|c| is_new(c, ctx.now, rules))
        .cloned()
        .collect();
    // New arrivals, then the catalog while the pool holds fewer than `n`, so a young shop's
    // bandit still explores.
    let mut in_pool: rustc_hash::FxHashSet<ItemId> =
        pool.iter().map(|p| p.item.id.clone()).collect();
    for c in new.into_iter().chain(fresh) {
        let is_new_item = is_new(&c, ctx.now, rules);
        if !is_new_item && pool.len() >= n {
            continue;
        }
        if in_pool.insert(c.item.id.clone()) {
            pool.push(c);
        }
    }
    if pool.is_empty() {
        return Ok(Vec::new());
    }
    let surface =
        bandit::Surface::new(ctx.surface.path_name()).map_err(|e| Error::invalid("", e))?;
    let ids: Vec<ItemId> = pool.iter().map(|c| c.item.id.clone()).collect();
    let arms = recommender.bandit().arms(&surface, &ids).await?;
    let seed = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ctx.session_id.map(SessionId::as_str).hash(&mut h);
        ctx.now.as_millis().hash(&mut h);
        h.finish()
    };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let candidates = pool.iter().zip(arms).map(|(c, arm)| bandit::Candidate {
        item: c.item.id.clone(),
        arm,
        is_new: is_new(c, ctx.now, rules),
    });
    Ok(bandit::rank(
        candidates,
        pool.len(),
        &rules.bandit,
        &mut rng,
    ))
}

/// Which items a surface showed and which were clicked, for the bandit.
#[derive(Debug, Clone)]
pub struct FeedbackRequest {
    /// The surface the list was shown on.
    pub surface: Surface,
    /// The items shown, in order.
    pub shown: Vec<ItemId>,
    /// The ones clicked (each among `shown`).
    pub clicked: Vec<ItemId>,
}

/// Records one feedback in the bandit's arms (atomically: all of it or nothing).
pub(crate) async fn feedback(recommender: &Recommender, req: FeedbackRequest) -> Result<()> {
    let surface =
        bandit::Surface::new(req.surface.path_name()).map_err(|e| Error::invalid("", e))?;
    let feedback = bandit::Feedback::new(surface, req.shown, req.clicked)
        .map_err(|e| Error::invalid("", e))?;
    recommender.bandit().record(&feedback).await?;
    Ok(())
}
