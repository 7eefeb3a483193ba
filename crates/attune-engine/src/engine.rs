use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use attune_core::rules::RulesError;
use attune_core::session::{ItemSummary, Reason, Scores};
use attune_core::{
    AffinityKind, Event, EventKind, Item, ItemId, Key, Rules, Session, SessionId, Timestamp, UserId,
};
use attune_store::catalog::CatalogStore;
use attune_store::profile::{Interaction, ProfileStore};
use attune_store::stream::{EventSink, SinkStats, StreamRecord};
use attune_store::{SessionStore, StoreStats};

use attune_search::keyword::KeywordIndex;
use attune_search::vector::VectorIndex;

use crate::catalog::{Catalog, CatalogItem, MemoryCatalog, UpsertOutcome};
use crate::catalog_sync::CatalogSync;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::personal::{Personal, ttl};
use crate::profile::{Preferences, Profiles};
use crate::recommend::{
    CandidateSource, FeedbackRequest, Observed, OnlineConfig, OnlineSources, RecommendOutcome,
    RecommendRequest, Recommender,
};
use crate::resolve::{Resolved, resolve};
use crate::search::{SearchConfig, SearchIndex, SearchOutcome, SearchRequest, TextEncoder};

/// Limits the engine enforces on requests.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most events in one ingest call.
    pub max_batch: usize,
    /// Most items in one catalog upsert.
    pub max_upsert: usize,
    /// How far in the future (client clock ahead of ours) an event timestamp may be, in ms.
    pub max_future_skew_ms: i64,
    /// How many affinities per kind an ingest answer carries.
    pub top_n: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch: 500,
            max_upsert: 50_000,
            max_future_skew_ms: 5 * 60 * 1000,
            top_n: 5,
        }
    }
}

/// What an ingest did.
#[derive(Debug, Clone)]
pub struct IngestOutcome {
    /// Events applied.
    pub applied: usize,
    /// Of those, events naming an item the catalog does not know (applied to the session's item
    /// memory, moving no affinity).
    pub unknown_items: usize,
    /// Events skipped because their `event_id` was applied to the session already (a retry).
    pub duplicates: usize,
    /// When every event belonged to one session: that session's state after the ingest.
    pub session: Option<SessionSummary>,
}

/// A session's state right after an update.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// The session.
    pub session_id: SessionId,
    /// Events applied to it so far.
    pub event_count: u32,
    /// Its strongest affinities per kind ([`EngineConfig::top_n`]).
    pub top: Scores,
}

/// One affinity with the events that explain it.
#[derive(Debug, Clone)]
pub struct AffinityDetail {
    /// Which kind.
    pub kind: AffinityKind,
    /// The key (brand, category path, `key:value`, intent).
    pub key: Key,
    /// The affinity now.
    pub score: f32,
    /// The recent events that moved it, newest first.
    pub reasons: Vec<Reason>,
}

/// A session as `GET /v1/sessions/{id}` shows it.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// The stored session.
    pub session: Session,
    /// The time the view was computed at.
    pub now: Timestamp,
    /// When the session will be forgotten if idle.
    pub expires_at: Timestamp,
    /// Every affinity, strongest first within each kind, with its reasons.
    pub affinities: Vec<AffinityDetail>,
    /// The items the session touched, most recent first.
    pub items: Vec<ItemSummary>,
}

/// The engine: see the crate docs.
pub struct Engine {
    sessions: Arc<dyn SessionStore>,
    profiles: Option<Profiles>,
    catalog: Arc<dyn Catalog>,
    search: Option<SearchIndex>,
    recommender: Recommender,
    rules: ArcSwap<Rules>,
    /// `rules.for_profile()`, kept in step with `rules`.
    profile_rules: ArcSwap<Rules>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    /// Where applied events and served lists are appended, if anywhere.
    sink: Option<Arc<dyn EventSink>>,
    /// Where the catalog is written through and loaded from, if anywhere.
    catalog_store: Option<CatalogSync>,
}

/// An applied event as the stream keeps it: `"record": "event"`, then the event's own fields
/// (its JSON with the opening brace taken over: a `#[serde(flatten)]` wrapper writes the same
/// bytes through an intermediate map, several allocations per event on the request path).
fn event_line(event: &Event) -> Option<Vec<u8>> {
    const HEAD: &[u8] = br#"{"record":"event","#;
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(HEAD);
    serde_json::to_writer(&mut line, event).ok()?;
    if line.get(HEAD.len()) != Some(&b'{') {
        return None;
    }
    line.remove(HEAD.len());
    if line.get(HEAD.len()) == Some(&b'}') {
        // No field of its own: drop the comma after the record kind.
        line.remove(HEAD.len() - 1);
    }
    Some(line)
}

/// A list served (for attribution): which surface, to whom, which items in order.
#[derive(serde::Serialize)]
struct ServedRecord<'a> {
    record: &'static str,
    surface: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    strategy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    session_id: Option<&'a SessionId>,
    user_id: Option<&'a attune_core::UserId>,
    items: Vec<&'a str>,
    timestamp: Timestamp,
}

impl Engine {
    /// An engine over a session store, with an empty catalog.
    pub fn new(
        sessions: Arc<dyn SessionStore>,
        rules: Rules,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Self {
        let search = match KeywordIndex::open(None) {
            Ok(keyword) => Some(SearchIndex::new(keyword, SearchConfig::default())),
            Err(e) => {
                tracing::error!(error = %e, "cannot create the in-memory search index; search is off");
                None
            }
        };
        let catalog: Arc<dyn Catalog> = Arc::new(MemoryCatalog::new());
        let recommender = Recommender::new(Arc::clone(&catalog));
        // The online sources learn from the first event, in memory, with no configuration.
        match OnlineSources::open(&OnlineConfig::default()) {
            Ok(online) => add_online(&recommender, online),
            Err(e) => tracing::error!(error = %e, "online recommendation sources are off"),
        }
        Engine {
            sessions,
            profiles: None,
            recommender,
            catalog,
            search,
            profile_rules: ArcSwap::from_pointee(rules.for_profile()),
            rules: ArcSwap::from_pointee(rules),
            clock,
            config,
            sink: None,
            catalog_store: None,
        }
    }

    /// Appends every applied event and every served list to this stream.
    pub fn with_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The stream's counters, when there is one.
    pub fn sink_stats(&self) -> Option<SinkStats> {
        self.sink.as_ref().map(|s| s.stats())
    }

    fn append_served(
        &self,
        surface: &str,
        strategy: Option<&'static str>,
        query: Option<&str>,
        session_id: Option<&SessionId>,
        user_id: Option<&attune_core::UserId>,
        items: Vec<&str>,
    ) {
        let Some(sink) = &self.sink else { return };
        let record = ServedRecord {
            record: "served",
            surface,
            strategy,
            query,
            session_id,
            user_id,
            items,
            timestamp: self.clock.now(),
        };
        if let Ok(line) = serde_json::to_vec(&record) {
            sink.append(&[StreamRecord {
                kind: "served",
                line,
            }]);
        }
    }

    /// Keeps long-term profiles of signed-in users in this store (see [`crate::Preferences`]).
    pub fn with_profiles(mut self, profiles: Arc<dyn ProfileStore>) -> Self {
        self.profiles = Some(Profiles::new(profiles));
        self
    }

    /// Serves from this catalog instead of an empty in-memory one. Call before loading items.
    pub fn with_catalog(mut self, catalog: Arc<dyn Catalog>) -> Self {
        self.recommender.set_catalog(Arc::clone(&catalog));
        self.catalog = catalog;
        self
    }

    /// Writes catalog changes through this store (files or PostgreSQL) and follows the changes
    /// other replicas make to it. Load it with [`Engine::load_catalog_store`].
    pub fn with_catalog_store(mut self, store: Arc<dyn CatalogStore>) -> Self {
        self.catalog_store = Some(CatalogSync::new(store));
        self
    }

    /// The catalog store, if there is one.
    pub fn catalog_store(&self) -> Option<&Arc<dyn CatalogStore>> {
        self.catalog_store.as_ref().map(|c| &c.store)
    }

    /// Reads the catalog store's items into the in-memory catalog, not into the search indexes
    /// (reuse them when they match, else [`Engine::rebuild_index`]). Returns how many items.
    pub async fn load_catalog_store(&self) -> Result<usize> {
        match &self.catalog_store {
            Some(sync) => sync.load(&*self.catalog).await,
            None => Ok(0),
        }
    }

    /// Applies the changes other replicas made to the catalog store since the last call (to
    /// the catalog and the search indexes); returns how many. Without a store, nothing.
    pub async fn sync_catalog(&self) -> Result<usize> {
        match &self.catalog_store {
            Some(sync) => sync.catch_up(&*self.catalog, self.search.as_ref()).await,
            None => Ok(0),
        }
    }

    /// Brings search indexes saved when the catalog store was at change `seq` up to date with
    /// the catalog now in memory: each item changed since is indexed again (its keyword entry,
    /// and its vector embedded anew) or removed. Returns how many ids.
    pub async fn refresh_index_since(&self, seq: u64) -> Result<usize> {
        let Some(sync) = &self.catalog_store else {
            return Ok(0);
        };
        let mut ids = sync.changed_since(seq).await?;
        ids.sort_unstable();
        ids.dedup();
        let s = self.search_index()?;
        let mut upserts = Vec::new();
        for id in &ids {
            match self.catalog.get(id) {
                Some(c) => upserts.push(c.item.clone()),
                None => s.delete(id)?,
            }
        }
        if !upserts.is_empty() {
            s.upsert(&upserts)?;
        }
        Ok(ids.len())
    }

    /// Whether the catalog has been read from its store (always true without one).
    pub fn catalog_loaded(&self) -> bool {
        self.catalog_store.as_ref().is_none_or(CatalogSync::loaded)
    }

    /// Whether the catalog store answers and the catalog has been read from it (`None`
    /// without a store).
    pub async fn catalog_store_up(&self) -> Option<bool> {
        let c = self.catalog_store.as_ref()?;
        Some(c.loaded() && c.store.ping().await.is_ok())
    }

    /// The catalog store's sequence number up to which every change is held here (`None`
    /// without a store).
    pub fn catalog_seq(&self) -> Option<u64> {
        self.catalog_store.as_ref().map(CatalogSync::watermark)
    }

    /// Uses these online sources (e.g. opened from a state directory, or seeded) instead of the
    /// empty in-memory ones.
    pub fn with_online(self, online: OnlineSources) -> Self {
        // The sources name the catalog's items with the catalog's copies of their ids (a
        // request's lookups then compare pointers), as far as the catalog is loaded by now.
        let catalog = &self.catalog;
        online.share_ids(&|id| catalog.get(id.as_str()).map(|c| c.item.id.clone()));
        add_online(&self.recommender, online);
        self
    }

    /// Keeps the bandit's arms in this store (Redis when replicas share them) instead of the
    /// in-memory default.
    pub fn with_bandit(mut self, store: Arc<dyn attune_store::bandit::BanditStore>) -> Self {
        self.recommender.set_bandit(store);
        self
    }

    /// Records which items a surface showed and which were clicked (the bandit learns from it).
    pub async fn feedback(&self, req: FeedbackRequest) -> Result<()> {
        crate::recommend::feedback(&self.recommender, req).await
    }

    /// Adds a recommendation source (replacing one of the same name).
    pub fn with_source(self, source: Arc<dyn CandidateSource>) -> Self {
        self.recommender.add(source);
        self
    }

    /// The recommendation sources wired in, by name.
    pub fn source_names(&self) -> Vec<&'static str> {
        self.recommender.names()
    }

    /// A recommendation list for one surface: see [`RecommendRequest`].
    pub async fn recommend(&self, req: RecommendRequest) -> Result<RecommendOutcome> {
        if self.sink.is_none() {
            return crate::recommend::recommend(&self.personal(), &self.recommender, req).await;
        }
        let (session_id, user_id) = (req.session_id.clone(), req.user_id.clone());
        let outcome = crate::recommend::recommend(&self.personal(), &self.recommender, req).await?;
        let strategy = match outcome.strategy {
            crate::recommend::Strategy::Pipeline(_) => "pipeline",
            crate::recommend::Strategy::Bandit => "bandit",
            crate::recommend::Strategy::Fallback => "fallback",
        };
        self.append_served(
            outcome.surface.path_name(),
            Some(strategy),
            None,
            session_id.as_ref(),
            user_id.as_ref(),
            outcome
                .items
                .iter()
                .map(|r| r.item.item.id.as_str())
                .collect(),
        );
        Ok(outcome)
    }

    /// Uses this keyword index (e.g. one on disk) and these search settings instead of the
    /// default in-memory index. Call before loading the catalog.
    pub fn with_search(mut self, keyword: KeywordIndex, config: SearchConfig) -> Self {
        self.search = Some(SearchIndex::new(keyword, config));
        self
    }

    /// Adds vector retrieval with this index and encoder. Items already in the catalog that the
    /// index lacks are embedded in the background; with `save_to`, the vectors are written there
    /// after each bulk of new ones (and by [`Engine::save_vectors`] at shutdown).
    pub fn with_vectors(
        mut self,
        index: Arc<VectorIndex>,
        encoder: Arc<dyn TextEncoder>,
        save_to: Option<std::path::PathBuf>,
    ) -> Self {
        self.recommender.content().set_vectors(Arc::clone(&index));
        if let Some(s) = self.search.as_mut() {
            s.set_vectors(index, encoder, save_to);
            s.embed_missing(&self.catalog.all());
        }
        self
    }

    pub(crate) fn search_index(&self) -> Result<&SearchIndex> {
        self.search
            .as_ref()
            .ok_or_else(|| Error::Search("no search index".into()))
    }

    /// The search settings in force.
    pub fn search_config(&self) -> SearchConfig {
        self.search
            .as_ref()
            .map(SearchIndex::config)
            .unwrap_or_default()
    }

    /// Items in the keyword index, and vectors held (if vector search is on).
    pub fn index_sizes(&self) -> (usize, Option<usize>) {
        self.search
            .as_ref()
            .map_or((0, None), |s| (s.keyword_len(), s.vector_count()))
    }

    /// Drops every cached retrieval (the next search of any query retrieves again).
    pub fn clear_search_cache(&self) {
        if let Some(s) = &self.search {
            s.clear_cache();
        }
    }

    /// The name of the encoder that embeds queries, when vector search is on.
    pub fn query_encoder_name(&self) -> Option<&str> {
        self.search.as_ref().and_then(SearchIndex::encoder_name)
    }

    /// The weight of the vector list in fusion for the queries embedded now, when vector search
    /// is on ([`crate::TextEncoder::query_weight`]).
    pub fn query_weight(&self) -> Option<f32> {
        self.search.as_ref().and_then(SearchIndex::query_weight)
    }

    /// Rebuilds the keyword index from the catalog (after a crash, or when it and the catalog
    /// disagree) and embeds items the vector index lacks.
    pub fn rebuild_index(&self) -> Result<()> {
        let all = self.catalog.all();
        let items: Vec<Item> = all.iter().map(|c| c.item.clone()).collect();
        let s = self.search_index()?;
        s.rebuild(&items)?;
        s.embed_missing(&all);
        Ok(())
    }

    /// Writes the vector index to `path` (embedded mode keeps embeddings across restarts).
    pub fn save_vectors(&self, path: &std::path::Path) -> Result<()> {
        match &self.search {
            Some(s) => s.save_vectors(path),
            None => Ok(()),
        }
    }

    /// What a personalized request reads, with one rules snapshot.
    pub(crate) fn personal(&self) -> Personal<'_> {
        Personal {
            sessions: &*self.sessions,
            profiles: self.profiles.as_ref(),
            catalog: &*self.catalog,
            rules: self.rules(),
            profile_rules: self.profile_rules(),
            now: self.clock.now(),
            degraded: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Searches: retrieval (cached), the personal reranker, the page; then records the search in
    /// the visitor's session.
    pub async fn search(&self, req: SearchRequest) -> Result<SearchOutcome> {
        if self.sink.is_none() {
            return crate::search::search(&self.personal(), self.search_index()?, req).await;
        }
        let (query, session_id, user_id) = (
            req.query.clone(),
            req.session_id.clone(),
            req.user_id.clone(),
        );
        let outcome = crate::search::search(&self.personal(), self.search_index()?, req).await?;
        self.append_served(
            "search",
            None,
            Some(&query),
            session_id.as_ref(),
            user_id.as_ref(),
            outcome
                .results
                .iter()
                .map(|h| h.item.item.id.as_str())
                .collect(),
        );
        Ok(outcome)
    }

    /// The engine's clock reading.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The limits in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.load_full()
    }

    /// Replaces the rules; requests already running finish with the old ones.
    pub fn set_rules(&self, rules: Rules) {
        self.profile_rules.store(Arc::new(rules.for_profile()));
        self.rules.store(Arc::new(rules));
    }

    /// Parses a rules document and, only if it is valid, puts it in force.
    pub fn reload_rules(&self, yaml: &str) -> Result<(), RulesError> {
        let rules = Rules::from_yaml(yaml)?;
        self.set_rules(rules);
        Ok(())
    }

    /// The rules profiles are updated and read with ([`Rules::for_profile`] of the rules in force).
    pub fn profile_rules(&self) -> Arc<Rules> {
        self.profile_rules.load_full()
    }

    /// The catalog.
    pub fn catalog(&self) -> &dyn Catalog {
        &*self.catalog
    }

    /// Validates and applies a batch of events. All events are validated before any is applied;
    /// the events of each session are applied in order in one atomic update.
    ///
    /// `batch` says whether the caller sent a list (errors then name `events[i].field`).
    pub async fn ingest(&self, events: Vec<Event>, batch: bool) -> Result<IngestOutcome> {
        self.ingest_with(events, batch, true).await
    }

    /// [`Engine::ingest`], computing the answer's top affinities only when `want_top`.
    pub(crate) async fn ingest_with(
        &self,
        events: Vec<Event>,
        batch: bool,
        want_top: bool,
    ) -> Result<IngestOutcome> {
        if events.is_empty() {
            return Err(Error::Invalid {
                field: Cow::Borrowed("events"),
                message: "must hold at least one event".into(),
            });
        }
        if events.len() > self.config.max_batch {
            return Err(Error::TooMany {
                field: "events",
                len: events.len(),
                max: self.config.max_batch,
            });
        }
        let now = self.clock.now();
        let latest = now.plus_millis(self.config.max_future_skew_ms);
        for (i, e) in events.iter().enumerate() {
            let prefix = if batch {
                format!("events[{i}]")
            } else {
                String::new()
            };
            e.validate().map_err(|err| Error::invalid(&prefix, err))?;
            if e.timestamp > latest {
                return Err(Error::invalid(
                    &prefix,
                    attune_core::Error::invalid(
                        "timestamp",
                        "is more than 5 minutes ahead of the server clock",
                    ),
                ));
            }
        }

        // Group by session, keeping each session's events in order.
        let mut groups: Vec<(SessionId, Vec<Event>)> = Vec::new();
        if events.iter().all(|e| e.session_id == events[0].session_id) {
            // The common case (one event, or one visitor's batch): no index needed.
            groups.push((events[0].session_id.clone(), events));
        } else {
            let mut index: HashMap<SessionId, usize> = HashMap::new();
            for e in events {
                match index.get(&e.session_id) {
                    Some(&g) => groups[g].1.push(e),
                    None => {
                        index.insert(e.session_id.clone(), groups.len());
                        groups.push((e.session_id.clone(), vec![e]));
                    }
                }
            }
        }

        let rules = self.rules();
        let ttl = ttl(&rules);
        let single = want_top && groups.len() == 1;
        let mut outcome = IngestOutcome {
            applied: 0,
            unknown_items: 0,
            duplicates: 0,
            session: None,
        };
        let mut for_profiles: Vec<(UserId, Vec<(Event, Resolved)>)> = Vec::new();
        for (session_id, mut events) in groups {
            let resolved = resolve(&*self.catalog, &events);
            // The catalog's copy of each known item's id (an equal string): what the session
            // and the online sources keep of it is then shared with the catalog, and their
            // lookups there compare pointers.
            for (e, r) in events.iter_mut().zip(&resolved) {
                if let (Some(id), Resolved::Item(Some(c))) = (&mut e.item_id, r) {
                    *id = c.item.id.clone();
                }
            }
            if self.profiles.is_some() {
                crate::profile::collect(&events, &resolved, &mut for_profiles);
            }
            let is_unknown = |r: &Resolved| matches!(r, Resolved::Item(None));
            let unknown = resolved.iter().filter(|r| is_unknown(r)).count();
            let n = events.len();
            // What the online recommendation sources learn from: the item events, in order
            // (with their positions in the batch when a duplicate may have to be left out).
            let learning = self.recommender.learns();
            let identified = events.iter().any(|e| e.event_id.is_some());
            let mut positions: Vec<usize> = Vec::new();
            let mut observed: Vec<Observed> = if learning {
                events
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.kind != EventKind::Search)
                    .filter_map(|(i, e)| {
                        let o = Observed {
                            kind: e.kind,
                            item_id: e.item_id.clone()?,
                            quantity: e.quantity,
                            at: e.timestamp,
                            earlier: Vec::new(),
                        };
                        if identified {
                            positions.push(i);
                        }
                        Some(o)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            // Which events the last run of `mutate` skipped as already applied (a store may run
            // it more than once; the run that was written is the last).
            let skipped: Vec<std::sync::atomic::AtomicBool> = if identified {
                (0..n)
                    .map(|_| std::sync::atomic::AtomicBool::new(false))
                    .collect()
            } else {
                Vec::new()
            };
            // Which events name an unknown item (only needed to leave duplicates out).
            let unknown_flags: Vec<bool> = if identified && unknown > 0 {
                resolved.iter().map(is_unknown).collect()
            } else {
                Vec::new()
            };
            // The events as the stream records them, serialized before `mutate` takes them
            // (only when there is a stream); duplicates are left out once known.
            let records: Vec<(usize, StreamRecord)> = if self.sink.is_some() {
                events
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| {
                        let line = event_line(e)?;
                        Some((
                            i,
                            StreamRecord {
                                kind: e.kind.as_str(),
                                line,
                            },
                        ))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let rules_for_update = Arc::clone(&rules);
            let skipped_ref = &skipped;
            let mutate = move |s: &mut Session| {
                for (i, (e, r)) in events.iter().zip(&resolved).enumerate() {
                    let applied = r.apply(s, e, &rules_for_update);
                    if let Some(flag) = skipped_ref.get(i) {
                        flag.store(!applied, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            };
            let top_n = if single { self.config.top_n } else { 0 };
            let mut summary = None;
            let mut inspect = |s: &Session| {
                if !observed.is_empty() {
                    // The update is written: the flags are final, and the session's trail
                    // holds exactly the events that were not skipped.
                    if identified {
                        let mut k = 0;
                        observed.retain(|_| {
                            let applied =
                                !skipped[positions[k]].load(std::sync::atomic::Ordering::Relaxed);
                            k += 1;
                            applied
                        });
                    }
                    fill_earlier(s, &mut observed);
                }
                if single {
                    summary = Some(SessionSummary {
                        session_id: s.id().clone(),
                        event_count: s.event_count(),
                        top: s.top(now, &rules, top_n),
                    });
                }
            };
            self.sessions
                .update(&session_id, now, ttl, &mutate, &mut inspect)
                .await?;
            let duplicates = skipped
                .iter()
                .filter(|f| f.load(std::sync::atomic::Ordering::Relaxed))
                .count();
            let was_skipped = |i: usize| {
                skipped
                    .get(i)
                    .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
            };
            outcome.unknown_items += if duplicates > 0 {
                unknown_flags
                    .iter()
                    .enumerate()
                    .filter(|&(i, &u)| u && !was_skipped(i))
                    .count()
            } else {
                unknown
            };
            outcome.applied += n - duplicates;
            outcome.duplicates += duplicates;
            if let Some(sink) = &self.sink {
                let fresh: Vec<StreamRecord> = records
                    .into_iter()
                    .filter(|&(i, _)| duplicates == 0 || !was_skipped(i))
                    .map(|(_, r)| r)
                    .collect();
                sink.append(&fresh);
            }
            outcome.session = summary;
            if !observed.is_empty() {
                self.recommender.observe(&session_id, &observed);
            }
        }
        if let Some(profiles) = &self.profiles
            && !for_profiles.is_empty()
        {
            // With every profile event identified, a failed profile write fails the request: the
            // client's retry is then applied once to sessions and profiles alike (what was
            // written is skipped by its id). Without ids a retry would count the session's
            // events twice, so the failure is only logged.
            let retry_safe = for_profiles
                .iter()
                .all(|(_, events)| events.iter().all(|(e, _)| e.event_id.is_some()));
            if let Err(e) = profiles
                .update(for_profiles, now, &self.profile_rules())
                .await
            {
                if retry_safe {
                    return Err(e);
                }
                tracing::error!(error = %e, "profile not updated (events without event_id: not retryable)");
            }
        }
        Ok(outcome)
    }

    /// The session with every affinity and its reasons; refreshes its expiry.
    pub async fn session(&self, id: &SessionId) -> Result<SessionView> {
        let now = self.clock.now();
        let rules = self.rules();
        let ttl = ttl(&rules);
        let session = self
            .sessions
            .get(id, now, ttl)
            .await?
            .ok_or_else(|| Error::SessionNotFound(id.to_string()))?;
        Ok(view(&*self.catalog, session, now, &rules))
    }

    fn profiles(&self) -> Result<&Profiles> {
        self.profiles
            .as_ref()
            .ok_or(Error::Unsupported("profiles are not enabled"))
    }

    /// Records stated preferences in a user's profile (creating it) and returns the profile.
    pub async fn set_preferences(
        &self,
        user: &UserId,
        preferences: &Preferences,
    ) -> Result<SessionView> {
        let now = self.now();
        let rules = self.profile_rules();
        let written = self
            .profiles()?
            .set_preferences(user, preferences, &*self.catalog, now, &rules)
            .await?;
        Ok(view(&*self.catalog, written, now, &rules))
    }

    /// A user's profile with every affinity explained.
    pub async fn profile(&self, user: &UserId) -> Result<SessionView> {
        let now = self.now();
        let rules = self.profile_rules();
        let profile = self.profiles()?.get(user, now, &rules).await?;
        Ok(view(&*self.catalog, profile, now, &rules))
    }

    /// A user's most recent interactions (item events applied to the profile), newest first,
    /// at most `limit`.
    pub async fn interactions(&self, user: &UserId, limit: usize) -> Result<Vec<Interaction>> {
        let now = self.now();
        let rules = self.profile_rules();
        self.profiles()?
            .interactions(user, now, &rules, limit)
            .await
    }

    /// Forgets a user's profile and interactions at once. Returns whether the profile existed.
    pub async fn forget_user(&self, user: &UserId) -> Result<bool> {
        let profiles = self.profiles()?;
        // A search's profile write still running after its answer would bring the user back.
        profiles.settle(std::time::Duration::from_secs(5)).await;
        profiles.forget(user).await
    }

    /// Forgets a session everywhere, at once. Returns whether it existed.
    pub async fn forget_session(&self, id: &SessionId) -> Result<bool> {
        self.recommender.forget_session(id);
        Ok(self.sessions.delete(id).await?)
    }

    /// Validates and upserts items; all or nothing. With a catalog store, the store is written
    /// first (a store that fails leaves everything as it was), then memory. An id repeated in
    /// one call counts once: its last copy wins.
    pub async fn upsert_items(&self, items: Vec<Item>) -> Result<UpsertOutcome> {
        let items = self.checked_items(items)?;
        match &self.catalog_store {
            Some(sync) => {
                sync.upsert(&*self.catalog, self.search.as_ref(), items)
                    .await
            }
            None => crate::catalog_sync::apply(&*self.catalog, self.search.as_ref(), items, &[]),
        }
    }

    /// [`Engine::upsert_items`] without waiting, for an engine with no catalog store (tests,
    /// benchmarks, tools building an engine in process); with a store it is refused.
    pub fn load_items(&self, items: Vec<Item>) -> Result<UpsertOutcome> {
        if self.catalog_store.is_some() {
            return Err(Error::Unsupported(
                "items go through the catalog store: use upsert_items",
            ));
        }
        let items = self.checked_items(items)?;
        crate::catalog_sync::apply(&*self.catalog, self.search.as_ref(), items, &[])
    }

    /// Checks the batch's size and every item; keeps the last copy of a repeated id.
    fn checked_items(&self, items: Vec<Item>) -> Result<Vec<Item>> {
        if items.len() > self.config.max_upsert {
            return Err(Error::TooMany {
                field: "items",
                len: items.len(),
                max: self.config.max_upsert,
            });
        }
        for (i, item) in items.iter().enumerate() {
            item.validate()
                .map_err(|e| Error::invalid(&format!("[{i}]"), e))?;
        }
        Ok(crate::catalog_sync::dedup_last(items))
    }

    /// One item.
    pub fn item(&self, id: &str) -> Result<Arc<CatalogItem>> {
        self.catalog
            .get(id)
            .ok_or_else(|| Error::ItemNotFound(id.to_owned()))
    }

    /// Removes an item (from the catalog store first, when there is one).
    pub async fn delete_item(&self, id: &str) -> Result<()> {
        let existed = match &self.catalog_store {
            Some(sync) => {
                sync.delete(&*self.catalog, self.search.as_ref(), id)
                    .await?
            }
            None => {
                let existed = self.catalog.delete(id)?;
                if existed && let Some(s) = &self.search {
                    s.delete(id)?;
                }
                existed
            }
        };
        if existed {
            Ok(())
        } else {
            Err(Error::ItemNotFound(id.to_owned()))
        }
    }

    /// Whether the backends answer.
    pub async fn ready(&self) -> Result<()> {
        self.sessions.ping().await?;
        if let Some(p) = &self.profiles {
            p.store().ping().await?;
        }
        if let Some(c) = &self.catalog_store {
            if !c.loaded() {
                return Err(Error::Catalog(attune_store::Error::Unavailable {
                    backend: c.store.backend(),
                    source: "the catalog has not been read from its store yet".into(),
                }));
            }
            c.store.ping().await.map_err(Error::Catalog)?;
        }
        Ok(())
    }

    /// Drops expired sessions held in process.
    pub fn purge_expired(&self) -> usize {
        let now = self.clock.now();
        let profiles = self
            .profiles
            .as_ref()
            .map_or(0, |p| p.purge_expired(now, &self.profile_rules()));
        self.sessions.purge_expired(now) + profiles
    }

    /// Session store counters.
    pub fn store_stats(&self) -> StoreStats {
        self.sessions.stats()
    }

    /// Flushes what must survive a restart (the embedded store's snapshot, if configured).
    pub async fn shutdown(&self) -> Result<()> {
        if let Some(sink) = &self.sink
            && let Err(e) = sink.close()
        {
            tracing::error!(error = %e, "event stream not closed cleanly");
        }
        for e in self.recommender.save() {
            tracing::error!(error = %e, "recommendation source state not saved");
        }
        if let Err(e) = self.recommender.bandit().close().await {
            tracing::error!(error = %e, "bandit state not saved");
        }
        let sessions = self.sessions.close().await;
        if let Some(p) = &self.profiles {
            p.settle(std::time::Duration::from_secs(10)).await;
            p.store().close().await?;
        }
        Ok(sessions?)
    }
}

fn add_online(recommender: &Recommender, online: OnlineSources) {
    recommender.add(online.trending);
    recommender.add(online.cooccurrence);
    recommender.add(online.session_knn);
}

/// Gives each event of a batch just applied to `s` the session's item events before it, from
/// the trail (the batch's events are its last entries, as far as the trail reaches).
fn fill_earlier(s: &Session, observed: &mut [Observed]) {
    let trail: Vec<(EventKind, ItemId)> = s
        .recent_items()
        .into_iter()
        .map(|r| (r.kind, r.item_id))
        .collect();
    // The j-th of the batch's n events sits at `len - n + j` on the trail; events that fell
    // off a trail shorter than the batch get nothing before them.
    let (len, n) = (trail.len(), observed.len());
    for (j, o) in observed.iter_mut().enumerate() {
        let at = (len + j).saturating_sub(n).min(len);
        o.earlier = trail[..at].to_vec();
    }
}

/// A session (or profile) with every affinity explained, as of `now`.
fn view(catalog: &dyn Catalog, session: Session, now: Timestamp, rules: &Rules) -> SessionView {
    let ttl = ttl(rules);
    let scores = session.scores(now, rules);
    let items = session.items();
    let known: HashMap<&attune_core::ItemId, Arc<CatalogItem>> = items
        .iter()
        .map(|s| &s.item_id)
        .zip(catalog.get_many(&items.iter().map(|s| s.item_id.as_str()).collect::<Vec<_>>()))
        .filter_map(|(id, found)| Some((id, found?)))
        .collect();
    let mut affinities = Vec::new();
    for kind in AffinityKind::ALL {
        for scored in scores.of(kind) {
            let reasons = session.reasons(kind, &scored.key, now, rules, |id| {
                known.get(id).map(|c| &c.features)
            });
            affinities.push(AffinityDetail {
                kind,
                key: scored.key.clone(),
                score: scored.score,
                reasons,
            });
        }
    }
    drop(known);
    SessionView {
        items,
        expires_at: now.plus_millis(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        now,
        session,
        affinities,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attune_core::{EventKind, ItemId, UserId};

    /// The stream's event line, byte for byte what a `#[serde(flatten)]` wrapper writes.
    #[test]
    fn event_lines_equal_the_flattened_record() {
        #[derive(serde::Serialize)]
        struct Flattened<'a> {
            record: &'static str,
            #[serde(flatten)]
            event: &'a Event,
        }
        let sid = SessionId::new("s-1").expect("valid");
        let mut plain = Event::item(
            EventKind::AddToCart,
            sid.clone(),
            ItemId::new("oat-\"milk\"").expect("valid"),
            Timestamp::from_millis(1_700_000_000_123),
        );
        plain.quantity = 3;
        let mut signed = plain.clone();
        signed.user_id = Some(UserId::new("ada").expect("valid"));
        signed.event_id = Some("ev-9".into());
        for e in [&plain, &signed] {
            let want = serde_json::to_vec(&Flattened {
                record: "event",
                event: e,
            })
            .expect("serializes");
            assert_eq!(
                String::from_utf8(event_line(e).expect("a line")).expect("utf-8"),
                String::from_utf8(want).expect("utf-8")
            );
        }
    }
}
