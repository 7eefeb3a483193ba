//! A trained SASRec frozen for serving: [`Serving`] holds the weights as plain vectors (the
//! linear layers pre-transposed, the item table pre-normalized for a cosine output) and runs
//! one sequence at a time without candle, rayon or per-call allocation of the forward pass.
//!
//! What the training-shaped path ([`SasRec`]'s [`SequenceScorer`]) does per call and this one
//! does not: read every item embedding's norm (a full pass over the table, for a cosine output),
//! transpose the table into a candle matmul and copy the scores out of a `[1, n]` tensor,
//! transpose every block weight and hand row chunks to the rayon pool.
//!
//! - The forward pass of one sequence computes every position in every block but the last,
//!   where only the last position's query, feed-forward and output are needed (the earlier
//!   positions only serve as its keys and values), on [`super::tile`]'s run-time SIMD kernels.
//! - [`Serving::score_all_into`]: one dot product per item over the table, four rows at a
//!   time. Bound by memory bandwidth (the table is 22 MB for DIGINETICA).
//! - [`Serving::top_accepted`]: the best accepted items without scoring every item exactly
//!   (`select`: an i8 copy of the table bounds every score, only the items that can make the
//!   list are scored exactly): the same items and scores as sorting `score_all_into`'s.
//! - [`Serving::score_candidates_into`]: a few hundred items.
//! - [`Serving::ranked`] and [`RankCache`] (`ranked`): a sequence's state and its best items
//!   over the whole table kept, so that asking about the same sequence again (no new event)
//!   runs neither the network nor the scan, and answers the same, bit for bit.
//!
//! Each thread keeps its scratch buffers and the last state it computed (keyed by the
//! [`Serving`] and the sequence), so a request that asks for the best items and then for the
//! scores of other sources' proposals runs the network once.
//!
//! The scores are [`SasRec`]'s within float rounding (the same arithmetic summed in another
//! order): the tests hold them to `1e-4 · max(1, |score|)` of the candle path on random models
//! (the largest difference seen is about `6e-6`). Within one [`Serving`] an item's score is the
//! same bits from every method.
//!
//! A [`Serving`] is a copy: built once from a loaded (or finished) model, it never sees later
//! changes to that model's variables, so it must not be built from a model still in training.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use pulp::{Simd, WithSimd};

use super::block::{LN_EPS, param_sizes, transpose};
use super::config::SasRecConfig;
use super::model::{SasRec, backend};
use super::ops::with_f32;
use super::tile;
use crate::Result;
use crate::scorer::SequenceScorer;

mod ranked;
mod select;
#[cfg(test)]
mod tests;

pub use ranked::{RankCache, Ranked};

/// One block's weights, the linear layers' transposed (`[din, dout]`, as
/// [`tile::matmul`]'s right-hand side).
struct BlockWeights {
    ln1_w: Vec<f32>,
    ln1_b: Vec<f32>,
    /// `W_qᵀ` `[d, d]` and `b_q`.
    wq: Vec<f32>,
    bq: Vec<f32>,
    /// `W_kvᵀ` `[d, 2d]` (keys then values) and `b_kv` `[2d]`.
    wkv: Vec<f32>,
    bkv: Vec<f32>,
    wo: Vec<f32>,
    bo: Vec<f32>,
    ln2_w: Vec<f32>,
    ln2_b: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl BlockWeights {
    /// From the block's twelve tensors' values, in the model's order.
    fn new(p: &[Vec<f32>], d: usize) -> BlockWeights {
        let (bq, bkv) = p[3].split_at(d);
        BlockWeights {
            ln1_w: p[0].clone(),
            ln1_b: p[1].clone(),
            wq: transpose(&p[2][..d * d], d, d),
            bq: bq.to_vec(),
            wkv: transpose(&p[2][d * d..], 2 * d, d),
            bkv: bkv.to_vec(),
            wo: transpose(&p[4], d, d),
            bo: p[5].clone(),
            ln2_w: p[6].clone(),
            ln2_b: p[7].clone(),
            w1: transpose(&p[8], d, d),
            b1: p[9].clone(),
            w2: transpose(&p[10], d, d),
            b2: p[11].clone(),
        }
    }
}

/// A trained [`SasRec`] frozen for serving one sequence at a time (see the module docs); built
/// by [`SasRec::serving`]. Also a [`SequenceScorer`], scoring as the model does.
///
/// ```
/// use attune_model::sasrec::{SasRec, SasRecConfig};
///
/// let config = SasRecConfig { max_len: 5, hidden: 8, cosine_scale: 4.0, ..SasRecConfig::default() };
/// let model = SasRec::new(&config, 30).unwrap();
/// let serving = model.serving().unwrap();
/// let mut scores = Vec::new();
/// serving.score_all_into(&[3, 7, 7, 12], &mut scores);
/// assert_eq!(scores.len(), 31); // index 0 (padding) and the 30 items
/// let mut picked = Vec::new();
/// serving.score_candidates_into(&[3, 7, 7, 12], &[12, 0, 5], &mut picked);
/// assert_eq!(picked[0], scores[12]);
/// assert_eq!(picked[1], f32::NEG_INFINITY); // not an item
/// ```
pub struct Serving {
    /// Unique among the process's [`Serving`]s (the per-thread state cache's key).
    id: u64,
    config: SasRecConfig,
    num_items: usize,
    d: usize,
    /// The scored item table `[num_items + 1, d]`: the embeddings, each row multiplied by its
    /// inverse norm for a cosine output (so a score is one dot product).
    table: Vec<f32>,
    /// Per item, what its table row is multiplied by to give its input embedding × √d: √d, or
    /// √d · ‖e‖ for a cosine output (the table holds one copy of the embeddings, not two).
    input_scale: Vec<f32>,
    /// The positional embeddings `[max_len, d]`.
    positions: Vec<f32>,
    blocks: Vec<BlockWeights>,
    last_w: Vec<f32>,
    last_b: Vec<f32>,
    /// `1 / √(d / heads)`.
    attn_scale: f32,
    /// The i8 copy of `table` that [`Serving::top_accepted`] bounds scores with (`None` if the
    /// table is not finite).
    quantized: Option<select::Quantized>,
}

/// The next [`Serving::id`] (0 is never used: it marks an empty cache).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("config", &self.config)
            .field("num_items", &self.num_items)
            .finish_non_exhaustive()
    }
}

impl SasRec {
    /// This model's weights copied into a [`Serving`] form (about the size of the item table).
    /// Build it once from a loaded or finished model: it does not follow later training.
    pub fn serving(&self) -> Result<Serving> {
        let c = &self.config;
        let d = c.hidden;
        let values: Vec<Vec<f32>> = self
            .weights(false)
            .iter()
            .map(|t| with_f32(t, |v| Ok(v.to_vec())))
            .collect::<candle_core::Result<_>>()
            .map_err(backend)?;
        let sizes = param_sizes(d);
        let blocks = (0..c.blocks)
            .map(|b| {
                let p = &values[2 + b * sizes.len()..2 + (b + 1) * sizes.len()];
                BlockWeights::new(p, d)
            })
            .collect();
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let sqrt_d = (d as f64).sqrt() as f32;
        let mut table = values[0].clone();
        let mut input_scale = vec![sqrt_d; self.num_items + 1];
        if c.cosine_scale > 0.0 {
            for (row, s) in table.chunks_exact_mut(d).zip(&mut input_scale) {
                let inv = super::inverse_norm(row);
                row.iter_mut().for_each(|v| *v *= inv);
                *s = sqrt_d / inv;
            }
        }
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let attn_scale = (1.0 / ((d / c.heads) as f64).sqrt()) as f32;
        let last = values.len() - 2;
        Ok(Serving {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            quantized: select::Quantized::new(&table, d),
            config: c.clone(),
            num_items: self.num_items,
            d,
            table,
            input_scale,
            positions: values[1].clone(),
            blocks,
            last_w: values[last].clone(),
            last_b: values[last + 1].clone(),
            attn_scale,
        })
    }
}

impl Serving {
    /// The model's hyper-parameters.
    pub fn config(&self) -> &SasRecConfig {
        &self.config
    }

    /// A score for every index `0..=num_items` (0 is padding; its score means nothing) after
    /// `sequence` (oldest first; unknown indices and 0 are skipped, the last `max_len` known
    /// items kept, as [`SasRec`] does), into `scores` (cleared first).
    pub fn score_all_into(&self, sequence: &[u32], scores: &mut Vec<f32>) {
        with_state(self, sequence, |h| {
            scores.clear();
            scores.resize(self.table.len() / self.d, 0.0);
            tile::dispatch(Gemv {
                table: &self.table,
                h,
                out: scores,
            });
        });
    }

    /// The scores of `candidates` after `sequence`, in their order, into `scores` (cleared
    /// first): each the same value as its entry in [`Self::score_all_into`], and `-∞` for an
    /// index that is not an item (0 or above `num_items`).
    pub fn score_candidates_into(
        &self,
        sequence: &[u32],
        candidates: &[u32],
        scores: &mut Vec<f32>,
    ) {
        with_state(self, sequence, |h| {
            scores.clear();
            scores.resize(candidates.len(), f32::NEG_INFINITY);
            tile::dispatch(Gather {
                table: &self.table,
                num_items: self.num_items,
                h,
                candidates,
                out: scores,
            });
        });
    }

    /// The scored state of `sequence` (the final hidden state, normalized and scaled for a
    /// cosine output): a score is its dot product with a table row.
    #[cfg(test)]
    pub(crate) fn state(&self, sequence: &[u32]) -> Vec<f32> {
        let mut out = Vec::new();
        with_state(self, sequence, |h| out.extend_from_slice(h));
        out
    }
}

impl SequenceScorer for Serving {
    fn name(&self) -> &str {
        "sasrec"
    }

    fn num_items(&self) -> usize {
        self.num_items
    }

    fn score_all(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        Ok(sequences
            .iter()
            .map(|s| {
                let mut scores = Vec::new();
                self.score_all_into(s, &mut scores);
                scores
            })
            .collect())
    }

    fn score_candidates(
        &self,
        sequences: &[&[u32]],
        candidates: &[&[u32]],
    ) -> Result<Vec<Vec<f32>>> {
        Ok(sequences
            .iter()
            .zip(candidates)
            .map(|(s, c)| {
                let mut scores = Vec::new();
                self.score_candidates_into(s, c, &mut scores);
                scores
            })
            .collect())
    }
}

/// Per-thread buffers of the forward pass (each at most `max_len × 2d`), reused across calls,
/// and the last state computed on the thread.
#[derive(Default)]
struct Scratch {
    items: Vec<u32>,
    /// The state of `cached_items` under the [`Serving`] `cached_id` (0: none). A request asks
    /// for the best items, then for the scores of other sources' proposals, on one thread and
    /// for one sequence: the second call reuses the first's state. A [`Serving`] never changes
    /// and its id is never reused, so the entry cannot go stale.
    state: Vec<f32>,
    cached_id: u64,
    cached_items: Vec<u32>,
    x: Vec<f32>,
    q_in: Vec<f32>,
    q: Vec<f32>,
    kv: Vec<f32>,
    o: Vec<f32>,
    x1: Vec<f32>,
    x2: Vec<f32>,
    h: Vec<f32>,
    out: Vec<f32>,
    probs: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    static SELECT_SCRATCH: RefCell<select::Scratch> = RefCell::new(select::Scratch::default());
}

/// Runs `f` with this thread's selection buffers (fresh ones if `f` is already running).
fn with_select_scratch<R>(f: impl FnOnce(&mut select::Scratch) -> R) -> R {
    SELECT_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut sc) => f(&mut sc),
        Err(_) => f(&mut select::Scratch::default()),
    })
}

/// The first `len` values of `v`, grown (with zeros) if it is shorter.
fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// Runs `f` on the scored state of `sequence` (see [`Serving::state`]).
fn with_state<R>(model: &Serving, sequence: &[u32], f: impl FnOnce(&[f32]) -> R) -> R {
    let run = |sc: &mut Scratch| {
        // The most recent `max_len` known items, oldest first.
        let max_len = model.config.max_len;
        sc.items.clear();
        sc.items.extend(
            sequence
                .iter()
                .rev()
                .copied()
                .filter(|&i| i != 0 && i as usize <= model.num_items)
                .take(max_len),
        );
        sc.items.reverse();
        let mut state = std::mem::take(&mut sc.state);
        if sc.cached_id != model.id || sc.cached_items != sc.items || state.len() != model.d {
            state.resize(model.d, 0.0);
            sc.cached_id = 0;
            tile::dispatch(Forward {
                model,
                sc: &mut *sc,
                state: &mut state,
            });
            sc.cached_id = model.id;
            sc.cached_items.clone_from(&sc.items);
        }
        let r = f(&state);
        sc.state = state;
        r
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut sc) => run(&mut sc),
        // Only if `f` itself scores on this thread: fresh buffers.
        Err(_) => run(&mut Scratch::default()),
    })
}

/// Layer norm of each `d`-row of `x` into `out` (`d` = `w.len()`), as [`super::ops`]'s.
#[inline(always)]
fn layer_norm(x: &[f32], w: &[f32], b: &[f32], out: &mut [f32]) {
    let d = w.len();
    #[allow(clippy::cast_precision_loss)]
    let inv_d = 1.0 / d as f32;
    for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let mean = tile::sum(x) * inv_d;
        let mut var = [0f32; 8];
        let chunks = x.chunks_exact(8);
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        for c in chunks {
            for k in 0..8 {
                var[k] += (c[k] - mean) * (c[k] - mean);
            }
        }
        let var = (tile::sum(&var) + tail) * inv_d;
        let rstd = 1.0 / (var + LN_EPS).sqrt();
        for j in 0..d {
            o[j] = (x[j] - mean) * rstd * w[j] + b[j];
        }
    }
}

/// `y = x · wt + bias`: `x` `[rows, din]`, `wt` `[din, dout]` (`dout` = `bias.len()`), `y`
/// `[rows, dout]` (overwritten). Register tiles of up to four rows by two vectors, started from
/// the bias: a serving-sized product (a few rows) needs no more, and smaller tiles than
/// [`tile::matmul`]'s keep every accumulator in a register.
#[inline(always)]
fn linear<S: Simd>(simd: S, x: &[f32], din: usize, wt: &[f32], bias: &[f32], y: &mut [f32]) {
    let dout = bias.len();
    let rows = x.len() / din;
    let mut r0 = 0;
    while r0 < rows {
        let mr = (rows - r0).min(4);
        let x = &x[r0 * din..(r0 + mr) * din];
        let y = &mut y[r0 * dout..(r0 + mr) * dout];
        match mr {
            4 => linear_rows::<S, 4>(simd, x, wt, bias, y),
            3 => linear_rows::<S, 3>(simd, x, wt, bias, y),
            2 => linear_rows::<S, 2>(simd, x, wt, bias, y),
            _ => linear_rows::<S, 1>(simd, x, wt, bias, y),
        }
        r0 += mr;
    }
}

/// [`linear`] for `R` rows.
#[inline(always)]
fn linear_rows<S: Simd, const R: usize>(
    simd: S,
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    y: &mut [f32],
) {
    let dout = bias.len();
    let din = x.len() / R;
    let lanes = S::F32_LANES;
    let xr: [&[f32]; R] = std::array::from_fn(|r| &x[r * din..(r + 1) * din]);
    let mut c0 = 0;
    while c0 + 2 * lanes <= dout {
        let (b, _) = S::as_simd_f32s(&bias[c0..c0 + 2 * lanes]);
        let mut acc = [[b[0], b[1]]; R];
        for k in 0..din {
            let (w, _) = S::as_simd_f32s(&wt[k * dout + c0..k * dout + c0 + 2 * lanes]);
            let (w0, w1) = (w[0], w[1]);
            for (acc, xr) in acc.iter_mut().zip(&xr) {
                let a = simd.splat_f32s(xr[k]);
                acc[0] = simd.mul_add_f32s(a, w0, acc[0]);
                acc[1] = simd.mul_add_f32s(a, w1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let (out, _) = S::as_mut_simd_f32s(&mut y[r * dout + c0..r * dout + c0 + 2 * lanes]);
            out[0] = acc[0];
            out[1] = acc[1];
        }
        c0 += 2 * lanes;
    }
    while c0 + lanes <= dout {
        let (b, _) = S::as_simd_f32s(&bias[c0..c0 + lanes]);
        let mut acc = [b[0]; R];
        for k in 0..din {
            let (w, _) = S::as_simd_f32s(&wt[k * dout + c0..k * dout + c0 + lanes]);
            for (acc, xr) in acc.iter_mut().zip(&xr) {
                *acc = simd.mul_add_f32s(simd.splat_f32s(xr[k]), w[0], *acc);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let (out, _) = S::as_mut_simd_f32s(&mut y[r * dout + c0..r * dout + c0 + lanes]);
            out[0] = *acc;
        }
        c0 += lanes;
    }
    for c in c0..dout {
        for (r, xr) in xr.iter().enumerate() {
            let mut s = bias[c];
            for (k, &a) in xr.iter().enumerate() {
                s += a * wt[k * dout + c];
            }
            y[r * dout + c] = s;
        }
    }
}

/// The forward pass of one sequence (`sc.items`, already cut to the known `max_len`) into
/// `state` `[d]`.
struct Forward<'a> {
    model: &'a Serving,
    sc: &'a mut Scratch,
    state: &'a mut [f32],
}

impl WithSimd for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Forward {
            model: m,
            sc,
            state,
        } = self;
        let Scratch {
            items,
            x,
            q_in,
            q,
            kv,
            o,
            x1,
            x2,
            h,
            out,
            probs,
            ..
        } = sc;
        let (d, n) = (m.d, items.len());
        if n == 0 {
            // The last position is padding, zeroed before the last norm: its bias remains.
            state.copy_from_slice(&m.last_b);
        } else {
            let pads = m.config.max_len - n;
            let heads = m.config.heads;
            let dh = d / heads;
            let xs = grow(x, n * d);
            for (r, (&item, row)) in items.iter().zip(xs.chunks_exact_mut(d)).enumerate() {
                let i = item as usize;
                let (e, s) = (&m.table[i * d..(i + 1) * d], m.input_scale[i]);
                let p = &m.positions[(pads + r) * d..(pads + r + 1) * d];
                for ((x, &e), &p) in row.iter_mut().zip(e).zip(p) {
                    *x = e * s + p;
                }
            }
            // Rows of `x`: every position, then only the last after the last block.
            let mut rows = n;
            for (b, w) in m.blocks.iter().enumerate() {
                // The last block computes the last position only; the others every position.
                let r0 = if b + 1 == m.blocks.len() { n - 1 } else { 0 };
                let nq = n - r0;
                let xs = &x[..n * d];
                let q_in = grow(q_in, nq * d);
                layer_norm(&xs[r0 * d..], &w.ln1_w, &w.ln1_b, q_in);
                let q = grow(q, nq * d);
                linear(simd, q_in, d, &w.wq, &w.bq, q);
                let kv = grow(kv, n * 2 * d);
                linear(simd, xs, d, &w.wkv, &w.bkv, kv);
                let o = grow(o, nq * d);
                attention(
                    q,
                    kv,
                    &w.bkv,
                    Shape {
                        d,
                        dh,
                        heads,
                        r0,
                        pads,
                        scale: m.attn_scale,
                    },
                    probs,
                    o,
                );
                let x1 = grow(x1, nq * d);
                linear(simd, o, d, &w.wo, &w.bo, x1);
                x1.iter_mut().zip(&*q_in).for_each(|(x, r)| *x += r);
                let x2 = grow(x2, nq * d);
                layer_norm(x1, &w.ln2_w, &w.ln2_b, x2);
                let h = grow(h, nq * d);
                linear(simd, x2, d, &w.w1, &w.b1, h);
                h.iter_mut().for_each(|v| *v = v.max(0.0));
                let y = grow(out, nq * d);
                linear(simd, h, d, &w.w2, &w.b2, y);
                y.iter_mut().zip(&*x2).for_each(|(y, r)| *y += r);
                std::mem::swap(x, out);
                rows = nq;
            }
            layer_norm(&x[(rows - 1) * d..rows * d], &m.last_w, &m.last_b, state);
        }
        if m.config.cosine_scale > 0.0 {
            #[allow(clippy::cast_possible_truncation)]
            let k = m.config.cosine_scale as f32 * super::inverse_norm(state);
            state.iter_mut().for_each(|v| *v *= k);
        }
    }
}

/// The attention's dimensions for one block: queries are the positions `r0..n` of a sequence
/// with `pads` padding positions before it.
#[derive(Clone, Copy)]
struct Shape {
    d: usize,
    dh: usize,
    heads: usize,
    r0: usize,
    pads: usize,
    scale: f32,
}

/// Causal attention without dropout for queries `q` `[nq, d]` over keys and values `kv`
/// `[n, 2d]` into `o` `[nq, d]`, as [`super::attention::Attention`] computes it: the `pads`
/// padding keys are one logit `q·b_k` counted `pads` times, with value `b_v`.
#[inline(always)]
fn attention(q: &[f32], kv: &[f32], bkv: &[f32], s: Shape, probs: &mut Vec<f32>, o: &mut [f32]) {
    let Shape {
        d,
        dh,
        heads,
        r0,
        pads,
        scale,
    } = s;
    #[allow(clippy::cast_precision_loss)]
    let pads_f = pads as f32;
    for (qi, (q, o)) in q.chunks_exact(d).zip(o.chunks_exact_mut(d)).enumerate() {
        let keys = r0 + qi + 1;
        for hd in 0..heads {
            let at = hd * dh;
            let q = &q[at..at + dh];
            let (bk, bv) = (&bkv[at..at + dh], &bkv[d + at..d + at + dh]);
            let p = grow(probs, keys);
            for (j, p) in p.iter_mut().enumerate() {
                *p = scale * tile::dot(q, &kv[j * 2 * d + at..][..dh]);
            }
            let mut max = tile::max(p);
            let a = scale * tile::dot(q, bk);
            if pads > 0 {
                max = max.max(a);
            }
            p.iter_mut().for_each(|p| *p = tile::exp_neg(*p - max));
            let ea = if pads > 0 {
                tile::exp_neg(a - max)
            } else {
                0.0
            };
            let inv = 1.0 / (tile::sum(p) + pads_f * ea);
            let o = &mut o[at..at + dh];
            let c = pads_f * (ea * inv);
            o.iter_mut().zip(bv).for_each(|(o, &b)| *o = c * b);
            for (j, &p) in p.iter().enumerate() {
                let w = p * inv;
                let v = &kv[j * 2 * d + d + at..][..dh];
                o.iter_mut().zip(v).for_each(|(o, &v)| *o += w * v);
            }
        }
    }
}

/// `h · row` for a row of the table: the one dot product every score is (vector partial sums
/// by fused multiply-add, reduced, then the tail), so that [`Gemv`] and [`Gather`] give the
/// same bits for the same item.
#[inline(always)]
fn dot_rows<S: Simd, const R: usize>(simd: S, rows: [&[f32]; R], h: &[f32]) -> [f32; R] {
    let (hv, ht) = S::as_simd_f32s(h);
    let split = rows.map(|r| S::as_simd_f32s(r));
    let mut acc = [simd.splat_f32s(0.0); R];
    for (v, &hv) in hv.iter().enumerate() {
        for (acc, (rv, _)) in acc.iter_mut().zip(&split) {
            *acc = simd.mul_add_f32s(rv[v], hv, *acc);
        }
    }
    let mut out = [0f32; R];
    for ((out, acc), (_, rt)) in out.iter_mut().zip(acc).zip(&split) {
        let tail: f32 = rt.iter().zip(ht).map(|(a, b)| a * b).sum();
        *out = simd.reduce_sum_f32s(acc) + tail;
    }
    out
}

/// `out[i] = h · table[i]` for every row of the table, four rows at a time.
struct Gemv<'a> {
    table: &'a [f32],
    h: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for Gemv<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Gemv { table, h, out } = self;
        let d = h.len();
        let mut rows = table.chunks_exact(4 * d);
        let mut outs = out.chunks_exact_mut(4);
        for (rows, out) in (&mut rows).zip(&mut outs) {
            let (a, rest) = rows.split_at(d);
            let (b, rest) = rest.split_at(d);
            let (c, e) = rest.split_at(d);
            out.copy_from_slice(&dot_rows(simd, [a, b, c, e], h));
        }
        for (row, out) in rows.remainder().chunks_exact(d).zip(outs.into_remainder()) {
            *out = dot_rows(simd, [row], h)[0];
        }
    }
}

/// `out[k] = h · table[candidates[k]]` for the candidates that are items (others left as they
/// are).
struct Gather<'a> {
    table: &'a [f32],
    num_items: usize,
    h: &'a [f32],
    candidates: &'a [u32],
    out: &'a mut [f32],
}

impl WithSimd for Gather<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let d = self.h.len();
        for (&c, out) in self.candidates.iter().zip(self.out.iter_mut()) {
            let c = c as usize;
            if c != 0 && c <= self.num_items {
                *out = dot_rows(simd, [&self.table[c * d..(c + 1) * d]], self.h)[0];
            }
        }
    }
}
