//! A static query encoder distilled from the sentence model itself, as Model2Vec does: each
//! vocabulary token's vector is the model's own sentence embedding of that token alone
//! (`[CLS] token [SEP]`, mean-pooled, before normalization), and a text's vector is the
//! normalized weighted sum of its tokens' vectors. It stays in the model's 384-dimensional output
//! space (no projection), so its vectors are compared with the item vectors the full model made.
//!
//! Encoding a query is a tokenization and a sum of a few rows (microseconds), where the
//! transformer takes milliseconds. For a text of one token it equals the model's embedding exactly;
//! for longer texts it approximates it (context is lost: "blue" in "navy blue" is the same vector
//! as alone). The search relevance check (`attune eval-search`) measures what that costs.
//!
//! Each row is kept as 8-bit codes and one scale (the row's largest magnitude over 127): 384
//! bytes a token instead of 1,536, 12 MB for the whole vocabulary instead of 47 MB; the rounding
//! moves a row's direction by a cosine of about 1e-5, far below what the static sum itself loses.
//!
//! The table is built once from the model (one forward pass per token, batched: about a minute
//! on two cores for all-MiniLM-L6-v2's 30,522 tokens) and saved to a file whose header holds a
//! format version and a digest of the model files it came from, so a stale table is never read.

use std::io::Write;
use std::path::Path;

use crate::error::{BackendError, Error, Result, io_error};
use crate::text::TextEmbedder;
use crate::wordpiece::WordPiece;

/// The file's first bytes.
const MAGIC: &[u8; 8] = b"ATSTATIC";
/// The layout (and distillation recipe) version; a table of another version is rebuilt.
/// 2: rows as 8-bit codes with a scale each (1: `f32` rows).
pub const FORMAT_VERSION: u32 = 2;
/// Tokens per forward pass while distilling.
const DISTILL_BATCH: usize = 256;

/// Text in, unit vector out, by a lookup table: see the module docs.
///
/// ```no_run
/// use attune_model::static_encoder::StaticEncoder;
/// use attune_model::text::TextEmbedder;
///
/// let model = TextEmbedder::load("models/all-MiniLM-L6-v2".as_ref())?;
/// let table = StaticEncoder::distill(&model, &mut |done, of| eprintln!("{done}/{of}"))?;
/// let q = table.embed("navy blue shirts men");
/// assert_eq!(q.len(), model.dim());
/// # Ok::<(), attune_model::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StaticEncoder {
    tokenizer: WordPiece,
    dim: usize,
    /// `vocab × dim` codes: row `t` times `scales[t]` is the pooled (unnormalized) embedding of
    /// `[CLS] t [SEP]`, times the token's weight.
    codes: Vec<i8>,
    /// One scale per row.
    scales: Vec<f32>,
    /// The pooled embedding of `[CLS] [SEP]`: the vector of a text with no tokens.
    empty: Vec<f32>,
    /// The ids of `[CLS]` and `[SEP]` (never summed: every text has them).
    cls: u32,
    sep: u32,
}

impl StaticEncoder {
    /// Distills the table from `model`: one pooled embedding per vocabulary token. `progress` is
    /// called with (tokens done, tokens in all) after each batch.
    ///
    /// # Errors
    /// [`Error::Inference`] if a forward pass fails.
    pub fn distill(model: &TextEmbedder, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let vocab = model.tokenizer().vocab_size();
        let ids: Vec<u32> = (0..u32::try_from(vocab).unwrap_or(u32::MAX)).collect();
        Self::distill_ids(model, &ids, progress)
    }

    /// As [`Self::distill`], for the listed token ids only (the other rows stay zero): for tests,
    /// where the whole vocabulary would take too long.
    ///
    /// # Errors
    /// As [`Self::distill`].
    pub fn distill_ids(
        model: &TextEmbedder,
        ids: &[u32],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let tokenizer = model.tokenizer().clone();
        let dim = model.dim();
        let vocab = tokenizer.vocab_size();
        let empty_ids = tokenizer.encode("").ids;
        let (cls, sep) = (empty_ids[0], empty_ids[empty_ids.len() - 1]);
        let mut codes = vec![0i8; vocab * dim];
        let mut scales = vec![0f32; vocab];
        let mut batch_ids = Vec::with_capacity(DISTILL_BATCH * 3);
        let mut done = 0;
        for chunk in ids.chunks(DISTILL_BATCH) {
            batch_ids.clear();
            for &t in chunk {
                batch_ids.extend_from_slice(&[cls, t, sep]);
            }
            let lengths = vec![3; chunk.len()];
            let pooled = model
                .pooled(&batch_ids, &lengths, 3)
                .map_err(|e| Error::Inference(BackendError::new(e)))?;
            for (&t, row) in chunk.iter().zip(pooled.chunks_exact(dim)) {
                let at = t as usize * dim;
                if let (Some(out), Some(scale)) =
                    (codes.get_mut(at..at + dim), scales.get_mut(t as usize))
                {
                    *scale = quantize(row, out);
                }
            }
            done += chunk.len();
            progress(done, ids.len());
        }
        let empty = model
            .pooled(&[cls, sep], &[2], 2)
            .map_err(|e| Error::Inference(BackendError::new(e)))?;
        Ok(Self {
            tokenizer,
            dim,
            codes,
            scales,
            empty,
            cls,
            sep,
        })
    }

    /// Weighs each token's row by `sif / (sif + p)`, where `p` is the token's probability under
    /// Zipf's law over the vocabulary's order (`p ∝ 1 / (id + 2)`; BERT's vocabulary lists its
    /// words roughly by frequency), as Model2Vec does: frequent tokens ("the", "for", "s") count
    /// less than rare ones. A one-token text keeps its vector (weights cancel in normalization).
    #[must_use]
    pub fn with_zipf_weights(mut self, sif: f32) -> Self {
        let rows = self.scales.len();
        #[allow(clippy::cast_precision_loss)]
        let total: f64 = (0..rows).map(|r| 1.0 / (r as f64 + 2.0)).sum();
        for (r, scale) in self.scales.iter_mut().enumerate() {
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let p = (1.0 / (r as f64 + 2.0) / total) as f32;
            *scale *= sif / (sif + p);
        }
        self
    }

    /// Bytes the table holds (codes, scales and the empty text's vector).
    pub fn heap_bytes(&self) -> usize {
        self.codes.len() + (self.scales.len() + self.empty.len()) * 4
    }

    /// The number of values in a vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The vector of a text: the normalized sum of its tokens' rows (`[CLS] [SEP]`'s vector for a
    /// text without tokens). Unit length, or all zeros if the rows sum to zero.
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let ids = self.tokenizer.encode(text).ids;
        let mut sum = vec![0f32; self.dim];
        let mut any = false;
        for &t in &ids {
            if t == self.cls || t == self.sep {
                continue;
            }
            let at = t as usize * self.dim;
            if let (Some(row), Some(&scale)) = (
                self.codes.get(at..at + self.dim),
                self.scales.get(t as usize),
            ) {
                sum.iter_mut()
                    .zip(row)
                    .for_each(|(s, &c)| *s += f32::from(c) * scale);
                any = true;
            }
        }
        if !any {
            sum.copy_from_slice(&self.empty);
        }
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            sum.iter_mut().for_each(|x| *x /= norm);
        }
        sum
    }

    /// Writes the table to `path` (atomically: a temporary file renamed into place), with
    /// `digest` naming the model it came from.
    ///
    /// # Errors
    /// [`Error::Write`] naming the file.
    pub fn save(&self, path: &Path, digest: &str) -> Result<()> {
        let write_error = |source| Error::Write {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(write_error)?);
        let digest = digest.as_bytes();
        let header = [
            MAGIC.as_slice(),
            &FORMAT_VERSION.to_le_bytes(),
            &u32::try_from(digest.len()).unwrap_or(0).to_le_bytes(),
            digest,
            &u32::try_from(self.dim).unwrap_or(0).to_le_bytes(),
            &u32::try_from(self.scales.len()).unwrap_or(0).to_le_bytes(),
        ]
        .concat();
        out.write_all(&header).map_err(write_error)?;
        for v in self.empty.iter().chain(&self.scales) {
            out.write_all(&v.to_le_bytes()).map_err(write_error)?;
        }
        let codes: Vec<u8> = self.codes.iter().map(|&c| c.to_le_bytes()[0]).collect();
        out.write_all(&codes).map_err(write_error)?;
        out.into_inner()
            .map_err(|e| write_error(e.into_error()))?
            .sync_all()
            .map_err(write_error)?;
        std::fs::rename(&tmp, path).map_err(write_error)
    }

    /// Reads a table saved by [`Self::save`] for `model`'s tokenizer. `Ok(None)` when the file is
    /// of another format version or another model (`digest` differs): it must be distilled again.
    ///
    /// # Errors
    /// [`Error::NotFound`] or [`Error::Read`] for the file; [`Error::BadData`] when it is cut short
    /// or its sizes disagree with the tokenizer.
    pub fn load(path: &Path, digest: &str, tokenizer: &WordPiece) -> Result<Option<Self>> {
        let bytes = std::fs::read(path).map_err(|source| io_error(path, source))?;
        let bad = |reason: &str| Error::BadData {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let mut rest: &[u8] = &bytes;
        let mut take = |n: usize| {
            let (head, tail) = rest
                .split_at_checked(n)
                .ok_or_else(|| bad("the file is cut short"))?;
            rest = tail;
            Ok::<_, Error>(head)
        };
        let u32_of = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if take(MAGIC.len())? != MAGIC {
            return Err(bad("not a static encoder table"));
        }
        if u32_of(take(4)?) != FORMAT_VERSION as usize {
            return Ok(None);
        }
        let digest_len = u32_of(take(4)?);
        if take(digest_len)? != digest.as_bytes() {
            return Ok(None);
        }
        let dim = u32_of(take(4)?);
        let rows = u32_of(take(4)?);
        if dim == 0 || rows != tokenizer.vocab_size() {
            return Err(bad("its vocabulary size differs from the model's"));
        }
        let floats: Vec<f32> = take((dim + rows) * 4)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if floats.iter().any(|v| !v.is_finite()) {
            return Err(bad("it holds a value that is not finite"));
        }
        let codes: Vec<i8> = take(rows * dim)?
            .iter()
            .map(|&b| i8::from_le_bytes([b]))
            .collect();
        if !rest.is_empty() {
            return Err(bad("it is longer than its sizes say"));
        }
        let empty_ids = tokenizer.encode("").ids;
        Ok(Some(Self {
            tokenizer: tokenizer.clone(),
            dim,
            empty: floats[..dim].to_vec(),
            scales: floats[dim..].to_vec(),
            codes,
            cls: empty_ids[0],
            sep: empty_ids[empty_ids.len() - 1],
        }))
    }
}

/// Rounds `row` to 8-bit codes in `out` (the same length) and returns their scale: the row's
/// largest magnitude over 127, so `code × scale` is within half a scale of each value.
fn quantize(row: &[f32], out: &mut [i8]) -> f32 {
    let max = row
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    for (o, v) in out.iter_mut().zip(row) {
        #[allow(clippy::cast_possible_truncation)]
        let code = if v.is_finite() {
            (v / scale).round().clamp(-127.0, 127.0) as i8
        } else {
            0
        };
        *o = code;
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::quantize;

    #[test]
    fn quantized_rows_keep_their_direction() {
        let row: Vec<f32> = (0..384)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3)
            .collect();
        let mut codes = vec![0i8; row.len()];
        let scale = quantize(&row, &mut codes);
        assert!(codes.iter().any(|&c| c.unsigned_abs() == 127));
        let back: Vec<f32> = codes.iter().map(|&c| f32::from(c) * scale).collect();
        for (a, b) in row.iter().zip(&back) {
            assert!((a - b).abs() <= scale / 2.0 + 1e-7, "{a} {b}");
        }
        let dot: f32 = row.iter().zip(&back).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(dot / (norm(&row) * norm(&back)) > 0.9999);
        // A zero row stays zero; values that are not finite become 0.
        assert_eq!(quantize(&[0.0; 4], &mut [1; 4]), 0.0);
        let mut out = [0i8; 3];
        let scale = quantize(&[f32::NAN, 1.0, -0.5], &mut out);
        assert_eq!(out, [0, 127, -64]);
        assert!((scale - 1.0 / 127.0).abs() < 1e-9);
    }
}
