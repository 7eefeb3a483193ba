//! BM25 keyword retrieval over the catalog, with exact filters and facet counts (tantivy).
//!
//! [`KeywordIndex`] indexes [`Item`]s: title (boost 2), brand (1.5), every category level and every
//! attribute value (1), with English stemming ("yogurts" finds "yogurt") except for brands, which
//! are names ("Oatly" is not "oat"). A query is built from its words, never parsed as tantivy
//! query syntax, so any text is a valid query:
//! - every word is optional and at least one must match; each matched word adds a fixed bonus
//!   to the BM25 sum, so items matching more of the words come first ("oat milk": oat drinks
//!   filed under Milk before "Milk-Bone" dog biscuits);
//! - stop words ("the", "for", ...) are dropped when the query has other words;
//! - words of 5 or more characters tolerate one typo, of 9 or more two (a transposition is one),
//!   always scoring below an exact match;
//! - the last word also matches as a prefix while it is being typed ("yog" finds "yogurt");
//! - an empty query (or one without letters or digits) lists every item passing the filters,
//!   newest first, ties by id.
//!
//! Filters ([`SearchFilters`]) are exact and never change scores: brand, category path prefix,
//! `key:value` attributes, price range, stock. Facets count every match, not just one page.
//!
//! Changes become searchable at [`KeywordIndex::commit`]: one writer stays open, and the reader
//! reloads only on commit.
//!
//! ```
//! use attune_core::{Item, SearchFilters};
//! use attune_search::keyword::KeywordIndex;
//!
//! let index = KeywordIndex::open(None).unwrap();
//! let yogurt = Item::builder("y-1", "Creamy Vanilla Oat Yogurt")
//!     .brand("Oatly")
//!     .category("Dairy & Alternatives > Yogurt")
//!     .attribute("diet", ["plant_based"])
//!     .build()
//!     .unwrap();
//! index.upsert(&[yogurt]).unwrap();
//! index.commit().unwrap();
//!
//! let found = index.search("yougurts", &SearchFilters::default(), 10, 0).unwrap();
//! assert_eq!(found.hits[0].item_id, "y-1");
//! assert_eq!(found.facets.attributes["diet"][0].value, "plant_based");
//! ```

mod automaton;
mod collector;
mod match_bonus;
mod query;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use attune_core::{Item, SearchFilters};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tantivy::directory::MmapDirectory;
use tantivy::query::AllQuery;
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyError, Term};

use self::collector::{Order, SearchCollector};
use self::schema::Fields;

/// Most values returned per facet.
pub const MAX_FACET_VALUES: usize = 50;

/// Memory the writer may buffer before it flushes a segment.
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// What can go wrong in the keyword index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The index directory could not be created.
    #[error("cannot create the keyword index directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory could not be opened as an index (unreadable, or not a tantivy index).
    #[error("cannot open the keyword index in {}: {source}", path.display())]
    Open {
        /// The directory (empty for an index in RAM).
        path: PathBuf,
        /// Why.
        source: BackendError,
    },
    /// The directory holds an index with another schema (written by another version).
    #[error(
        "the keyword index in {} has another schema (written by another version of Attune?); \
         delete the directory to rebuild it from the catalog",
        path.display()
    )]
    SchemaMismatch {
        /// The directory.
        path: PathBuf,
    },
    /// Another `KeywordIndex` (in this process or another) has the directory open.
    #[error("the keyword index in {} is already open elsewhere", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// Adding or deleting documents failed.
    #[error("writing to the keyword index failed: {source}")]
    Write {
        /// Why.
        source: BackendError,
    },
    /// Committing or reloading failed; the changes since the last commit may be lost.
    #[error("committing the keyword index failed: {source}")]
    Commit {
        /// Why.
        source: BackendError,
    },
    /// A search failed (an I/O error reading the index).
    #[error("keyword search failed: {source}")]
    Search {
        /// Why.
        source: BackendError,
    },
}

/// An error from the search library underneath, kept opaque so its types stay out of this API.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BackendError(TantivyError);

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One hit: an item and its relevance score (0 when listing without query text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeywordHit {
    /// The item.
    pub item_id: String,
    /// BM25 over the fields plus a fixed bonus per matched query word; higher is better.
    /// Only comparable within one search.
    pub score: f32,
}

/// One page of hits, with the total and facets over every match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KeywordHits {
    /// The hits of the page, best first (ties by id).
    pub hits: Vec<KeywordHit>,
    /// Every item matching the query and the filters.
    pub total: usize,
    /// Facet counts over every match.
    pub facets: Facets,
}

/// Value counts over all the items matching a search, each list by count descending then
/// value, at most [`MAX_FACET_VALUES`] values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Facets {
    /// Brands.
    pub brand: Vec<FacetValue>,
    /// Every level of the category paths, as path prefixes (`A`, `A > B`).
    pub category: Vec<FacetValue>,
    /// Each attribute key's values.
    pub attributes: BTreeMap<String, Vec<FacetValue>>,
    /// `true` and `false` (only those with a count).
    pub in_stock: Vec<FacetValue>,
    /// The lowest and highest price among matches that have one.
    pub price: Option<PriceRange>,
}

/// One value of a facet and how many matching items have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacetValue {
    /// The value.
    pub value: String,
    /// Matching items with it.
    pub count: u64,
}

/// A price range, bounds inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriceRange {
    /// Lowest price.
    pub min: f64,
    /// Highest price.
    pub max: f64,
}

/// The writer and whether it holds uncommitted changes.
struct Writer {
    writer: IndexWriter,
    dirty: bool,
}

/// The keyword index of the catalog. Thread-safe: share it behind an `Arc`.
pub struct KeywordIndex {
    fields: Fields,
    reader: IndexReader,
    writer: Mutex<Writer>,
    analyzer: TextAnalyzer,
}

impl std::fmt::Debug for KeywordIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeywordIndex")
            .field("items", &self.len())
            .finish_non_exhaustive()
    }
}

impl KeywordIndex {
    /// Opens the index in `dir` (creating the directory and an empty index if needed), or an
    /// empty index in RAM when `dir` is `None`.
    ///
    /// Errors: [`Error::SchemaMismatch`] if `dir` holds an index with another schema,
    /// [`Error::Locked`] if another `KeywordIndex` has it open.
    pub fn open(dir: Option<&Path>) -> Result<Self> {
        let (schema, fields) = schema::build();
        let path = dir.map(Path::to_path_buf).unwrap_or_default();
        let open_err = |source| Error::Open {
            path: path.clone(),
            source: BackendError(source),
        };
        let index = match dir {
            None => Index::create_in_ram(schema.clone()),
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                    path: path.clone(),
                    source,
                })?;
                let directory =
                    MmapDirectory::open(dir).map_err(|e| open_err(TantivyError::from(e)))?;
                if Index::exists(&directory).map_err(|e| open_err(TantivyError::from(e)))? {
                    let index = Index::open(directory).map_err(open_err)?;
                    if index.schema() != schema {
                        return Err(Error::SchemaMismatch { path });
                    }
                    index
                } else {
                    Index::create(directory, schema.clone(), Default::default())
                        .map_err(open_err)?
                }
            }
        };
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
            .map_err(|e| match e {
                TantivyError::LockFailure(..) => Error::Locked { path: path.clone() },
                e => open_err(e),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(open_err)?;
        let analyzer = index.tokenizer_for_field(fields.title).map_err(open_err)?;
        Ok(KeywordIndex {
            fields,
            reader,
            writer: Mutex::new(Writer {
                writer,
                dirty: false,
            }),
            analyzer,
        })
    }

    /// Adds items, replacing any with the same id. Searchable after [`commit`](Self::commit).
    pub fn upsert(&self, items: &[Item]) -> Result<()> {
        let mut w = self.writer.lock();
        for item in items {
            w.writer
                .delete_term(Term::from_field_text(self.fields.id, item.id.as_str()));
            w.dirty = true;
            w.writer
                .add_document(schema::document(&self.fields, item))
                .map_err(|e| Error::Write {
                    source: BackendError(e),
                })?;
        }
        Ok(())
    }

    /// Removes items by id (unknown ids are ignored). Effective after [`commit`](Self::commit).
    pub fn delete(&self, ids: &[&str]) -> Result<()> {
        let mut w = self.writer.lock();
        for id in ids {
            w.writer
                .delete_term(Term::from_field_text(self.fields.id, id));
            w.dirty = true;
        }
        Ok(())
    }

    /// Makes every change so far searchable (and durable, on disk). Cheap when nothing changed.
    pub fn commit(&self) -> Result<()> {
        let mut w = self.writer.lock();
        if !w.dirty {
            return Ok(());
        }
        let commit_err = |e| Error::Commit {
            source: BackendError(e),
        };
        w.writer.commit().map_err(commit_err)?;
        self.reader.reload().map_err(commit_err)?;
        // Only now: if the reload failed, the next commit retries it.
        w.dirty = false;
        Ok(())
    }

    /// Replaces the whole content with `items` and commits. Of items sharing an id, the last
    /// one wins, as with [`upsert`](Self::upsert).
    pub fn rebuild(&self, items: &[Item]) -> Result<()> {
        let mut seen = HashSet::with_capacity(items.len());
        let mut latest: Vec<&Item> = items
            .iter()
            .rev()
            .filter(|i| seen.insert(i.id.as_str()))
            .collect();
        latest.reverse();
        {
            let mut w = self.writer.lock();
            // Deletes everything added before it, committed or not (by operation stamp).
            w.writer
                .delete_query(Box::new(AllQuery))
                .map_err(|e| Error::Write {
                    source: BackendError(e),
                })?;
            w.dirty = true;
            for item in latest {
                w.writer
                    .add_document(schema::document(&self.fields, item))
                    .map_err(|e| Error::Write {
                        source: BackendError(e),
                    })?;
            }
        }
        self.commit()
    }

    /// Number of searchable items (as of the last commit).
    pub fn len(&self) -> usize {
        usize::try_from(self.reader.searcher().num_docs()).unwrap_or(usize::MAX)
    }

    /// Whether no item is searchable.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Searches: the hits `offset..offset + limit` by relevance (or newest first when `query`
    /// has no letters or digits), the number of matches and facets over all of them.
    ///
    /// Any text is accepted: punctuation only separates words. Filters on attribute keys no
    /// item has match nothing.
    pub fn search(
        &self,
        query: &str,
        filters: &SearchFilters,
        limit: usize,
        offset: usize,
    ) -> Result<KeywordHits> {
        let terms = query::terms(&mut self.analyzer.clone(), query);
        if terms.is_empty() && query.chars().any(char::is_alphanumeric) {
            // Only words too long to be indexed (40 bytes or more): nothing can match.
            return Ok(KeywordHits::default());
        }
        let order = if terms.is_empty() {
            Order::Newest
        } else {
            Order::Relevance
        };
        let tantivy_query = query::query(&self.fields, &terms, filters);
        let searcher = self.reader.searcher();
        let num_docs = usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX);
        let collector = SearchCollector {
            top: offset.saturating_add(limit).min(num_docs),
            order,
        };
        let found = searcher
            .search(&*tantivy_query, &collector)
            .map_err(|e| Error::Search {
                source: BackendError(e),
            })?;
        let hits = found
            .hits
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(key, item_id)| KeywordHit {
                item_id,
                // The key is the score (an f32) for relevance, a time for browsing.
                score: match order {
                    Order::Relevance => key as f32,
                    Order::Newest => 0.0,
                },
            })
            .collect();
        Ok(KeywordHits {
            hits,
            total: usize::try_from(found.total).unwrap_or(usize::MAX),
            facets: found.facets,
        })
    }
}
