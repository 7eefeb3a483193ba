//! The sources that learn online, as [`CandidateSource`]s: `trending`, `cooccurrence` and
//! `session_knn` over `attune_core::online`'s structures, each behind one lock. Every accepted
//! event updates them before the ingest answers; with a state directory, each writes a snapshot
//! there at shutdown (atomically) and reads it back at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use attune_core::online::{
    CoKind, Cooccurrence, CooccurrenceConfig, SessionKnn, SessionKnnConfig, Trending,
    TrendingConfig, session_key,
};
use attune_core::rules::Surface;
use attune_core::{EventKind, ItemId, SessionId, Timestamp};
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::source::{CandidateSource, Observation, Proposal, RecContext, SourceError};

/// Settings of the online sources.
#[derive(Debug, Clone, Default)]
pub struct OnlineConfig {
    /// Trending: half-life and size.
    pub trending: TrendingConfig,
    /// Co-occurrence: half-life, window, caps.
    pub cooccurrence: CooccurrenceConfig,
    /// Session kNN: sample size, neighbours, caps.
    pub session_knn: SessionKnnConfig,
    /// Where snapshots are written at shutdown and read at start; `None` keeps nothing on disk.
    pub state_dir: Option<PathBuf>,
    /// Snapshots to start from when `state_dir` has none of its own (`attune train --model
    /// online` writes them); only read, never written.
    pub seed_dir: Option<PathBuf>,
}

/// The three online sources, built together.
pub struct OnlineSources {
    /// Time-decayed popularity.
    pub trending: Arc<TrendingSource>,
    /// Co-view, co-cart, co-purchase.
    pub cooccurrence: Arc<CooccurrenceSource>,
    /// Session-based nearest neighbours.
    pub session_knn: Arc<SessionKnnSource>,
}

/// One online structure behind its lock, with the file its snapshot goes to (if any).
struct Held<T> {
    name: &'static str,
    inner: RwLock<T>,
    path: Option<PathBuf>,
}

impl<T: Serialize> Held<T> {
    fn new(name: &'static str, inner: T, path: Option<PathBuf>) -> Self {
        Held {
            name,
            inner: RwLock::new(inner),
            path,
        }
    }

    fn save(&self) -> Result<(), SourceError> {
        match &self.path {
            Some(p) => save(self.name, p, &*self.inner.read()),
            None => Ok(()),
        }
    }
}

/// The snapshot files in a state or seed directory.
const TRENDING_FILE: &str = "trending.bin";
const COOCCURRENCE_FILE: &str = "cooccurrence.bin";
const SESSION_KNN_FILE: &str = "session_knn.bin";

/// Snapshot file layout version (a format byte first, then postcard).
const FORMAT: u8 = 1;

fn snapshot_error(
    source_name: &'static str,
    path: &Path,
    reason: impl std::fmt::Display,
) -> SourceError {
    SourceError {
        source_name,
        reason: format!("snapshot {}: {reason}", path.display()),
    }
}

fn load<T: DeserializeOwned>(name: &'static str, path: &Path) -> Result<Option<T>, SourceError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(snapshot_error(name, path, e)),
    };
    match bytes.split_first() {
        Some((&FORMAT, body)) => postcard::from_bytes(body)
            .map(Some)
            .map_err(|e| snapshot_error(name, path, e)),
        Some((v, _)) => Err(snapshot_error(
            name,
            path,
            format!("format {v}, expected {FORMAT}"),
        )),
        None => Err(snapshot_error(name, path, "empty file")),
    }
}

fn save<T: Serialize>(name: &'static str, path: &Path, value: &T) -> Result<(), SourceError> {
    let mut bytes = vec![FORMAT];
    bytes.extend(postcard::to_allocvec(value).map_err(|e| snapshot_error(name, path, e))?);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| snapshot_error(name, path, e))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes).map_err(|e| snapshot_error(name, path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| snapshot_error(name, path, e))
}

/// Opens one structure: its snapshot if there is a usable one, else the seed's (which must be
/// usable: a seed was asked for), else a new one. An unreadable state snapshot is logged and set
/// aside (renamed `.bad`), never fatal: the source starts from its seed or empty.
fn open<T: DeserializeOwned>(
    name: &'static str,
    path: Option<&Path>,
    seed: Option<&Path>,
    fresh: impl FnOnce() -> Result<T, SourceError>,
) -> Result<T, SourceError> {
    if let Some(path) = path {
        match load(name, path) {
            Ok(Some(v)) => {
                tracing::info!(source = name, path = %path.display(), "online source state loaded");
                return Ok(v);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "online source state unusable; set aside");
                let _ = std::fs::rename(path, path.with_extension("bad"));
            }
        }
    }
    if let Some(seed) = seed {
        return match load(name, seed)? {
            Some(v) => {
                tracing::info!(source = name, path = %seed.display(), "online source seeded");
                Ok(v)
            }
            None => Err(snapshot_error(
                name,
                seed,
                "no such file (attune train --model online writes it)",
            )),
        };
    }
    fresh()
}

fn invalid(name: &'static str, e: attune_core::Error) -> SourceError {
    SourceError {
        source_name: name,
        reason: e.to_string(),
    }
}

impl OnlineSources {
    /// The three sources, each from its snapshot in `state_dir` when there is one.
    pub fn open(config: &OnlineConfig) -> Result<OnlineSources, SourceError> {
        let dir = config.state_dir.as_deref();
        let path = |file: &str| dir.map(|d| d.join(file));
        let seed = |file: &str| config.seed_dir.as_deref().map(|d| d.join(file));
        let trending_path = path(TRENDING_FILE);
        let cooc_path = path(COOCCURRENCE_FILE);
        let knn_path = path(SESSION_KNN_FILE);
        let trending = open(
            "trending",
            trending_path.as_deref(),
            seed(TRENDING_FILE).as_deref(),
            || Trending::new(config.trending.clone()).map_err(|e| invalid("trending", e)),
        )?;
        let cooccurrence = open(
            "cooccurrence",
            cooc_path.as_deref(),
            seed(COOCCURRENCE_FILE).as_deref(),
            || {
                Cooccurrence::new(config.cooccurrence.clone())
                    .map_err(|e| invalid("cooccurrence", e))
            },
        )?;
        let session_knn = open(
            "session_knn",
            knn_path.as_deref(),
            seed(SESSION_KNN_FILE).as_deref(),
            || SessionKnn::new(config.session_knn.clone()).map_err(|e| invalid("session_knn", e)),
        )?;
        Ok(OnlineSources {
            trending: Arc::new(TrendingSource(Held::new(
                "trending",
                trending,
                trending_path,
            ))),
            cooccurrence: Arc::new(CooccurrenceSource(Held::new(
                "cooccurrence",
                cooccurrence,
                cooc_path,
            ))),
            session_knn: Arc::new(SessionKnnSource(Held::new(
                "session_knn",
                session_knn,
                knn_path,
            ))),
        })
    }

    /// Feeds whole sessions (oldest first, each a list of viewed items) to all three, as if
    /// their events had arrived at `at`: how the binary loads training data or an event log.
    pub fn seed_sessions<'a>(
        &self,
        sessions: impl IntoIterator<Item = &'a [ItemId]>,
        at: Timestamp,
    ) {
        let mut trending = self.trending.0.inner.write();
        let mut cooc = self.cooccurrence.0.inner.write();
        let mut knn = self.session_knn.0.inner.write();
        for (n, items) in sessions.into_iter().enumerate() {
            for item in items {
                trending.observe(item, view_weight(EventKind::View), at);
            }
            cooc.observe_session(CoKind::View, items, at);
            // Seeded sessions get keys no live session hashes to (the top bit set, then the
            // ordinal), so a visitor is never their own seeded neighbour by accident.
            knn.observe_session((1u64 << 63) | n as u64, items, at);
        }
    }
}

impl OnlineSources {
    /// Keeps, in all three, the equal copy `canonical` gives of each item id (see
    /// [`Trending::share_ids`]); changes no answer.
    pub fn share_ids(&self, canonical: &dyn Fn(&ItemId) -> Option<ItemId>) {
        self.trending.0.inner.write().share_ids(canonical);
        self.cooccurrence.0.inner.write().share_ids(canonical);
        self.session_knn.0.inner.write().share_ids(canonical);
    }

    /// Writes the three snapshots into `dir` (created if missing), whatever `state_dir` is: what
    /// `attune train --model online` leaves for `recommend.online_seed`.
    pub fn write_to(&self, dir: &Path) -> Result<(), SourceError> {
        save(
            "trending",
            &dir.join(TRENDING_FILE),
            &*self.trending.0.inner.read(),
        )?;
        save(
            "cooccurrence",
            &dir.join(COOCCURRENCE_FILE),
            &*self.cooccurrence.0.inner.read(),
        )?;
        save(
            "session_knn",
            &dir.join(SESSION_KNN_FILE),
            &*self.session_knn.0.inner.read(),
        )
    }
}

/// How much one event adds to an item's popularity (the profile weights of the seed design:
/// purchase 5, add to cart 3, wishlist 2, recommendation click 1.5, click 1.5, view 1); skips
/// and cart removals add nothing.
fn view_weight(kind: EventKind) -> f32 {
    match kind {
        EventKind::Purchase => 5.0,
        EventKind::AddToCart => 3.0,
        EventKind::Wishlist => 2.0,
        EventKind::RecommendationClick | EventKind::Click => 1.5,
        EventKind::View => 1.0,
        EventKind::Skip | EventKind::RemoveFromCart | EventKind::Search => 0.0,
    }
}

/// Which co-occurrence an event feeds, if any.
fn co_kind(kind: EventKind) -> Option<CoKind> {
    match kind {
        EventKind::View
        | EventKind::Click
        | EventKind::RecommendationClick
        | EventKind::Wishlist => Some(CoKind::View),
        EventKind::AddToCart => Some(CoKind::Cart),
        EventKind::Purchase => Some(CoKind::Purchase),
        EventKind::Skip | EventKind::RemoveFromCart | EventKind::Search => None,
    }
}

/// `trending`: time-decayed popularity.
pub struct TrendingSource(Held<Trending>);

impl TrendingSource {
    /// The decayed popularity of one item now.
    pub fn score(&self, item: &ItemId, now: Timestamp) -> f32 {
        self.0.inner.read().score(item, now)
    }
}

impl CandidateSource for TrendingSource {
    fn name(&self) -> &'static str {
        "trending"
    }

    fn candidates(
        &self,
        ctx: &RecContext<'_>,
        budget: usize,
        accept: &dyn Fn(&ItemId) -> bool,
    ) -> Result<Vec<Proposal>, SourceError> {
        Ok(proposals(self.0.inner.read().top(budget, ctx.now, accept)))
    }

    fn score(
        &self,
        ctx: &RecContext<'_>,
        items: &[ItemId],
    ) -> Option<Result<Vec<f32>, SourceError>> {
        Some(Ok(self.0.inner.read().scores(items, ctx.now)))
    }

    fn learns(&self) -> bool {
        true
    }

    fn observe(&self, e: &Observation<'_>) {
        let w = view_weight(e.kind);
        if w > 0.0 {
            self.0.inner.write().observe(e.item_id, w, e.at);
        }
    }

    fn save(&self) -> Result<(), SourceError> {
        self.0.save()
    }
}

/// `cooccurrence`: items seen, carted or bought in the same sessions as the anchors.
pub struct CooccurrenceSource(Held<Cooccurrence>);

/// Which co-occurrences a surface reads, and how much each counts.
fn kinds_for(surface: Surface) -> &'static [(CoKind, f32)] {
    match surface {
        Surface::BoughtTogether => &[
            (CoKind::Purchase, 1.0),
            (CoKind::Cart, 0.6),
            (CoKind::View, 0.1),
        ],
        Surface::Cart => &[
            (CoKind::Cart, 1.0),
            (CoKind::Purchase, 1.0),
            (CoKind::View, 0.2),
        ],
        Surface::Similar | Surface::Home | Surface::Next => &[
            (CoKind::View, 1.0),
            (CoKind::Cart, 0.3),
            (CoKind::Purchase, 0.3),
        ],
    }
}

/// Anchors with weights falling by recency (the first is the strongest).
fn weighted(anchors: &[ItemId]) -> Vec<(ItemId, f32)> {
    anchors
        .iter()
        .enumerate()
        .map(|(i, a)| (a.clone(), 1.0 / (1.0 + i as f32)))
        .collect()
}

impl CandidateSource for CooccurrenceSource {
    fn name(&self) -> &'static str {
        "cooccurrence"
    }

    fn candidates(
        &self,
        ctx: &RecContext<'_>,
        budget: usize,
        accept: &dyn Fn(&ItemId) -> bool,
    ) -> Result<Vec<Proposal>, SourceError> {
        if ctx.anchors.is_empty() {
            return Ok(Vec::new());
        }
        let anchors = weighted(ctx.anchors);
        let keep = |id: &ItemId| !ctx.anchors.contains(id) && accept(id);
        let c = self.0.inner.read();
        let mut merged: Vec<(ItemId, f32)> = Vec::new();
        // Where each id is in `merged` (a list per kind: up to a few hundred ids).
        let mut at: FxHashMap<ItemId, usize> = FxHashMap::default();
        for (kind, w) in kinds_for(ctx.surface) {
            for (id, s) in c.recommend(*kind, &anchors, budget, &keep) {
                match at.get(&id) {
                    Some(&i) => merged[i].1 += w * s,
                    None => {
                        at.insert(id.clone(), merged.len());
                        merged.push((id, w * s));
                    }
                }
            }
        }
        drop(c);
        let mut out = proposals(merged);
        super::content::sort_best_first(&mut out);
        out.truncate(budget);
        Ok(out)
    }

    fn learns(&self) -> bool {
        true
    }

    fn observe(&self, e: &Observation<'_>) {
        let Some(kind) = co_kind(e.kind) else {
            return;
        };
        let earlier: Vec<ItemId> = e
            .earlier
            .iter()
            .filter(|(k, id)| co_kind(*k) == Some(kind) && id != e.item_id)
            .map(|(_, id)| id.clone())
            .collect();
        self.0
            .inner
            .write()
            .observe(kind, e.item_id, &earlier, e.at);
    }

    fn save(&self) -> Result<(), SourceError> {
        self.0.save()
    }
}

/// `session_knn`: items of the sessions most like this one (VMIS-kNN).
pub struct SessionKnnSource(Held<SessionKnn>);

impl CandidateSource for SessionKnnSource {
    fn name(&self) -> &'static str {
        "session_knn"
    }

    fn candidates(
        &self,
        ctx: &RecContext<'_>,
        budget: usize,
        accept: &dyn Fn(&ItemId) -> bool,
    ) -> Result<Vec<Proposal>, SourceError> {
        // The session's own sequence; a list about an item (similar, bought together) asks
        // about the sessions that item was in.
        let sequence: Vec<ItemId> = match ctx.surface {
            Surface::Similar | Surface::BoughtTogether => {
                ctx.anchors[..ctx.anchors.len().min(1)].to_vec()
            }
            _ => ctx.recent.to_vec(),
        };
        if sequence.is_empty() {
            return Ok(Vec::new());
        }
        let own = ctx.session_id.map(session_key);
        Ok(proposals(
            self.0
                .inner
                .read()
                .recommend(&sequence, budget, accept, own),
        ))
    }

    fn learns(&self) -> bool {
        true
    }

    fn observe(&self, e: &Observation<'_>) {
        if super::is_engagement(e.kind) {
            self.0
                .inner
                .write()
                .observe(session_key(e.session_id), e.item_id, e.at);
        }
    }

    fn forget_session(&self, session: &SessionId) {
        self.0.inner.write().remove_session(session_key(session));
    }

    fn save(&self) -> Result<(), SourceError> {
        self.0.save()
    }
}

fn proposals(list: Vec<(ItemId, f32)>) -> Vec<Proposal> {
    list.into_iter()
        .map(|(item_id, score)| Proposal { item_id, score })
        .collect()
}
