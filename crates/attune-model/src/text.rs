//! Sentence embeddings: all-MiniLM-L6-v2 (a 6-layer BERT, 384 dimensions) with mean pooling and
//! L2 normalization, the way sentence-transformers computes them, on CPU.
//!
//! The model directory holds the Hugging Face files `config.json`, `vocab.txt` and
//! `model.safetensors` (`scripts/fetch-model` downloads and verifies them). Texts are tokenized by
//! [`WordPiece`], sorted by length and run in batches padded to their longest text, so a large
//! import wastes little work on padding.
//!
//! Speed: the encoder is bound by candle's f32 matrix multiplications. Candle sizes its thread
//! pools from the physical cores unless `CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS` say otherwise
//! (the binary's business, not this crate's); its workers spin while waiting, so on a machine whose
//! cores are busy with other work one thread can be faster than two.

use std::cmp::Reverse;
use std::path::Path;
use std::time::Instant;

use crate::bert::{Bert, BertConfig};
use crate::error::{BackendError, Error, Result};
use crate::wordpiece::{DEFAULT_MAX_LEN, WordPiece};

/// Texts per forward pass unless [`TextEmbedder::with_batch_size`] says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// A sentence embedder: text in, unit-length `f32` vector of [`TextEmbedder::dim`] values out.
///
/// Cheap to share: `Send + Sync`, and [`TextEmbedder::embed`] takes `&self`.
///
/// ```no_run
/// use attune_model::text::TextEmbedder;
///
/// let embedder = TextEmbedder::load("models/all-MiniLM-L6-v2".as_ref())?;
/// let vectors = embedder.embed(&["oat milk", "plant-based dairy-free drink", "motorcycle helmet"])?;
/// assert_eq!(vectors[0].len(), embedder.dim());
/// let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
/// assert!(cos(&vectors[0], &vectors[1]) > cos(&vectors[0], &vectors[2]));
/// # Ok::<(), attune_model::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TextEmbedder {
    tokenizer: WordPiece,
    bert: Bert,
    batch_size: usize,
}

impl TextEmbedder {
    /// Loads `config.json`, `vocab.txt` and `model.safetensors` from `dir`. Texts are truncated to
    /// 128 tokens and run 32 at a time unless changed with [`Self::with_max_tokens`] and
    /// [`Self::with_batch_size`].
    ///
    /// # Errors
    /// [`Error::NotFound`] naming the directory or the missing file; [`Error::Read`],
    /// [`Error::ConfigParse`], [`Error::UnsupportedConfig`], [`Error::MissingToken`],
    /// [`Error::Weights`], [`Error::MissingTensor`] or [`Error::TensorShape`] naming the bad file.
    pub fn load(dir: &Path) -> Result<Self> {
        let started = Instant::now();
        if !dir.is_dir() {
            return Err(Error::NotFound {
                path: dir.to_owned(),
            });
        }
        let config_path = dir.join("config.json");
        let config = BertConfig::from_file(&config_path)?;
        let tokenizer = WordPiece::from_file(&dir.join("vocab.txt"))?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::UnsupportedConfig {
                path: config_path,
                field: "vocab_size",
                value: format!(
                    "{} (vocab.txt has {} tokens)",
                    config.vocab_size,
                    tokenizer.vocab_size()
                ),
            });
        }
        let bert = Bert::load(&dir.join("model.safetensors"), &config)?;
        let tokenizer = tokenizer.with_max_len(DEFAULT_MAX_LEN.min(bert.max_positions()));
        tracing::debug!(dir = %dir.display(), elapsed_ms = started.elapsed().as_millis(), "text embedder loaded");
        Ok(Self {
            tokenizer,
            bert,
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// The same embedder truncating texts to `max_tokens` tokens, `[CLS]` and `[SEP]` included
    /// (clamped to `2..=` the model's 512 positions). Longer limits cost time on long texts only.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Self {
        self.tokenizer = self
            .tokenizer
            .with_max_len(max_tokens.min(self.bert.max_positions()));
        self
    }

    /// The same embedder running `batch_size` texts per forward pass (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The number of values in an embedding (384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.bert.hidden()
    }

    /// The maximum number of tokens of a text, `[CLS]` and `[SEP]` included.
    pub fn max_tokens(&self) -> usize {
        self.tokenizer.max_len()
    }

    /// Texts per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &WordPiece {
        &self.tokenizer
    }

    /// Embeds texts: one unit-length vector of [`Self::dim`] values per text, in order. An empty
    /// text gets the embedding of `[CLS] [SEP]`.
    ///
    /// # Errors
    /// [`Error::Inference`] if the forward pass fails (not expected for any input).
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let encoded: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenizer.encode(t.as_ref()).ids)
            .collect();
        // Longest first, so each batch is padded to about its own length.
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| Reverse(encoded[i].len()));

        let dim = self.dim();
        let pad = self.tokenizer.pad_id();
        let mut out = vec![Vec::new(); encoded.len()];
        let mut ids = Vec::new();
        let mut lengths = Vec::with_capacity(self.batch_size);
        for batch in order.chunks(self.batch_size) {
            let seq_len = batch.iter().map(|&i| encoded[i].len()).max().unwrap_or(0);
            ids.clear();
            lengths.clear();
            for &i in batch {
                ids.extend_from_slice(&encoded[i]);
                ids.resize(ids.len() + seq_len - encoded[i].len(), pad);
                lengths.push(encoded[i].len());
            }
            let pooled = self
                .bert
                .mean_pooled(&ids, &lengths, seq_len)
                .map_err(|e| Error::Inference(BackendError::new(e)))?;
            for (&i, vector) in batch.iter().zip(pooled.chunks_exact(dim)) {
                out[i] = l2_normalized(vector);
            }
        }
        Ok(out)
    }

    /// The mean-pooled, unnormalized last hidden states of a padded batch of token ids (for
    /// distilling a [`crate::static_encoder::StaticEncoder`]).
    pub(crate) fn pooled(
        &self,
        ids: &[u32],
        lengths: &[usize],
        seq_len: usize,
    ) -> candle_core::Result<Vec<f32>> {
        self.bert.mean_pooled(ids, lengths, seq_len)
    }

    /// Embeds one text (a search query, say).
    ///
    /// # Errors
    /// As [`Self::embed`].
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>> {
        Ok(self.embed(&[text])?.pop().unwrap_or_default())
    }
}

/// `v / max(‖v‖, 1e-12)`, as `torch.nn.functional.normalize`.
fn l2_normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<TextEmbedder>();
    }

    #[test]
    fn normalizes_to_unit_length() {
        let v = l2_normalized(&[3.0, 4.0]);
        assert_eq!(v, [0.6, 0.8]);
        assert_eq!(l2_normalized(&[0.0, 0.0]), [0.0, 0.0]);
    }

    #[test]
    fn load_names_what_is_missing() {
        let dir = std::env::temp_dir().join(format!("attune-model-text-{}", std::process::id()));
        let err = TextEmbedder::load(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::NotFound { path } if *path == dir),
            "{err:?}"
        );
        assert!(err.to_string().contains("scripts/fetch-model"), "{err}");

        std::fs::create_dir_all(&dir).unwrap();
        let err = TextEmbedder::load(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::NotFound { path } if path.ends_with("config.json")),
            "{err:?}"
        );

        std::fs::write(dir.join("config.json"), "{\"hidden_size\": 384}").unwrap();
        let err = TextEmbedder::load(&dir).unwrap_err();
        assert!(matches!(&err, Error::ConfigParse { .. }), "{err:?}");

        let config = r#"{"vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 16,
            "layer_norm_eps": 1e-12, "hidden_act": "gelu_new"}"#;
        std::fs::write(dir.join("config.json"), config).unwrap();
        let err = TextEmbedder::load(&dir).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::UnsupportedConfig {
                    field: "hidden_act",
                    ..
                }
            ),
            "{err:?}"
        );

        std::fs::write(dir.join("config.json"), config.replace("gelu_new", "gelu")).unwrap();
        let err = TextEmbedder::load(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::NotFound { path } if path.ends_with("vocab.txt")),
            "{err:?}"
        );

        std::fs::write(dir.join("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\nmilk\n").unwrap();
        let err = TextEmbedder::load(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::NotFound { path } if path.ends_with("model.safetensors")),
            "{err:?}"
        );

        std::fs::write(dir.join("model.safetensors"), b"not a safetensors file").unwrap();
        let err = TextEmbedder::load(&dir).unwrap_err();
        assert!(matches!(&err, Error::Weights { .. }), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
