//! SASRec's causal attention over packed sequences, softmax and attention dropout fused, with
//! its own backward pass. Per sequence and head the `n² · dh` work runs as register-tiled
//! matrix multiplies ([`super::tile`]) restricted to the causal triangle:
//!
//! - forward: `S = Q·Kᵀ`, a row-wise softmax with the padding-key term, `A = P ∘ dropout`,
//!   `O = A·V` (+ the padding keys' value-bias term);
//! - backward: `D = dO·Vᵀ`, `dS = scale · (A ∘ D − P ∘ rowsum)`, `dQ = dS·K`, `dK = dSᵀ·Q`,
//!   `dV = Aᵀ·dO`, and the bias gradients row by row.
//!
//! The forward pass keeps the weights for the backward (a lower triangle per sequence and head,
//! the dropout mask in the signs) when it is told a backward will follow and they fit
//! [`KEEP_LIMIT`]; otherwise the backward recomputes them with the same code, so both paths
//! give the same bits.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::ops::{Dropout, Packing, split_by, sum_partials, tensor, with_f32};
use super::pool;
use super::tile::{self, Lhs, Span, round_up};
use crate::kernels::f32_ref;

#[cfg(test)]
mod reference;

/// Positions a sequence can have (`max_len` is validated against it).
pub(crate) const MAX_POSITIONS: usize = 4096;

/// Values kept per row and head by the forward pass: one padding key's weight and the sum of
/// the padding keys' dropout factors.
const STATS: usize = 2;

/// The most attention weights (floats) one forward pass keeps for its backward pass (128 MiB);
/// past it the backward pass recomputes them.
const KEEP_LIMIT: usize = 1 << 25;

/// `n(n + 1) / 2`: the size of an `n × n` lower triangle, which keeps row `i` at `i(i + 1) / 2`.
fn triangle(n: usize) -> usize {
    n * (n + 1) / 2
}

/// Causal multi-head attention over packed sequences, softmax and attention dropout fused:
/// inputs `q` `[rows, d]`, `kv` `[rows, 2d]` (keys then values, biases included) and the
/// key/value bias `[2d]`; output `[rows, d]`.
///
/// Exact for the reference's left-padded layout without computing it: a padding position's
/// block input is zero (timeline mask), so its key is the key bias and its value the value
/// bias. The `p` padding keys before a sequence are one logit `q·b_k` counted `p` times in the
/// softmax (each with its own dropout draw), and padding queries are never computed: the
/// reference masks their outputs to zero.
///
/// Dropout: real key `j` of query `i`, head `h`, of the sequence whose weights start at `base`
/// (`heads · n²` per sequence before it) is element `2 (base + (h n + i) n + j)` of the mask;
/// padding key `k` of packed row `row` is element `2 ((row · heads + h) · MAX_POSITIONS + k) + 1`.
/// Neither depends on how sequences are split between threads.
pub(crate) struct Attention {
    pub(crate) packing: Arc<Packing>,
    pub(crate) heads: usize,
    pub(crate) scale: f32,
    pub(crate) dropout: Dropout,
    /// Whether a backward pass is expected (training): then the forward pass keeps the weights.
    keep: bool,
    saved: Mutex<Option<Saved>>,
}

/// What the forward pass leaves for the backward pass.
pub(super) struct Saved {
    /// Per row and head, [`STATS`] values.
    stats: Vec<f32>,
    /// Per sequence and head (in that order), the lower triangle of the attention weights
    /// `p_ij`, negated where dropout drops them (`-0.0` for a dropped zero): both the weights and
    /// the mask. `None`: not kept, the backward pass recomputes them.
    weights: Option<Vec<f32>>,
}

impl Saved {
    /// Hands the buffers back to the pool.
    pub(super) fn release(self) {
        pool::put(self.stats);
        if let Some(w) = self.weights {
            pool::put(w);
        }
    }
}

impl Drop for Attention {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.get_mut().ok().and_then(Option::take) {
            saved.release();
        }
    }
}

impl Attention {
    /// The op; `keep`: a backward pass will follow, so keep the weights for it (if they fit).
    pub(crate) fn new(
        packing: Arc<Packing>,
        heads: usize,
        scale: f32,
        dropout: Dropout,
        keep: bool,
    ) -> Self {
        Attention {
            packing,
            heads,
            scale,
            dropout,
            keep,
            saved: Mutex::new(None),
        }
    }

    /// Whether a backward pass is expected.
    pub(super) fn keeps(&self) -> bool {
        self.keep
    }

    /// The values of all sequences' kept weights.
    fn weights_len(&self) -> usize {
        self.packing
            .offsets
            .windows(2)
            .map(|w| self.heads * triangle(w[1] - w[0]))
            .sum()
    }

    /// The sequence lengths.
    fn lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.packing.offsets.windows(2).map(|w| w[1] - w[0])
    }
}

/// Per-thread scratch matrices, reused from sequence to sequence and step to step (grown as
/// needed, never shrunk below [`SCRATCH_KEEP`]). Only what a function writes first is read.
#[derive(Default)]
struct Scratch {
    /// `dh × np`: `Kᵀ` (weights) or `Vᵀ` (backward), `np` = `n` rounded up to whole vectors.
    bt: Vec<f32>,
    /// `n × np`: logits, then the dropped weights `A` (forward); `D`, then `dS` (backward).
    m1: Vec<f32>,
    /// `n × np`: `A` (backward).
    m2: Vec<f32>,
    /// `n × ep` operands and results, `ep` = `dh` rounded up to whole vectors.
    p: [Vec<f32>; 3],
    o: [Vec<f32>; 3],
    /// Recomputed weights (a triangle) when the forward pass did not keep them, and their stats.
    tri: Vec<f32>,
    stats: Vec<f32>,
    /// Per-row values: dropout factors (forward), the padding logit's gradients (backward).
    row: Vec<f32>,
}

/// Scratch buffers larger than this (floats) are released after each sequence.
const SCRATCH_KEEP: usize = 1 << 20;

impl Scratch {
    fn trim(&mut self) {
        let Scratch {
            bt,
            m1,
            m2,
            p,
            o,
            tri,
            stats,
            row,
        } = self;
        for v in [bt, m1, m2, tri, stats, row].into_iter().chain(p).chain(o) {
            if v.capacity() > SCRATCH_KEEP {
                *v = Vec::new();
            }
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The first `len` values of `v`, grown (with zeros) if it is shorter.
fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// One sequence's inputs and where its values live.
#[derive(Clone, Copy)]
struct Seq<'a> {
    att: &'a Attention,
    q: &'a [f32],
    kv: &'a [f32],
    bkv: &'a [f32],
    d: usize,
    dh: usize,
    /// Its first packed row, length and padding positions.
    r0: usize,
    n: usize,
    pads: usize,
    /// Its first element in the real keys' dropout index space (halved).
    base: usize,
}

impl Seq<'_> {
    /// Row `i`'s query, key or value of head `h`.
    #[inline(always)]
    fn q_row(&self, i: usize, h: usize) -> &[f32] {
        &self.q[(self.r0 + i) * self.d + h * self.dh..][..self.dh]
    }

    #[inline(always)]
    fn k_row(&self, j: usize, h: usize) -> &[f32] {
        &self.kv[(self.r0 + j) * 2 * self.d + h * self.dh..][..self.dh]
    }

    #[inline(always)]
    fn v_row(&self, j: usize, h: usize) -> &[f32] {
        &self.kv[(self.r0 + j) * 2 * self.d + self.d + h * self.dh..][..self.dh]
    }

    /// Head `h`'s key and value biases.
    #[inline(always)]
    fn biases(&self, h: usize) -> (&[f32], &[f32]) {
        let dh = self.dh;
        (
            &self.bkv[h * dh..(h + 1) * dh],
            &self.bkv[self.d + h * dh..self.d + (h + 1) * dh],
        )
    }

    /// Head `h`'s queries (or any `[rows, d]` tensor's) as a row-major left-hand matrix.
    #[inline(always)]
    fn lhs<'a>(&self, x: &'a [f32], h: usize) -> Lhs<'a> {
        Lhs {
            data: &x[self.r0 * self.d + h * self.dh..],
            stride: self.d,
            transposed: false,
        }
    }
}

/// Copies `n` rows of `dh` values (`row(j)`) into `out` `[n, ep]` (zero-padded), or transposed
/// into `out` `[dh, np]` (columns past `n` left as they are: never read into a result).
#[inline(always)]
fn gather<'a>(
    out: &mut [f32],
    n: usize,
    dh: usize,
    transpose: bool,
    row: impl Fn(usize) -> &'a [f32],
) {
    if transpose {
        let np = round_up(n);
        for j in 0..n {
            for (k, &x) in row(j).iter().enumerate() {
                out[k * np + j] = x;
            }
        }
    } else {
        let ep = round_up(dh);
        for j in 0..n {
            let o = &mut out[j * ep..(j + 1) * ep];
            o[..dh].copy_from_slice(row(j));
            o[dh..].fill(0.0);
        }
    }
}

/// Head `h`'s attention weights for the sequence: writes `tri` (the lower triangle: `p_ij`, or
/// `-p_ij` where dropout drops it), `stats` (row `i` at `i · stats_stride`: one padding key's
/// weight, the padding keys' summed dropout factors) and leaves in `sc.m1` (`n × np`) the
/// dropped and scaled weights `A`, zero above the diagonal.
#[inline(always)]
fn weights<S: Simd>(
    simd: S,
    seq: &Seq<'_>,
    h: usize,
    sc: &mut Scratch,
    tri: &mut [f32],
    stats: &mut [f32],
    stats_stride: usize,
) {
    let Seq { n, dh, pads, .. } = *seq;
    let att = seq.att;
    let np = round_up(n);
    let bt = grow(&mut sc.bt, dh * np);
    gather(bt, n, dh, true, |j| seq.k_row(j, h));
    let m1 = grow(&mut sc.m1, n * np);
    tile::matmul(
        simd,
        n,
        dh,
        seq.lhs(seq.q, h),
        bt,
        np,
        np,
        m1,
        np,
        Span::LowerCols,
    );
    let factors = grow(&mut sc.row, n);
    let (bk, _) = seq.biases(h);
    #[allow(clippy::cast_precision_loss)]
    let pads_f = pads as f32;
    for i in 0..n {
        let row = &mut m1[i * np..(i + 1) * np];
        let (keys, rest) = row.split_at_mut(i + 1);
        let a = att.scale * tile::dot(seq.q_row(i, h), bk);
        for x in keys.iter_mut() {
            *x *= att.scale;
        }
        let mut max = tile::max(keys);
        if pads > 0 {
            max = max.max(a);
        }
        for x in keys.iter_mut() {
            *x = tile::exp_neg(*x - max);
        }
        let ea = if pads > 0 {
            tile::exp_neg(a - max)
        } else {
            0.0
        };
        let inv = 1.0 / (tile::sum(keys) + pads_f * ea);
        let f = &mut factors[..=i];
        att.dropout.even_factors(seq.base + (h * n + i) * n, f);
        let t = &mut tri[triangle(i)..triangle(i + 1)];
        for ((x, t), &f) in keys.iter_mut().zip(t).zip(&*f) {
            let p = *x * inv;
            *x = p * f;
            *t = if f == 0.0 { -p } else { p };
        }
        rest[..n - i - 1].fill(0.0);
        let w = att
            .dropout
            .odd_factor_sum(((seq.r0 + i) * att.heads + h) * MAX_POSITIONS, pads);
        stats[i * stats_stride..][..STATS].copy_from_slice(&[ea * inv, w]);
    }
}

/// The forward pass of one sequence: its output rows `out` `[n, d]`, its kept weights (`tri`,
/// all heads) if any, its rows' stats `[n, heads, STATS]`.
struct Forward<'a> {
    seq: Seq<'a>,
    sc: &'a mut Scratch,
    out: &'a mut [f32],
    tri: Option<&'a mut [f32]>,
    stats: &'a mut [f32],
}

impl WithSimd for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Forward {
            seq,
            sc,
            out,
            mut tri,
            stats,
        } = self;
        let Seq { n, dh, d, .. } = seq;
        let heads = seq.att.heads;
        if n == 0 {
            return;
        }
        let (np, ep) = (round_up(n), round_up(dh));
        let mut own = std::mem::take(&mut sc.tri);
        for h in 0..heads {
            let t = match tri.as_deref_mut() {
                Some(t) => &mut t[h * triangle(n)..(h + 1) * triangle(n)],
                None => grow(&mut own, triangle(n)),
            };
            weights(simd, &seq, h, sc, t, &mut stats[h * STATS..], heads * STATS);
            let Scratch { m1, p, o, .. } = &mut *sc;
            let vp = grow(&mut p[0], n * ep);
            gather(vp, n, dh, false, |j| seq.v_row(j, h));
            let o = grow(&mut o[0], n * ep);
            let a = Lhs {
                data: &m1[..n * np],
                stride: np,
                transposed: false,
            };
            tile::matmul(simd, n, n, a, vp, ep, ep, o, ep, Span::KUpToRow);
            let (_, bv) = seq.biases(h);
            for i in 0..n {
                let st = &stats[(i * heads + h) * STATS..][..STATS];
                let c = st[1] * st[0];
                let out = &mut out[i * d + h * dh..][..dh];
                for ((out, &o), &b) in out.iter_mut().zip(&o[i * ep..]).zip(bv) {
                    *out = c * b + o;
                }
            }
        }
        sc.tri = own;
    }
}

/// The backward pass of one sequence: `dq` `[n, d]` and `dkv` `[n, 2d]` (its rows), from the
/// output gradient `g` (all rows), its kept weights (all heads) or none, and its rows' stats.
/// Returns the sequence's part of the bias gradient `[2d]`.
struct Backward<'a> {
    seq: Seq<'a>,
    sc: &'a mut Scratch,
    g: &'a [f32],
    tri: Option<&'a [f32]>,
    stats: &'a [f32],
    dq: &'a mut [f32],
    dkv: &'a mut [f32],
}

impl WithSimd for Backward<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    #[allow(clippy::too_many_lines)]
    fn with_simd<S: Simd>(self, simd: S) -> Vec<f32> {
        let Backward {
            seq,
            sc,
            g,
            tri,
            stats,
            dq,
            dkv,
        } = self;
        let Seq { n, dh, d, pads, .. } = seq;
        let att = seq.att;
        let heads = att.heads;
        let (np, ep) = (round_up(n), round_up(dh));
        let keep_scale = att.dropout.keep_scale();
        #[allow(clippy::cast_precision_loss)]
        let pads_f = pads as f32;
        let mut dbkv = vec![0f32; 2 * d];
        if n == 0 {
            return dbkv;
        }
        let mut own = std::mem::take(&mut sc.tri);
        let mut own_stats = std::mem::take(&mut sc.stats);
        for h in 0..heads {
            let t: &[f32] = match tri {
                Some(t) => &t[h * triangle(n)..(h + 1) * triangle(n)],
                None => {
                    let t = grow(&mut own, triangle(n));
                    let st = grow(&mut own_stats, n * STATS);
                    weights(simd, &seq, h, sc, t, st, STATS);
                    t
                }
            };
            let (bk, bv) = seq.biases(h);
            let Scratch {
                bt,
                m1,
                m2,
                p,
                o,
                row,
                ..
            } = &mut *sc;
            let vt = grow(bt, dh * np);
            gather(vt, n, dh, true, |j| seq.v_row(j, h));
            let m1 = grow(m1, n * np);
            tile::matmul(
                simd,
                n,
                dh,
                seq.lhs(g, h),
                vt,
                np,
                np,
                m1,
                np,
                Span::LowerCols,
            );
            let m2 = grow(m2, n * np);
            let da = grow(row, n);
            for i in 0..n {
                let st = &stats[(i * heads + h) * STATS..][..STATS];
                let (ppad, w) = (st[0], st[1]);
                let go = &g[(seq.r0 + i) * d + h * dh..][..dh];
                let dpad = tile::dot(go, bv);
                let x = &t[triangle(i)..triangle(i + 1)];
                let (dr, dr_rest) = m1[i * np..(i + 1) * np].split_at_mut(i + 1);
                let (ar, ar_rest) = m2[i * np..(i + 1) * np].split_at_mut(i + 1);
                for (a, &x) in ar.iter_mut().zip(x) {
                    *a = x.max(0.0) * keep_scale;
                }
                let sum = w * dpad * ppad + tile::dot(ar, dr);
                for ((dv, &a), &x) in dr.iter_mut().zip(&*ar).zip(x) {
                    *dv = att.scale * (a * *dv - x.abs() * sum);
                }
                dr_rest[..n - i - 1].fill(0.0);
                ar_rest[..n - i - 1].fill(0.0);
                let dai = att.scale * ppad * (w * dpad - pads_f * sum);
                da[i] = dai;
                let cv = w * ppad;
                let (dbk, dbv) = dbkv.split_at_mut(d);
                for (x, &q) in dbk[h * dh..(h + 1) * dh].iter_mut().zip(seq.q_row(i, h)) {
                    *x += dai * q;
                }
                for (x, &g) in dbv[h * dh..(h + 1) * dh].iter_mut().zip(go) {
                    *x += cv * g;
                }
            }
            let [kp, qp, gp] = p;
            let kp = grow(kp, n * ep);
            gather(kp, n, dh, false, |j| seq.k_row(j, h));
            let qp = grow(qp, n * ep);
            gather(qp, n, dh, false, |j| seq.q_row(j, h));
            let gp = grow(gp, n * ep);
            gather(gp, n, dh, false, |j| &g[(seq.r0 + j) * d + h * dh..][..dh]);
            let [oq, ok, ov] = o;
            let (oq, ok, ov) = (grow(oq, n * ep), grow(ok, n * ep), grow(ov, n * ep));
            let (m1, m2) = (&*m1, &*m2);
            let rows = |data, transposed| Lhs {
                data,
                stride: np,
                transposed,
            };
            tile::matmul(
                simd,
                n,
                n,
                rows(m1, false),
                kp,
                ep,
                ep,
                oq,
                ep,
                Span::KUpToRow,
            );
            tile::matmul(
                simd,
                n,
                n,
                rows(m1, true),
                qp,
                ep,
                ep,
                ok,
                ep,
                Span::KFromRow,
            );
            tile::matmul(
                simd,
                n,
                n,
                rows(m2, true),
                gp,
                ep,
                ep,
                ov,
                ep,
                Span::KFromRow,
            );
            for i in 0..n {
                let dqi = &mut dq[i * d + h * dh..][..dh];
                for ((x, &o), &b) in dqi.iter_mut().zip(&oq[i * ep..]).zip(bk) {
                    *x = o + da[i] * b;
                }
                let dki = &mut dkv[i * 2 * d + h * dh..][..dh];
                dki.copy_from_slice(&ok[i * ep..][..dh]);
                let dvi = &mut dkv[i * 2 * d + d + h * dh..][..dh];
                dvi.copy_from_slice(&ov[i * ep..][..dh]);
            }
        }
        sc.tri = own;
        sc.stats = own_stats;
        dbkv
    }
}

impl Attention {
    /// The forward pass on slices: `q` `[rows, d]`, `kv` `[rows, 2d]`, `bkv` `[2d]`; writes
    /// every value of `out` `[rows, d]` and returns what [`Attention::backward`] needs.
    pub(super) fn forward(
        &self,
        q: &[f32],
        kv: &[f32],
        bkv: &[f32],
        d: usize,
        out: &mut [f32],
    ) -> Saved {
        let pk = &self.packing;
        let rows = q.len() / d.max(1);
        let heads = self.heads;
        let prob_off = pk.prob_offsets(heads);
        let mut stats = pool::take(rows * heads * STATS);
        let kept = self.weights_len();
        let mut weights = (self.keep && kept <= KEEP_LIMIT).then(|| pool::take(kept));
        let outs = split_by(out, self.lens().map(|n| n * d));
        let sts = split_by(&mut stats, self.lens().map(|n| n * heads * STATS));
        let tris: Vec<Option<&mut [f32]>> = match weights.as_mut() {
            Some(w) => split_by(w, self.lens().map(|n| heads * triangle(n)))
                .into_iter()
                .map(Some)
                .collect(),
            None => self.lens().map(|_| None).collect(),
        };
        outs.into_par_iter()
            .zip(sts)
            .zip(tris)
            .enumerate()
            .for_each(|(s, ((out, stats), tri))| {
                let seq = Seq {
                    att: self,
                    q,
                    kv,
                    bkv,
                    d,
                    dh: d / heads,
                    r0: pk.offsets[s],
                    n: pk.offsets[s + 1] - pk.offsets[s],
                    pads: pk.pads[s],
                    base: prob_off[s],
                };
                SCRATCH.with_borrow_mut(|sc| {
                    tile::dispatch(Forward {
                        seq,
                        sc,
                        out,
                        tri,
                        stats,
                    });
                    sc.trim();
                });
            });
        Saved { stats, weights }
    }

    /// The backward pass on slices, from the output gradient `g` `[rows, d]`: writes every value
    /// of `dq` `[rows, d]` and `dkv` `[rows, 2d]` and returns the bias gradient `[2d]` (summed
    /// over sequences in order). Hands `saved`'s buffers back to the pool.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        saved: Saved,
        q: &[f32],
        kv: &[f32],
        bkv: &[f32],
        g: &[f32],
        d: usize,
        dq: &mut [f32],
        dkv: &mut [f32],
    ) -> Vec<f32> {
        let heads = self.heads;
        let pk = &self.packing;
        let prob_off = pk.prob_offsets(heads);
        let dqs = split_by(dq, self.lens().map(|n| n * d));
        let dkvs = split_by(dkv, self.lens().map(|n| n * 2 * d));
        let mut tri_at = 0;
        let tris: Vec<Option<&[f32]>> = self
            .lens()
            .map(|n| {
                let len = heads * triangle(n);
                tri_at += len;
                saved.weights.as_ref().map(|w| &w[tri_at - len..tri_at])
            })
            .collect();
        let partials: Vec<Vec<f32>> = dqs
            .into_par_iter()
            .zip(dkvs)
            .zip(tris)
            .enumerate()
            .map(|(s, ((dq, dkv), tri))| {
                let (r0, n) = (pk.offsets[s], pk.offsets[s + 1] - pk.offsets[s]);
                let seq = Seq {
                    att: self,
                    q,
                    kv,
                    bkv,
                    d,
                    dh: d / heads,
                    r0,
                    n,
                    pads: pk.pads[s],
                    base: prob_off[s],
                };
                let stats = &saved.stats[r0 * heads * STATS..][..n * heads * STATS];
                SCRATCH.with_borrow_mut(|sc| {
                    let part = tile::dispatch(Backward {
                        seq,
                        sc,
                        g,
                        tri,
                        stats,
                        dq,
                        dkv,
                    });
                    sc.trim();
                    part
                })
            })
            .collect();
        saved.release();
        sum_partials(partials, 2 * d)
    }

    /// Checks the inputs' shapes against the packing.
    pub(super) fn check(
        &self,
        rows: usize,
        d: usize,
        kv: (usize, usize),
        bkv: usize,
    ) -> Result<()> {
        let pk = &self.packing;
        if kv != (rows, 2 * d)
            || bkv != 2 * d
            || pk.offsets.last() != Some(&rows)
            || pk.pads.len() + 1 != pk.offsets.len()
            || !d.is_multiple_of(self.heads)
            || self.lens().any(|n| n > MAX_POSITIONS)
        {
            bail!("attune-sasrec-attention: shapes do not match")
        }
        Ok(())
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attune-sasrec-attention"
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
        let q = f32_ref(s1, l1, self.name())?;
        let kv = f32_ref(s2, l2, self.name())?;
        let bkv = f32_ref(s3, l3, self.name())?;
        let (rows, d) = l1.shape().dims2()?;
        self.check(rows, d, l2.shape().dims2()?, bkv.len())?;
        if q.len() != rows * d || kv.len() != rows * 2 * d {
            bail!("{}: shapes do not match", self.name())
        }
        let mut out = vec![0f32; rows * d];
        let saved = self.forward(q, kv, bkv, d, &mut out);
        if let Ok(mut slot) = self.saved.lock()
            && let Some(old) = slot.replace(saved)
        {
            old.release();
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        kv: &Tensor,
        bkv: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, d) = q.dims2()?;
        let Some(saved) = self.saved.lock().ok().and_then(|mut s| s.take()) else {
            bail!("{}: backward without forward", self.name())
        };
        let mut dq = vec![0f32; rows * d];
        let mut dkv = vec![0f32; rows * 2 * d];
        let dbkv = with_f32(q, |q| {
            with_f32(kv, |kv| {
                with_f32(bkv, |bkv| {
                    with_f32(grad, |g| {
                        Ok(self.backward(saved, q, kv, bkv, g, d, &mut dq, &mut dkv))
                    })
                })
            })
        })?;
        Ok((
            Some(tensor(dq, (rows, d))?),
            Some(tensor(dkv, (rows, 2 * d))?),
            Some(tensor(dbkv, 2 * d)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::reference::Reference;
    use super::*;
    use crate::sasrec::ops::mix;

    fn random(n: usize, seed: u64, amp: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                #[allow(clippy::cast_precision_loss)]
                let u = (mix(seed ^ mix(i as u64)) >> 40) as f32 / (1u64 << 24) as f32;
                (u * 2.0 - 1.0) * amp
            })
            .collect()
    }

    fn packing(lens: &[usize], max_len: usize) -> Arc<Packing> {
        let mut offsets = vec![0];
        for &n in lens {
            offsets.push(offsets.last().copied().unwrap_or(0) + n);
        }
        Arc::new(Packing {
            offsets,
            pads: lens.iter().map(|&n| max_len - n).collect(),
        })
    }

    /// The op's output and the gradients of `Σ out ∘ r` for `q`, `kv` and the biases.
    type Run = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

    fn run(op: impl CustomOp3 + Send + Sync + 'static, rows: usize, d: usize, seed: u64) -> Run {
        let dev = &Device::Cpu;
        // Logits of a few units, as in a trained model, so the softmax is not flat.
        let q = Var::from_vec(random(rows * d, seed, 2.0), (rows, d), dev).expect("q");
        let kv =
            Var::from_vec(random(rows * 2 * d, seed + 1, 2.0), (rows, 2 * d), dev).expect("kv");
        let b = Var::from_vec(random(2 * d, seed + 2, 1.0), 2 * d, dev).expect("b");
        let r = Tensor::from_vec(random(rows * d, seed + 3, 1.0), (rows, d), dev).expect("r");
        let out = q
            .as_tensor()
            .apply_op3(kv.as_tensor(), b.as_tensor(), op)
            .expect("forward");
        let grads = (&out * &r)
            .and_then(|x| x.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        let v = |t: &Tensor| with_f32(t, |v| Ok(v.to_vec())).expect("values");
        let g = |x: &Var| v(grads.get(x.as_tensor()).expect("gradient"));
        (v(&out), g(&q), g(&kv), g(&b))
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 2e-5 * scale,
                "{what}[{i}]: {a} vs {b} (scale {scale})"
            );
        }
    }

    /// Sequence lengths covering 1, an empty sequence, lengths around the register tile (6)
    /// and the vector width (8), and one long enough for several tiles each way.
    const LENS: [usize; 9] = [1, 0, 2, 5, 6, 7, 9, 16, 41];

    #[test]
    fn matches_the_scalar_reference_forward_and_backward() {
        let max_len = 48;
        let pk = packing(&LENS, max_len);
        let rows = LENS.iter().sum();
        for &(d, heads) in &[(12, 1), (10, 2), (16, 2)] {
            for p in [0.0, 0.3] {
                for keep in [true, false] {
                    let dropout = Dropout::new(p, 77);
                    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
                    let scale = (1.0 / ((d / heads) as f64).sqrt()) as f32;
                    let new = run(
                        Attention::new(pk.clone(), heads, scale, dropout, keep),
                        rows,
                        d,
                        5,
                    );
                    let old = run(
                        Reference::new(pk.clone(), heads, scale, dropout),
                        rows,
                        d,
                        5,
                    );
                    let what = format!("d {d} heads {heads} dropout {p} keep {keep}");
                    assert_close(&format!("{what}: output"), &new.0, &old.0);
                    assert_close(&format!("{what}: dq"), &new.1, &old.1);
                    assert_close(&format!("{what}: dkv"), &new.2, &old.2);
                    assert_close(&format!("{what}: dbkv"), &new.3, &old.3);
                }
            }
        }
    }

    #[test]
    fn kept_and_recomputed_weights_and_thread_counts_give_the_same_bits() {
        let pk = packing(&LENS, 48);
        let rows = LENS.iter().sum();
        let (d, heads) = (10, 2);
        let dropout = Dropout::new(0.4, 3);
        let go = |keep: bool, threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            let pk = pk.clone();
            pool.install(|| run(Attention::new(pk, heads, 0.3, dropout, keep), rows, d, 9))
        };
        let base = go(true, 1);
        for (keep, threads) in [(false, 1), (true, 3), (false, 2)] {
            assert!(base == go(keep, threads), "keep {keep} threads {threads}");
        }
    }

    #[test]
    fn the_dropout_masks_follow_the_documented_indices() {
        let d = Dropout::new(0.5, 11);
        let mut f = vec![0f32; 13];
        for start in [0, 1, 6, 7] {
            d.even_factors(start, &mut f);
            for (j, &f) in f.iter().enumerate() {
                assert_eq!(f, d.factor(2 * (start + j)), "start {start}, {j}");
            }
            for count in [0, 1, 2, 5] {
                let want: f32 = (0..count).map(|k| d.factor(2 * (start + k) + 1)).sum();
                assert_eq!(d.odd_factor_sum(start, count), want);
            }
        }
        // Both halves are real masks: about half of each dropped.
        d.even_factors(0, &mut f);
        let mut big = vec![0f32; 4000];
        d.even_factors(5, &mut big);
        let kept = big.iter().filter(|&&f| f > 0.0).count();
        assert!((1800..2200).contains(&kept), "{kept}");
        #[allow(clippy::cast_precision_loss)]
        let odd = d.odd_factor_sum(5, 4000) / d.keep_scale();
        assert!((1800.0..2200.0).contains(&odd), "{odd}");
    }

    #[test]
    fn a_reused_weight_buffer_gives_the_same_results() {
        // A backward pass hands the kept weights back to the pool; the next forward pass reuses
        // the buffer, stale values and all.
        let pk = packing(&[30, 30], 30);
        let op = || Attention::new(pk.clone(), 1, 0.3, Dropout::new(0.2, 1), true);
        let a = run(op(), 60, 8, 1);
        let b = run(op(), 60, 8, 1);
        assert!(a == b, "a reused buffer's stale values leaked");
    }
}
