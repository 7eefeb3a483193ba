//! Thompson sampling for visitors with little history: which trending or new items a surface
//! shows, learned from what it showed and what was clicked.
//!
//! Every (surface, item) pair is an [`Arm`]: how often the item was shown on that surface and how
//! often it was clicked there. Its click rate has the posterior
//! `Beta(prior_alpha + clicks, prior_beta + shows − clicks)`. [`rank`] draws once from each
//! candidate's posterior and orders the candidates by their draws, so an arm with little evidence
//! is sometimes ranked high (exploration) and an arm proven good usually is (exploitation), in
//! proportion to how likely each is to be the best. Items the caller marks as new get extra
//! optimism ([`BanditParams::new_item_boost`]) that fades over their first
//! [`BanditParams::new_item_shows`] shows, so they are tried before they have history.
//!
//! [`Feedback`] is one validated report of a surface's page (what was shown, what was clicked);
//! the stores add it to the arms (`attune_store::bandit`). Nothing here reads a clock or a global
//! random number generator: the generator is an argument, and a seeded one gives the same ranking
//! every time.
//!
//! ```
//! use attune_core::bandit::{Arm, BanditParams, Candidate, rank};
//! use rand::SeedableRng;
//!
//! let params = BanditParams::default();
//! let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
//! let ranked = rank(
//!     [
//!         Candidate { item: "proven", arm: Arm { shows: 1000.0, clicks: 150.0 }, is_new: false },
//!         Candidate { item: "weak", arm: Arm { shows: 1000.0, clicks: 5.0 }, is_new: false },
//!         Candidate { item: "fresh", arm: Arm::default(), is_new: true },
//!     ],
//!     2,
//!     &params,
//!     &mut rng,
//! );
//! assert_eq!(ranked.len(), 2);
//! assert!(ranked[0].1.sample >= ranked[1].1.sample);
//! assert!(ranked.iter().all(|(item, _)| *item != "weak"));
//! ```

use std::borrow::Cow;
use std::fmt;

use rand::Rng;
use rand_distr::Distribution;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::id::ItemId;
use crate::key::Key;

/// The longest surface name accepted, in bytes.
pub const MAX_SURFACE_LEN: usize = 64;
/// Most items one [`Feedback`] may report as shown.
pub const MAX_SHOWN: usize = 100;

/// Smallest Beta shape a draw uses: the posterior of any input is clamped to at least this.
const MIN_SHAPE: f64 = 1e-3;
/// Largest Beta shape a draw uses (beyond what [`BanditParams::max_evidence`] allows anyway).
const MAX_SHAPE: f64 = 1e12;

/// Where recommendations are shown (`home`, `pdp:similar`, `cart/upsell`): the bandit learns
/// separately per surface.
///
/// 1 to [`MAX_SURFACE_LEN`] bytes of ASCII letters, digits and `-_.:/`, so that a surface can be
/// part of a storage key as it is.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Surface(Key);

impl Surface {
    /// Validates and wraps `s`.
    pub fn new(s: impl AsRef<str>) -> Result<Self> {
        let s = s.as_ref();
        if s.is_empty() {
            return Err(Error::Empty {
                field: "surface".into(),
            });
        }
        if s.len() > MAX_SURFACE_LEN {
            return Err(Error::TooLong {
                field: "surface".into(),
                len: s.len(),
                max: MAX_SURFACE_LEN,
            });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
        {
            return Err(Error::invalid(
                "surface",
                "may hold only ASCII letters, digits and - _ . : /",
            ));
        }
        Ok(Surface(Key::new(s)))
    }

    /// The surface's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Surface {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        Surface::new(&*s).map_err(serde::de::Error::custom)
    }
}

/// One report from a surface: the items it showed and the ones among them that were clicked.
///
/// Valid by construction: at least one and at most [`MAX_SHOWN`] items shown, each counted once
/// (repeats are dropped, the first position kept), and every clicked item among the shown ones.
/// A store adds it to the arms whole or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    surface: Surface,
    shown: Vec<ItemId>,
    clicked: Vec<ItemId>,
}

impl Feedback {
    /// Validates a report. Errors name the field: `shown` (empty or too long) or `clicked` (an
    /// item that was not shown).
    pub fn new(surface: Surface, shown: Vec<ItemId>, clicked: Vec<ItemId>) -> Result<Self> {
        if shown.is_empty() {
            return Err(Error::Empty {
                field: "shown".into(),
            });
        }
        if shown.len() > MAX_SHOWN {
            return Err(Error::invalid(
                "shown",
                format!("holds {} items; the limit is {MAX_SHOWN}", shown.len()),
            ));
        }
        let shown = distinct(shown);
        if let Some(stray) = clicked.iter().find(|c| !shown.contains(c)) {
            return Err(Error::invalid(
                "clicked",
                format!("item {stray} is not among the shown items"),
            ));
        }
        Ok(Feedback {
            surface,
            shown,
            clicked: distinct(clicked),
        })
    }

    /// The surface that showed the items.
    pub fn surface(&self) -> &Surface {
        &self.surface
    }

    /// The items shown, each once, in the order first reported.
    pub fn shown(&self) -> &[ItemId] {
        &self.shown
    }

    /// The items clicked, each once, all among [`Feedback::shown`].
    pub fn clicked(&self) -> &[ItemId] {
        &self.clicked
    }
}

/// `items` without repeats, in the order of first appearance (lists are at most [`MAX_SHOWN`]
/// long, so a scan beats a hash set).
fn distinct(items: Vec<ItemId>) -> Vec<ItemId> {
    let mut out: Vec<ItemId> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// What one surface has learned about one item: how often it was shown there and how often it
/// was clicked. An item never shown is `Arm::default()` (no shows, no clicks).
///
/// Counts are `f64` so that stores can add to them atomically as floats (and so that a later
/// discount can scale them); [`Arm::sanitized`] is what every function here reads.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Arm {
    /// Times the item was shown on the surface.
    pub shows: f64,
    /// Times it was clicked there; at most `shows`.
    pub clicks: f64,
}

impl Arm {
    /// The arm with impossible counts mended: a negative or non-finite count is 0, and clicks
    /// are at most shows.
    pub fn sanitized(self) -> Arm {
        let count = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        let shows = count(self.shows);
        Arm {
            shows,
            clicks: count(self.clicks).min(shows),
        }
    }
}

/// The operator's tunables of the bandit (a section of the rules file).
///
/// With the defaults, an arm starts as Beta(1, 19): a click rate of 5 %, worth 20 shows of
/// evidence. A new item starts one pseudo-click more optimistic (Beta(2, 19), 9.5 %), fading to
/// the plain prior over its first 200 shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BanditParams {
    /// Pseudo-clicks every arm starts with (the Beta prior's α). Greater than 0.
    #[serde(deserialize_with = "prior_alpha")]
    pub prior_alpha: f64,
    /// Pseudo-shows without a click every arm starts with (the Beta prior's β). The prior click
    /// rate is `prior_alpha / (prior_alpha + prior_beta)`; their sum is how many shows of
    /// evidence the prior is worth. Greater than 0.
    #[serde(deserialize_with = "prior_beta")]
    pub prior_beta: f64,
    /// Extra pseudo-clicks of an item the caller marks as new, when it has no shows yet: how much
    /// more it is explored than an established item with no history. 0 turns it off.
    #[serde(deserialize_with = "new_item_boost")]
    pub new_item_boost: f64,
    /// Shows over which a new item's boost fades linearly to nothing. 0 turns the boost off.
    #[serde(deserialize_with = "new_item_shows")]
    pub new_item_shows: f64,
    /// Most evidence (α + β) a draw is made with: a posterior holding more is scaled down to it,
    /// keeping its mean. This keeps a floor under the uncertainty of long-established arms, so
    /// they keep being compared on their draws rather than on frozen means. It is not a time
    /// discount: the stored counts keep accumulating.
    #[serde(deserialize_with = "max_evidence")]
    pub max_evidence: f64,
}

impl Default for BanditParams {
    fn default() -> Self {
        BanditParams {
            prior_alpha: 1.0,
            prior_beta: 19.0,
            new_item_boost: 1.0,
            new_item_shows: 200.0,
            max_evidence: 10_000.0,
        }
    }
}

/// Allowed range of each parameter: (field, lowest, highest).
const LIMITS: [(&str, f64, f64); 5] = [
    ("prior_alpha", 0.01, 1e6),
    ("prior_beta", 0.01, 1e6),
    ("new_item_boost", 0.0, 1e6),
    ("new_item_shows", 0.0, 1e9),
    ("max_evidence", 2.0, 1e9),
];

/// Checks `v` against the range of `LIMITS[i]`.
fn check_limit(i: usize, v: f64) -> Result<f64> {
    let (field, lo, hi) = LIMITS[i];
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(Error::invalid(
            field,
            format!("{v} must be a finite number from {lo} to {hi}"),
        ))
    }
}

fn limited<'de, D: Deserializer<'de>>(i: usize, d: D) -> std::result::Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    check_limit(i, v).map_err(|e| match e {
        Error::Invalid { reason, .. } => serde::de::Error::custom(reason),
        other => serde::de::Error::custom(other),
    })
}

fn prior_alpha<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    limited(0, d)
}

fn prior_beta<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    limited(1, d)
}

fn new_item_boost<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    limited(2, d)
}

fn new_item_shows<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    limited(3, d)
}

fn max_evidence<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    limited(4, d)
}

impl BanditParams {
    /// Checks every parameter's range; the error names the first field out of range. (A
    /// deserialized value has been checked already.)
    pub fn validate(&self) -> Result<()> {
        let values = [
            self.prior_alpha,
            self.prior_beta,
            self.new_item_boost,
            self.new_item_shows,
            self.max_evidence,
        ];
        for (i, v) in values.into_iter().enumerate() {
            check_limit(i, v)?;
        }
        Ok(())
    }

    /// The Beta shapes an arm is drawn from: the posterior, with a new item's boost and the
    /// evidence cap applied, clamped to finite positive shapes whatever the input.
    fn shapes(&self, arm: Arm, is_new: bool) -> (f64, f64) {
        let arm = arm.sanitized();
        let boost = if is_new && self.new_item_shows > 0.0 {
            self.new_item_boost * (1.0 - arm.shows / self.new_item_shows).max(0.0)
        } else {
            0.0
        };
        let mut alpha = self.prior_alpha + arm.clicks + boost;
        let mut beta = self.prior_beta + (arm.shows - arm.clicks);
        let total = alpha + beta;
        if total > self.max_evidence {
            let k = self.max_evidence / total;
            alpha *= k;
            beta *= k;
        }
        (shape(alpha), shape(beta))
    }
}

/// `v` within `[MIN_SHAPE, MAX_SHAPE]`; NaN is `MIN_SHAPE`.
fn shape(v: f64) -> f64 {
    if v.is_nan() {
        MIN_SHAPE
    } else {
        v.clamp(MIN_SHAPE, MAX_SHAPE)
    }
}

/// One Thompson draw: the sampled click rate and the Beta shapes it was drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    /// The sampled click rate, in `[0, 1]`; never NaN.
    pub sample: f64,
    /// α of the distribution drawn from (prior, clicks and any new-item boost).
    pub alpha: f64,
    /// β of the distribution drawn from (prior and shows without a click).
    pub beta: f64,
}

/// A candidate for [`rank`]: the caller's item, its arm on the surface, and whether the catalog
/// considers it new (which earns it [`BanditParams::new_item_boost`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<T> {
    /// Whatever the caller ranks (an id, an index, a whole item).
    pub item: T,
    /// Its counts on the surface (`Arm::default()` when it has none).
    pub arm: Arm,
    /// Whether it is new to the catalog.
    pub is_new: bool,
}

/// Draws a click rate for `arm` from its posterior (Thompson sampling). Any counts and any
/// parameters give a finite draw in `[0, 1]`: impossible counts are mended as
/// [`Arm::sanitized`] does and the shapes are clamped to finite positive numbers.
pub fn draw<R: Rng + ?Sized>(arm: Arm, is_new: bool, params: &BanditParams, rng: &mut R) -> Draw {
    let (alpha, beta) = params.shapes(arm, is_new);
    let mean = alpha / (alpha + beta);
    let sample = match rand_distr::Beta::new(alpha, beta) {
        Ok(dist) => dist.sample(rng),
        Err(_) => mean,
    };
    let sample = if sample.is_finite() {
        sample.clamp(0.0, 1.0)
    } else {
        mean
    };
    Draw {
        sample,
        alpha,
        beta,
    }
}

/// The posterior mean click rate of `arm` (no new-item boost): what the surface expects of the
/// item on average. In `[0, 1]`, never NaN.
pub fn mean(arm: Arm, params: &BanditParams) -> f64 {
    let arm = arm.sanitized();
    let alpha = shape(params.prior_alpha + arm.clicks);
    let beta = shape(params.prior_beta + (arm.shows - arm.clicks));
    (alpha / (alpha + beta)).clamp(0.0, 1.0)
}

/// Draws once for every candidate, in the order given, and returns the `n` with the highest
/// draws, best first, each with its [`Draw`]. Equal draws keep the input order, so a seeded `rng`
/// always gives the same ranking.
pub fn rank<T, R: Rng + ?Sized>(
    candidates: impl IntoIterator<Item = Candidate<T>>,
    n: usize,
    params: &BanditParams,
    rng: &mut R,
) -> Vec<(T, Draw)> {
    let mut drawn: Vec<(usize, T, Draw)> = candidates
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let d = draw(c.arm, c.is_new, params, rng);
            (i, c.item, d)
        })
        .collect();
    let order = |a: &(usize, T, Draw), b: &(usize, T, Draw)| {
        b.2.sample.total_cmp(&a.2.sample).then(a.0.cmp(&b.0))
    };
    if n == 0 {
        return Vec::new();
    }
    if n < drawn.len() {
        drawn.select_nth_unstable_by(n - 1, order);
        drawn.truncate(n);
    }
    drawn.sort_unstable_by(order);
    drawn.into_iter().map(|(_, item, d)| (item, d)).collect()
}

#[cfg(test)]
mod tests;
