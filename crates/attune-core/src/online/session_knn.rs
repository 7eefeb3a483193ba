//! [`SessionKnn`]: session-based nearest neighbours, VMIS-kNN (Kersbergen, Sprangers and
//! Schelter, "Serenade - Low-Latency Session-Based Recommendation in e-Commerce at Scale",
//! SIGMOD 2022), the indexed variant of V-SKNN (Ludewig and Jannach).
//!
//! # State
//! - session → its distinct items, oldest first (at most [`SessionKnnConfig::max_session_len`];
//!   a longer session forgets its oldest item), the time of its latest event, and its rank in
//!   the order sessions started (a counter: later sessions rank higher);
//! - item → the [`SessionKnnConfig::sample_size`] (`m`) most recent sessions that hold it
//!   ("recent": by the order they started), sorted by that order, and how many tracked sessions
//!   hold it (its document frequency, for the idf).
//!
//! VMIS-kNN ranks historical sessions by their latest event; here "recent" is the order sessions
//! started, which is the same for sessions that do not overlap, is fixed for the session's life
//! (so index lists stay sorted while sessions grow, with no timestamps to look up: sampling costs
//! no cache miss per session), and is unique (no ties). Sessions loaded in bulk rank in the order
//! they are loaded: load history oldest first.
//!
//! Sessions are named by a `u64` the caller computes; [`session_key`] hashes a [`SessionId`] to
//! one with a fixed, versioned function (FNV-1a), so keys in a snapshot stay valid across
//! builds. Two sessions whose ids collide (chance about `n² / 2^65`) share their history.
//!
//! # Recommending for an evolving session `s` (its items oldest first)
//! 1. Only the last `L ≤ max_session_len` items count. The item at position `p` (1 = oldest)
//!    weighs `π = p / L`, so the latest item weighs 1 (linear decay, as VMIS-kNN); a repeated item
//!    takes the weight of its latest occurrence.
//! 2. **Sample**: walking `s`'s items from the latest back, and each item's sessions from the
//!    most recent back, keep the `m` most recent sessions that share an item with `s`, and their
//!    similarity `sim(s, h) = Σ π(i)` over the items they share. The caller's own session
//!    (`self_session`) is skipped: a session is never its own neighbour. As in Serenade, a
//!    min-heap holds the sample, and an item's walk stops at the first session older than the
//!    heap's oldest: the lists are sorted, so no later one could get in.
//! 3. **Neighbours**: the `k` = [`SessionKnnConfig::neighbors`] most similar of those (ties: the
//!    more recent).
//! 4. **Score**: every item `j` of a neighbour `h` gets `sim(s, h) · λ(h)`, summed over the
//!    neighbours, times `1 + idf_weight · ln(N / df(j))` (`N`: sessions tracked). `λ(h) =
//!    max(0, 1 − 0.1 · d)` where `d` is how far back in `s` (1 = the latest item) the latest item
//!    `h` shares with `s` lies: neighbours that match the visitor's latest clicks count most, and
//!    one that shares only items ten or more clicks back counts nothing (VMIS-kNN's linear
//!    weighting, whose negative values past ten are clamped to 0 here).
//!
//! # Memory
//! At most [`SessionKnnConfig::max_sessions`] sessions; past it each new session drops the one
//! that started first (whose entries are at the front of its items' index lists: a step per
//! item it holds, no pause). A session costs a slot (key, rank, item list header: 40 bytes),
//! its latest time (8 bytes), its place in the first-in-first-out queue (8 bytes), a hash-map
//! entry (about 20 bytes), 4 bytes per item in its list and 8 bytes per index entry naming it
//! (slot and rank; at most one per item), so **at most about `80 + 12 · max_session_len` bytes
//! per session** (680 bytes at the default 50; a 20-item session costs about 320). An item
//! lives while a tracked session holds it, so there are at most `max_sessions · max_session_len`
//! of them; each costs a slot (id, frequency, index list header: 48 bytes), a hash-map entry
//! (about 20 bytes) and its index list, counted above with the sessions (at most `m` entries),
//! so **about 70 bytes per item** plus the id's allocation when nothing else holds it.

use std::collections::{BinaryHeap, VecDeque};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{Accept, Canonical, SnapshotId, clean, push_capped, share_index, top_accepted};
use crate::error::{Error, Result};
use crate::id::{ItemId, SessionId};
use crate::time::Timestamp;

/// A stable 64-bit key for a session id: FNV-1a over its bytes. Fixed forever (snapshots store
/// these keys), unlike the standard library's hasher.
pub fn session_key(id: &SessionId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Settings of [`SessionKnn`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionKnnConfig {
    /// `m`: the most recent sessions kept per item in the index, and sampled per query (`>= 1`).
    pub sample_size: usize,
    /// `k`: the neighbours that score the items (`>= 1`).
    pub neighbors: usize,
    /// The most sessions tracked (`>= 16`).
    pub max_sessions: usize,
    /// The most distinct items kept per session, and read from a query's sequence (`>= 1`).
    pub max_session_len: usize,
    /// Weight of the idf factor `1 + idf_weight · ln(N / df)` (finite, `>= 0`; 0 turns it off).
    pub idf_weight: f32,
}

impl Default for SessionKnnConfig {
    fn default() -> Self {
        SessionKnnConfig {
            sample_size: 500,
            neighbors: 100,
            max_sessions: 500_000,
            max_session_len: 50,
            idf_weight: 1.0,
        }
    }
}

impl SessionKnnConfig {
    /// Checks the ranges given on each field.
    pub fn validate(&self) -> Result<()> {
        for (field, v, min) in [
            ("session_knn.sample_size", self.sample_size, 1),
            ("session_knn.neighbors", self.neighbors, 1),
            ("session_knn.max_sessions", self.max_sessions, 16),
            ("session_knn.max_session_len", self.max_session_len, 1),
        ] {
            if v < min || v > u32::MAX as usize / 2 {
                return Err(Error::invalid(field, format!("must be at least {min}")));
            }
        }
        if !(self.idf_weight.is_finite() && self.idf_weight >= 0.0) {
            return Err(Error::invalid(
                "session_knn.idf_weight",
                "must be a finite number >= 0",
            ));
        }
        Ok(())
    }
}

/// A tracked session (slot).
#[derive(Debug, Clone, Default)]
struct Session {
    key: u64,
    /// Rank in the order sessions started (unique among tracked sessions).
    born: u32,
    /// Distinct item slots, oldest first.
    items: Vec<u32>,
}

/// An item (slot).
#[derive(Debug, Clone, Default)]
struct Item {
    /// `None` while the slot is free.
    id: Option<ItemId>,
    /// Tracked sessions holding the item.
    df: u32,
    /// The `m` most recent sessions holding the item, as (slot, rank), sorted by rank (oldest
    /// first). Invariant: a session listed here holds the item.
    recent: VecDeque<(u32, u32)>,
}

/// VMIS-kNN over the sessions seen so far. See the [module docs](self).
///
/// ```
/// use attune_core::online::{SessionKnn, SessionKnnConfig};
/// use attune_core::{ItemId, Timestamp};
///
/// let mut knn = SessionKnn::new(SessionKnnConfig::default()).unwrap();
/// let t = Timestamp::from_millis(1_700_000_000_000);
/// let [tent, mat, stove, lamp] =
///     ["tent", "mat", "stove", "lamp"].map(|s| ItemId::new(s).unwrap());
/// knn.observe_session(1, &[tent.clone(), mat.clone(), stove.clone()], t);
/// knn.observe_session(2, &[lamp.clone(), stove.clone()], t);
/// // The visitor (session 3) looked at the tent: session 1 is the neighbour.
/// knn.observe(3, &tent, t);
/// let seq = [tent.clone()];
/// let got = knn.recommend(&seq, 5, &|id| !seq.contains(id), Some(3));
/// let ids: Vec<_> = got.iter().map(|(id, _)| id.clone()).collect();
/// assert_eq!(ids, [mat, stove]);
/// ```
#[derive(Debug, Clone)]
pub struct SessionKnn {
    config: SessionKnnConfig,
    sessions: FxHashMap<u64, u32>,
    session_slots: Vec<Session>,
    /// Milliseconds since the epoch of each session slot's latest event: apart from the slots, so
    /// that sampling, which reads it for thousands of sessions per query, finds it in cache.
    session_at: Vec<i64>,
    free_sessions: Vec<u32>,
    /// The rank the next new session gets.
    next_born: u32,
    /// (Rank, slot) of the tracked sessions in the order they started, the first to be dropped
    /// in front; may also hold sessions dropped by [`SessionKnn::remove_session`], skipped.
    by_age: VecDeque<(u32, u32)>,
    items: FxHashMap<ItemId, u32>,
    item_slots: Vec<Item>,
    free_items: Vec<u32>,
}

impl SessionKnn {
    /// An empty index.
    pub fn new(config: SessionKnnConfig) -> Result<Self> {
        config.validate()?;
        Ok(SessionKnn {
            config,
            sessions: FxHashMap::default(),
            session_slots: Vec::new(),
            session_at: Vec::new(),
            free_sessions: Vec::new(),
            next_born: 0,
            by_age: VecDeque::new(),
            items: FxHashMap::default(),
            item_slots: Vec::new(),
            free_items: Vec::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &SessionKnnConfig {
        &self.config
    }

    /// Sessions tracked.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Distinct items held by tracked sessions.
    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    /// Keeps, for each item id held, the equal copy `canonical` gives (the catalog's, say), so
    /// that lookups by that copy compare pointers, not strings, and the strings are held once.
    /// Changes no answer.
    pub fn share_ids(&mut self, canonical: Canonical<'_>) {
        share_index(
            &mut self.items,
            &mut self.item_slots,
            |i| &mut i.id,
            canonical,
        );
    }

    /// The items `session` holds, oldest first (empty if not tracked).
    pub fn session_items(&self, session: u64) -> Vec<ItemId> {
        self.sessions.get(&session).map_or_else(Vec::new, |&s| {
            self.session_slots[s as usize]
                .items
                .iter()
                .filter_map(|&i| self.item_slots[i as usize].id.clone())
                .collect()
        })
    }

    /// One event of `session` on `item` at `at`: adds the item to the session (if new to it) and
    /// the session to the item's index. Tracks a new session (the most recent of all), dropping
    /// the one that started first when full.
    pub fn observe(&mut self, session: u64, item: &ItemId, at: Timestamp) {
        let s = match self.sessions.get(&session) {
            Some(&s) => s,
            None => self.add_session(session),
        };
        let i = self.item_slot(item);
        let max_len = self.config.max_session_len;
        let last = &mut self.session_at[s as usize];
        *last = (*last).max(at.as_millis());
        let sess = &mut self.session_slots[s as usize];
        if sess.items.contains(&i) {
            return;
        }
        push_capped(&mut sess.items, i, max_len + 1);
        if sess.items.len() > max_len {
            let oldest = sess.items.remove(0);
            let born = sess.born;
            self.unlink(born, oldest);
        }
        let born = self.session_slots[s as usize].born;
        let m = self.config.sample_size;
        let item = &mut self.item_slots[i as usize];
        item.df += 1;
        if item.recent.len() == item.recent.capacity() && item.recent.len() < m {
            let grow = item.recent.len().max(4).min(m - item.recent.len());
            item.recent.reserve_exact(grow);
        }
        if item.recent.len() >= m {
            // Full: the oldest makes way, unless the newcomer is older still.
            if item.recent.front().is_some_and(|&(_, b)| b > born) {
                return;
            }
            item.recent.pop_front();
        }
        // Usually the newest session: at the back.
        if item.recent.back().is_none_or(|&(_, b)| b < born) {
            item.recent.push_back((s, born));
        } else {
            let at = item.recent.partition_point(|&(_, b)| b < born);
            item.recent.insert(at, (s, born));
        }
    }

    /// Bulk load: one historical session (such as a training session of `attune train`), its
    /// items in order, all at `at`. Load history oldest session first: the index keeps, per
    /// item, the sessions observed last.
    pub fn observe_session(&mut self, session: u64, items: &[ItemId], at: Timestamp) {
        for item in items {
            self.observe(session, item, at);
        }
    }

    /// Forgets `session` (if tracked).
    pub fn remove_session(&mut self, session: u64) {
        if let Some(&s) = self.sessions.get(&session) {
            self.drop_session(s);
            // Its entry in `by_age` stays until it reaches the front: keep such leftovers few.
            if self.by_age.len() > 2 * self.sessions.len() + 64 {
                self.rebuild_by_age();
            }
        }
    }

    /// The `n` best accepted items for an evolving session whose items are `sequence`, oldest
    /// first, best first, ties by id; `self_session` is that session's own key if it is tracked
    /// (it is then never its own neighbour). Only items of neighbour sessions score, so the
    /// result may be shorter than `n`. See the [module docs](self) for the scores.
    pub fn recommend(
        &self,
        sequence: &[ItemId],
        n: usize,
        accept: Accept<'_>,
        self_session: Option<u64>,
    ) -> Vec<(ItemId, f32)> {
        let seq = &sequence[sequence.len().saturating_sub(self.config.max_session_len)..];
        let len = seq.len() as f32;
        // Distinct known items, latest first: (slot, weight π, distance back d).
        let mut query: Vec<(u32, f32, u32)> = Vec::with_capacity(seq.len());
        for (back, item) in seq.iter().rev().enumerate() {
            let Some(&i) = self.items.get(item) else {
                continue;
            };
            if query.iter().all(|q| q.0 != i) {
                let pos = seq.len() - back;
                query.push((i, pos as f32 / len, back as u32 + 1));
            }
        }
        if query.is_empty() || n == 0 {
            return Vec::new();
        }
        let own = self_session.and_then(|k| self.sessions.get(&k).copied());
        let neighbors = self.neighbors(&query, own);

        // Distance back of each query item, to find the latest item a neighbour shares.
        let back: FxHashMap<u32, u32> = query.iter().map(|&(i, _, d)| (i, d)).collect();
        // Each neighbour's items are two dependent reads away (its slot, then its list), cache
        // misses both: read every neighbour's slot first, then the head of every list, each
        // pass a run of independent loads the processor overlaps, so that the loop below finds
        // them in cache instead of waiting on two misses per neighbour.
        let lists: Vec<&[u32]> = neighbors
            .iter()
            .map(|&(s, _, _)| self.session_slots[s as usize].items.as_slice())
            .collect();
        std::hint::black_box(
            lists
                .iter()
                .fold(0u32, |acc, l| acc ^ l.first().copied().unwrap_or(0)),
        );
        // Room for every item of every neighbour: growing it took a few percent of a request
        // (the candidates are sorted by score and id below, so the map's order is no answer's).
        let mut scores: FxHashMap<u32, f32> = FxHashMap::with_capacity_and_hasher(
            lists.iter().map(|l| l.len()).sum(),
            Default::default(),
        );
        for (&(_, sim, _), &items) in neighbors.iter().zip(&lists) {
            let Some(d) = items.iter().filter_map(|i| back.get(i)).min() else {
                continue;
            };
            let lambda = (1.0 - 0.1 * *d as f32).max(0.0);
            let w = sim * lambda;
            if w <= 0.0 {
                continue;
            }
            for &i in items {
                *scores.entry(i).or_insert(0.0) += w;
            }
        }
        let total = self.sessions.len().max(1) as f64;
        let idf_weight = f64::from(self.config.idf_weight);
        let candidates = scores
            .into_iter()
            .filter_map(|(i, score)| {
                let item = &self.item_slots[i as usize];
                let id = item.id.as_ref()?;
                let idf = (total / f64::from(item.df.max(1))).ln().max(0.0);
                let s = clean(f64::from(score) * (1.0 + idf_weight * idf));
                (s > 0.0).then_some((id, s))
            })
            .collect();
        top_accepted(candidates, n, accept)
    }

    /// Steps 2 and 3 of the [module docs](self): the `k` nearest of the `m` most recent sessions
    /// sharing an item with `query`, with their similarities, in a fixed order (most similar
    /// first, then the most recent) so that the scores sum the same way every time.
    fn neighbors(&self, query: &[(u32, f32, u32)], own: Option<u32>) -> Vec<(u32, f32, u32)> {
        use std::cmp::Reverse;
        let m = self.config.sample_size;
        // Slot → (similarity, rank).
        let mut sim: FxHashMap<u32, (f32, u32)> = FxHashMap::default();
        sim.reserve(m.min(4096));
        // Min-heap of the sample by rank: the root is the first to go.
        let mut oldest: BinaryHeap<Reverse<(u32, u32)>> = BinaryHeap::with_capacity(m.min(4096));
        for &(i, w, _) in query {
            for &(s, born) in self.item_slots[i as usize].recent.iter().rev() {
                if Some(s) == own {
                    continue;
                }
                if let Some(v) = sim.get_mut(&s) {
                    v.0 += w;
                    continue;
                }
                if sim.len() < m {
                    sim.insert(s, (w, born));
                    oldest.push(Reverse((born, s)));
                    continue;
                }
                let Some(mut root) = oldest.peek_mut() else {
                    break;
                };
                let Reverse((root_born, root_s)) = *root;
                if born < root_born {
                    // Every session further down this list is older still, and none of them
                    // is in the sample (all of which are at least as recent as the root).
                    break;
                }
                sim.remove(&root_s);
                sim.insert(s, (w, born));
                *root = Reverse((born, s));
            }
        }
        let mut near: Vec<(u32, f32, u32)> = sim.into_iter().map(|(s, (w, b))| (s, w, b)).collect();
        let order = |a: &(u32, f32, u32), b: &(u32, f32, u32)| {
            b.1.total_cmp(&a.1).then_with(|| b.2.cmp(&a.2))
        };
        let k = self.config.neighbors;
        if near.len() > k {
            near.select_nth_unstable_by(k - 1, order);
            near.truncate(k);
        }
        near.sort_unstable_by(order);
        near
    }

    /// Whether an entry of `by_age` names a tracked session (not one dropped since).
    fn is_live(&self, s: u32, born: u32) -> bool {
        let sess = &self.session_slots[s as usize];
        sess.born == born && self.sessions.get(&sess.key) == Some(&s)
    }

    /// `by_age` anew from the tracked sessions.
    fn rebuild_by_age(&mut self) {
        let mut live: Vec<(u32, u32)> = self
            .sessions
            .values()
            .map(|&s| (self.session_slots[s as usize].born, s))
            .collect();
        live.sort_unstable();
        self.by_age = live.into();
    }

    /// A slot for a new session, dropping the one that started first when full.
    fn add_session(&mut self, key: u64) -> u32 {
        while self.sessions.len() >= self.config.max_sessions {
            let Some((born, s)) = self.by_age.pop_front() else {
                break;
            };
            if self.is_live(s, born) {
                self.drop_session(s);
            }
        }
        if self.next_born == u32::MAX {
            self.renumber();
        }
        let slot = Session {
            key,
            born: self.next_born,
            items: Vec::new(),
        };
        self.next_born += 1;
        let s = match self.free_sessions.pop() {
            Some(s) => {
                self.session_slots[s as usize] = slot;
                self.session_at[s as usize] = i64::MIN;
                s
            }
            None => {
                self.session_slots.push(slot);
                self.session_at.push(i64::MIN);
                (self.session_slots.len() - 1) as u32
            }
        };
        self.by_age
            .push_back((self.session_slots[s as usize].born, s));
        self.sessions.insert(key, s);
        s
    }

    /// Ranks the tracked sessions `0..n` again, in the same order (once every 2^32 sessions).
    fn renumber(&mut self) {
        let mut live: Vec<(u32, u32)> = self
            .sessions
            .values()
            .map(|&s| (self.session_slots[s as usize].born, s))
            .collect();
        live.sort_unstable();
        for (rank, &(_, s)) in live.iter().enumerate() {
            self.session_slots[s as usize].born = rank as u32;
        }
        for item in &mut self.item_slots {
            for entry in &mut item.recent {
                entry.1 = self.session_slots[entry.0 as usize].born;
            }
        }
        self.next_born = live.len() as u32;
        self.rebuild_by_age();
    }

    fn drop_session(&mut self, s: u32) {
        let sess = std::mem::take(&mut self.session_slots[s as usize]);
        self.sessions.remove(&sess.key);
        for i in sess.items {
            self.unlink(sess.born, i);
        }
        self.free_sessions.push(s);
    }

    /// The slot of `item`, added (with no session yet) if new.
    fn item_slot(&mut self, item: &ItemId) -> u32 {
        if let Some(&i) = self.items.get(item) {
            return i;
        }
        let slot = Item {
            id: Some(item.clone()),
            df: 0,
            recent: VecDeque::new(),
        };
        let i = match self.free_items.pop() {
            Some(i) => {
                self.item_slots[i as usize] = slot;
                i
            }
            None => {
                self.item_slots.push(slot);
                (self.item_slots.len() - 1) as u32
            }
        };
        self.items.insert(item.clone(), i);
        i
    }

    /// The session ranked `born` no longer holds item `i`: take it out of the item's index and
    /// frequency, and free the item when no session holds it.
    fn unlink(&mut self, born: u32, i: u32) {
        let item = &mut self.item_slots[i as usize];
        // A session dropped for being the oldest is at the front of every list it is in.
        if item.recent.front().is_some_and(|&(_, b)| b == born) {
            item.recent.pop_front();
        } else if let Ok(p) = item.recent.binary_search_by_key(&born, |&(_, b)| b) {
            item.recent.remove(p);
        }
        item.df = item.df.saturating_sub(1);
        if item.df == 0 {
            if let Some(id) = item.id.take() {
                self.items.remove(&id);
            }
            *item = Item::default();
            self.free_items.push(i);
        }
    }
}

/// One session in a snapshot.
#[derive(Serialize)]
struct SessionSnapshot {
    key: u64,
    /// Rank in the order sessions started.
    born: u32,
    /// Milliseconds since the epoch of the latest event.
    at: i64,
    items: Vec<ItemId>,
}

/// [`SessionSnapshot`] as it is read (items by borrowed id).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionSnapshotIn<'a> {
    key: u64,
    born: u32,
    at: i64,
    #[serde(borrow)]
    items: Vec<SnapshotId<'a>>,
}

#[derive(Serialize)]
struct Snapshot {
    config: SessionKnnConfig,
    /// The rank of the next new session.
    next_born: u32,
    /// Oldest first.
    sessions: Vec<SessionSnapshot>,
    /// Each item's index, oldest first, by session key; items by id.
    index: Vec<(ItemId, Vec<u64>)>,
}

/// [`Snapshot`] as it is read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn<'a> {
    config: SessionKnnConfig,
    next_born: u32,
    #[serde(borrow)]
    sessions: Vec<SessionSnapshotIn<'a>>,
    #[serde(borrow)]
    index: Vec<(SnapshotId<'a>, Vec<u64>)>,
}

impl Serialize for SessionKnn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let id = |i: u32| self.item_slots[i as usize].id.clone();
        let mut sessions: Vec<SessionSnapshot> = self
            .sessions
            .values()
            .map(|&s| {
                let sess = &self.session_slots[s as usize];
                SessionSnapshot {
                    key: sess.key,
                    born: sess.born,
                    at: self.session_at[s as usize],
                    items: sess.items.iter().filter_map(|&i| id(i)).collect(),
                }
            })
            .collect();
        sessions.sort_unstable_by_key(|s| s.born);
        let mut index: Vec<(ItemId, Vec<u64>)> = self
            .items
            .iter()
            .map(|(item, &i)| {
                let keys = self.item_slots[i as usize]
                    .recent
                    .iter()
                    .map(|&(s, _)| self.session_slots[s as usize].key)
                    .collect();
                (item.clone(), keys)
            })
            .collect();
        index.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            config: self.config.clone(),
            next_born: self.next_born,
            sessions,
            index,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SessionKnn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let snap = SnapshotIn::deserialize(d)?;
        let bad = |what: String| D::Error::custom(format!("session_knn: {what}"));
        let mut knn = SessionKnn::new(snap.config).map_err(D::Error::custom)?;
        if snap.sessions.len() > knn.config.max_sessions {
            return Err(bad("more sessions than max_sessions".to_owned()));
        }
        let mut last_born = None;
        for sess in snap.sessions {
            if last_born.is_some_and(|b| b >= sess.born) || sess.born >= snap.next_born {
                return Err(bad(format!("session {} is out of order", sess.key)));
            }
            last_born = Some(sess.born);
            if knn.sessions.contains_key(&sess.key) {
                return Err(bad(format!("session {} appears twice", sess.key)));
            }
            if sess.items.len() > knn.config.max_session_len {
                return Err(bad(format!("session {} is too long", sess.key)));
            }
            let s = knn.add_session(sess.key);
            knn.session_at[s as usize] = sess.at;
            knn.session_slots[s as usize].born = sess.born;
            for item in &sess.items {
                let item = item.as_str();
                let i = match knn.items.get(item) {
                    Some(&i) => i,
                    None => knn.item_slot(&ItemId::new(item).map_err(D::Error::custom)?),
                };
                let slot = &mut knn.session_slots[s as usize];
                if slot.items.contains(&i) {
                    return Err(bad(format!("session {} holds {item} twice", sess.key)));
                }
                slot.items.push(i);
                knn.item_slots[i as usize].df += 1;
            }
        }
        let mut seen = vec![false; knn.item_slots.len()];
        for (item, keys) in snap.index {
            let item = item.as_str();
            let Some(&i) = knn.items.get(item) else {
                return Err(bad(format!(
                    "the index names {item}, which no session holds"
                )));
            };
            if std::mem::replace(&mut seen[i as usize], true) {
                return Err(bad(format!("{item} is indexed twice")));
            }
            if keys.len() > knn.config.sample_size {
                return Err(bad(format!("{item} lists more than sample_size sessions")));
            }
            let mut recent: VecDeque<(u32, u32)> = VecDeque::with_capacity(keys.len());
            for key in keys {
                let s = knn.sessions.get(&key).copied();
                let Some(s) = s.filter(|&s| knn.session_slots[s as usize].items.contains(&i))
                else {
                    return Err(bad(format!("{item} lists session {key}, which lacks it")));
                };
                let born = knn.session_slots[s as usize].born;
                if recent.back().is_some_and(|&(_, b)| b >= born) {
                    return Err(bad(format!("{item} lists its sessions out of order")));
                }
                recent.push_back((s, born));
            }
            knn.item_slots[i as usize].recent = recent;
        }
        knn.next_born = snap.next_born;
        knn.rebuild_by_age();
        Ok(knn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> ItemId {
        ItemId::new(s).unwrap()
    }

    fn ids(s: &[&str]) -> Vec<ItemId> {
        s.iter().map(|x| id(x)).collect()
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + ms)
    }

    fn all(_: &ItemId) -> bool {
        true
    }

    fn config() -> SessionKnnConfig {
        SessionKnnConfig {
            sample_size: 100,
            neighbors: 50,
            max_sessions: 1000,
            max_session_len: 20,
            idf_weight: 0.0,
        }
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    fn scores(got: &[(ItemId, f32)]) -> Vec<(&str, f32)> {
        got.iter().map(|(i, s)| (i.as_str(), *s)).collect()
    }

    #[test]
    fn hand_computed_scores() {
        let mut knn = SessionKnn::new(config()).unwrap();
        knn.observe_session(1, &ids(&["a", "b", "x"]), at(1));
        knn.observe_session(2, &ids(&["b", "c", "y"]), at(2));
        knn.observe_session(3, &ids(&["z"]), at(3));
        // Query [a, b] (L = 2): π(a) = 1/2, π(b) = 1.
        // sim(1) = 1/2 + 1 = 1.5, latest shared item b at d = 1: λ = 0.9 → 1.35 to a, b, x.
        // sim(2) = 1, shared b at d = 1: λ = 0.9 → 0.9 to b, c, y.
        let got = knn.recommend(&ids(&["a", "b"]), 10, &all, None);
        let want = [
            ("b", 2.25),
            ("a", 1.35),
            ("x", 1.35),
            ("c", 0.9),
            ("y", 0.9),
        ];
        assert_eq!(got.len(), want.len());
        for ((gi, gs), (wi, ws)) in scores(&got).into_iter().zip(want) {
            assert_eq!(gi, wi);
            assert!(close(gs, ws), "{gi}: {gs} vs {ws}");
        }
        // Query [c, a] (L = 2): π(c) = 1/2, π(a) = 1. Session 1 shares a (d = 1): 1 · 0.9;
        // session 2 shares c (d = 2): 0.5 · 0.8 = 0.4.
        let got = knn.recommend(&ids(&["c", "a"]), 3, &all, None);
        // b: 0.9 + 0.4; a and x: 0.9 (tied, by id); c and y: 0.4.
        assert_eq!(
            scores(&got).iter().map(|x| x.0).collect::<Vec<_>>(),
            ["b", "a", "x"]
        );
        assert!(close(got[0].1, 0.9 + 0.4) && close(got[1].1, 0.9));
    }

    #[test]
    fn idf_favours_rare_items() {
        let mut cfg = config();
        cfg.idf_weight = 1.0;
        let mut knn = SessionKnn::new(cfg).unwrap();
        knn.observe_session(1, &ids(&["q", "common", "rare"]), at(1));
        for s in 2..5 {
            knn.observe_session(s, &ids(&["common"]), at(s as i64));
        }
        // N = 4 sessions; df(common) = 4 → idf 0; df(rare) = 1 → ln 4.
        let got = knn.recommend(&ids(&["q"]), 3, &all, None);
        let s = |name: &str| got.iter().find(|(i, _)| i.as_str() == name).unwrap().1;
        assert!(close(s("common"), 0.9));
        assert!(close(s("rare"), 0.9 * (1.0 + 4f32.ln())));
    }

    #[test]
    fn matches_far_back_count_nothing() {
        let mut knn = SessionKnn::new(config()).unwrap();
        knn.observe_session(1, &ids(&["old", "far"]), at(1));
        let mut seq = ids(&["old"]);
        seq.extend((0..10).map(|k| id(&format!("new{k}"))));
        // "old" is 11 back: λ = 0.
        assert!(knn.recommend(&seq, 5, &all, None).is_empty());
        seq.remove(1);
        // Now 10 back: still 0; 9 back gives 0.1.
        assert!(knn.recommend(&seq, 5, &all, None).is_empty());
        seq.remove(1);
        let got = knn.recommend(&seq, 5, &all, None);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn a_session_is_not_its_own_neighbour() {
        let mut knn = SessionKnn::new(config()).unwrap();
        knn.observe_session(1, &ids(&["a", "b"]), at(1));
        knn.observe_session(7, &ids(&["a", "c"]), at(2));
        let seq = ids(&["a", "c"]);
        let without: Vec<_> = knn
            .recommend(&seq, 5, &all, Some(7))
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(without, ids(&["a", "b"]));
        let with = knn.recommend(&seq, 5, &all, None);
        assert_eq!(with[0].0, id("a"));
        assert!(with.iter().any(|(i, _)| i == &id("c")));
    }

    #[test]
    fn the_sample_keeps_the_most_recent_sessions() {
        let mut cfg = config();
        cfg.sample_size = 2;
        cfg.neighbors = 2;
        let mut knn = SessionKnn::new(cfg).unwrap();
        // Three sessions with q; the oldest (1) is the most similar but falls out of the sample.
        knn.observe_session(1, &ids(&["p", "q", "one"]), at(1));
        knn.observe_session(2, &ids(&["q", "two"]), at(2));
        knn.observe_session(3, &ids(&["q", "three"]), at(3));
        let got = knn.recommend(&ids(&["p", "q"]), 10, &all, None);
        let names: Vec<_> = got.iter().map(|(i, _)| i.as_str()).collect();
        assert!(!names.contains(&"one") && names.contains(&"two") && names.contains(&"three"));
        // k = 1: ties in similarity go to the session that started last (4, though its events
        // carry the earliest time).
        let mut cfg = config();
        cfg.neighbors = 1;
        let mut knn = SessionKnn::new(cfg).unwrap();
        knn.observe_session(2, &ids(&["q", "two"]), at(2));
        knn.observe_session(3, &ids(&["q", "three"]), at(3));
        knn.observe_session(4, &ids(&["q", "four"]), at(1));
        let got = knn.recommend(&ids(&["q"]), 10, &all, None);
        assert_eq!(
            got.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
            ["four", "q"]
        );
    }

    #[test]
    fn an_older_session_adding_an_item_late_keeps_its_place() {
        let mut cfg = config();
        cfg.sample_size = 2;
        let mut knn = SessionKnn::new(cfg).unwrap();
        knn.observe(1, &id("a1"), at(0));
        knn.observe(2, &id("b1"), at(1));
        knn.observe(3, &id("c1"), at(2));
        knn.observe(3, &id("x"), at(3));
        knn.observe(2, &id("x"), at(4));
        // Session 1 started first: it adds x last, but ranks oldest.
        knn.observe(1, &id("x"), at(5));
        let got: Vec<_> = knn
            .recommend(&ids(&["x"]), 10, &|i| i.as_str() != "x", None)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(got, ids(&["b1", "c1"]));
        // The index keeps the two most recent holders of x: 1 came and went at once.
        let x = knn.items[&id("x")];
        assert_eq!(knn.item_slots[x as usize].recent.len(), 2);
    }

    #[test]
    fn ranks_are_renumbered_before_they_run_out() {
        let mut a = SessionKnn::new(SessionKnnConfig {
            max_sessions: 16,
            ..config()
        })
        .unwrap();
        let mut b = a.clone();
        a.next_born = u32::MAX - 20;
        for e in 0..400u64 {
            let item = id(&format!("i{}", (e * 13) % 37));
            a.observe(e / 5, &item, at(e as i64));
            b.observe(e / 5, &item, at(e as i64));
        }
        assert!(a.next_born < 100);
        for q in 0..37u64 {
            let seq = ids(&[&format!("i{q}"), &format!("i{}", (q * 7) % 37)]);
            assert_eq!(
                a.recommend(&seq, 20, &all, None),
                b.recommend(&seq, 20, &all, None)
            );
        }
    }

    #[test]
    fn exclusion_still_returns_n() {
        let mut knn = SessionKnn::new(config()).unwrap();
        for s in 0..30u64 {
            knn.observe_session(s, &[id("hub"), id(&format!("i{s:02}"))], at(s as i64));
        }
        let not_hub_or_even =
            |x: &ItemId| x.as_str() != "hub" && x.as_str().ends_with(['1', '3', '5', '7', '9']);
        let got = knn.recommend(&ids(&["hub"]), 10, &not_hub_or_even, None);
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|(i, _)| not_hub_or_even(i)));
        // All tie: by id.
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(
            knn.recommend(&ids(&["hub"]), 100, &not_hub_or_even, None)
                .len(),
            15
        );
    }

    #[test]
    fn caps_hold_under_a_flood() {
        let cfg = SessionKnnConfig {
            sample_size: 8,
            neighbors: 4,
            max_sessions: 64,
            max_session_len: 5,
            idf_weight: 1.0,
        };
        let mut knn = SessionKnn::new(cfg).unwrap();
        for e in 0..20_000u64 {
            let session = e / 12;
            let item = id(&format!("i{}", (e * 7919) % 997));
            knn.observe(session, &item, at(e as i64));
            assert!(knn.len() <= 64);
        }
        assert!(knn.item_count() <= 64 * 5);
        assert!(knn.session_slots.len() <= 64 + 1);
        assert!(knn.by_age.len() <= 2 * 64 + 64);
        // The oldest went first: the tracked sessions are the last 64.
        let last = 19_999 / 12;
        for session in last - 63..=last {
            assert!(!knn.session_items(session).is_empty(), "{session}");
        }
        // Forgetting sessions keeps the queue small too.
        for session in 0..=last {
            knn.remove_session(session);
            knn.observe(session + 10_000, &id("x"), at(0));
            assert!(knn.by_age.len() <= 2 * knn.len() + 64);
        }
        for &s in knn.sessions.values() {
            let items = &knn.session_slots[s as usize].items;
            assert!(items.len() <= 5 && items.capacity() <= 6);
        }
        let mut df = vec![0u32; knn.item_slots.len()];
        for &s in knn.sessions.values() {
            for &i in &knn.session_slots[s as usize].items {
                df[i as usize] += 1;
            }
        }
        for (item, &i) in &knn.items {
            let slot = &knn.item_slots[i as usize];
            assert_eq!(slot.df, df[i as usize], "{item}");
            assert!(slot.recent.len() <= 8 && slot.recent.capacity() <= 8);
            for &(s, born) in &slot.recent {
                assert!(knn.session_slots[s as usize].items.contains(&i));
                assert_eq!(knn.session_slots[s as usize].born, born);
            }
            assert!(
                slot.recent
                    .iter()
                    .zip(slot.recent.iter().skip(1))
                    .all(|(a, b)| a.1 < b.1)
            );
        }
    }

    #[test]
    fn long_sessions_forget_their_oldest_items() {
        let mut cfg = config();
        cfg.max_session_len = 3;
        let mut knn = SessionKnn::new(cfg).unwrap();
        knn.observe_session(1, &ids(&["a", "b", "c", "b", "d"]), at(0));
        assert_eq!(knn.session_items(1), ids(&["b", "c", "d"]));
        assert_eq!(knn.item_count(), 3);
        assert!(knn.recommend(&ids(&["a"]), 5, &all, None).is_empty());
        knn.remove_session(1);
        assert!(knn.is_empty() && knn.item_count() == 0);
    }

    #[test]
    fn snapshot_round_trip_answers_the_same() {
        let mut knn = SessionKnn::new(SessionKnnConfig {
            max_sessions: 32,
            ..config()
        })
        .unwrap();
        for e in 0..600u64 {
            let item = id(&format!("i{}", (e * 31) % 41));
            knn.observe(e / 7, &item, at((e * 1000) as i64));
        }
        let json = serde_json::to_string(&knn).unwrap();
        let mut back: SessionKnn = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        let same = |a: &SessionKnn, b: &SessionKnn| {
            for q in 0..41u64 {
                let seq: Vec<ItemId> = (0..4)
                    .map(|k| id(&format!("i{}", (q * 5 + k * 3) % 41)))
                    .collect();
                for own in [None, Some(85)] {
                    assert_eq!(
                        a.recommend(&seq, 20, &all, own),
                        b.recommend(&seq, 20, &all, own)
                    );
                }
            }
        };
        same(&knn, &back);
        // Both keep learning (and evicting) the same way.
        for e in 600..900u64 {
            let item = id(&format!("i{}", (e * 17) % 43));
            knn.observe(e / 7, &item, at((e * 1000) as i64));
            back.observe(e / 7, &item, at((e * 1000) as i64));
        }
        same(&knn, &back);
        assert_eq!(
            serde_json::to_string(&knn).unwrap(),
            serde_json::to_string(&back).unwrap()
        );
    }

    #[test]
    fn bad_configs_and_snapshots_are_rejected() {
        for bad in [
            SessionKnnConfig {
                sample_size: 0,
                ..config()
            },
            SessionKnnConfig {
                neighbors: 0,
                ..config()
            },
            SessionKnnConfig {
                max_sessions: 2,
                ..config()
            },
            SessionKnnConfig {
                max_session_len: 0,
                ..config()
            },
            SessionKnnConfig {
                idf_weight: -1.0,
                ..config()
            },
            SessionKnnConfig {
                idf_weight: f32::INFINITY,
                ..config()
            },
        ] {
            assert!(SessionKnn::new(bad).is_err());
        }
        let mut knn = SessionKnn::new(config()).unwrap();
        knn.observe_session(1, &ids(&["a", "b"]), at(0));
        let good = serde_json::to_value(&knn).unwrap();
        assert!(serde_json::from_value::<SessionKnn>(good.clone()).is_ok());
        let mut lacking = good.clone();
        lacking["index"] = serde_json::json!([["a", [1]], ["b", [2]]]);
        assert!(serde_json::from_value::<SessionKnn>(lacking).is_err());
        let mut twice = good.clone();
        twice["sessions"][0]["items"] = serde_json::json!(["a", "a"]);
        assert!(serde_json::from_value::<SessionKnn>(twice).is_err());
        let mut orphan = good;
        orphan["index"] = serde_json::json!([["a", [1]], ["b", [1]], ["c", []]]);
        assert!(serde_json::from_value::<SessionKnn>(orphan).is_err());
    }

    #[test]
    fn session_keys_are_stable() {
        // FNV-1a test vectors.
        assert_eq!(
            session_key(&SessionId::new("a").unwrap()),
            0xaf63_dc4c_8601_ec8c
        );
        assert_eq!(
            session_key(&SessionId::new("foobar").unwrap()),
            0x8594_4171_f739_67e8
        );
    }

    #[test]
    fn sizes_are_as_documented() {
        assert!(std::mem::size_of::<Session>() <= 40);
        assert!(std::mem::size_of::<Item>() <= 48);
        assert_eq!(std::mem::size_of::<(u32, u32)>(), 8);
    }

    /// The scores of the [module docs](self) computed the slow way, from the index lists: every
    /// session listed under a query item is a candidate, the sample is the `m` most recent
    /// candidates, and so on, with no heap and no early exit.
    fn reference(knn: &SessionKnn, seq: &[ItemId], own: Option<u64>) -> Vec<(ItemId, f32)> {
        let cfg = &knn.config;
        let seq = &seq[seq.len().saturating_sub(cfg.max_session_len)..];
        let len = seq.len() as f32;
        let mut query: Vec<(u32, f32, u32)> = Vec::new();
        for (back, item) in seq.iter().rev().enumerate() {
            if let Some(&i) = knn.items.get(item)
                && query.iter().all(|q| q.0 != i)
            {
                query.push((i, (seq.len() - back) as f32 / len, back as u32 + 1));
            }
        }
        let own = own.and_then(|k| knn.sessions.get(&k).copied());
        let mut candidates: Vec<(u32, u32)> = query
            .iter()
            .flat_map(|&(i, _, _)| knn.item_slots[i as usize].recent.iter().copied())
            .filter(|&(s, _)| Some(s) != own)
            .collect();
        candidates.sort_unstable_by_key(|e| std::cmp::Reverse(e.1));
        candidates.dedup();
        candidates.truncate(cfg.sample_size);
        let mut near: Vec<(u32, f32, u32)> = candidates
            .iter()
            .map(|&(s, born)| {
                // Summed in query order, as the index walk does.
                let mut sim = 0.0;
                for &(i, w, _) in &query {
                    if knn.item_slots[i as usize].recent.iter().any(|e| e.0 == s) {
                        sim += w;
                    }
                }
                (s, sim, born)
            })
            .collect();
        near.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.cmp(&a.2)));
        near.truncate(cfg.neighbors);
        let mut scores: Vec<(u32, f32)> = Vec::new();
        for &(s, sim, _) in &near {
            let items = &knn.session_slots[s as usize].items;
            let Some(d) = query
                .iter()
                .filter(|q| items.contains(&q.0))
                .map(|q| q.2)
                .min()
            else {
                continue;
            };
            let w = sim * (1.0 - 0.1 * d as f32).max(0.0);
            if w <= 0.0 {
                continue;
            }
            for &i in items {
                match scores.iter_mut().find(|e| e.0 == i) {
                    Some(e) => e.1 += w,
                    None => scores.push((i, w)),
                }
            }
        }
        let total = knn.sessions.len().max(1) as f64;
        let mut out: Vec<(ItemId, f32)> = scores
            .into_iter()
            .map(|(i, score)| {
                let item = &knn.item_slots[i as usize];
                let idf = (total / f64::from(item.df.max(1))).ln().max(0.0);
                let factor = 1.0 + f64::from(cfg.idf_weight) * idf;
                (item.id.clone().unwrap(), clean(f64::from(score) * factor))
            })
            .filter(|e| e.1 > 0.0)
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    proptest! {
        #[test]
        fn scores_are_finite_ordered_and_deterministic(
            events in prop::collection::vec((0u64..12, 0u8..30, -1_000_000i64..1_000_000), 1..150),
            query in prop::collection::vec(0u8..35, 0..15),
            own in prop::option::of(0u64..12),
            idf_weight in 0.0f32..10.0,
        ) {
            let cfg = SessionKnnConfig {
                sample_size: 5,
                neighbors: 3,
                max_sessions: 16,
                max_session_len: 6,
                idf_weight,
            };
            let mut a = SessionKnn::new(cfg).unwrap();
            for (s, i, t) in &events {
                a.observe(*s, &id(&format!("i{i}")), at(*t));
            }
            // The same state through a snapshot.
            let b: SessionKnn = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
            let seq: Vec<ItemId> = query.iter().map(|k| id(&format!("i{k}"))).collect();
            let got = a.recommend(&seq, 10, &all, own);
            prop_assert_eq!(&got, &b.recommend(&seq, 10, &all, own));
            for w in got.windows(2) {
                prop_assert!(w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0));
            }
            for (_, s) in &got {
                prop_assert!(s.is_finite() && *s > 0.0);
            }
        }

        #[test]
        fn the_index_walk_matches_the_slow_reference(
            events in prop::collection::vec((0u64..40, 0u8..25), 1..300),
            query in prop::collection::vec(0u8..28, 1..10),
            own in prop::option::of(0u64..40),
            sample_size in 1usize..12,
            neighbors in 1usize..8,
        ) {
            let cfg = SessionKnnConfig {
                sample_size,
                neighbors,
                max_sessions: 24,
                max_session_len: 8,
                idf_weight: 1.0,
            };
            let mut knn = SessionKnn::new(cfg).unwrap();
            for (k, (s, i)) in events.iter().enumerate() {
                knn.observe(*s, &id(&format!("i{i}")), at(k as i64));
            }
            let seq: Vec<ItemId> = query.iter().map(|k| id(&format!("i{k}"))).collect();
            let got = knn.recommend(&seq, 1000, &all, own);
            let want = reference(&knn, &seq, own);
            prop_assert_eq!(got.len(), want.len());
            for ((gi, gs), (wi, ws)) in got.iter().zip(&want) {
                prop_assert_eq!(gi, wi);
                prop_assert!(close(*gs, *ws), "{}: {} vs {}", gi, gs, ws);
            }
        }
    }
}
