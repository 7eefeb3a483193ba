//! The catalog the engine serves from: the [`Catalog`] seam and its in-memory implementation,
//! [`MemoryCatalog`] (the embedded default; a PostgreSQL-backed catalog keeps one in memory and
//! writes through).
//!
//! Each item is stored with its precomputed [`ItemFeatures`], whose strings are interned so that
//! every item and every session naming the brand "Oatly" shares one allocation (and session
//! lookups can compare pointers), and numbered ([`KeyIds`]): the reranker matches a visitor's
//! affinities to candidates by those ids. The [`Vocabulary`] used to read intents out of queries
//! is kept in step with every upsert and delete.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use attune_core::{AffinityKind, Item, ItemFeatures, ItemId, Key, KeyIds, KeySlots, Vocabulary};
use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::error::Result;

/// An item with the features it lends to affinities.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogItem {
    /// The item as upserted.
    pub item: Item,
    /// Its affinity keys.
    pub features: ItemFeatures,
    /// The catalog's [`KeyIds`] ids of those keys (brand, category levels, attributes).
    pub feature_ids: Vec<u32>,
    /// Its near-duplicate key: equal for two items of the catalog exactly when their brands and
    /// normalized titles ([`attune_core::rerank::normalize_title`]) are, numbered at upsert so
    /// that a list of candidates is prepared without reading a title
    /// ([`attune_core::rerank::KeySpace::prepare_keyed`]).
    pub duplicate: u32,
    /// The item's JSON as the API writes it, kept by the API layer on first use.
    pub wire: WireMemo,
}

/// A memo of an item's wire form (its JSON as the API writes it), filled by the API layer the
/// first time it writes the item and dropped with it. A changed item is a new [`CatalogItem`],
/// so the memo is never stale. Search answers write a page of items per request: one copy of a
/// contiguous buffer instead of walking each item's strings and attribute map.
#[derive(Default, Clone)]
pub struct WireMemo(OnceLock<Box<serde_json::value::RawValue>>);

impl WireMemo {
    /// The memo, rendering it with `render` if it is empty (a failed render is not kept).
    pub fn get_or_render<E>(
        &self,
        render: impl FnOnce() -> Result<Box<serde_json::value::RawValue>, E>,
    ) -> Result<&serde_json::value::RawValue, E> {
        if let Some(v) = self.0.get() {
            return Ok(v);
        }
        let v = render()?;
        Ok(self.0.get_or_init(|| v))
    }
}

/// A cache, not part of the item's value: every memo equals every other.
impl PartialEq for WireMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for WireMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "WireMemo(filled)"
        } else {
            "WireMemo(empty)"
        })
    }
}

/// How an upsert changed the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpsertOutcome {
    /// Items that were new.
    pub inserted: usize,
    /// Items that replaced an existing one.
    pub updated: usize,
}

/// An item's brand and normalized title: what near-duplicates share.
type TitleKey = (Option<Arc<str>>, String);

#[derive(Default)]
struct Inner {
    /// In id order (pages, rebuilds).
    items: BTreeMap<ItemId, Arc<CatalogItem>>,
    /// Every item id ever upserted, numbered with a dense slot that is stamped into the ids'
    /// allocations (the items' own, and the copies the online sources and sessions hold), so
    /// that a lookup by such an id is an index into `slots`: a recommendation asks hundreds per
    /// request, and a hash probe reads the id's string and a bucket of a table of the whole
    /// catalog. A slot is never reused: a deleted id keeps its slot for when it comes back.
    slot_ids: KeySlots,
    /// The items by slot (`None`: deleted).
    slots: Vec<Option<Arc<CatalogItem>>>,
    vocab: Vocabulary,
    /// Every feature string, interned and numbered.
    strings: KeyIds,
    /// How many items carry each attribute key (filters on other keys are errors).
    attribute_keys: std::collections::HashMap<String, usize>,
    /// (Brand, normalized title) → (its near-duplicate key, how many items hold it); an entry
    /// goes with its last item, and keys are never reused.
    duplicates: FxHashMap<TitleKey, (u32, u32)>,
    /// The next near-duplicate key.
    next_duplicate: u32,
}

impl Inner {
    /// The item at a slot.
    fn at(&self, slot: Option<u32>) -> Option<&Arc<CatalogItem>> {
        self.slots.get(slot? as usize)?.as_ref()
    }

    /// The near-duplicate key of an item being added (counted until [`Inner::forget_duplicate`]).
    fn duplicate(&mut self, item: &Item) -> u32 {
        let key = (
            item.brand.clone(),
            attune_core::rerank::normalize_title(&item.title),
        );
        let next = &mut self.next_duplicate;
        let entry = self.duplicates.entry(key).or_insert_with(|| {
            let id = *next;
            // Not reused while the process lives (a request in flight may hold an item with a
            // key that went); after 2^32 new titles a key comes round again rather than the
            // upsert failing.
            *next = next.wrapping_add(1);
            (id, 0)
        });
        entry.1 += 1;
        entry.0
    }

    /// An item that is going: its near-duplicate key loses a holder.
    fn forget_duplicate(&mut self, item: &Item) {
        let key = (
            item.brand.clone(),
            attune_core::rerank::normalize_title(&item.title),
        );
        if let Some(entry) = self.duplicates.get_mut(&key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.duplicates.remove(&key);
            }
        }
    }

    fn forget_attribute_keys(&mut self, item: &Item) {
        for k in item.attributes.keys() {
            if let Some(n) = self.attribute_keys.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    self.attribute_keys.remove(k);
                }
            }
        }
    }

    /// The item's features with the catalog's allocations of their strings, and their ids.
    fn interned_features(&mut self, item: &Item) -> (ItemFeatures, Vec<u32>) {
        let f = item.features();
        let mut ids = Vec::with_capacity(
            usize::from(f.brand.is_some()) + f.categories.len() + f.attributes.len(),
        );
        let mut intern = |k: &Key| {
            let (k, id) = self.strings.intern(k);
            ids.push(id);
            k
        };
        let features = ItemFeatures {
            brand: f.brand.as_ref().map(&mut intern),
            categories: f.categories.iter().map(&mut intern).collect(),
            attributes: f.attributes.iter().map(&mut intern).collect(),
        };
        // The intent keys of the brand and category levels too, so that the intents searches
        // leave in sessions are the interned allocations (matched by address, not by string).
        if let Some(b) = &features.brand {
            self.strings.intern_intent(AffinityKind::Brand, b);
        }
        for c in &features.categories {
            self.strings.intern_intent(AffinityKind::Category, c);
        }
        (features, ids)
    }
}

/// What the engine needs of a catalog: items by id, pages, the interned feature strings the
/// reranker matches by id, and the vocabulary that reads intents out of queries. Reads never
/// fail (they are served from memory); writes may (a backend that stores the catalog elsewhere).
pub trait Catalog: Send + Sync + 'static {
    /// Inserts or replaces items (already validated); all or nothing.
    fn upsert(&self, items: Vec<Item>) -> Result<UpsertOutcome>;
    /// Removes an item; returns whether it existed.
    fn delete(&self, id: &str) -> Result<bool>;
    /// One item.
    fn get(&self, id: &str) -> Option<Arc<CatalogItem>>;
    /// One item, by an id that may be the catalog's own copy (the online sources and sessions
    /// hold those): a backend may then match it by address instead of comparing the strings.
    fn get_id(&self, id: &ItemId) -> Option<Arc<CatalogItem>> {
        self.get(id.as_str())
    }
    /// Several items, in the order asked (`None` where unknown).
    fn get_many(&self, ids: &[&str]) -> Vec<Option<Arc<CatalogItem>>>;
    /// A page of items in id order, and the total count.
    fn list(&self, offset: usize, limit: usize) -> (Vec<Arc<CatalogItem>>, usize);
    /// Every item, in id order (for rebuilding indexes).
    fn all(&self) -> Vec<Arc<CatalogItem>>;
    /// How many items.
    fn len(&self) -> usize;
    /// Whether the catalog is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether any item carries the attribute key.
    fn has_attribute_key(&self, key: &str) -> bool;
    /// The catalog's shared copy of a feature key (a brand, a category path prefix, or an
    /// attribute `key:value`), if some item has it.
    fn feature_key(&self, key: &str) -> Option<Key>;
    /// Runs `f` with the ids of the catalog's feature strings (as in
    /// [`CatalogItem::feature_ids`]), exactly once, consistently with the items.
    fn visit_ids(&self, f: &mut dyn FnMut(&KeyIds));
    /// The intents a search names: its filter values, then the query terms the catalog knows.
    fn search_intents(&self, query: &str, filters: &attune_core::SearchFilters) -> Vec<Key>;
}

impl dyn Catalog {
    /// Runs `f` with the ids of the catalog's feature strings and returns what it returns.
    pub fn with_ids<R>(&self, f: impl FnOnce(&KeyIds) -> R) -> R {
        with_ids(self, f)
    }
}

/// [`Catalog::visit_ids`] for a closure that returns a value.
pub fn with_ids<C: Catalog + ?Sized, R>(catalog: &C, f: impl FnOnce(&KeyIds) -> R) -> R {
    let mut f = Some(f);
    let mut out = None;
    catalog.visit_ids(&mut |ids| {
        if let Some(f) = f.take() {
            out = Some(f(ids));
        }
    });
    match (out, f) {
        (Some(out), _) => out,
        // The trait asks every implementation to call the visitor once; one that did not is
        // read as knowing no feature string (nothing matches), the safe reading.
        (None, Some(f)) => f(&KeyIds::default()),
        (None, None) => unreachable!("the visitor ran and returned nothing"),
    }
}

/// The catalog held in this process. See the module docs.
#[derive(Default)]
pub struct MemoryCatalog {
    inner: RwLock<Inner>,
}

impl MemoryCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces items (already validated).
    pub fn upsert_items(&self, items: Vec<Item>) -> UpsertOutcome {
        let mut inner = self.inner.write();
        let mut outcome = UpsertOutcome::default();
        // An id repeated within one upsert counts once: the last copy wins.
        let mut fresh: HashSet<ItemId> = HashSet::new();
        for item in items {
            let (features, feature_ids) = inner.interned_features(&item);
            let duplicate = inner.duplicate(&item);
            inner.vocab.add(&item);
            for k in item.attributes.keys() {
                *inner.attribute_keys.entry(k.clone()).or_insert(0) += 1;
            }
            let entry = Arc::new(CatalogItem {
                item,
                features,
                feature_ids,
                duplicate,
                wire: WireMemo::default(),
            });
            let id = entry.item.id.clone();
            let slot = inner.slot_ids.slot(id.as_key()) as usize;
            if slot >= inner.slots.len() {
                inner.slots.resize(slot + 1, None);
            }
            inner.slots[slot] = Some(Arc::clone(&entry));
            match inner.items.insert(id.clone(), entry) {
                Some(old) => {
                    inner.vocab.remove(&old.item);
                    inner.forget_attribute_keys(&old.item);
                    inner.forget_duplicate(&old.item);
                    if !fresh.contains(&id) {
                        outcome.updated += 1;
                    }
                }
                None => {
                    outcome.inserted += 1;
                    fresh.insert(id);
                }
            }
        }
        outcome
    }
}

impl Catalog for MemoryCatalog {
    fn upsert(&self, items: Vec<Item>) -> Result<UpsertOutcome> {
        Ok(self.upsert_items(items))
    }

    /// Removes an item; returns whether it existed.
    fn delete(&self, id: &str) -> Result<bool> {
        let mut inner = self.inner.write();
        if let Some(slot) = inner.slot_ids.get(id) {
            inner.slots[slot as usize] = None;
        }
        match inner.items.remove(id) {
            Some(old) => {
                inner.vocab.remove(&old.item);
                inner.forget_attribute_keys(&old.item);
                inner.forget_duplicate(&old.item);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// One item.
    fn get(&self, id: &str) -> Option<Arc<CatalogItem>> {
        let inner = self.inner.read();
        inner.at(inner.slot_ids.get(id)).cloned()
    }

    /// By the slot stamped in the id's allocation when it is one the catalog numbered (its
    /// items' ids and the copies handed out), else by the string.
    fn get_id(&self, id: &ItemId) -> Option<Arc<CatalogItem>> {
        let inner = self.inner.read();
        inner.at(inner.slot_ids.slot_of(id.as_key())).cloned()
    }

    /// Several items under one lock, in the order asked (`None` where unknown).
    fn get_many(&self, ids: &[&str]) -> Vec<Option<Arc<CatalogItem>>> {
        let inner = self.inner.read();
        ids.iter()
            .map(|id| inner.at(inner.slot_ids.get(id)).cloned())
            .collect()
    }

    /// A page of items in id order, and the total count.
    fn list(&self, offset: usize, limit: usize) -> (Vec<Arc<CatalogItem>>, usize) {
        let inner = self.inner.read();
        let page = inner
            .items
            .values()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        (page, inner.items.len())
    }

    /// Whether any item carries the attribute key.
    fn has_attribute_key(&self, key: &str) -> bool {
        self.inner.read().attribute_keys.contains_key(key)
    }

    /// Every item, in id order (for rebuilding indexes).
    fn all(&self) -> Vec<Arc<CatalogItem>> {
        self.inner.read().items.values().cloned().collect()
    }

    /// How many items.
    fn len(&self) -> usize {
        self.inner.read().items.len()
    }

    /// The catalog's shared copy of a feature key (a brand, a category path prefix, or an
    /// attribute `key:value`), if some item has it.
    fn feature_key(&self, key: &str) -> Option<Key> {
        self.inner.read().strings.get(key).cloned()
    }

    /// Under one read lock.
    fn visit_ids(&self, f: &mut dyn FnMut(&KeyIds)) {
        f(&self.inner.read().strings);
    }

    /// The intents a search names: its filter values, then the query terms the catalog knows.
    fn search_intents(&self, query: &str, filters: &attune_core::SearchFilters) -> Vec<Key> {
        let mut intents = attune_core::vocab::filter_intents(filters);
        let inner = self.inner.read();
        for intent in inner.vocab.match_query(query) {
            if !intents.iter().any(|i| i.same(&intent)) {
                intents.push(intent);
            }
        }
        // Share the catalog's strings where it has them.
        for i in &mut intents {
            if let Some(shared) = inner.strings.get(i.as_str()) {
                *i = shared.clone();
            }
        }
        intents
    }
}
