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
//!
//! **Redis Cluster.** With a `redis+cluster://` URL (see [`RedisTarget`]) the same stores talk
//! to a cluster through one `Connection` type. Every script's keys share a slot (a session's
//! one key; a profile and its interactions list, tagged `{user}`; a surface's two bandit keys,
//! tagged `{surface}`), so each runs whole on the primary that owns it. A primary that refuses
//! connections fails the requests for its slots with [`Error::Unavailable`] at once, one that
//! hangs within the timeout, while the others go on serving theirs; `ping` (readiness) answers
//! only when every primary does. Once the node is back, its slots are served again by itself.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use attune_core::{Session, SessionId, Timestamp};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{ErrorKind, ServerErrorKind, Value};

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
    /// `redis://host:port/db`, or `redis+cluster://host:port,host:port/` (see [`RedisTarget`]).
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
    get_script: Lua,
    cas_script: Lua,
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

/// The scheme of a Redis Cluster URL.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Whether a store URL names Redis, one server (`redis://`, `rediss://`) or a cluster
/// ([`CLUSTER_SCHEME`]), well formed or not: [`RedisTarget::parse`] says.
pub fn is_redis_url(url: &str) -> bool {
    ["redis://", "rediss://", CLUSTER_SCHEME]
        .iter()
        .any(|scheme| url.starts_with(scheme))
}

/// Where a Redis store connects, read from its URL by [`RedisTarget::parse`].
///
/// - `redis://[user[:password]@]host:port[/db]`: one server (the scheme's other settings, such
///   as `?protocol=resp3`, as the `redis` crate reads them).
/// - `redis+cluster://[user[:password]@]host:port[,host:port…][/]`: a Redis Cluster, reached
///   through the listed seed nodes (any one that answers is enough: the client reads the
///   cluster's slot map from it and connects to every primary it names). The credentials apply
///   to every node; a port left out is 6379; the database is always 0 (a cluster has only that).
///
/// ```
/// use attune_store::redis::RedisTarget;
///
/// let cluster = RedisTarget::parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/").unwrap();
/// assert_eq!(
///     cluster,
///     RedisTarget::Cluster(vec!["redis://10.0.0.1:7000".into(), "redis://10.0.0.2:7001".into()])
/// );
/// assert!(RedisTarget::parse("redis+cluster://10.0.0.1:7000,/").is_err());
/// assert!(RedisTarget::parse("redis+cluster://10.0.0.1:7000/3").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, by its URL.
    Server(String),
    /// A Redis Cluster: one `redis://` URL per seed node.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Reads a store URL. Anything that is not a well-formed `redis://` or `redis+cluster://`
    /// URL is an [`Error::BadUrl`] saying why; nothing is connected.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            redis::Client::open(url).map_err(|e| bad(e.to_string()))?;
            return Ok(RedisTarget::Server(url.to_owned()));
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !matches!(path, "" | "/" | "/0") {
            return Err(bad(format!(
                "{path:?} after the nodes: a Redis Cluster has only database 0 and this URL takes no parameters ({CLUSTER_SCHEME}host:port,host:port/)"
            )));
        }
        let (credentials, nodes) = match authority.rfind('@') {
            Some(i) => (&authority[..=i], &authority[i + 1..]),
            None => ("", authority),
        };
        let mut seeds = Vec::new();
        for node in nodes.split(',') {
            if node.is_empty() {
                return Err(bad(format!(
                    "an empty node in {nodes:?}: list the seed nodes as host:port,host:port"
                )));
            }
            let seed = format!("redis://{credentials}{node}");
            // The same rules as a one-server URL, node by node.
            redis::IntoConnectionInfo::into_connection_info(seed.as_str())
                .map_err(|e| bad(format!("node {node:?}: {e}")))?;
            seeds.push(seed);
        }
        Ok(RedisTarget::Cluster(seeds))
    }
}

/// One connection to Redis, to a server or to a cluster, used the same way by every store: both
/// route each command themselves (the cluster one to the primary that owns its keys' slot,
/// following the cluster as slots move), reconnect by themselves, and bound every answer by the
/// store's timeout.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server, reconnecting after it restarts.
    Server(ConnectionManager),
    /// A Redis Cluster: a connection per primary, reconnecting per node.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Connection::Server(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

impl Connection {
    /// Whether Redis answers: the server, or every primary of the cluster (each asked by its
    /// address, after the slot map is read from any node), so that a cluster with a primary down
    /// or a slot without one is not ready, as one server down is not. Requests for the slots of
    /// the primaries that answer are served meanwhile.
    pub(crate) async fn ping(&mut self) -> Result<()> {
        let cluster = match self {
            Connection::Server(c) => {
                let _: String = redis::cmd("PING")
                    .query_async(c)
                    .await
                    .map_err(unavailable)?;
                return Ok(());
            }
            Connection::Cluster(c) => c,
        };
        let mut slots = redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let slots = cluster
            .route_command(
                slots,
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(unavailable)?;
        let (primaries, covered) = primaries(&slots)?;
        if covered < SLOTS {
            return Err(Error::Unavailable {
                backend: "redis",
                source: format!(
                    "{} of the cluster's {SLOTS} slots have no primary",
                    SLOTS - covered
                )
                .into(),
            });
        }
        for (host, port) in primaries {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            cluster
                .route_command(redis::cmd("PING"), routing)
                .await
                .map_err(|e| Error::Unavailable {
                    backend: "redis",
                    source: format!("cluster primary {host}:{port}: {e}").into(),
                })?;
        }
        Ok(())
    }
}

/// The slots of a Redis Cluster.
const SLOTS: u64 = 16_384;

/// The distinct primaries in a `CLUSTER SLOTS` reply (`[[start, end, [host, port, …], …], …]`),
/// and how many slots they cover.
fn primaries(reply: &Value) -> Result<(BTreeSet<(String, u16)>, u64)> {
    let bad = || protocol("CLUSTER SLOTS");
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let (mut primaries, mut covered) = (BTreeSet::new(), 0);
    for range in ranges {
        let Value::Array(range) = range else {
            return Err(bad());
        };
        let (Some(start), Some(end), Some(Value::Array(primary))) = (
            range.first().and_then(as_u64),
            range.get(1).and_then(as_u64),
            range.get(2),
        ) else {
            return Err(bad());
        };
        let host = match primary.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(bad()),
        };
        let port = primary
            .get(1)
            .and_then(as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(bad)?;
        covered += end.saturating_sub(start) + 1;
        primaries.insert((host, port));
    }
    Ok((primaries, covered))
}

/// What opens a [`Connection`]: a client for one server or for a cluster.
#[derive(Clone)]
enum Opener {
    Server(redis::Client),
    Cluster(Box<ClusterClient>),
}

impl Opener {
    fn new(url: &str, timeout: Duration) -> Result<Self> {
        let bad = |e: redis::RedisError| Error::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        Ok(match RedisTarget::parse(url)? {
            RedisTarget::Server(url) => Opener::Server(redis::Client::open(url).map_err(bad)?),
            RedisTarget::Cluster(seeds) => Opener::Cluster(Box::new(
                ClusterClient::builder(seeds)
                    .connection_timeout(timeout)
                    // Every answer, retries and redirections included, within the timeout.
                    .response_timeout(timeout)
                    // A few tries (a redirection after a slot moved, a reconnection), spaced
                    // by tens of milliseconds rather than the crate's default of seconds: a
                    // node that refuses connections fails its requests in tens of
                    // milliseconds, as one server does, instead of holding them for the
                    // whole timeout (16 tries by default).
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(CLUSTER_RETRY_WAIT_MS.0)
                    .max_retry_wait(CLUSTER_RETRY_WAIT_MS.1)
                    .build()
                    .map_err(bad)?,
            )),
        })
    }

    async fn open(&self, timeout: Duration) -> Result<Connection> {
        match self {
            Opener::Server(client) => {
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(client.clone(), manager_config)
                    .await
                    .map(Connection::Server)
                    .map_err(unavailable)
            }
            // Reads the slot map from the first seed that answers.
            Opener::Cluster(client) => client
                .get_async_connection()
                .await
                .map(Connection::Cluster)
                .map_err(unavailable),
        }
    }
}

/// How many times one cluster request is tried again.
const CLUSTER_RETRIES: u32 = 3;

/// The least and most wait between two tries of one cluster request, in milliseconds.
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (20, 250);

/// A Lua script run by its hash (`EVALSHA`). When the server does not hold it yet (a first call,
/// or a node that restarted), its body is sent with `EVAL`, which also caches it there. Unlike
/// [`redis::Script::invoke_async`], which then loads it with `SCRIPT LOAD` on *every* node of a
/// cluster (and so fails while any one node is down), only the node that owns the keys is asked.
pub(crate) struct Lua {
    source: &'static str,
    hash: String,
}

impl Lua {
    pub(crate) fn new(source: &'static str) -> Self {
        Lua {
            source,
            hash: redis::Script::new(source).get_hash().to_owned(),
        }
    }

    /// A call with these keys; add its arguments with [`LuaCall::arg`].
    pub(crate) fn call<'a>(&'a self, keys: &[&str]) -> LuaCall<'a> {
        LuaCall {
            lua: self,
            keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`Lua`] script.
pub(crate) struct LuaCall<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl LuaCall<'_> {
    /// Appends `ARGV` entries.
    pub(crate) fn arg(&mut self, arg: impl redis::ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// Runs the script.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        conn: &mut Connection,
    ) -> redis::RedisResult<T> {
        match self
            .command("EVALSHA", &self.lua.hash)
            .query_async(conn)
            .await
        {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.command("EVAL", self.lua.source)
                    .query_async(conn)
                    .await
            }
            other => other,
        }
    }

    fn command(&self, name: &str, script: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(script).arg(self.keys.len());
        for k in &self.keys {
            cmd.arg(k.as_slice());
        }
        for a in &self.args {
            cmd.arg(a.as_slice());
        }
        cmd
    }
}

/// A connection to Redis that may not exist yet. Opening one never fails for a Redis that is
/// down: the first attempt is made at once, and while it fails a background task retries (every
/// 250 ms, backing off to 5 s) until one succeeds. Until then every operation fails at once with
/// [`Error::Unavailable`] (503, and `/readyz` not ready), so a replica starts, answers what needs
/// no store, and comes to full service by itself in whatever order its backends start. Once
/// connected, the connection reconnects by itself after Redis restarts (for a cluster: after
/// any of its nodes restarts; a request that needs a node that is down fails with
/// `Unavailable` within the timeout while the other nodes go on serving theirs).
#[derive(Clone)]
pub(crate) struct LazyConnection {
    cell: Arc<tokio::sync::OnceCell<Connection>>,
    url: Arc<str>,
}

impl LazyConnection {
    /// Connects, or starts connecting in the background. Only a URL that cannot be a Redis URL
    /// (see [`RedisTarget`]) is an error.
    pub(crate) async fn open(url: &str, timeout: Duration) -> Result<Self> {
        let opener = Opener::new(url, timeout)?;
        let lazy = LazyConnection {
            cell: Arc::new(tokio::sync::OnceCell::new()),
            url: url.into(),
        };
        match opener.open(timeout).await {
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
                        match opener.open(timeout).await {
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
    pub(crate) fn get(&self) -> Result<Connection> {
        self.cell.get().cloned().ok_or_else(|| Error::Unavailable {
            backend: "redis",
            source: format!("not connected to {} yet", self.url).into(),
        })
    }
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
            get_script: Lua::new(GET_LUA),
            cas_script: Lua::new(CAS_LUA),
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
            .call(&[&self.key(id)])
            .arg(known)
            .arg(ttl_ms(ttl))
            .invoke(&mut self.conn.get()?)
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
                .call(&[&key])
                .arg(version)
                .arg(l1::encode(&session))
                .arg(ttl_ms(ttl))
                .invoke(&mut conn)
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
        self.conn.get()?.ping().await
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
    cas_script: Lua,
}

impl RedisProfileStore {
    /// See [`RedisSessionStore::connect`].
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let mut inner = RedisSessionStore::connect(config).await?;
        inner.tagged = true;
        Ok(RedisProfileStore {
            inner,
            cas_script: Lua::new(PROFILE_CAS_LUA),
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
            let mut call = self.cas_script.call(&[&key, &list]);
            call.arg(version)
                .arg(l1::encode(&session))
                .arg(ttl_ms(ttl))
                .arg(crate::profile::MAX_INTERACTIONS_PER_USER);
            for i in &added {
                // Serializing plain data into a Vec cannot fail.
                call.arg(postcard::to_stdvec(i).unwrap_or_default());
            }
            let reply: Vec<Value> = call.invoke(&mut conn).await.map_err(unavailable)?;
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
