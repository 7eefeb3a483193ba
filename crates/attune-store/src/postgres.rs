//! The PostgreSQL profile store: long-term profiles and their interactions kept in a database
//! that outlives any Redis (`profiles.url: postgres://…`).
//!
//! One row per user in a table of its own (`attune_profiles` by default): the user id, a
//! `version` every write increments, `expires_at` (epoch milliseconds) and `state`, the encoded
//! profile (the same encoding as the Redis store's). Beside it, `<table>_interactions`: one row
//! per item event applied to a profile (`user_id`, `event_id` if any, `kind`, `item_id`, the
//! `weight` the rules gave it, `at`, `session_id`, and `seq` in the order written), unique by
//! `(user_id, event_id)`. The tables are created by migrations at the first connection
//! ([`MIGRATIONS`], recorded in `attune_migrations`, applied under an advisory lock so replicas
//! starting together apply each once).
//!
//! **Atomic updates** are a compare-and-set, as with Redis: `UPDATE … WHERE version = $known`
//! (or `INSERT … ON CONFLICT DO NOTHING` for a new user); when another replica wrote first, the
//! update is recomputed on what it wrote and tried again. The update's interactions are inserted
//! by the **same statement** (a data-modifying `WITH`, inserting only when the compare-and-set
//! wrote a row), so they are written exactly when the profile is: never one without the other,
//! and a retried event (its `event_id` already applied) writes neither twice. Forgetting a user
//! deletes the profile and its interactions in one statement too. Within one process, updates of
//! one user are also serialized by a striped lock, so retries come only from other replicas.
//!
//! **The L1 cache** holds the last version of each row this process read or wrote. A read sends
//! the cached version and gets the body back only when the row moved, so a cached profile costs
//! one indexed lookup and no decoding, and the cache can never serve a profile another replica
//! has overwritten. Expiry is kept lazily: a read pushes `expires_at` forward only once less than
//! 90 % of the TTL is left (profiles live for months; a write per read would be waste), and rows
//! past it read as absent and are deleted by `purge_expired`, with the interactions older than
//! the retention.
//!
//! **Faults.** Connections are made on demand (a small pool, each with its statements prepared
//! once). A database that is down at start, or goes away, makes operations fail at once with
//! [`Error::Unavailable`] (a 503, nothing half-written: each write is one statement) and the next
//! operation connects again.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use attune_core::{EventKind, ItemId, Session, SessionId, Timestamp, UserId};
use tokio_postgres::{Client, NoTls, Statement};

use crate::l1::{self, L1};
use crate::profile::{Interaction, ProfileMutation, ProfileStore, profile_id};
use crate::{Error, Inspect, Result, StoreStats};

/// Local lock stripes (see the Redis store).
const STRIPES: usize = 512;

/// The schema, in order: each applied once per table, recorded in `attune_migrations` under
/// `<table>:<name>`. `{table}` is the configured table name.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_sessions",
        "CREATE TABLE IF NOT EXISTS {table} (
            id text PRIMARY KEY,
            version bigint NOT NULL,
            expires_at bigint NOT NULL,
            state bytea NOT NULL
        );
        CREATE INDEX IF NOT EXISTS {table}_expires_at ON {table} (expires_at);",
    ),
    (
        "0002_interactions",
        "CREATE TABLE IF NOT EXISTS {table}_interactions (
            seq bigserial PRIMARY KEY,
            user_id text NOT NULL,
            event_id text,
            kind text NOT NULL,
            item_id text NOT NULL,
            weight real NOT NULL,
            at timestamptz NOT NULL,
            session_id text NOT NULL
        );
        CREATE UNIQUE INDEX IF NOT EXISTS {table}_i_event ON {table}_interactions (user_id, event_id);
        CREATE INDEX IF NOT EXISTS {table}_i_user ON {table}_interactions (user_id, at);
        CREATE INDEX IF NOT EXISTS {table}_i_at ON {table}_interactions (at);",
    ),
];

/// The interactions of an update as statement parameters: one array per column.
struct Columns<'a> {
    event_ids: Vec<Option<&'a str>>,
    kinds: Vec<&'static str>,
    items: Vec<&'a str>,
    weights: Vec<f32>,
    ats: Vec<std::time::SystemTime>,
    sessions: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(list: &'a [Interaction]) -> Self {
        Columns {
            event_ids: list.iter().map(|i| i.event_id.as_deref()).collect(),
            kinds: list.iter().map(|i| i.kind.as_str()).collect(),
            items: list.iter().map(|i| i.item_id.as_str()).collect(),
            weights: list.iter().map(|i| i.weight).collect(),
            ats: list.iter().map(|i| system_time(i.at)).collect(),
            sessions: list.iter().map(|i| i.session_id.as_str()).collect(),
        }
    }
}

fn system_time(t: Timestamp) -> std::time::SystemTime {
    let ms = t.as_millis();
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        std::time::UNIX_EPOCH + d
    } else {
        std::time::UNIX_EPOCH - d
    }
}

fn timestamp(t: std::time::SystemTime) -> Timestamp {
    let ms = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    };
    Timestamp::from_millis(ms)
}

/// Inserts the interaction arrays (parameters `$n`…`$n+5`) for the user `$1`, once per row of
/// the CTE `p` (none when the compare-and-set wrote nothing).
fn insert_interactions(t: &str, n: usize) -> String {
    format!(
        "INSERT INTO {t}_interactions (user_id, event_id, kind, item_id, weight, at, session_id) \
         SELECT $1, x.e, x.k, x.i, x.w, x.a, x.s FROM p, \
         unnest(${a}::text[], ${b}::text[], ${c}::text[], ${d}::real[], ${e}::timestamptz[], ${f}::text[]) \
         AS x(e, k, i, w, a, s) ON CONFLICT DO NOTHING",
        a = n,
        b = n + 1,
        c = n + 2,
        d = n + 3,
        e = n + 4,
        f = n + 5
    )
}

/// Settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database`.
    pub url: String,
    /// The table (letters, digits and `_`, starting with a letter or `_`).
    pub table: String,
    /// Connections kept (each carries many requests at once).
    pub connections: usize,
    /// Most rows held in the in-process L1 cache.
    pub l1_capacity: usize,
    /// Most attempts of one optimistic update before giving up.
    pub max_attempts: u32,
    /// Connect and statement timeout.
    pub timeout: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            table: "attune_profiles".into(),
            connections: 4,
            l1_capacity: 100_000,
            max_attempts: 200,
            timeout: Duration::from_secs(2),
        }
    }
}

/// A connection with its prepared statements.
struct Conn {
    client: Client,
    get: Statement,
    refresh: Statement,
    insert: Statement,
    cas: Statement,
    delete: Statement,
    list: Statement,
}

/// See the module docs.
pub struct PostgresProfileStore {
    url: String,
    table: String,
    timeout: Duration,
    slots: Box<[tokio::sync::Mutex<Option<Arc<Conn>>>]>,
    next: AtomicUsize,
    migrated: AtomicBool,
    l1: L1,
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
    max_attempts: u32,
    conflicts: AtomicU64,
    unreadable: AtomicU64,
    /// When expired rows were last purged (epoch ms).
    last_purge: AtomicI64,
}

pub(crate) fn unavailable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Unavailable {
        backend: "postgres",
        source: e.into(),
    }
}

/// Checks a PostgreSQL URL and table name before any connection is made.
pub(crate) fn check_config(url: &str, table: &str) -> Result<()> {
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| Error::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    if !valid_table(table) {
        return Err(Error::BadUrl {
            url: url.to_owned(),
            reason: format!(
                "table {table:?}: lowercase letters, digits and _, starting with a letter or _"
            ),
        });
    }
    Ok(())
}

pub(crate) fn valid_table(t: &str) -> bool {
    let mut chars = t.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && t.len() <= 48
}

/// Milliseconds since the epoch at `now + ttl`.
fn expiry_ms(now: Timestamp, ttl: Duration) -> i64 {
    now.as_millis()
        .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

impl PostgresProfileStore {
    /// A store on `config.table`, connecting on first use (a database that is down makes
    /// operations fail with `Unavailable` until it answers). Only a malformed URL or table name
    /// is an error.
    pub fn open(config: PostgresConfig) -> Result<Self> {
        check_config(&config.url, &config.table)?;
        Ok(PostgresProfileStore {
            url: config.url,
            table: config.table,
            timeout: config.timeout,
            slots: (0..config.connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            migrated: AtomicBool::new(false),
            l1: L1::new(config.l1_capacity),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: RandomState::new(),
            max_attempts: config.max_attempts.max(1),
            conflicts: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            last_purge: AtomicI64::new(0),
        })
    }

    /// [`PostgresProfileStore::open`], then one connection at once (logged, not failed, when
    /// the database does not answer).
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        let store = Self::open(config)?;
        if let Err(e) = store.conn().await {
            tracing::warn!(error = %e, "PostgreSQL does not answer; connecting on demand (requests needing it get 503 until then)");
        }
        Ok(store)
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// A connection of the pool, made (and the schema migrated) if it is not there.
    async fn conn(&self) -> Result<Arc<Conn>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(conn) = &*slot
            && !conn.client.is_closed()
        {
            return Ok(Arc::clone(conn));
        }
        *slot = None;
        let conn = tokio::time::timeout(self.timeout, self.make_conn())
            .await
            .map_err(|_| {
                unavailable(format!(
                    "no connection to {} within {:?}",
                    self.url, self.timeout
                ))
            })??;
        let conn = Arc::new(conn);
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    async fn make_conn(&self) -> Result<Conn> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(unavailable)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection closed");
            }
        });
        if !self.migrated.load(Ordering::Acquire) {
            migrate(&client, &self.table, MIGRATIONS).await?;
            self.migrated.store(true, Ordering::Release);
        }
        let t = &self.table;
        let prepare = |sql: String| {
            let client = &client;
            async move { client.prepare(&sql).await.map_err(unavailable) }
        };
        Ok(Conn {
            get: prepare(format!(
                "SELECT version, expires_at, CASE WHEN version = $2 THEN NULL ELSE state END \
                 FROM {t} WHERE id = $1"
            ))
            .await?,
            refresh: prepare(format!(
                "UPDATE {t} SET expires_at = $3 WHERE id = $1 AND version = $2"
            ))
            .await?,
            insert: prepare(format!(
                "WITH p AS (INSERT INTO {t} (id, version, expires_at, state) \
                 VALUES ($1, 1, $2, $3) ON CONFLICT (id) DO NOTHING RETURNING version), \
                 i AS ({}) SELECT version FROM p",
                insert_interactions(t, 4)
            ))
            .await?,
            cas: prepare(format!(
                "WITH p AS (UPDATE {t} SET version = version + 1, expires_at = $3, state = $4 \
                 WHERE id = $1 AND version = $2 RETURNING version), \
                 i AS ({}) SELECT version FROM p",
                insert_interactions(t, 5)
            ))
            .await?,
            delete: prepare(format!(
                "WITH p AS (DELETE FROM {t} WHERE id = $1 RETURNING expires_at), \
                 i AS (DELETE FROM {t}_interactions WHERE user_id = $1) \
                 SELECT expires_at FROM p"
            ))
            .await?,
            list: prepare(format!(
                "SELECT event_id, kind, item_id, weight, at, session_id FROM {t}_interactions \
                 WHERE user_id = $1 AND at > $2 ORDER BY at DESC, seq DESC LIMIT $3"
            ))
            .await?,
            client,
        })
    }

    /// Decodes a stored body; one that cannot be read is logged, counted and treated as absent.
    fn decode(&self, id: &SessionId, bytes: &[u8]) -> Option<Session> {
        match l1::decode(bytes) {
            Ok(session) => Some(session),
            Err(reason) => {
                self.unreadable.fetch_add(1, Ordering::Relaxed);
                tracing::error!(table = %self.table, id = %id, %reason, "unreadable stored profile; treating it as absent");
                None
            }
        }
    }

    fn stripe(&self, id: &SessionId) -> &tokio::sync::Mutex<()> {
        let h = self.hasher.hash_one(id.as_str()) as usize;
        &self.stripes[h % self.stripes.len()]
    }

    /// The row as stored: `(version, expires_at, body)`, the body only when the version is not
    /// `known`.
    async fn fetch(
        &self,
        conn: &Conn,
        id: &SessionId,
        known: i64,
    ) -> Result<Option<(i64, i64, Option<Vec<u8>>)>> {
        let row = tokio::time::timeout(
            self.timeout,
            conn.client.query_opt(&conn.get, &[&id.as_str(), &known]),
        )
        .await
        .map_err(|_| unavailable("read timed out"))?
        .map_err(unavailable)?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    /// Runs one statement that changes rows, with the timeout; returns the rows it touched.
    async fn execute(
        &self,
        conn: &Conn,
        statement: &Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        tokio::time::timeout(self.timeout, conn.client.execute(statement, params))
            .await
            .map_err(|_| unavailable("write timed out"))?
            .map_err(unavailable)
    }

    /// Deletes the profiles past their expiry and the interactions older than `ttl` (the
    /// retention); returns how many profiles.
    pub async fn delete_expired(&self, now: Timestamp, ttl: Duration) -> Result<u64> {
        let conn = self.conn().await?;
        delete_expired(&conn.client, &self.table, now, ttl).await
    }
}

/// Applies the migrations this table lacks, each in a transaction under an advisory lock.
pub(crate) async fn migrate(
    client: &Client,
    table: &str,
    migrations: &[(&str, &str)],
) -> Result<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS attune_migrations (
                name text PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .or_else(|e| {
            // Two replicas creating it at once: the loser sees a unique violation; it exists.
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Ok(())
            } else {
                Err(unavailable(e))
            }
        })?;
    for (name, sql) in migrations {
        let key = format!("{table}:{name}");
        let sql = sql.replace("{table}", table);
        let script = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext('attune_migrations'));
             DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM attune_migrations WHERE name = '{key}') THEN
                 EXECUTE $m${sql}$m$;
                 INSERT INTO attune_migrations (name) VALUES ('{key}');
               END IF;
             END $$;
             COMMIT;"
        );
        if let Err(e) = client.batch_execute(&script).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(unavailable(format!("migration {key}: {e}")));
        }
    }
    Ok(())
}

#[async_trait]
impl ProfileStore for PostgresProfileStore {
    async fn get(&self, user: &UserId, now: Timestamp, ttl: Duration) -> Result<Option<Session>> {
        let id = &profile_id(user)?;
        let conn = self.conn().await?;
        let cached = self.l1.get(id);
        let known = cached
            .as_ref()
            .map_or(-1, |(v, _)| i64::try_from(*v).unwrap_or(-1));
        let Some((version, expires_at, body)) = self.fetch(&conn, id, known).await? else {
            self.l1.forget(id);
            return Ok(None);
        };
        if expires_at <= now.as_millis() {
            self.l1.forget(id);
            return Ok(None);
        }
        let session = match (body, cached) {
            (None, Some((_, session))) => Some(session),
            (Some(body), _) => {
                let session = self.decode(id, &body);
                match &session {
                    Some(s) => self.l1.put(id, version as u64, s.clone()),
                    None => self.l1.forget(id),
                }
                session
            }
            (None, None) => return Err(unavailable("a row without its state")),
        };
        // Keep it alive: only once less than 90 % of the TTL is left (a write per read would be
        // waste); a concurrent write set the expiry anyway, so a miss here is fine.
        let full = expiry_ms(now, ttl);
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        if session.is_some() && full - expires_at > ttl_ms / 10 {
            self.execute(&conn, &conn.refresh, &[&id.as_str(), &version, &full])
                .await?;
        }
        Ok(session)
    }

    async fn update(
        &self,
        user: &UserId,
        now: Timestamp,
        ttl: Duration,
        mutate: ProfileMutation<'_>,
        inspect: Inspect<'_>,
    ) -> Result<()> {
        let id = &profile_id(user)?;
        let _local = self.stripe(id).lock().await;
        let conn = self.conn().await?;
        // The version the new state is computed from (0: no row) and that state.
        let (mut version, mut base): (i64, Option<Session>) = match self.l1.get(id) {
            Some((v, s)) => (i64::try_from(v).unwrap_or(0), Some(s)),
            None => (0, None),
        };
        let expires = expiry_ms(now, ttl);
        for attempt in 0..self.max_attempts {
            let mut session = base.take().unwrap_or_else(|| Session::new(id.clone(), now));
            let mut added = Vec::new();
            mutate(&mut session, &mut added);
            let body = l1::encode(&session);
            let c = Columns::of(&added);
            let uid = id.as_str();
            let cols: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
                &c.event_ids,
                &c.kinds,
                &c.items,
                &c.weights,
                &c.ats,
                &c.sessions,
            ];
            let (statement, mut params): (_, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>) =
                if version == 0 {
                    (&conn.insert, vec![&uid, &expires, &body])
                } else {
                    (&conn.cas, vec![&uid, &version, &expires, &body])
                };
            params.extend(cols);
            let query = conn.client.query_opt(statement, &params);
            let written = tokio::time::timeout(self.timeout, query)
                .await
                .map_err(|_| unavailable("write timed out"))?
                .map_err(unavailable)?
                .map(|r| r.get::<_, i64>(0));
            if let Some(new_version) = written {
                inspect(&session);
                self.l1.put(id, new_version as u64, session);
                return Ok(());
            }
            // Another replica wrote first (or the row went): recompute on what is there now.
            self.conflicts.fetch_add(1, Ordering::Relaxed);
            match self.fetch(&conn, id, -1).await? {
                None => {
                    version = 0;
                    base = None;
                    self.l1.forget(id);
                }
                Some((v, expires_at, body)) => {
                    version = v;
                    // An expired row is overwritten from scratch, as an unreadable one is.
                    base = if expires_at <= now.as_millis() {
                        None
                    } else {
                        body.and_then(|b| self.decode(id, &b))
                    };
                    if base.is_none() {
                        self.l1.forget(id);
                    }
                }
            }
            l1::back_off(attempt).await;
        }
        Err(Error::Contended {
            session_id: id.to_string(),
            attempts: self.max_attempts,
        })
    }

    async fn interactions(
        &self,
        user: &UserId,
        now: Timestamp,
        ttl: Duration,
        limit: usize,
    ) -> Result<Option<Vec<Interaction>>> {
        if self.get(user, now, ttl).await?.is_none() {
            return Ok(None);
        }
        let conn = self.conn().await?;
        let since =
            system_time(now.plus_millis(-i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = tokio::time::timeout(
            self.timeout,
            conn.client
                .query(&conn.list, &[&user.as_str(), &since, &limit]),
        )
        .await
        .map_err(|_| unavailable("read timed out"))?
        .map_err(unavailable)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: &str = r.get(1);
            let (Some(kind), Ok(item_id), Ok(session_id)) = (
                EventKind::ALL.into_iter().find(|k| k.as_str() == kind),
                ItemId::new(r.get::<_, &str>(2)),
                SessionId::new(r.get::<_, &str>(5)),
            ) else {
                self.unreadable.fetch_add(1, Ordering::Relaxed);
                tracing::error!(table = %self.table, user = %user, "unreadable interaction row; left out");
                continue;
            };
            out.push(Interaction {
                event_id: r.get::<_, Option<&str>>(0).map(Into::into),
                kind,
                item_id,
                weight: r.get(3),
                at: timestamp(r.get(4)),
                session_id,
            });
        }
        Ok(Some(out))
    }

    async fn forget(&self, user: &UserId) -> Result<bool> {
        let id = &profile_id(user)?;
        let _local = self.stripe(id).lock().await;
        self.l1.forget(id);
        let conn = self.conn().await?;
        let row = tokio::time::timeout(
            self.timeout,
            conn.client.query_opt(&conn.delete, &[&id.as_str()]),
        )
        .await
        .map_err(|_| unavailable("delete timed out"))?
        .map_err(unavailable)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Ok(row.is_some_and(|r| r.get::<_, i64>(0) > now))
    }

    async fn ping(&self) -> Result<()> {
        let conn = self.conn().await?;
        tokio::time::timeout(self.timeout, conn.client.simple_query("SELECT 1"))
            .await
            .map_err(|_| unavailable("ping timed out"))?
            .map_err(unavailable)?;
        Ok(())
    }

    /// Deletes expired profiles and interactions older than the retention in the background,
    /// at most every ten minutes (the count is not known yet: 0).
    fn purge_expired(&self, now: Timestamp, ttl: Duration) -> usize {
        let last = self.last_purge.load(Ordering::Relaxed);
        if now.as_millis() - last < 600_000 {
            return 0;
        }
        self.last_purge.store(now.as_millis(), Ordering::Relaxed);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (url, table) = (self.url.clone(), self.table.clone());
            handle.spawn(async move {
                let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await else {
                    return;
                };
                tokio::spawn(connection);
                if let Err(e) = delete_expired(&client, &table, now, ttl).await {
                    tracing::warn!(error = %e, "expired profiles not purged");
                }
            });
        }
        0
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            sessions: self.l1.len(),
            evictions: self.l1.evictions(),
            expirations: 0,
            conflicts: self.conflicts.load(Ordering::Relaxed),
            unreadable: self.unreadable.load(Ordering::Relaxed),
        }
    }
}

/// Deletes the profiles past their expiry with their interactions, and the interactions older
/// than the retention, in one statement; returns how many profiles.
async fn delete_expired(
    client: &Client,
    table: &str,
    now: Timestamp,
    ttl: Duration,
) -> Result<u64> {
    let since = system_time(now.plus_millis(-i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)));
    let row = client
        .query_one(
            &format!(
                "WITH p AS (DELETE FROM {table} WHERE expires_at <= $1 RETURNING id), \
                 i AS (DELETE FROM {table}_interactions \
                       WHERE at <= $2 OR user_id IN (SELECT id FROM p)) \
                 SELECT count(*) FROM p"
            ),
            &[&now.as_millis(), &since],
        )
        .await
        .map_err(unavailable)?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}
