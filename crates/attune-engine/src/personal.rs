//! What personalizes a ranked list: the visitor's live session and the signed-in user's profile,
//! read as [`Signals`] for one list's [`KeySpace`]. Search and recommendations both rank through
//! this, so a boost means the same on every surface.

use std::sync::Arc;
use std::time::Duration;

use attune_core::rerank::{KeySpace, Signals};
use attune_core::{Event, Key, Rules, Session, SessionId, Timestamp, UserId};
use attune_store::SessionStore;

use crate::catalog::Catalog;
use crate::error::Result;
use crate::profile::{Profiles, collect};
use crate::resolve::Resolved;

/// The stores, the catalog and the rules one personalized request reads (one rules snapshot per
/// request: a reload never mixes rules within one).
pub(crate) struct Personal<'a> {
    pub(crate) sessions: &'a dyn SessionStore,
    pub(crate) profiles: Option<&'a Profiles>,
    pub(crate) catalog: &'a dyn Catalog,
    pub(crate) rules: Arc<Rules>,
    pub(crate) profile_rules: Arc<Rules>,
    pub(crate) now: Timestamp,
    /// The stores that did not answer during this request (`sessions`, `profiles`): the list
    /// was made without them, and says so.
    pub(crate) degraded: parking_lot::Mutex<Vec<&'static str>>,
}

pub(crate) fn ttl(rules: &Rules) -> Duration {
    Duration::from_secs(u64::from(rules.session.ttl_secs))
}

impl Personal<'_> {
    /// A store read that failed because the store is unavailable becomes "no signals", and the
    /// request is marked degraded: a list without personalization beats no list. Other errors
    /// pass.
    fn tolerate<T>(&self, store: &'static str, r: Result<Option<T>>) -> Result<Option<T>> {
        match r {
            Err(crate::Error::Store(
                e @ (attune_store::Error::Unavailable { .. }
                | attune_store::Error::Contended { .. }),
            )) => {
                tracing::warn!(error = %e, store, "store unavailable: serving without it");
                let mut degraded = self.degraded.lock();
                if !degraded.contains(&store) {
                    degraded.push(store);
                }
                Ok(None)
            }
            other => other,
        }
    }

    /// The stores this request went without.
    pub(crate) fn degraded(&self) -> Vec<&'static str> {
        self.degraded.lock().clone()
    }

    /// The signals of a session for ranking one list (`keys`), if the session exists.
    pub(crate) async fn session_signals(
        &self,
        id: &SessionId,
        keys: &KeySpace,
        with_seen: bool,
    ) -> Result<Option<Signals>> {
        let (now, rules, catalog) = (self.now, &*self.rules, self.catalog);
        let mut signals = None;
        let read =
            self.sessions
                .read(id, now, ttl(rules), &mut |s| {
                    signals = Some(catalog.with_ids(|ids| {
                        Signals::from_session(s, now, rules, ids, keys, with_seen)
                    }));
                })
                .await;
        self.tolerate("sessions", read.map(|_| signals).map_err(Into::into))
    }

    /// A copy of the session, if it exists (refreshing its expiry like any read).
    pub(crate) async fn session(&self, id: &SessionId) -> Result<Option<Session>> {
        let got = self.sessions.get(id, self.now, ttl(&self.rules)).await;
        self.tolerate("sessions", got.map_err(Into::into))
    }

    /// The signals of a session for ranking one list (`keys`), and the search that list answers
    /// recorded in the session, in one atomic store operation (one round trip on Redis). The
    /// signals are those from before the search: a search shapes the visitor's later results,
    /// never its own. The search also reaches the user's profile when the event names a user.
    /// `None` when the session did not exist before.
    pub(crate) async fn signals_and_record_search(
        &self,
        event: Event,
        intents: &[Key],
        keys: &KeySpace,
        with_seen: bool,
    ) -> Result<Option<Signals>> {
        let (now, rules, catalog) = (event.timestamp, &*self.rules, self.catalog);
        // The mutation may run more than once (after a conflict); the last run's signals are
        // those of the session the search was recorded in.
        let signals: parking_lot::Mutex<Option<Signals>> = parking_lot::Mutex::new(None);
        let mutate = |s: &mut Session| {
            let before = (s.event_count() > 0).then(|| {
                catalog.with_ids(|ids| Signals::from_session(s, now, rules, ids, keys, with_seen))
            });
            *signals.lock() = before;
            s.apply_search(&event, intents, rules);
        };
        let updated = self
            .sessions
            .update(&event.session_id, now, ttl(rules), &mutate, &mut |_| {})
            .await;
        if self
            .tolerate("sessions", updated.map(|()| Some(())).map_err(Into::into))?
            .is_none()
        {
            return Ok(None);
        }
        if let Some(profiles) = self.profiles
            && event.user_id.is_some()
        {
            let mut work = Vec::new();
            collect(
                std::slice::from_ref(&event),
                &[Resolved::Search(intents.to_vec())],
                &mut work,
            );
            // After the answer: the search's signals are those from before it, and a search
            // still answers when the profile cannot record it (`update` logs it).
            profiles
                .update_after(work, now, Arc::clone(&self.profile_rules))
                .await;
        }
        Ok(signals.into_inner())
    }

    /// A user's profile as stored, if profiles are on and the user has one (a store that does
    /// not answer: `None`, and the request is marked degraded).
    pub(crate) async fn profile_of(&self, user: &UserId) -> Result<Option<Session>> {
        match self.profiles {
            Some(p) => {
                let read = p
                    .store()
                    .get(user, self.now, ttl(&self.profile_rules))
                    .await
                    .map_err(Into::into);
                self.tolerate("profiles", read)
            }
            None => Ok(None),
        }
    }

    /// A profile's signals for ranking one list (`keys`).
    pub(crate) fn profile_signals_of(&self, profile: &Session, keys: &KeySpace) -> Signals {
        self.catalog.with_ids(|ids| {
            Signals::from_session(profile, self.now, &self.profile_rules, ids, keys, false)
        })
    }

    /// A user's profile signals for ranking one list, if profiles are on and the user has one.
    pub(crate) async fn profile_signals(
        &self,
        user: &UserId,
        keys: &KeySpace,
    ) -> Result<Option<Signals>> {
        match self.profiles {
            Some(p) => {
                let read = p
                    .signals(user, self.now, &self.profile_rules, self.catalog, keys)
                    .await;
                self.tolerate("profiles", read)
            }
            None => Ok(None),
        }
    }
}
