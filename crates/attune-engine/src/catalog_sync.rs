//! Writing the catalog through a [`CatalogStore`] and following the changes other replicas
//! make to it.
//!
//! The engine serves the catalog from memory (the [`Catalog`] and the search indexes). With a
//! store, a write goes to the store first (one transaction: all or nothing; a store that is
//! down fails it with a 503 before anything in memory changed), then to memory. Every change
//! carries the store's sequence number; the engine keeps, per id, the number of the change it
//! holds, and the highest number up to which it has seen every change (the watermark). Changes
//! from elsewhere ([`Engine::sync_catalog`](crate::Engine::sync_catalog)) and this replica's
//! own writes are applied under one lock and only when newer than what is held, so a slow
//! write can never put back an older copy of an item another replica has since replaced.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use attune_core::Item;
use attune_store::catalog::{CatalogChange, CatalogStore};
use parking_lot::Mutex;

use crate::catalog::{Catalog, UpsertOutcome};
use crate::error::{Error, Result};
use crate::search::SearchIndex;

/// Changes read from the store per round trip while catching up.
const PAGE: usize = 1000;

/// What this replica holds of the store.
#[derive(Default)]
struct Held {
    /// Every change up to this number has been applied (or superseded).
    watermark: u64,
    /// The number of the last change applied per id (deletions included).
    seqs: HashMap<String, u64>,
}

/// The engine's side of a catalog store. See the module docs.
pub(crate) struct CatalogSync {
    pub(crate) store: Arc<dyn CatalogStore>,
    held: Mutex<Held>,
    loaded: AtomicBool,
}

/// Keeps the last copy of each id, in the order of those last copies.
pub(crate) fn dedup_last(items: Vec<Item>) -> Vec<Item> {
    let mut seen = HashSet::with_capacity(items.len());
    let mut out: Vec<Item> = items
        .into_iter()
        .rev()
        .filter(|i| seen.insert(i.id.clone()))
        .collect();
    out.reverse();
    out
}

/// Applies upserts and deletions to the in-memory catalog and the search indexes.
pub(crate) fn apply(
    catalog: &dyn Catalog,
    search: Option<&SearchIndex>,
    upserts: Vec<Item>,
    deletes: &[String],
) -> Result<UpsertOutcome> {
    let mut outcome = UpsertOutcome::default();
    if !upserts.is_empty() {
        if let Some(s) = search {
            s.upsert(&upserts)?;
        }
        outcome = catalog.upsert(upserts)?;
    }
    for id in deletes {
        if catalog.delete(id)?
            && let Some(s) = search
        {
            s.delete(id)?;
        }
    }
    Ok(outcome)
}

impl CatalogSync {
    pub(crate) fn new(store: Arc<dyn CatalogStore>) -> Self {
        CatalogSync {
            store,
            held: Mutex::new(Held::default()),
            loaded: AtomicBool::new(false),
        }
    }

    /// Whether the catalog has been read from the store once (at start, or by catching up).
    pub(crate) fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The watermark: every change up to it is held.
    pub(crate) fn watermark(&self) -> u64 {
        self.held.lock().watermark
    }

    /// Reads the whole catalog into memory (not the search indexes: the caller reuses or
    /// rebuilds them). Returns how many items.
    pub(crate) async fn load(&self, catalog: &dyn Catalog) -> Result<usize> {
        let snapshot = self.store.load().await.map_err(Error::Catalog)?;
        let mut held = self.held.lock();
        let n = snapshot.items.len();
        let mut items = Vec::with_capacity(n);
        for (seq, item) in snapshot.items {
            held.seqs.insert(item.id.to_string(), seq);
            items.push(item);
        }
        catalog.upsert(items)?;
        held.watermark = held.watermark.max(snapshot.seq);
        self.loaded.store(true, Ordering::Release);
        Ok(n)
    }

    /// Writes items through the store, then applies those no newer change has overtaken.
    pub(crate) async fn upsert(
        &self,
        catalog: &dyn Catalog,
        search: Option<&SearchIndex>,
        items: Vec<Item>,
    ) -> Result<UpsertOutcome> {
        let seqs = self.store.upsert(&items).await.map_err(Error::Catalog)?;
        let mut held = self.held.lock();
        let (mut fresh, mut taken) = (Vec::with_capacity(items.len()), Vec::new());
        for (item, seq) in items.into_iter().zip(seqs) {
            if newer(&held, item.id.as_str(), seq) {
                taken.push((item.id.to_string(), seq));
                fresh.push(item);
            }
        }
        let outcome = apply(catalog, search, fresh, &[])?;
        held.seqs.extend(taken);
        Ok(outcome)
    }

    /// Deletes through the store; returns whether the store held the item.
    pub(crate) async fn delete(
        &self,
        catalog: &dyn Catalog,
        search: Option<&SearchIndex>,
        id: &str,
    ) -> Result<bool> {
        let Some(seq) = self.store.delete(id).await.map_err(Error::Catalog)? else {
            return Ok(false);
        };
        let mut held = self.held.lock();
        if newer(&held, id, seq) {
            apply(catalog, search, Vec::new(), &[id.to_owned()])?;
            held.seqs.insert(id.to_owned(), seq);
        }
        Ok(true)
    }

    /// Applies every change above the watermark that is newer than what is held; returns how
    /// many changes were applied.
    pub(crate) async fn catch_up(
        &self,
        catalog: &dyn Catalog,
        search: Option<&SearchIndex>,
    ) -> Result<usize> {
        let mut applied = 0;
        loop {
            let from = self.held.lock().watermark;
            let changes = self
                .store
                .changes_since(from, PAGE)
                .await
                .map_err(Error::Catalog)?;
            let full = changes.len() == PAGE;
            let mut held = self.held.lock();
            if held.watermark != from {
                // Another catch-up ran meanwhile; read again from where it got to.
                continue;
            }
            let (mut upserts, mut deletes, mut taken) = (Vec::new(), Vec::new(), Vec::new());
            let mut high = held.watermark;
            for CatalogChange { seq, id, item } in changes {
                high = high.max(seq);
                if !newer(&held, &id, seq) {
                    continue;
                }
                taken.push((id.clone(), seq));
                match item {
                    Some(item) => upserts.push(item),
                    None => deletes.push(id),
                }
            }
            applied += taken.len();
            // Held moves only once memory has them: a failure is tried again next round.
            apply(catalog, search, upserts, &deletes)?;
            held.seqs.extend(taken);
            held.watermark = high;
            if !full {
                break;
            }
        }
        self.loaded.store(true, Ordering::Release);
        Ok(applied)
    }
}

impl CatalogSync {
    /// The ids the store changed after `seq` (upserts and deletions), for bringing an index
    /// saved at `seq` up to date.
    pub(crate) async fn changed_since(&self, seq: u64) -> Result<Vec<String>> {
        let mut from = seq;
        let mut ids = Vec::new();
        loop {
            let page = self
                .store
                .changes_since(from, PAGE)
                .await
                .map_err(Error::Catalog)?;
            let full = page.len() == PAGE;
            for c in page {
                from = from.max(c.seq);
                ids.push(c.id);
            }
            if !full {
                return Ok(ids);
            }
        }
    }
}

fn newer(held: &Held, id: &str, seq: u64) -> bool {
    held.seqs.get(id).is_none_or(|&s| seq > s)
}
