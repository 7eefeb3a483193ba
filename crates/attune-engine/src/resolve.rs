//! What one event needs from the catalog, looked up before the atomic session update (so no
//! catalog lock is held inside a store operation).

use std::sync::Arc;

use attune_core::{Event, EventKind, Key, Rules, Session};

use crate::catalog::{Catalog, CatalogItem};

/// An event's catalog context: the item it names (`None` when the catalog does not know it), or
/// the intents of a search.
#[derive(Clone)]
pub(crate) enum Resolved {
    Item(Option<Arc<CatalogItem>>),
    Search(Vec<Key>),
}

impl Resolved {
    /// Applies `event` to a session (or profile) with this context; `false` when the event's
    /// `event_id` was applied to it already (then nothing changes).
    pub(crate) fn apply(&self, s: &mut Session, event: &Event, rules: &Rules) -> bool {
        if let Some(id) = &event.event_id
            && !s.first_application(id)
        {
            return false;
        }
        match self {
            Resolved::Item(item) => {
                s.apply(event, item.as_deref().map(|c| &c.features), rules);
            }
            Resolved::Search(intents) => {
                s.apply_search(event, intents, rules);
            }
        }
        true
    }
}

/// Resolves each event against the catalog, in order.
pub(crate) fn resolve(catalog: &dyn Catalog, events: &[Event]) -> Vec<Resolved> {
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.item_id.as_ref().map_or("", |i| i.as_str()))
        .collect();
    let items = catalog.get_many(&ids);
    events
        .iter()
        .zip(items)
        .map(|(e, item)| match (e.kind, &e.search) {
            (EventKind::Search, Some(search)) => {
                Resolved::Search(catalog.search_intents(&search.query, &search.filters))
            }
            (EventKind::Search, None) => Resolved::Search(Vec::new()),
            _ => Resolved::Item(item),
        })
        .collect()
}
