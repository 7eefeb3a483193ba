//! The engine's text encoder over all-MiniLM-L6-v2: item texts always through the model; search
//! queries through the model (`search.query_encoder: model`, the default) or through the static
//! table distilled from it (`static`) once that table is ready, through the model until then.
//!
//! The table is kept beside the model as `static-query-encoder.bin`, its header naming the table
//! format and a SHA-256 digest of the model's files, so a table from another model is never used.
//! `attune fetch-model` builds it; otherwise the first server start on that model builds it in the
//! background (about a minute on two cores) and saves it there, and later starts read it.
//!
//! With the static table read at start, the model itself (about 97 MB resident) is loaded only
//! when an item needs embedding: a server whose saved vectors cover its catalog never loads it.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context;
use attune_engine::TextEncoder;
use attune_model::static_encoder::StaticEncoder;
use attune_model::text::TextEmbedder;
use attune_model::wordpiece::WordPiece;

/// The table's file name in the model directory.
pub(crate) const TABLE_FILE: &str = "static-query-encoder.bin";

/// The weighting of the table's rows: `sif / (sif + p)` with `p` the token's Zipf probability
/// over the vocabulary's order. Chosen on the validation half of `attune eval-search` on the
/// fashion catalog (1e-3, 1e-4, 5e-5, 3e-5, 2e-5, 1e-5 and no weighting tried; bench/README.md).
const ZIPF_SIF: f32 = 3e-5;

/// The model files the table depends on.
const MODEL_FILES: [&str; 3] = ["config.json", "vocab.txt", "model.safetensors"];

/// The model's name in logs and reports.
const NAME: &str = "all-MiniLM-L6-v2";
/// The query encoder's name once the static table answers.
pub(crate) const STATIC_NAME: &str = "all-MiniLM-L6-v2 static";

/// A digest of the model files in `dir` (SHA-256 over each file's digest in a fixed order).
pub(crate) fn model_digest(dir: &Path) -> anyhow::Result<String> {
    let mut all = String::new();
    for name in MODEL_FILES {
        let path = dir.join(name);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let digest = crate::fetch_model::sha256_hex(BufReader::new(file))
            .with_context(|| format!("reading {}", path.display()))?;
        all.push_str(name);
        all.push('=');
        all.push_str(&digest);
        all.push('\n');
    }
    crate::fetch_model::sha256_hex(all.as_bytes()).context("hashing the model digests")
}

/// The static table for the model in `dir`: read from its file when it was built from these
/// model files with this table format, otherwise distilled (progress through `progress`) and
/// saved there (a directory that cannot be written keeps it in memory only, with a warning).
pub(crate) fn prepare_table(
    dir: &Path,
    model: &TextEmbedder,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<StaticEncoder> {
    let digest = model_digest(dir)?;
    let path = dir.join(TABLE_FILE);
    if path.exists() {
        match StaticEncoder::load(&path, &digest, model.tokenizer()) {
            Ok(Some(table)) => return Ok(table),
            Ok(None) => progress(
                "the static query encoder was built from other model files or format; building it again",
            ),
            Err(e) => progress(&format!("{e}; building it again")),
        }
    }
    let started = Instant::now();
    let mut last = 0;
    let table = StaticEncoder::distill(model, &mut |done, of| {
        let tenth = done * 10 / of.max(1);
        if tenth > last {
            last = tenth;
            progress(&format!("static query encoder: {done} of {of} tokens"));
        }
    })?;
    progress(&format!(
        "static query encoder built in {:.0}s",
        started.elapsed().as_secs_f64()
    ));
    if let Err(e) = table.save(&path, &digest) {
        tracing::warn!(error = %e, "the static query encoder is kept in memory only");
    }
    Ok(table)
}

/// The static table saved beside the model in `dir`, with its token weights, if it is there and
/// was built from these model files (`Ok(None)` otherwise: it must be built from the model).
pub(crate) fn read_table(dir: &Path) -> anyhow::Result<Option<StaticEncoder>> {
    let path = dir.join(TABLE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let digest = model_digest(dir)?;
    // The tokenizer as the model loads it (128 tokens at most, all-MiniLM-L6-v2 has 512 positions).
    let tokenizer = WordPiece::from_file(&dir.join("vocab.txt"))?;
    Ok(StaticEncoder::load(&path, &digest, &tokenizer)?.map(|t| t.with_zipf_weights(ZIPF_SIF)))
}

/// Which encoder embeds queries (`search.query_encoder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum QueryEncoderSetting {
    /// The static table (the model until it is ready).
    Static,
    /// The model itself, for every query.
    Model,
}

/// all-MiniLM-L6-v2 for items, its static table (when ready) for queries.
pub(crate) struct MiniLm {
    dir: PathBuf,
    /// The model, loaded at start or at the first text to embed (an error is kept: it names the
    /// files).
    model: OnceLock<Result<Arc<TextEmbedder>, String>>,
    table: Arc<OnceLock<StaticEncoder>>,
    dim: usize,
    /// The fusion weight of the table's query vectors (`search.static_weight`).
    static_weight: f32,
}

impl MiniLm {
    /// The model for items and queries; with `setting` = static, the table is read or built by
    /// a background thread and answers queries once it is ready.
    pub(crate) fn new(
        model: TextEmbedder,
        dir: PathBuf,
        setting: QueryEncoderSetting,
        static_weight: f32,
    ) -> Self {
        let model = Arc::new(model);
        let table = Arc::new(OnceLock::new());
        let dim = model.dim();
        if setting == QueryEncoderSetting::Static {
            let (model, table, dir) = (Arc::clone(&model), Arc::clone(&table), dir.clone());
            let spawned = std::thread::Builder::new()
                .name("attune-static-encoder".into())
                .spawn(move || {
                    match prepare_table(&dir, &model, &mut |line| tracing::info!("{line}")) {
                        Ok(t) => {
                            let t = t.with_zipf_weights(ZIPF_SIF);
                            let _ = table.set(t);
                            tracing::info!("queries are embedded by the static query encoder");
                        }
                        Err(e) => tracing::error!(
                            error = format!("{e:#}"),
                            "no static query encoder: queries go through the model"
                        ),
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the static encoder's thread; queries go through the model");
            }
        }
        Self {
            dir,
            model: OnceLock::from(Ok(model)),
            table,
            dim,
            static_weight,
        }
    }

    /// Queries through `table` from the start; the model in `dir` is loaded when the first item
    /// text needs embedding.
    pub(crate) fn with_table(dir: PathBuf, table: StaticEncoder, static_weight: f32) -> Self {
        Self {
            dir,
            model: OnceLock::new(),
            dim: table.dim(),
            table: Arc::new(OnceLock::from(table)),
            static_weight,
        }
    }

    /// The model, loaded now if it was not.
    fn model(&self) -> Result<&TextEmbedder, String> {
        self.model
            .get_or_init(|| {
                let started = Instant::now();
                let model = TextEmbedder::load(&self.dir).map_err(|e| {
                    format!(
                        "loading the embedding model from {}: {e}",
                        self.dir.display()
                    )
                })?;
                tracing::info!(
                    dir = %self.dir.display(),
                    ms = started.elapsed().as_millis() as u64,
                    "embedding model loaded to embed items"
                );
                Ok(Arc::new(model))
            })
            .as_deref()
            .map_err(Clone::clone)
    }

    /// Whether the static table answers queries now.
    pub(crate) fn static_ready(&self) -> bool {
        self.table.get().is_some()
    }
}

impl TextEncoder for MiniLm {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.model()?.embed(texts).map_err(|e| e.to_string())
    }
    fn embed_query(&self, query: &str) -> Result<Vec<f32>, String> {
        match self.table.get() {
            Some(table) => Ok(table.embed(query)),
            None => self.model()?.embed_one(query).map_err(|e| e.to_string()),
        }
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn name(&self) -> &str {
        NAME
    }
    fn query_encoder(&self) -> &str {
        if self.static_ready() {
            STATIC_NAME
        } else {
            NAME
        }
    }
    fn query_weight(&self) -> f32 {
        if self.static_ready() {
            self.static_weight
        } else {
            1.0
        }
    }
}
