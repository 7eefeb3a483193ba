//! SASRec hyper-parameters: what the model looks like and how it is trained.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SasRecLoss {
    /// The paper's binary cross-entropy: at every position the next item against `negatives`
    /// items of its own (the paper uses one), drawn uniformly among the items the user never
    /// touched.
    Bce,
    /// Cross-entropy of the next item against `negatives` items drawn uniformly once per batch
    /// and shared by every position of the batch (a negative equal to the target is ignored).
    SampledSoftmax,
    /// Cross-entropy of the next item against every other item (the full softmax; `negatives`
    /// is not used). Each step multiplies its positions by the whole embedding table, so it costs
    /// about `items / negatives` times a sampled softmax step: for catalogs of tens of thousands.
    Softmax,
    /// gBCE (Petrov & Macdonald, RecSys 2023): binary cross-entropy over the same shared
    /// negatives with the positive's probability raised to β, which calibrates the scores for
    /// the sampling rate (`gbce_t` sets how far).
    Gbce,
}

impl SasRecLoss {
    /// The name used in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SasRecLoss::Bce => "bce",
            SasRecLoss::SampledSoftmax => "sampled_softmax",
            SasRecLoss::Softmax => "softmax",
            SasRecLoss::Gbce => "gbce",
        }
    }
}

/// SASRec's hyper-parameters. The defaults are the paper's for the Amazon sets (length 50,
/// hidden 50, two blocks, one head, dropout 0.5, Adam at 0.001, batch 128) except the loss:
/// sampled softmax over 256 shared negatives, which on amazon-games reaches a better ranking
/// in far fewer epochs than the paper's one-negative BCE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SasRecConfig {
    /// The most recent items the model looks at (longer sequences keep their tail).
    pub max_len: usize,
    /// Embedding and hidden size.
    pub hidden: usize,
    /// Self-attention blocks.
    pub blocks: usize,
    /// Attention heads (must divide `hidden`).
    pub heads: usize,
    /// Dropout rate (embeddings, attention weights, feed-forward), in `[0, 1)`.
    pub dropout: f64,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Adam's β₁.
    pub beta1: f64,
    /// Adam's β₂ (the reference implementation uses 0.98).
    pub beta2: f64,
    /// L2 penalty on the item embeddings (`l2_emb` of the reference; added to their gradient
    /// as `l2_emb · weight`).
    pub l2_emb: f64,
    /// Sequences per training step.
    pub batch: usize,
    /// Training epochs (an epoch visits every training sequence once, in a seeded order).
    pub epochs: usize,
    /// The training loss.
    pub loss: SasRecLoss,
    /// Negatives: per position for `bce`, shared per batch for `sampled_softmax` and `gbce`;
    /// `softmax` ignores it (every item is a negative).
    pub negatives: usize,
    /// gBCE's calibration parameter t in `[0, 1]` (0 is plain BCE, 1 fully calibrated).
    pub gbce_t: f64,
    /// Cosine output: when above 0, an item's score is this scale times the cosine between
    /// the sequence's final state and the item's embedding (both L2-normalized, as in NISER and
    /// CORE for session data) instead of their dot product. 0: the paper's dot product.
    pub cosine_scale: f64,
    /// Evaluate on the validation split every this many epochs (and after the last one).
    pub eval_every: usize,
    /// Stop after this many evaluations without improvement (0: never stop early).
    pub patience: usize,
    /// Learning-rate steps: when `patience` evaluations in a row bring no improvement, the
    /// learning rate is multiplied by `lr_step_factor` and training goes on, up to this many
    /// times; the run stops early only when none is left. 0: plain early stopping.
    pub lr_steps: usize,
    /// The factor of each learning-rate step, in `(0, 1)`.
    pub lr_step_factor: f64,
    /// Weight averages to keep beside training: one exponential moving average of the weights
    /// per decay (per step, each in `(0, 1)`; e.g. 0.9999 averages over about the last 10,000
    /// steps). Each is validated with the weights and kept at its own best; the run returns
    /// whichever of them and the weights validated best. They never change the training.
    /// Empty: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ema_decays: Vec<f64>,
    /// Seed of every random choice (initialization, order, negatives, dropout).
    pub seed: u64,
    /// Worker threads for training (0: one per core).
    pub threads: usize,
}

impl Default for SasRecConfig {
    fn default() -> Self {
        SasRecConfig {
            max_len: 50,
            hidden: 50,
            blocks: 2,
            heads: 1,
            dropout: 0.5,
            learning_rate: 0.001,
            beta1: 0.9,
            beta2: 0.98,
            l2_emb: 0.0,
            batch: 128,
            epochs: 200,
            loss: SasRecLoss::SampledSoftmax,
            negatives: 256,
            gbce_t: 0.75,
            cosine_scale: 0.0,
            eval_every: 5,
            patience: 5,
            lr_steps: 0,
            lr_step_factor: 0.1,
            ema_decays: Vec::new(),
            seed: 42,
            threads: 0,
        }
    }
}

impl SasRecConfig {
    /// Parses a config from JSON (unknown fields are errors, missing ones take their default)
    /// and validates it. `origin` names the source in errors.
    pub fn from_json(text: &str, origin: &std::path::Path) -> Result<SasRecConfig> {
        let config: SasRecConfig =
            serde_json::from_str(text).map_err(|source| Error::ConfigParse {
                path: origin.to_owned(),
                source,
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error ([`Error::InvalidArgument`]) names the first offending
    /// field.
    pub fn validate(&self) -> Result<()> {
        fn bad(name: &'static str, value: impl ToString, reason: &str) -> Result<()> {
            Err(Error::InvalidArgument {
                name,
                value: value.to_string(),
                reason: reason.to_string(),
            })
        }
        // At least one epoch: a model that never trained is never written.
        let positive: [(&'static str, usize); 8] = [
            ("epochs", self.epochs),
            ("max_len", self.max_len),
            ("hidden", self.hidden),
            ("blocks", self.blocks),
            ("heads", self.heads),
            ("batch", self.batch),
            ("negatives", self.negatives),
            ("eval_every", self.eval_every),
        ];
        for (field, value) in positive {
            if value == 0 {
                return bad(field, value, "must be at least 1");
            }
        }
        if !(self.lr_step_factor > 0.0 && self.lr_step_factor < 1.0) {
            return bad("lr_step_factor", self.lr_step_factor, "must be in (0, 1)");
        }
        if self.ema_decays.len() > 8 {
            return bad(
                "ema_decays",
                format!("{:?}", self.ema_decays),
                "at most 8 averages",
            );
        }
        for (k, &decay) in self.ema_decays.iter().enumerate() {
            if !(decay > 0.0 && decay < 1.0) {
                return bad("ema_decays", decay, "each decay must be in (0, 1)");
            }
            if self.ema_decays[..k].contains(&decay) {
                return bad("ema_decays", decay, "each decay may appear once");
            }
        }
        if self.max_len > 4096 {
            return bad("max_len", self.max_len, "must be at most 4096");
        }
        if self.hidden > 4096 {
            return bad("hidden", self.hidden, "must be at most 4096");
        }
        if self.batch > 65_536 {
            return bad("batch", self.batch, "must be at most 65536");
        }
        // Each step allocates its negatives up front: per position for `bce`, per batch else.
        let (max_negatives, per) = match self.loss {
            SasRecLoss::Bce => (1_000, "per position for bce"),
            _ => (1_000_000, "shared by a batch"),
        };
        if self.negatives > max_negatives {
            return bad(
                "negatives",
                self.negatives,
                &format!("must be at most {max_negatives} {per}"),
            );
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return bad("heads", self.heads, "must divide hidden");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", self.dropout, "must be in [0, 1)");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", self.learning_rate, "must be positive");
        }
        for (field, value) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&value) {
                return bad(field, value, "must be in [0, 1)");
            }
        }
        if !(self.l2_emb.is_finite() && self.l2_emb >= 0.0) {
            return bad("l2_emb", self.l2_emb, "must be finite and >= 0");
        }
        if !(0.0..=1.0).contains(&self.gbce_t) {
            return bad("gbce_t", self.gbce_t, "must be in [0, 1]");
        }
        if !(self.cosine_scale.is_finite() && (0.0..=100.0).contains(&self.cosine_scale)) {
            return bad(
                "cosine_scale",
                self.cosine_scale,
                "must be in [0, 100] (0: dot product)",
            );
        }
        if self.threads > 256 {
            return bad("threads", self.threads, "must be at most 256");
        }
        Ok(())
    }

    /// The number of worker threads `threads` stands for on this machine.
    pub fn effective_threads(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            self.threads
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = SasRecConfig::default();
        c.validate().expect("valid");
        let text = serde_json::to_string(&c).expect("json");
        let back = SasRecConfig::from_json(&text, std::path::Path::new("x")).expect("parse");
        assert_eq!(back, c);
        let partial = SasRecConfig::from_json(r#"{"loss": "bce", "negatives": 1}"#, "x".as_ref())
            .expect("partial");
        assert_eq!(partial.loss, SasRecLoss::Bce);
        assert_eq!(partial.hidden, 50);
    }

    #[test]
    fn errors_name_the_field() {
        type Change = Box<dyn Fn(&mut SasRecConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("epochs", Box::new(|c| c.epochs = 0)),
            ("hidden", Box::new(|c| c.hidden = 0)),
            ("heads", Box::new(|c| c.heads = 3)),
            ("dropout", Box::new(|c| c.dropout = 1.0)),
            ("learning_rate", Box::new(|c| c.learning_rate = -1.0)),
            ("negatives", Box::new(|c| c.negatives = 0)),
            ("negatives", Box::new(|c| c.negatives = 2_000_000)),
            (
                "negatives",
                Box::new(|c| {
                    c.loss = SasRecLoss::Bce;
                    c.negatives = 2_000;
                }),
            ),
            ("batch", Box::new(|c| c.batch = 1 << 40)),
            ("beta2", Box::new(|c| c.beta2 = 1.5)),
            ("cosine_scale", Box::new(|c| c.cosine_scale = -1.0)),
            ("cosine_scale", Box::new(|c| c.cosine_scale = f64::NAN)),
        ];
        for (field, change) in cases {
            let mut c = SasRecConfig::default();
            change(&mut c);
            match c.validate() {
                Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let err = SasRecConfig::from_json(r#"{"hiden": 3}"#, "x".as_ref()).expect_err("unknown");
        assert!(err.to_string().contains("hiden"), "{err}");
    }
}
