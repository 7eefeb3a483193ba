//! Where Attune keeps state, behind small traits.
//!
//! This crate owns the storage seams and their implementations:
//! - [`SessionStore`]: live session state. [`memory::MemorySessionStore`] (embedded, the default)
//!   and [`redis::RedisSessionStore`] (`redis://…`, for stateless replicas). Both pass the same
//!   conformance suite (`tests/it/conformance.rs`).
//! - [`profile::ProfileStore`]: long-term profiles of signed-in users and the interactions
//!   applied to them, written together in one atomic step.
//!   [`profile::memory::MemoryProfileStore`] (embedded, with a journal in `profiles.dir`),
//!   [`redis::RedisProfileStore`] and [`postgres::PostgresProfileStore`] (an interactions
//!   table beside the profiles). All pass `tests/it/profile.rs`.
//! - [`bandit::BanditStore`]: the bandit's arms (shows and clicks per surface and item).
//!   [`bandit::memory::MemoryBanditStore`] (embedded, with a snapshot file) and
//!   [`bandit::redis::RedisBanditStore`] (shared by replicas). Both pass `tests/it/bandit.rs`.
//! - [`catalog::CatalogStore`]: where the catalog is written through and loaded from (it is
//!   served from memory). [`catalog::FileCatalogStore`] (embedded journal) and
//!   [`catalog::postgres::PostgresCatalogStore`] (shared, with `LISTEN`/`NOTIFY`). Both pass
//!   `tests/it/catalog.rs`.
//! - [`stream::EventSink`]: the event stream (events applied and lists served).
//!   [`stream::EventLog`] (embedded: segment-rotated JSON lines, sealed segments gzipped).
//!
//! It does not own what a session or an arm *means* (that is `attune-core`) nor which backend runs
//! (the binary chooses from the URL in settings). Every implementation makes
//! [`SessionStore::update`] atomic per session: concurrent updates to one session, from any number
//! of tasks or processes, lose nothing; and [`bandit::BanditStore::record`] atomic per feedback.

use std::time::Duration;

use async_trait::async_trait;
use attune_core::{Session, SessionId, Timestamp};

pub mod bandit;
pub mod catalog;
mod l1;
pub mod memory;
pub mod postgres;
pub mod profile;
pub mod redis;
mod snapshot;
pub mod stream;

/// Everything that can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend could not be reached or answered with an error.
    #[error("{backend} is unavailable: {source}")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// The client error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An optimistic update kept conflicting with concurrent writers.
    #[error("session {session_id} is too contended: gave up after {attempts} attempts")]
    Contended {
        /// The session.
        session_id: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// A snapshot file could not be written or read.
    #[error("snapshot {path}: {reason}")]
    Snapshot {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A store URL that names no known backend, or is malformed.
    #[error("store url {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Result with the store [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Counters a store reports for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Sessions held in process (the whole store when embedded; the L1 cache for Redis).
    pub sessions: usize,
    /// Sessions evicted to stay within the memory bound.
    pub evictions: u64,
    /// Sessions dropped because they expired.
    pub expirations: u64,
    /// Optimistic-update retries after a concurrent write (Redis).
    pub conflicts: u64,
    /// Stored sessions that could not be decoded (corrupt, or of an older layout) and were
    /// treated as absent.
    pub unreadable: u64,
}

/// A function that reads the session as written, once, after a successful update.
pub type Inspect<'a> = &'a mut (dyn FnMut(&Session) + Send);

/// A function that changes a session. It may run more than once for one update (after a conflict
/// with a concurrent writer), each time on a fresh copy, so it must depend only on its argument.
pub type Mutation<'a> = &'a (dyn Fn(&mut Session) + Send + Sync);

/// Live session state, keyed by session id.
///
/// Sessions expire `ttl` after their last access (read or write); every call passes the TTL in force
/// so that reloaded rules take effect at once.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The session, if present and not expired. Refreshes its expiry.
    async fn get(&self, id: &SessionId, now: Timestamp, ttl: Duration) -> Result<Option<Session>>;

    /// Shows the session, if present and not expired, to `read` (once), refreshing its expiry;
    /// returns whether it was there. Backends that hold sessions in process show them in place,
    /// without a copy (the search path reads a session per request this way).
    async fn read(
        &self,
        id: &SessionId,
        now: Timestamp,
        ttl: Duration,
        read: Inspect<'_>,
    ) -> Result<bool> {
        match self.get(id, now, ttl).await? {
            Some(s) => {
                read(&s);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Applies `mutate` atomically to the session, creating it (as `Session::new(id, now)`) if absent,
    /// then shows the session as written to `inspect` (once). No concurrent update is lost.
    ///
    /// `inspect` lets the caller take what it needs (say, the top affinities) without copying the
    /// whole session out of the store.
    async fn update(
        &self,
        id: &SessionId,
        now: Timestamp,
        ttl: Duration,
        mutate: Mutation<'_>,
        inspect: Inspect<'_>,
    ) -> Result<()>;

    /// [`SessionStore::update`], returning a copy of the session as written.
    async fn update_get(
        &self,
        id: &SessionId,
        now: Timestamp,
        ttl: Duration,
        mutate: Mutation<'_>,
    ) -> Result<Session> {
        let mut written = None;
        self.update(id, now, ttl, mutate, &mut |s| written = Some(s.clone()))
            .await?;
        written.ok_or_else(|| Error::Unavailable {
            backend: "session store",
            source: "the update did not show the written session".into(),
        })
    }

    /// Forgets the session at once. Returns whether it existed.
    async fn delete(&self, id: &SessionId) -> Result<bool>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<()>;

    /// Drops expired sessions held in process; returns how many. Backends that expire keys
    /// themselves return 0.
    fn purge_expired(&self, now: Timestamp) -> usize;

    /// Monitoring counters.
    fn stats(&self) -> StoreStats;

    /// Called once at shutdown (the embedded store writes its snapshot here, if configured).
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

fn expiry(now: Timestamp, ttl: Duration) -> Timestamp {
    now.plus_millis(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}
