//! What the server measures about itself: Prometheus metrics (`GET /metrics`) and the same
//! figures as JSON over sliding windows (`GET /v1/stats`).
//!
//! Every request passes [`track`], a middleware that records its endpoint (the route's template,
//! `/v1/sessions/{id}`, never the raw path, so no visitor id reaches a label or a log), method,
//! status and latency twice: in a Prometheus counter and histogram (cumulative since start, for a
//! scraper), and in a ring of one-minute latency histograms per endpoint (for `/v1/stats`'s
//! p50 / p99 over the last 1, 5 and 60 minutes). The handlers add what only they know: events per
//! type and how long applying them took, searches by cache hit, recommendation lists by strategy
//! (the cold-start share is `bandit` over all). Gauges that describe state (sessions held, index
//! sizes, backend health, resident memory) are read when scraped.
//!
//! The window histograms have 4 buckets per doubling from 10 µs (a bucket spans 19 %); a
//! percentile is reported as its bucket's geometric middle, so within 10 % of the exact value.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

/// Minutes of history kept for `/v1/stats`.
const WINDOW_MINUTES: usize = 60;
/// The windows `/v1/stats` reports, in minutes.
const WINDOWS: [u64; 3] = [1, 5, 60];
/// Latency buckets of a window histogram: 4 per doubling from [`FIRST_BUCKET_US`] to about 42 s,
/// the last one open-ended.
const BUCKETS: usize = 4 * 22;
const FIRST_BUCKET_US: f64 = 10.0;
/// How long a scrape waits for a backend's ping before calling it down.
const PING_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SearchLabels {
    cache: &'static str,
    personalized: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecommendLabels {
    surface: &'static str,
    strategy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs to ~13 s, doubling.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// The server's metrics: one per [`crate::app`].
pub struct Metrics {
    registry: Registry,
    started: Instant,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<EndpointLabels>,
    events: Family<TypeLabels, Counter>,
    event_apply_seconds: Histogram,
    searches: Family<SearchLabels, Counter>,
    recommendations: Family<RecommendLabels, Counter>,
    source_failures: Family<SourceLabels, Counter>,
    sessions_held: Gauge,
    store_evictions: Gauge,
    store_expirations: Gauge,
    store_conflicts: Gauge,
    store_unreadable: Gauge,
    backend_up: Family<BackendLabels, Gauge>,
    stream_pending: Gauge,
    catalog_items: Gauge,
    keyword_items: Gauge,
    vectors: Gauge,
    resident_bytes: Gauge,
    uptime_seconds: Gauge,
    stream: Family<StreamLabels, Gauge>,
    degraded: Family<DegradedLabels, Counter>,
    model_info: Family<ModelLabels, Gauge>,
    model_age: Family<SourceLabels, Gauge>,
    /// Per source: the version served and when it was trained.
    models: Mutex<Vec<(&'static str, String, Option<SystemTime>)>>,
    windows: Windows,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    source: &'static str,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DegradedLabels {
    endpoint: &'static str,
    store: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    outcome: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("attune");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by endpoint (route template), method and status",
            requests.clone(),
        );
        let request_seconds: HistogramFamily<EndpointLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by endpoint and method",
            request_seconds.clone(),
        );
        let events = Family::<TypeLabels, Counter>::default();
        registry.register(
            "events",
            "Events accepted and applied, by type",
            events.clone(),
        );
        let event_apply_seconds = latency_histogram();
        registry.register(
            "event_apply_duration_seconds",
            "Event to effect: from a validated batch to its events applied to the session, the \
             profile and the online sources (the next request sees them)",
            event_apply_seconds.clone(),
        );
        let searches = Family::<SearchLabels, Counter>::default();
        registry.register(
            "searches",
            "Searches answered, by retrieval cache hit or miss and whether personalized",
            searches.clone(),
        );
        let recommendations = Family::<RecommendLabels, Counter>::default();
        registry.register(
            "recommendations",
            "Recommendation lists served, by surface and strategy (bandit = a cold visitor)",
            recommendations.clone(),
        );
        let source_failures = Family::<SourceLabels, Counter>::default();
        registry.register(
            "recommendation_source_failures",
            "Recommendation lists made without a source that failed, by source",
            source_failures.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let sessions_held = gauge(
            &mut registry,
            "sessions_held",
            "Live sessions held in this process (the whole store when embedded; the local cache in front of Redis)",
        );
        let store_evictions = gauge(
            &mut registry,
            "session_evictions",
            "Sessions evicted to stay within the memory bound since start",
        );
        let store_expirations = gauge(
            &mut registry,
            "session_expirations",
            "Sessions dropped on expiry since start",
        );
        let store_conflicts = gauge(
            &mut registry,
            "session_update_conflicts",
            "Optimistic session updates retried after a concurrent write (Redis) since start",
        );
        let store_unreadable = gauge(
            &mut registry,
            "sessions_unreadable",
            "Stored sessions that could not be decoded and were treated as absent, since start",
        );
        let backend_up = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "backend_up",
            "1 when the backend answered at the last scrape, else 0: stores (a ping of every store), catalog (the catalog store answers and the catalog was read from it), events (the sink took its last records)",
            backend_up.clone(),
        );
        let catalog_items = gauge(&mut registry, "catalog_items", "Items in the catalog");
        let keyword_items = gauge(
            &mut registry,
            "keyword_index_items",
            "Items in the keyword index",
        );
        let vectors = gauge(
            &mut registry,
            "vector_index_items",
            "Item vectors held (0 when vector search is off)",
        );
        let resident_bytes = gauge(
            &mut registry,
            "process_resident_memory_bytes",
            "Resident memory of the server process",
        );
        let uptime_seconds = gauge(
            &mut registry,
            "uptime_seconds",
            "Seconds since the server started",
        );
        let stream = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "stream_records",
            "Event-stream records since start (with events.dir set): appended (to the log, or to \
             the spool for NATS), delivered (in the log, or acknowledged by JetStream), or dropped \
             (the log or spool could not be written, or the spool was full)",
            stream.clone(),
        );
        let stream_pending = gauge(
            &mut registry,
            "stream_pending_records",
            "Event-stream records waiting in the spool for NATS (0 with the log)",
        );
        let degraded = Family::<DegradedLabels, Counter>::default();
        registry.register(
            "degraded_responses",
            "Searches and recommendation lists served without a store that did not answer, by \
             endpoint and store (sessions, profiles)",
            degraded.clone(),
        );
        let model_info = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model_info",
            "1 for each trained model served, by source and version (<dataset>@<data checksum prefix>-<model fingerprint>)",
            model_info.clone(),
        );
        let model_age = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "model_age_seconds",
            "Seconds since the served model was written (its manifest's modification time)",
            model_age.clone(),
        );
        registry.register(
            "build",
            "The running build",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Metrics {
            registry,
            started: Instant::now(),
            requests,
            request_seconds,
            events,
            event_apply_seconds,
            searches,
            recommendations,
            source_failures,
            sessions_held,
            store_evictions,
            store_expirations,
            store_conflicts,
            store_unreadable,
            backend_up,
            stream_pending,
            catalog_items,
            keyword_items,
            vectors,
            resident_bytes,
            uptime_seconds,
            stream,
            degraded,
            model_info,
            model_age,
            models: Mutex::new(Vec::new()),
            windows: Windows::default(),
        }
    }

    /// Records a trained model being served (`attune_model_info`, `attune_model_age_seconds`).
    pub fn set_model(&self, source: &'static str, version: String, trained_at: Option<SystemTime>) {
        let mut models = self.models.lock();
        // A model swapped in replaces its source's series.
        if let Some(at) = models.iter().position(|(s, _, _)| *s == source) {
            let (_, old, _) = models.remove(at);
            self.model_info.remove(&ModelLabels {
                source,
                version: old,
            });
        }
        self.model_info
            .get_or_create(&ModelLabels {
                source,
                version: version.clone(),
            })
            .set(1);
        models.push((source, version, trained_at));
    }

    /// Seconds since this server started, as the windows count them.
    fn now_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn record_request(
        &self,
        endpoint: &'static str,
        method: &'static str,
        status: u16,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                method,
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&EndpointLabels { endpoint, method })
            .observe(took.as_secs_f64());
        self.windows
            .record(self.now_secs(), endpoint, method, status, took);
    }

    /// Events of one accepted batch, by type, and how long applying them took.
    pub(crate) fn record_events<'a>(
        &self,
        types: impl Iterator<Item = &'static str> + 'a,
        took: Duration,
    ) {
        let mut n = 0;
        for t in types {
            self.events.get_or_create(&TypeLabels { r#type: t }).inc();
            n += 1;
        }
        self.event_apply_seconds.observe(took.as_secs_f64());
        self.windows.record_events(self.now_secs(), n);
    }

    pub(crate) fn record_search(
        &self,
        cached: bool,
        personalized: bool,
        degraded: &[&'static str],
    ) {
        for store in degraded {
            self.degraded
                .get_or_create(&DegradedLabels {
                    endpoint: "search",
                    store,
                })
                .inc();
        }
        self.searches
            .get_or_create(&SearchLabels {
                cache: if cached { "hit" } else { "miss" },
                personalized: if personalized { "true" } else { "false" },
            })
            .inc();
    }

    pub(crate) fn record_recommendation(
        &self,
        surface: &'static str,
        strategy: &'static str,
        failed: &[&'static str],
    ) {
        self.recommendations
            .get_or_create(&RecommendLabels { surface, strategy })
            .inc();
        for store in failed
            .iter()
            .filter(|s| matches!(**s, "sessions" | "profiles"))
        {
            self.degraded
                .get_or_create(&DegradedLabels {
                    endpoint: "recommendations",
                    store,
                })
                .inc();
        }
        self.windows
            .record_list(self.now_secs(), strategy == "bandit");
        for source in failed
            .iter()
            .filter(|s| !matches!(**s, "sessions" | "profiles"))
        {
            self.source_failures
                .get_or_create(&SourceLabels { source })
                .inc();
        }
    }

    /// Reads the state gauges from the engine (pinging its backends) and renders every metric in
    /// the Prometheus text format.
    async fn render(&self, engine: &attune_engine::Engine) -> String {
        self.refresh(engine).await;
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "metrics could not be rendered");
        }
        out
    }

    async fn refresh(&self, engine: &attune_engine::Engine) {
        let stats = engine.store_stats();
        self.sessions_held.set(gauge_value(stats.sessions as u64));
        self.store_evictions.set(gauge_value(stats.evictions));
        self.store_expirations.set(gauge_value(stats.expirations));
        self.store_conflicts.set(gauge_value(stats.conflicts));
        self.store_unreadable.set(gauge_value(stats.unreadable));
        let up = matches!(
            tokio::time::timeout(PING_TIMEOUT, engine.ready()).await,
            Ok(Ok(()))
        );
        self.backend_up
            .get_or_create(&BackendLabels { backend: "stores" })
            .set(i64::from(up));
        if let Ok(Some(up)) = tokio::time::timeout(PING_TIMEOUT, engine.catalog_store_up()).await {
            self.backend_up
                .get_or_create(&BackendLabels { backend: "catalog" })
                .set(i64::from(up));
        }
        let (keyword, vectors) = engine.index_sizes();
        self.catalog_items
            .set(gauge_value(engine.catalog().len() as u64));
        self.keyword_items.set(gauge_value(keyword as u64));
        self.vectors.set(gauge_value(vectors.unwrap_or(0) as u64));
        if let Some(rss) = resident_bytes() {
            self.resident_bytes.set(gauge_value(rss));
        }
        self.uptime_seconds.set(gauge_value(self.now_secs()));
        for (source, _, trained_at) in self.models.lock().iter() {
            if let Some(age) = trained_at.and_then(|t| SystemTime::now().duration_since(t).ok()) {
                self.model_age
                    .get_or_create(&SourceLabels { source })
                    .set(gauge_value(age.as_secs()));
            }
        }
        if let Some(stream) = engine.sink_stats() {
            for (outcome, n) in [
                ("appended", stream.appended),
                ("delivered", stream.delivered),
                ("dropped", stream.dropped),
            ] {
                self.stream
                    .get_or_create(&StreamLabels { outcome })
                    .set(gauge_value(n));
            }
            self.stream_pending.set(gauge_value(stream.pending));
            self.backend_up
                .get_or_create(&BackendLabels { backend: "events" })
                .set(i64::from(stream.up));
        }
    }

    /// The `/v1/stats` answer.
    async fn stats(&self, engine: &attune_engine::Engine) -> StatsOut {
        self.refresh(engine).await;
        let now = self.now_secs();
        let windows = WINDOWS
            .iter()
            .map(|&minutes| self.windows.summary(now, minutes))
            .collect();
        StatsOut {
            uptime_seconds: now,
            generated_at: unix_now_secs(),
            sessions_held: engine.store_stats().sessions,
            ready: self
                .backend_up
                .get(&BackendLabels { backend: "stores" })
                .is_some_and(|g| g.get() == 1),
            resident_bytes: resident_bytes(),
            catalog_items: engine.catalog().len(),
            windows,
        }
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Resident memory of this process from `/proc/self/statm` (Linux; `None` elsewhere).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Latency counts of one endpoint over one minute.
#[derive(Clone)]
struct Minute {
    /// Which minute since start these counts are of.
    minute: u64,
    buckets: [u32; BUCKETS],
    count: u64,
    errors: u64,
}

impl Minute {
    fn empty(minute: u64) -> Self {
        Minute {
            minute,
            buckets: [0; BUCKETS],
            count: 0,
            errors: 0,
        }
    }
}

/// The bucket of a latency: 4 per doubling from 10 µs.
fn bucket_of(took: Duration) -> usize {
    let us = took.as_secs_f64() * 1e6;
    if us <= FIRST_BUCKET_US {
        return 0;
    }
    let b = ((us / FIRST_BUCKET_US).log2() * 4.0).floor();
    // Saturating float → int: NaN and negatives give 0, huge values the last bucket.
    (b as usize).min(BUCKETS - 1)
}

/// The geometric middle of a bucket, in milliseconds.
fn bucket_middle_ms(b: usize) -> f64 {
    FIRST_BUCKET_US * 2f64.powf((b as f64 + 0.5) / 4.0) / 1000.0
}

/// One endpoint's last [`WINDOW_MINUTES`] minutes.
struct Ring {
    slots: Vec<Minute>,
}

impl Ring {
    fn new() -> Self {
        Ring {
            slots: vec![Minute::empty(u64::MAX); WINDOW_MINUTES],
        }
    }

    fn slot(&mut self, minute: u64) -> &mut Minute {
        let i = (minute % WINDOW_MINUTES as u64) as usize;
        if self.slots[i].minute != minute {
            self.slots[i] = Minute::empty(minute);
        }
        &mut self.slots[i]
    }

    /// The minutes within the last `minutes` (the current one included).
    fn recent(&self, now_minute: u64, minutes: u64) -> impl Iterator<Item = &Minute> {
        self.slots.iter().filter(move |m| {
            m.minute != u64::MAX && m.minute <= now_minute && now_minute - m.minute < minutes
        })
    }
}

/// Per-minute counts of events and lists served (for rates and the cold-start share).
#[derive(Clone, Copy)]
struct Tally {
    minute: u64,
    events: u64,
    lists: u64,
    bandit_lists: u64,
}

#[derive(Default)]
struct Windows {
    endpoints: Mutex<FxHashMap<(&'static str, &'static str), Ring>>,
    tallies: Mutex<Vec<Tally>>,
}

impl Windows {
    fn record(
        &self,
        now: u64,
        endpoint: &'static str,
        method: &'static str,
        status: u16,
        took: Duration,
    ) {
        let minute = now / 60;
        let mut endpoints = self.endpoints.lock();
        let ring = endpoints
            .entry((endpoint, method))
            .or_insert_with(Ring::new);
        let slot = ring.slot(minute);
        slot.buckets[bucket_of(took)] += 1;
        slot.count += 1;
        if status >= 500 {
            slot.errors += 1;
        }
    }

    fn tally(&self, now: u64, f: impl FnOnce(&mut Tally)) {
        let minute = now / 60;
        let mut tallies = self.tallies.lock();
        if tallies.is_empty() {
            tallies.resize(
                WINDOW_MINUTES,
                Tally {
                    minute: u64::MAX,
                    events: 0,
                    lists: 0,
                    bandit_lists: 0,
                },
            );
        }
        let t = &mut tallies[(minute % WINDOW_MINUTES as u64) as usize];
        if t.minute != minute {
            *t = Tally {
                minute,
                events: 0,
                lists: 0,
                bandit_lists: 0,
            };
        }
        f(t);
    }

    fn record_events(&self, now: u64, n: u64) {
        self.tally(now, |t| t.events += n);
    }

    fn record_list(&self, now: u64, bandit: bool) {
        self.tally(now, |t| {
            t.lists += 1;
            t.bandit_lists += u64::from(bandit);
        });
    }

    /// The figures of the last `minutes` minutes, `now` seconds after start.
    fn summary(&self, now: u64, minutes: u64) -> WindowOut {
        let now_minute = now / 60;
        // The span the counted minutes cover: from the start of the oldest one (or the server's
        // start) to now.
        let first_minute = now_minute.saturating_sub(minutes - 1);
        let seconds = (now - first_minute * 60).max(1);
        let mut endpoints: Vec<EndpointStatsOut> = {
            let rings = self.endpoints.lock();
            rings
                .iter()
                .filter_map(|((endpoint, method), ring)| {
                    let mut buckets = [0u64; BUCKETS];
                    let (mut count, mut errors) = (0u64, 0u64);
                    for m in ring.recent(now_minute, minutes) {
                        for (sum, &b) in buckets.iter_mut().zip(&m.buckets) {
                            *sum += u64::from(b);
                        }
                        count += m.count;
                        errors += m.errors;
                    }
                    (count > 0).then(|| EndpointStatsOut {
                        endpoint: (*endpoint).to_owned(),
                        method: (*method).to_owned(),
                        requests: count,
                        requests_per_second: count as f64 / seconds as f64,
                        server_errors: errors,
                        p50_ms: percentile(&buckets, count, 0.50),
                        p99_ms: percentile(&buckets, count, 0.99),
                    })
                })
                .collect()
        };
        endpoints.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.endpoint.cmp(&b.endpoint))
        });
        let (mut events, mut lists, mut bandit) = (0u64, 0u64, 0u64);
        for t in self.tallies.lock().iter() {
            if t.minute != u64::MAX && t.minute <= now_minute && now_minute - t.minute < minutes {
                events += t.events;
                lists += t.lists;
                bandit += t.bandit_lists;
            }
        }
        WindowOut {
            minutes,
            seconds,
            events,
            events_per_second: events as f64 / seconds as f64,
            recommendation_lists: lists,
            cold_start_share: (lists > 0).then(|| bandit as f64 / lists as f64),
            endpoints,
        }
    }
}

/// The latency below which `q` of `count` observations fall, in ms (bucket resolution).
fn percentile(buckets: &[u64; BUCKETS], count: u64, q: f64) -> f64 {
    // The rank of the observation at quantile q, 1-based: ceil(q × count).
    let rank = ((q * count as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (b, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return round3(bucket_middle_ms(b));
        }
    }
    round3(bucket_middle_ms(BUCKETS - 1))
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// `GET /v1/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsOut {
    /// Seconds since this server started.
    pub uptime_seconds: u64,
    /// When this answer was made, in seconds since the Unix epoch.
    pub generated_at: u64,
    /// Whether the session and profile stores answered a ping just now.
    pub ready: bool,
    /// Live sessions held in this process (every live session when embedded; with Redis, the
    /// local cache's).
    pub sessions_held: usize,
    /// Resident memory of the server, in bytes (Linux).
    pub resident_bytes: Option<u64>,
    /// Items in the catalog.
    pub catalog_items: usize,
    /// The last 1, 5 and 60 minutes.
    pub windows: Vec<WindowOut>,
}

/// Figures over one window.
#[derive(Debug, Serialize, ToSchema)]
pub struct WindowOut {
    /// The window's length in whole minutes: the current minute and the ones before it.
    pub minutes: u64,
    /// The seconds those minutes cover so far (rates divide by it).
    pub seconds: u64,
    /// Events accepted.
    pub events: u64,
    /// Events accepted per second.
    pub events_per_second: f64,
    /// Recommendation lists served.
    pub recommendation_lists: u64,
    /// Share of those lists served by the cold-start bandit (absent when none were served).
    pub cold_start_share: Option<f64>,
    /// Per endpoint, busiest first.
    pub endpoints: Vec<EndpointStatsOut>,
}

/// One endpoint's figures over a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointStatsOut {
    /// The route template, e.g. `/v1/sessions/{session_id}`; `other` for the storefront's pages and
    /// unknown paths.
    pub endpoint: String,
    /// The HTTP method.
    pub method: String,
    /// Requests answered.
    pub requests: u64,
    /// Requests per second.
    pub requests_per_second: f64,
    /// Answers with a 5xx status.
    pub server_errors: u64,
    /// Median latency, ms (within 10 %).
    pub p50_ms: f64,
    /// 99th percentile latency, ms (within 10 %).
    pub p99_ms: f64,
}

/// What [`track`] needs: where to record, and whether to log every request.
#[derive(Clone)]
pub(crate) struct Tracker {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) log_requests: bool,
}

/// The request id header: taken from the client when it is a plain token, else made here, and
/// always sent back.
pub const REQUEST_ID: &str = "x-request-id";

/// A client's request id, kept when it is 1 to 128 characters of letters, digits and `._:-`
/// (anything else could forge log lines, so it is replaced).
fn client_request_id(request: &Request) -> Option<HeaderValue> {
    let v = request.headers().get(REQUEST_ID)?;
    let ok = (1..=128).contains(&v.len())
        && v.as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b));
    ok.then(|| v.clone())
}

/// A new request id: this process's random prefix and a counter, unique without coordination.
fn new_request_id() -> HeaderValue {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u32>);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::try_from(format!("{prefix:08x}-{n:x}"))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A route template as a `&'static str`, so labels and window keys cost no allocation per
/// request. Templates come only from the router's own routes (a request matching none is
/// `other`), so the set, and the memory leaked for it, is bounded by the routes.
fn intern(template: &str) -> &'static str {
    use std::sync::OnceLock;
    static TEMPLATES: OnceLock<parking_lot::RwLock<rustc_hash::FxHashSet<&'static str>>> =
        OnceLock::new();
    let set = TEMPLATES.get_or_init(Default::default);
    if let Some(t) = set.read().get(template) {
        return t;
    }
    let mut set = set.write();
    if let Some(t) = set.get(template) {
        return t;
    }
    let leaked: &'static str = Box::leak(template.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// The method's name; any method outside HTTP's standard set is `OTHER` (a client cannot mint
/// label values).
fn method_name(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// Gives every request an id (echoed in `x-request-id` and carried by every log line written
/// while it is handled) and records its endpoint, method, status and latency. Logs name the
/// route template, never the path: no visitor or user id reaches a log line.
pub(crate) async fn track(
    State(tracker): State<Tracker>,
    request: Request,
    next: Next,
) -> Response {
    use tracing::Instrument as _;
    let started = Instant::now();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |p| intern(p.as_str()));
    let method = method_name(request.method());
    let id = client_request_id(&request).unwrap_or_else(new_request_id);
    let span = tracing::info_span!(
        "request",
        id = id.to_str().unwrap_or_default(),
        method = %method,
        endpoint = %endpoint,
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    tracker
        .metrics
        .record_request(endpoint, method, status, took);
    if tracker.log_requests {
        let _entered = span.enter();
        tracing::info!(status, micros = took.as_micros() as u64, "answered");
    }
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/stats", get(stats))
}

/// Every metric in the Prometheus text format (version 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.engine).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}

/// Latency per endpoint (p50 / p99), request and event rates and the cold-start share over the
/// last 1, 5 and 60 minutes, with sessions held and memory: a dashboard's view of this server.
#[utoipa::path(get, path = "/v1/stats", tag = "health",
    responses((status = 200, description = "The figures", body = StatsOut)))]
pub(crate) async fn stats(State(state): State<AppState>) -> Json<StatsOut> {
    Json(state.metrics.stats(&state.engine).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_a_fourth_of_a_doubling() {
        assert_eq!(bucket_of(Duration::from_micros(5)), 0);
        assert_eq!(bucket_of(Duration::from_micros(10)), 0);
        assert_eq!(bucket_of(Duration::from_micros(20)), 4);
        assert_eq!(bucket_of(Duration::from_micros(40)), 8);
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
        // A bucket's middle is within 10 % of anything in it.
        for us in [11u64, 57, 230, 999, 12_345, 987_654] {
            let mid = bucket_middle_ms(bucket_of(Duration::from_micros(us)));
            let exact = us as f64 / 1000.0;
            assert!((mid / exact - 1.0).abs() < 0.10, "{us} µs → {mid} ms");
        }
    }

    #[test]
    fn percentiles_come_from_the_window_asked_for() {
        let w = Windows::default();
        // Minute 0: 99 fast requests and one slow one.
        for _ in 0..99 {
            w.record(10, "/v1/events", "POST", 200, Duration::from_micros(100));
        }
        w.record(10, "/v1/events", "POST", 503, Duration::from_millis(50));
        // Minute 3: 10 requests at 1 ms.
        for _ in 0..10 {
            w.record(200, "/v1/events", "POST", 200, Duration::from_millis(1));
        }
        w.record_events(200, 10);

        let last = w.summary(230, 1);
        assert_eq!(last.minutes, 1);
        assert_eq!(last.seconds, 50, "minute 3 began at 180 s");
        let e = &last.endpoints[0];
        assert_eq!((e.requests, e.server_errors), (10, 0));
        assert!(
            (e.p50_ms - 1.0).abs() < 0.1 && (e.p99_ms - 1.0).abs() < 0.1,
            "{e:?}"
        );
        assert_eq!(last.events, 10);
        assert!((last.events_per_second - 0.2).abs() < 1e-9);

        let five = w.summary(230, 5);
        assert_eq!(five.seconds, 230);
        let e = &five.endpoints[0];
        assert_eq!((e.requests, e.server_errors), (110, 1));
        assert!((e.p50_ms - 0.1).abs() < 0.01, "{e:?}");
        // The 99th of 110 is one of the 1 ms ones, the slowest (50 ms) is above it.
        assert!((e.p99_ms - 1.0).abs() < 0.1, "{e:?}");

        // An hour later minute 0 has left even the 60-minute window.
        let later = w.summary(60 * 60 + 30, 60);
        assert_eq!(later.endpoints[0].requests, 10);
    }

    #[test]
    fn a_reused_slot_forgets_its_old_minute() {
        let w = Windows::default();
        w.record(0, "/x", "GET", 200, Duration::from_millis(1));
        // Sixty minutes later the same slot holds the new minute only.
        w.record(3600, "/x", "GET", 200, Duration::from_millis(2));
        let s = w.summary(3600, 60);
        assert_eq!(s.endpoints[0].requests, 1);
    }

    #[test]
    fn the_cold_start_share_counts_bandit_lists() {
        let w = Windows::default();
        assert_eq!(w.summary(0, 1).cold_start_share, None);
        w.record_list(5, true);
        w.record_list(5, false);
        w.record_list(5, false);
        w.record_list(5, false);
        let s = w.summary(6, 1);
        assert_eq!(s.recommendation_lists, 4);
        assert_eq!(s.cold_start_share, Some(0.25));
    }
}
