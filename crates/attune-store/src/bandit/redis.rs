//! The Redis bandit store, shared by replicas.
//!
//! **Keys.** Each surface has two keys under the prefix, both hash-tagged with the surface so
//! that they share a Cluster slot:
//! - `<prefix>{<surface>}:arms`, a hash with two fields per item: `s:<item>` (shows) and
//!   `c:<item>` (clicks), decimal numbers;
//! - `<prefix>{<surface>}:updated`, a sorted set of the surface's items scored by the
//!   microsecond (Redis `TIME`) of their last feedback.
//!
//! **Atomic updates.** A record is one Lua script: it reads the current counts of the shown items
//! and checks both keys' types before its first write, then writes the new counts with one
//! `HSET`, their update times with one `ZADD`, evicts, and refreshes the TTLs. Redis runs a script
//! alone, so concurrent records from any number of replicas are applied one after another and
//! none is lost; a record that fails (a key of the wrong type) has written nothing.
//!
//! **Bounds.** At most `max_arms_per_surface` items per surface: past it, the record that adds
//! items evicts the least recently updated ones (`ZPOPMIN`; at most [`MAX_EVICTIONS_PER_RECORD`]
//! per record, so a lowered bound is reached over several records rather than in one long
//! script). Both keys expire `ttl` after the surface's last feedback, so a surface no longer in use
//! disappears whole. Memory is therefore bounded by (surfaces in use) × `max_arms_per_surface`;
//! surfaces are names the engine accepts from its clients, so it should accept only the ones it
//! serves.
//!
//! **Reads** are one round trip: an `HMGET` of both fields of every item (in chunks of
//! [`READ_CHUNK`] items, pipelined in one `MULTI`, so a read is one consistent snapshot).

use std::time::Duration;

use async_trait::async_trait;
use attune_core::ItemId;
use attune_core::bandit::{Arm, Feedback, Surface};
use redis::Value;

use super::BanditStore;
use crate::redis::{LazyConnection, Lua, unavailable};
use crate::{Error, Result};

/// Items per `HMGET` in a read.
pub const READ_CHUNK: usize = 512;
/// Most arms one record evicts.
pub const MAX_EVICTIONS_PER_RECORD: usize = 1000;

/// KEYS: the arms hash, the update-time sorted set. ARGV: TTL in ms, most arms kept, most
/// evictions, number of shown items `n`, the `n` shown items, then the clicked ones (all among
/// the shown). Returns the number of arms evicted.
const RECORD_LUA: &str = r"
local n = tonumber(ARGV[4])
local clicked = {}
for i = 5 + n, #ARGV do clicked[ARGV[i]] = true end
local fields = {}
for j = 1, n do
  fields[2 * j - 1] = 's:' .. ARGV[4 + j]
  fields[2 * j] = 'c:' .. ARGV[4 + j]
end
-- Every read and type check comes before the first write: a failing script writes nothing.
local old = redis.call('HMGET', KEYS[1], unpack(fields))
local held = redis.call('ZCARD', KEYS[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local counts, times = {}, {}
for j = 1, n do
  local item = ARGV[4 + j]
  -- A count that is not a number (or is negative) is 0; clicks are at most shows.
  local shows = math.max(tonumber(old[2 * j - 1]) or 0, 0) + 1
  local clicks = math.max(tonumber(old[2 * j]) or 0, 0)
  if clicked[item] then clicks = clicks + 1 end
  clicks = math.min(clicks, shows)
  counts[#counts + 1] = fields[2 * j - 1]
  counts[#counts + 1] = string.format('%.17g', shows)
  counts[#counts + 1] = fields[2 * j]
  counts[#counts + 1] = string.format('%.17g', clicks)
  times[#times + 1] = string.format('%.17g', now)
  times[#times + 1] = item
end
redis.call('HSET', KEYS[1], unpack(counts))
redis.call('ZADD', KEYS[2], unpack(times))
local over = math.min(redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2]), tonumber(ARGV[3]))
local evicted = 0
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], over)
  local dels = {}
  for i = 1, #gone, 2 do
    dels[#dels + 1] = 's:' .. gone[i]
    dels[#dels + 1] = 'c:' .. gone[i]
  end
  for i = 1, #dels, 1000 do
    redis.call('HDEL', KEYS[1], unpack(dels, i, math.min(i + 999, #dels)))
  end
  evicted = #gone / 2
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return evicted
";

/// Settings of the Redis bandit store.
#[derive(Debug, Clone)]
pub struct RedisBanditConfig {
    /// `redis://host:port/db`, or `redis+cluster://host:port,host:port/` (see
    /// [`crate::redis::RedisTarget`]).
    pub url: String,
    /// Prepended to every key.
    pub prefix: String,
    /// Most items kept per surface; past it, the least recently updated are evicted (an evicted
    /// arm reads as no shows again).
    pub max_arms_per_surface: usize,
    /// A surface's arms are forgotten this long after its last feedback.
    pub ttl: Duration,
    /// Connect and response timeout.
    pub timeout: Duration,
}

impl Default for RedisBanditConfig {
    fn default() -> Self {
        RedisBanditConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "attune:bandit:".into(),
            max_arms_per_surface: 100_000,
            ttl: Duration::from_secs(30 * 86_400),
            timeout: Duration::from_secs(2),
        }
    }
}

/// See the module docs.
pub struct RedisBanditStore {
    conn: LazyConnection,
    prefix: String,
    record_script: Lua,
    max_arms: usize,
    ttl_ms: u64,
}

impl RedisBanditStore {
    /// Connects to Redis, or starts connecting in the background when it does not answer
    /// (operations fail with `Unavailable` until connected). Only a malformed URL is an error.
    pub async fn connect(config: RedisBanditConfig) -> Result<Self> {
        let conn = LazyConnection::open(&config.url, config.timeout).await?;
        Ok(RedisBanditStore {
            conn,
            prefix: config.prefix,
            record_script: Lua::new(RECORD_LUA),
            max_arms: config.max_arms_per_surface.max(1),
            ttl_ms: u64::try_from(config.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        })
    }

    /// The key of `surface`'s arms hash.
    pub fn arms_key(&self, surface: &Surface) -> String {
        format!("{}{{{surface}}}:arms", self.prefix)
    }

    /// The key of `surface`'s sorted set of last update times.
    pub fn updated_key(&self, surface: &Surface) -> String {
        format!("{}{{{surface}}}:updated", self.prefix)
    }
}

/// A stored count: absent, or not a number (written by something else), is 0.
fn count(v: &Value) -> f64 {
    let parsed = match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
        Value::SimpleString(s) => s.parse().ok(),
        Value::Int(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        _ => None,
    };
    parsed.unwrap_or(0.0)
}

#[async_trait]
impl BanditStore for RedisBanditStore {
    async fn arms(&self, surface: &Surface, items: &[ItemId]) -> Result<Vec<Arm>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.arms_key(surface);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in items.chunks(READ_CHUNK) {
            let cmd = pipe.cmd("HMGET").arg(&key);
            for item in chunk {
                cmd.arg(format!("s:{item}")).arg(format!("c:{item}"));
            }
        }
        let replies: Vec<Vec<Value>> = pipe
            .query_async(&mut self.conn.get()?)
            .await
            .map_err(unavailable)?;
        let arms: Vec<Arm> = replies
            .iter()
            .flat_map(|r| r.chunks_exact(2))
            .map(|pair| {
                Arm {
                    shows: count(&pair[0]),
                    clicks: count(&pair[1]),
                }
                .sanitized()
            })
            .collect();
        if arms.len() != items.len() {
            return Err(Error::Unavailable {
                backend: "redis",
                source: format!(
                    "HMGET answered {} arms for {} items",
                    arms.len(),
                    items.len()
                )
                .into(),
            });
        }
        Ok(arms)
    }

    async fn record(&self, feedback: &Feedback) -> Result<()> {
        let surface = feedback.surface();
        let (arms, updated) = (self.arms_key(surface), self.updated_key(surface));
        let mut invocation = self.record_script.call(&[&arms, &updated]);
        invocation
            .arg(self.ttl_ms)
            .arg(self.max_arms)
            .arg(MAX_EVICTIONS_PER_RECORD)
            .arg(feedback.shown().len());
        for item in feedback.shown() {
            invocation.arg(item.as_str());
        }
        for item in feedback.clicked() {
            invocation.arg(item.as_str());
        }
        let evicted: u64 = invocation
            .invoke(&mut self.conn.get()?)
            .await
            .map_err(unavailable)?;
        if evicted > 0 {
            tracing::debug!(%surface, evicted, "bandit arms evicted");
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.conn.get()?.ping().await
    }
}
