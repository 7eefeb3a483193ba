//! Deployment settings: built-in defaults, then the `--config` YAML file, then `ATTUNE__SECTION__KEY`
//! environment variables. Unknown keys are errors naming the key; values are checked once, before
//! a port is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use attune_store::redis::{RedisTarget, is_redis_url};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::query_encoder::QueryEncoderSetting;

/// Every setting. Scoring rules are not here: they live in their own file (`rules.path`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    /// The HTTP listener and request limits.
    pub(crate) http: HttpSettings,
    /// Where live sessions are kept.
    pub(crate) sessions: SessionSettings,
    /// Where long-term profiles of signed-in users are kept.
    pub(crate) profiles: ProfileSettings,
    /// What catalog to load at start.
    pub(crate) catalog: CatalogSettings,
    /// The scoring rules file.
    pub(crate) rules: RulesSettings,
    /// Search: where the index lives, the embedding model, retrieval sizes.
    pub(crate) search: SearchSettings,
    /// Recommendations: the trained models behind the model-backed sources.
    pub(crate) recommend: RecommendSettings,
    /// The event stream: where applied events and served lists are kept.
    pub(crate) events: EventSettings,
    /// Logging.
    pub(crate) log: LogSettings,
}

/// Event stream settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct EventSettings {
    /// A directory for the event log (JSON lines, segments sealed and gzipped); with `url` set,
    /// the local spool where records wait for NATS. None (and no `url`): no stream.
    pub(crate) dir: Option<PathBuf>,
    /// A segment is sealed once it holds this many MiB.
    pub(crate) segment_mb: u64,
    /// `never`, `interval` (every second) or `always` (before each answer).
    pub(crate) fsync: FsyncSetting,
    /// `nats://host:port`: deliver the stream to NATS JetStream (through the spool in `dir`).
    pub(crate) url: Option<String>,
    /// The JetStream stream (created if missing, with the subjects `<subject>.>`).
    pub(crate) stream: String,
    /// The subject prefix: each record goes to `<subject>.<type>` (`view`, …, `served`).
    pub(crate) subject: String,
    /// The stream's duplicate window in seconds, when Attune creates it: a record re-sent
    /// within it (after a lost acknowledgement or a crash) is stored once.
    pub(crate) duplicate_window_secs: u64,
    /// Records waiting for NATS past this many MiB in the spool are dropped (and counted).
    pub(crate) spool_max_mb: u64,
    /// How long the NATS forwarder, woken by a first record, waits for more before publishing
    /// them together (0: at once). The stream's added delay, traded for less CPU per record.
    pub(crate) linger_ms: u64,
}

impl EventSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if let Some(url) = &self.url {
            if !url.starts_with("nats://") || url.len() == "nats://".len() {
                return Err(err("events.url", format!("{url:?}: use nats://host:port")));
            }
            if self.dir.is_none() {
                return Err(err(
                    "events.dir",
                    "must be set with events.url: the local spool where records wait for NATS",
                ));
            }
        }
        if !token(&self.stream) {
            return Err(err(
                "events.stream",
                format!(
                    "{:?}: a stream name is letters, digits, - and _",
                    self.stream
                ),
            ));
        }
        if !self.subject.split('.').all(token) {
            return Err(err(
                "events.subject",
                format!(
                    "{:?}: dot-separated tokens of letters, digits, - and _ (no wildcards)",
                    self.subject
                ),
            ));
        }
        if self.linger_ms > 1000 {
            return Err(err(
                "events.linger_ms",
                format!("{}: at most 1000", self.linger_ms),
            ));
        }
        for (key, v) in [
            ("events.segment_mb", self.segment_mb),
            ("events.duplicate_window_secs", self.duplicate_window_secs),
            ("events.spool_max_mb", self.spool_max_mb),
        ] {
            if v == 0 {
                return Err(err(key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// How often the event log is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FsyncSetting {
    /// The OS writes back: survives a crash of the process, not of the machine.
    Never,
    /// Every second.
    Interval,
    /// Before each answer.
    Always,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            dir: None,
            segment_mb: 64,
            fsync: FsyncSetting::Interval,
            url: None,
            stream: "ATTUNE_EVENTS".into(),
            subject: "attune.events".into(),
            duplicate_window_secs: 120,
            spool_max_mb: 1024,
            linger_ms: 20,
        }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HttpSettings {
    /// `host:port` to listen on.
    pub(crate) listen: String,
    /// Largest request body, in bytes.
    pub(crate) max_body_bytes: usize,
    /// Most events in one `POST /v1/events`.
    pub(crate) max_batch: usize,
    /// A connection must send a request's headers within this long (slow or stalled clients are
    /// closed instead of holding a connection), milliseconds.
    pub(crate) header_timeout_ms: u64,
    /// A request must be read and answered within this long (a body that stalls gets 408),
    /// milliseconds.
    pub(crate) request_timeout_ms: u64,
    /// Most connections open at once; past it new ones are closed at once.
    pub(crate) max_connections: usize,
}

/// Session store settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SessionSettings {
    /// `memory://` (embedded), `redis://host:port/db` (one Redis) or
    /// `redis+cluster://host:port,host:port/` (a Redis Cluster, through these seed nodes). The
    /// bandit's arms are kept in the same Redis, when it is one.
    pub(crate) url: String,
    /// Embedded: most sessions held before the least recently used are evicted.
    pub(crate) max_sessions: usize,
    /// Embedded: lock shards.
    pub(crate) shards: usize,
    /// Embedded: a file to write sessions to at shutdown and read at start (none by default).
    pub(crate) snapshot: Option<PathBuf>,
    /// Redis: key prefix.
    pub(crate) redis_prefix: String,
    /// Redis: sessions held in the in-process cache.
    pub(crate) l1_capacity: usize,
    /// Redis: connect and response timeout, in milliseconds.
    pub(crate) timeout_ms: u64,
}

/// Profile store settings: profiles of signed-in users and their interactions, in their own store
/// (embedded, Redis or PostgreSQL), with their own keys and bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ProfileSettings {
    /// `memory://` (embedded), `redis://host:port/db`, `redis+cluster://host:port,host:port/`
    /// or `postgres://user@host:port/db`.
    pub(crate) url: String,
    /// PostgreSQL: the profile table (created at the first connection), and
    /// `<table>_interactions` beside it.
    pub(crate) table: String,
    /// Embedded: most profiles held before the least recently used are evicted.
    pub(crate) max_profiles: usize,
    /// Embedded: the directory of the profile journal (`profiles.journal`: profiles and their
    /// interactions, appended as they change, compacted at start, shutdown and when grown);
    /// nothing on disk when unset.
    pub(crate) dir: Option<PathBuf>,
    /// Replaced by `dir` (a snapshot written only at shutdown lost every profile in a crash);
    /// kept so that a file still naming it is told so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot: Option<PathBuf>,
    /// Redis: key prefix.
    pub(crate) redis_prefix: String,
    /// Redis and PostgreSQL: profiles held in the in-process cache.
    pub(crate) l1_capacity: usize,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        ProfileSettings {
            url: "memory://".into(),
            table: "attune_profiles".into(),
            max_profiles: 1_000_000,
            dir: None,
            snapshot: None,
            redis_prefix: "attune:profile:".into(),
            l1_capacity: 100_000,
        }
    }
}

/// Catalog settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CatalogSettings {
    /// Load the built-in demo catalog (a few hundred grocery products). With a catalog store,
    /// only into a store that holds no item yet.
    pub(crate) demo: bool,
    /// A catalog file to load at start: a JSON array, or NDJSON (`.ndjson`, `.jsonl`). With a
    /// catalog store, only into a store that holds no item yet.
    pub(crate) path: Option<PathBuf>,
    /// Where catalog changes are kept: `~` (in memory only, the default), a PostgreSQL URL
    /// (`postgres://user@host:port/db`: one row per item in `table`, shared by replicas, each
    /// change announced to them with NOTIFY).
    pub(crate) url: Option<String>,
    /// PostgreSQL: the table (also the notification channel).
    pub(crate) table: String,
    /// Embedded: a directory for the catalog journal (`catalog.jsonl`), so changes made
    /// through the API survive a restart without PostgreSQL.
    pub(crate) dir: Option<PathBuf>,
    /// Replicas also look for changes this often (seconds), in case a notification was lost.
    pub(crate) poll_secs: u64,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        CatalogSettings {
            demo: false,
            path: None,
            url: None,
            table: "attune_items".into(),
            dir: None,
            poll_secs: 5,
        }
    }
}

/// Search settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SearchSettings {
    /// A directory for the keyword index and the saved item vectors (kept across restarts); in
    /// memory when absent.
    pub(crate) dir: Option<PathBuf>,
    /// The sentence-embedding model directory (all-MiniLM-L6-v2: `scripts/fetch-model` puts it in
    /// `~/.cache/attune/models/all-MiniLM-L6-v2`). `auto` uses that directory if it is there;
    /// `off` searches by keyword only.
    pub(crate) model: String,
    /// What embeds search queries: `model`, the transformer for every query (milliseconds; the
    /// default), or `static`, a table distilled from the model (each token's vector is the
    /// model's own embedding of it; microseconds per query, built once beside the model, the model
    /// answers until it is ready; less relevant so far, see bench/README.md). Items are always
    /// embedded by the model.
    pub(crate) query_encoder: QueryEncoderSetting,
    /// The weight of the vector list in reciprocal rank fusion when the static encoder embedded
    /// the query (the keyword list's is 1; the model's queries always weigh 1). 1 by default:
    /// 0.25 to 2 were tried on `attune eval-search`; the validation half's best (1.5) was worse
    /// than 1 on the test half (bench/README.md).
    pub(crate) static_weight: f32,
    /// Candidates each retriever returns, and the reranker sees.
    pub(crate) candidates: usize,
    /// The `k` of reciprocal rank fusion.
    pub(crate) rrf_k: f32,
    /// How long unpersonalized candidates of a (query, filters) stay cached, in seconds.
    pub(crate) cache_ttl_secs: u64,
    /// Most cached (query, filters) pairs.
    pub(crate) cache_capacity: usize,
    /// Most megabytes the cached retrievals may hold (candidates, facets; about 30 to 80 KB
    /// each): the cache drops the least recently used past either bound.
    pub(crate) cache_max_mb: usize,
    /// Vector search is exact below this many items, HNSW above.
    pub(crate) exact_below: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            dir: None,
            model: "auto".into(),
            query_encoder: QueryEncoderSetting::Model,
            static_weight: 1.0,
            candidates: 200,
            rrf_k: 60.0,
            cache_ttl_secs: 300,
            cache_capacity: 10_000,
            cache_max_mb: 64,
            exact_below: 20_000,
        }
    }
}

/// Recommendation settings (the surfaces' recipes are rules, in `rules.path`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RecommendSettings {
    /// A SASRec model directory (`attune train --model sasrec --out DIR`) for the `sequential`
    /// source; every item of the model must be in the catalog. No model (the default): the
    /// source is off.
    pub(crate) model: Option<PathBuf>,
    /// Sequences whose SASRec state and best items are kept (about 2.6 KB each at hidden 128),
    /// so that asking about a session again with no new event runs neither the network nor
    /// the scan of the item table (the same answer); each engagement's new sequence is computed
    /// into it by a background thread, ahead of the request. 0: none kept, nothing warmed.
    pub(crate) model_cache: usize,
    /// How often (seconds) the model directory is checked for a newer model, swapped in
    /// without dropping a request; 0: never.
    pub(crate) model_poll_secs: u64,
    /// Where the online sources (trending, co-occurrence, session kNN) and the embedded bandit
    /// are written at shutdown and read back at start. None (the default): they live in memory
    /// only and start empty.
    pub(crate) state_dir: Option<PathBuf>,
    /// Where the online sources start from when `state_dir` holds no state of its own: a
    /// directory `attune train --model online` wrote (from a dataset or Attune's event log).
    /// Only read. None (the default): they start empty.
    pub(crate) online_seed: Option<PathBuf>,
}

/// Rules settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RulesSettings {
    /// The rules YAML; the compiled defaults (equal to `config/rules.yaml`) when absent.
    pub(crate) path: Option<PathBuf>,
    /// Reload the file when it changes (it is always reloaded on SIGHUP).
    pub(crate) watch: bool,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSettings {
    /// A tracing filter, e.g. `info` or `attune=debug,info`. `RUST_LOG` overrides it.
    pub(crate) filter: String,
    /// `text` (one readable line per record) or `json` (one JSON object per line).
    pub(crate) format: LogFormat,
    /// Log one line per HTTP request (request id, route, status, latency) at `info`.
    pub(crate) requests: bool,
}

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

impl Default for RecommendSettings {
    fn default() -> Self {
        RecommendSettings {
            model: None,
            model_cache: 4096,
            model_poll_secs: 10,
            state_dir: None,
            online_seed: None,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:8787".into(),
            max_body_bytes: 4 * 1024 * 1024,
            max_batch: 500,
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections: 4096,
        }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            url: "memory://".into(),
            max_sessions: 1_000_000,
            shards: 64,
            snapshot: None,
            redis_prefix: "attune:session:".into(),
            l1_capacity: 100_000,
            timeout_ms: 2000,
        }
    }
}

impl Default for RulesSettings {
    fn default() -> Self {
        RulesSettings {
            path: None,
            watch: true,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            filter: "info".into(),
            format: LogFormat::Text,
            requests: false,
        }
    }
}

/// A setting that cannot be used: which key (or file) and why.
#[derive(Debug, thiserror::Error)]
#[error("setting {key}: {message}")]
pub(crate) struct SettingsError {
    /// The key (`sessions.url`) or source (`config file`).
    pub(crate) key: String,
    /// What is wrong.
    pub(crate) message: String,
}

/// The environment variable prefix; `__` separates levels: `ATTUNE__SESSIONS__URL`.
pub(crate) const ENV_PREFIX: &str = "ATTUNE__";

fn err(key: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.into(),
        message: message.into(),
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

impl Settings {
    /// Defaults, then the file, then the environment (`vars` is the process environment in the binary).
    pub(crate) fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let mut tree = serde_json::to_value(Settings::default())
            .map_err(|e| err("defaults", e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err(path.display().to_string(), e.to_string()))?;
            let value: Value = serde_norway::from_str(&text)
                .map_err(|e| err(path.display().to_string(), e.to_string()))?;
            match value {
                Value::Null => {}
                v @ Value::Object(_) => merge(&mut tree, v),
                _ => return Err(err(path.display().to_string(), "must be a YAML mapping")),
            }
        }
        let mut overrides: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in vars {
            if let Some(rest) = k.strip_prefix(ENV_PREFIX) {
                overrides.insert(rest.to_ascii_lowercase(), v);
            }
        }
        for (path, raw) in overrides {
            let parts: Vec<&str> = path.split("__").collect();
            let key = parts.join(".");
            if parts.iter().any(|p| p.is_empty()) {
                return Err(err(
                    format!("{ENV_PREFIX}{}", path.to_ascii_uppercase()),
                    "malformed name",
                ));
            }
            // A string setting takes the value as it is; others read it as a YAML scalar
            // (8787 is a number, true a bool, ~ null).
            let pointer = format!("/{}", parts.join("/"));
            let value = match tree.pointer(&pointer) {
                Some(Value::String(_)) => Value::String(raw.clone()),
                _ => match serde_norway::from_str::<Value>(&raw) {
                    Ok(
                        v @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_)),
                    ) => v,
                    _ => Value::String(raw.clone()),
                },
            };
            let mut over = value;
            for p in parts.iter().rev() {
                let mut m = serde_json::Map::new();
                m.insert((*p).to_owned(), over);
                over = Value::Object(m);
            }
            let Value::Object(_) = tree
                .pointer(&format!("/{}", parts[0]))
                .cloned()
                .unwrap_or(Value::Null)
            else {
                return Err(err(key, "unknown setting (from the environment)"));
            };
            merge(&mut tree, over);
        }
        let settings: Settings = serde_path_to_error::deserialize(tree).map_err(|e| {
            // The path names the offending key, unknown ones included.
            let path = e.path().to_string();
            err(path, e.inner().to_string())
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that parse but cannot work.
    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        self.listen_addr()?;
        let sessions = &self.sessions.url;
        if !(sessions == "memory://" || is_redis_url(sessions)) {
            return Err(err(
                "sessions.url",
                format!(
                    "{sessions:?}: use memory://, redis://host:port/db or redis+cluster://host:port,host:port/"
                ),
            ));
        }
        let url = &self.profiles.url;
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !(url == "memory://" || is_redis_url(url) || postgres) {
            return Err(err(
                "profiles.url",
                format!(
                    "{url:?}: use memory://, redis://host:port/db, redis+cluster://host:port,host:port/ or postgres://user@host:port/db"
                ),
            ));
        }
        // The bandit shares the sessions' Redis, under `<sessions.redis_prefix>bandit:`.
        for (key, url, prefix_key, prefix) in [
            (
                "sessions.url",
                sessions,
                "sessions.redis_prefix",
                &self.sessions.redis_prefix,
            ),
            (
                "profiles.url",
                url,
                "profiles.redis_prefix",
                &self.profiles.redis_prefix,
            ),
        ] {
            if !is_redis_url(url) {
                continue;
            }
            let target = RedisTarget::parse(url).map_err(|e| match e {
                attune_store::Error::BadUrl { reason, .. } => {
                    err(key, format!("{url:?}: {reason}"))
                }
                other => err(key, other.to_string()),
            })?;
            // A `{…}` in the prefix would be every key's hash tag: one slot, one node.
            if matches!(target, RedisTarget::Cluster(_)) && prefix.contains(['{', '}']) {
                return Err(err(
                    prefix_key,
                    format!(
                        "{prefix:?}: no {{ or }} in a Redis Cluster key prefix (it would hash every key to one slot, on one node)"
                    ),
                ));
            }
        }
        if self.profiles.dir.is_some() && self.profiles.url != "memory://" {
            return Err(err(
                "profiles.dir",
                "only for the embedded store (profiles.url: memory://); Redis and PostgreSQL keep profiles themselves",
            ));
        }
        if self.profiles.snapshot.is_some() {
            return Err(err(
                "profiles.snapshot",
                "replaced by profiles.dir: a directory where profiles and their interactions are journaled as they change (a snapshot written at shutdown lost them all in a crash)",
            ));
        }
        for (key, table) in [
            ("profiles.table", &self.profiles.table),
            ("catalog.table", &self.catalog.table),
        ] {
            let mut chars = table.chars();
            if !(chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && table.len() <= 48)
            {
                return Err(err(
                    key,
                    format!(
                        "{table:?}: lowercase letters, digits and _ (at most 48), not starting with a digit"
                    ),
                ));
            }
        }
        if let Some(url) = &self.catalog.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(err(
                    "catalog.url",
                    format!("{url:?}: use postgres://user@host:port/db (or leave it out)"),
                ));
            }
            if self.catalog.dir.is_some() {
                return Err(err(
                    "catalog.dir",
                    "set catalog.url or catalog.dir, not both: the catalog has one store",
                ));
            }
        }
        if self.catalog.poll_secs == 0 {
            return Err(err("catalog.poll_secs", "must be at least 1"));
        }
        for (key, v) in [
            ("http.max_body_bytes", self.http.max_body_bytes),
            ("http.max_batch", self.http.max_batch),
            ("http.max_connections", self.http.max_connections),
            (
                "http.header_timeout_ms",
                usize::try_from(self.http.header_timeout_ms).unwrap_or(usize::MAX),
            ),
            (
                "http.request_timeout_ms",
                usize::try_from(self.http.request_timeout_ms).unwrap_or(usize::MAX),
            ),
            ("sessions.max_sessions", self.sessions.max_sessions),
            ("sessions.shards", self.sessions.shards),
            ("sessions.l1_capacity", self.sessions.l1_capacity),
            ("profiles.max_profiles", self.profiles.max_profiles),
            ("profiles.l1_capacity", self.profiles.l1_capacity),
        ] {
            if v == 0 {
                return Err(err(key, "must be at least 1"));
            }
        }
        for (key, v) in [
            ("search.candidates", self.search.candidates),
            ("search.cache_capacity", self.search.cache_capacity),
            ("search.cache_max_mb", self.search.cache_max_mb),
        ] {
            if v == 0 {
                return Err(err(key, "must be at least 1"));
            }
        }
        if !(self.search.rrf_k.is_finite() && self.search.rrf_k >= 0.0) {
            return Err(err("search.rrf_k", "must be a finite number >= 0"));
        }
        if !(self.search.static_weight.is_finite() && self.search.static_weight > 0.0) {
            return Err(err("search.static_weight", "must be a finite number > 0"));
        }
        if self.sessions.timeout_ms == 0 {
            return Err(err("sessions.timeout_ms", "must be at least 1"));
        }
        self.events.validate()?;
        if let Some(dir) = &self.recommend.model
            && !dir.join(attune_model::manifest::MANIFEST_FILE).is_file()
        {
            return Err(err(
                "recommend.model",
                format!(
                    "{} is not a model directory (no {}; `attune train --model sasrec --out DIR` writes one)",
                    dir.display(),
                    attune_model::manifest::MANIFEST_FILE
                ),
            ));
        }
        Ok(())
    }

    /// The listen address.
    pub(crate) fn listen_addr(&self) -> Result<SocketAddr, SettingsError> {
        self.http.listen.parse().map_err(|_| {
            err(
                "http.listen",
                format!("{:?} is not host:port", self.http.listen),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = std::env::temp_dir().join(format!("attune-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.yaml");
        std::fs::write(&file, "http:\n  listen: 127.0.0.1:9000\n  max_batch: 10\n").unwrap();
        let s = Settings::load(
            Some(&file),
            env(&[
                ("ATTUNE__HTTP__MAX_BATCH", "20"),
                ("ATTUNE__SESSIONS__URL", "redis://127.0.0.1:6379/0"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.http.listen, "127.0.0.1:9000");
        assert_eq!(s.http.max_batch, 20);
        assert_eq!(s.sessions.url, "redis://127.0.0.1:6379/0");
        assert_eq!(s.sessions.shards, 64);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let cases = [
            (env(&[("ATTUNE__SESSIONS__URLL", "x")]), "sessions.urll"),
            (env(&[("ATTUNE__NOPE__X", "1")]), "nope.x"),
            (
                env(&[("ATTUNE__HTTP__MAX_BATCH", "many")]),
                "http.max_batch",
            ),
            (env(&[("ATTUNE__HTTP__LISTEN", "nowhere")]), "http.listen"),
            (
                env(&[("ATTUNE__SESSIONS__URL", "mongodb://x")]),
                "sessions.url",
            ),
            (env(&[("ATTUNE__HTTP__MAX_BATCH", "0")]), "http.max_batch"),
            (
                env(&[("ATTUNE__RECOMMEND__MODEL", "/no/such/model")]),
                "recommend.model",
            ),
            (env(&[("ATTUNE__RECOMMEND__MODL", "/x")]), "recommend.modl"),
            (
                env(&[("ATTUNE__EVENTS__URL", "nats://127.0.0.1:4222")]),
                "events.dir",
            ),
            (
                env(&[
                    ("ATTUNE__EVENTS__URL", "http://x"),
                    ("ATTUNE__EVENTS__DIR", "/tmp/spool"),
                ]),
                "events.url",
            ),
            (env(&[("ATTUNE__EVENTS__STREAM", "a.b")]), "events.stream"),
            (
                env(&[("ATTUNE__PROFILES__URL", "mysql://x")]),
                "profiles.url",
            ),
            (
                env(&[("ATTUNE__SESSIONS__URL", "postgres://x")]),
                "sessions.url",
            ),
            (
                env(&[("ATTUNE__PROFILES__TABLE", "Profiles; drop")]),
                "profiles.table",
            ),
            (env(&[("ATTUNE__EVENTS__SUBJECT", "a.>")]), "events.subject"),
            (
                env(&[("ATTUNE__EVENTS__SPOOL_MAX_MB", "0")]),
                "events.spool_max_mb",
            ),
            (
                env(&[("ATTUNE__EVENTS__LINGER_MS", "5000")]),
                "events.linger_ms",
            ),
            (
                env(&[("ATTUNE__SEARCH__STATIC_WEIGHT", "0")]),
                "search.static_weight",
            ),
        ];
        for (vars, key) in cases {
            let e = Settings::load(None, vars).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn redis_cluster_urls_are_read_and_malformed_ones_named() {
        let cluster = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/";
        let s = Settings::load(
            None,
            env(&[
                ("ATTUNE__SESSIONS__URL", cluster),
                (
                    "ATTUNE__PROFILES__URL",
                    "redis+cluster://:secret@cache-1:7000",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(s.sessions.url, cluster);
        let cases = [
            (
                "ATTUNE__SESSIONS__URL",
                "redis+cluster://",
                "sessions.url",
                "empty node",
            ),
            (
                "ATTUNE__SESSIONS__URL",
                "redis+cluster://a:7000,,b:7001",
                "sessions.url",
                "empty node",
            ),
            (
                "ATTUNE__SESSIONS__URL",
                "redis+cluster://a:port",
                "sessions.url",
                "\"a:port\"",
            ),
            (
                "ATTUNE__SESSIONS__URL",
                "redis+cluster://a:7000/2",
                "sessions.url",
                "database 0",
            ),
            (
                "ATTUNE__PROFILES__URL",
                "redis+cluster://a:7000,b:99999/",
                "profiles.url",
                "\"b:99999\"",
            ),
            (
                "ATTUNE__PROFILES__URL",
                "redis://a:port/0",
                "profiles.url",
                "redis://a:port/0",
            ),
            (
                "ATTUNE__SESSIONS__REDIS_PREFIX",
                "app{1}:",
                "sessions.redis_prefix",
                "one slot",
            ),
        ];
        for (var, value, key, says) in cases {
            let mut vars = vec![(var, value)];
            if var.ends_with("PREFIX") {
                vars.push(("ATTUNE__SESSIONS__URL", cluster));
            }
            let e = Settings::load(None, env(&vars)).unwrap_err();
            assert_eq!(e.key, key, "{value}: {e}");
            assert!(e.to_string().contains(says), "{value}: {e}");
        }
        // Braces in a prefix are only a cluster's concern.
        Settings::load(
            None,
            env(&[
                ("ATTUNE__SESSIONS__URL", "redis://127.0.0.1:6379/0"),
                ("ATTUNE__SESSIONS__REDIS_PREFIX", "app{1}:"),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn the_sequential_model_is_off_by_default_and_read_from_the_environment() {
        assert_eq!(Settings::default().recommend.model, None);
        let dir =
            std::env::temp_dir().join(format!("attune-settings-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("manifest.json"), "{}").unwrap();
        let s = Settings::load(
            None,
            env(&[("ATTUNE__RECOMMEND__MODEL", dir.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(s.recommend.model.as_deref(), Some(dir.as_path()));
        let e = Settings::load(None, env(&[("ATTUNE__RECOMMEND__MODEL", "/no/such/model")]))
            .unwrap_err();
        assert!(e.to_string().contains("/no/such/model"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_shipped_example_config_is_valid_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/attune.yaml");
        let shipped = Settings::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(
            serde_norway::to_string(&shipped).unwrap(),
            serde_norway::to_string(&Settings::default()).unwrap(),
            "config/attune.yaml says it shows the defaults"
        );
    }
}
