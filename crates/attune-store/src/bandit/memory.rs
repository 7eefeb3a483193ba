//! The embedded bandit store: arms in process, sharded by (surface, item), at most `max_arms`
//! of them (approximate LRU on the last update: the stalest of a few sampled arms goes), with an
//! optional snapshot file written atomically at shutdown and loaded at start.
//!
//! A record or a read locks every shard its items fall in, in ascending order, and holds them
//! all while it works: a feedback is applied whole under the locks, and a read sees it whole or
//! not at all. Locks are held for microseconds (no I/O, no await under them).

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use attune_core::ItemId;
use attune_core::bandit::{Arm, Feedback, Surface};
use indexmap::IndexMap;
use parking_lot::{Mutex, MutexGuard};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::BanditStore;
use crate::memory::sampled_victim;
use crate::{Result, snapshot};

/// Snapshot file header.
const SNAPSHOT_MAGIC: &[u8; 9] = b"ATBANDIT:";
/// Layout version of the snapshot body.
const SNAPSHOT_VERSION: u8 = 1;

/// Settings of the embedded bandit store.
#[derive(Debug, Clone)]
pub struct MemoryBanditConfig {
    /// Most arms held, over all surfaces; past it, the least recently updated are evicted (an
    /// evicted arm reads as no shows again).
    pub max_arms: usize,
    /// Number of independently locked shards (at most `max_arms`).
    pub shards: usize,
    /// Where to write the snapshot at shutdown and read it at start; `None` keeps nothing on disk.
    pub snapshot: Option<PathBuf>,
}

impl Default for MemoryBanditConfig {
    fn default() -> Self {
        MemoryBanditConfig {
            max_arms: 1_000_000,
            shards: 64,
            snapshot: None,
        }
    }
}

#[derive(Clone, Copy)]
struct Entry {
    arm: Arm,
    /// The store's update counter when the arm was last recorded.
    updated: u64,
}

struct Shard {
    map: IndexMap<(Surface, ItemId), Entry>,
    rng: SmallRng,
}

/// One arm as the snapshot holds it.
type Saved = (Surface, ItemId, Arm, u64);

/// See the module docs.
pub struct MemoryBanditStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    snapshot: Option<PathBuf>,
    /// Counts records: orders arms by their last update without reading a clock.
    updates: AtomicU64,
    evictions: AtomicU64,
}

impl MemoryBanditStore {
    /// An empty store.
    pub fn new(config: MemoryBanditConfig) -> Self {
        let max_arms = config.max_arms.max(1);
        let shards = config.shards.clamp(1, 4096).min(max_arms);
        MemoryBanditStore {
            shards: (0..shards)
                .map(|i| {
                    Mutex::new(Shard {
                        map: IndexMap::new(),
                        rng: SmallRng::seed_from_u64(i as u64),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            // Rounded down, so that the shards together never hold more than `max_arms`.
            per_shard: max_arms / shards,
            snapshot: config.snapshot,
            updates: AtomicU64::new(1),
            evictions: AtomicU64::new(0),
        }
    }

    /// A store loaded from its snapshot file, when one is configured and exists. An unreadable
    /// file (corrupt, or of another layout) is moved aside to `<file>.unreadable` and the store
    /// starts empty: the bandit relearns in minutes, and refusing to start would keep the service
    /// down for it.
    pub fn open(config: MemoryBanditConfig) -> Result<Self> {
        let store = Self::new(config);
        if let Some(path) = &store.snapshot
            && path.exists()
        {
            match store.load_snapshot(path) {
                Ok(loaded) => {
                    tracing::info!(path = %path.display(), arms = loaded, "loaded bandit snapshot");
                }
                Err(e) => {
                    let aside = snapshot::move_aside(path, &e)?;
                    tracing::error!(error = %e, moved_to = %aside.display(), "unreadable bandit snapshot; starting empty");
                }
            }
        }
        Ok(store)
    }

    /// Arms held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// Whether no arm is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Arms evicted so far to stay within `max_arms`.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn shard_of(&self, surface: &Surface, item: &ItemId) -> usize {
        let h = self.hasher.hash_one((surface.as_str(), item.as_str())) as usize;
        h % self.shards.len()
    }

    /// Locks the shards of `items` (each once, in ascending order, so two callers never wait on
    /// each other in a cycle). Returns, per item, the position of its shard's guard.
    fn lock_for(
        &self,
        surface: &Surface,
        items: &[ItemId],
    ) -> (Vec<usize>, Vec<MutexGuard<'_, Shard>>) {
        let of: Vec<usize> = items.iter().map(|i| self.shard_of(surface, i)).collect();
        let mut order = of.clone();
        order.sort_unstable();
        order.dedup();
        let guards = order.iter().map(|&s| self.shards[s].lock()).collect();
        let positions = of
            .iter()
            // `order` holds every shard of `of`: the search always finds it.
            .map(|s| order.binary_search(s).unwrap_or_else(|at| at))
            .collect();
        (positions, guards)
    }

    /// Makes room for one more arm in a full shard: drops the least recently updated of a few
    /// sampled arms.
    fn make_room(&self, shard: &mut Shard) {
        while shard.map.len() >= self.per_shard {
            let victim = sampled_victim(&shard.map, &mut shard.rng, |a| a.updated);
            shard.map.swap_remove_index(victim);
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes every arm to `path` atomically (a temporary file, then a rename); returns how many.
    pub fn save_snapshot(&self, path: &Path) -> Result<usize> {
        let mut arms: Vec<Saved> = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            arms.extend(
                shard
                    .map
                    .iter()
                    .map(|((s, i), e)| (s.clone(), i.clone(), e.arm, e.updated)),
            );
        }
        let body = postcard::to_stdvec(&arms).map_err(|e| snapshot::error(path, e.to_string()))?;
        snapshot::write(path, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, &body)?;
        Ok(arms.len())
    }

    /// Loads arms from a snapshot written by [`MemoryBanditStore::save_snapshot`], oldest first
    /// (so that, if `max_arms` shrank, the stalest are the ones evicted); returns how many were
    /// read.
    pub fn load_snapshot(&self, path: &Path) -> Result<usize> {
        let body = snapshot::read(path, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, "bandit")?;
        let mut arms: Vec<Saved> =
            postcard::from_bytes(&body).map_err(|e| snapshot::error(path, e.to_string()))?;
        arms.sort_by_key(|a| a.3);
        let loaded = arms.len();
        let mut last = 0;
        for (surface, item, arm, updated) in arms {
            let mut shard = self.shards[self.shard_of(&surface, &item)].lock();
            self.make_room(&mut shard);
            let arm = arm.sanitized();
            shard.map.insert((surface, item), Entry { arm, updated });
            last = last.max(updated);
        }
        self.updates.fetch_max(last + 1, Ordering::Relaxed);
        Ok(loaded)
    }
}

#[async_trait]
impl BanditStore for MemoryBanditStore {
    async fn arms(&self, surface: &Surface, items: &[ItemId]) -> Result<Vec<Arm>> {
        let (positions, guards) = self.lock_for(surface, items);
        Ok(items
            .iter()
            .zip(positions)
            .map(|(item, p)| {
                guards[p]
                    .map
                    .get(&(surface.clone(), item.clone()))
                    .map_or_else(Arm::default, |e| e.arm)
            })
            .collect())
    }

    async fn record(&self, feedback: &Feedback) -> Result<()> {
        let surface = feedback.surface();
        let (positions, mut guards) = self.lock_for(surface, feedback.shown());
        let updated = self.updates.fetch_add(1, Ordering::Relaxed);
        for (item, p) in feedback.shown().iter().zip(positions) {
            let shard = &mut *guards[p];
            let key = (surface.clone(), item.clone());
            let idx = match shard.map.get_index_of(&key) {
                Some(idx) => idx,
                None => {
                    self.make_room(shard);
                    let fresh = Entry {
                        arm: Arm::default(),
                        updated,
                    };
                    shard.map.insert_full(key, fresh).0
                }
            };
            let entry = &mut shard.map[idx];
            entry.arm.shows += 1.0;
            if feedback.clicked().contains(item) {
                entry.arm.clicks += 1.0;
            }
            entry.updated = updated;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        if let Some(path) = &self.snapshot {
            let n = self.save_snapshot(path)?;
            tracing::info!(path = %path.display(), arms = n, "wrote bandit snapshot");
        }
        Ok(())
    }
}
