//! The embedded profile store: profiles and their interactions in process (sharded, bounded,
//! expiring after the retention), optionally kept in a journal in a directory
//! (`profiles.dir/profiles.journal`).
//!
//! **Why a journal of whole profiles.** Every update appends one frame holding the profile as
//! written (a bounded body: a profile is a session, capped by the rules) and the interactions
//! that update applied; a forget appends a tombstone. At start the frames are replayed, the last
//! one of each user winning, then the file is compacted (one frame per live profile, written to
//! a temporary file, synced and renamed over the journal); again when it has grown past twice
//! its compacted size, and at shutdown. A snapshot written only at shutdown loses every profile
//! in a crash; a journal of *events* would need the catalog (and the rules) of the day to be
//! replayed, and stated preferences are not events. Whole profiles replay alone, and a profile
//! and its interactions travel in one frame, so they can never disagree.
//!
//! Each frame is written with one `write` call before the update is visible (no `fsync` per
//! update: a crash of the process loses nothing; a power cut may lose the last seconds). A frame
//! carries its length and a checksum, so a torn last frame is dropped at start, whole. A write
//! that fails (a full disk) leaves the profile unchanged and the file cut back to its last whole
//! frame, and answers [`Error::Unavailable`] (a 503, safe to retry).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use attune_core::{Session, SessionId, Timestamp, UserId};
use indexmap::IndexMap;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use super::{
    Interaction, MAX_INTERACTIONS_PER_USER, ProfileMutation, ProfileStore, profile_id, too_old,
};
use crate::memory::{Expiring, sampled_victim, touch};
use crate::{Error, Inspect, Result, StoreStats, expiry, l1, snapshot};

/// The journal's first bytes.
const MAGIC: &[u8; 8] = b"ATPROFJ1";
/// The journal's name in its directory.
pub const JOURNAL: &str = "profiles.journal";
/// A journal is compacted once it is past twice its compacted size and at least this big.
const COMPACT_AFTER: u64 = 4 << 20;

/// Settings of the embedded profile store.
#[derive(Debug, Clone)]
pub struct MemoryProfileConfig {
    /// Most profiles held; past it, the least recently used are evicted (and forgotten).
    pub max_profiles: usize,
    /// Number of independently locked shards.
    pub shards: usize,
    /// The directory of the journal; `None` keeps nothing on disk.
    pub dir: Option<PathBuf>,
}

impl Default for MemoryProfileConfig {
    fn default() -> Self {
        MemoryProfileConfig {
            max_profiles: 1_000_000,
            shards: 64,
            dir: None,
        }
    }
}

struct Entry {
    profile: Session,
    expires_at: Timestamp,
    /// In the order applied (oldest first), at most [`MAX_INTERACTIONS_PER_USER`].
    interactions: VecDeque<Interaction>,
}

impl Expiring for Entry {
    fn expires_at_mut(&mut self) -> &mut Timestamp {
        &mut self.expires_at
    }
}

struct Shard {
    map: IndexMap<SessionId, Box<Entry>>,
    rng: SmallRng,
}

/// One journal frame's content.
#[derive(Serialize, Deserialize)]
enum Record {
    /// The profile as written (its stored encoding), and the interactions to append.
    Profile {
        user: String,
        expires_at: i64,
        body: Vec<u8>,
        interactions: Vec<Interaction>,
    },
    /// The user was forgotten (or evicted).
    Forget { user: String },
}

struct Journal {
    path: PathBuf,
    file: File,
    /// The file's length: where the next frame goes.
    len: u64,
    /// Its length after the last compaction.
    compacted: u64,
}

/// See the module docs.
pub struct MemoryProfileStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    journal: Option<Mutex<Journal>>,
    /// `DIR/.lock`, held for the store's life: one process per journal.
    _lock: Option<File>,
    evictions: AtomicU64,
    expirations: AtomicU64,
    unreadable: AtomicU64,
}

/// FNV-1a, 32 bits: enough to tell a torn or damaged frame from a whole one.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn frame(record: &Record, out: &mut Vec<u8>) {
    // Serializing plain data into a Vec cannot fail.
    let body = postcard::to_stdvec(record).unwrap_or_default();
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&checksum(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// The whole frames of a journal's body, in order; how many bytes past them were left out; and
/// whether those bytes hold a whole frame that does not read (damage, not a torn last write).
fn frames(mut rest: &[u8]) -> (Vec<Record>, usize, bool) {
    let mut out = Vec::new();
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let sum = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(body) = rest.get(8..8 + len) else {
            break;
        };
        let record = (checksum(body) == sum)
            .then(|| postcard::from_bytes::<Record>(body).ok())
            .flatten();
        let Some(record) = record else {
            return (out, rest.len(), true);
        };
        out.push(record);
        rest = &rest[8 + len..];
    }
    (out, rest.len(), false)
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    snapshot::error(path, e.to_string())
}

impl MemoryProfileStore {
    /// An empty store with no journal (or the journal of `config.dir`, replayed: see
    /// [`MemoryProfileStore::open`]).
    fn empty(config: &MemoryProfileConfig) -> Self {
        let shards = config.shards.clamp(1, 4096);
        MemoryProfileStore {
            shards: (0..shards)
                .map(|i| {
                    Mutex::new(Shard {
                        map: IndexMap::new(),
                        rng: SmallRng::seed_from_u64(i as u64),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            per_shard: config.max_profiles.div_ceil(shards).max(1),
            journal: None,
            _lock: None,
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
        }
    }

    /// A store without files.
    pub fn new(config: MemoryProfileConfig) -> Self {
        Self::empty(&config)
    }

    /// A store keeping its journal in `config.dir` (created if needed): the journal is replayed
    /// (expired profiles dropped, a torn last frame left out) and compacted. An unreadable
    /// journal is moved aside (`profiles.unreadable`) and the store starts empty.
    pub fn open(config: MemoryProfileConfig, now: Timestamp) -> Result<Self> {
        let mut store = Self::empty(&config);
        let Some(dir) = &config.dir else {
            return Ok(store);
        };
        let path = dir.join(JOURNAL);
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        store._lock = Some(crate::stream::lock_dir(dir, "the profile directory")?);
        if path.exists() {
            match store.replay(&path, now) {
                Ok((profiles, dropped, damaged)) => {
                    tracing::info!(path = %path.display(), profiles, "profiles read from their journal");
                    if damaged {
                        // Not a torn write: keep the whole file for recovery before compaction
                        // rewrites the journal from the frames before the damage.
                        let copy = path.with_extension("damaged");
                        std::fs::copy(&path, &copy).map_err(|e| io_error(&copy, e))?;
                        tracing::error!(path = %path.display(), bytes = dropped, copy = %copy.display(), "the profile journal is damaged: the profiles after the damage are left out; the whole journal is kept beside it");
                    } else if dropped > 0 {
                        tracing::warn!(path = %path.display(), bytes = dropped, "the journal's last frame was torn (a crash while writing); left out");
                    }
                }
                Err(e) => {
                    let aside = snapshot::move_aside(&path, &e)?;
                    tracing::error!(error = %e, moved_to = %aside.display(), "unreadable profile journal; starting empty");
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        store.journal = Some(Mutex::new(Journal {
            path,
            file,
            len: 0,
            compacted: 0,
        }));
        store.compact()?;
        Ok(store)
    }

    /// Applies the journal at `path`; returns the profiles held after it and the bytes of a
    /// torn tail.
    fn replay(&self, path: &Path, now: Timestamp) -> Result<(usize, usize, bool)> {
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| snapshot::error(path, "not an Attune profile journal (bad header)"))?;
        let (records, dropped, damaged) = frames(body);
        for record in records {
            match record {
                Record::Profile {
                    user,
                    expires_at,
                    body,
                    interactions,
                } => {
                    let Ok(id) = SessionId::new(&user) else {
                        continue;
                    };
                    let mut shard = self.shard(&id).lock();
                    let profile = match l1::decode(&body) {
                        Ok(p) => p,
                        Err(reason) => {
                            self.unreadable.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(user = %id, %reason, "unreadable profile in the journal; treating it as absent");
                            shard.map.swap_remove(id.as_str());
                            continue;
                        }
                    };
                    let expires_at = Timestamp::from_millis(expires_at);
                    if !shard.map.contains_key(id.as_str()) {
                        self.make_room(&mut shard, now);
                    }
                    let entry = shard.map.entry(id).or_insert_with(|| {
                        Box::new(Entry {
                            profile: profile.clone(),
                            expires_at,
                            interactions: VecDeque::new(),
                        })
                    });
                    entry.profile = profile;
                    entry.expires_at = expires_at;
                    push_all(&mut entry.interactions, interactions);
                }
                Record::Forget { user } => {
                    self.shard_of(&user).lock().map.swap_remove(user.as_str());
                }
            }
        }
        let mut held = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.map.retain(|_, e| e.expires_at > now);
            held += shard.map.len();
        }
        Ok((held, dropped, damaged))
    }

    /// Rewrites the journal as one frame per live profile (atomically), if there is one.
    fn compact(&self) -> Result<()> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        // Every shard, then the journal: the order updates take them in.
        let shards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        let mut journal = journal.lock();
        let path = journal.path.clone();
        let tmp = path.with_extension("tmp");
        // Frame by frame through a buffer: no copy of the whole journal in memory.
        let write = || -> std::io::Result<(File, u64)> {
            let mut f = std::io::BufWriter::new(File::create(&tmp)?);
            f.write_all(MAGIC)?;
            let mut len = MAGIC.len() as u64;
            let mut buf = Vec::new();
            for shard in &shards {
                for (id, e) in &shard.map {
                    buf.clear();
                    frame(
                        &Record::Profile {
                            user: id.to_string(),
                            expires_at: e.expires_at.as_millis(),
                            body: l1::encode(&e.profile),
                            interactions: e.interactions.iter().cloned().collect(),
                        },
                        &mut buf,
                    );
                    f.write_all(&buf)?;
                    len += buf.len() as u64;
                }
            }
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent()
                && let Ok(d) = File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok((OpenOptions::new().append(true).open(&path)?, len))
        };
        let (file, len) = write().map_err(|e| io_error(&path, e))?;
        journal.file = file;
        journal.len = len;
        journal.compacted = journal.len;
        Ok(())
    }

    /// Appends one frame; on a failure the file is cut back to its last whole frame.
    fn append(&self, record: &Record) -> Result<()> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let mut bytes = Vec::new();
        frame(record, &mut bytes);
        let mut j = journal.lock();
        match j.file.write_all(&bytes) {
            Ok(()) => {
                j.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let len = j.len;
                if let Err(cut) = j.file.set_len(len) {
                    tracing::error!(error = %cut, "the profile journal could not be cut back after a failed write");
                }
                // Like a backend that does not answer: a 503, nothing written, safe to retry.
                Err(Error::Unavailable {
                    backend: "profile journal",
                    source: format!("{}: {e}", j.path.display()).into(),
                })
            }
        }
    }

    fn shard(&self, id: &SessionId) -> &Mutex<Shard> {
        self.shard_of(id.as_str())
    }

    fn shard_of(&self, id: &str) -> &Mutex<Shard> {
        let h = self.hasher.hash_one(id) as usize;
        &self.shards[h % self.shards.len()]
    }

    /// Makes room for one more entry in a full shard: drops an expired entry or the least
    /// recently used of a few sampled ones (and journals that it is gone).
    fn make_room(&self, shard: &mut Shard, now: Timestamp) {
        while shard.map.len() >= self.per_shard {
            let victim = sampled_victim(&shard.map, &mut shard.rng, |e| e.expires_at);
            let expired = shard.map[victim].expires_at <= now;
            if let Some((id, _)) = shard.map.swap_remove_index(victim)
                && let Err(e) = self.append(&Record::Forget {
                    user: id.to_string(),
                })
            {
                tracing::error!(error = %e, "an evicted profile was not journaled as gone");
            }
            if expired {
                self.expirations.fetch_add(1, Ordering::Relaxed);
            } else {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The journal's length in bytes (0 without one).
    pub fn journal_len(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.lock().len)
    }
}

/// Appends `new` to `list`, keeping the newest [`MAX_INTERACTIONS_PER_USER`].
fn push_all(list: &mut VecDeque<Interaction>, new: Vec<Interaction>) {
    for i in new {
        if list.len() == MAX_INTERACTIONS_PER_USER {
            list.pop_front();
        }
        list.push_back(i);
    }
}

/// The newest `limit` of `list` (kept in the order applied), newest first by time.
pub(crate) fn newest(
    list: impl DoubleEndedIterator<Item = Interaction>,
    limit: usize,
) -> Vec<Interaction> {
    let mut all: Vec<Interaction> = list.rev().collect();
    // Stable: among equal times, the last applied comes first.
    all.sort_by_key(|i| std::cmp::Reverse(i.at));
    all.truncate(limit);
    all
}

#[async_trait]
impl ProfileStore for MemoryProfileStore {
    async fn get(&self, user: &UserId, now: Timestamp, ttl: Duration) -> Result<Option<Session>> {
        let id = profile_id(user)?;
        let mut shard = self.shard(&id).lock();
        Ok(touch(&mut shard.map, &self.expirations, &id, now, ttl).map(|e| e.profile.clone()))
    }

    async fn read(
        &self,
        user: &UserId,
        now: Timestamp,
        ttl: Duration,
        read: Inspect<'_>,
    ) -> Result<bool> {
        let id = profile_id(user)?;
        let mut shard = self.shard(&id).lock();
        match touch(&mut shard.map, &self.expirations, &id, now, ttl) {
            Some(e) => {
                read(&e.profile);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn update(
        &self,
        user: &UserId,
        now: Timestamp,
        ttl: Duration,
        mutate: ProfileMutation<'_>,
        inspect: Inspect<'_>,
    ) -> Result<()> {
        let id = profile_id(user)?;
        let mut guard = self.shard(&id).lock();
        let shard = &mut *guard;
        let live = match shard.map.get_index_of(id.as_str()) {
            Some(idx) if shard.map[idx].expires_at > now => Some(idx),
            Some(idx) => {
                shard.map.swap_remove_index(idx);
                self.expirations.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => None,
        };
        let expires_at = expiry(now, ttl);
        let mut added = Vec::new();
        match live {
            // Without a journal nothing can fail: change the profile in place.
            Some(idx) if self.journal.is_none() => {
                let entry = &mut shard.map[idx];
                mutate(&mut entry.profile, &mut added);
                entry.expires_at = expires_at;
                push_all(&mut entry.interactions, added);
                inspect(&entry.profile);
            }
            _ => {
                // The new state is journaled before it replaces the old one.
                let mut profile = match live {
                    Some(idx) => shard.map[idx].profile.clone(),
                    None => Session::new(id.clone(), now),
                };
                mutate(&mut profile, &mut added);
                let record = Record::Profile {
                    user: id.to_string(),
                    expires_at: expires_at.as_millis(),
                    body: if self.journal.is_some() {
                        l1::encode(&profile)
                    } else {
                        Vec::new()
                    },
                    interactions: added,
                };
                self.append(&record)?;
                let Record::Profile { interactions, .. } = record else {
                    return Ok(());
                };
                let idx = match live {
                    Some(idx) => idx,
                    None => {
                        self.make_room(shard, now);
                        shard
                            .map
                            .insert_full(
                                id.clone(),
                                Box::new(Entry {
                                    profile: Session::new(id.clone(), now),
                                    expires_at,
                                    interactions: VecDeque::new(),
                                }),
                            )
                            .0
                    }
                };
                let entry = &mut shard.map[idx];
                entry.profile = profile;
                entry.expires_at = expires_at;
                push_all(&mut entry.interactions, interactions);
                inspect(&entry.profile);
            }
        }
        drop(guard);
        self.maybe_compact();
        Ok(())
    }

    async fn interactions(
        &self,
        user: &UserId,
        now: Timestamp,
        ttl: Duration,
        limit: usize,
    ) -> Result<Option<Vec<Interaction>>> {
        let id = profile_id(user)?;
        let mut shard = self.shard(&id).lock();
        Ok(
            touch(&mut shard.map, &self.expirations, &id, now, ttl).map(|e| {
                newest(
                    e.interactions
                        .iter()
                        .filter(|i| !too_old(i.at, now, ttl))
                        .cloned(),
                    limit,
                )
            }),
        )
    }

    async fn forget(&self, user: &UserId) -> Result<bool> {
        let id = profile_id(user)?;
        let mut shard = self.shard(&id).lock();
        if !shard.map.contains_key(id.as_str()) {
            return Ok(false);
        }
        self.append(&Record::Forget {
            user: id.to_string(),
        })?;
        Ok(shard.map.swap_remove(id.as_str()).is_some())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn purge_expired(&self, now: Timestamp, ttl: Duration) -> usize {
        let mut purged = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let before = shard.map.len();
            shard.map.retain(|_, e| e.expires_at > now);
            purged += before - shard.map.len();
            for e in shard.map.values_mut() {
                e.interactions.retain(|i| !too_old(i.at, now, ttl));
            }
        }
        self.expirations.fetch_add(purged as u64, Ordering::Relaxed);
        self.maybe_compact();
        purged
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            sessions: self.shards.iter().map(|s| s.lock().map.len()).sum(),
            evictions: self.evictions.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            conflicts: 0,
            unreadable: self.unreadable.load(Ordering::Relaxed),
        }
    }

    async fn close(&self) -> Result<()> {
        if self.journal.is_some() {
            self.compact()?;
            tracing::info!(bytes = self.journal_len(), "profile journal compacted");
        }
        Ok(())
    }
}

impl MemoryProfileStore {
    /// Compacts the journal once it has grown past twice its compacted size (and 4 MiB).
    fn maybe_compact(&self) {
        let Some(journal) = &self.journal else {
            return;
        };
        let due = {
            let j = journal.lock();
            j.len > COMPACT_AFTER.max(j.compacted.saturating_mul(2))
        };
        if due && let Err(e) = self.compact() {
            tracing::error!(error = %e, "profile journal not compacted");
        }
    }
}
