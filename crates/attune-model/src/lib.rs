//! Attune's models. Candle types never appear in a public signature: callers get plain vectors.
//!
//! - [`text`]: a sentence embedder (all-MiniLM-L6-v2, a 6-layer BERT) with its WordPiece tokenizer
//!   ([`wordpiece`]), loaded from local files, run on CPU with candle.

pub mod text;
pub mod wordpiece;
