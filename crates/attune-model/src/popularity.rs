//! The popularity model: item counts with exponential time decay.
//!
//! Every interaction of the training data adds its weight to its item's score; the score does not
//! depend on the sequence being scored (the "most popular" baseline of the papers). The weight is
//! 1 without decay. With a half-life it is `0.5^(age / half_life)`, where the age is, when the
//! data has timestamps and `half_life_secs` is set, the time from the interaction to the latest
//! one in the data; otherwise, with `half_life_positions`, the number of interactions that follow
//! it in its own sequence (so each user's recent items count most: a proxy for recency when the
//! data has only the order, as the Amazon sets).
//!
//! Train it on the training part of a leave-one-out split ([`crate::data::split::training`]), so
//! the held-out items are not counted.
//!
//! Saved as a directory: `manifest.json` ([`crate::manifest::Manifest`]) and `popularity.bin`
//! (postcard: layout version, item count, config, dataset checksum, scores). Loading refuses a
//! data file that disagrees with its manifest.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::manifest::{Manifest, ModelKind};
use crate::scorer::SequenceScorer;
use crate::{Error, Result};

/// The data file of a popularity model, inside its directory.
pub const DATA_FILE: &str = "popularity.bin";

/// The layout of the baselines' data files this build writes and reads.
pub(crate) const DATA_VERSION: u32 = 1;

/// Hyper-parameters of [`Popularity`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PopularityConfig {
    /// Half-life in positions from the end of each sequence (`None`: no positional decay).
    pub half_life_positions: Option<f64>,
    /// Half-life in seconds before the latest interaction, used when the data has timestamps
    /// (`None`: no time decay).
    pub half_life_secs: Option<f64>,
}

impl PopularityConfig {
    /// Checks that half-lives are finite and positive.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("half_life_positions", self.half_life_positions),
            ("half_life_secs", self.half_life_secs),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(Error::InvalidArgument {
                    name,
                    value: v.to_string(),
                    reason: "must be a finite number > 0".to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// Item popularity with optional decay.
#[derive(Debug, Clone, PartialEq)]
pub struct Popularity {
    manifest: Manifest,
    config: PopularityConfig,
    scores: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct PopularityData {
    version: u32,
    num_items: u32,
    config: PopularityConfig,
    checksum: String,
    scores: Vec<f32>,
}

/// The weighted item counts of `data` (index 0 unused), shared with the co-occurrence model.
pub(crate) fn weighted_counts(data: &Dataset, config: &PopularityConfig) -> Vec<f64> {
    let mut counts = vec![0.0f64; data.num_items + 1];
    let latest = data
        .timestamps
        .as_ref()
        .and_then(|ts| ts.iter().flatten().copied().max());
    for (u, seq) in data.sequences.iter().enumerate() {
        let times = data.timestamps.as_ref().and_then(|ts| ts.get(u));
        for (pos, &item) in seq.iter().enumerate() {
            let weight = match (config.half_life_secs, times, latest) {
                (Some(h), Some(times), Some(latest)) => {
                    let age = times
                        .get(pos)
                        .map_or(0.0, |&t| (latest - t).max(0) as f64 / 1000.0);
                    0.5f64.powf(age / h)
                }
                _ => match config.half_life_positions {
                    Some(h) => 0.5f64.powf((seq.len() - 1 - pos) as f64 / h),
                    None => 1.0,
                },
            };
            if let Some(c) = counts.get_mut(item as usize) {
                *c += weight;
            }
        }
    }
    counts
}

impl Popularity {
    /// Counts the items of `data` (all of it: pass the training part of a split).
    pub fn train(data: &Dataset, config: &PopularityConfig) -> Result<Popularity> {
        config.validate()?;
        let counts = weighted_counts(data, config);
        let hyper = serde_json::to_value(config).map_err(|e| Error::InvalidArgument {
            name: "config",
            value: format!("{config:?}"),
            reason: e.to_string(),
        })?;
        let mut manifest = data.manifest(ModelKind::Popularity, hyper, 0);
        manifest.files = vec![DATA_FILE.to_owned()];
        Ok(Popularity {
            manifest,
            config: config.clone(),
            scores: counts.iter().map(|&c| c as f32).collect(),
        })
    }

    /// The model's manifest (item ids, training data, metrics).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The metrics recorded in the manifest, to add evaluation results before saving.
    pub fn metrics_mut(&mut self) -> &mut std::collections::BTreeMap<String, f64> {
        &mut self.manifest.metrics
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &PopularityConfig {
        &self.config
    }

    /// The score of every index `0..=num_items` (index 0 is 0).
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// Writes `dir/manifest.json` and `dir/popularity.bin`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let data = PopularityData {
            version: DATA_VERSION,
            num_items: self.num_items() as u32,
            config: self.config.clone(),
            checksum: self.manifest.dataset.checksum.clone(),
            scores: self.scores.clone(),
        };
        write_data(dir, DATA_FILE, &data)?;
        self.manifest.write(dir)
    }

    /// Reads a model saved by [`Popularity::save`], refusing a manifest of another kind or one
    /// that disagrees with the data file.
    pub fn load(dir: &Path) -> Result<Popularity> {
        let manifest = Manifest::read(dir, ModelKind::Popularity)?;
        let config: PopularityConfig = manifest_config(dir, &manifest)?;
        let data: PopularityData = read_data(dir, DATA_FILE)?;
        check_data(
            dir,
            &manifest,
            data.version,
            data.num_items,
            &data.checksum,
            data.scores.len(),
        )?;
        check_config(dir, DATA_FILE, &config, &data.config)?;
        if data.scores.iter().any(|s| !s.is_finite()) {
            return Err(Error::BadData {
                path: dir.join(DATA_FILE),
                reason: "a score is not finite".to_owned(),
            });
        }
        Ok(Popularity {
            manifest,
            config,
            scores: data.scores,
        })
    }
}

impl SequenceScorer for Popularity {
    fn name(&self) -> &str {
        "popularity"
    }

    fn num_items(&self) -> usize {
        self.scores.len() - 1
    }

    fn score_all(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        Ok(sequences.iter().map(|_| self.scores.clone()).collect())
    }

    fn score_candidates(
        &self,
        sequences: &[&[u32]],
        candidates: &[&[u32]],
    ) -> Result<Vec<Vec<f32>>> {
        Ok(candidates
            .iter()
            .take(sequences.len())
            .map(|cands| {
                cands
                    .iter()
                    .map(|&c| self.scores.get(c as usize).copied().unwrap_or(f32::MIN))
                    .collect()
            })
            .collect())
    }
}

/// The model's config from the manifest's hyper-parameters.
pub(crate) fn manifest_config<T: DeserializeOwned>(dir: &Path, manifest: &Manifest) -> Result<T> {
    serde_json::from_value(manifest.hyper_parameters.clone()).map_err(|e| Error::ManifestMismatch {
        path: dir.to_owned(),
        field: "hyper_parameters",
        manifest: manifest.hyper_parameters.to_string(),
        found: format!("they are not this model's config: {e}"),
    })
}

/// Checks a baseline's data file against its manifest: layout version, item count, checksum of
/// the training data, and the length of the per-item table (`num_items + 1`).
/// Refuses a data file trained with other hyper-parameters than its manifest names.
pub(crate) fn check_config<C: PartialEq + std::fmt::Debug>(
    dir: &Path,
    data_file: &str,
    manifest: &C,
    data: &C,
) -> Result<()> {
    if manifest == data {
        return Ok(());
    }
    Err(Error::ManifestMismatch {
        path: dir.to_owned(),
        field: "hyper_parameters",
        manifest: format!("{manifest:?}"),
        found: format!("{data_file} was trained with {data:?}"),
    })
}

pub(crate) fn check_data(
    dir: &Path,
    manifest: &Manifest,
    version: u32,
    num_items: u32,
    checksum: &str,
    table_len: usize,
) -> Result<()> {
    if version != DATA_VERSION {
        return Err(Error::UnsupportedConfig {
            path: dir.to_owned(),
            field: "data file version",
            value: format!("{version} (this build reads {DATA_VERSION})"),
        });
    }
    if num_items as usize != manifest.item_ids.len() || table_len != num_items as usize + 1 {
        return Err(Error::ManifestMismatch {
            path: dir.to_owned(),
            field: "item_ids",
            manifest: format!("{} items", manifest.item_ids.len()),
            found: format!("the data file has {num_items} items (and {table_len} entries)"),
        });
    }
    if checksum != manifest.dataset.checksum {
        return Err(Error::ManifestMismatch {
            path: dir.to_owned(),
            field: "dataset.checksum",
            manifest: manifest.dataset.checksum.clone(),
            found: format!("the data file was trained on {checksum}"),
        });
    }
    Ok(())
}

/// Writes `dir/name` as postcard, atomically (a temporary file renamed over it).
pub(crate) fn write_data<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(name);
    let bytes = postcard::to_stdvec(value).map_err(|source| Error::Encoding {
        path: path.clone(),
        source,
    })?;
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|source| Error::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| Error::Write { path, source })
}

/// Reads a postcard file `dir/name`.
pub(crate) fn read_data<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<T> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    postcard::from_bytes(&bytes).map_err(|source| Error::Encoding { path, source })
}
