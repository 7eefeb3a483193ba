//! SASRec's fused CPU ops, each with its own backward pass (candle-nn's fast softmax and layer
//! norm have none and silently cut the gradient).
//!
//! - [`Embed`]: item embedding gather × √d + positional embedding, dropout.
//! - [`LayerNorm`]: row-wise layer norm with affine weight and bias (also as slice functions,
//!   [`layer_norm_rows`] and [`layer_norm_rows_bwd`], for the fused block).
//! - [`Attention`](super::attention::Attention) (in `attention.rs`): causal multi-head attention
//!   over packed sequences (softmax and attention dropout fused), exact for the reference's left
//!   padding without computing padded rows.
//! - [`Block`](super::block::Block) (in `block.rs`): a whole block (layer norms, projections,
//!   attention, feed-forward) as one op; the training and serving paths use it.
//! - `BiasAct` (`+ bias`, optionally then ReLU and dropout) and `BiasResidual` (`(h + bias)` with
//!   dropout, `+ residual`): test-only, for the op-by-op reference graph of a block.
//! - [`RowLoss`]: positive and per-position negative logits gathered from the item embeddings and
//!   the BCE loss over them, in one pass (gradients scattered only to the rows used).
//! - [`SharedLoss`]: sampled softmax or gBCE over the positive logit (gathered) and the logits of
//!   negatives shared by the batch (computed by a matmul outside).
//!
//! Dropout masks are a hash of (seed, element index), never a stream: the backward pass
//! regenerates them instead of storing them, and they do not depend on how rows are split
//! between threads. Reductions (bias and norm gradients) sum fixed-size row chunks in order, so
//! results do not depend on the thread count either.

use std::sync::{Arc, Mutex};

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor, bail,
};
use rayon::prelude::*;

use super::tile;
use crate::kernels::f32_ref;

/// Rows per parallel chunk in row-wise kernels (fixed, so sums do not depend on threads).
pub(super) const ROW_CHUNK: usize = 256;

/// SplitMix64's finalizer: a good 64-bit mix of a counter.
#[inline]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An inverted-dropout mask defined by a seed: element `i` is kept with probability `1 - p`
/// and then scaled by `1 / (1 - p)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dropout {
    /// Keep an element when its 16-bit lane is at least this (0: keep everything).
    threshold: u32,
    /// `1 / (1 - p)`.
    scale: f32,
    seed: u64,
}

impl Dropout {
    /// No dropout.
    pub(crate) const NONE: Dropout = Dropout {
        threshold: 0,
        scale: 1.0,
        seed: 0,
    };

    /// Dropout with rate `p` (0 disables it) and a seed.
    pub(crate) fn new(p: f64, seed: u64) -> Dropout {
        if p <= 0.0 {
            return Dropout::NONE;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let threshold = (p * 65536.0).round().clamp(1.0, 65535.0) as u32;
        #[allow(clippy::cast_possible_truncation)]
        let scale = (65536.0 / (65536.0 - f64::from(threshold))) as f32;
        Dropout {
            threshold,
            scale,
            seed: mix(seed),
        }
    }

    #[cfg(test)]
    pub(crate) fn active(&self) -> bool {
        self.threshold > 0
    }

    /// The factor a kept element is scaled by: `1 / (1 - p)` (1 without dropout).
    pub(crate) fn keep_scale(&self) -> f32 {
        self.scale
    }

    /// The factor of element `i`: `0` (dropped) or `1 / (1 - p)`.
    #[inline]
    pub(crate) fn factor(&self, i: usize) -> f32 {
        if self.threshold == 0 {
            return 1.0;
        }
        let h = mix(self.seed ^ (i as u64 >> 2));
        let lane = ((h >> ((i & 3) * 16)) & 0xFFFF) as u32;
        if lane >= self.threshold {
            self.scale
        } else {
            0.0
        }
    }

    /// `out[j] = factor(2 · (start + j))`: the even elements from `2 · start` on, two per hash
    /// (an element's 16-bit lane is `(i & 3) · 16` of the hash of `i >> 2`).
    #[inline]
    pub(crate) fn even_factors(&self, start: usize, out: &mut [f32]) {
        if self.threshold == 0 {
            out.fill(1.0);
            return;
        }
        let mut h = 0;
        for (j, o) in out.iter_mut().enumerate() {
            let t = start + j;
            if j == 0 || t & 1 == 0 {
                h = mix(self.seed ^ (t as u64 >> 1));
            }
            let lane = ((h >> ((t & 1) * 32)) & 0xFFFF) as u32;
            *o = if lane >= self.threshold {
                self.scale
            } else {
                0.0
            };
        }
    }

    /// `Σ_{k < count} factor(2 · (start + k) + 1)`: the odd elements from `2 · start + 1` on, two
    /// per hash.
    pub(crate) fn odd_factor_sum(&self, start: usize, count: usize) -> f32 {
        if self.threshold == 0 {
            #[allow(clippy::cast_precision_loss)]
            return count as f32;
        }
        let mut h = 0;
        let mut total = 0f32;
        for k in 0..count {
            let t = start + k;
            if k == 0 || t & 1 == 0 {
                h = mix(self.seed ^ (t as u64 >> 1));
            }
            let lane = ((h >> ((t & 1) * 32 + 16)) & 0xFFFF) as u32;
            if lane >= self.threshold {
                total += self.scale;
            }
        }
        total
    }
}

/// Runs `f` on the f32 values of a CPU tensor (made contiguous first if needed).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(f32_ref(cpu, layout, "read")?),
        _ => bail!("attune sasrec ops run on the CPU only"),
    }
}

pub(super) fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// `len` zeros in a buffer whose capacity is rounded up to a whole MiB: for a tensor whose size
/// changes from step to step (the compact embedding table's gradient), so the allocator sees the
/// same few sizes every step and reuses their memory instead of mapping and clearing fresh pages.
pub(super) fn zeroed(len: usize) -> Vec<f32> {
    const GRAIN: usize = 1 << 18;
    let mut v = Vec::with_capacity(len.div_ceil(GRAIN) * GRAIN);
    v.resize(len, 0.0);
    v
}

/// Sums per-chunk partial vectors in chunk order.
pub(super) fn sum_partials(parts: Vec<Vec<f32>>, n: usize) -> Vec<f32> {
    let mut total = vec![0f32; n];
    for part in parts {
        total.iter_mut().zip(&part).for_each(|(t, p)| *t += p);
    }
    total
}

/// `x = drop(item_emb[item] · scale + pos_emb[position])` for each (item, position) row:
/// `[rows, d]` from `item_emb` `[n + 1, d]` and `pos_emb` `[len, d]`.
pub(crate) struct Embed {
    pub(crate) items: Arc<[u32]>,
    pub(crate) positions: Arc<[u32]>,
    pub(crate) scale: f32,
    pub(crate) dropout: Dropout,
}

impl CustomOp2 for Embed {
    fn name(&self) -> &'static str {
        "attune-sasrec-embed"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let emb = f32_ref(s1, l1, self.name())?;
        let pos = f32_ref(s2, l2, self.name())?;
        let (n_rows, d) = l1.shape().dims2()?;
        let (n_pos, _) = l2.shape().dims2()?;
        if self.positions.len() != self.items.len() {
            bail!("{}: positions do not match", self.name())
        }
        if self.items.iter().any(|&i| i as usize >= n_rows)
            || self.positions.iter().any(|&p| p as usize >= n_pos)
        {
            bail!("{}: item or position out of range", self.name())
        }
        let rows = self.items.len();
        let mut out = vec![0f32; rows * d];
        out.par_chunks_mut(ROW_CHUNK * d)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (r, row) in chunk.chunks_exact_mut(d).enumerate() {
                    let r = c * ROW_CHUNK + r;
                    let item = self.items[r] as usize;
                    let t = self.positions[r] as usize;
                    let e = &emb[item * d..(item + 1) * d];
                    let p = &pos[t * d..(t + 1) * d];
                    for j in 0..d {
                        row[j] = (e[j] * self.scale + p[j]) * self.dropout.factor(r * d + j);
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }

    fn bwd(
        &self,
        emb: &Tensor,
        pos: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n_rows, d) = emb.dims2()?;
        let (n_pos, _) = pos.dims2()?;
        let (g_emb, g_pos) = with_f32(grad, |g| {
            let mut g_emb = zeroed(n_rows * d);
            let mut g_pos = vec![0f32; n_pos * d];
            for (r, (&item, &t)) in self.items.iter().zip(self.positions.iter()).enumerate() {
                if item == 0 {
                    continue;
                }
                let t = t as usize;
                let ge = &mut g_emb[item as usize * d..(item as usize + 1) * d];
                let gp = &mut g_pos[t * d..(t + 1) * d];
                let gr = &g[r * d..(r + 1) * d];
                for j in 0..d {
                    let v = gr[j] * self.dropout.factor(r * d + j);
                    ge[j] += v * self.scale;
                    gp[j] += v;
                }
            }
            Ok((g_emb, g_pos))
        })?;
        Ok((
            Some(tensor(g_emb, (n_rows, d))?),
            Some(tensor(g_pos, (n_pos, d))?),
        ))
    }
}

/// Layer norm over the last dimension of a `[rows, d]` tensor, with weight and bias `[d]`.
pub(crate) struct LayerNorm {
    pub(crate) eps: f32,
}

#[inline]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    #[allow(clippy::cast_precision_loss)]
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Layer norm of each `d`-row of `x` (`d` = `w.len()`) into `out`.
pub(super) fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    out.par_chunks_mut(ROW_CHUNK * d)
        .zip(x.par_chunks(ROW_CHUNK * d))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                let (mean, rstd) = moments(x, eps);
                for j in 0..d {
                    o[j] = (x[j] - mean) * rstd * w[j] + b[j];
                }
            }
        });
}

/// The backward pass of [`layer_norm_rows`] for the output gradient `g`: the input's gradient
/// written to `gx` (added to it if `accumulate`), the weight's and bias's returned (summed in
/// fixed row chunks, in order).
pub(super) fn layer_norm_rows_bwd(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    eps: f32,
    gx: &mut [f32],
    accumulate: bool,
) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    #[allow(clippy::cast_precision_loss)]
    let inv_d = 1.0 / d as f32;
    let parts: Vec<(Vec<f32>, Vec<f32>)> = gx
        .par_chunks_mut(ROW_CHUNK * d)
        .zip(x.par_chunks(ROW_CHUNK * d))
        .zip(g.par_chunks(ROW_CHUNK * d))
        .map(|((gx, x), g)| {
            let mut gw = vec![0f32; d];
            let mut gb = vec![0f32; d];
            let mut xhat = vec![0f32; d];
            for ((gx, x), g) in gx
                .chunks_exact_mut(d)
                .zip(x.chunks_exact(d))
                .zip(g.chunks_exact(d))
            {
                let (mean, rstd) = moments(x, eps);
                let (mut s1, mut s2) = (0f32, 0f32);
                for j in 0..d {
                    xhat[j] = (x[j] - mean) * rstd;
                    gw[j] += g[j] * xhat[j];
                    gb[j] += g[j];
                    let gh = g[j] * w[j];
                    s1 += gh;
                    s2 += gh * xhat[j];
                }
                s1 *= inv_d;
                s2 *= inv_d;
                for j in 0..d {
                    let v = rstd * (g[j] * w[j] - s1 - xhat[j] * s2);
                    if accumulate {
                        gx[j] += v;
                    } else {
                        gx[j] = v;
                    }
                }
            }
            (gw, gb)
        })
        .collect();
    let (gws, gbs): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    (sum_partials(gws, d), sum_partials(gbs, d))
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "attune-sasrec-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_ref(s1, l1, self.name())?;
        let w = f32_ref(s2, l2, self.name())?;
        let b = f32_ref(s3, l3, self.name())?;
        let d = w.len();
        if d == 0 || b.len() != d || !x.len().is_multiple_of(d) {
            bail!("{}: shapes do not match", self.name())
        }
        let mut out = vec![0f32; x.len()];
        layer_norm_rows(x, w, b, self.eps, &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.dim(0)?;
        let (gx, gw, gb) = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(grad, |g| {
                    let mut gx = vec![0f32; x.len()];
                    let (gw, gb) = layer_norm_rows_bwd(x, w, g, self.eps, &mut gx, false);
                    Ok((gx, gw, gb))
                })
            })
        })?;
        Ok((
            Some(tensor(gx, x.shape().clone())?),
            Some(tensor(gw, d)?),
            Some(tensor(gb, d)?),
        ))
    }
}

/// How the rows of a packed batch split into sequences: sequence `s` has the rows
/// `offsets[s]..offsets[s + 1]` (its real items, oldest first) and `pads[s]` padding positions
/// before them in the reference's left-padded layout.
#[derive(Debug, Clone)]
pub(crate) struct Packing {
    pub(crate) offsets: Vec<usize>,
    pub(crate) pads: Vec<usize>,
}

impl Packing {
    /// Start of sequence `s`'s block of attention weights (`heads · n²` each) in the index space
    /// of the attention dropout mask.
    pub(super) fn prob_offsets(&self, heads: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.pads.len() + 1);
        let mut at = 0;
        out.push(0);
        for w in self.offsets.windows(2) {
            let n = w[1] - w[0];
            at += heads * n * n;
            out.push(at);
        }
        out
    }
}

/// Splits `v` into consecutive mutable pieces of the given lengths.
pub(super) fn split_by(mut v: &mut [f32], lens: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut out = Vec::new();
    for len in lens {
        let (head, tail) = v.split_at_mut(len);
        out.push(head);
        v = tail;
    }
    out
}

/// `h + bias` over rows, then (if `relu`) ReLU and dropout: `[rows, n]` and `[n]`. The fused
/// block ([`super::block`]) does this itself; kept for the op-by-op reference graph.
#[cfg(test)]
pub(crate) struct BiasAct {
    pub(crate) relu: bool,
    pub(crate) dropout: Dropout,
}

#[cfg(test)]
impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "attune-sasrec-bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = f32_ref(s1, l1, self.name())?;
        let b = f32_ref(s2, l2, self.name())?;
        let n = b.len();
        if n == 0 || !h.len().is_multiple_of(n) {
            bail!("{}: shapes do not match", self.name())
        }
        let mut out = vec![0f32; h.len()];
        out.par_chunks_mut(ROW_CHUNK * n)
            .zip(h.par_chunks(ROW_CHUNK * n))
            .enumerate()
            .for_each(|(c, (o, h))| {
                let base = c * ROW_CHUNK * n;
                for (r, (o, h)) in o.chunks_exact_mut(n).zip(h.chunks_exact(n)).enumerate() {
                    for j in 0..n {
                        let v = h[j] + b[j];
                        o[j] = if self.relu {
                            v.max(0.0) * self.dropout.factor(base + r * n + j)
                        } else {
                            v
                        };
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = b.dim(0)?;
        let (gh, gb) = with_f32(res, |y| {
            with_f32(grad, |g| {
                let mut gh = vec![0f32; g.len()];
                let parts: Vec<Vec<f32>> = gh
                    .par_chunks_mut(ROW_CHUNK * n)
                    .zip(g.par_chunks(ROW_CHUNK * n))
                    .zip(y.par_chunks(ROW_CHUNK * n))
                    .map(|((gh, g), y)| {
                        let mut gb = vec![0f32; n];
                        for ((gh, g), y) in gh
                            .chunks_exact_mut(n)
                            .zip(g.chunks_exact(n))
                            .zip(y.chunks_exact(n))
                        {
                            for j in 0..n {
                                gh[j] = if !self.relu {
                                    g[j]
                                } else if y[j] > 0.0 {
                                    g[j] * self.dropout.scale
                                } else {
                                    0.0
                                };
                                gb[j] += gh[j];
                            }
                        }
                        gb
                    })
                    .collect();
                Ok((gh, sum_partials(parts, n)))
            })
        })?;
        Ok((Some(tensor(gh, h.shape().clone())?), Some(tensor(gb, n)?)))
    }
}

/// `(h + bias) · dropout + residual`: `h` and `residual` `[rows, n]`, bias `[n]`. Kept for the
/// op-by-op reference graph, like [`BiasAct`].
#[cfg(test)]
pub(crate) struct BiasResidual {
    pub(crate) dropout: Dropout,
}

#[cfg(test)]
impl CustomOp3 for BiasResidual {
    fn name(&self) -> &'static str {
        "attune-sasrec-bias-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = f32_ref(s1, l1, self.name())?;
        let b = f32_ref(s2, l2, self.name())?;
        let res = f32_ref(s3, l3, self.name())?;
        let n = b.len();
        if n == 0 || !h.len().is_multiple_of(n) || res.len() != h.len() {
            bail!("{}: shapes do not match", self.name())
        }
        let mut out = vec![0f32; h.len()];
        out.par_chunks_mut(ROW_CHUNK * n)
            .zip(h.par_chunks(ROW_CHUNK * n))
            .zip(res.par_chunks(ROW_CHUNK * n))
            .enumerate()
            .for_each(|(c, ((o, h), res))| {
                for (r, ((o, h), res)) in o
                    .chunks_exact_mut(n)
                    .zip(h.chunks_exact(n))
                    .zip(res.chunks_exact(n))
                    .enumerate()
                {
                    let row = c * ROW_CHUNK + r;
                    for j in 0..n {
                        o[j] = (h[j] + b[j]) * self.dropout.factor(row * n + j) + res[j];
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        b: &Tensor,
        _res_in: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = b.dim(0)?;
        let (gh, gb, gr) = with_f32(grad, |g| {
            let mut gh = vec![0f32; g.len()];
            let mut gr = vec![0f32; g.len()];
            let parts: Vec<Vec<f32>> = gh
                .par_chunks_mut(ROW_CHUNK * n)
                .zip(gr.par_chunks_mut(ROW_CHUNK * n))
                .zip(g.par_chunks(ROW_CHUNK * n))
                .enumerate()
                .map(|(c, ((gh, gr), g))| {
                    let mut gb = vec![0f32; n];
                    for (r, ((gh, gr), g)) in gh
                        .chunks_exact_mut(n)
                        .zip(gr.chunks_exact_mut(n))
                        .zip(g.chunks_exact(n))
                        .enumerate()
                    {
                        let row = c * ROW_CHUNK + r;
                        gr.copy_from_slice(g);
                        for j in 0..n {
                            gh[j] = g[j] * self.dropout.factor(row * n + j);
                            gb[j] += gh[j];
                        }
                    }
                    gb
                })
                .collect();
            Ok((gh, sum_partials(parts, n), gr))
        })?;
        Ok((
            Some(tensor(gh, h.shape().clone())?),
            Some(tensor(gb, n)?),
            Some(tensor(gr, h.shape().clone())?),
        ))
    }
}

/// `log(1 + e^x)`, stable.
#[inline]
fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A dot product with eight independent partial sums, so the compiler vectorizes it (a single
/// running sum is a serial chain of float additions it may not reorder).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ta.iter().zip(tb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// The paper's BCE: at each row with a target (non-zero), `softplus(-h·e_target)` plus
/// `softplus(h·e_neg)` for each of the row's `k` negatives, averaged over those rows. Inputs:
/// the final hidden states `[rows, d]` and the item embeddings `[n + 1, d]`; output: a scalar.
pub(crate) struct RowLoss {
    pub(crate) targets: Arc<[u32]>,
    /// `rows × k` negatives.
    pub(crate) negatives: Arc<[u32]>,
    pub(crate) k: usize,
    /// `d loss / d logit` for each row's `1 + k` logits, kept for the backward pass.
    pub(crate) coef: Mutex<Vec<f32>>,
}

impl RowLoss {
    pub(crate) fn new(targets: Arc<[u32]>, negatives: Arc<[u32]>, k: usize) -> RowLoss {
        RowLoss {
            targets,
            negatives,
            k,
            coef: Mutex::new(Vec::new()),
        }
    }
}

impl CustomOp2 for RowLoss {
    fn name(&self) -> &'static str {
        "attune-sasrec-row-loss"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = f32_ref(s1, l1, self.name())?;
        let emb = f32_ref(s2, l2, self.name())?;
        let (rows, d) = l1.shape().dims2()?;
        let n_items = l2.shape().dims2()?.0;
        let k = self.k;
        if self.targets.len() != rows || self.negatives.len() != rows * k {
            bail!("{}: targets do not match the rows", self.name())
        }
        if self
            .targets
            .iter()
            .chain(self.negatives.iter())
            .any(|&i| i as usize >= n_items)
        {
            bail!("{}: item out of range", self.name())
        }
        let valid = self.targets.iter().filter(|&&t| t != 0).count().max(1);
        #[allow(clippy::cast_precision_loss)]
        let inv = 1.0 / valid as f32;
        let mut coef = vec![0f32; rows * (1 + k)];
        let losses: Vec<f64> = coef
            .par_chunks_mut(ROW_CHUNK * (1 + k))
            .enumerate()
            .map(|(c, coef)| {
                let mut total = 0f64;
                for (r, coef) in coef.chunks_exact_mut(1 + k).enumerate() {
                    let row = c * ROW_CHUNK + r;
                    let t = self.targets[row] as usize;
                    if t == 0 {
                        continue;
                    }
                    let hr = &h[row * d..(row + 1) * d];
                    let s = dot(hr, &emb[t * d..(t + 1) * d]);
                    let mut loss = softplus(-s);
                    coef[0] = (sigmoid(s) - 1.0) * inv;
                    for (j, &neg) in self.negatives[row * k..(row + 1) * k].iter().enumerate() {
                        let neg = neg as usize;
                        let s = dot(hr, &emb[neg * d..(neg + 1) * d]);
                        loss += softplus(s);
                        coef[1 + j] = sigmoid(s) * inv;
                    }
                    total += f64::from(loss);
                }
                total
            })
            .collect();
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let loss = (losses.iter().sum::<f64>() / valid as f64) as f32;
        if let Ok(mut saved) = self.coef.lock() {
            *saved = coef;
        }
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        h: &Tensor,
        emb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, d) = h.dims2()?;
        let (n_items, _) = emb.dims2()?;
        let go = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let coef = self.coef.lock().map(|c| c.clone()).unwrap_or_default();
        let k = self.k;
        if coef.len() != rows * (1 + k) {
            bail!("{}: backward without forward", self.name())
        }
        let (gh, ge) = with_f32(h, |hv| {
            with_f32(emb, |ev| {
                let mut gh = vec![0f32; rows * d];
                gh.par_chunks_mut(d).enumerate().for_each(|(row, gh)| {
                    let t = self.targets[row] as usize;
                    if t == 0 {
                        return;
                    }
                    let c = &coef[row * (1 + k)..(row + 1) * (1 + k)];
                    let items = std::iter::once(t).chain(
                        self.negatives[row * k..(row + 1) * k]
                            .iter()
                            .map(|&i| i as usize),
                    );
                    for (item, &c) in items.zip(c) {
                        let e = &ev[item * d..(item + 1) * d];
                        gh.iter_mut().zip(e).for_each(|(g, e)| *g += go * c * e);
                    }
                });
                let mut ge = zeroed(n_items * d);
                for row in 0..rows {
                    let t = self.targets[row] as usize;
                    if t == 0 {
                        continue;
                    }
                    let hr = &hv[row * d..(row + 1) * d];
                    let c = &coef[row * (1 + k)..(row + 1) * (1 + k)];
                    let items = std::iter::once(t).chain(
                        self.negatives[row * k..(row + 1) * k]
                            .iter()
                            .map(|&i| i as usize),
                    );
                    for (item, &c) in items.zip(c) {
                        let ge = &mut ge[item * d..(item + 1) * d];
                        ge.iter_mut().zip(hr).for_each(|(g, h)| *g += go * c * h);
                    }
                }
                Ok((gh, ge))
            })
        })?;
        Ok((
            Some(tensor(gh, (rows, d))?),
            Some(tensor(ge, (n_items, d))?),
        ))
    }
}

/// Which loss [`SharedLoss`] computes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SharedKind {
    /// Cross-entropy of the positive among positive + negatives.
    Softmax,
    /// gBCE with this β: `β · softplus(-s⁺) + Σ softplus(s⁻)`.
    Gbce(f32),
}

/// A loss over each row's positive logit (gathered here from `h` and the item embeddings) and
/// the logits `[rows, N]` of `N` negatives shared by the batch; a negative equal to the row's
/// target is ignored. Averaged over rows with a target. Inputs: `h` `[rows, d]`, item embeddings
/// `[n + 1, d]`, negative logits `[rows, N]`; output: a scalar.
pub(crate) struct SharedLoss {
    pub(crate) targets: Arc<[u32]>,
    pub(crate) negatives: Arc<[u32]>,
    pub(crate) kind: SharedKind,
    /// `d loss / d logit`: the positive's per row, then the negatives' `[rows, N]`.
    pub(crate) coef: Mutex<(Vec<f32>, Vec<f32>)>,
}

impl SharedLoss {
    pub(crate) fn new(targets: Arc<[u32]>, negatives: Arc<[u32]>, kind: SharedKind) -> SharedLoss {
        SharedLoss {
            targets,
            negatives,
            kind,
            coef: Mutex::new((Vec::new(), Vec::new())),
        }
    }
}

impl CustomOp3 for SharedLoss {
    fn name(&self) -> &'static str {
        "attune-sasrec-shared-loss"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = f32_ref(s1, l1, self.name())?;
        let emb = f32_ref(s2, l2, self.name())?;
        let neg = f32_ref(s3, l3, self.name())?;
        let (rows, d) = l1.shape().dims2()?;
        let n_items = l2.shape().dims2()?.0;
        let n = self.negatives.len();
        if self.targets.len() != rows || l3.shape().dims2()? != (rows, n) {
            bail!("{}: shapes do not match", self.name())
        }
        if self.targets.iter().any(|&i| i as usize >= n_items) {
            bail!("{}: item out of range", self.name())
        }
        let valid = self.targets.iter().filter(|&&t| t != 0).count().max(1);
        #[allow(clippy::cast_precision_loss)]
        let inv = 1.0 / valid as f32;
        let mut pos_coef = vec![0f32; rows];
        let mut neg_coef = vec![0f32; rows * n];
        let kind = self.kind;
        // Where each negative stands, sorted by item: a row finds the slots of its own target
        // (ignored as a negative) by binary search instead of comparing every slot.
        let mut slots: Vec<(u32, u32)> = Vec::new();
        if matches!(kind, SharedKind::Softmax) {
            #[allow(clippy::cast_possible_truncation)]
            slots.extend(
                self.negatives
                    .iter()
                    .enumerate()
                    .map(|(j, &i)| (i, j as u32)),
            );
            slots.sort_unstable();
        }
        let losses: Vec<f64> = pos_coef
            .par_chunks_mut(ROW_CHUNK)
            .zip(neg_coef.par_chunks_mut(ROW_CHUNK * n))
            .enumerate()
            .map(|(c, (pc, nc))| {
                let mut total = 0f64;
                for (r, (pc, nc)) in pc.iter_mut().zip(nc.chunks_exact_mut(n)).enumerate() {
                    let row = c * ROW_CHUNK + r;
                    let t = self.targets[row];
                    if t == 0 {
                        continue;
                    }
                    let tu = t as usize;
                    let s = dot(&h[row * d..(row + 1) * d], &emb[tu * d..(tu + 1) * d]);
                    let logits = &neg[row * n..(row + 1) * n];
                    match kind {
                        SharedKind::Softmax => {
                            // Branch-free passes that vectorize: the shift is the largest
                            // logit of the row (the target's own slots included: any bound
                            // keeps the exponentials finite), then the target's slots are
                            // zeroed before the sum, so they count as no negative.
                            let max = s.max(tile::max(logits));
                            nc.iter_mut()
                                .zip(logits)
                                .for_each(|(c, &l)| *c = tile::exp_neg(l - max));
                            let from = slots.partition_point(|&(i, _)| i < t);
                            for &(_, j) in slots[from..].iter().take_while(|&&(i, _)| i == t) {
                                nc[j as usize] = 0.0;
                            }
                            let e0 = tile::exp_neg(s - max);
                            let sum = e0 + tile::sum(nc);
                            let isum = 1.0 / sum;
                            let scale = isum * inv;
                            nc.iter_mut().for_each(|c| *c *= scale);
                            *pc = (e0 * isum - 1.0) * inv;
                            total += f64::from(max + sum.ln() - s);
                        }
                        SharedKind::Gbce(beta) => {
                            let mut loss = beta * softplus(-s);
                            *pc = beta * (sigmoid(s) - 1.0) * inv;
                            for ((&l, &item), c) in
                                logits.iter().zip(self.negatives.iter()).zip(nc.iter_mut())
                            {
                                if item != t {
                                    loss += softplus(l);
                                    *c = sigmoid(l) * inv;
                                }
                            }
                            total += f64::from(loss);
                        }
                    }
                }
                total
            })
            .collect();
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let loss = (losses.iter().sum::<f64>() / valid as f64) as f32;
        if let Ok(mut saved) = self.coef.lock() {
            *saved = (pos_coef, neg_coef);
        }
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        h: &Tensor,
        emb: &Tensor,
        neg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, d) = h.dims2()?;
        let (n_items, _) = emb.dims2()?;
        let go = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let (pos_coef, mut neg_coef) = self
            .coef
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        if pos_coef.len() != rows {
            bail!("{}: backward without forward", self.name())
        }
        let (gh, ge) = with_f32(h, |hv| {
            with_f32(emb, |ev| {
                let mut gh = vec![0f32; rows * d];
                gh.par_chunks_mut(d).enumerate().for_each(|(row, gh)| {
                    let t = self.targets[row] as usize;
                    if t != 0 {
                        let c = go * pos_coef[row];
                        let e = &ev[t * d..(t + 1) * d];
                        gh.iter_mut().zip(e).for_each(|(g, e)| *g = c * e);
                    }
                });
                let mut ge = zeroed(n_items * d);
                for row in 0..rows {
                    let t = self.targets[row] as usize;
                    if t == 0 {
                        continue;
                    }
                    let c = go * pos_coef[row];
                    let ge = &mut ge[t * d..(t + 1) * d];
                    ge.iter_mut()
                        .zip(&hv[row * d..(row + 1) * d])
                        .for_each(|(g, h)| *g += c * h);
                }
                Ok((gh, ge))
            })
        })?;
        if go != 1.0 {
            neg_coef.par_iter_mut().for_each(|c| *c *= go);
        }
        Ok((
            Some(tensor(gh, (rows, d))?),
            Some(tensor(ge, (n_items, d))?),
            Some(tensor(neg_coef, neg.shape().clone())?),
        ))
    }
}
