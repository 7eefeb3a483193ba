//! SASRec (Kang & McAuley, ICDM 2018): a causal self-attention next-item model, trained and
//! served with candle on CPU.
//!
//! The network is the reference PyTorch implementation's (pmixer/SASRec.pytorch): item
//! embedding × √d plus a learned positional embedding, dropout, the padding positions zeroed;
//! per block `Q = LayerNorm(x)`, causal multi-head attention `(Q, x, x)` plus `Q`, LayerNorm,
//! a point-wise feed-forward (ReLU, dropout) plus its input, padding zeroed again; a final
//! LayerNorm; an item's score is the dot product of the last hidden state with its embedding.
//!
//! - [`SasRecConfig`]: hyper-parameters (serde, validated; errors name the field).
//! - [`train`]: seeded training with validation, early stopping and resumable checkpoints.
//! - [`SasRec`]: the model; [`SasRec::save`] / [`SasRec::load`] (safetensors + manifest);
//!   scoring through [`crate::scorer::SequenceScorer`] (batches, as evaluation asks).
//! - [`Serving`] ([`SasRec::serving`]): a loaded model frozen for serving one sequence at a
//!   time (plain weights, no candle; the best accepted items without scoring every item
//!   exactly), with the same scores within float rounding.
//!
//! Speed: sequences are packed row after row and padding is never computed. That is exact for
//! the reference's left-padded layout: a padding position enters every block as zeros (the
//! timeline mask), so its key and value are the attention biases and its output is masked away;
//! the attention op counts the padding keys as one logit with multiplicity (each with its own
//! dropout draw). On amazon-games (9 items per user on average) a batch of 128 × 200 has ~1,100
//! real rows instead of 25,600. Every op on the training path is a fused CPU kernel with its
//! own backward; there is no candle-nn op in it (their fast softmax and layer norm have no
//! backward). A whole block is one op (`block`: its intermediates in pooled buffers, so candle's
//! backward pass never zeroes and adds its `[rows, d]` gradients), its matrix multiplies and the
//! causal attention (`attention`) run on register-tiled SIMD kernels (`tile`, dispatched at run
//! time), and the attention's `n²` work per sequence is matrix products over the causal triangle
//! only. Dropout masks are hashes of (seed, element), so runs are reproducible and independent
//! of the thread count.

mod adam;
mod attention;
mod average;
mod block;
mod checkpoint;
mod config;
mod model;
mod ops;
mod pool;
mod serving;
mod tile;
mod train;

#[cfg(test)]
mod tests;

pub use checkpoint::{ModelInfo, WEIGHTS_FILE};
pub use config::{SasRecConfig, SasRecLoss};
pub use model::SasRec;
pub use serving::{RankCache, Ranked, Serving};
pub use train::{Candidate, PreparedBatch, Progress, TrainOptions, TrainReport, Trainer, train};

use candle_core::Tensor;

use crate::Result;
use crate::scorer::SequenceScorer;
use model::backend;

/// `1 / ‖e‖` as the cosine output computes it (a zero row stays zero). The squares are summed
/// in eight lanes so the loop vectorizes: [`SasRec`]'s scoring computes this for every item on
/// each call ([`Serving`] once, when it is built).
fn inverse_norm(e: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = e.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    1.0 / (lanes.iter().sum::<f32>() + tail + 1e-12).sqrt()
}

/// Sequences scored per forward pass.
const SCORE_BATCH: usize = 256;

impl SequenceScorer for SasRec {
    fn name(&self) -> &str {
        "sasrec"
    }

    fn num_items(&self) -> usize {
        self.num_items
    }

    fn score_all(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let d = self.config.hidden;
        let emb = self.item_embeddings();
        // Cosine output: each item's score divided by its embedding's norm after the product
        // (one pass over the table, no normalized copy of it).
        let inverse_norms = self.inverse_norms()?;
        let mut out = Vec::with_capacity(sequences.len());
        for chunk in sequences.chunks(SCORE_BATCH) {
            let states = self.output_states(chunk)?;
            let states = Tensor::from_vec(states, (chunk.len(), d), &candle_core::Device::Cpu)
                .map_err(backend)?;
            let mut scores = states
                .matmul(&emb.t().map_err(backend)?)
                .and_then(|s| s.to_vec2::<f32>())
                .map_err(backend)?;
            if let Some(inv) = &inverse_norms {
                for row in &mut scores {
                    row.iter_mut().zip(inv).for_each(|(s, k)| *s *= k);
                }
            }
            out.extend(scores);
        }
        Ok(out)
    }

    fn score_candidates(
        &self,
        sequences: &[&[u32]],
        candidates: &[&[u32]],
    ) -> Result<Vec<Vec<f32>>> {
        let d = self.config.hidden;
        let n = self.num_items;
        let emb = self.item_embeddings();
        let cosine = self.config.cosine_scale > 0.0;
        let mut out = Vec::with_capacity(sequences.len());
        for (chunk, cands) in sequences
            .chunks(SCORE_BATCH)
            .zip(candidates.chunks(SCORE_BATCH))
        {
            let states = self.output_states(chunk)?;
            let scores = ops::with_f32(&emb, |e| {
                Ok(cands
                    .iter()
                    .zip(states.chunks_exact(d))
                    .map(|(cands, h)| {
                        cands
                            .iter()
                            .map(|&c| {
                                let c = c as usize;
                                if c == 0 || c > n {
                                    f32::NEG_INFINITY
                                } else {
                                    let e = &e[c * d..(c + 1) * d];
                                    let dot: f32 = e.iter().zip(h).map(|(a, b)| a * b).sum();
                                    if cosine { dot * inverse_norm(e) } else { dot }
                                }
                            })
                            .collect::<Vec<f32>>()
                    })
                    .collect::<Vec<_>>())
            })
            .map_err(backend)?;
            out.extend(scores);
        }
        Ok(out)
    }
}
