//! Long-term profiles of signed-in users.
//!
//! A profile is a [`Session`] kept in its own store ([`ProfileStore`]: embedded, Redis or
//! PostgreSQL), keyed by the user id and updated with [`Rules::for_profile`]: affinities that
//! halve over weeks, not minutes, and a retention of months. It is fed by every event that
//! carries a `user_id` (in the same ingest call, after the live session) and by stated
//! preferences (onboarding); each item event applied is also recorded as an [`Interaction`] in
//! the same atomic store update. Search reads it next to the session; the reranker applies its
//! boosts under the same caps.
//!
//! [`Profiles`] owns the profile store and takes the catalog and the rules it needs per call; it
//! knows nothing of the engine around it.

use std::collections::BTreeMap;

use std::sync::Arc;

use attune_core::rerank::{KeySpace, Signals};
use attune_core::{AffinityKind, Event, EventKind, Key, Rules, Session, Timestamp, UserId};
use attune_store::profile::{Interaction, ProfileStore};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::resolve::Resolved;

/// Most stated preferences in one call (all kinds together).
pub const MAX_PREFERENCES: usize = 64;

/// What a user says they like (onboarding): brands, category paths (any level, `Dairy > Milk`),
/// and attribute values by key. Each must be known to the catalog.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preferences {
    /// Brand names, as items carry them.
    pub brands: Vec<String>,
    /// Category paths, levels joined by ` > `.
    pub categories: Vec<String>,
    /// Attribute values by attribute key.
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// Adds the events of one session group that carry a user id to the per-user work list.
pub(crate) fn collect(
    events: &[Event],
    resolved: &[Resolved],
    out: &mut Vec<(UserId, Vec<(Event, Resolved)>)>,
) {
    for (e, r) in events.iter().zip(resolved) {
        let Some(user) = &e.user_id else { continue };
        match out.iter_mut().find(|(k, _)| k == user) {
            Some((_, list)) => list.push((e.clone(), r.clone())),
            None => out.push((user.clone(), vec![(e.clone(), r.clone())])),
        }
    }
}

/// Profile writes that a search makes (its intents) and that may run after the answer.
const BACKGROUND_WRITES: u32 = 256;

/// The long-term profiles of signed-in users, in their own store.
#[derive(Clone)]
pub(crate) struct Profiles {
    store: Arc<dyn ProfileStore>,
    /// Permits for writes running after their request's answer.
    background: Arc<tokio::sync::Semaphore>,
}

impl Profiles {
    pub(crate) fn new(store: Arc<dyn ProfileStore>) -> Self {
        Profiles {
            store,
            background: Arc::new(tokio::sync::Semaphore::new(BACKGROUND_WRITES as usize)),
        }
    }

    /// [`Profiles::update`] after the answer: a search's intents reach the long-term profile
    /// (a slow clock: days) without the request waiting for the store's write. At most
    /// [`BACKGROUND_WRITES`] run at once; past that (a store slower than the traffic) the
    /// request waits for its own write, so none is dropped. A failure is logged, as it would be
    /// inline (the search answers either way).
    pub(crate) async fn update_after(
        &self,
        work: Vec<(UserId, Vec<(Event, Resolved)>)>,
        now: Timestamp,
        rules: Arc<Rules>,
    ) {
        let permit = match Arc::clone(&self.background).try_acquire_owned() {
            Ok(permit) if tokio::runtime::Handle::try_current().is_ok() => permit,
            _ => {
                let _ = self.update(work, now, &rules).await;
                return;
            }
        };
        let profiles = self.clone();
        tokio::spawn(async move {
            let _ = profiles.update(work, now, &rules).await;
            drop(permit);
        });
    }

    /// Waits (up to `timeout`) for the writes running in the background to finish.
    pub(crate) async fn settle(&self, timeout: std::time::Duration) {
        let all =
            tokio::time::timeout(timeout, self.background.acquire_many(BACKGROUND_WRITES)).await;
        if !matches!(all, Ok(Ok(_))) {
            tracing::warn!(?timeout, "profile writes after their answers still running");
        }
    }

    pub(crate) fn store(&self) -> &dyn ProfileStore {
        &*self.store
    }

    /// Applies events to their users' profiles (with the profile rules), each at most once by
    /// its `event_id`, recording each item event applied as an interaction in the same update.
    /// Every profile is attempted; the first failure is returned.
    pub(crate) async fn update(
        &self,
        work: Vec<(UserId, Vec<(Event, Resolved)>)>,
        now: Timestamp,
        rules: &Rules,
    ) -> Result<()> {
        let ttl = ttl(rules);
        let mut first_error = None;
        for (key, events) in work {
            let mutate = move |s: &mut Session, added: &mut Vec<Interaction>| {
                for (e, r) in &events {
                    if r.apply(s, e, rules)
                        && e.kind != EventKind::Search
                        && let Some(item_id) = &e.item_id
                    {
                        added.push(Interaction {
                            event_id: e.event_id.clone(),
                            kind: e.kind,
                            item_id: item_id.clone(),
                            // The seeds' weight (purchase 5), before the profile's scale.
                            weight: rules.profile.weights.of(e.kind),
                            at: e.timestamp,
                            session_id: e.session_id.clone(),
                        });
                    }
                }
            };
            if let Err(e) = self
                .store
                .update(&key, now, ttl, &mutate, &mut |_| {})
                .await
            {
                tracing::error!(error = %e, "profile not updated");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e.into()),
        }
    }

    /// A user's profile signals for ranking one list (`keys`), if the user has a profile.
    pub(crate) async fn signals(
        &self,
        user: &UserId,
        now: Timestamp,
        rules: &Rules,
        catalog: &dyn Catalog,
        keys: &KeySpace,
    ) -> Result<Option<Signals>> {
        let mut signals = None;
        self.store
            .read(user, now, ttl(rules), &mut |p| {
                signals = Some(
                    catalog.with_ids(|ids| Signals::from_session(p, now, rules, ids, keys, false)),
                );
            })
            .await?;
        Ok(signals)
    }

    /// Records stated preferences in a user's profile (creating it) and returns the profile.
    pub(crate) async fn set_preferences(
        &self,
        user: &UserId,
        preferences: &Preferences,
        catalog: &dyn Catalog,
        now: Timestamp,
        rules: &Rules,
    ) -> Result<Session> {
        let keys = preference_keys(catalog, preferences)?;
        let mutate = |s: &mut Session, _: &mut Vec<Interaction>| {
            s.apply_preferences(&keys, now, rules);
        };
        Ok(self
            .store
            .update_get(user, now, ttl(rules), &mutate)
            .await?)
    }

    /// A user's profile.
    pub(crate) async fn get(
        &self,
        user: &UserId,
        now: Timestamp,
        rules: &Rules,
    ) -> Result<Session> {
        self.store
            .get(user, now, ttl(rules))
            .await?
            .ok_or_else(|| Error::ProfileNotFound(user.to_string()))
    }

    /// A user's most recent interactions (at most `limit`), newest first.
    pub(crate) async fn interactions(
        &self,
        user: &UserId,
        now: Timestamp,
        rules: &Rules,
        limit: usize,
    ) -> Result<Vec<Interaction>> {
        self.store
            .interactions(user, now, ttl(rules), limit)
            .await?
            .ok_or_else(|| Error::ProfileNotFound(user.to_string()))
    }

    /// Forgets a user's profile and interactions at once. Returns whether the profile existed.
    pub(crate) async fn forget(&self, user: &UserId) -> Result<bool> {
        Ok(self.store.forget(user).await?)
    }

    /// Drops expired profiles and interactions past the retention.
    pub(crate) fn purge_expired(&self, now: Timestamp, rules: &Rules) -> usize {
        self.store.purge_expired(now, ttl(rules))
    }
}

pub(crate) fn ttl(rules: &Rules) -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(rules.session.ttl_secs))
}

/// Checks each preference against the catalog and turns it into the affinity it moves.
fn preference_keys(catalog: &dyn Catalog, p: &Preferences) -> Result<Vec<(AffinityKind, Key)>> {
    let count =
        p.brands.len() + p.categories.len() + p.attributes.values().map(Vec::len).sum::<usize>();
    if count == 0 {
        return Err(Error::invalid(
            "",
            attune_core::Error::invalid("preferences", "name at least one preference"),
        ));
    }
    if count > MAX_PREFERENCES {
        return Err(Error::TooMany {
            field: "preferences",
            len: count,
            max: MAX_PREFERENCES,
        });
    }
    let unknown = |field: String, what: &str| Error::Invalid {
        field: field.into(),
        message: format!("no item in the catalog has this {what}"),
    };
    let mut keys = Vec::with_capacity(count);
    for (i, b) in p.brands.iter().enumerate() {
        let key = catalog
            .feature_key(b)
            .filter(|_| !b.contains(':') && !b.contains(" > "))
            .ok_or_else(|| unknown(format!("brands[{i}]"), "brand"))?;
        keys.push((AffinityKind::Brand, key));
    }
    for (i, c) in p.categories.iter().enumerate() {
        let key = catalog
            .feature_key(c)
            .filter(|_| !c.contains(':'))
            .ok_or_else(|| unknown(format!("categories[{i}]"), "category"))?;
        keys.push((AffinityKind::Category, key));
    }
    for (name, values) in &p.attributes {
        if !catalog.has_attribute_key(name) {
            return Err(unknown(format!("attributes.{name}"), "attribute"));
        }
        for (i, v) in values.iter().enumerate() {
            let key = catalog
                .feature_key(&format!("{name}:{v}"))
                .ok_or_else(|| unknown(format!("attributes.{name}[{i}]"), "value"))?;
            keys.push((AffinityKind::Attribute, key));
        }
    }
    Ok(keys)
}
