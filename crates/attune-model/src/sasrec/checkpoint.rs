//! Files: a trained model (`model.safetensors` + `manifest.json`) and the training checkpoint
//! (`state.json` + `epoch-N.safetensors` with weights, Adam moments, the best weights so far,
//! and each weight average with its best).
//!
//! The checkpoint's random state is not stored: every epoch's random stream (order, negatives,
//! dropout) is derived from the seed and the epoch number, so the epoch count is the rng state
//! and a resumed run draws exactly what an uninterrupted one would have.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::adam::Adam;
use super::average::Ema;
use super::config::SasRecConfig;
use super::model::{SasRec, param_specs};
use crate::error::BackendError;
use crate::manifest::{DatasetInfo, MANIFEST_VERSION, Manifest, ModelKind};
use crate::{Error, Result};

/// The weights file of a saved model.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The training-state file inside a checkpoint directory.
const STATE_FILE: &str = "state.json";

/// The checkpoint layout this build writes and reads.
const STATE_VERSION: u32 = 1;

/// Where a training run is, written after every epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrainState {
    version: u32,
    config: SasRecConfig,
    num_items: usize,
    /// Fingerprint of the training sequences.
    data: u64,
    /// Epochs completed.
    pub(crate) epoch: usize,
    /// Adam's step count.
    adam_steps: u64,
    pub(crate) losses: Vec<f64>,
    pub(crate) evaluations: Vec<(usize, f64)>,
    pub(crate) best_metric: Option<f64>,
    pub(crate) best_epoch: Option<usize>,
    pub(crate) bad_evaluations: usize,
    pub(crate) stopped_early: bool,
    /// Learning-rate steps taken so far (see [`SasRecConfig::lr_steps`]).
    #[serde(default)]
    pub(crate) lr_steps_taken: usize,
    /// Seconds spent in training steps and sequences trained, over every part of the run
    /// (checkpoints written before these existed count from their resume on).
    #[serde(default)]
    pub(crate) step_seconds: f64,
    #[serde(default)]
    pub(crate) trained_sequences: u64,
    /// The weight averages' validations, one per `config.ema_decays` entry, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) averages: Vec<AverageState>,
    /// The tensors file of this state.
    tensors: String,
}

/// Where one weight average is (see [`super::average`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AverageState {
    pub(crate) decay: f64,
    pub(crate) evaluations: Vec<(usize, f64)>,
    pub(crate) best_metric: Option<f64>,
    pub(crate) best_epoch: Option<usize>,
}

impl TrainState {
    pub(crate) fn fresh(config: &SasRecConfig, num_items: usize, data: u64) -> TrainState {
        TrainState {
            version: STATE_VERSION,
            config: config.clone(),
            num_items,
            data,
            epoch: 0,
            adam_steps: 0,
            losses: Vec::new(),
            evaluations: Vec::new(),
            best_metric: None,
            best_epoch: None,
            bad_evaluations: 0,
            stopped_early: false,
            lr_steps_taken: 0,
            step_seconds: 0.0,
            trained_sequences: 0,
            averages: config
                .ema_decays
                .iter()
                .map(|&decay| AverageState {
                    decay,
                    evaluations: Vec::new(),
                    best_metric: None,
                    best_epoch: None,
                })
                .collect(),
            tensors: String::new(),
        }
    }

    /// A checkpoint resumes only the same run: same hyper-parameters, items and data. The epoch
    /// budget, the thread count, the patience and the number of learning-rate steps may change:
    /// none of them changes what an epoch computes, only how many run, how fast, and what
    /// happens once validation stops improving (a run that stopped early can go on with more
    /// patience or steps, as if it had had them all along). The step factor may change until
    /// a step was taken.
    pub(crate) fn check_compatible(
        &self,
        config: &SasRecConfig,
        num_items: usize,
        data: u64,
        dir: &Path,
    ) -> Result<()> {
        let mismatch = |field: &'static str, manifest: String, found: String| {
            Err(Error::ManifestMismatch {
                path: dir.to_owned(),
                field,
                manifest,
                found,
            })
        };
        let mut mine = self.config.clone();
        mine.epochs = config.epochs;
        mine.threads = config.threads;
        mine.patience = config.patience;
        mine.lr_steps = config.lr_steps;
        if self.lr_steps_taken == 0 {
            mine.lr_step_factor = config.lr_step_factor;
        }
        if &mine != config {
            return mismatch(
                "config",
                serde_json::to_string(&self.config).unwrap_or_default(),
                format!(
                    "this run's config is {}",
                    serde_json::to_string(config).unwrap_or_default()
                ),
            );
        }
        if self.num_items != num_items {
            return mismatch(
                "num_items",
                self.num_items.to_string(),
                format!("this run has {num_items} items"),
            );
        }
        if self.data != data {
            return mismatch(
                "data",
                format!("{:016x}", self.data),
                "this run's training sequences differ".into(),
            );
        }
        Ok(())
    }
}

fn weights_error(path: &Path, e: candle_core::Error) -> Error {
    Error::Weights {
        path: path.to_owned(),
        source: BackendError::new(e),
    }
}

/// Reads `dir/state.json` if there is one.
pub(crate) fn read_state(dir: &Path) -> Result<Option<TrainState>> {
    let path = dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::error::read_to_string(&path)?;
    let state: TrainState = serde_json::from_str(&text).map_err(|source| Error::ConfigParse {
        path: path.clone(),
        source,
    })?;
    if state.version != STATE_VERSION {
        return Err(Error::UnsupportedConfig {
            path,
            field: "version",
            value: format!("{} (this build reads {STATE_VERSION})", state.version),
        });
    }
    Ok(Some(state))
}

/// Loads the weights and Adam state of a checkpoint into `model` and `adam`, and the weight
/// averages into `averages` (one per `state.averages` entry, in order); returns the best
/// weights it holds.
pub(crate) fn restore(
    dir: &Path,
    state: &TrainState,
    model: &mut SasRec,
    adam: &mut Adam,
    averages: &mut [Ema],
) -> Result<Option<Vec<Tensor>>> {
    let path = dir.join(&state.tensors);
    let mut tensors = read_tensors(&path)?;
    let mut take = |name: String, shape: &[usize]| -> Result<Tensor> {
        let t = tensors.remove(&name).ok_or_else(|| Error::MissingTensor {
            path: path.clone(),
            name: name.clone(),
        })?;
        if t.dims() != shape {
            return Err(Error::TensorShape {
                path: path.clone(),
                name,
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        Ok(t)
    };
    let names = model.names.clone();
    let mut best = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let shape = model.vars[i].dims().to_vec();
        let w = take(format!("param.{name}"), &shape)?;
        model.vars[i].set(&w).map_err(|e| weights_error(&path, e))?;
        for (prefix, slot) in [("adam_m", &mut adam.m[i]), ("adam_v", &mut adam.v[i])] {
            let t = take(format!("{prefix}.{name}"), &shape)?;
            *slot = t
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| weights_error(&path, e))?;
        }
        if state.best_epoch.is_some() {
            best.push(take(format!("best.{name}"), &shape)?);
        }
        for (k, (ema, saved)) in averages.iter_mut().zip(&state.averages).enumerate() {
            let w = take(format!("ema{k}.{name}"), &shape)?;
            ema.model.vars[i]
                .set(&w)
                .map_err(|e| weights_error(&path, e))?;
            if saved.best_epoch.is_some() {
                ema.best
                    .get_or_insert_with(Vec::new)
                    .push(take(format!("ema{k}_best.{name}"), &shape)?);
            }
        }
    }
    adam.t = state.adam_steps;
    Ok(state.best_epoch.map(|_| best))
}

/// Writes the checkpoint of a completed epoch: tensors first (a new file), then the state that
/// names them (atomically), then removes older tensor files. A run killed at any point leaves
/// a state whose tensors exist.
pub(crate) fn write(
    dir: &Path,
    state: &TrainState,
    model: &SasRec,
    adam: &Adam,
    best: Option<&[Tensor]>,
    averages: &[Ema],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let file = format!("epoch-{}.safetensors", state.epoch);
    let path = dir.join(&file);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (i, name) in model.names.iter().enumerate() {
        let shape = model.vars[i].dims().to_vec();
        tensors.insert(format!("param.{name}"), model.vars[i].as_tensor().clone());
        for (prefix, values) in [("adam_m", &adam.m[i]), ("adam_v", &adam.v[i])] {
            let t = Tensor::from_slice(values, shape.as_slice(), &Device::Cpu)
                .map_err(|e| weights_error(&path, e))?;
            tensors.insert(format!("{prefix}.{name}"), t);
        }
        if let Some(best) = best {
            tensors.insert(format!("best.{name}"), best[i].clone());
        }
        for (k, ema) in averages.iter().enumerate() {
            tensors.insert(
                format!("ema{k}.{name}"),
                ema.model.vars[i].as_tensor().clone(),
            );
            if let Some(best) = &ema.best {
                tensors.insert(format!("ema{k}_best.{name}"), best[i].clone());
            }
        }
    }
    let tmp = dir.join(format!("{file}.tmp"));
    candle_core::safetensors::save(&tensors, &tmp).map_err(|e| weights_error(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| write_error(&path, e))?;
    let mut state = state.clone();
    state.tensors = file.clone();
    state.adam_steps = adam.t;
    let text = serde_json::to_string_pretty(&state).map_err(|source| Error::ConfigParse {
        path: dir.join(STATE_FILE),
        source,
    })?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| write_error(&tmp, e))?;
    std::fs::rename(&tmp, dir.join(STATE_FILE)).map_err(|e| write_error(dir, e))?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("epoch-") && name != file {
                std::fs::remove_file(entry.path()).ok();
            }
        }
    }
    Ok(())
}

fn write_error(path: &Path, source: std::io::Error) -> Error {
    Error::Write {
        path: path.to_owned(),
        source,
    }
}

fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::NotFound {
            path: path.to_owned(),
        });
    }
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| weights_error(path, e))
}

/// What a saved model records besides its weights and config.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The external id of each item index: `item_ids[i]` is index `i + 1`.
    pub item_ids: Vec<String>,
    /// The training data.
    pub dataset: DatasetInfo,
    /// Evaluation results and training facts.
    pub metrics: BTreeMap<String, f64>,
}

impl SasRec {
    /// Saves the model to `dir` (created if needed): `model.safetensors` (parameters named as
    /// the reference's `state_dict`) and `manifest.json` (kind `sasrec`, the config as
    /// hyper-parameters, item ids, dataset, metrics). Returns the manifest written.
    pub fn save(&self, dir: &Path, info: &ModelInfo) -> Result<Manifest> {
        if info.item_ids.len() != self.num_items {
            return Err(Error::InvalidArgument {
                name: "item_ids",
                value: format!("{} ids", info.item_ids.len()),
                reason: format!("the model has {} items", self.num_items),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
        let path = dir.join(WEIGHTS_FILE);
        let tensors: HashMap<String, Tensor> = self
            .names
            .iter()
            .zip(&self.vars)
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
        candle_core::safetensors::save(&tensors, &tmp).map_err(|e| weights_error(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| write_error(&path, e))?;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            kind: ModelKind::Sasrec,
            attune_version: env!("CARGO_PKG_VERSION").to_string(),
            hyper_parameters: serde_json::to_value(&self.config).map_err(|source| {
                Error::ConfigParse {
                    path: dir.join(crate::manifest::MANIFEST_FILE),
                    source,
                }
            })?,
            dataset: info.dataset.clone(),
            seed: self.config.seed,
            item_ids: info.item_ids.clone(),
            metrics: info.metrics.clone(),
            files: vec![WEIGHTS_FILE.to_string()],
        };
        manifest.write(dir)?;
        Ok(manifest)
    }

    /// Loads a model saved by [`SasRec::save`]. Refuses a manifest of another kind or layout
    /// version, a config this build cannot use, weights that do not match the config, and (if
    /// `in_catalog` is given) a model recommending items the catalog does not have; the error
    /// says which and why.
    pub fn load(
        dir: &Path,
        in_catalog: Option<&dyn Fn(&str) -> bool>,
    ) -> Result<(SasRec, Manifest)> {
        let manifest = Manifest::read(dir, ModelKind::Sasrec)?;
        let manifest_path = dir.join(crate::manifest::MANIFEST_FILE);
        let config: SasRecConfig = serde_json::from_value(manifest.hyper_parameters.clone())
            .map_err(|source| Error::ConfigParse {
                path: manifest_path.clone(),
                source,
            })?;
        config.validate()?;
        if let Some(in_catalog) = in_catalog
            && let Err(mismatch) = manifest.check_catalog(in_catalog)
        {
            return Err(Error::ManifestMismatch {
                path: dir.to_owned(),
                field: "item_ids",
                manifest: format!("{} items", mismatch.total),
                found: mismatch.to_string(),
            });
        }
        let num_items = manifest.item_ids.len();
        let path: PathBuf = dir.join(WEIGHTS_FILE);
        let mut tensors = read_tensors(&path)?;
        let model = SasRec::new(&config, num_items.max(1))?;
        if num_items == 0 {
            return Err(Error::ManifestMismatch {
                path: dir.to_owned(),
                field: "item_ids",
                manifest: "0 items".into(),
                found: "a model needs at least one item".into(),
            });
        }
        for (spec, var) in param_specs(&config, num_items).iter().zip(&model.vars) {
            let t = tensors
                .remove(&spec.name)
                .ok_or_else(|| Error::MissingTensor {
                    path: path.clone(),
                    name: spec.name.clone(),
                })?;
            if t.dims() != spec.shape.as_slice() {
                return Err(Error::TensorShape {
                    path: path.clone(),
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: t.dims().to_vec(),
                });
            }
            let t = t
                .to_dtype(candle_core::DType::F32)
                .map_err(|e| weights_error(&path, e))?;
            var.set(&t).map_err(|e| weights_error(&path, e))?;
        }
        Ok((model, manifest))
    }
}
