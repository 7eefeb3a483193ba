//! Adam (Kingma & Ba), as `torch.optim.Adam` computes it, updating the weights in place.

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor, Var, bail};
use rayon::prelude::*;

use crate::kernels::{f32_mut, f32_ref};

/// Elements per parallel chunk of the update (fixed: the result does not depend on threads).
const CHUNK: usize = 1 << 14;

/// Adam's moments for every parameter and the step count.
#[derive(Debug, Clone)]
pub(crate) struct Adam {
    pub(crate) lr: f64,
    pub(crate) beta1: f64,
    pub(crate) beta2: f64,
    pub(crate) eps: f64,
    /// L2 penalty added to the gradient of the first parameter (the item embeddings).
    pub(crate) l2_first: f64,
    /// Steps taken.
    pub(crate) t: u64,
    pub(crate) m: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
}

struct Update<'a> {
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
    beta1: f32,
    beta2: f32,
    /// `lr / (1 - β₁ᵗ)`.
    step: f32,
    /// `1 / sqrt(1 - β₂ᵗ)`.
    inv_bc2: f32,
    eps: f32,
    l2: f32,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "attune-adam"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let p = f32_mut(s1, l1, "adam: parameter")?;
        let g = f32_ref(s2, l2, "adam: gradient")?;
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        let (m, v): (&mut [f32], &mut [f32]) = (&mut m, &mut v);
        if g.len() != p.len() || m.len() != p.len() || v.len() != p.len() {
            bail!("adam: sizes differ")
        }
        let (b1, b2, l2) = (self.beta1, self.beta2, self.l2);
        let (step, inv_bc2, eps) = (self.step, self.inv_bc2, self.eps);
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for i in 0..p.len() {
                    let gi = g[i] + l2 * p[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    p[i] -= step * m[i] / (v[i].sqrt() * inv_bc2 + eps);
                }
            });
        Ok(())
    }
}

/// Adam's update of a `[rows, d]` parameter whose gradient is non-zero only on some rows: the
/// gradient comes as a compact `[k, d]` table and `slot[r]` says which of its rows is row `r`'s
/// ([`NO_SLOT`]: a zero gradient). Every row is updated (the moments of untouched rows decay and
/// still move the weights), exactly as the dense update with the zero rows written out would.
struct SparseUpdate<'a> {
    dense: Update<'a>,
    slot: &'a [u32],
    d: usize,
}

/// [`SparseUpdate`]'s marker of a row without gradient.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// Rows per parallel chunk of the sparse update.
const ROW_CHUNK: usize = 256;

impl InplaceOp2 for SparseUpdate<'_> {
    fn name(&self) -> &'static str {
        "attune-adam-sparse"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let p = f32_mut(s1, l1, "adam: parameter")?;
        let g = f32_ref(s2, l2, "adam: gradient")?;
        let d = self.d;
        let u = &self.dense;
        let mut m = u.m.borrow_mut();
        let mut v = u.v.borrow_mut();
        let (m, v): (&mut [f32], &mut [f32]) = (&mut m, &mut v);
        if d == 0
            || m.len() != p.len()
            || v.len() != p.len()
            || self.slot.len() * d != p.len()
            || !g.len().is_multiple_of(d)
            || self
                .slot
                .iter()
                .any(|&s| s != NO_SLOT && (s as usize + 1) * d > g.len())
        {
            bail!("adam: sizes differ")
        }
        let (b1, b2, l2) = (u.beta1, u.beta2, u.l2);
        let (step, inv_bc2, eps) = (u.step, u.inv_bc2, u.eps);
        p.par_chunks_mut(ROW_CHUNK * d)
            .zip(m.par_chunks_mut(ROW_CHUNK * d))
            .zip(v.par_chunks_mut(ROW_CHUNK * d))
            .zip(self.slot.par_chunks(ROW_CHUNK))
            .for_each(|(((p, m), v), slots)| {
                for (((p, m), v), &s) in p
                    .chunks_exact_mut(d)
                    .zip(m.chunks_exact_mut(d))
                    .zip(v.chunks_exact_mut(d))
                    .zip(slots)
                {
                    if s == NO_SLOT {
                        for i in 0..d {
                            let gi = l2 * p[i];
                            m[i] = b1 * m[i] + (1.0 - b1) * gi;
                            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                            p[i] -= step * m[i] / (v[i].sqrt() * inv_bc2 + eps);
                        }
                    } else {
                        let g = &g[s as usize * d..(s as usize + 1) * d];
                        for i in 0..d {
                            let gi = g[i] + l2 * p[i];
                            m[i] = b1 * m[i] + (1.0 - b1) * gi;
                            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                            p[i] -= step * m[i] / (v[i].sqrt() * inv_bc2 + eps);
                        }
                    }
                }
            });
        Ok(())
    }
}

impl Adam {
    pub(crate) fn new(vars: &[Var], lr: f64, beta1: f64, beta2: f64, l2_first: f64) -> Adam {
        Adam {
            lr,
            beta1,
            beta2,
            eps: 1e-8,
            l2_first,
            t: 0,
            m: vars.iter().map(|v| vec![0.0; v.elem_count()]).collect(),
            v: vars.iter().map(|v| vec![0.0; v.elem_count()]).collect(),
        }
    }

    /// One step over every variable that has a gradient.
    #[cfg(test)]
    pub(crate) fn step(&mut self, vars: &[Var], grads: &GradStore) -> candle_core::Result<()> {
        self.step_with_sparse_first(vars, grads, None)
    }

    /// One step; with `sparse_first = (grad, slot)` the first variable's gradient is given as a
    /// compact `[k, d]` tensor, `slot[r]` naming row `r`'s row in it ([`NO_SLOT`]: zero). The
    /// result is the dense step's, without a dense gradient.
    #[allow(clippy::cast_possible_truncation)]
    pub(crate) fn step_with_sparse_first(
        &mut self,
        vars: &[Var],
        grads: &GradStore,
        sparse_first: Option<(&Tensor, &[u32])>,
    ) -> candle_core::Result<()> {
        self.t += 1;
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for (i, var) in vars.iter().enumerate() {
            let sparse = if i == 0 { sparse_first } else { None };
            let Some(grad) = sparse.map_or_else(|| grads.get(var.as_tensor()), |(g, _)| Some(g))
            else {
                continue;
            };
            let grad = grad.contiguous()?;
            let update = Update {
                m: RefCell::new(&mut self.m[i]),
                v: RefCell::new(&mut self.v[i]),
                beta1: self.beta1 as f32,
                beta2: self.beta2 as f32,
                step: (self.lr / bc1) as f32,
                inv_bc2: (1.0 / bc2.sqrt()) as f32,
                eps: self.eps as f32,
                l2: if i == 0 { self.l2_first as f32 } else { 0.0 },
            };
            match sparse {
                Some((_, slot)) => {
                    let d = var.dims().last().copied().unwrap_or(0);
                    let update = SparseUpdate {
                        dense: update,
                        slot,
                        d,
                    };
                    var.as_tensor().inplace_op2(&grad, &update)?;
                }
                None => var.as_tensor().inplace_op2(&grad, &update)?,
            }
        }
        Ok(())
    }
}
