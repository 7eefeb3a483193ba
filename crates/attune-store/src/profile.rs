//! The long-term profile seam: profiles of signed-in users and the interactions that built them.
//!
//! A profile is a [`Session`] (the same affinities, on a slower clock) kept per user, beside the
//! list of **interactions** applied to it: one [`Interaction`] per item event of that user, with
//! the weight the rules gave it. Every backend writes a profile and the interactions of one
//! update in one atomic step, so the two never disagree:
//! - [`memory::MemoryProfileStore`] (embedded): in process, with an optional append-only journal
//!   in a directory (`profiles.dir`) that a crash cannot lose.
//! - [`crate::redis::RedisProfileStore`]: one hash per profile and a capped list of its
//!   interactions, both written by one Lua script.
//! - [`crate::postgres::PostgresProfileStore`]: one row per profile and one row per interaction
//!   in `<table>_interactions`, both written by one statement.
//!
//! All pass the conformance suite in `tests/it/profile.rs`.

use std::time::Duration;

use async_trait::async_trait;
use attune_core::{EventKind, ItemId, Session, SessionId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

use crate::{Error, Inspect, Result, StoreStats};

pub mod memory;

/// Most interactions the embedded and Redis stores keep per user (the newest); PostgreSQL
/// keeps every one until it is older than the retention.
pub const MAX_INTERACTIONS_PER_USER: usize = 1000;

/// One item event applied to a user's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// The client's id for the event, if it sent one.
    pub event_id: Option<Box<str>>,
    /// What was done.
    pub kind: EventKind,
    /// The item.
    pub item_id: ItemId,
    /// The weight the profile rules gave this kind when it was applied (before decay: a signal
    /// then weighs `weight × exp(−days / 30)` with the default half-life).
    pub weight: f32,
    /// When it happened.
    pub at: Timestamp,
    /// The session it was sent with.
    pub session_id: SessionId,
}

/// A function that changes a profile and lists the interactions it applied (events it skipped
/// as already applied are not listed). Like [`crate::Mutation`] it may run more than once for
/// one update, each time on a fresh copy and an empty list; the last run is what is written.
pub type ProfileMutation<'a> = &'a (dyn Fn(&mut Session, &mut Vec<Interaction>) + Send + Sync);

/// Long-term profiles, keyed by user id, with their interactions.
///
/// A profile expires `ttl` (the retention) after its last access; every call passes the TTL in
/// force so that reloaded rules take effect at once.
#[async_trait]
pub trait ProfileStore: Send + Sync + 'static {
    /// The profile, if present and not expired.
    async fn get(&self, user: &UserId, now: Timestamp, ttl: Duration) -> Result<Option<Session>>;

    /// Shows the profile, if present and not expired, to `read` (once); returns whether it was
    /// there.
    async fn read(
        &self,
        user: &UserId,
        now: Timestamp,
        ttl: Duration,
        read: Inspect<'_>,
    ) -> Result<bool> {
        match self.get(user, now, ttl).await? {
            Some(p) => {
                read(&p);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Applies `mutate` atomically to the profile (creating it if absent) and records the
    /// interactions it lists in the same atomic step, then shows the profile as written to
    /// `inspect` (once). No concurrent update is lost; on an error nothing is written.
    async fn update(
        &self,
        user: &UserId,
        now: Timestamp,
        ttl: Duration,
        mutate: ProfileMutation<'_>,
        inspect: Inspect<'_>,
    ) -> Result<()>;

    /// [`ProfileStore::update`], returning a copy of the profile as written.
    async fn update_get(
        &self,
        user: &UserId,
        now: Timestamp,
        ttl: Duration,
        mutate: ProfileMutation<'_>,
    ) -> Result<Session> {
        let mut written = None;
        self.update(user, now, ttl, mutate, &mut |s| written = Some(s.clone()))
            .await?;
        written.ok_or_else(|| Error::Unavailable {
            backend: "profile store",
            source: "the update did not show the written profile".into(),
        })
    }

    /// The user's most recent interactions (at most `limit`), newest first; `None` when the
    /// user has no profile.
    async fn interactions(
        &self,
        user: &UserId,
        now: Timestamp,
        ttl: Duration,
        limit: usize,
    ) -> Result<Option<Vec<Interaction>>>;

    /// Forgets the profile and every interaction of the user at once. Returns whether the
    /// profile existed.
    async fn forget(&self, user: &UserId) -> Result<bool>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<()>;

    /// Drops expired profiles and interactions older than `ttl` (the retention); returns how
    /// many profiles were dropped when the backend knows at once (else 0).
    fn purge_expired(&self, now: Timestamp, ttl: Duration) -> usize;

    /// Monitoring counters (`sessions` counts profiles held in process).
    fn stats(&self) -> StoreStats;

    /// Called once at shutdown (the embedded store compacts its journal here).
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// The key a profile is kept under: the user id, as the profile's [`Session`] id.
pub(crate) fn profile_id(user: &UserId) -> Result<SessionId> {
    // User and session ids obey the same rules, so this cannot fail; no panic if it ever did.
    SessionId::new(user.as_str()).map_err(|e| Error::Unavailable {
        backend: "profile store",
        source: Box::new(e),
    })
}

/// When an interaction at `at` is past the retention `ttl`, as of `now`.
pub(crate) fn too_old(at: Timestamp, now: Timestamp, ttl: Duration) -> bool {
    at.as_millis()
        .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
        <= now.as_millis()
}
