//! Personalized search: retrieval (keyword + vectors, fused, cached), then the personal reranker,
//! then the search itself becomes a signal of the visitor's session.
//!
//! Retrieval is unpersonalized and cached per (query, filters); the cache is invalidated by every
//! catalog change. Personalization runs on top of it per request, so a cached query is still
//! personal.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

use attune_core::event::{MAX_QUERY_LEN, SearchFilters, SearchRequestEvent};
use attune_core::rerank::{self, Explanation, RerankRequest, Retrieved, SourceHit};
use attune_core::{Event, Item, Key, SessionId, UserId};
use attune_search::cache::{CacheKey, RetrievalCache};
use attune_search::fusion::{self, Fused};
use attune_search::keyword::{Facets, KeywordIndex};
use attune_search::vector::{VectorConfig, VectorIndex};

use crate::catalog::Catalog;
use crate::catalog::CatalogItem;
use crate::error::{Error, Result};
use crate::personal::Personal;

/// Turns text into unit vectors (a sentence-embedding model). Implemented by the binary's wiring
/// over `attune-model`; tests may use anything deterministic.
pub trait TextEncoder: Send + Sync + 'static {
    /// One vector per text (item texts, embedded in the background).
    fn embed(&self, texts: &[&str]) -> std::result::Result<Vec<Vec<f32>>, String>;
    /// The vector of one search query, on the request's path. It must lie in the same space as
    /// [`Self::embed`]'s (the item vectors are compared with it); an encoder may answer it more
    /// cheaply than [`Self::embed`] (a static encoder distilled from the same model). By default,
    /// [`Self::embed`] of the one text.
    fn embed_query(&self, query: &str) -> std::result::Result<Vec<f32>, String> {
        Ok(self.embed(&[query])?.pop().unwrap_or_default())
    }
    /// The vectors' dimension.
    fn dim(&self) -> usize;
    /// A short name for logs and the README (`all-MiniLM-L6-v2`).
    fn name(&self) -> &str;
    /// What embeds queries now (it may change once, when a cheaper query encoder is ready). By
    /// default, [`Self::name`].
    fn query_encoder(&self) -> &str {
        self.name()
    }
    /// How much the vector list of a query this encoder embeds now counts in reciprocal rank
    /// fusion, against the keyword list's 1 (below 1 for a cheaper, less precise query encoder).
    /// By default 1.
    fn query_weight(&self) -> f32 {
        1.0
    }
}

/// Search settings.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// How many candidates each retriever returns and the reranker sees.
    pub candidates: usize,
    /// The `k` of reciprocal rank fusion.
    pub rrf_k: f32,
    /// How long unpersonalized candidates stay cached, in milliseconds.
    pub cache_ttl_ms: i64,
    /// Most cached (query, filters) pairs.
    pub cache_capacity: usize,
    /// Most bytes the cached retrievals may hold (each about 30 to 80 KB with its facets).
    pub cache_max_bytes: usize,
    /// Largest page.
    pub max_limit: usize,
    /// Vector index settings.
    pub vector: VectorConfig,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            candidates: 200,
            rrf_k: fusion::DEFAULT_K,
            cache_ttl_ms: 5 * 60 * 1000,
            cache_capacity: 10_000,
            cache_max_bytes: 64 << 20,
            max_limit: 100,
            vector: VectorConfig::default(),
        }
    }
}

/// Which retrievers a search runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Retrievers {
    /// Keyword and vector retrieval fused by reciprocal rank fusion (vector only when the engine
    /// has vectors): what the API serves.
    #[default]
    Hybrid,
    /// BM25 only.
    Keyword,
    /// Vector retrieval only (nothing without vectors).
    Vector,
}

/// A search, as the API asks for it.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    /// The query text (may be empty with filters: browsing).
    pub query: String,
    /// Filters on item fields and attribute keys.
    pub filters: SearchFilters,
    /// The visitor's session, for personalization (and to record the search in).
    pub session_id: Option<SessionId>,
    /// The signed-in user, for the long-term profile.
    pub user_id: Option<UserId>,
    /// Page size.
    pub limit: usize,
    /// Results to skip.
    pub offset: usize,
    /// Attach an explanation to each result.
    pub explain: bool,
    /// Leave out items the visitor already engaged with.
    pub exclude_seen: bool,
    /// The retrievers to run. Not on the HTTP API: the relevance check (`attune eval-search`)
    /// compares them in process. Only hybrid retrievals are cached.
    pub retrievers: Retrievers,
}

/// One result.
#[derive(Debug, Clone)]
pub struct SearchHit {
    /// The item.
    pub item: Arc<CatalogItem>,
    /// Relevance plus personal boosts.
    pub score: f32,
    /// Why it sits here, when asked for.
    pub explanation: Option<Explanation>,
}

/// The answer to a search.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    /// The page.
    pub results: Vec<SearchHit>,
    /// Matches in all: keyword matches plus items only the vector side found.
    pub total: usize,
    /// Facet counts over the keyword matches.
    pub facets: Facets,
    /// Whether session signals took part.
    pub personalized: bool,
    /// Whether retrieval came from the cache.
    pub cached: bool,
    /// Stores that did not answer (`sessions`, `profiles`): the results are not personalized by
    /// them (and the search was not recorded in the session).
    pub degraded: Vec<&'static str>,
}

/// Unpersonalized candidates of one (query, filters): fused, resolved to catalog items and graded
/// (everything that does not depend on the visitor is computed once and cached).
#[derive(Debug)]
pub(crate) struct Retrieval {
    candidates: Vec<Candidate>,
    /// Each candidate's [`rerank::Prepared`], in the same order: apart from the candidates,
    /// densely (24 bytes each), because the reranker reads them all on every request and a
    /// candidate is over four times larger (75 cache lines for 200 instead of one or more each).
    prepared: Vec<rerank::Prepared>,
    /// The candidates' distinct feature keys, for the reranker.
    keys: rerank::KeySpace,
    /// The intents the search names (recorded in the visitor's session).
    intents: Vec<Key>,
    total: usize,
    facets: Facets,
}

impl Retrieval {
    /// About how many bytes the retrieval holds, for the cache's bound (the items themselves
    /// belong to the catalog and are not counted).
    fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let sources: usize = self
            .candidates
            .iter()
            .map(|c| c.sources.capacity() * size_of::<SourceHit>())
            .sum();
        let values = |v: &[attune_search::keyword::FacetValue]| -> usize {
            v.iter()
                .map(|f| size_of::<attune_search::keyword::FacetValue>() + f.value.len())
                .sum()
        };
        let f = &self.facets;
        let facets = values(&f.brand)
            + values(&f.category)
            + values(&f.in_stock)
            + f.attributes
                .iter()
                .map(|(k, v)| 64 + k.len() + values(v))
                .sum::<usize>();
        size_of::<Self>()
            + self.candidates.capacity() * size_of::<Candidate>()
            + sources
            + self.prepared.capacity() * size_of::<rerank::Prepared>()
            + self.keys.heap_bytes()
            + self.intents.capacity() * size_of::<Key>()
            + facets
    }
}

#[derive(Debug)]
struct Candidate {
    fused: f32,
    /// The retrievers that found it (`keyword`, `vector`), with rank and score.
    sources: Vec<SourceHit>,
    item: Arc<CatalogItem>,
    tier: f32,
}

/// The sources of a fused search result, in the form recommendations share.
fn source_hits(f: &Fused) -> Vec<SourceHit> {
    let mut out = Vec::with_capacity(2);
    if let Some(rank) = f.keyword_rank {
        out.push(SourceHit {
            source: "keyword",
            rank,
            score: f.keyword_score.unwrap_or(0.0),
        });
    }
    if let Some(rank) = f.vector_rank {
        out.push(SourceHit {
            source: "vector",
            rank,
            score: f.vector_score.unwrap_or(0.0),
        });
    }
    out
}

struct Vectors {
    index: Arc<VectorIndex>,
    encoder: Arc<dyn TextEncoder>,
    queue: mpsc::Sender<Vec<(String, String)>>,
}

/// The engine's search side: indexes, cache, and the worker that embeds new items.
pub(crate) struct SearchIndex {
    keyword: KeywordIndex,
    vectors: Option<Vectors>,
    cache: Arc<RetrievalCache<Arc<Retrieval>>>,
    config: SearchConfig,
}

/// The text of an item the vector side embeds: title, brand, category path, attribute values.
pub fn item_text(item: &Item) -> String {
    let mut text = item.title.clone();
    if let Some(b) = &item.brand {
        text.push_str(". ");
        text.push_str(b);
    }
    if !item.category.is_empty() {
        text.push_str(". ");
        text.push_str(&item.category_path());
    }
    let values: Vec<String> = item
        .attributes
        .values()
        .flatten()
        .map(|v| v.replace('_', " "))
        .collect();
    if !values.is_empty() {
        text.push_str(". ");
        text.push_str(&values.join(", "));
    }
    text
}

/// How many texts the embedding worker encodes at once.
const EMBED_BATCH: usize = 32;

/// The embedding worker saves the vectors (when a path is set) once this many are new.
const SAVE_AFTER: usize = 1000;

/// Embeds and stores one queued batch; returns how many vectors were stored.
fn embed_batch(
    encoder: &dyn TextEncoder,
    index: &VectorIndex,
    items: &[(String, String)],
) -> usize {
    let mut stored = 0;
    for chunk in items.chunks(EMBED_BATCH) {
        let texts: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
        match encoder.embed(&texts) {
            Ok(vectors) => {
                for ((id, _), v) in chunk.iter().zip(vectors) {
                    match index.upsert(id, &v) {
                        Ok(()) => stored += 1,
                        Err(e) => tracing::error!(item = %id, error = %e, "vector not stored"),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "embedding failed"),
        }
    }
    stored
}

impl SearchIndex {
    pub(crate) fn new(keyword: KeywordIndex, config: SearchConfig) -> Self {
        SearchIndex {
            keyword,
            vectors: None,
            cache: Arc::new(RetrievalCache::with_max_bytes(
                config.cache_capacity,
                config.cache_max_bytes,
                config.cache_ttl_ms,
            )),
            config,
        }
    }

    /// Adds vector retrieval; new and changed items are embedded by a background thread, so a
    /// large upsert does not hold the request (keyword search sees them at once, vectors when
    /// embedded).
    pub(crate) fn set_vectors(
        &mut self,
        index: Arc<VectorIndex>,
        encoder: Arc<dyn TextEncoder>,
        save_to: Option<PathBuf>,
    ) {
        let (tx, rx) = mpsc::channel::<Vec<(String, String)>>();
        let worker_index = Arc::clone(&index);
        let worker_encoder = Arc::clone(&encoder);
        let cache = Arc::clone(&self.cache);
        let spawned = std::thread::Builder::new()
            .name("attune-embed".into())
            .spawn(move || {
                let mut unsaved = 0usize;
                while let Ok(first) = rx.recv() {
                    let mut batch = Some(first);
                    while let Some(items) = batch.take() {
                        unsaved += embed_batch(&*worker_encoder, &worker_index, &items);
                        // Take whatever queued meanwhile before invalidating and saving.
                        batch = rx.try_recv().ok();
                    }
                    cache.invalidate_all();
                    // A bulk load is saved once embedded, so a crash does not cost the
                    // embedding again; small changes wait for the next bulk or the shutdown.
                    if let Some(path) = &save_to
                        && unsaved >= SAVE_AFTER
                    {
                        match worker_index.save(path) {
                            Ok(()) => unsaved = 0,
                            Err(e) => tracing::error!(path = %path.display(), error = %e, "vectors not saved"),
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the embedding worker; vector search is off");
            return;
        }
        self.vectors = Some(Vectors {
            index,
            encoder,
            queue: tx,
        });
    }

    pub(crate) fn config(&self) -> SearchConfig {
        self.config.clone()
    }

    pub(crate) fn vector_count(&self) -> Option<usize> {
        self.vectors.as_ref().map(|v| v.index.len())
    }

    /// Indexes items (keyword now, vectors in the background) and drops cached retrievals.
    pub(crate) fn upsert(&self, items: &[Item]) -> Result<()> {
        self.keyword
            .upsert(items)
            .and_then(|()| self.keyword.commit())
            .map_err(|e| Error::Search(e.to_string()))?;
        if let Some(v) = &self.vectors {
            let missing: Vec<(String, String)> = items
                .iter()
                .map(|i| (i.id.to_string(), item_text(i)))
                .collect();
            let _ = v.queue.send(missing);
        }
        self.cache.invalidate_all();
        Ok(())
    }

    /// Embeds only items the vector index does not hold yet (after loading a saved index).
    pub(crate) fn embed_missing(&self, items: &[Arc<CatalogItem>]) {
        if let Some(v) = &self.vectors {
            let missing: Vec<(String, String)> = items
                .iter()
                .filter(|c| v.index.get(c.item.id.as_str()).is_none())
                .map(|c| (c.item.id.to_string(), item_text(&c.item)))
                .collect();
            if !missing.is_empty() {
                tracing::info!(items = missing.len(), "embedding items in the background");
                let _ = v.queue.send(missing);
            }
        }
    }

    pub(crate) fn delete(&self, id: &str) -> Result<()> {
        self.keyword
            .delete(&[id])
            .and_then(|()| self.keyword.commit())
            .map_err(|e| Error::Search(e.to_string()))?;
        if let Some(v) = &self.vectors {
            v.index.remove(id);
        }
        self.cache.invalidate_all();
        Ok(())
    }

    pub(crate) fn rebuild(&self, items: &[Item]) -> Result<()> {
        self.keyword
            .rebuild(items)
            .map_err(|e| Error::Search(e.to_string()))?;
        self.cache.invalidate_all();
        Ok(())
    }

    pub(crate) fn clear_cache(&self) {
        self.cache.invalidate_all();
    }

    pub(crate) fn encoder_name(&self) -> Option<&str> {
        self.vectors.as_ref().map(|v| v.encoder.query_encoder())
    }

    pub(crate) fn query_weight(&self) -> Option<f32> {
        self.vectors.as_ref().map(|v| v.encoder.query_weight())
    }

    pub(crate) fn keyword_len(&self) -> usize {
        self.keyword.len()
    }

    pub(crate) fn save_vectors(&self, path: &std::path::Path) -> Result<()> {
        if let Some(v) = &self.vectors {
            v.index
                .save(path)
                .map_err(|e| Error::Search(e.to_string()))?;
        }
        Ok(())
    }

    /// Retrieves unpersonalized candidates (from the cache when it has them).
    fn retrieve(
        &self,
        catalog: &dyn Catalog,
        query: &str,
        filters: &SearchFilters,
        retrievers: Retrievers,
        now_ms: i64,
    ) -> Result<(Arc<Retrieval>, bool)> {
        let n = self.config.candidates;
        let key = CacheKey::new(query, filters, n);
        let cacheable = retrievers == Retrievers::Hybrid;
        if cacheable && let Some(hit) = self.cache.get(&key, now_ms) {
            return Ok((hit, true));
        }
        // Read before retrieving: if the catalog changes meanwhile, this result is not cached.
        let generation = self.cache.generation();
        let kw = if retrievers == Retrievers::Vector {
            attune_search::keyword::KeywordHits::default()
        } else {
            self.keyword
                .search(query, filters, n, 0)
                .map_err(|e| Error::Search(e.to_string()))?
        };
        let keyword: Vec<(String, f32)> =
            kw.hits.into_iter().map(|h| (h.item_id, h.score)).collect();
        let mut vector: Vec<(String, f32)> = Vec::new();
        let mut vector_weight = 1.0;
        if let Some(v) = &self.vectors
            && retrievers != Retrievers::Keyword
            && !query.trim().is_empty()
            && !v.index.is_empty()
        {
            let q = v
                .encoder
                .embed_query(query)
                .map_err(|e| Error::Search(format!("embedding the query: {e}")))?;
            vector_weight = v.encoder.query_weight();
            if !q.is_empty() {
                let accept = |id: &str| catalog.get(id).is_some_and(|c| filters.matches(&c.item));
                let hits = v
                    .index
                    .search(&q, n, &accept)
                    .map_err(|e| Error::Search(e.to_string()))?;
                vector = hits.into_iter().map(|h| (h.item_id, h.score)).collect();
            }
        }
        let fused = fusion::rrf_weighted(&keyword, &vector, self.config.rrf_k, vector_weight, n);
        let vector_only = fused.iter().filter(|f| f.keyword_rank.is_none()).count();
        let ids: Vec<&str> = fused.iter().map(|f| f.item_id.as_str()).collect();
        let items = catalog.get_many(&ids);
        let terms = attune_core::vocab::query_terms(query);
        let mut keys = rerank::KeySpace::with_capacity(fused.len());
        let mut prepared = Vec::with_capacity(fused.len());
        let candidates = fused
            .into_iter()
            .zip(items)
            .filter_map(|(fused, item)| {
                let item = item?;
                let tier = attune_core::vocab::query_coverage(&terms, &item.item);
                prepared.push(keys.prepare_keyed(
                    &item.item,
                    &item.features,
                    &item.feature_ids,
                    item.duplicate,
                ));
                Some(Candidate {
                    fused: fused.fused,
                    sources: source_hits(&fused),
                    item,
                    tier,
                })
            })
            .collect();
        let retrieval = Arc::new(Retrieval {
            candidates,
            prepared,
            keys,
            intents: catalog.search_intents(query, filters),
            total: kw.total + vector_only,
            facets: kw.facets,
        });
        if cacheable {
            let bytes = retrieval.heap_bytes();
            self.cache
                .put_sized(key, Arc::clone(&retrieval), bytes, now_ms, generation);
        }
        Ok((retrieval, false))
    }
}

/// Checks a search request against the limits and the catalog.
fn check_search(config: &SearchConfig, catalog: &dyn Catalog, req: &SearchRequest) -> Result<()> {
    let invalid = |field: &str, message: String| Error::Invalid {
        field: field.to_owned().into(),
        message,
    };
    if req.query.len() > MAX_QUERY_LEN {
        return Err(invalid(
            "query",
            format!(
                "is {} bytes long; the limit is {MAX_QUERY_LEN}",
                req.query.len()
            ),
        ));
    }
    if req.query.chars().any(char::is_control) {
        return Err(invalid(
            "query",
            "must not contain control characters".into(),
        ));
    }
    let max = config.max_limit;
    if req.limit == 0 || req.limit > max {
        return Err(invalid("limit", format!("must be from 1 to {max}")));
    }
    let candidates = config.candidates;
    if req.offset >= candidates {
        return Err(invalid(
            "offset",
            format!("must be below {candidates} (results are reranked from the best {candidates})"),
        ));
    }
    req.filters.validate().map_err(|e| Error::invalid("", e))?;
    for key in req.filters.attributes.keys() {
        if !catalog.has_attribute_key(key) {
            return Err(invalid(
                &format!("filters.{key}"),
                "no item in the catalog has this attribute".into(),
            ));
        }
    }
    Ok(())
}

/// Searches: retrieval (cached), the personal reranker, the page; then records the search in
/// the visitor's session.
pub(crate) async fn search(
    personal: &Personal<'_>,
    index: &SearchIndex,
    req: SearchRequest,
) -> Result<SearchOutcome> {
    check_search(&index.config, personal.catalog, &req)?;
    let now = personal.now;
    let rules = &personal.rules;
    // The profile's round trip (PostgreSQL, Redis) overlaps retrieval: its request goes out
    // first, retrieval runs while it travels, then its answer is read.
    let profile = async {
        match &req.user_id {
            Some(user) => personal.profile_of(user).await,
            None => Ok(None),
        }
    };
    let retrieve = async {
        index.retrieve(
            personal.catalog,
            &req.query,
            &req.filters,
            req.retrievers,
            now.as_millis(),
        )
    };
    let (profile, retrieved) = tokio::join!(biased; profile, retrieve);
    let (retrieval, cached) = retrieved?;
    let profile = profile?;

    let retrieved: Vec<Retrieved<'_>> = retrieval
        .candidates
        .iter()
        .zip(&retrieval.prepared)
        .map(|(c, prepared)| Retrieved {
            item: &c.item.item,
            features: &c.item.features,
            fused: c.fused,
            tier: c.tier,
            sources: &c.sources,
            prepared,
        })
        .collect();

    // The profile as it was before this search (which reaches it below).
    let profile_signals = profile
        .map(|p| personal.profile_signals_of(&p, &retrieval.keys))
        .filter(|s| !s.is_empty());
    // The search itself is a signal: recorded in the session in the same store operation
    // that reads the session's signals (those from before it), at the cost of one event.
    let signals = match &req.session_id {
        Some(id) => {
            let mut event = Event::search(
                id.clone(),
                SearchRequestEvent {
                    query: req.query,
                    filters: req.filters,
                },
                now,
            );
            event.user_id = req.user_id;
            if event.validate().is_ok() {
                personal
                    .signals_and_record_search(
                        event,
                        &retrieval.intents,
                        &retrieval.keys,
                        req.exclude_seen,
                    )
                    .await?
            } else {
                personal
                    .session_signals(id, &retrieval.keys, req.exclude_seen)
                    .await?
            }
        }
        None => None,
    }
    .filter(|s| !s.is_empty());
    let ranked = rerank::rerank(
        &retrieved,
        &retrieval.keys,
        signals.as_ref(),
        profile_signals.as_ref(),
        rules,
        &RerankRequest {
            exclude_seen: req.exclude_seen,
            page_size: req.limit,
            needed: req.offset + req.limit,
            explain: req.explain,
        },
    );
    let results = ranked
        .into_iter()
        .skip(req.offset)
        .take(req.limit)
        .map(|r| SearchHit {
            item: Arc::clone(&retrieval.candidates[r.index].item),
            score: r.score,
            explanation: r.explanation.map(|e| *e),
        })
        .collect();
    let outcome = SearchOutcome {
        results,
        total: retrieval.total,
        facets: retrieval.facets.clone(),
        personalized: signals.is_some() || profile_signals.is_some(),
        cached,
        degraded: personal.degraded(),
    };

    Ok(outcome)
}
