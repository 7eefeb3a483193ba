//! Small dense kernels for the attention op, in safe Rust with runtime SIMD dispatch (`pulp`,
//! already built for candle's `gemm`): a register-tiled matrix multiply that skips the causal
//! triangle's zero half, and a vectorizable `exp`.
//!
//! Everything here is `#[inline(always)]` and runs inside [`dispatch`]: `pulp` compiles the
//! dispatched body once per instruction set (AVX2 + FMA on x86-64 where the CPU has them,
//! scalar otherwise) and picks one at run time, so plain loops inlined into it are vectorized
//! for that set too. A function that is not inlined into the dispatched body is compiled for
//! the baseline only.

use pulp::{Simd, WithSimd};

/// Rows of a register tile.
const MR: usize = 6;
/// SIMD vectors per row of a register tile (6 × 2 accumulators plus the two right-hand
/// vectors and a broadcast fit AVX2's sixteen registers).
const NV: usize = 2;

/// Rounds `n` up to whole SIMD vectors of any width the kernels use (8 floats, which every
/// dispatched instruction set's vector width divides).
pub(super) fn round_up(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Runs `op` with the best instruction set this CPU has.
pub(super) fn dispatch<Op: WithSimd>(op: Op) -> Op::Output {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        return Simd::vectorize(simd, op);
    }
    pulp::Arch::new().dispatch(op)
}

/// A left-hand matrix `a(r, k)` read from a slice: `data[r · stride + k]` (row-major) or, when
/// `transposed`, `data[k · stride + r]`.
#[derive(Clone, Copy)]
pub(super) struct Lhs<'a> {
    pub(super) data: &'a [f32],
    pub(super) stride: usize,
    pub(super) transposed: bool,
}

/// Which part of a product [`matmul`] computes, for causal (triangular) operands. `r0..r1` are
/// the rows of a register tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Span {
    /// Every column and every `k`.
    Full,
    /// Only the columns the causal rows read, `x < r1` (rounded up to whole vectors): the
    /// other columns of the output are left as they were or hold partial sums.
    LowerCols,
    /// Sum over `k < r1` only: the caller guarantees `a(r, k) = 0` for `k > r`.
    KUpToRow,
    /// Sum over `k ≥ r0` only: the caller guarantees `a(r, k) = 0` for `k < r`.
    KFromRow,
}

/// `c[r · ldc + x] = Σ_k a(r, k) · b[k · ldb + x]` for rows `r < m`, columns `x < w` and
/// `k < depth`, restricted as `span` says (with [`Span::LowerCols`], `w` is a multiple of 8).
/// `c` is overwritten, never read. `b` needs `(depth - 1) · ldb + w` values; loads past `w`
/// within it feed only columns that are not stored.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul<S: Simd>(
    simd: S,
    m: usize,
    depth: usize,
    a: Lhs<'_>,
    b: &[f32],
    ldb: usize,
    w: usize,
    c: &mut [f32],
    ldc: usize,
    span: Span,
) {
    let lanes = S::F32_LANES;
    debug_assert!(8 % lanes == 0 && (span != Span::LowerCols || w.is_multiple_of(8)));
    let mut r0 = 0;
    while r0 < m {
        let mr = (m - r0).min(MR);
        let r1 = r0 + mr;
        let (k0, k1) = match span {
            Span::Full | Span::LowerCols => (0, depth),
            Span::KUpToRow => (0, depth.min(r1)),
            Span::KFromRow => (r0.min(depth), depth),
        };
        let cols = match span {
            Span::LowerCols => w.min(round_up(r1)),
            _ => w,
        };
        let mut c0 = 0;
        while c0 < cols {
            let nv = (cols - c0).div_ceil(lanes).min(NV);
            let t = Tile {
                r0,
                c0,
                valid: (cols - c0).min(nv * lanes),
                k0,
                k1,
                ldb,
                ldc,
            };
            macro_rules! go {
                ($($mr:literal),*) => {
                    match (mr, nv) {
                        $(($mr, 2) => t.run::<S, $mr, 2>(simd, a, b, c),
                          ($mr, _) => t.run::<S, $mr, 1>(simd, a, b, c),)*
                        _ => unreachable!("tile rows are 1..=MR"),
                    }
                };
            }
            go!(6, 5, 4, 3, 2, 1);
            c0 += nv * lanes;
        }
        r0 = r1;
    }
}

/// [`matmul`]'s arguments, to run it through [`dispatch`].
pub(super) struct MatMul<'a> {
    pub(super) m: usize,
    pub(super) depth: usize,
    pub(super) a: Lhs<'a>,
    pub(super) b: &'a [f32],
    pub(super) ldb: usize,
    pub(super) w: usize,
    pub(super) c: &'a mut [f32],
    pub(super) ldc: usize,
    pub(super) span: Span,
}

impl WithSimd for MatMul<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        matmul(
            simd, self.m, self.depth, self.a, self.b, self.ldb, self.w, self.c, self.ldc, self.span,
        );
    }
}

/// One register tile of [`matmul`]: rows `r0..r0 + R`, columns `c0..c0 + V` vectors (the first
/// `valid` of them stored), summed over `k0..k1`.
#[derive(Clone, Copy)]
struct Tile {
    r0: usize,
    c0: usize,
    valid: usize,
    k0: usize,
    k1: usize,
    ldb: usize,
    ldc: usize,
}

/// Widest register tile row, in floats (`NV` vectors of at most 8).
const TILE_WIDTH: usize = NV * 8;

impl Tile {
    #[inline(always)]
    fn run<S: Simd, const R: usize, const V: usize>(
        self,
        simd: S,
        a: Lhs<'_>,
        b: &[f32],
        c: &mut [f32],
    ) {
        let lanes = S::F32_LANES;
        let width = V * lanes;
        let zero = simd.splat_f32s(0.0);
        let mut acc = [[zero; V]; R];
        let mut padded = [0f32; TILE_WIDTH];
        for k in self.k0..self.k1 {
            let row = &b[k * self.ldb + self.c0..];
            let row = if row.len() >= width {
                &row[..width]
            } else {
                // The matrix ends inside this tile's columns (last row of an unpadded `b`).
                padded[..row.len()].copy_from_slice(row);
                &padded[..width]
            };
            let (bk, _) = S::as_simd_f32s(row);
            let mut bv = [zero; V];
            bv.copy_from_slice(&bk[..V]);
            if a.transposed {
                let ak = &a.data[k * a.stride + self.r0..][..R];
                for (acc, &x) in acc.iter_mut().zip(ak) {
                    let x = simd.splat_f32s(x);
                    for (acc, &bv) in acc.iter_mut().zip(&bv) {
                        *acc = simd.mul_add_f32s(x, bv, *acc);
                    }
                }
            } else {
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = simd.splat_f32s(a.data[(self.r0 + r) * a.stride + k]);
                    for (acc, &bv) in acc.iter_mut().zip(&bv) {
                        *acc = simd.mul_add_f32s(x, bv, *acc);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let at = (self.r0 + r) * self.ldc + self.c0;
            if self.valid == width {
                let (row, _) = S::as_mut_simd_f32s(&mut c[at..at + width]);
                row[..V].copy_from_slice(acc);
            } else {
                let (tmp, _) = S::as_mut_simd_f32s(&mut padded[..width]);
                tmp[..V].copy_from_slice(acc);
                c[at..at + self.valid].copy_from_slice(&padded[..self.valid]);
            }
        }
    }
}

/// `e^x` for `x ≤ 0` (larger `x` is not needed here and not range-checked), within about two
/// ulp of the exact value, flushed to `e^-87` below that (a weight of 1e-38 instead of 0);
/// branch-free plain arithmetic, so loops over it vectorize. Cody–Waite range reduction to
/// `|f| ≤ ln 2 / 2` and the Cephes `expf` polynomial.
#[inline(always)]
pub(super) fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n · LN2_HI` is exact for the `n` here.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer kept in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let r = x * LOG2E + ROUND;
    let n = r - ROUND;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * f + 1.398_199_9e-3;
    p = p * f + 8.333_452e-3;
    p = p * f + 4.166_579_6e-2;
    p = p * f + 1.666_666_5e-1;
    p = p * f + 0.5;
    let e = (p * f) * f + f + 1.0;
    // 2^n from n's bits in `r` (n ≥ -126 here, so the exponent stays normal).
    let bits = r.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23;
    e * f32::from_bits(bits)
}

/// The sum of `v`'s values with eight independent partial sums (vectorizable, and always the
/// same order for the same length).
#[inline(always)]
pub(super) fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// The largest of `v`'s values (`-∞` for none), vectorizable.
#[inline(always)]
pub(super) fn max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for k in 0..8 {
            acc[k] = acc[k].max(c[k]);
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

/// `Σ a[i] · b[i]` over the shorter length, vectorizable (eight partial sums).
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|i| {
                #[allow(clippy::cast_precision_loss)]
                let u =
                    (super::super::ops::mix(seed ^ i as u64) >> 40) as f32 / (1u64 << 24) as f32;
                u * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matmul_matches_the_definition_on_every_span_and_instruction_set() {
        for &(m, depth, w) in &[
            (0usize, 0usize, 8usize),
            (1, 1, 8),
            (7, 5, 16),
            (13, 50, 56),
            (6, 13, 24),
            (20, 20, 24),
            (9, 30, 50),
            (3, 7, 3),
            (50, 70, 17),
        ] {
            for transposed in [false, true] {
                for span in [Span::Full, Span::LowerCols, Span::KUpToRow, Span::KFromRow] {
                    if span == Span::LowerCols && !w.is_multiple_of(8) {
                        continue;
                    }
                    let stride = if transposed { m + 3 } else { depth + 2 };
                    let rows = if transposed { depth } else { m };
                    let a_data = values(rows * stride, 1);
                    let mut a_vals = a_data.clone();
                    // Zero what the span says is zero.
                    for r in 0..m {
                        for k in 0..depth {
                            let i = if transposed {
                                k * stride + r
                            } else {
                                r * stride + k
                            };
                            if (span == Span::KUpToRow && k > r)
                                || (span == Span::KFromRow && k < r)
                            {
                                a_vals[i] = 0.0;
                            }
                        }
                    }
                    let a = |r: usize, k: usize| {
                        a_vals[if transposed {
                            k * stride + r
                        } else {
                            r * stride + k
                        }]
                    };
                    // Unpadded `b` and `c` for widths that are not whole vectors: the last row
                    // of `b` ends inside a tile, and stores must stop at `w`.
                    let pad = if w.is_multiple_of(8) { 8 } else { 0 };
                    let ldb = w + pad;
                    let b = values(depth * ldb, 2);
                    let ldc = w + pad;
                    for scalar in [false, true] {
                        let mut c = vec![f32::NAN; m * ldc];
                        let op = MatMul {
                            m,
                            depth,
                            a: Lhs {
                                data: &a_vals,
                                stride,
                                transposed,
                            },
                            b: &b,
                            ldb,
                            w,
                            c: &mut c,
                            ldc,
                            span,
                        };
                        if scalar {
                            Simd::vectorize(pulp::Scalar::new(), op);
                        } else {
                            dispatch(op);
                        }
                        for r in 0..m {
                            let cols = if span == Span::LowerCols {
                                (r + 1).min(w)
                            } else {
                                w
                            };
                            for x in 0..cols {
                                let want: f32 = (0..depth).map(|k| a(r, k) * b[k * ldb + x]).sum();
                                let got = c[r * ldc + x];
                                assert!(
                                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                    "{m}×{depth}×{w} {span:?} t={transposed} scalar={scalar} \
                                     [{r}, {x}]: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn exp_neg_is_within_two_ulp() {
        let mut worst = 0f64;
        for i in 0..200_000 {
            #[allow(clippy::cast_precision_loss)]
            let x = -(i as f32) * 4.3e-4;
            let want = f64::from(x).exp();
            let got = f64::from(exp_neg(x));
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert!(exp_neg(-200.0) < 1e-37 && exp_neg(-200.0) >= 0.0);
    }
}
