//! The embedded session store: in-process, sharded, with idle expiry, a bound on the number of
//! sessions (approximate-LRU eviction) and an optional snapshot to disk.

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use attune_core::{Session, SessionId, Timestamp};
use indexmap::IndexMap;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::{Inspect, Mutation, Result, SessionStore, StoreStats, expiry, snapshot};

/// How many entries eviction samples to find a stale one (as Redis's approximated LRU does).
const EVICTION_SAMPLES: usize = 5;

/// An entry of an embedded store that expires a TTL after its last access.
pub(crate) trait Expiring {
    /// When it expires.
    fn expires_at_mut(&mut self) -> &mut Timestamp;
}

/// The live entry of `id` in `map`, its expiry moved to `now + ttl`; an expired one is dropped
/// (and counted in `expirations`). The embedded session and profile stores read this way.
pub(crate) fn touch<'a, E: Expiring>(
    map: &'a mut IndexMap<SessionId, Box<E>>,
    expirations: &AtomicU64,
    id: &SessionId,
    now: Timestamp,
    ttl: Duration,
) -> Option<&'a mut E> {
    let idx = map.get_index_of(id.as_str())?;
    if *map[idx].expires_at_mut() <= now {
        map.swap_remove_index(idx);
        expirations.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let entry = &mut map[idx];
    *entry.expires_at_mut() = expiry(now, ttl);
    Some(entry)
}

/// The position of the entry to evict from a full map: the stalest (by `age`, smaller is
/// staler) of a few sampled ones, an approximate LRU at the cost of five random reads. The
/// embedded session, profile and bandit stores all evict this way.
pub(crate) fn sampled_victim<K, V, A: PartialOrd>(
    map: &IndexMap<K, V>,
    rng: &mut SmallRng,
    age: impl Fn(&V) -> A,
) -> usize {
    let n = map.len();
    let mut victim = rng.random_range(0..n);
    for _ in 1..EVICTION_SAMPLES {
        let candidate = rng.random_range(0..n);
        if age(&map[candidate]) < age(&map[victim]) {
            victim = candidate;
        }
    }
    victim
}
/// Snapshot file header: magic, then the session layout version.
const SNAPSHOT_MAGIC: &[u8; 7] = b"ATSNAP:";

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Most sessions held; past it, the least recently used are evicted.
    pub max_sessions: usize,
    /// Number of independently locked shards.
    pub shards: usize,
    /// Where to write the snapshot at shutdown and read it at start; `None` keeps nothing on disk.
    pub snapshot: Option<PathBuf>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_sessions: 1_000_000,
            shards: 64,
            snapshot: None,
        }
    }
}

struct Entry {
    session: Session,
    expires_at: Timestamp,
}

impl Expiring for Entry {
    fn expires_at_mut(&mut self) -> &mut Timestamp {
        &mut self.expires_at
    }
}

struct Shard {
    /// Entries are boxed: the map's spare capacity then costs a pointer, not a whole session.
    map: IndexMap<SessionId, Box<Entry>>,
    rng: SmallRng,
}

/// See the module docs.
pub struct MemorySessionStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    snapshot: Option<PathBuf>,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new(config: MemoryConfig) -> Self {
        let shards = config.shards.clamp(1, 4096);
        let per_shard = config.max_sessions.div_ceil(shards).max(1);
        MemorySessionStore {
            shards: (0..shards)
                .map(|i| {
                    Mutex::new(Shard {
                        map: IndexMap::new(),
                        rng: SmallRng::seed_from_u64(i as u64),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            per_shard,
            snapshot: config.snapshot,
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
        }
    }

    /// A store loaded from its snapshot file, when one is configured and exists. Expired sessions
    /// in the file are dropped.
    pub fn open(config: MemoryConfig, now: Timestamp) -> Result<Self> {
        let store = Self::new(config);
        if let Some(path) = &store.snapshot
            && path.exists()
        {
            match store.load_snapshot(path, now) {
                Ok(loaded) => {
                    tracing::info!(path = %path.display(), sessions = loaded, "loaded session snapshot");
                }
                Err(e) => {
                    // Keep the file for inspection, out of the way of the next snapshot, and start
                    // empty: refusing to start would keep the service down for stale sessions.
                    let aside = snapshot::move_aside(path, &e)?;
                    tracing::error!(error = %e, moved_to = %aside.display(), "unreadable session snapshot; starting empty");
                }
            }
        }
        Ok(store)
    }

    fn shard(&self, id: &SessionId) -> &Mutex<Shard> {
        let h = self.hasher.hash_one(id.as_str()) as usize;
        &self.shards[h % self.shards.len()]
    }

    /// Makes room for one more entry in a full shard: drops an expired entry or the least recently
    /// used of a few sampled ones.
    fn make_room(&self, shard: &mut Shard, now: Timestamp) {
        while shard.map.len() >= self.per_shard {
            let victim = sampled_victim(&shard.map, &mut shard.rng, |e| e.expires_at);
            let expired = shard.map[victim].expires_at <= now;
            shard.map.swap_remove_index(victim);
            if expired {
                self.expirations.fetch_add(1, Ordering::Relaxed);
            } else {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes every live session to `path` (atomically: a temporary file, then a rename).
    pub fn save_snapshot(&self, path: &Path, now: Timestamp) -> Result<usize> {
        let mut entries: Vec<(Session, Timestamp)> = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            entries.extend(
                shard
                    .map
                    .values()
                    .filter(|e| e.expires_at > now)
                    .map(|e| (e.session.clone(), e.expires_at)),
            );
        }
        let body =
            postcard::to_stdvec(&entries).map_err(|e| snapshot::error(path, e.to_string()))?;
        snapshot::write(
            path,
            SNAPSHOT_MAGIC,
            attune_core::session::LAYOUT_VERSION,
            &body,
        )?;
        Ok(entries.len())
    }

    /// Loads sessions from a snapshot written by [`MemorySessionStore::save_snapshot`].
    pub fn load_snapshot(&self, path: &Path, now: Timestamp) -> Result<usize> {
        let body = snapshot::read(
            path,
            SNAPSHOT_MAGIC,
            attune_core::session::LAYOUT_VERSION,
            "session",
        )?;
        let entries: Vec<(Session, Timestamp)> =
            postcard::from_bytes(&body).map_err(|e| snapshot::error(path, e.to_string()))?;
        let mut loaded = 0;
        for (session, expires_at) in entries {
            if expires_at <= now {
                continue;
            }
            let mut shard = self.shard(session.id()).lock();
            self.make_room(&mut shard, now);
            shard.map.insert(
                session.id().clone(),
                Box::new(Entry {
                    session,
                    expires_at,
                }),
            );
            loaded += 1;
        }
        Ok(loaded)
    }

    /// Heap bytes held by sessions' own data (for reporting memory per session).
    pub fn session_heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .map
                    .values()
                    .map(|e| e.session.heap_bytes())
                    .sum::<usize>()
            })
            .sum()
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn get(&self, id: &SessionId, now: Timestamp, ttl: Duration) -> Result<Option<Session>> {
        let mut shard = self.shard(id).lock();
        Ok(touch(&mut shard.map, &self.expirations, id, now, ttl).map(|e| e.session.clone()))
    }

    async fn read(
        &self,
        id: &SessionId,
        now: Timestamp,
        ttl: Duration,
        read: Inspect<'_>,
    ) -> Result<bool> {
        let mut shard = self.shard(id).lock();
        match touch(&mut shard.map, &self.expirations, id, now, ttl) {
            Some(e) => {
                read(&e.session);
                Ok(true)
            }
            None => Ok(false),
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
        let mut guard = self.shard(id).lock();
        let shard = &mut *guard;
        let idx = match shard.map.get_index_of(id.as_str()) {
            Some(idx) if shard.map[idx].expires_at > now => idx,
            found => {
                if let Some(idx) = found {
                    shard.map.swap_remove_index(idx);
                    self.expirations.fetch_add(1, Ordering::Relaxed);
                }
                self.make_room(shard, now);
                let entry = Box::new(Entry {
                    session: Session::new(id.clone(), now),
                    expires_at: now,
                });
                shard.map.insert_full(id.clone(), entry).0
            }
        };
        let entry = &mut shard.map[idx];
        mutate(&mut entry.session);
        entry.expires_at = expiry(now, ttl);
        inspect(&entry.session);
        Ok(())
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        Ok(self.shard(id).lock().map.swap_remove(id.as_str()).is_some())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn purge_expired(&self, now: Timestamp) -> usize {
        let mut purged = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let before = shard.map.len();
            shard.map.retain(|_, e| e.expires_at > now);
            purged += before - shard.map.len();
        }
        self.expirations.fetch_add(purged as u64, Ordering::Relaxed);
        purged
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            sessions: self.shards.iter().map(|s| s.lock().map.len()).sum(),
            evictions: self.evictions.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            conflicts: 0,
            unreadable: 0,
        }
    }

    async fn close(&self) -> Result<()> {
        if let Some(path) = &self.snapshot {
            let now = Timestamp::from_millis(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            );
            let n = self.save_snapshot(path, now)?;
            tracing::info!(path = %path.display(), sessions = n, "wrote session snapshot");
        }
        Ok(())
    }
}
