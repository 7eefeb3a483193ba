//! [`Serving::top_accepted`]: the best accepted items by exact score, without scoring every item
//! exactly or sorting them all.
//!
//! Scoring every item in f32 reads the whole table (22 MB for DIGINETICA), which is bound by
//! memory bandwidth. An i8 copy of the table (a quarter of it) gives every item an approximate
//! score `ã` with a proven error bound `ε`: the exact score lies in `[ã − ε, ã + ε]`. Then:
//!
//! 1. `L` = the `k`-th largest lower bound `ã − ε` among accepted items (the items with the
//!    largest lower bounds are walked through `accept`, best first);
//! 2. every item whose upper bound `ã + ε` reaches `L` is scored exactly (f32, the same dot
//!    product as [`Serving::score_all_into`]), sorted, and walked through `accept` again.
//!
//! At least `k` accepted items score at least `L` (each at least its lower bound), so every one
//! of the `k` best accepted scores at least `L` and is in the shortlist: the answer is exactly
//! what scoring, sorting and filtering every item would give, scores bit for bit included.
//!
//! The bound: row `i` is stored as `q_i` (i8) with a scale `s_i`, the state `h` as `h_q` (i16)
//! with a scale `s_h`, and `D_i = q_i · h_q` is an exact integer (the ranges are chosen so it
//! cannot overflow). With `t_i` the f32 row, by Cauchy–Schwarz
//! `|t_i·h − s_i s_h D_i| ≤ ‖t_i − s_i q_i‖ ‖h‖ + ‖s_i q_i‖ ‖h − s_h h_q‖`; the f32 dot product
//! is within `γ_{d+8} ‖t_i‖ ‖h‖` of `t_i·h` (`γ_m = m·u / (1 − m·u)`, `u = 2⁻²⁴`,
//! `‖t_i‖ ≤ ‖s_i q_i‖ + ‖t_i − s_i q_i‖`), and the f32 arithmetic forming `ã` and its bounds
//! within `8u |ã|` (plus `1e-30` should `s_i s_h` underflow). `ε` adds these up, with 1% to
//! spare on the norm terms. The two row norms are computed (in f64) when the table is built.
//!
//! Speed: the integer products run eight rows at a time on AVX2 (`vpmaddwd`, sixteen values per
//! instruction; plain loops elsewhere, the same integers and bounds), each block's bounds formed
//! in vector lanes. The items with the largest lower bounds are found without a heap or a full
//! sort: a strided sample gives a value that a few more than needed exceed, those are gathered
//! and sorted. The passes over the bounds skip eight items at a time whose largest cannot
//! qualify.

use std::cmp::Ordering;

use pulp::{Simd, WithSimd};

use super::{Serving, dot_rows};
use crate::sasrec::tile;

/// Rows per block of the integer kernel (and items per skip test).
const BLOCK: usize = 8;

/// The i8 copy of a table, with each row's bound terms (one vector per term, so the pass that
/// forms the bounds vectorizes).
pub(super) struct Quantized {
    /// `[rows, d]`.
    q: Vec<i8>,
    /// Per row: its scale `s_i`, `‖t_i − s_i q_i‖` and `‖s_i q_i‖` (both rounded up).
    scale: Vec<f32>,
    residual: Vec<f32>,
    norm: Vec<f32>,
    /// The largest `|h_q|` entry: `d · 127 · limit` fits an `i32`.
    limit: f32,
}

/// `x` rounded up to an f32 (so a norm stored in f32 is never below the true one).
fn up(x: f64) -> f32 {
    #[allow(clippy::cast_possible_truncation)]
    let f = x as f32;
    if f64::from(f) < x { f.next_up() } else { f }
}

impl Quantized {
    /// The i8 copy of `table` `[rows, d]`; `None` if a value is not finite (then no bound holds).
    pub(super) fn new(table: &[f32], d: usize) -> Option<Quantized> {
        if d == 0 || table.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let rows = table.len() / d;
        let mut qz = Quantized {
            q: Vec::with_capacity(table.len()),
            scale: Vec::with_capacity(rows),
            residual: Vec::with_capacity(rows),
            norm: Vec::with_capacity(rows),
            #[allow(clippy::cast_precision_loss)]
            limit: (i32::MAX as usize / (127 * d)).min(32_767) as f32,
        };
        for row in table.chunks_exact(d) {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = max / 127.0;
            let (mut residual, mut norm) = (0f64, 0f64);
            for &v in row {
                #[allow(clippy::cast_possible_truncation)]
                let k = if scale > 0.0 {
                    (v / scale).round().clamp(-127.0, 127.0) as i8
                } else {
                    0
                };
                let back = f64::from(scale) * f64::from(k);
                residual += (f64::from(v) - back).powi(2);
                norm += back * back;
                qz.q.push(k);
            }
            qz.scale.push(scale);
            qz.residual.push(up(residual.sqrt()));
            qz.norm.push(up(norm.sqrt()));
        }
        Some(qz)
    }
}

/// Per-thread buffers of a selection.
#[derive(Default)]
pub(super) struct Scratch {
    hq: Vec<i16>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    /// The items scored exactly by the last selection.
    pub(super) short: Vec<u32>,
    scored: Vec<(u32, f32)>,
    sample: Vec<f32>,
    candidates: Vec<u32>,
}

/// Best first: the higher score, then the lower index (a total order).
fn better(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The first `k` items of `scored` (sorted here, best first) that `accept` takes.
fn first_accepted(
    scored: &mut [(u32, f32)],
    k: usize,
    accept: &mut dyn FnMut(u32) -> bool,
) -> Vec<(u32, f32)> {
    scored.sort_unstable_by(better);
    let mut out = Vec::with_capacity(k.min(scored.len()));
    for &(i, s) in scored.iter() {
        if out.len() == k {
            break;
        }
        if accept(i) {
            out.push((i, s));
        }
    }
    out
}

impl Serving {
    /// The `k` best items after `sequence` that `accept` takes, best first (higher score, then
    /// lower index), with their scores: exactly what scoring every item with
    /// [`Self::score_all_into`], sorting them and keeping the first `k` accepted gives (the
    /// padding index and non-finite scores are never returned), found without either: an i8
    /// copy of the table bounds every score, and only the items whose bounds reach the `k`-th
    /// best are scored exactly. `accept` may be asked about an item more than once and must
    /// answer the same each time.
    ///
    /// ```
    /// use attune_model::sasrec::{SasRec, SasRecConfig};
    ///
    /// let config = SasRecConfig { max_len: 5, hidden: 8, ..SasRecConfig::default() };
    /// let serving = SasRec::new(&config, 50).unwrap().serving().unwrap();
    /// let best = serving.top_accepted(&[4, 9], 3, &mut |i| i % 2 == 0);
    /// assert_eq!(best.len(), 3);
    /// let mut all = Vec::new();
    /// serving.score_all_into(&[4, 9], &mut all);
    /// assert!(best.iter().all(|&(i, s)| i % 2 == 0 && all[i as usize] == s));
    /// ```
    pub fn top_accepted(
        &self,
        sequence: &[u32],
        k: usize,
        accept: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        if k == 0 {
            return Vec::new();
        }
        super::with_state(self, sequence, |h| self.top_accepted_of_state(h, k, accept))
    }

    /// [`Self::top_accepted`] from a scored state (see [`Serving::state`]) already computed.
    pub(super) fn top_accepted_of_state(
        &self,
        h: &[f32],
        k: usize,
        accept: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        if k == 0 {
            return Vec::new();
        }
        super::with_select_scratch(|sc| match &self.quantized {
            Some(qz) if h.iter().all(|v| v.is_finite()) => self.select(qz, h, k, accept, sc),
            _ => self.select_exact(h, k, accept, sc),
        })
    }

    /// Every item scored exactly, sorted, filtered: the definition (used when the table or
    /// the state is not finite, so no bound holds).
    fn select_exact(
        &self,
        h: &[f32],
        k: usize,
        accept: &mut dyn FnMut(u32) -> bool,
        sc: &mut Scratch,
    ) -> Vec<(u32, f32)> {
        let mut all = std::mem::take(&mut sc.lo);
        all.clear();
        all.resize(self.num_items + 1, 0.0);
        tile::dispatch(super::Gemv {
            table: &self.table,
            h,
            out: &mut all,
        });
        sc.scored.clear();
        sc.scored.extend(
            (1u32..)
                .zip(&all[1..])
                .filter(|(_, s)| s.is_finite())
                .map(|(i, &s)| (i, s)),
        );
        sc.lo = all;
        sc.short.clear();
        first_accepted(&mut sc.scored, k, accept)
    }

    fn select(
        &self,
        qz: &Quantized,
        h: &[f32],
        k: usize,
        accept: &mut dyn FnMut(u32) -> bool,
        sc: &mut Scratch,
    ) -> Vec<(u32, f32)> {
        let n = self.num_items;
        let d = h.len();
        // The state in i16, and the bound's per-request terms.
        let max = h.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s_h = max / qz.limit;
        sc.hq.clear();
        let (mut err, mut norm) = (0f64, 0f64);
        for &v in h {
            #[allow(clippy::cast_possible_truncation)]
            let x = if s_h > 0.0 {
                (v / s_h).round().clamp(-qz.limit, qz.limit) as i16
            } else {
                0
            };
            err += (f64::from(v) - f64::from(s_h) * f64::from(x)).powi(2);
            norm += f64::from(v) * f64::from(v);
            sc.hq.push(x);
        }
        let u = f64::from(f32::EPSILON) / 2.0;
        #[allow(clippy::cast_precision_loss)]
        // The f32 dot product's rounding: `γ_m` for `m` = `d` plus a few (the lanes' reduction
        // and the tail's sum add steps, and `d` may be tiny).
        let m = (d + 8) as f64;
        let gamma = m * u / (1.0 - m * u);
        let norm = norm.sqrt();
        #[allow(clippy::cast_possible_truncation)]
        let terms = Terms {
            s_h,
            alpha: up(1.01 * norm * (1.0 + gamma)),
            beta: up(1.01 * (err.sqrt() + gamma * norm)),
            rel: (8.0 * u) as f32,
        };
        // Every value is written below.
        sc.lo.resize(n + 1, 0.0);
        sc.hi.resize(n + 1, 0.0);
        Bounds {
            qz,
            hq: &sc.hq,
            terms,
            lo: &mut sc.lo,
            hi: &mut sc.hi,
        }
        .run();
        // The padding index is never a candidate.
        sc.lo[0] = f32::NEG_INFINITY;
        sc.hi[0] = f32::NEG_INFINITY;
        let want = k.saturating_add(k / 2).saturating_add(16).min(n);
        let floor =
            kth_accepted_lower_bound(&sc.lo, want, k, accept, &mut sc.sample, &mut sc.candidates);
        sc.short.clear();
        tile::dispatch(AtLeast {
            v: &sc.hi,
            floor,
            out: &mut sc.short,
        });
        sc.scored.clear();
        tile::dispatch(Exact {
            serving: self,
            h,
            items: &sc.short,
            out: &mut sc.scored,
        });
        first_accepted(&mut sc.scored, k, accept)
    }
}

/// `L`: a value at most the `k`-th best exact score among accepted items — the `k`-th largest
/// lower bound among the accepted items walked, or `-∞` if fewer than `k` items are accepted.
/// The items walked (best lower bound first) are those whose lower bound reaches a value from
/// a sample that about `want` exceed; when rejections leave fewer than `k` of them, about four
/// times as many, and so on.
fn kth_accepted_lower_bound(
    lo: &[f32],
    want: usize,
    k: usize,
    accept: &mut dyn FnMut(u32) -> bool,
    sample: &mut Vec<f32>,
    candidates: &mut Vec<u32>,
) -> f32 {
    let mut rank = want;
    loop {
        let floor = sample_floor(lo, rank, sample);
        candidates.clear();
        tile::dispatch(AtLeast {
            v: lo,
            floor,
            out: candidates,
        });
        candidates
            .sort_unstable_by(|&a, &b| lo[b as usize].total_cmp(&lo[a as usize]).then(a.cmp(&b)));
        let mut accepted = 0;
        for &i in candidates.iter() {
            if accept(i) {
                accepted += 1;
                if accepted == k {
                    return lo[i as usize];
                }
            }
        }
        if floor == f32::NEG_INFINITY {
            return f32::NEG_INFINITY;
        }
        rank = rank.saturating_mul(4);
    }
}

/// Items per sampled lower bound.
const STRIDE: usize = 16;

/// A value that about `rank` (and very likely at least `rank`) of `lo[1..]` reach: the
/// `rank / STRIDE + 8`-th largest of every `STRIDE`-th; `-∞` when the sample is too small to
/// tell.
fn sample_floor(lo: &[f32], rank: usize, sample: &mut Vec<f32>) -> f32 {
    let r = rank / STRIDE + 8;
    sample.clear();
    sample.extend(lo.iter().skip(1).step_by(STRIDE).copied());
    if r >= sample.len() {
        return f32::NEG_INFINITY;
    }
    let (_, v, _) = sample.select_nth_unstable_by(r, |a, b| b.total_cmp(a));
    *v
}

/// The indices `1..` of the finite values of `v` at least `floor`, ascending, into `out`;
/// blocks whose largest value is below `floor` are skipped whole.
struct AtLeast<'a> {
    v: &'a [f32],
    floor: f32,
    out: &'a mut Vec<u32>,
}

impl WithSimd for AtLeast<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Some(v) = self.v.get(1..) else {
            return;
        };
        let floor = self.floor;
        let mut push = |at: usize, x: f32| {
            if x >= floor && x.is_finite() {
                self.out.push(u32::try_from(at + 1).unwrap_or(u32::MAX));
            }
        };
        let (blocks, tail) = v.as_chunks::<BLOCK>();
        for (b, block) in blocks.iter().enumerate() {
            // Branch-free, so it vectorizes: does any value of the block reach the floor?
            if block.iter().fold(false, |any, &x| any | (x >= floor)) {
                for (j, &x) in block.iter().enumerate() {
                    push(b * BLOCK + j, x);
                }
            }
        }
        for (j, &x) in tail.iter().enumerate() {
            push(blocks.len() * BLOCK + j, x);
        }
    }
}

/// Added to every `ε`: covers `ã` when `s_i · s_h` underflows (then `|D_i| s_i s_h < 1e-35`).
const TINY: f32 = 1e-30;

/// The per-request terms of every bound (see the module docs).
#[derive(Clone, Copy)]
struct Terms {
    s_h: f32,
    /// Multiplies `‖t_i − s_i q_i‖`: `‖h‖ (1 + γ_d)`, and 1% more.
    alpha: f32,
    /// Multiplies `‖s_i q_i‖`: `‖h − s_h h_q‖ + γ_d ‖h‖`, and 1% more.
    beta: f32,
    /// Multiplies `|ã|`: `8u`.
    rel: f32,
}

impl Terms {
    /// Row `i`'s bounds `(ã − ε, ã + ε)` from `D_i`, its scale and its two norms.
    #[inline(always)]
    fn bounds(self, dot: i32, scale: f32, residual: f32, norm: f32) -> (f32, f32) {
        #[allow(clippy::cast_precision_loss)]
        let a = dot as f32 * (scale * self.s_h);
        let eps = self.alpha * residual + self.beta * norm + self.rel * a.abs() + TINY;
        (a - eps, a + eps)
    }
}

/// Every row's bounds into `lo` and `hi`, from `D_i = q_i · h_q` (exact: the caller's ranges
/// keep every partial sum in an `i32`).
struct Bounds<'a> {
    qz: &'a Quantized,
    hq: &'a [i16],
    terms: Terms,
    lo: &'a mut [f32],
    hi: &'a mut [f32],
}

impl Bounds<'_> {
    /// With AVX2 where the CPU has it, plain loops otherwise (the same integers and bounds).
    fn run(self) {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            return simd.vectorize(BoundsAvx2 { simd, op: self });
        }
        tile::dispatch(self);
    }
}

/// One row's `D_i` in plain loops (sixteen lanes).
#[inline(always)]
fn idot(q: &[i8], h: &[i16]) -> i32 {
    let mut acc = [0i32; 16];
    let (cq, tq) = q.as_chunks::<16>();
    let (ch, th) = h.as_chunks::<16>();
    for (x, y) in cq.iter().zip(ch) {
        for k in 0..16 {
            acc[k] += i32::from(x[k]) * i32::from(y[k]);
        }
    }
    acc.iter().sum::<i32>() + idot_tail(tq, th)
}

#[inline(always)]
fn idot_tail(q: &[i8], h: &[i16]) -> i32 {
    q.iter()
        .zip(h)
        .map(|(&a, &b)| i32::from(a) * i32::from(b))
        .sum()
}

impl WithSimd for Bounds<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let qz = self.qz;
        let d = self.hq.len();
        let rows =
            qz.q.chunks_exact(d)
                .zip(&qz.scale)
                .zip(qz.residual.iter().zip(&qz.norm));
        let out = self.lo.iter_mut().zip(self.hi.iter_mut());
        for (((q, &scale), (&residual, &norm)), (lo, hi)) in rows.zip(out) {
            (*lo, *hi) = self.terms.bounds(idot(q, self.hq), scale, residual, norm);
        }
    }
}

/// [`Bounds`] on AVX2: eight rows at a time, each `h_q` vector loaded once for the eight, the
/// products summed in pairs by `vpmaddwd` (sixteen values per instruction), the eight row sums
/// gathered into one vector by horizontal adds and turned into bounds in vector lanes.
#[cfg(target_arch = "x86_64")]
struct BoundsAvx2<'a> {
    simd: pulp::x86::V3,
    op: Bounds<'a>,
}

#[cfg(target_arch = "x86_64")]
impl pulp::NullaryFnOnce for BoundsAvx2<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        use std::arch::x86_64::{__m128i, __m256i};
        let BoundsAvx2 { simd, op } = self;
        let a = simd.avx2;
        let (qz, terms) = (op.qz, op.terms);
        let d = op.hq.len();
        let (hc, ht) = op.hq.as_chunks::<16>();
        let mut blocks = qz.q.chunks_exact(BLOCK * d);
        let mut row = 0;
        for block in &mut blocks {
            let mut acc: [__m256i; BLOCK] = [pulp::cast([0i32; 8]); BLOCK];
            let rows: [&[i8]; BLOCK] = std::array::from_fn(|r| &block[r * d..(r + 1) * d]);
            for (c, &y) in hc.iter().enumerate() {
                let y = pulp::cast::<[i16; 16], __m256i>(y);
                for (acc, row) in acc.iter_mut().zip(&rows) {
                    let (x, _) = row[c * 16..]
                        .split_first_chunk::<16>()
                        .unwrap_or((&[0; 16], &[]));
                    let x = a._mm256_cvtepi8_epi16(pulp::cast::<[i8; 16], __m128i>(*x));
                    *acc = a._mm256_add_epi32(*acc, a._mm256_madd_epi16(x, y));
                }
            }
            // Pairs, then quads: [r0 r1 r2 r3 | r0 r1 r2 r3] halves, added across.
            let s01 = a._mm256_hadd_epi32(acc[0], acc[1]);
            let s23 = a._mm256_hadd_epi32(acc[2], acc[3]);
            let s45 = a._mm256_hadd_epi32(acc[4], acc[5]);
            let s67 = a._mm256_hadd_epi32(acc[6], acc[7]);
            let t0 = a._mm256_hadd_epi32(s01, s23);
            let t1 = a._mm256_hadd_epi32(s45, s67);
            let sums = a._mm256_add_epi32(
                a._mm256_permute2x128_si256::<0x20>(t0, t1),
                a._mm256_permute2x128_si256::<0x31>(t0, t1),
            );
            let mut sums: [i32; BLOCK] = pulp::cast(sums);
            if !ht.is_empty() {
                for (s, row) in sums.iter_mut().zip(&rows) {
                    *s += idot_tail(&row[hc.len() * 16..], ht);
                }
            }
            let at = row..row + BLOCK;
            let (lo, hi) = (&mut op.lo[at.clone()], &mut op.hi[at.clone()]);
            let (scale, residual, norm) = (
                &qz.scale[at.clone()],
                &qz.residual[at.clone()],
                &qz.norm[at],
            );
            for j in 0..BLOCK {
                (lo[j], hi[j]) = terms.bounds(sums[j], scale[j], residual[j], norm[j]);
            }
            row += BLOCK;
        }
        for (q, r) in blocks.remainder().chunks_exact(d).zip(row..) {
            (op.lo[r], op.hi[r]) =
                terms.bounds(idot(q, op.hq), qz.scale[r], qz.residual[r], qz.norm[r]);
        }
    }
}

/// The exact scores of `items`, appended to `out` (non-finite ones left out).
struct Exact<'a> {
    serving: &'a Serving,
    h: &'a [f32],
    items: &'a [u32],
    out: &'a mut Vec<(u32, f32)>,
}

impl WithSimd for Exact<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let d = self.h.len();
        let table = &self.serving.table;
        for &i in self.items {
            let at = i as usize * d;
            let s = dot_rows(simd, [&table[at..at + d]], self.h)[0];
            if s.is_finite() {
                self.out.push((i, s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The bounds of every kernel, for rows of quantized random values.
    fn bounds_by(how: u8, qz: &Quantized, hq: &[i16]) -> (Vec<f32>, Vec<f32>) {
        let rows = qz.scale.len();
        let (mut lo, mut hi) = (vec![0f32; rows], vec![0f32; rows]);
        let op = Bounds {
            qz,
            hq,
            terms: Terms {
                s_h: 1e-3,
                alpha: 0.5,
                beta: 0.25,
                rel: 1e-6,
            },
            lo: &mut lo,
            hi: &mut hi,
        };
        match how {
            0 => op.run(),
            1 => tile::dispatch(op),
            _ => Simd::vectorize(pulp::Scalar::new(), op),
        }
        (lo, hi)
    }

    #[test]
    fn every_kernel_gives_the_same_exact_integers_and_bounds() {
        let mut rng = StdRng::seed_from_u64(1);
        for d in [1, 15, 16, 17, 50, 128, 130, 4096] {
            // Row counts around whole blocks; the first row at the extremes of both ranges.
            for rows in [1, 7, 8, 9, 17] {
                let mut table: Vec<f32> =
                    (0..rows * d).map(|_| rng.random::<f32>() - 0.5).collect();
                table[..d].fill(-1.0);
                let qz = Quantized::new(&table, d).expect("finite");
                assert!(qz.q[..d].iter().all(|&x| x == -127));
                #[allow(clippy::cast_possible_truncation)]
                let limit = qz.limit as i16;
                let mut hq: Vec<i16> = (0..d).map(|_| rng.random_range(-limit..=limit)).collect();
                if rows == 9 {
                    hq.fill(-limit);
                }
                let terms = Terms {
                    s_h: 1e-3,
                    alpha: 0.5,
                    beta: 0.25,
                    rel: 1e-6,
                };
                let want: Vec<(f32, f32)> =
                    qz.q.chunks_exact(d)
                        .enumerate()
                        .map(|(r, q)| {
                            let dot: i64 = q
                                .iter()
                                .zip(&hq)
                                .map(|(&a, &b)| i64::from(a) * i64::from(b))
                                .sum();
                            let dot = i32::try_from(dot).expect("fits");
                            terms.bounds(dot, qz.scale[r], qz.residual[r], qz.norm[r])
                        })
                        .collect();
                let want: (Vec<f32>, Vec<f32>) = want.into_iter().unzip();
                for how in 0..3 {
                    assert_eq!(
                        bounds_by(how, &qz, &hq),
                        want,
                        "d {d}, rows {rows}, kernel {how}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_items_reaching_a_floor_and_the_sampled_floor() {
        let v = [
            f32::NEG_INFINITY,
            3.0,
            1.0,
            3.0,
            7.0,
            -2.0,
            0.5,
            7.0,
            2.0,
            -1.0,
            4.0,
        ];
        let run = |floor: f32| {
            let mut out = Vec::new();
            tile::dispatch(AtLeast {
                v: &v,
                floor,
                out: &mut out,
            });
            out
        };
        assert_eq!(run(3.0), vec![1, 3, 4, 7, 10]);
        assert_eq!(run(f32::NEG_INFINITY), (1..11).collect::<Vec<u32>>());
        assert!(run(8.0).is_empty());
        // A sample too small to tell gives -∞; a large one about the `rank`-th largest.
        let mut sample = Vec::new();
        assert_eq!(sample_floor(&v, 1, &mut sample), f32::NEG_INFINITY);
        #[allow(clippy::cast_precision_loss)]
        let big: Vec<f32> = (0..100_001).map(|i| i as f32).collect();
        let floor = sample_floor(&big, 3_200, &mut sample);
        let above = big.iter().filter(|&&x| x >= floor).count();
        assert!((3_200..=3_500).contains(&above), "{above}");
    }
}
