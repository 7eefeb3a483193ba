//! Operator-tunable scoring rules: signal weights, decay, bounds, boost caps and session limits.
//!
//! Rules live in their own YAML file (`config/rules.yaml`), separate from deployment settings, so
//! that operators can tune them while the server runs. [`Rules::from_yaml`] rejects a bad file with
//! the line, the key and the problem; the caller keeps the rules it had.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::event::EventKind;

/// Every tunable of scoring and of session state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// How far one event moves the affinities of the item it names, per event kind.
    pub weights: Weights,
    /// How far a search moves each intent named by a filter value or a recognised query term.
    #[serde(deserialize_with = "weight")]
    pub search_intent: f32,
    /// Time decay of affinities.
    pub decay: Decay,
    /// Affinities saturate towards plus or minus this bound and never pass it.
    #[serde(deserialize_with = "positive")]
    pub affinity_bound: f32,
    /// Caps on the boosts that session affinities give in reranking.
    pub caps: Caps,
    /// Diversity limits in a page of results.
    pub diversity: Diversity,
    /// The reranking steps applied to retrieved results, in order.
    pub rerank: RerankRules,
    /// Session lifetime and the limits that bound a session's memory.
    pub session: SessionRules,
    /// The long-term profile of signed-in users.
    pub profile: ProfileRules,
    /// Recommendations: which sources feed each surface and how much each counts, then the
    /// business rules.
    pub recommend: RecommendRules,
}

/// A recommendation surface: where on the site a list is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Surface {
    /// The home feed: for this visitor, from everything known of them.
    Home,
    /// Items like one item (a product page).
    Similar,
    /// For the cart: what goes with what is in it.
    Cart,
    /// Frequently bought together with one item.
    BoughtTogether,
    /// The item this visitor is likely to look at next.
    Next,
}

impl Surface {
    /// Every surface.
    pub const ALL: [Surface; 5] = [
        Surface::Home,
        Surface::Similar,
        Surface::Cart,
        Surface::BoughtTogether,
        Surface::Next,
    ];

    /// The name in the API path (`bought-together`).
    pub const fn path_name(self) -> &'static str {
        match self {
            Surface::Home => "home",
            Surface::Similar => "similar",
            Surface::Cart => "cart",
            Surface::BoughtTogether => "bought-together",
            Surface::Next => "next",
        }
    }

    /// The surface an API path segment names.
    pub fn from_path(name: &str) -> Option<Surface> {
        Surface::ALL.into_iter().find(|s| s.path_name() == name)
    }

    /// Whether the surface needs an anchor item (`item_id`).
    pub const fn needs_anchor(self) -> bool {
        matches!(self, Surface::Similar | Surface::BoughtTogether)
    }
}

/// The candidate sources a surface may draw on, by name (see the engine's sources).
pub const SOURCE_NAMES: [&str; 5] = [
    "sequential",
    "session_knn",
    "cooccurrence",
    "content",
    "trending",
];

/// One source's part in a surface: how many candidates it proposes and how much its
/// (normalized) score counts in the blend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceWeight {
    /// Candidates asked of the source (1 to 1000).
    #[serde(deserialize_with = "budget")]
    pub budget: u32,
    /// Its weight in the blend (each source's scores are first divided by its best score, so
    /// weights compare sources on one scale).
    #[serde(deserialize_with = "unit")]
    pub weight: f32,
}

impl SourceWeight {
    const fn new(budget: u32, weight: f32) -> Option<SourceWeight> {
        Some(SourceWeight { budget, weight })
    }
}

/// The sources of one surface; a source left out takes no part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct SurfaceSources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SourceWeight>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_knn: Option<SourceWeight>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooccurrence: Option<SourceWeight>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<SourceWeight>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trending: Option<SourceWeight>,
}

impl SurfaceSources {
    /// The configured sources by name, in [`SOURCE_NAMES`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, SourceWeight)> + '_ {
        SOURCE_NAMES
            .into_iter()
            .zip([
                self.sequential,
                self.session_knn,
                self.cooccurrence,
                self.content,
                self.trending,
            ])
            .filter_map(|(n, w)| Some((n, w?)))
    }
}

/// One surface's recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SurfaceRules {
    /// Leave out items the visitor already engaged with in this session.
    pub exclude_seen: bool,
    /// The sources and their budgets and weights.
    pub sources: SurfaceSources,
}

impl Default for SurfaceRules {
    fn default() -> Self {
        SurfaceRules {
            exclude_seen: true,
            sources: SurfaceSources::default(),
        }
    }
}

/// Every surface's recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct Surfaces {
    pub home: SurfaceRules,
    pub similar: SurfaceRules,
    pub cart: SurfaceRules,
    pub bought_together: SurfaceRules,
    pub next: SurfaceRules,
}

impl Surfaces {
    /// The recipe of one surface.
    pub fn of(&self, s: Surface) -> &SurfaceRules {
        match s {
            Surface::Home => &self.home,
            Surface::Similar => &self.similar,
            Surface::Cart => &self.cart,
            Surface::BoughtTogether => &self.bought_together,
            Surface::Next => &self.next,
        }
    }
}

impl Default for Surfaces {
    fn default() -> Self {
        let w = SourceWeight::new;
        Surfaces {
            home: SurfaceRules {
                exclude_seen: true,
                sources: SurfaceSources {
                    sequential: w(100, 0.3),
                    session_knn: w(100, 0.25),
                    cooccurrence: w(100, 0.15),
                    content: w(100, 0.15),
                    trending: w(100, 0.15),
                },
            },
            similar: SurfaceRules {
                exclude_seen: false,
                sources: SurfaceSources {
                    sequential: None,
                    session_knn: w(50, 0.1),
                    cooccurrence: w(100, 0.3),
                    content: w(100, 0.5),
                    trending: w(50, 0.1),
                },
            },
            cart: SurfaceRules {
                exclude_seen: false,
                sources: SurfaceSources {
                    sequential: w(100, 0.2),
                    session_knn: w(100, 0.2),
                    cooccurrence: w(100, 0.4),
                    content: w(50, 0.1),
                    trending: w(50, 0.1),
                },
            },
            bought_together: SurfaceRules {
                exclude_seen: false,
                sources: SurfaceSources {
                    sequential: None,
                    session_knn: None,
                    cooccurrence: w(100, 0.7),
                    content: w(50, 0.2),
                    trending: w(50, 0.1),
                },
            },
            // Tuned on DIGINETICA validation replays (bench/replay.md): trending and content
            // only dilute session kNN there; sequential (SASRec) at 0.3 beside kNN's 0.35.
            next: SurfaceRules {
                exclude_seen: false,
                sources: SurfaceSources {
                    sequential: w(200, 0.3),
                    session_knn: w(200, 0.35),
                    cooccurrence: w(100, 0.025),
                    content: w(50, 0.0),
                    trending: w(50, 0.0),
                },
            },
        }
    }
}

/// Recommendations: the surfaces' recipes, cold start, and the business rules applied last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendRules {
    /// A session with fewer events than this is served by the bandit (trending and new items,
    /// explored by Thompson sampling) on the home surface.
    pub cold_start_events: u32,
    /// Candidates the bandit draws for: the top trending items and the newest arrivals, each
    /// up to this many.
    #[serde(deserialize_with = "budget")]
    pub bandit_candidates: u32,
    /// At most this many items of one category (the deepest level) in a list (0: no cap).
    pub max_per_category: u32,
    /// Only items in stock.
    pub in_stock_only: bool,
    /// Items created within this many days are new arrivals.
    pub new_arrival_days: u32,
    /// What a new arrival gets added to its blend, as a share of the best blend in the list.
    #[serde(deserialize_with = "unit")]
    pub new_arrival_boost: f32,
    /// Categories (any level of the path, `Dairy & Alternatives > Milk`) whose items may be
    /// recommended again after a purchase ("buy again"); items of any other category the visitor
    /// bought are left out.
    pub repeat_purchase_categories: Vec<String>,
    /// Items never recommended.
    pub blocked: Vec<String>,
    /// Items put first on a surface, in this order (when in the catalog and, with
    /// `in_stock_only`, in stock).
    pub pinned: std::collections::BTreeMap<Surface, Vec<String>>,
    /// The Thompson-sampling bandit that serves cold visitors.
    pub bandit: crate::bandit::BanditParams,
    /// Each surface's sources.
    pub surfaces: Surfaces,
}

impl Default for RecommendRules {
    fn default() -> Self {
        RecommendRules {
            cold_start_events: 3,
            bandit_candidates: 100,
            max_per_category: 3,
            in_stock_only: true,
            new_arrival_days: 30,
            new_arrival_boost: 0.05,
            repeat_purchase_categories: Vec::new(),
            blocked: Vec::new(),
            pinned: std::collections::BTreeMap::new(),
            bandit: crate::bandit::BanditParams::default(),
            surfaces: Surfaces::default(),
        }
    }
}

/// The long-term profile of a signed-in user: the same affinities as a session, fed by every event
/// that carries the `user_id` and by stated (onboarding) preferences, decaying over weeks instead
/// of minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileRules {
    /// A profile affinity halves after this many days without new signal (20.8 days: a signal
    /// weighs `exp(−days / 30)`).
    #[serde(deserialize_with = "positive")]
    pub half_life_days: f32,
    /// What each interaction weighs in a profile (purchase 5, add-to-cart 3, wishlist 2,
    /// recommendation click 1.5, view and click 1, remove-from-cart −1), divided by `scale`.
    pub weights: Weights,
    /// The profile weights are divided by this, so that the affinities (and the boosts they give)
    /// are on the session's scale: 5 makes a purchase 1.0, as in a session.
    #[serde(deserialize_with = "positive")]
    pub scale: f32,
    /// A profile with no activity for this many days is forgotten.
    #[serde(deserialize_with = "at_least_one")]
    pub retention_days: u32,
    /// How far one stated preference (onboarding) moves its affinity: a purchase is 1.0.
    #[serde(deserialize_with = "weight")]
    pub preference_weight: f32,
}

impl Default for ProfileRules {
    fn default() -> Self {
        ProfileRules {
            // exp(−days / 30) = 0.5 at 30 × ln 2 = 20.794415 days.
            half_life_days: 20.794_415,
            weights: Weights {
                purchase: 5.0,
                add_to_cart: 3.0,
                click: 1.0,
                view: 1.0,
                wishlist: 2.0,
                recommendation_click: 1.5,
                remove_from_cart: -1.0,
                skip: 0.0,
            },
            scale: 5.0,
            retention_days: 365,
            preference_weight: 0.6,
        }
    }
}

impl Rules {
    /// The rules a profile is updated and read with: these rules with the profile's weights
    /// (divided by its scale), half-life and retention in place of the session's.
    pub fn for_profile(&self) -> Rules {
        let mut r = self.clone();
        let w = &self.profile.weights;
        let k = 1.0 / self.profile.scale;
        r.weights = Weights {
            purchase: w.purchase * k,
            add_to_cart: w.add_to_cart * k,
            click: w.click * k,
            view: w.view * k,
            wishlist: w.wishlist * k,
            recommendation_click: w.recommendation_click * k,
            remove_from_cart: w.remove_from_cart * k,
            skip: w.skip * k,
        };
        r.decay.half_life_secs = self.profile.half_life_days * 86_400.0;
        r.session.ttl_secs = self.profile.retention_days.saturating_mul(86_400);
        r
    }
}

/// The reranker's steps (each can be switched off) and how affinities become boosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RerankRules {
    /// Drop items the visitor has already engaged with, when the request asks for it.
    pub drop_seen: bool,
    /// Collapse near-duplicates: same brand and the same normalized title.
    pub dedupe: bool,
    /// Apply the long-term profile boosts of a known user.
    pub profile_boosts: bool,
    /// Apply the live session boosts (brand, category, attribute, intent, skip penalty).
    pub session_boosts: bool,
    /// Apply the brand-diversity cap.
    pub brand_diversity: bool,
    /// A boost is `cap × tanh(affinity / affinity_scale)`: an affinity of this size gives 76% of
    /// the cap, a single click (0.2 by default) about 38%.
    #[serde(deserialize_with = "positive")]
    pub affinity_scale: f32,
    /// Within a relevance tier, the retrieval score counts for at most this much (the boosts are
    /// capped at `caps.total`): lower lets personalization reorder equally relevant results more.
    #[serde(deserialize_with = "unit")]
    pub fused_weight: f32,
}

impl Default for RerankRules {
    fn default() -> Self {
        RerankRules {
            drop_seen: true,
            dedupe: true,
            profile_boosts: true,
            session_boosts: true,
            brand_diversity: true,
            affinity_scale: 0.5,
            fused_weight: 0.1,
        }
    }
}

/// Signal weight per event kind (a search moves intents instead: [`Rules::search_intent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct Weights {
    #[serde(deserialize_with = "weight")]
    pub purchase: f32,
    #[serde(deserialize_with = "weight")]
    pub add_to_cart: f32,
    #[serde(deserialize_with = "weight")]
    pub click: f32,
    #[serde(deserialize_with = "weight")]
    pub view: f32,
    #[serde(deserialize_with = "weight")]
    pub wishlist: f32,
    #[serde(deserialize_with = "weight")]
    pub recommendation_click: f32,
    #[serde(deserialize_with = "weight")]
    pub remove_from_cart: f32,
    #[serde(deserialize_with = "weight")]
    pub skip: f32,
}

/// Time decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Decay {
    /// An affinity halves after this many seconds without new signal.
    #[serde(deserialize_with = "positive")]
    pub half_life_secs: f32,
}

/// Reranking caps on session boosts (used by search and recommendations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Caps {
    /// Brand boost lies within plus or minus this.
    #[serde(deserialize_with = "unit")]
    pub brand: f32,
    /// Category boost lies within plus or minus this.
    #[serde(deserialize_with = "unit")]
    pub category: f32,
    /// Attribute boost lies within plus or minus this.
    #[serde(deserialize_with = "unit")]
    pub attribute: f32,
    /// Search-intent boost lies within plus or minus this.
    #[serde(deserialize_with = "unit")]
    pub intent: f32,
    /// The penalty for an item the visitor skipped (negative).
    #[serde(deserialize_with = "non_positive")]
    pub skip_penalty: f32,
    /// The sum of all session adjustments lies within plus or minus this.
    #[serde(deserialize_with = "unit")]
    pub total: f32,
}

/// Diversity limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Diversity {
    /// At most this many results of one brand in a page.
    #[serde(deserialize_with = "at_least_one")]
    pub max_per_brand: u32,
}

/// Session lifetime and memory bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionRules {
    /// An idle session is forgotten after this many seconds; every access refreshes it.
    #[serde(deserialize_with = "at_least_one")]
    pub ttl_secs: u32,
    /// Most affinities kept per kind (brand, category, attribute, intent); the weakest goes first.
    #[serde(deserialize_with = "at_least_one")]
    pub max_affinities_per_kind: u32,
    /// Most items remembered per session (seen, skipped, cart, quantities); the stalest goes first.
    #[serde(deserialize_with = "at_least_one")]
    pub max_items: u32,
    /// How many recent events are kept: they explain affinities and are the sequence the
    /// recommendation sources read (SASRec reads up to its `max_len`, 20 for the shipped
    /// models, so fewer would cut its input).
    pub trail_events: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            weights: Weights::default(),
            search_intent: 0.3,
            decay: Decay::default(),
            affinity_bound: 5.0,
            caps: Caps::default(),
            diversity: Diversity::default(),
            rerank: RerankRules::default(),
            session: SessionRules::default(),
            profile: ProfileRules::default(),
            recommend: RecommendRules::default(),
        }
    }
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            purchase: 1.0,
            add_to_cart: 0.5,
            click: 0.2,
            view: 0.1,
            wishlist: 0.4,
            recommendation_click: 0.3,
            remove_from_cart: -0.4,
            skip: -0.05,
        }
    }
}

impl Default for Decay {
    fn default() -> Self {
        Decay {
            half_life_secs: 1800.0,
        }
    }
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            brand: 0.06,
            category: 0.04,
            attribute: 0.03,
            intent: 0.05,
            skip_penalty: -0.08,
            total: 0.12,
        }
    }
}

impl Default for Diversity {
    fn default() -> Self {
        Diversity { max_per_brand: 4 }
    }
}

impl Default for SessionRules {
    fn default() -> Self {
        SessionRules {
            ttl_secs: 1800,
            max_affinities_per_kind: 64,
            max_items: 64,
            trail_events: 20,
        }
    }
}

impl Weights {
    /// The weight of one event of `kind` (0 for `search`, which moves intents instead).
    pub fn of(&self, kind: EventKind) -> f32 {
        match kind {
            EventKind::View => self.view,
            EventKind::Click => self.click,
            EventKind::AddToCart => self.add_to_cart,
            EventKind::RemoveFromCart => self.remove_from_cart,
            EventKind::Purchase => self.purchase,
            EventKind::Wishlist => self.wishlist,
            EventKind::RecommendationClick => self.recommendation_click,
            EventKind::Skip => self.skip,
            EventKind::Search => 0.0,
        }
    }
}

/// A rules file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RulesError {
    /// 1-based line of the problem, when the parser knows it.
    pub line: Option<usize>,
    /// Dotted path of the offending key, when known (`caps.brand`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() && self.path != "." {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl Rules {
    /// Parses and validates a rules YAML document. Keys left out take their defaults; unknown keys
    /// and out-of-range values are errors naming the line and the key.
    pub fn from_yaml(text: &str) -> Result<Rules, RulesError> {
        if text.trim().is_empty() {
            return Ok(Rules::default());
        }
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, Rules>(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.to_string();
            // The parser appends its own "at line L column C" and may prefix its own path; both
            // are reported separately.
            if let Some(i) = message.find(" at line ") {
                message.truncate(i);
            }
            if let Some((prefix, rest)) = message.split_once(": ")
                && !prefix.contains(' ')
                && path.starts_with(prefix)
            {
                message = rest.to_owned();
            }
            // The parser places errors raised inside a mapping at the mapping's start; find the
            // key's own line when the path leads to one.
            let line = locate(text, &path).or_else(|| inner.location().map(|l| l.line()));
            RulesError {
                line,
                path,
                message,
            }
        })
    }

    /// The rules as YAML (what `GET /v1/rules` and `attune rules` print).
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_default()
    }
}

/// The 1-based line of a dotted key path (`caps.total`) in a block-style YAML document.
fn locate(text: &str, path: &str) -> Option<usize> {
    let mut parts = path
        .split('.')
        .filter(|p| !p.is_empty() && *p != "?")
        .peekable();
    parts.peek()?;
    let mut min_indent = 0usize;
    let mut want = parts.next()?;
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if indent < min_indent && found.is_some() {
            return None;
        }
        let key = body.split(':').next().unwrap_or("").trim();
        if indent >= min_indent && key == want && body[key.len()..].starts_with(':') {
            found = Some(i + 1);
            match parts.next() {
                Some(next) => {
                    want = next;
                    min_indent = indent + 1;
                }
                None => return found,
            }
        }
    }
    None
}

fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let v = f32::deserialize(d)?;
    if v.is_finite() && (-10.0..=10.0).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "weight {v} must be a finite number between -10 and 10"
        )))
    }
}

fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let v = f32::deserialize(d)?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "{v} must be a finite number greater than 0"
        )))
    }
}

fn unit<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let v = f32::deserialize(d)?;
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "must be between 0 and 1, got {v}"
        )))
    }
}

fn non_positive<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let v = f32::deserialize(d)?;
    if v.is_finite() && (-1.0..=0.0).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "penalty {v} must be between -1 and 0"
        )))
    }
}

fn budget<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if (1..=1000).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "must be from 1 to 1000, got {v}"
        )))
    }
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v >= 1 {
        Ok(v)
    } else {
        Err(serde::de::Error::custom("must be at least 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_partial_documents_take_defaults() {
        assert_eq!(Rules::from_yaml("").unwrap(), Rules::default());
        let r = Rules::from_yaml("weights:\n  click: 0.25\n").unwrap();
        assert_eq!(r.weights.click, 0.25);
        assert_eq!(r.weights.purchase, 1.0);
    }

    #[test]
    fn bad_documents_name_line_and_key() {
        let cases = [
            ("weights:\n  click: 0.2\n  clik: 0.3\n", Some(3), "clik"),
            ("decay:\n  half_life_secs: -5\n", Some(2), "greater than 0"),
            ("caps:\n  brand: 2\n", Some(2), "between 0 and 1"),
            (
                "caps:\n  brand: 0.06\n  total: 7\n",
                Some(3),
                "caps.total: must be between 0 and 1, got 7",
            ),
            ("weights:\n  view: .nan\n", Some(2), "finite"),
            ("weights: [1, 2\n", None, ""),
            ("session:\n  ttl_secs: 0\n", Some(2), "at least 1"),
            (
                "recommend:\n  surfaces:\n    home:\n      sources:\n        sasrec: {budget: 10, weight: 0.5}\n",
                Some(5),
                "sasrec",
            ),
            (
                "recommend:\n  surfaces:\n    next:\n      sources:\n        trending: {budget: 0, weight: 0.5}\n",
                Some(5),
                "from 1 to 1000",
            ),
            (
                "recommend:\n  pinned:\n    homepage: [a]\n",
                Some(2),
                "homepage",
            ),
        ];
        for (text, line, needle) in cases {
            let err = Rules::from_yaml(text).unwrap_err();
            if line.is_some() {
                assert_eq!(err.line, line, "{text:?}: {err}");
            }
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn yaml_round_trips() {
        let r = Rules::default();
        assert_eq!(Rules::from_yaml(&r.to_yaml()).unwrap(), r);
    }
}

#[cfg(test)]
mod shipped {
    use super::Rules;

    #[test]
    fn the_shipped_rules_file_equals_the_compiled_defaults() {
        let text = include_str!("../../../config/rules.yaml");
        assert_eq!(Rules::from_yaml(text).unwrap(), Rules::default());
    }
}
