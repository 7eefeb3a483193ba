//! Integration tests of the text embedder against the real all-MiniLM-L6-v2 files.
//!
//! They need the model: `scripts/fetch-model` puts it in `$ATTUNE_MODEL_DIR` or
//! `~/.cache/attune/models/all-MiniLM-L6-v2` (CI runs it first). A missing model fails the run.
#![allow(clippy::unwrap_used, unreachable_pub, missing_docs)]

mod data;
mod reference;
mod sasrec;
mod semantic;
mod static_encoder;

use std::path::PathBuf;
use std::sync::OnceLock;

use attune_model::text::TextEmbedder;

/// Where `scripts/fetch-model` puts the model.
pub fn model_dir() -> PathBuf {
    match std::env::var_os("ATTUNE_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/attune/models/all-MiniLM-L6-v2")
        }
    }
}

/// The embedder, loaded once per test binary. Panics (fails the test) without the model.
pub fn embedder() -> &'static TextEmbedder {
    static EMBEDDER: OnceLock<TextEmbedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let dir = model_dir();
        TextEmbedder::load(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot load the text model from {}: {e}\n\
                 run `scripts/fetch-model` first (it downloads and verifies the model; \
                 set ATTUNE_MODEL_DIR to use another directory)",
                dir.display()
            )
        })
    })
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
