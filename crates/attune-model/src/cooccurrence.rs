//! The co-occurrence model: item-to-item counts within a session window.
//!
//! Training counts, for every pair of items at most `window` positions apart in a training
//! sequence, `a` then `b`: `c(a → b) += w` and `c(b → a) += w · backward_weight`, where `w` is 1, or
//! `1 / distance` with `distance_weighted`. The similarity is the count normalised by the items'
//! popularities, `sim(a → b) = c(a → b) / (n(a) · n(b))^normalization` (`0.5`: the cosine-like
//! square root), and each item keeps its `max_neighbors` best neighbours.
//!
//! Scoring a sequence looks at its last `history` items, the most recent weighing 1 and each one
//! before it `recency_decay` times the next: `score(b) = Σ_k recency_decay^k · sim(s[-1-k] → b)`,
//! plus `popularity_weight` times `b`'s popularity scaled to `[0, 1]` (the training counts,
//! decayed as [`PopularityConfig`] says). With a small `popularity_weight` that last term only
//! breaks ties and ranks the items no recent item co-occurs with, so an empty or unknown history
//! falls back to popularity.
//!
//! Saved as a directory: `manifest.json` and `cooccurrence.bin` (postcard: layout version, item
//! count, config, dataset checksum, popularity, and the neighbour lists in compressed sparse rows).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::manifest::{Manifest, ModelKind};
use crate::popularity::{
    DATA_VERSION, PopularityConfig, check_config, check_data, manifest_config, read_data,
    weighted_counts, write_data,
};
use crate::scorer::SequenceScorer;
use crate::{Error, Result};

/// The data file of a co-occurrence model, inside its directory.
pub const DATA_FILE: &str = "cooccurrence.bin";

/// Hyper-parameters of [`Cooccurrence`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CooccurrenceConfig {
    /// Pairs at most this many positions apart count.
    pub window: usize,
    /// Weigh a pair by `1 / distance` instead of 1.
    pub distance_weighted: bool,
    /// Weight of the reverse direction (`b` then `a` counted for `a → b`), relative to 1.
    pub backward_weight: f32,
    /// Exponent of the popularity normalisation (0: raw counts; 0.5: square root).
    pub normalization: f32,
    /// Neighbours kept per item.
    pub max_neighbors: usize,
    /// How many of the sequence's last items score the candidates.
    pub history: usize,
    /// Each older history item weighs this much times the next one.
    pub recency_decay: f32,
    /// Weight of the popularity fallback (popularity scaled to `[0, 1]`).
    pub popularity_weight: f32,
    /// The popularity of the fallback.
    pub popularity: PopularityConfig,
}

impl Default for CooccurrenceConfig {
    fn default() -> Self {
        // Chosen on the validation split of amazon-games and amazon-beauty (sampled protocol):
        // wide windows and long histories helped most (valid HR@10 0.59 → 0.64 on games).
        CooccurrenceConfig {
            window: 10,
            distance_weighted: true,
            backward_weight: 0.25,
            normalization: 0.3,
            max_neighbors: 500,
            history: 10,
            recency_decay: 0.5,
            popularity_weight: 1e-3,
            popularity: PopularityConfig::default(),
        }
    }
}

impl CooccurrenceConfig {
    /// Checks the ranges: window, neighbours and history at least 1, weights finite and `>= 0`.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, value: String, reason: &str| Error::InvalidArgument {
            name,
            value,
            reason: reason.to_owned(),
        };
        for (name, v) in [
            ("window", self.window),
            ("max_neighbors", self.max_neighbors),
            ("history", self.history),
        ] {
            if v == 0 {
                return Err(bad(name, "0".to_owned(), "must be at least 1"));
            }
        }
        for (name, v) in [
            ("backward_weight", self.backward_weight),
            ("normalization", self.normalization),
            ("recency_decay", self.recency_decay),
            ("popularity_weight", self.popularity_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(name, v.to_string(), "must be a finite number >= 0"));
            }
        }
        self.popularity.validate()
    }
}

/// Item-to-item co-occurrence with a popularity fallback.
#[derive(Debug, Clone, PartialEq)]
pub struct Cooccurrence {
    manifest: Manifest,
    config: CooccurrenceConfig,
    /// Popularity scaled to `[0, 1]`, times `popularity_weight`; index 0 is 0.
    prior: Vec<f32>,
    /// Row `a` is `neighbors[offsets[a]..offsets[a + 1]]` (ascending ids), `len = num_items + 2`.
    offsets: Vec<u32>,
    neighbors: Vec<u32>,
    weights: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct CooccurrenceData {
    version: u32,
    num_items: u32,
    config: CooccurrenceConfig,
    checksum: String,
    prior: Vec<f32>,
    offsets: Vec<u32>,
    neighbors: Vec<u32>,
    weights: Vec<f32>,
}

impl Cooccurrence {
    /// Counts the pairs of `data` (all of it: pass the training part of a split).
    pub fn train(data: &Dataset, config: &CooccurrenceConfig) -> Result<Cooccurrence> {
        config.validate()?;
        let n = data.num_items;
        let in_range = |i: u32| i >= 1 && i as usize <= n;
        let mut rows: Vec<HashMap<u32, f32>> = vec![HashMap::new(); n + 1];
        let mut count = vec![0u32; n + 1];
        for seq in &data.sequences {
            for (i, &a) in seq.iter().enumerate() {
                if !in_range(a) {
                    continue;
                }
                count[a as usize] += 1;
                for d in 1..=config.window {
                    let Some(&b) = seq.get(i + d) else { break };
                    if b == a || !in_range(b) {
                        continue;
                    }
                    let w = if config.distance_weighted {
                        1.0 / d as f32
                    } else {
                        1.0
                    };
                    *rows[a as usize].entry(b).or_insert(0.0) += w;
                    if config.backward_weight > 0.0 {
                        *rows[b as usize].entry(a).or_insert(0.0) += w * config.backward_weight;
                    }
                }
            }
        }

        let mut offsets = Vec::with_capacity(n + 2);
        let mut neighbors = Vec::new();
        let mut weights = Vec::new();
        offsets.push(0);
        for (a, row) in rows.into_iter().enumerate() {
            let na = count[a].max(1) as f32;
            let mut scored: Vec<(u32, f32)> = row
                .into_iter()
                .map(|(b, c)| {
                    let nb = count[b as usize].max(1) as f32;
                    (b, c / (na * nb).powf(config.normalization))
                })
                .filter(|(_, s)| s.is_finite() && *s > 0.0)
                .collect();
            if scored.len() > config.max_neighbors {
                scored.select_nth_unstable_by(config.max_neighbors - 1, |x, y| {
                    y.1.total_cmp(&x.1).then(x.0.cmp(&y.0))
                });
                scored.truncate(config.max_neighbors);
            }
            scored.sort_unstable_by_key(|&(b, _)| b);
            for (b, s) in scored {
                neighbors.push(b);
                weights.push(s);
            }
            offsets.push(neighbors.len() as u32);
        }

        let pop = weighted_counts(data, &config.popularity);
        let max = pop.iter().copied().fold(0.0f64, f64::max);
        let prior = pop
            .iter()
            .map(|&p| {
                if max > 0.0 {
                    (f64::from(config.popularity_weight) * p / max) as f32
                } else {
                    0.0
                }
            })
            .collect();

        let hyper = serde_json::to_value(config).map_err(|e| Error::InvalidArgument {
            name: "config",
            value: format!("{config:?}"),
            reason: e.to_string(),
        })?;
        let mut manifest = data.manifest(ModelKind::Cooccurrence, hyper, 0);
        manifest.files = vec![DATA_FILE.to_owned()];
        Ok(Cooccurrence {
            manifest,
            config: config.clone(),
            prior,
            offsets,
            neighbors,
            weights,
        })
    }

    /// The model's manifest (item ids, training data, metrics).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The metrics recorded in the manifest, to add evaluation results before saving.
    pub fn metrics_mut(&mut self) -> &mut BTreeMap<String, f64> {
        &mut self.manifest.metrics
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &CooccurrenceConfig {
        &self.config
    }

    /// The neighbours of `item` with their similarities, ascending by id (empty for an unknown
    /// item).
    pub fn neighbors(&self, item: u32) -> impl Iterator<Item = (u32, f32)> + '_ {
        let i = item as usize;
        let range = if i >= 1 && i + 1 < self.offsets.len() {
            self.offsets[i] as usize..self.offsets[i + 1] as usize
        } else {
            0..0
        };
        self.neighbors[range.clone()]
            .iter()
            .copied()
            .zip(self.weights[range].iter().copied())
    }

    /// The number of stored item-to-item pairs.
    pub fn pairs(&self) -> usize {
        self.neighbors.len()
    }

    /// The recent items of `seq` with their recency weights, most recent first.
    fn history<'a>(&'a self, seq: &'a [u32]) -> impl Iterator<Item = (u32, f32)> + 'a {
        seq.iter()
            .rev()
            .take(self.config.history)
            .scan(1.0f32, |w, &item| {
                let this = *w;
                *w *= self.config.recency_decay;
                Some((item, this))
            })
    }

    /// Writes `dir/manifest.json` and `dir/cooccurrence.bin`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let data = CooccurrenceData {
            version: DATA_VERSION,
            num_items: self.num_items() as u32,
            config: self.config.clone(),
            checksum: self.manifest.dataset.checksum.clone(),
            prior: self.prior.clone(),
            offsets: self.offsets.clone(),
            neighbors: self.neighbors.clone(),
            weights: self.weights.clone(),
        };
        write_data(dir, DATA_FILE, &data)?;
        self.manifest.write(dir)
    }

    /// Reads a model saved by [`Cooccurrence::save`], refusing a manifest of another kind or one
    /// that disagrees with the data file.
    pub fn load(dir: &Path) -> Result<Cooccurrence> {
        let manifest = Manifest::read(dir, ModelKind::Cooccurrence)?;
        let config: CooccurrenceConfig = manifest_config(dir, &manifest)?;
        let data: CooccurrenceData = read_data(dir, DATA_FILE)?;
        check_data(
            dir,
            &manifest,
            data.version,
            data.num_items,
            &data.checksum,
            data.prior.len(),
        )?;
        check_config(dir, DATA_FILE, &config, &data.config)?;
        let n = data.num_items as usize;
        let rows_ok = data.offsets.len() == n + 2
            && data.offsets.windows(2).all(|w| w[0] <= w[1])
            && data.offsets.last().copied() == Some(data.neighbors.len() as u32)
            && data.neighbors.len() == data.weights.len()
            && data.neighbors.iter().all(|&b| b >= 1 && b as usize <= n)
            && data
                .weights
                .iter()
                .chain(&data.prior)
                .all(|w| w.is_finite());
        if !rows_ok {
            return Err(Error::BadData {
                path: dir.join(DATA_FILE),
                reason: "the neighbour lists are inconsistent".to_owned(),
            });
        }
        Ok(Cooccurrence {
            manifest,
            config,
            prior: data.prior,
            offsets: data.offsets,
            neighbors: data.neighbors,
            weights: data.weights,
        })
    }
}

impl SequenceScorer for Cooccurrence {
    fn name(&self) -> &str {
        "cooccurrence"
    }

    fn num_items(&self) -> usize {
        self.prior.len() - 1
    }

    fn score_all(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        Ok(sequences
            .iter()
            .map(|seq| {
                let mut scores = self.prior.clone();
                for (item, r) in self.history(seq) {
                    for (b, s) in self.neighbors(item) {
                        scores[b as usize] += r * s;
                    }
                }
                scores
            })
            .collect())
    }

    fn score_candidates(
        &self,
        sequences: &[&[u32]],
        candidates: &[&[u32]],
    ) -> Result<Vec<Vec<f32>>> {
        Ok(sequences
            .iter()
            .zip(candidates)
            .map(|(seq, cands)| {
                let history: Vec<(u32, f32)> = self.history(seq).collect();
                cands
                    .iter()
                    .map(|&c| {
                        let Some(&prior) = self.prior.get(c as usize).filter(|_| c != 0) else {
                            return f32::MIN;
                        };
                        let mut score = prior;
                        for &(item, r) in &history {
                            let i = item as usize;
                            if i == 0 || i + 1 >= self.offsets.len() {
                                continue;
                            }
                            let lo = self.offsets[i] as usize;
                            let hi = self.offsets[i + 1] as usize;
                            if let Ok(k) = self.neighbors[lo..hi].binary_search(&c) {
                                score += r * self.weights[lo + k];
                            }
                        }
                        score
                    })
                    .collect()
            })
            .collect())
    }
}
