//! The Redis session store, for stateless replicas.
//!
//! Each session is one hash under `<prefix><session id>` with two fields: `v`, a version that
//! every write increments, and `d`, the encoded session. The key's TTL is refreshed on every read
//! and write, so Redis itself forgets idle sessions.
//!
//! **Atomic updates.** A write is a compare-and-set in a Lua script: it succeeds only if `v` still
//! holds the version the new state was computed from; otherwise the script answers with the
//! current state and the update is recomputed on it and tried again. Within one process, updates
//! of one session are also serialized by a striped lock, so retries come only from other replicas.
//!
//! **The L1 cache** holds the last version of each session this process read or wrote. A write
//! starts from it (one round trip when nothing changed elsewhere); a read sends the cached version
//! and gets the body back only if the version moved. The cache therefore never serves a score that
//! another replica has overwritten: every read and write is checked against Redis.
//!
//! A session is bounded in size by the rules (see `attune_core::session`), so rewriting it whole on
//! every event costs the same on the 1st and the 3,000th event.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use attune_core::{Session, SessionId, Timestamp};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use crate::l1::{self, L1};
use crate::{Error, Inspect, Mutation, Result, SessionStore, StoreStats};

/// Local lock stripes: updates of sessions in one stripe are serialized within the process.
const STRIPES: usize = 512;

/// Refreshes the TTL and returns `nil` (absent), `{v}` (unchanged) or `{v, d}`.
const GET_LUA: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return false end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if v == ARGV[1] then return {v} end
return {v, redis.call('HGET', KEYS[1], 'd')}
";

/// Compare-and-set: `{1, new_version}` on success, `{0, current_version[, current_body]}` otherwise.
const CAS_LUA: &str = r"
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v == ARGV[1] then
  local nv = tostring(tonumber(v) + 1)
  redis.call('HSET', KEYS[1], 'v', nv, 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, nv}
end
if v == '0' then return {0, v} end
return {0, v, redis.call('HGET', KEYS[1], 'd')}
";

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prepended to every key.
    pub prefix: String,
    /// Most sessions held in the in-process L1 cache.
    pub l1_capacity: usize,
    /// Most attempts of one optimistic update before giving up.
    pub max_attempts: u32,
    /// Connect and response timeout.
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "attune:session:".into(),
            l1_capacity: 100_000,
            max_attempts: 200,
            timeout: Duration::from_secs(2),
        }
    }
}

/// What a compare-and-set script answered.
enum Cas {
    /// Written; the new version.
    Written(u64),
    /// Another replica wrote first: its version and state.
    Conflict(u64, Option<Box<Session>>),
}

/// See the module docs.
pub struct RedisSessionStore {
    conn: LazyConnection,
    prefix: String,
    /// Keys are `<prefix>{<id>}` (hash-tagged) rather than `<prefix><id>`: set for stores
    /// whose scripts write more than one key per id (profiles and their interactions).
    tagged: bool,
    get_script: Script,
    cas_script: Script,
    l1: L1,
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
    max_attempts: u32,
    conflicts: AtomicU64,
    unreadable: AtomicU64,
}

pub(crate) fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable {
        backend: "redis",
        source: Box::new(e),
    }
}

/// A connection to Redis that may not exist yet. Opening one never fails for a Redis that is
/// down: the first attempt is made at once, and while it fails a background task retries (every
/// 250 ms, backing off to 5 s) until one succeeds. Until then every operation fails at once with
/// [`Error::Unavailable`] (503, and `/readyz` not ready), so a replica starts, answers what needs
/// no store, and comes to full service by itself in whatever order its backends start. Once
/// connected, the connection manager reconnects by itself after Redis restarts.
#[derive(Clone)]
pub(crate) struct LazyConnection {
    cell: Arc<tokio::sync::OnceCell<ConnectionManager>>,
    url: Arc<str>,
}

impl LazyConnection {
    /// Connects, or starts connecting in the background. Only a URL that cannot be a Redis URL
    /// is an error.
    pub(crate) async fn open(url: &str, timeout: Duration) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| Error::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let lazy = LazyConnection {
            cell: Arc::new(tokio::sync::OnceCell::new()),
            url: url.into(),
        };
        match manager(client.clone(), timeout).await {
            Ok(conn) => {
                let _ = lazy.cell.set(conn);
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "Redis does not answer; connecting in the background (not ready until then)");
                let cell = Arc::clone(&lazy.cell);
                let url = url.to_owned();
                tokio::spawn(async move {
                    let mut wait = Duration::from_millis(250);
                    loop {
                        tokio::time::sleep(wait).await;
                        match manager(client.clone(), timeout).await {
                            Ok(conn) => {
                                tracing::info!(%url, "connected to Redis");
                                let _ = cell.set(conn);
                                return;
                            }
                            Err(e) => {
                                tracing::debug!(%url, error = %e, "Redis still does not answer");
                                wait = (wait * 2).min(Duration::from_secs(5));
                            }
                        }
                    }
                });
            }
        }
        Ok(lazy)
    }

    /// The connection, or `Unavailable` while there is none yet.
    pub(crate) fn get(&self) -> Result<ConnectionManager> {
        self.cell.get().cloned().ok_or_else(|| Error::Unavailable {
            backend: "redis",
            source: format!("not connected to {} yet", self.url).into(),
        })
    }
}

async fn manager(client: redis::Client, timeout: Duration) -> Result<ConnectionManager> {
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, manager_config)
        .await
        .map_err(unavailable)
}

impl RedisSessionStore {
    /// Connects to Redis, or starts connecting in the background when it does not answer (see
    /// [`LazyConnection`]: operations fail with `Unavailable` until connected). Only a malformed
    /// URL is an error.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let conn = LazyConnection::open(&config.url, config.timeout).await?;
        Ok(RedisSessionStore {
            conn,
            prefix: config.prefix,
            tagged: false,
            get_script: Script::new(GET_LUA),
            cas_script: Script::new(CAS_LUA),
            l1: L1::new(config.l1_capacity),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: RandomState::new(),
            max_attempts: config.max_attempts.max(1),
            conflicts: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
        })
    }

    fn key(&self, id: &SessionId) -> String {
        let mut k = String::with_capacity(self.prefix.len() + id.as_str().len() + 2);
        k.push_str(&self.prefix);
        if self.tagged {
            // A Redis Cluster hash tag: every key of this id lands in one slot.
            k.push('{');
            k.push_str(id.as_str());
            k.push('}');
        } else {
            k.push_str(id.as_str());
        }
        k
    }

    /// Reads a compare-and-set script's reply `[status, version, body?]`: written at
    /// `version`, or another replica's write came first (its version and state; `None` when
    /// absent or of an older format, which the cache then forgets and the retry overwrites).
    fn cas_reply(&self, id: &SessionId, reply: &[Value]) -> Result<Cas> {
        let ok = reply
            .first()
            .and_then(as_u64)
            .ok_or_else(|| protocol("no status"))?;
        let current = reply
            .get(1)
            .and_then(as_u64)
            .ok_or_else(|| protocol("no version"))?;
        if ok == 1 {
            return Ok(Cas::Written(current));
        }
        self.conflicts.fetch_add(1, Ordering::Relaxed);
        let theirs = match reply.get(2) {
            Some(Value::BulkString(body)) => self.decode(id, body).map(Box::new),
            _ => None,
        };
        if theirs.is_none() {
            self.l1.forget(id);
        }
        Ok(Cas::Conflict(current, theirs))
    }

    /// Decodes a stored body; one that cannot be read is logged, counted and treated as absent
    /// (see [`l1::decode`]).
    fn decode(&self, id: &SessionId, bytes: &[u8]) -> Option<Session> {
        match l1::decode(bytes) {
            Ok(session) => Some(session),
            Err(reason) => {
                self.unreadable.fetch_add(1, Ordering::Relaxed);
                tracing::error!(key = %self.key(id), %reason, "unreadable stored session; treating it as absent");
                None
            }
        }
    }

    fn stripe(&self, id: &SessionId) -> &tokio::sync::Mutex<()> {
        let h = self.hasher.hash_one(id.as_str()) as usize;
        &self.stripes[h % self.stripes.len()]
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn protocol(what: &str) -> Error {
    Error::Unavailable {
        backend: "redis",
        source: format!("unexpected script reply: {what}").into(),
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn get(&self, id: &SessionId, _now: Timestamp, ttl: Duration) -> Result<Option<Session>> {
        let cached = self.l1.get(id);
        let known = cached.as_ref().map_or(0, |(v, _)| *v);
        let reply: Value = self
            .get_script
            .key(self.key(id))
            .arg(known)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.conn.get()?)
            .await
            .map_err(unavailable)?;
        let items = match reply {
            Value::Nil => {
                self.l1.forget(id);
                return Ok(None);
            }
            Value::Array(items) => items,
            other => return Err(protocol(&format!("{other:?}"))),
        };
        let version = items
            .first()
            .and_then(as_u64)
            .ok_or_else(|| protocol("no version"))?;
        match (items.get(1), cached) {
            (None, Some((_, session))) if version == known => Ok(Some(session)),
            (Some(Value::BulkString(body)), _) => {
                let session = self.decode(id, body);
                match &session {
                    Some(s) => self.l1.put(id, version, s.clone()),
                    None => self.l1.forget(id),
                }
                Ok(session)
            }
            _ => Err(protocol("missing body")),
        }
    }

    async fn update(
        &self,
        id: &SessionId,
        now: Timestamp,
        ttl: Duration,
        mutate: Mutation<'_>,
        inspect: Inspect<'_>,
    ) -> Result<()> {
        let _local = self.stripe(id).lock().await;
        let key = self.key(id);
        let (mut version, mut base) = match self.l1.get(id) {
            Some((v, s)) => (v, Some(s)),
            None => (0, None),
        };
        let mut conn = self.conn.get()?;
        for attempt in 0..self.max_attempts {
            let mut session = base.take().unwrap_or_else(|| Session::new(id.clone(), now));
            mutate(&mut session);
            let reply: Vec<Value> = self
                .cas_script
                .key(&key)
                .arg(version)
                .arg(l1::encode(&session))
                .arg(ttl_ms(ttl))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            match self.cas_reply(id, &reply)? {
                Cas::Written(current) => {
                    inspect(&session);
                    self.l1.put(id, current, session);
                    return Ok(());
                }
                // Another replica wrote first: recompute on what it wrote.
                Cas::Conflict(current, theirs) => (version, base) = (current, theirs.map(|s| *s)),
            }
            l1::back_off(attempt).await;
        }
        Err(Error::Contended {
            session_id: id.to_string(),
            attempts: self.max_attempts,
        })
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let _local = self.stripe(id).lock().await;
        self.l1.forget(id);
        let removed: u64 = redis::cmd("DEL")
            .arg(self.key(id))
            .query_async(&mut self.conn.get()?)
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.get()?)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn purge_expired(&self, _now: Timestamp) -> usize {
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

/// The profile compare-and-set: [`CAS_LUA`], appending the update's interactions (`ARGV[5..]`)
/// to the list `KEYS[2]` (kept to the newest `ARGV[4]`, expiring with the profile) in the same
/// script, so both are written or neither.
const PROFILE_CAS_LUA: &str = r"
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v == ARGV[1] then
  local nv = tostring(tonumber(v) + 1)
  redis.call('HSET', KEYS[1], 'v', nv, 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if #ARGV > 4 then
    redis.call('RPUSH', KEYS[2], unpack(ARGV, 5))
    redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return {1, nv}
end
if v == '0' then return {0, v} end
return {0, v, redis.call('HGET', KEYS[1], 'd')}
";

/// The Redis profile store: each profile as a session is stored ([`RedisSessionStore`], under
/// `<prefix>{<user id>}`, with its L1 cache), and its interactions in a list under
/// `<prefix>{<user id>} interactions` (ids never hold a space, so no profile key can be one;
/// the `{…}` hash tag puts both in one Redis Cluster slot, as the script that writes both needs),
/// oldest first, holding the newest [`crate::profile::MAX_INTERACTIONS_PER_USER`]. One Lua
/// script writes the profile and appends its interactions; the list expires with the profile
/// (its TTL is set at each write, so it lapses once every entry is older than the retention).
/// A retried event is skipped by the profile's applied ids, so it appends nothing.
pub struct RedisProfileStore {
    inner: RedisSessionStore,
    cas_script: Script,
}

impl RedisProfileStore {
    /// See [`RedisSessionStore::connect`].
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let mut inner = RedisSessionStore::connect(config).await?;
        inner.tagged = true;
        Ok(RedisProfileStore {
            inner,
            cas_script: Script::new(PROFILE_CAS_LUA),
        })
    }

    fn interactions_key(&self, id: &SessionId) -> String {
        let mut k = self.inner.key(id);
        k.push_str(" interactions");
        k
    }
}

#[async_trait]
impl crate::profile::ProfileStore for RedisProfileStore {
    async fn get(
        &self,
        user: &attune_core::UserId,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Option<Session>> {
        self.inner
            .get(&crate::profile::profile_id(user)?, now, ttl)
            .await
    }

    async fn update(
        &self,
        user: &attune_core::UserId,
        now: Timestamp,
        ttl: Duration,
        mutate: crate::profile::ProfileMutation<'_>,
        inspect: Inspect<'_>,
    ) -> Result<()> {
        let id = &crate::profile::profile_id(user)?;
        let inner = &self.inner;
        let _local = inner.stripe(id).lock().await;
        let (key, list) = (inner.key(id), self.interactions_key(id));
        let (mut version, mut base) = match inner.l1.get(id) {
            Some((v, s)) => (v, Some(s)),
            None => (0, None),
        };
        let mut conn = inner.conn.get()?;
        for attempt in 0..inner.max_attempts {
            let mut session = base.take().unwrap_or_else(|| Session::new(id.clone(), now));
            let mut added = Vec::new();
            mutate(&mut session, &mut added);
            let mut call = self.cas_script.key(&key);
            call.key(&list)
                .arg(version)
                .arg(l1::encode(&session))
                .arg(ttl_ms(ttl))
                .arg(crate::profile::MAX_INTERACTIONS_PER_USER);
            for i in &added {
                // Serializing plain data into a Vec cannot fail.
                call.arg(postcard::to_stdvec(i).unwrap_or_default());
            }
            let reply: Vec<Value> = call.invoke_async(&mut conn).await.map_err(unavailable)?;
            match inner.cas_reply(id, &reply)? {
                Cas::Written(current) => {
                    inspect(&session);
                    inner.l1.put(id, current, session);
                    return Ok(());
                }
                Cas::Conflict(current, theirs) => (version, base) = (current, theirs.map(|s| *s)),
            }
            l1::back_off(attempt).await;
        }
        Err(Error::Contended {
            session_id: id.to_string(),
            attempts: inner.max_attempts,
        })
    }

    async fn interactions(
        &self,
        user: &attune_core::UserId,
        now: Timestamp,
        ttl: Duration,
        limit: usize,
    ) -> Result<Option<Vec<crate::profile::Interaction>>> {
        let id = &crate::profile::profile_id(user)?;
        if self.inner.get(id, now, ttl).await?.is_none() {
            return Ok(None);
        }
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(self.interactions_key(id))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.inner.conn.get()?)
            .await
            .map_err(unavailable)?;
        let mut list = Vec::with_capacity(raw.len());
        for bytes in raw {
            match postcard::from_bytes::<crate::profile::Interaction>(&bytes) {
                Ok(i) if !crate::profile::too_old(i.at, now, ttl) => list.push(i),
                Ok(_) => {}
                Err(e) => {
                    self.inner.unreadable.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(user = %user, error = %e, "unreadable stored interaction; left out");
                }
            }
        }
        Ok(Some(crate::profile::memory::newest(
            list.into_iter(),
            limit,
        )))
    }

    async fn forget(&self, user: &attune_core::UserId) -> Result<bool> {
        let id = &crate::profile::profile_id(user)?;
        let _local = self.inner.stripe(id).lock().await;
        self.inner.l1.forget(id);
        let key = self.inner.key(id);
        // Both keys in one transaction.
        let (existed, _removed): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("EXISTS")
            .arg(&key)
            .cmd("DEL")
            .arg(&key)
            .arg(self.interactions_key(id))
            .query_async(&mut self.inner.conn.get()?)
            .await
            .map_err(unavailable)?;
        Ok(existed > 0)
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    fn purge_expired(&self, _now: Timestamp, _ttl: Duration) -> usize {
        0
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}
