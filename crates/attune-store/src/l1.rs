//! What the shared-state stores (Redis, PostgreSQL) keep in process: the stored session body's
//! encoding, and the L1 cache of the last version of each session read or written, which a read
//! always checks against the backend's version (so it never serves what another replica
//! overwrote).

use std::sync::atomic::{AtomicU64, Ordering};

use attune_core::{Session, SessionId};
use indexmap::IndexMap;
use parking_lot::Mutex;
use rand::Rng;

/// Encoding version of a stored session body: the session layout version.
pub(crate) const FORMAT: u8 = attune_core::session::LAYOUT_VERSION;

/// The stored body: the layout version byte, then the session in postcard.
pub(crate) fn encode(session: &Session) -> Vec<u8> {
    let mut out = vec![FORMAT];
    // Serializing plain data into a Vec cannot fail.
    out.extend(postcard::to_stdvec(session).unwrap_or_default());
    out
}

/// Decodes a stored body, or says why it cannot be read (an older layout, or corrupt). The
/// stores treat such a body as a session they do not have (logged and counted) and replace it
/// at the next write: failing every request of that visitor would help no one.
pub(crate) fn decode(bytes: &[u8]) -> Result<Session, String> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => postcard::from_bytes(body).map_err(|e| e.to_string()),
        Some((other, _)) => Err(format!("layout version {other}, this build reads {FORMAT}")),
        None => Err("empty body".to_owned()),
    }
}

/// The in-process cache: per session, the backend's version and the session at that version.
/// Bounded: past `capacity`, a random entry makes room.
pub(crate) struct L1 {
    map: Mutex<IndexMap<SessionId, (u64, Session)>>,
    capacity: usize,
    evictions: AtomicU64,
}

impl L1 {
    pub(crate) fn new(capacity: usize) -> Self {
        L1 {
            map: Mutex::new(IndexMap::new()),
            capacity: capacity.max(1),
            evictions: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self, id: &SessionId) -> Option<(u64, Session)> {
        self.map.lock().get(id.as_str()).cloned()
    }

    pub(crate) fn put(&self, id: &SessionId, version: u64, session: Session) {
        let mut map = self.map.lock();
        if !map.contains_key(id.as_str()) && map.len() >= self.capacity {
            let victim = rand::rng().random_range(0..map.len());
            map.swap_remove_index(victim);
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        map.insert(id.clone(), (version, session));
    }

    pub(crate) fn forget(&self, id: &SessionId) {
        self.map.lock().swap_remove(id.as_str());
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

/// After the `attempt`-th lost compare-and-set (from 0): from the third on, a random pause
/// growing to 6.4 ms, so replicas racing for one key stop colliding.
pub(crate) async fn back_off(attempt: u32) {
    if attempt >= 2 {
        let cap = 1u64 << attempt.min(6);
        let pause = rand::rng().random_range(0..=cap * 100);
        tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
    }
}
