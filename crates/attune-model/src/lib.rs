//! Attune's models. Candle types never appear in a public signature: callers get plain vectors
//! and this crate's [`Error`].
//!
//! - [`text`]: a sentence embedder (all-MiniLM-L6-v2, a 6-layer BERT written here with candle ops)
//!   loaded from local files and run on CPU; 384-dimensional unit vectors for hybrid search.
//! - [`static_encoder`]: a static query encoder distilled from that model (each token's vector is
//!   the model's own embedding of it; a text's is their normalized sum), in the model's output
//!   space, for queries at microseconds instead of milliseconds.
//! - [`wordpiece`]: its BERT uncased WordPiece tokenizer, token-for-token what Hugging Face's
//!   tokenizer.json produces.
//! - [`scorer`]: the [`scorer::SequenceScorer`] seam every next-item model implements, and
//!   [`manifest`], the JSON manifest saved beside every trained model.
//! - [`sasrec`]: the SASRec transformer (candle): training, checkpoints, scoring.
//! - [`popularity`] and [`cooccurrence`]: the baselines (item counts with decay; item-to-item
//!   counts within a window), also usable as recommendation sources.
//! - [`data`]: loaders of the public datasets and of Attune's event log into sequences of dense
//!   item indices, and the leave-one-out split; [`eval`]: the offline protocols (sampled, full,
//!   SR-GNN) over any scorer, with the metrics of `attune_core::metrics`.
//!
//! It does not download anything (`scripts/fetch-model` does, ahead of time), read the
//! environment, or know about catalogs and indexes: the search crate decides what text to embed.
//! Data files are read only when a caller names them (the `attune` binary, tests).

mod bert;
pub mod cooccurrence;
pub mod data;
mod error;
pub mod eval;
mod kernels;
pub mod manifest;
pub mod popularity;
pub mod sasrec;
pub mod scorer;
pub mod static_encoder;
pub mod text;
pub mod wordpiece;

pub use error::{BackendError, Error, Result};
