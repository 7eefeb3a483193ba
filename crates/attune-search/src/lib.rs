//! Attune's catalog index: what can be retrieved for a query, before any personalization.
//!
//! - [`keyword`]: BM25 over title, brand, category path and attribute values (tantivy), with
//!   stemming and typo tolerance; exact filters on every item field and attribute key; facet counts.
//! - [`vector`]: nearest neighbours by cosine over item embeddings; exact below a size threshold,
//!   HNSW above it.
//! - [`fusion`]: reciprocal rank fusion of the two lists, keeping each item's ranks.
//! - [`cache`]: the retrieval cache of unpersonalized candidates, invalidated by catalog changes.
//!
//! It does not own personalization (the reranker is in `attune-core`), embeddings (computed by
//! `attune-model`, handed in as vectors) or the catalog of record (the engine's).

pub mod cache;
pub mod fusion;
pub mod keyword;
pub mod vector;
