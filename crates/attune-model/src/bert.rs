//! A BERT encoder (post-LayerNorm, absolute positions, exact-erf GELU) written with candle ops,
//! for inference on CPU in `f32`. Crate-internal: the public API is [`crate::text::TextEmbedder`].
//!
//! The forward pass, per layer: fused Q/K/V projection, scaled dot-product attention with an
//! additive padding mask, output projection + residual + LayerNorm, then the feed-forward network
//! (dense to `intermediate_size`, GELU, dense back) + residual + LayerNorm. Activations are kept
//! as 2-D `[batch × seq, hidden]` matrices so every projection is one matrix multiplication.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{BackendError, Error, Result, io_error, read_to_string};
use crate::kernels::{AddBias, AddBiasResidual};

/// The fields of a Hugging Face `config.json` this encoder uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BertConfig {
    pub(crate) vocab_size: usize,
    pub(crate) hidden_size: usize,
    pub(crate) num_hidden_layers: usize,
    pub(crate) num_attention_heads: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub(crate) type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub(crate) layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    pub(crate) hidden_act: String,
    #[serde(default = "default_position_embedding_type")]
    pub(crate) position_embedding_type: String,
}

fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_hidden_act() -> String {
    "gelu".to_owned()
}
fn default_position_embedding_type() -> String {
    "absolute".to_owned()
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub(crate) fn from_file(path: &Path) -> Result<Self> {
        let text = read_to_string(path)?;
        let config: Self = serde_json::from_str(&text).map_err(|source| Error::ConfigParse {
            path: path.to_owned(),
            source,
        })?;
        let unsupported = |field: &'static str, value: String| Error::UnsupportedConfig {
            path: path.to_owned(),
            field,
            value,
        };
        if config.hidden_act != "gelu" {
            return Err(unsupported("hidden_act", config.hidden_act));
        }
        if config.position_embedding_type != "absolute" {
            return Err(unsupported(
                "position_embedding_type",
                config.position_embedding_type,
            ));
        }
        let sizes = [
            ("hidden_size", config.hidden_size),
            ("num_attention_heads", config.num_attention_heads),
            ("num_hidden_layers", config.num_hidden_layers),
            ("intermediate_size", config.intermediate_size),
            ("vocab_size", config.vocab_size),
            ("type_vocab_size", config.type_vocab_size),
        ];
        if let Some((field, value)) = sizes.into_iter().find(|&(_, v)| v == 0) {
            return Err(unsupported(field, value.to_string()));
        }
        if config.max_position_embeddings < 2 {
            return Err(unsupported(
                "max_position_embeddings",
                config.max_position_embeddings.to_string(),
            ));
        }
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            let value = format!(
                "{} (does not divide hidden_size {})",
                config.num_attention_heads, config.hidden_size
            );
            return Err(unsupported("num_attention_heads", value));
        }
        if !(config.layer_norm_eps.is_finite() && config.layer_norm_eps > 0.0) {
            return Err(unsupported(
                "layer_norm_eps",
                config.layer_norm_eps.to_string(),
            ));
        }
        Ok(config)
    }
}

/// A dense layer `y = x·W + b`, with `W` stored as `[in, out]` (transposed once at load).
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `x·W + b`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.weight)?;
        y.inplace_op2(&self.bias, &AddBias { gelu: false })?;
        Ok(y)
    }

    /// `GELU(x·W + b)`.
    fn forward_gelu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.weight)?;
        y.inplace_op2(&self.bias, &AddBias { gelu: true })?;
        Ok(y)
    }

    /// `x·W + b + residual`.
    fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.weight)?;
        y.inplace_op3(&self.bias, residual, &AddBiasResidual)?;
        Ok(y)
    }
}

/// LayerNorm over the last dimension.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// One transformer layer.
#[derive(Debug, Clone)]
struct Layer {
    /// Query, key and value projections side by side: `[hidden, 3 × hidden]`.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The encoder's weights.
#[derive(Debug, Clone)]
pub(crate) struct Bert {
    word_embeddings: Tensor,
    /// Position embeddings plus the token-type-0 embedding, summed once at load.
    position_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    max_positions: usize,
}

/// Reads tensors by name out of a safetensors file, checking their shapes.
struct Weights<'a> {
    path: &'a Path,
    prefix: &'static str,
    tensors: HashMap<String, Tensor>,
}

impl Weights<'_> {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = self
            .tensors
            .remove(&format!("{}{name}", self.prefix))
            .ok_or_else(|| Error::MissingTensor {
                path: self.path.to_owned(),
                name: name.to_owned(),
            })?;
        if tensor.dims() != shape {
            return Err(Error::TensorShape {
                path: self.path.to_owned(),
                name: name.to_owned(),
                expected: shape.to_vec(),
                found: tensor.dims().to_vec(),
            });
        }
        tensor.to_dtype(DType::F32).map_err(|e| self.backend(e))
    }

    fn backend(&self, e: candle_core::Error) -> Error {
        Error::Weights {
            path: self.path.to_owned(),
            source: BackendError::new(e),
        }
    }

    fn linear(&mut self, name: &str, inputs: usize, outputs: usize) -> Result<Linear> {
        let weight = self.take(&format!("{name}.weight"), &[outputs, inputs])?;
        let bias = self.take(&format!("{name}.bias"), &[outputs])?;
        let weight = weight
            .t()
            .and_then(|w| w.contiguous())
            .map_err(|e| self.backend(e))?;
        Ok(Linear { weight, bias })
    }

    fn layer_norm(&mut self, name: &str, size: usize, eps: f32) -> Result<LayerNorm> {
        let weight = self.take(&format!("{name}.weight"), &[size])?;
        let bias = self.take(&format!("{name}.bias"), &[size])?;
        Ok(LayerNorm { weight, bias, eps })
    }

    /// The query, key and value projections of a layer as one `[hidden, 3 × hidden]` dense layer.
    fn fused_qkv(&mut self, prefix: &str, hidden: usize) -> Result<Linear> {
        let parts = ["query", "key", "value"]
            .map(|p| self.linear(&format!("{prefix}.attention.self.{p}"), hidden, hidden));
        let [q, k, v] = parts;
        let (q, k, v) = (q?, k?, v?);
        let weight =
            Tensor::cat(&[&q.weight, &k.weight, &v.weight], 1).map_err(|e| self.backend(e))?;
        let bias = Tensor::cat(&[&q.bias, &k.bias, &v.bias], 0).map_err(|e| self.backend(e))?;
        Ok(Linear { weight, bias })
    }
}

impl Bert {
    /// Loads the weights from a safetensors file (HF BERT names, with or without a `bert.` prefix).
    pub(crate) fn load(path: &Path, config: &BertConfig) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| io_error(path, source))?;
        let weights_error = |e| Error::Weights {
            path: path.to_owned(),
            source: BackendError::new(e),
        };
        let tensors =
            candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(weights_error)?;
        drop(bytes);
        let prefix = if tensors.contains_key("embeddings.word_embeddings.weight") {
            ""
        } else if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            return Err(Error::MissingTensor {
                path: path.to_owned(),
                name: "embeddings.word_embeddings.weight".to_owned(),
            });
        };
        let mut w = Weights {
            path,
            prefix,
            tensors,
        };
        let hidden = config.hidden_size;
        // f32 is ample for the eps values BERT uses (1e-12 is representable).
        #[allow(clippy::cast_possible_truncation)]
        let eps = config.layer_norm_eps as f32;

        let word_embeddings = w.take(
            "embeddings.word_embeddings.weight",
            &[config.vocab_size, hidden],
        )?;
        let positions = w.take(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, hidden],
        )?;
        let token_types = w.take(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, hidden],
        )?;
        let position_embeddings = token_types
            .get(0)
            .and_then(|type0| positions.broadcast_add(&type0))
            .map_err(|e| w.backend(e))?;
        let embeddings_norm = w.layer_norm("embeddings.LayerNorm", hidden, eps)?;

        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                qkv: w.fused_qkv(&p, hidden)?,
                attention_out: w.linear(&format!("{p}.attention.output.dense"), hidden, hidden)?,
                attention_norm: w.layer_norm(
                    &format!("{p}.attention.output.LayerNorm"),
                    hidden,
                    eps,
                )?,
                intermediate: w.linear(
                    &format!("{p}.intermediate.dense"),
                    hidden,
                    config.intermediate_size,
                )?,
                output: w.linear(
                    &format!("{p}.output.dense"),
                    config.intermediate_size,
                    hidden,
                )?,
                output_norm: w.layer_norm(&format!("{p}.output.LayerNorm"), hidden, eps)?,
            });
        }
        Ok(Self {
            word_embeddings,
            position_embeddings,
            embeddings_norm,
            layers,
            heads: config.num_attention_heads,
            head_dim: hidden / config.num_attention_heads,
            hidden,
            max_positions: config.max_position_embeddings,
        })
    }

    /// The width of the hidden states.
    pub(crate) fn hidden(&self) -> usize {
        self.hidden
    }

    /// The longest sequence the position embeddings cover.
    pub(crate) fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Runs the encoder over a padded batch and returns the mean of each sequence's last hidden
    /// states over its real tokens, `[batch][hidden]` flattened (not normalized).
    ///
    /// `ids` is `batch × seq_len` row-major, padded; `lengths[b]` is the number of real tokens of
    /// row `b` (at least 1, at most `seq_len`).
    pub(crate) fn mean_pooled(
        &self,
        ids: &[u32],
        lengths: &[usize],
        seq_len: usize,
    ) -> candle_core::Result<Vec<f32>> {
        let batch = lengths.len();
        let (hidden, heads, head_dim) = (self.hidden, self.heads, self.head_dim);
        if seq_len > self.max_positions || ids.len() != batch * seq_len {
            candle_core::bail!(
                "bad batch: {} ids for {batch} × {seq_len} tokens",
                ids.len()
            );
        }
        let device = Device::Cpu;
        let rows = batch * seq_len;

        // Embeddings: word + (position + type 0), LayerNorm. `x` is [batch × seq, hidden].
        let ids_t = Tensor::from_slice(ids, rows, &device)?;
        let words = self
            .word_embeddings
            .index_select(&ids_t, 0)?
            .reshape((batch, seq_len, hidden))?;
        let positions = self.position_embeddings.narrow(0, 0, seq_len)?;
        let mut x = self
            .embeddings_norm
            .forward(&words.broadcast_add(&positions)?)?
            .reshape((rows, hidden))?;

        // Additive attention mask [batch, 1, 1, seq]: 0 for real tokens, f32::MIN for padding. None
        // when no row is padded.
        let mask = if lengths.iter().all(|&n| n == seq_len) {
            None
        } else {
            let values: Vec<f32> = lengths
                .iter()
                .flat_map(|&n| (0..seq_len).map(move |t| if t < n { 0.0 } else { f32::MIN }))
                .collect();
            Some(Tensor::from_vec(values, (batch, 1, 1, seq_len), &device)?)
        };
        #[allow(clippy::cast_precision_loss)]
        let scale = 1.0 / (head_dim as f64).sqrt();

        for layer in &self.layers {
            // [rows, 3·hidden] → [3, batch, heads, seq, head_dim]
            let qkv = layer
                .qkv
                .forward(&x)?
                .reshape((batch, seq_len, 3, heads, head_dim))?
                .permute((2, 0, 3, 1, 4))?;
            let q = (qkv.get(0)? * scale)?.contiguous()?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let mut scores = q.matmul(&k.t()?)?; // [batch, heads, seq, seq]
            if let Some(mask) = &mask {
                scores = scores.broadcast_add(mask)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((rows, hidden))?;
            let attended = layer
                .attention_norm
                .forward(&layer.attention_out.forward_residual(&context, &x)?)?;
            let inner = layer.intermediate.forward_gelu(&attended)?;
            x = layer
                .output_norm
                .forward(&layer.output.forward_residual(&inner, &attended)?)?;
        }

        // Mean over each row's real tokens.
        let states = x.flatten_all()?.to_vec1::<f32>()?;
        let mut pooled = vec![0f32; batch * hidden];
        for ((b, &n), out) in lengths
            .iter()
            .enumerate()
            .zip(pooled.chunks_exact_mut(hidden))
        {
            let start = b * seq_len * hidden;
            for token in states[start..start + n * hidden].chunks_exact(hidden) {
                out.iter_mut().zip(token).for_each(|(o, v)| *o += v);
            }
            #[allow(clippy::cast_precision_loss)]
            let inv = 1.0 / n.max(1) as f32;
            out.iter_mut().for_each(|o| *o *= inv);
        }
        Ok(pooled)
    }
}
