//! Fused CPU epilogues for the encoder's dense layers, applied in place on a matmul's fresh output:
//! `+ bias`, `+ bias` then exact GELU, `+ bias + residual`. Each saves candle a broadcast pass and
//! an allocation; the GELU also replaces candle's scalar `erff` (about a sixth of the encoder's time)
//! with a rational approximation the compiler vectorizes. Also the crate's one way to reach a CPU
//! tensor's f32 values from a custom op (`f32_ref`, `f32_mut`), which SASRec's ops use too.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, bail};

/// `x += bias` (row-wise), then GELU if `gelu`. `x` is `[rows, n]` contiguous f32, `bias` `[n]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddBias {
    /// Apply the exact (erf) GELU after the bias.
    pub(crate) gelu: bool,
}

impl InplaceOp2 for AddBias {
    fn name(&self) -> &'static str {
        if self.gelu {
            "attune-bias-gelu"
        } else {
            "attune-bias"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let x = f32_mut(s1, l1, self.name())?;
        let bias = f32_ref(s2, l2, self.name())?;
        check_rows(x.len(), bias.len(), self.name())?;
        for row in x.chunks_exact_mut(bias.len()) {
            if self.gelu {
                row.iter_mut()
                    .zip(bias)
                    .for_each(|(v, b)| *v = gelu(*v + b));
            } else {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
        }
        Ok(())
    }
}

/// `x += bias + residual`. `x` and `residual` are `[rows, n]` contiguous f32, `bias` `[n]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddBiasResidual;

impl InplaceOp3 for AddBiasResidual {
    fn name(&self) -> &'static str {
        "attune-bias-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let x = f32_mut(s1, l1, self.name())?;
        let bias = f32_ref(s2, l2, self.name())?;
        let residual = f32_ref(s3, l3, self.name())?;
        check_rows(x.len(), bias.len(), self.name())?;
        if residual.len() != x.len() {
            bail!(
                "{}: residual has {} values, x {}",
                self.name(),
                residual.len(),
                x.len()
            )
        }
        for (row, res) in x
            .chunks_exact_mut(bias.len())
            .zip(residual.chunks_exact(bias.len()))
        {
            for ((v, b), r) in row.iter_mut().zip(bias).zip(res) {
                *v += b + r;
            }
        }
        Ok(())
    }
}

/// The values of a contiguous f32 CPU tensor, to write in place (`op` names the caller in the
/// error).
pub(crate) fn f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&mut v[start..end]),
        _ => bail!("{op}: needs a contiguous f32 tensor"),
    }
}

/// The values of a contiguous f32 CPU tensor (`op` names the caller in the error).
pub(crate) fn f32_ref<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => bail!("{op}: needs a contiguous f32 tensor"),
    }
}

fn check_rows(len: usize, n: usize, op: &str) -> Result<()> {
    if n == 0 || !len.is_multiple_of(n) {
        bail!("{op}: {len} values are not rows of {n}")
    }
    Ok(())
}

/// GELU as BERT defines it: `x · (1 + erf(x / √2)) / 2`.
#[inline]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `erf` for f32 as a rational function of `x` (the approximation Eigen and XLA use for f32;
/// within 5e-7 of the true value everywhere). No branches and no `mul_add` (a libm call without
/// the `fma` target feature), so loops over it vectorize.
#[inline]
pub(crate) fn erf(x: f32) -> f32 {
    // Beyond ±4, erf is ±1 in f32.
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Maclaurin series (|x| ≤ 3) or continued fraction for erfc, in f64.
    fn erf_f64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc(x) = exp(-x²)/(x√π) · 1/(1 + 1/(2x²) / (1 + 2/(2x²) / (1 + …)))
            let a = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = f64::from(k) / 2.0 / (a * a) / (1.0 + f);
            }
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) / (1.0 + f);
            return (1.0 - erfc).copysign(x);
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            let n = f64::from(n);
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_accurate() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = f64::from(i) / 10_000.0;
            #[allow(clippy::cast_possible_truncation)]
            let got = f64::from(erf(x as f32));
            worst = worst.max((got - erf_f64(x)).abs());
        }
        assert!(worst < 1e-6, "max error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert!((erf(f32::INFINITY) - 1.0).abs() < 2e-7);
        assert!((erf(f32::NEG_INFINITY) + 1.0).abs() < 2e-7);
    }

    #[test]
    fn gelu_matches_its_definition() {
        for (x, want) in [
            (0.0, 0.0),
            (1.0, 0.841_344_7),
            (-1.0, -0.158_655_26),
            (3.0, 2.995_950_2),
            (-8.0, 0.0),
        ] {
            assert!(
                (gelu(x) - want).abs() < 1e-6,
                "gelu({x}) = {} not {want}",
                gelu(x)
            );
        }
        assert!((gelu(10.0) - 10.0).abs() < 1e-5);
    }
}
