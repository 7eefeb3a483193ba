//! A whole SASRec block as one op with its own backward pass:
//!
//! ```text
//! q_in = LayerNorm₁(x)
//! q = q_in·W_qᵀ + b_q,  kv = x·W_kvᵀ + b_kv
//! x1 = Attention(q, kv)·W_oᵀ + b_o + q_in
//! x2 = LayerNorm₂(x1)
//! out = drop₂(drop₁(ReLU(x2·W_1ᵀ + b_1))·W_2ᵀ + b_2) + x2
//! ```
//!
//! As a chain of separate ops, candle's backward pass gave every one of the ~16 `[rows, d]`
//! intermediate gradients of a block a zeroed tensor and an add (on its own thread pool, spun
//! even with one training thread), all fresh allocations: about a third of a step. Here the
//! block is one graph node: its intermediates live in pooled buffers ([`super::pool`]) and its
//! matrix multiplies are [`super::tile`]'s. The parameters come in as one flat tensor (the
//! block's twelve tensors concatenated in [`super::model`]'s order); dropout masks, sums and
//! results match the op-by-op graph (the reference the tests compare against).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::attention::{self, Attention};
use super::ops::{
    Dropout, ROW_CHUNK, layer_norm_rows, layer_norm_rows_bwd, sum_partials, tensor, with_f32,
};
use super::pool;
use super::tile::{self, Lhs, MatMul, Span};
use crate::kernels::f32_ref;

/// The block's layer-norm epsilon (the reference's).
pub(crate) const LN_EPS: f32 = 1e-8;

/// Rows per partial sum of a weight gradient (fixed, so sums do not depend on threads).
const WEIGHT_ROWS: usize = 2048;

/// The block's parameters as slices of the flat parameter vector, in the model's order.
struct Params<'a> {
    ln1_w: &'a [f32],
    ln1_b: &'a [f32],
    /// `[3d, d]`: `W_q` then `W_kv`.
    in_w: &'a [f32],
    /// `[3d]`: `b_q` then `b_kv`.
    in_b: &'a [f32],
    out_w: &'a [f32],
    out_b: &'a [f32],
    ln2_w: &'a [f32],
    ln2_b: &'a [f32],
    c1_w: &'a [f32],
    c1_b: &'a [f32],
    c2_w: &'a [f32],
    c2_b: &'a [f32],
}

/// The sizes of the block's twelve tensors for hidden size `d`, in order.
pub(crate) fn param_sizes(d: usize) -> [usize; 12] {
    [d, d, 3 * d * d, 3 * d, d * d, d, d, d, d * d, d, d * d, d]
}

impl<'a> Params<'a> {
    fn new(flat: &'a [f32], d: usize) -> Params<'a> {
        let mut at = 0;
        let mut next = |n: usize| {
            let s = &flat[at..at + n];
            at += n;
            s
        };
        let [s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11] = param_sizes(d);
        Params {
            ln1_w: next(s0),
            ln1_b: next(s1),
            in_w: next(s2),
            in_b: next(s3),
            out_w: next(s4),
            out_b: next(s5),
            ln2_w: next(s6),
            ln2_b: next(s7),
            c1_w: next(s8),
            c1_b: next(s9),
            c2_w: next(s10),
            c2_b: next(s11),
        }
    }
}

/// `Wᵀ` `[din, dout]` of a weight `w` `[dout, din]` (a `y = x·Wᵀ` layer's right-hand matrix).
pub(super) fn transpose(w: &[f32], dout: usize, din: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for o in 0..dout {
        for i in 0..din {
            t[i * dout + o] = w[o * din + i];
        }
    }
    t
}

/// `y = x · b`: `x` `[rows, k]`, `b` `[k, n]`, `y` `[rows, n]` (every value written), in
/// parallel row chunks.
fn times(x: &[f32], k: usize, b: &[f32], n: usize, y: &mut [f32]) {
    y.par_chunks_mut(ROW_CHUNK * n)
        .zip(x.par_chunks(ROW_CHUNK * k))
        .for_each(|(y, x)| {
            tile::dispatch(MatMul {
                m: y.len() / n,
                depth: k,
                a: Lhs {
                    data: x,
                    stride: k,
                    transposed: false,
                },
                b,
                ldb: n,
                w: n,
                c: y,
                ldc: n,
                span: Span::Full,
            });
        });
}

/// `gᵀ · x` `[m, n]` for `g` `[rows, m]` and `x` `[rows, n]`: a weight's gradient, summed over
/// fixed row chunks in order.
fn weight_grad(g: &[f32], m: usize, x: &[f32], n: usize) -> Vec<f32> {
    let parts: Vec<Vec<f32>> = g
        .par_chunks(WEIGHT_ROWS * m)
        .zip(x.par_chunks(WEIGHT_ROWS * n))
        .map(|(g, x)| {
            let mut c = vec![0f32; m * n];
            tile::dispatch(MatMul {
                m,
                depth: g.len() / m,
                a: Lhs {
                    data: g,
                    stride: m,
                    transposed: true,
                },
                b: x,
                ldb: n,
                w: n,
                c: &mut c,
                ldc: n,
                span: Span::Full,
            });
            c
        })
        .collect();
    sum_partials(parts, m * n)
}

/// The column sums of `g` `[rows, n]` (a bias's gradient), over fixed row chunks in order.
fn column_sums(g: &[f32], n: usize) -> Vec<f32> {
    let parts: Vec<Vec<f32>> = g
        .par_chunks(ROW_CHUNK * n)
        .map(|g| {
            let mut s = vec![0f32; n];
            for row in g.chunks_exact(n) {
                s.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
            s
        })
        .collect();
    sum_partials(parts, n)
}

/// `f(row, y_row, x_row)` over matching rows of `y` `[rows, n]` and `x` `[rows, m]`, in parallel
/// row chunks.
fn rows2(
    y: &mut [f32],
    n: usize,
    x: &[f32],
    m: usize,
    f: impl Fn(usize, &mut [f32], &[f32]) + Sync,
) {
    y.par_chunks_mut(ROW_CHUNK * n)
        .zip(x.par_chunks(ROW_CHUNK * m))
        .enumerate()
        .for_each(|(c, (y, x))| {
            for (r, (y, x)) in y.chunks_exact_mut(n).zip(x.chunks_exact(m)).enumerate() {
                f(c * ROW_CHUNK + r, y, x);
            }
        });
}

/// One SASRec block (see the module doc): inputs `x` `[rows, d]` and the flat parameters;
/// output `[rows, d]`.
pub(crate) struct Block {
    pub(crate) attention: Attention,
    /// Dropout after the ReLU and on the second feed-forward layer's output.
    pub(crate) ffn_dropout: Dropout,
    pub(crate) out_dropout: Dropout,
    saved: Mutex<Option<Saved>>,
}

/// The intermediates the backward pass needs, in pooled buffers.
struct Saved {
    q_in: Vec<f32>,
    q: Vec<f32>,
    kv: Vec<f32>,
    o: Vec<f32>,
    x1: Vec<f32>,
    x2: Vec<f32>,
    h: Vec<f32>,
    attention: attention::Saved,
}

impl Saved {
    fn release(self) {
        for v in [self.q_in, self.q, self.kv, self.o, self.x1, self.x2, self.h] {
            pool::put(v);
        }
        self.attention.release();
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.get_mut().ok().and_then(Option::take) {
            saved.release();
        }
    }
}

impl Block {
    /// The block; its attention's `keep` says whether a backward pass will follow (then the
    /// intermediates are kept for it).
    pub(crate) fn new(attention: Attention, ffn_dropout: Dropout, out_dropout: Dropout) -> Self {
        Block {
            attention,
            ffn_dropout,
            out_dropout,
            saved: Mutex::new(None),
        }
    }

    fn forward(&self, x: &[f32], flat: &[f32], d: usize, out: &mut [f32]) -> Saved {
        let rows = x.len() / d;
        let p = Params::new(flat, d);
        let (bq, bkv) = p.in_b.split_at(d);
        let mut q_in = pool::take(rows * d);
        layer_norm_rows(x, p.ln1_w, p.ln1_b, LN_EPS, &mut q_in);
        let mut q = pool::take(rows * d);
        times(&q_in, d, &transpose(&p.in_w[..d * d], d, d), d, &mut q);
        add_bias(&mut q, bq);
        let mut kv = pool::take(rows * 2 * d);
        times(x, d, &transpose(&p.in_w[d * d..], 2 * d, d), 2 * d, &mut kv);
        add_bias(&mut kv, bkv);
        let mut o = pool::take(rows * d);
        let att = self.attention.forward(&q, &kv, bkv, d, &mut o);
        let mut x1 = pool::take(rows * d);
        times(&o, d, &transpose(p.out_w, d, d), d, &mut x1);
        rows2(&mut x1, d, &q_in, d, |_, x1, q_in| {
            for ((x, &b), &r) in x1.iter_mut().zip(p.out_b).zip(q_in) {
                *x = (*x + b) + r;
            }
        });
        let mut x2 = pool::take(rows * d);
        layer_norm_rows(&x1, p.ln2_w, p.ln2_b, LN_EPS, &mut x2);
        let mut h = pool::take(rows * d);
        times(&x2, d, &transpose(p.c1_w, d, d), d, &mut h);
        let drop1 = self.ffn_dropout;
        h.par_chunks_mut(ROW_CHUNK * d)
            .enumerate()
            .for_each(|(c, h)| {
                for (r, h) in h.chunks_exact_mut(d).enumerate() {
                    let row = c * ROW_CHUNK + r;
                    for (j, (v, &b)) in h.iter_mut().zip(p.c1_b).enumerate() {
                        *v = (*v + b).max(0.0) * drop1.factor(row * d + j);
                    }
                }
            });
        times(&h, d, &transpose(p.c2_w, d, d), d, out);
        let drop2 = self.out_dropout;
        rows2(out, d, &x2, d, |row, y, x2| {
            for (j, ((y, &b), &r)) in y.iter_mut().zip(p.c2_b).zip(x2).enumerate() {
                *y = (*y + b) * drop2.factor(row * d + j) + r;
            }
        });
        Saved {
            q_in,
            q,
            kv,
            o,
            x1,
            x2,
            h,
            attention: att,
        }
    }

    /// The backward pass: writes `x`'s gradient into `gx` (every value) and returns the flat
    /// parameters' gradient.
    #[allow(clippy::too_many_lines)]
    fn backward(
        &self,
        s: Saved,
        x: &[f32],
        flat: &[f32],
        d: usize,
        g: &[f32],
        gx: &mut [f32],
    ) -> Vec<f32> {
        let rows = x.len() / d;
        let p = Params::new(flat, d);
        let (_, bkv) = p.in_b.split_at(d);
        let mut gp: Vec<f32> = Vec::with_capacity(flat.len());
        // out = drop₂(h·W_2ᵀ + b_2) + x2
        let mut gy = pool::take(rows * d);
        let drop2 = self.out_dropout;
        rows2(&mut gy, d, g, d, |row, gy, g| {
            for (j, (gy, &g)) in gy.iter_mut().zip(g).enumerate() {
                *gy = g * drop2.factor(row * d + j);
            }
        });
        let g_c2_b = column_sums(&gy, d);
        let g_c2_w = weight_grad(&gy, d, &s.h, d);
        let mut gh = pool::take(rows * d);
        times(&gy, d, p.c2_w, d, &mut gh);
        // h = drop₁(ReLU(x2·W_1ᵀ + b_1)): a kept positive output passes `scale`, others 0.
        let keep = self.ffn_dropout.keep_scale();
        rows2(&mut gh, d, &s.h, d, |_, gh, h| {
            for (g, &h) in gh.iter_mut().zip(h) {
                *g = if h > 0.0 { *g * keep } else { 0.0 };
            }
        });
        let g_c1_b = column_sums(&gh, d);
        let g_c1_w = weight_grad(&gh, d, &s.x2, d);
        let mut gx2 = gy;
        times(&gh, d, p.c1_w, d, &mut gx2);
        rows2(&mut gx2, d, g, d, |_, gx2, g| {
            gx2.iter_mut().zip(g).for_each(|(x, g)| *x += g);
        });
        // x2 = LayerNorm₂(x1)
        let mut gx1 = gh;
        let (g_ln2_w, g_ln2_b) = layer_norm_rows_bwd(&s.x1, p.ln2_w, &gx2, LN_EPS, &mut gx1, false);
        // x1 = o·W_oᵀ + b_o + q_in
        let g_out_b = column_sums(&gx1, d);
        let g_out_w = weight_grad(&gx1, d, &s.o, d);
        let mut go = gx2;
        times(&gx1, d, p.out_w, d, &mut go);
        // o = Attention(q, kv)
        let mut dq = pool::take(rows * d);
        let mut dkv = pool::take(rows * 2 * d);
        let g_bkv_pad =
            self.attention
                .backward(s.attention, &s.q, &s.kv, bkv, &go, d, &mut dq, &mut dkv);
        let mut g_in_b = column_sums(&dq, d);
        g_in_b.extend(
            column_sums(&dkv, 2 * d)
                .iter()
                .zip(&g_bkv_pad)
                .map(|(a, b)| a + b),
        );
        let mut g_in_w = weight_grad(&dq, d, &s.q_in, d);
        g_in_w.extend(weight_grad(&dkv, 2 * d, x, d));
        // q = q_in·W_qᵀ + b_q (plus the residual's gradient); kv = x·W_kvᵀ + b_kv.
        let mut gq_in = go;
        times(&dq, d, &p.in_w[..d * d], d, &mut gq_in);
        rows2(&mut gq_in, d, &gx1, d, |_, gq, gr| {
            gq.iter_mut().zip(gr).for_each(|(x, g)| *x += g);
        });
        times(&dkv, 2 * d, &p.in_w[d * d..], d, gx);
        // q_in = LayerNorm₁(x)
        let (g_ln1_w, g_ln1_b) = layer_norm_rows_bwd(x, p.ln1_w, &gq_in, LN_EPS, gx, true);
        for v in [gq_in, gx1, dq, dkv, s.q_in, s.q, s.kv, s.o, s.x1, s.x2, s.h] {
            pool::put(v);
        }
        for part in [
            g_ln1_w, g_ln1_b, g_in_w, g_in_b, g_out_w, g_out_b, g_ln2_w, g_ln2_b, g_c1_w, g_c1_b,
            g_c2_w, g_c2_b,
        ] {
            gp.extend_from_slice(&part);
        }
        gp
    }
}

/// `x[r, j] += b[j]` for every row.
fn add_bias(x: &mut [f32], b: &[f32]) {
    let n = b.len();
    x.par_chunks_mut(ROW_CHUNK * n).for_each(|x| {
        for row in x.chunks_exact_mut(n) {
            row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
        }
    });
}

impl CustomOp2 for Block {
    fn name(&self) -> &'static str {
        "attune-sasrec-block"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_ref(s1, l1, self.name())?;
        let flat = f32_ref(s2, l2, self.name())?;
        let (rows, d) = l1.shape().dims2()?;
        if flat.len() != param_sizes(d).iter().sum::<usize>() {
            bail!("{}: parameters do not match", self.name())
        }
        self.attention.check(rows, d, (rows, 2 * d), 2 * d)?;
        let mut out = vec![0f32; rows * d];
        let saved = self.forward(x, flat, d, &mut out);
        if self.attention.keeps() {
            if let Ok(mut slot) = self.saved.lock()
                && let Some(old) = slot.replace(saved)
            {
                old.release();
            }
        } else {
            saved.release();
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        flat: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, d) = x.dims2()?;
        let saved = match self.saved.lock().ok().and_then(|mut s| s.take()) {
            Some(saved) => saved,
            None => {
                // Not kept (inference forward): run the forward pass again.
                let mut out = pool::take(rows * d);
                let saved = with_f32(x, |x| {
                    with_f32(flat, |flat| Ok(self.forward(x, flat, d, &mut out)))
                })?;
                pool::put(out);
                saved
            }
        };
        let mut gx = vec![0f32; rows * d];
        let gp = with_f32(x, |x| {
            with_f32(flat, |flat| {
                with_f32(grad, |g| Ok(self.backward(saved, x, flat, d, g, &mut gx)))
            })
        })?;
        Ok((
            Some(tensor(gx, (rows, d))?),
            Some(tensor(gp, flat.shape().clone())?),
        ))
    }
}
