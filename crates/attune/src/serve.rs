//! `attune serve` and `attune demo`: wire the backends the settings name, load the catalog and the
//! rules, and serve HTTP until SIGINT or SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use attune_core::Rules;
use attune_engine::{Clock, Engine, EngineConfig, OnlineConfig, OnlineSources, SystemClock};
use attune_server::extract::BodyKind;
use attune_server::{ServerConfig, app_with_metrics};
use attune_store::SessionStore;
use attune_store::bandit::BanditStore;
use attune_store::bandit::memory::{MemoryBanditConfig, MemoryBanditStore};
use attune_store::bandit::redis::{RedisBanditConfig, RedisBanditStore};
use attune_store::memory::{MemoryConfig, MemorySessionStore};
use attune_store::redis::{RedisConfig, RedisSessionStore};

use attune_engine::{SearchConfig, TextEncoder};
use attune_search::keyword::KeywordIndex;
use attune_search::vector::{VectorConfig, VectorIndex};

use crate::model_swap::HotSequential;
use crate::query_encoder::{MiniLm, QueryEncoderSetting};
use crate::rules_watch;
use crate::settings::{SearchSettings, SessionSettings, Settings};

/// The built-in demo catalog: grocery products written for Attune.
pub(crate) const DEMO_CATALOG: &str = include_str!("../demo/catalog.json");

/// How often expired sessions are purged from the embedded store.
const PURGE_EVERY: Duration = Duration::from_secs(30);

pub(crate) fn init_tracing(log: &crate::settings::LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        crate::settings::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        crate::settings::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Opens the session store the URL names.
pub(crate) async fn open_store(
    s: &SessionSettings,
    clock: &dyn Clock,
) -> anyhow::Result<Arc<dyn SessionStore>> {
    let url = s.url.as_str();
    if url == "memory://" {
        let store = MemorySessionStore::open(
            MemoryConfig {
                max_sessions: s.max_sessions,
                shards: s.shards,
                snapshot: s.snapshot.clone(),
            },
            clock.now(),
        )?;
        Ok(Arc::new(store))
    } else if attune_store::redis::is_redis_url(url) {
        let store = RedisSessionStore::connect(RedisConfig {
            url: url.to_owned(),
            prefix: s.redis_prefix.clone(),
            l1_capacity: s.l1_capacity,
            timeout: Duration::from_millis(s.timeout_ms),
            ..RedisConfig::default()
        })
        .await
        .with_context(|| format!("connecting to the session store at {url}"))?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!(
            "store url {url:?}: use memory://, redis://host:port/db or redis+cluster://host:port,host:port/"
        )
    }
}

/// The long-term profile store the URL names: embedded (`memory://`, journaled in
/// `profiles.dir`), Redis (`redis://` or `redis+cluster://`, under `profiles.redis_prefix`) or PostgreSQL
/// (`postgres://`, the table `profiles.table` and `<table>_interactions`).
async fn open_profile_store(
    settings: &Settings,
    clock: &dyn Clock,
) -> anyhow::Result<Arc<dyn attune_store::profile::ProfileStore>> {
    let p = &settings.profiles;
    let timeout = Duration::from_millis(settings.sessions.timeout_ms);
    let url = p.url.as_str();
    if url == "memory://" {
        use attune_store::profile::memory::{MemoryProfileConfig, MemoryProfileStore};
        let store = MemoryProfileStore::open(
            MemoryProfileConfig {
                max_profiles: p.max_profiles,
                shards: settings.sessions.shards,
                dir: p.dir.clone(),
            },
            clock.now(),
        )?;
        Ok(Arc::new(store))
    } else if attune_store::redis::is_redis_url(url) {
        let store = attune_store::redis::RedisProfileStore::connect(RedisConfig {
            url: url.to_owned(),
            prefix: p.redis_prefix.clone(),
            l1_capacity: p.l1_capacity,
            timeout,
            ..RedisConfig::default()
        })
        .await
        .with_context(|| format!("connecting to the profile store at {url}"))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        use attune_store::postgres::{PostgresConfig, PostgresProfileStore};
        let store = PostgresProfileStore::connect(PostgresConfig {
            url: url.to_owned(),
            table: p.table.clone(),
            l1_capacity: p.l1_capacity,
            timeout,
            ..PostgresConfig::default()
        })
        .await
        .with_context(|| format!("connecting to the profile store at {url}"))?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!(
            "profile store url {url:?}: use memory://, redis://host:port/db, redis+cluster://host:port,host:port/ or postgres://user@host:port/db"
        )
    }
}

/// Where `scripts/fetch-model` puts the embedding model.
pub(crate) fn default_model_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME")
        .map(|h| std::path::Path::new(&h).join(".cache/attune/models/all-MiniLM-L6-v2"))
}

/// The embedding model the settings name, if any.
fn load_encoder(s: &SearchSettings) -> anyhow::Result<Option<Arc<dyn TextEncoder>>> {
    let dir = match s.model.as_str() {
        "off" => return Ok(None),
        "auto" => match default_model_dir() {
            Some(d) if d.join("model.safetensors").exists() => d,
            _ => {
                tracing::info!(
                    "no embedding model found: searching by keyword only (run scripts/fetch-model for vector search)"
                );
                return Ok(None);
            }
        },
        path => std::path::PathBuf::from(path),
    };
    if s.query_encoder == QueryEncoderSetting::Static {
        match crate::query_encoder::read_table(&dir) {
            Ok(Some(table)) => {
                tracing::info!(
                    dir = %dir.display(),
                    table_mb = table.heap_bytes() >> 20,
                    "queries are embedded by the static query encoder; the model is loaded when an item needs embedding"
                );
                return Ok(Some(Arc::new(MiniLm::with_table(
                    dir,
                    table,
                    s.static_weight,
                ))));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "the static query encoder's table cannot be read; building it again"
            ),
        }
    }
    let started = std::time::Instant::now();
    let model = attune_model::text::TextEmbedder::load(&dir)
        .with_context(|| format!("loading the embedding model from {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), ms = started.elapsed().as_millis() as u64, "embedding model loaded");
    Ok(Some(Arc::new(MiniLm::new(
        model,
        dir,
        s.query_encoder,
        s.static_weight,
    ))))
}

fn search_config(s: &SearchSettings) -> SearchConfig {
    SearchConfig {
        candidates: s.candidates,
        rrf_k: s.rrf_k,
        cache_ttl_ms: i64::try_from(s.cache_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        cache_capacity: s.cache_capacity,
        cache_max_bytes: s.cache_max_mb.saturating_mul(1 << 20),
        vector: VectorConfig {
            exact_below: s.exact_below,
            ..VectorConfig::default()
        },
        ..SearchConfig::default()
    }
}

/// Builds the engine with its search side and catalog: the keyword index (on disk when
/// `search.dir` is set), the catalog, then vectors (loaded from disk where saved, the rest
/// embedded in the background).
pub(crate) async fn build_engine(settings: &Settings) -> anyhow::Result<Arc<Engine>> {
    Ok(build_engine_parts(settings).await?.0)
}

/// [`build_engine`], also handing back the `sequential` source (when `recommend.model` is set)
/// for the server to hot-swap.
async fn build_engine_parts(
    settings: &Settings,
) -> anyhow::Result<(Arc<Engine>, Option<Arc<HotSequential>>)> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&settings.sessions, &*clock).await?;
    let profiles = open_profile_store(settings, &*clock)
        .await
        .context("opening the profile store")?;
    let rules = load_rules(settings.rules.path.as_deref())?;
    let s = &settings.search;
    let keyword = KeywordIndex::open(s.dir.as_ref().map(|d| d.join("keyword")).as_deref())
        .context("opening the keyword index")?;
    let mut engine = Engine::new(
        store,
        rules,
        clock,
        EngineConfig {
            max_batch: settings.http.max_batch,
            ..EngineConfig::default()
        },
    )
    .with_profiles(profiles)
    .with_search(keyword, search_config(s));
    if let Some(store) = open_catalog_store(settings)? {
        engine = engine.with_catalog_store(store);
    }
    // The index on disk matches a store's catalog only if it was closed cleanly at the store's
    // current change (the marker is removed now, so a crash from here on rebuilds it).
    let marker = s.dir.as_ref().map(|d| d.join(INDEX_MARKER));
    let marked = marker.as_deref().and_then(take_marker);
    let items = load_catalog(&engine, settings).await?;
    // An index saved at change N of this same store is brought up to date with the changes
    // since N (once the vectors are attached, so changed items are embedded again); any other
    // index is rebuilt.
    let saved_at = match (engine.catalog_seq(), marked.as_deref()) {
        (Some(now), Some(text)) => marker_seq(settings, text).filter(|&n| n <= now),
        _ => None,
    };
    if saved_at.is_none() && (engine.index_sizes().0 != items || engine.catalog_seq().is_some()) {
        if engine.catalog_seq().is_some() {
            tracing::info!(items, "building the keyword index from the catalog store");
        }
        engine.rebuild_index()?;
    }
    if let Some(encoder) = load_encoder(s)? {
        let config = search_config(s).vector;
        let saved = s.dir.as_ref().map(|d| d.join("vectors.bin"));
        let index = match &saved {
            Some(p) if p.exists() => match VectorIndex::load(p, config) {
                Ok(i) if i.dim() == encoder.dim() => i,
                Ok(_) | Err(_) => {
                    tracing::warn!(path = %p.display(), "saved vectors unusable; embedding again");
                    VectorIndex::new(encoder.dim(), config)
                }
            },
            _ => VectorIndex::new(encoder.dim(), config),
        };
        engine = engine.with_vectors(Arc::new(index), encoder, saved);
    }
    if let Some(n) = saved_at {
        match engine.refresh_index_since(n).await {
            Ok(changed) if engine.index_sizes().0 == items => tracing::info!(
                items,
                changed,
                "the keyword index on disk matches the catalog store: reused"
            ),
            Ok(_) => {
                tracing::warn!(
                    items,
                    "the saved keyword index disagrees with the catalog: rebuilding it"
                );
                engine.rebuild_index()?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the saved keyword index cannot be brought up to date: rebuilding it");
                engine.rebuild_index()?;
            }
        }
    }
    engine = engine
        .with_online(
            OnlineSources::open(&OnlineConfig {
                state_dir: settings.recommend.state_dir.clone(),
                seed_dir: settings.recommend.online_seed.clone(),
                ..OnlineConfig::default()
            })
            .context("opening the online recommendation sources")?,
        )
        .with_bandit(open_bandit(settings).await?);
    if let Some(dir) = &settings.events.dir {
        use crate::settings::FsyncSetting;
        use attune_store::stream::nats::{NatsConfig, NatsSink};
        use attune_store::stream::{EventLog, EventLogConfig, EventSink, Fsync};
        let config = EventLogConfig {
            dir: dir.clone(),
            segment_bytes: settings.events.segment_mb.max(1) * 1024 * 1024,
            fsync: match settings.events.fsync {
                FsyncSetting::Never => Fsync::Never,
                FsyncSetting::Interval => Fsync::Interval,
                FsyncSetting::Always => Fsync::Always,
            },
            compress: true,
        };
        if let Some(url) = &settings.events.url {
            let mut nats = NatsConfig::new(url.clone(), config);
            nats.stream = settings.events.stream.clone();
            nats.subject = settings.events.subject.clone();
            nats.duplicate_window = Duration::from_secs(settings.events.duplicate_window_secs);
            nats.spool_max_bytes = settings.events.spool_max_mb.saturating_mul(1024 * 1024);
            nats.linger = Duration::from_millis(settings.events.linger_ms);
            let sink = NatsSink::start(nats)
                .with_context(|| format!("opening the event spool in {}", dir.display()))?;
            tracing::info!(url = %url, stream = %settings.events.stream, spool = %dir.display(), waiting = sink.stats().pending, "event stream to NATS JetStream");
            engine = engine.with_sink(sink);
        } else {
            let log = EventLog::open(config)
                .with_context(|| format!("opening the event log in {}", dir.display()))?;
            tracing::info!(dir = %dir.display(), next = log.next_seq(), "event log open");
            engine = engine.with_sink(log);
        }
    }
    let mut sequential = None;
    if let Some(dir) = &settings.recommend.model {
        let (source, loaded) = HotSequential::load(
            dir,
            &|id| engine.catalog().get(id).is_some(),
            settings.recommend.model_cache,
        )
        .with_context(|| {
            format!(
                "setting recommend.model: cannot serve the SASRec model in {}",
                dir.display()
            )
        })?;
        tracing::info!(
            dir = %loaded.dir.display(),
            items = loaded.items,
            max_len = loaded.max_len,
            ms = loaded.took.as_millis() as u64,
            "sequential model loaded"
        );
        let source = Arc::new(source);
        engine = engine.with_source(Arc::clone(&source) as Arc<dyn attune_engine::CandidateSource>);
        sequential = Some(source);
    }
    Ok((Arc::new(engine), sequential))
}

/// A model directory's version for the metrics (`<dataset>@<first 12 hex of the data's
/// checksum>-<8 hex of the manifest's>`, so two models of one dataset differ) and when it was
/// written (the manifest's modification time).
fn model_version(dir: &Path) -> (String, Option<std::time::SystemTime>) {
    use std::hash::{Hash, Hasher};
    let path = dir.join("manifest.json");
    let trained_at = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let bytes = std::fs::read(&path).ok();
    let manifest: Option<serde_json::Value> =
        bytes.as_ref().and_then(|b| serde_json::from_slice(b).ok());
    let version = manifest.map_or_else(
        || "unknown".to_owned(),
        |m| {
            let name = m["dataset"]["name"].as_str().unwrap_or("?");
            let sum = m["dataset"]["checksum"].as_str().unwrap_or("");
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            format!(
                "{name}@{}-{:08x}",
                sum.get(..12).unwrap_or(sum),
                h.finish() as u32
            )
        },
    );
    (version, trained_at)
}

async fn open_bandit(settings: &Settings) -> anyhow::Result<Arc<dyn BanditStore>> {
    let s = &settings.sessions;
    if attune_store::redis::is_redis_url(&s.url) {
        let store = RedisBanditStore::connect(RedisBanditConfig {
            url: s.url.clone(),
            prefix: format!("{}bandit:", s.redis_prefix),
            timeout: Duration::from_millis(s.timeout_ms),
            ..RedisBanditConfig::default()
        })
        .await
        .with_context(|| format!("connecting the bandit store at {}", s.url))?;
        Ok(Arc::new(store))
    } else {
        let store = MemoryBanditStore::open(MemoryBanditConfig {
            snapshot: settings
                .recommend
                .state_dir
                .as_ref()
                .map(|d| d.join("bandit.bin")),
            ..MemoryBanditConfig::default()
        })
        .context("opening the bandit store")?;
        Ok(Arc::new(store))
    }
}

/// Reads a rules file (or the compiled defaults when there is none).
pub(crate) fn load_rules(path: Option<&Path>) -> anyhow::Result<Rules> {
    match path {
        None => Ok(Rules::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading rules {}", p.display()))?;
            Rules::from_yaml(&text).map_err(|e| anyhow::anyhow!("rules {}: {e}", p.display()))
        }
    }
}

/// The file in `search.dir` saying which catalog store state the indexes there match.
const INDEX_MARKER: &str = "catalog-seq";

/// The marker's text for the settings' catalog store at change `seq`.
fn marker_text(settings: &Settings, seq: u64) -> String {
    let c = &settings.catalog;
    let store = match (&c.url, &c.dir) {
        (Some(url), _) => format!("{url} {}", c.table),
        (None, Some(dir)) => dir.display().to_string(),
        (None, None) => String::new(),
    };
    format!("{store}\n{seq}\n")
}

/// The change number a marker names, when it names the settings' catalog store.
fn marker_seq(settings: &Settings, text: &str) -> Option<u64> {
    let expected = marker_text(settings, 0);
    let store = expected.lines().next()?;
    let mut lines = text.lines();
    (lines.next()? == store)
        .then(|| lines.next()?.trim().parse().ok())
        .flatten()
}

/// Reads and removes the index marker.
fn take_marker(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove the index marker");
        return None;
    }
    Some(text)
}

/// The catalog store the settings name: PostgreSQL (`catalog.url`), the embedded journal
/// (`catalog.dir`), or none.
fn open_catalog_store(
    settings: &Settings,
) -> anyhow::Result<Option<Arc<dyn attune_store::catalog::CatalogStore>>> {
    use attune_store::catalog::FileCatalogStore;
    use attune_store::catalog::postgres::{PostgresCatalogConfig, PostgresCatalogStore};
    let c = &settings.catalog;
    if let Some(url) = &c.url {
        let store = PostgresCatalogStore::open(PostgresCatalogConfig {
            url: url.clone(),
            table: c.table.clone(),
            timeout: Duration::from_millis(settings.sessions.timeout_ms),
            ..PostgresCatalogConfig::default()
        })
        .with_context(|| format!("setting catalog.url: {url}"))?;
        return Ok(Some(Arc::new(store)));
    }
    if let Some(dir) = &c.dir {
        let store = FileCatalogStore::open(dir)
            .with_context(|| format!("setting catalog.dir: {}", dir.display()))?;
        return Ok(Some(Arc::new(store)));
    }
    Ok(None)
}

/// Parses the catalogs the settings name (the demo's, then `catalog.path`).
fn seed_items(engine: &Engine, settings: &Settings) -> anyhow::Result<Vec<attune_core::Item>> {
    let now = engine.now();
    let mut out = Vec::new();
    if settings.catalog.demo {
        let items = attune_server::parse_items(DEMO_CATALOG.as_bytes(), BodyKind::Json, now)
            .map_err(|e| anyhow::anyhow!("demo catalog: {} ({:?})", e.message, e.field))?;
        out.extend(items);
    }
    if let Some(path) = &settings.catalog.path {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading catalog {}", path.display()))?;
        let kind = match path.extension().and_then(|e| e.to_str()) {
            Some("ndjson" | "jsonl") => BodyKind::Ndjson,
            _ => BodyKind::Json,
        };
        let items = attune_server::parse_items(&bytes, kind, now).map_err(|e| {
            anyhow::anyhow!("catalog {}: {} ({:?})", path.display(), e.message, e.field)
        })?;
        out.extend(items);
    }
    Ok(out)
}

/// Loads the catalog into the engine; returns how many items. With a catalog store, its items
/// (and the demo catalog or `catalog.path` only into a store that holds none yet); a store that
/// does not answer leaves the catalog empty and the server not ready until it does.
pub(crate) async fn load_catalog(engine: &Engine, settings: &Settings) -> anyhow::Result<usize> {
    let Some(store) = engine.catalog_store() else {
        let items = seed_items(engine, settings)?;
        if !items.is_empty() {
            engine.upsert_items(items).await?;
        }
        return Ok(engine.catalog().len());
    };
    let backend = store.backend();
    let started = std::time::Instant::now();
    match engine.load_catalog_store().await {
        Ok(n) => {
            tracing::info!(
                backend,
                items = n,
                ms = started.elapsed().as_millis() as u64,
                "catalog loaded from its store"
            );
            let seeding = settings.catalog.demo || settings.catalog.path.is_some();
            if n == 0 && engine.catalog_seq() == Some(0) && seeding {
                let items = seed_items(engine, settings)?;
                let count = items.len();
                engine
                    .upsert_items(items)
                    .await
                    .context("writing the starting catalog into the catalog store")?;
                tracing::info!(
                    backend,
                    items = count,
                    "the empty catalog store filled from the settings' catalog"
                );
            } else if seeding && n > 0 {
                tracing::info!(
                    backend,
                    "the catalog store holds the catalog: catalog.demo and catalog.path are not loaded"
                );
            }
        }
        Err(e) => {
            tracing::warn!(backend, error = %e, "the catalog store does not answer: starting with an empty catalog, not ready until it is read");
        }
    }
    Ok(engine.catalog().len())
}

/// Follows the catalog store: applies other replicas' changes when it announces them, and every
/// `poll` in case an announcement was lost (or the store was not reachable at start).
fn spawn_catalog_sync(engine: &Arc<Engine>, poll: Duration) {
    let Some(store) = engine.catalog_store() else {
        return;
    };
    if !store.shared() && engine.catalog_loaded() {
        return;
    }
    let changed = store.changed();
    let engine = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
            let Some(engine) = engine.upgrade() else {
                return;
            };
            match engine.sync_catalog().await {
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(changes = n, "catalog changes applied from the store");
                    }
                    if failing {
                        tracing::info!("the catalog store answers again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot follow the catalog store; serving the catalog held in memory");
                    }
                    failing = true;
                }
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown`: each connection must send a request's headers
/// within `http.header_timeout_ms` (a slow or stalled client is closed, not held), at most
/// `http.max_connections` are open at once (past it a new connection is closed at once, so the
/// ones being served keep their resources), and at shutdown no new connection is taken while the
/// requests in flight finish (for up to 10 s).
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    http: &crate::settings::HttpSettings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(http.max_connections));
    let header_timeout = std::time::Duration::from_millis(http.header_timeout_ms);
    let mut refused: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, max = http.max_connections, "connection limit reached: closing new connections");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(router.clone()),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // An error here is the client's: gone, too slow, or not speaking HTTP.
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
            tracing::warn!("requests still in flight 10 s after shutdown began");
        }
    }
}

/// Runs the server until a shutdown signal.
pub(crate) async fn run(settings: Settings) -> anyhow::Result<()> {
    init_tracing(&settings.log);
    let addr = settings.listen_addr()?;
    let (engine, sequential) = build_engine_parts(&settings).await?;
    let items = engine.catalog().len();
    spawn_catalog_sync(&engine, Duration::from_secs(settings.catalog.poll_secs));

    let purger = Arc::clone(&engine);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        loop {
            tick.tick().await;
            let n = purger.purge_expired();
            if n > 0 {
                tracing::debug!(purged = n, "expired sessions purged");
            }
        }
    });
    let _watcher = match &settings.rules.path {
        Some(path) => rules_watch::spawn(Arc::clone(&engine), path.clone(), settings.rules.watch)?,
        None => None,
    };

    let metrics = Arc::new(attune_server::metrics::Metrics::new());
    if let Some(dir) = &settings.recommend.model {
        let (version, trained_at) = model_version(dir);
        metrics.set_model("sequential", version, trained_at);
        if let Some(source) = &sequential
            && settings.recommend.model_poll_secs > 0
        {
            let catalog = Arc::clone(&engine);
            let (metrics, dir) = (Arc::clone(&metrics), dir.clone());
            crate::model_swap::watch(
                source,
                Duration::from_secs(settings.recommend.model_poll_secs),
                Box::new(move |id| catalog.catalog().get(id).is_some()),
                Box::new(move |_| {
                    let (version, trained_at) = model_version(&dir);
                    metrics.set_model("sequential", version, trained_at);
                }),
            )
            .context("starting the model watcher")?;
        }
    }
    let router = app_with_metrics(
        Arc::clone(&engine),
        &ServerConfig {
            max_body_bytes: settings.http.max_body_bytes,
            request_timeout: std::time::Duration::from_millis(settings.http.request_timeout_ms),
            log_requests: settings.log.requests,
        },
        metrics,
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let rules_source = settings.rules.path.as_ref().map_or_else(
        || "compiled defaults".to_owned(),
        |p| p.display().to_string(),
    );
    // The address actually bound (`--listen 127.0.0.1:0` picks a free port).
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(
        %addr,
        sessions = %settings.sessions.url,
        items,
        rules = %rules_source,
        "attune listening on http://{addr}"
    );
    if attune_server::storefront::available() {
        tracing::info!("the storefront: open http://{addr}/ in a browser (the API is under /v1)");
    }
    serve_http(listener, router, &settings.http, shutdown_signal()).await;
    tracing::info!("shutting down");
    if let Some(dir) = &settings.search.dir {
        engine.save_vectors(&dir.join("vectors.bin"))?;
        // Caught up with the store, the index (it commits every change at once) matches the
        // store's catalog at the store's last change.
        if engine.catalog_store().is_some()
            && let Err(e) = engine.sync_catalog().await
        {
            tracing::warn!(error = %e, "cannot catch up with the catalog store at shutdown (the next start rebuilds the index)");
        } else if let Some(seq) = engine.catalog_seq() {
            let path = dir.join(INDEX_MARKER);
            if let Err(e) = std::fs::write(&path, marker_text(&settings, seq)) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the index marker (the next start rebuilds the index)");
            }
        }
    }
    engine.shutdown().await?;
    Ok(())
}
