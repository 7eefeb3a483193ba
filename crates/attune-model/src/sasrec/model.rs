//! The SASRec network, layer for layer as the reference PyTorch implementation
//! (pmixer/SASRec.pytorch) builds it, with its parameters named as in its `state_dict`.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::attention::Attention;
use super::block::{Block, LN_EPS};
use super::config::SasRecConfig;
use super::ops::{self, Dropout, Embed, LayerNorm, Packing};
use crate::error::BackendError;
use crate::{Error, Result};

/// Tensors per block, in order (names after `attention_layernorms.{i}.` etc.).
const BLOCK_TENSORS: usize = 12;

/// Indices of a block's tensors within its slice of [`SasRec::vars`].
/// (The fused block reads them by position: `super::block::param_sizes`.)
#[cfg(test)]
mod b {
    pub(super) const ATTN_LN_W: usize = 0;
    pub(super) const ATTN_LN_B: usize = 1;
    pub(super) const IN_PROJ_W: usize = 2;
    pub(super) const IN_PROJ_B: usize = 3;
    pub(super) const OUT_PROJ_W: usize = 4;
    pub(super) const OUT_PROJ_B: usize = 5;
    pub(super) const FWD_LN_W: usize = 6;
    pub(super) const FWD_LN_B: usize = 7;
    pub(super) const CONV1_W: usize = 8;
    pub(super) const CONV1_B: usize = 9;
    pub(super) const CONV2_W: usize = 10;
    pub(super) const CONV2_B: usize = 11;
}

/// How a parameter is initialized (as the reference's `main.py` does: Xavier-normal for every
/// tensor with two or more dimensions, the module default for the others).
#[derive(Debug, Clone, Copy)]
enum Init {
    XavierNormal,
    Zeros,
    Ones,
    /// PyTorch's Conv1d bias default: uniform in ±1/√fan_in.
    Uniform(f64),
}

/// A parameter's name, shape and initialization.
pub(crate) struct ParamSpec {
    pub(crate) name: String,
    pub(crate) shape: Vec<usize>,
    init: Init,
}

/// The parameters of a model of this config over `num_items` items, in a fixed order: item
/// and position embeddings, each block's twelve tensors, the last layer norm.
pub(crate) fn param_specs(config: &SasRecConfig, num_items: usize) -> Vec<ParamSpec> {
    let d = config.hidden;
    let spec = |name: String, shape: Vec<usize>, init| ParamSpec { name, shape, init };
    #[allow(clippy::cast_precision_loss)]
    let bias_bound = 1.0 / (d as f64).sqrt();
    let mut specs = vec![
        spec(
            "item_emb.weight".into(),
            vec![num_items + 1, d],
            Init::XavierNormal,
        ),
        spec(
            "pos_emb.weight".into(),
            vec![config.max_len, d],
            Init::XavierNormal,
        ),
    ];
    for i in 0..config.blocks {
        let al = format!("attention_layernorms.{i}");
        let at = format!("attention_layers.{i}");
        let fl = format!("forward_layernorms.{i}");
        let ff = format!("forward_layers.{i}");
        specs.extend([
            spec(format!("{al}.weight"), vec![d], Init::Ones),
            spec(format!("{al}.bias"), vec![d], Init::Zeros),
            spec(
                format!("{at}.in_proj_weight"),
                vec![3 * d, d],
                Init::XavierNormal,
            ),
            spec(format!("{at}.in_proj_bias"), vec![3 * d], Init::Zeros),
            spec(
                format!("{at}.out_proj.weight"),
                vec![d, d],
                Init::XavierNormal,
            ),
            spec(format!("{at}.out_proj.bias"), vec![d], Init::Zeros),
            spec(format!("{fl}.weight"), vec![d], Init::Ones),
            spec(format!("{fl}.bias"), vec![d], Init::Zeros),
            spec(format!("{ff}.conv1.weight"), vec![d, d], Init::XavierNormal),
            spec(
                format!("{ff}.conv1.bias"),
                vec![d],
                Init::Uniform(bias_bound),
            ),
            spec(format!("{ff}.conv2.weight"), vec![d, d], Init::XavierNormal),
            spec(
                format!("{ff}.conv2.bias"),
                vec![d],
                Init::Uniform(bias_bound),
            ),
        ]);
    }
    specs.extend([
        spec("last_layernorm.weight".into(), vec![d], Init::Ones),
        spec("last_layernorm.bias".into(), vec![d], Init::Zeros),
    ]);
    specs
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn init_values(spec: &ParamSpec, rng: &mut StdRng) -> Vec<f32> {
    let n: usize = spec.shape.iter().product();
    #[allow(clippy::cast_possible_truncation)]
    match spec.init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Uniform(bound) => (0..n)
            .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32)
            .collect(),
        Init::XavierNormal => {
            // fan_in = shape[1] (× receptive field), fan_out = shape[0], as torch computes it.
            #[allow(clippy::cast_precision_loss)]
            let std = (2.0 / (spec.shape[0] + spec.shape[1]) as f64).sqrt();
            (0..n).map(|_| (normal(rng) * std) as f32).collect()
        }
    }
}

pub(crate) fn backend(e: candle_core::Error) -> Error {
    Error::Inference(BackendError::new(e))
}

/// A SASRec model: its config, its item count and its weights. Item indices are
/// `1..=num_items`; 0 is padding.
#[derive(Clone)]
pub struct SasRec {
    pub(crate) config: SasRecConfig,
    pub(crate) num_items: usize,
    /// The parameters, in [`param_specs`] order.
    pub(crate) vars: Vec<Var>,
    pub(crate) names: Vec<String>,
}

impl std::fmt::Debug for SasRec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasRec")
            .field("config", &self.config)
            .field("num_items", &self.num_items)
            .finish_non_exhaustive()
    }
}

/// What one forward pass needs besides the weights: the real (non-padding) positions of a
/// batch of sequences, packed row after row.
pub(crate) struct Batch {
    /// The item of each row.
    pub(crate) items: Arc<[u32]>,
    /// Its position in the reference's left-padded window of `max_len`.
    pub(crate) positions: Arc<[u32]>,
    pub(crate) packing: Arc<Packing>,
}

impl Batch {
    /// Packs sequences already cut to at most `max_len` items (all of them real items).
    pub(crate) fn new(sequences: &[&[u32]], max_len: usize) -> Batch {
        let rows: usize = sequences.iter().map(|s| s.len()).sum();
        let mut items = Vec::with_capacity(rows);
        let mut positions = Vec::with_capacity(rows);
        let mut offsets = Vec::with_capacity(sequences.len() + 1);
        let mut pads = Vec::with_capacity(sequences.len());
        offsets.push(0);
        for seq in sequences {
            let pad = max_len - seq.len();
            items.extend_from_slice(seq);
            positions.extend((pad..max_len).map(|p| u32::try_from(p).unwrap_or(u32::MAX)));
            offsets.push(items.len());
            pads.push(pad);
        }
        Batch {
            items: items.into(),
            positions: positions.into(),
            packing: Arc::new(Packing { offsets, pads }),
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.items.len()
    }
}

impl SasRec {
    /// A freshly initialized model (weights drawn from `config.seed`) over `num_items` items.
    pub fn new(config: &SasRecConfig, num_items: usize) -> Result<SasRec> {
        config.validate()?;
        if num_items == 0 || num_items >= u32::MAX as usize {
            return Err(Error::InvalidArgument {
                name: "num_items",
                value: num_items.to_string(),
                reason: "must be between 1 and 2^32 - 2".into(),
            });
        }
        let mut rng = StdRng::seed_from_u64(ops::mix(config.seed ^ 0x5A5E_C000));
        let specs = param_specs(config, num_items);
        let mut vars = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let mut values = init_values(spec, &mut rng);
            if i == 0 {
                // The padding item's embedding is zero (padding_idx = 0).
                values[..config.hidden].fill(0.0);
            }
            let t =
                Tensor::from_vec(values, spec.shape.as_slice(), &Device::Cpu).map_err(backend)?;
            vars.push(Var::from_tensor(&t).map_err(backend)?);
        }
        Ok(SasRec {
            config: config.clone(),
            num_items,
            vars,
            names: specs.into_iter().map(|s| s.name).collect(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SasRecConfig {
        &self.config
    }

    /// The parameter names (as in the reference's `state_dict`) and shapes, in order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.names
            .iter()
            .zip(&self.vars)
            .map(|(n, v)| (n.clone(), v.dims().to_vec()))
            .collect()
    }

    /// The number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// The packed input of the given sequences: each one's most recent `max_len` known items
    /// (indices above `num_items` are dropped).
    pub(crate) fn pack(&self, sequences: &[&[u32]]) -> Batch {
        let len = self.config.max_len;
        let kept: Vec<Vec<u32>> = sequences
            .iter()
            .map(|seq| {
                let mut tail: Vec<u32> = seq
                    .iter()
                    .rev()
                    .copied()
                    .filter(|&i| i != 0 && i as usize <= self.num_items)
                    .take(len)
                    .collect();
                tail.reverse();
                tail
            })
            .collect();
        let refs: Vec<&[u32]> = kept.iter().map(Vec::as_slice).collect();
        Batch::new(&refs, len)
    }

    /// The weights as tensors: the variables themselves (so the graph reaches them) when
    /// training, detached copies of the handles otherwise.
    pub(crate) fn weights(&self, train: bool) -> Vec<Tensor> {
        self.vars
            .iter()
            .map(|v| {
                if train {
                    v.as_tensor().clone()
                } else {
                    v.as_detached_tensor()
                }
            })
            .collect()
    }

    /// The final hidden states `[rows, hidden]` of a batch's real positions. `dropout_seed`
    /// switches dropout on (training) and has the blocks keep their intermediates and attention
    /// weights for the backward pass (without it, a backward pass recomputes them).
    pub(crate) fn encode(
        &self,
        w: &[Tensor],
        batch: &Batch,
        dropout_seed: Option<u64>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (d, heads) = (c.hidden, c.heads);
        let mut site = 0u64;
        let mut dropout = || {
            site += 1;
            match dropout_seed {
                Some(seed) => Dropout::new(c.dropout, ops::mix(seed ^ site)),
                None => Dropout::NONE,
            }
        };
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let scale = (d as f64).sqrt() as f32;
        let mut x = w[0].apply_op2(
            &w[1],
            Embed {
                items: batch.items.clone(),
                positions: batch.positions.clone(),
                scale,
                dropout: dropout(),
            },
        )?;
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let attn_scale = (1.0 / ((d / heads) as f64).sqrt()) as f32;
        for block in 0..c.blocks {
            let p = &w[2 + block * BLOCK_TENSORS..2 + (block + 1) * BLOCK_TENSORS];
            // Dropout sites in order: the attention weights, after the ReLU, the block output.
            let attention = Attention::new(
                batch.packing.clone(),
                heads,
                attn_scale,
                dropout(),
                dropout_seed.is_some(),
            );
            let (ffn, out) = (dropout(), dropout());
            #[cfg(test)]
            if reference::UNFUSED.with(std::cell::Cell::get) {
                x = reference::block(&x, p, attention, ffn, out)?;
                continue;
            }
            let flat = Tensor::cat(
                &p.iter()
                    .map(Tensor::flatten_all)
                    .collect::<candle_core::Result<Vec<_>>>()?,
                0,
            )?;
            x = x.apply_op2(&flat, Block::new(attention, ffn, out))?;
        }
        let last = w.len() - 2;
        x.apply_op3(&w[last], &w[last + 1], LayerNorm { eps: LN_EPS })
    }

    /// The final hidden state of each sequence (its last position), `[sequences, hidden]`,
    /// without dropout. An empty sequence's is the last layer norm's bias, as in the
    /// reference (its last position is padding, zeroed before that norm).
    pub(crate) fn last_states(&self, sequences: &[&[u32]]) -> Result<Vec<f32>> {
        let w = self.weights(false);
        let batch = self.pack(sequences);
        let d = self.config.hidden;
        let h = if batch.rows() > 0 {
            Some(self.encode(&w, &batch, None).map_err(backend)?)
        } else {
            None
        };
        let bias = ops::with_f32(&w[w.len() - 1], |b| Ok(b.to_vec())).map_err(backend)?;
        let read = |h: &[f32]| {
            let mut out = Vec::with_capacity(sequences.len() * d);
            for win in batch.packing.offsets.windows(2) {
                if win[1] > win[0] {
                    let row = win[1] - 1;
                    out.extend_from_slice(&h[row * d..(row + 1) * d]);
                } else {
                    out.extend_from_slice(&bias);
                }
            }
            Ok(out)
        };
        match h {
            Some(h) => ops::with_f32(&h, read).map_err(backend),
            None => read(&[]).map_err(backend),
        }
    }

    /// The item embeddings `[num_items + 1, hidden]` as a detached tensor.
    pub(crate) fn item_embeddings(&self) -> Tensor {
        self.vars[0].as_detached_tensor()
    }

    /// For a cosine output, `1 / ‖e_i‖` of every item's embedding (index 0 the padding item's);
    /// `None` for the dot product.
    pub(crate) fn inverse_norms(&self) -> Result<Option<Vec<f32>>> {
        if self.config.cosine_scale <= 0.0 {
            return Ok(None);
        }
        let d = self.config.hidden;
        ops::with_f32(&self.item_embeddings(), |e| {
            Ok(e.chunks_exact(d).map(super::inverse_norm).collect())
        })
        .map(Some)
        .map_err(backend)
    }

    /// The final states as they are scored ([`Self::last_states`], each L2-normalized and
    /// multiplied by the scale for a cosine output), so that a score is the training logit.
    pub(crate) fn output_states(&self, sequences: &[&[u32]]) -> Result<Vec<f32>> {
        let mut states = self.last_states(sequences)?;
        if self.config.cosine_scale > 0.0 {
            #[allow(clippy::cast_possible_truncation)]
            let scale = self.config.cosine_scale as f32;
            for row in states.chunks_exact_mut(self.config.hidden) {
                let k = scale * super::inverse_norm(row);
                row.iter_mut().for_each(|v| *v *= k);
            }
        }
        Ok(states)
    }

    /// The values of every parameter, by name (a copy).
    pub fn parameters(&self) -> Result<Vec<(String, Vec<f32>)>> {
        self.names
            .iter()
            .zip(&self.vars)
            .map(|(n, v)| {
                let values = v
                    .as_tensor()
                    .flatten_all()
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(backend)?;
                Ok((n.clone(), values))
            })
            .collect()
    }
}

/// The op-by-op graph of a block that [`Block`] fuses, kept as the reference it is tested
/// against (switched on per thread with [`reference::UNFUSED`]).
#[cfg(test)]
pub(crate) mod reference {
    use std::cell::Cell;

    use candle_core::Tensor;

    use super::b;
    use crate::sasrec::attention::Attention;
    use crate::sasrec::block::LN_EPS;
    use crate::sasrec::ops::{BiasAct, BiasResidual, Dropout, LayerNorm};

    thread_local! {
        /// Whether [`super::SasRec::encode`] builds blocks op by op on this thread.
        pub(crate) static UNFUSED: Cell<bool> = const { Cell::new(false) };
    }

    /// One block op by op: layer norms, matmuls, bias ops, attention.
    pub(crate) fn block(
        x: &Tensor,
        p: &[Tensor],
        attention: Attention,
        ffn: Dropout,
        out: Dropout,
    ) -> candle_core::Result<Tensor> {
        let d = x.dim(1)?;
        let plain = || BiasAct {
            relu: false,
            dropout: Dropout::NONE,
        };
        let q_in = x.apply_op3(
            &p[b::ATTN_LN_W],
            &p[b::ATTN_LN_B],
            LayerNorm { eps: LN_EPS },
        )?;
        let (wp, bp) = (&p[b::IN_PROJ_W], &p[b::IN_PROJ_B]);
        let q = q_in
            .matmul(&wp.narrow(0, 0, d)?.t()?)?
            .apply_op2(&bp.narrow(0, 0, d)?, plain())?;
        let bkv = bp.narrow(0, d, 2 * d)?;
        let kv = x
            .matmul(&wp.narrow(0, d, 2 * d)?.t()?)?
            .apply_op2(&bkv, plain())?;
        let o = q.apply_op3(&kv, &bkv, attention)?;
        let x1 = o.matmul(&p[b::OUT_PROJ_W].t()?)?.apply_op3(
            &p[b::OUT_PROJ_B],
            &q_in,
            BiasResidual {
                dropout: Dropout::NONE,
            },
        )?;
        let x2 = x1.apply_op3(&p[b::FWD_LN_W], &p[b::FWD_LN_B], LayerNorm { eps: LN_EPS })?;
        let h = x2.matmul(&p[b::CONV1_W].t()?)?.apply_op2(
            &p[b::CONV1_B],
            BiasAct {
                relu: true,
                dropout: ffn,
            },
        )?;
        h.matmul(&p[b::CONV2_W].t()?)?
            .apply_op3(&p[b::CONV2_B], &x2, BiasResidual { dropout: out })
    }
}
