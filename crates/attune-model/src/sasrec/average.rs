//! Weight averaging: exponential moving averages of the weights (Polyak averaging), updated
//! after every step beside training, validated like the weights themselves and kept at their
//! own best. They never feed back into training: with or without them a run computes the same
//! steps, so a run can return an average only when it validates better than every epoch's
//! weights.

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor, bail};
use rayon::prelude::*;

use super::model::{SasRec, backend};
use crate::Result;
use crate::kernels::{f32_mut, f32_ref};

/// Elements per parallel chunk of the update (fixed: the result does not depend on threads).
const CHUNK: usize = 1 << 14;

/// One moving average of a model's weights.
pub(crate) struct Ema {
    /// The decay per step (see [`step_decay`]).
    pub(crate) decay: f64,
    /// The averaged weights, as a model to validate and save.
    pub(crate) model: SasRec,
    /// The averaged weights at their best validation so far.
    pub(crate) best: Option<Vec<Tensor>>,
}

impl Ema {
    /// An average starting at `model`'s current weights.
    pub(crate) fn new(decay: f64, model: &SasRec) -> Result<Ema> {
        let shadow = SasRec::new(&model.config, model.num_items)?;
        for (s, w) in shadow.vars.iter().zip(&model.vars) {
            s.set(w.as_tensor()).map_err(backend)?;
        }
        Ok(Ema {
            decay,
            model: shadow,
            best: None,
        })
    }

    /// Moves the average towards `model`'s weights after Adam's step number `step` (from 1).
    pub(crate) fn update(&self, model: &SasRec, step: u64) -> candle_core::Result<()> {
        #[allow(clippy::cast_possible_truncation)]
        let blend = Blend {
            keep: step_decay(self.decay, step) as f32,
        };
        for (s, w) in self.model.vars.iter().zip(&model.vars) {
            s.as_tensor().inplace_op2(w.as_tensor(), &blend)?;
        }
        Ok(())
    }

    /// A label for reports and file names, e.g. `ema0.9999`.
    pub(crate) fn label(decay: f64) -> String {
        format!("ema{decay}")
    }
}

/// The decay used at Adam's step `step`: `decay`, warmed up as `(1 + step) / (10 + step)` while
/// that is smaller, so the first steps do not leave the random initialization in the average
/// for thousands of steps.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn step_decay(decay: f64, step: u64) -> f64 {
    decay.min((1 + step) as f64 / (10 + step) as f64)
}

/// `a ← keep · a + (1 − keep) · b`, in place.
struct Blend {
    keep: f32,
}

impl InplaceOp2 for Blend {
    fn name(&self) -> &'static str {
        "attune-ema"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let a = f32_mut(s1, l1, "ema: average")?;
        let b = f32_ref(s2, l2, "ema: weights")?;
        if a.len() != b.len() {
            bail!("ema: sizes differ")
        }
        let (keep, take) = (self.keep, 1.0 - self.keep);
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .for_each(|(a, b)| {
                for (x, &y) in a.iter_mut().zip(b) {
                    *x = keep * *x + take * y;
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasrec::SasRecConfig;

    fn tiny() -> SasRec {
        let config = SasRecConfig {
            hidden: 8,
            max_len: 4,
            ..SasRecConfig::default()
        };
        SasRec::new(&config, 5).unwrap()
    }

    fn values(m: &SasRec) -> Vec<Vec<f32>> {
        m.vars
            .iter()
            .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    }

    #[test]
    fn the_decay_warms_up_to_its_value() {
        assert!((step_decay(0.999, 1) - 2.0 / 11.0).abs() < 1e-12);
        assert!((step_decay(0.999, 100) - 101.0 / 110.0).abs() < 1e-12);
        assert!((step_decay(0.999, 1_000_000) - 0.999).abs() < 1e-12);
    }

    #[test]
    fn an_update_blends_every_weight_by_the_steps_decay() {
        let a = tiny();
        let ema = Ema::new(0.5, &a).unwrap();
        assert_eq!(values(&ema.model), values(&a));
        // Other weights: a second model from another seed.
        let b = SasRec::new(
            &SasRecConfig {
                seed: 7,
                ..a.config.clone()
            },
            5,
        )
        .unwrap();
        let (before, target) = (values(&ema.model), values(&b));
        assert_ne!(before, target);
        ema.update(&b, 1_000).unwrap();
        for ((avg, x), y) in values(&ema.model).iter().zip(&before).zip(&target) {
            for ((&avg, &x), &y) in avg.iter().zip(x).zip(y) {
                assert!((avg - (0.5 * x + 0.5 * y)).abs() < 1e-6, "{avg} {x} {y}");
            }
        }
        // The source is untouched, and the average does not share its storage.
        assert_eq!(values(&b), target);
    }
}
