//! The attention op as it was before the matrix-multiply rewrite: scalar loops over each
//! (query, key) pair, recomputing the weights in the backward pass from per-row stats. Kept as
//! the reference the fast op is tested against (same dropout mask indices).

#![allow(clippy::too_many_lines)]

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::MAX_POSITIONS;
use crate::kernels::f32_ref;
use crate::sasrec::ops::{Dropout, Packing, dot, split_by, sum_partials, tensor, with_f32};

/// Causal multi-head attention over packed sequences, softmax and attention dropout fused:
/// inputs `q` `[rows, d]`, `kv` `[rows, 2d]` (keys then values, biases included) and the
/// key/value bias `[2d]`; output `[rows, d]`.
///
/// Exact for the reference's left-padded layout without computing it: a padding position's
/// block input is zero (timeline mask), so its key is the key bias and its value the value
/// bias. The `p` padding keys before a sequence are one logit `q·b_k` counted `p` times in the
/// softmax (each with its own dropout draw), and padding queries are never computed: the
/// reference masks their outputs to zero.
pub(crate) struct Reference {
    pub(crate) packing: Arc<Packing>,
    pub(crate) heads: usize,
    pub(crate) scale: f32,
    pub(crate) dropout: Dropout,
    /// Per row and head, [`ROW_STATS`] values: the softmax's max logit and `1 / Σ`, one
    /// padding key's weight and the sum of the padding keys' dropout factors. The backward pass
    /// recomputes the real keys' weights from them instead of keeping `n²` of them per sequence
    /// (exactly: the same operations in the same order).
    saved: Mutex<Option<Vec<f32>>>,
}

/// Values kept per row and head by [`Reference`]'s forward pass.
const ROW_STATS: usize = 4;

impl Reference {
    pub(crate) fn new(packing: Arc<Packing>, heads: usize, scale: f32, dropout: Dropout) -> Self {
        Reference {
            packing,
            heads,
            scale,
            dropout,
            saved: Mutex::new(None),
        }
    }

    /// The dropout factor of real key `j` for query `i` of head `h` of the sequence whose
    /// probabilities start at `base`.
    #[inline]
    fn real_factor(&self, base: usize, n: usize, h: usize, i: usize, j: usize) -> f32 {
        self.dropout.factor(2 * (base + (h * n + i) * n + j))
    }

    /// The sum of the dropout factors of the `pads` padding keys of `row`, head `h`.
    fn pad_weight(&self, row: usize, h: usize, pads: usize) -> f32 {
        if !self.dropout.active() {
            #[allow(clippy::cast_precision_loss)]
            return pads as f32;
        }
        (0..pads)
            .map(|k| {
                self.dropout
                    .factor(2 * ((row * self.heads + h) * MAX_POSITIONS + k) + 1)
            })
            .sum()
    }
}

impl CustomOp3 for Reference {
    fn name(&self) -> &'static str {
        "attune-sasrec-attention-reference"
    }

    #[allow(clippy::too_many_lines)]
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = f32_ref(s1, l1, self.name())?;
        let kv = f32_ref(s2, l2, self.name())?;
        let bkv = f32_ref(s3, l3, self.name())?;
        let (rows, d) = l1.shape().dims2()?;
        let pk = &self.packing;
        if l2.shape().dims2()? != (rows, 2 * d)
            || bkv.len() != 2 * d
            || pk.offsets.last() != Some(&rows)
            || !d.is_multiple_of(self.heads)
        {
            bail!("{}: shapes do not match", self.name())
        }
        let (heads, dh) = (self.heads, d / self.heads);
        let prob_off = pk.prob_offsets(heads);
        let mut out = vec![0f32; rows * d];
        let mut stats = vec![0f32; rows * heads * ROW_STATS];
        let lens = || pk.offsets.windows(2).map(|w| w[1] - w[0]);
        let outs = split_by(&mut out, lens().map(|n| n * d));
        let sts = split_by(&mut stats, lens().map(|n| n * heads * ROW_STATS));
        outs.into_par_iter()
            .zip(sts)
            .enumerate()
            .for_each(|(s, (out, stats))| {
                let r0 = pk.offsets[s];
                let n = pk.offsets[s + 1] - r0;
                let pads = pk.pads[s];
                let mut e = vec![0f32; n];
                for h in 0..heads {
                    let bk = &bkv[h * dh..(h + 1) * dh];
                    let bv = &bkv[d + h * dh..d + (h + 1) * dh];
                    for i in 0..n {
                        let qi = &q[(r0 + i) * d + h * dh..(r0 + i) * d + (h + 1) * dh];
                        let mut max = f32::NEG_INFINITY;
                        for (j, e) in e[..=i].iter_mut().enumerate() {
                            let kj = &kv[(r0 + j) * 2 * d + h * dh..][..dh];
                            *e = self.scale * dot(qi, kj);
                            max = max.max(*e);
                        }
                        let a = self.scale * dot(qi, bk);
                        if pads > 0 {
                            max = max.max(a);
                        }
                        let mut z = 0f32;
                        for e in &mut e[..=i] {
                            *e = (*e - max).exp();
                            z += *e;
                        }
                        let ea = if pads > 0 { (a - max).exp() } else { 0.0 };
                        #[allow(clippy::cast_precision_loss)]
                        let z = z + pads as f32 * ea;
                        let inv = 1.0 / z;
                        let ppad = ea * inv;
                        let w = self.pad_weight(r0 + i, h, pads);
                        let st = &mut stats[(i * heads + h) * ROW_STATS..][..ROW_STATS];
                        st.copy_from_slice(&[max, inv, ppad, w]);
                        let o = &mut out[i * d + h * dh..i * d + (h + 1) * dh];
                        let c = w * ppad;
                        o.iter_mut().zip(bv).for_each(|(o, b)| *o = c * b);
                        for (j, &e) in e[..=i].iter().enumerate() {
                            let c = e * inv * self.real_factor(prob_off[s], n, h, i, j);
                            if c != 0.0 {
                                let vj = &kv[(r0 + j) * 2 * d + d + h * dh..][..dh];
                                o.iter_mut().zip(vj).for_each(|(o, v)| *o += c * v);
                            }
                        }
                    }
                }
            });
        if let Ok(mut saved) = self.saved.lock() {
            *saved = Some(stats);
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }

    #[allow(clippy::too_many_lines)]
    fn bwd(
        &self,
        q: &Tensor,
        kv: &Tensor,
        bkv: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, d) = q.dims2()?;
        let (heads, dh) = (self.heads, d / self.heads);
        let pk = &self.packing;
        let prob_off = pk.prob_offsets(heads);
        let Some(stats) = self.saved.lock().ok().and_then(|mut s| s.take()) else {
            bail!("{}: backward without forward", self.name())
        };
        let mut dq = vec![0f32; rows * d];
        let mut dkv = vec![0f32; rows * 2 * d];
        let partials: Vec<Vec<f32>> = with_f32(q, |q| {
            with_f32(kv, |kv| {
                with_f32(bkv, |bkv| {
                    with_f32(grad, |g| {
                        let lens = || pk.offsets.windows(2).map(|w| w[1] - w[0]);
                        let dqs = split_by(&mut dq, lens().map(|n| n * d));
                        let dkvs = split_by(&mut dkv, lens().map(|n| n * 2 * d));
                        Ok(dqs
                            .into_par_iter()
                            .zip(dkvs)
                            .enumerate()
                            .map(|(s, (dq, dkv))| {
                                let r0 = pk.offsets[s];
                                let n = pk.offsets[s + 1] - r0;
                                #[allow(clippy::cast_precision_loss)]
                                let pads = pk.pads[s] as f32;
                                let mut dbkv = vec![0f32; 2 * d];
                                let mut ds = vec![0f32; n];
                                // The probabilities (recomputed exactly as the forward pass
                                // did) and the dropout factors of the current query's keys.
                                let mut p = vec![0f32; n];
                                let mut f = vec![0f32; n];
                                for h in 0..heads {
                                    let bk = &bkv[h * dh..(h + 1) * dh];
                                    let bv = &bkv[d + h * dh..d + (h + 1) * dh];
                                    for i in 0..n {
                                        let row = r0 + i;
                                        let go = &g[row * d + h * dh..][..dh];
                                        let qi = &q[row * d + h * dh..][..dh];
                                        let st =
                                            &stats[(row * heads + h) * ROW_STATS..][..ROW_STATS];
                                        let (max, inv, ppad, w) = (st[0], st[1], st[2], st[3]);
                                        let dpad = dot(go, bv);
                                        let mut sum = w * dpad * ppad;
                                        for j in 0..=i {
                                            let kj = &kv[(r0 + j) * 2 * d + h * dh..][..dh];
                                            p[j] = (self.scale * dot(qi, kj) - max).exp() * inv;
                                            f[j] = self.real_factor(prob_off[s], n, h, i, j);
                                            let vj = &kv[(r0 + j) * 2 * d + d + h * dh..][..dh];
                                            ds[j] =
                                                if f[j] == 0.0 { 0.0 } else { f[j] * dot(go, vj) };
                                            sum += ds[j] * p[j];
                                        }
                                        // d loss / d logit, times the score scale.
                                        for j in 0..=i {
                                            ds[j] = self.scale * p[j] * (ds[j] - sum);
                                        }
                                        let da = self.scale * ppad * (w * dpad - pads * sum);
                                        {
                                            let dqi = &mut dq[i * d + h * dh..][..dh];
                                            dqi.iter_mut().zip(bk).for_each(|(x, b)| *x += da * b);
                                            for j in 0..=i {
                                                let kj = &kv[(r0 + j) * 2 * d + h * dh..][..dh];
                                                let c = ds[j];
                                                dqi.iter_mut()
                                                    .zip(kj)
                                                    .for_each(|(x, k)| *x += c * k);
                                            }
                                        }
                                        dbkv[h * dh..(h + 1) * dh]
                                            .iter_mut()
                                            .zip(qi)
                                            .for_each(|(x, q)| *x += da * q);
                                        let cv = w * ppad;
                                        dbkv[d + h * dh..d + (h + 1) * dh]
                                            .iter_mut()
                                            .zip(go)
                                            .for_each(|(x, g)| *x += cv * g);
                                        for j in 0..=i {
                                            let dkj = &mut dkv[j * 2 * d + h * dh..][..dh];
                                            let c = ds[j];
                                            dkj.iter_mut().zip(qi).for_each(|(x, q)| *x += c * q);
                                            let c = p[j] * f[j];
                                            if c != 0.0 {
                                                let dvj = &mut dkv[j * 2 * d + d + h * dh..][..dh];
                                                dvj.iter_mut()
                                                    .zip(go)
                                                    .for_each(|(x, g)| *x += c * g);
                                            }
                                        }
                                    }
                                }
                                dbkv
                            })
                            .collect())
                    })
                })
            })
        })?;
        let dbkv = sum_partials(partials, 2 * d);
        Ok((
            Some(tensor(dq, (rows, d))?),
            Some(tensor(dkv, (rows, 2 * d))?),
            Some(tensor(dbkv, 2 * d)?),
        ))
    }
}
