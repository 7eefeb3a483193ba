//! The JSON manifest written beside every trained model (`manifest.json` next to the weights):
//! what the model is, how it was trained, on which data, which item each index stands for, and
//! how well it did. Loading checks it before any weight is read.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::io_error;
use crate::{Error, Result};

/// The manifest layout this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// The file name of the manifest inside a model directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The kinds of trained model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// The SASRec transformer.
    Sasrec,
    /// Item popularity with time decay.
    Popularity,
    /// Item-to-item co-occurrence within a session window.
    Cooccurrence,
}

impl ModelKind {
    /// The name used on the command line and in files.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Sasrec => "sasrec",
            ModelKind::Popularity => "popularity",
            ModelKind::Cooccurrence => "cooccurrence",
        }
    }
}

/// The data a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The dataset's name (`amazon-games`, `diginetica`, an event log's path, …).
    pub name: String,
    /// SHA-256 (hex) of the dataset's files, in a fixed order.
    pub checksum: String,
    /// Training sequences.
    pub sequences: usize,
    /// Training interactions.
    pub interactions: usize,
}

/// Everything about a trained model except its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest layout ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// What model this is.
    pub kind: ModelKind,
    /// The Attune version that trained it.
    pub attune_version: String,
    /// Hyper-parameters as the model's own config serializes them.
    pub hyper_parameters: serde_json::Value,
    /// The training data.
    pub dataset: DatasetInfo,
    /// The seed of the training run.
    pub seed: u64,
    /// The external id of each item index: `item_ids[i]` is index `i + 1` (index 0 is padding).
    pub item_ids: Vec<String>,
    /// Evaluation results (`valid.ndcg@10`, `test.hr@10`, …) and training facts (`epochs`, …).
    pub metrics: BTreeMap<String, f64>,
    /// Weight files in the model directory, relative to it.
    pub files: Vec<String>,
}

/// How a model's items compare with a catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogMismatch {
    /// Items of the model the catalog does not have (up to 5, for the message).
    pub missing_examples: Vec<String>,
    /// How many of the model's items the catalog lacks.
    pub missing: usize,
    /// Items in the model.
    pub total: usize,
}

impl Manifest {
    /// Reads `dir/manifest.json`, refusing another layout version or kind than expected.
    pub fn read(dir: &Path, expected: ModelKind) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = crate::error::read_to_string(&path)?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|source| Error::ConfigParse {
                path: path.clone(),
                source,
            })?;
        if manifest.version != MANIFEST_VERSION {
            return Err(Error::UnsupportedConfig {
                path,
                field: "version",
                value: format!("{} (this build reads {MANIFEST_VERSION})", manifest.version),
            });
        }
        if manifest.kind != expected {
            return Err(Error::UnsupportedConfig {
                path,
                field: "kind",
                value: format!(
                    "{} (expected {})",
                    manifest.kind.as_str(),
                    expected.as_str()
                ),
            });
        }
        Ok(manifest)
    }

    /// Writes `dir/manifest.json` (creating `dir`), atomically: a reader never sees half a file.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let path = dir.join(MANIFEST_FILE);
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::ConfigParse {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))
    }

    /// Checks the model's items against a catalog: every item the model can recommend must be
    /// known to `in_catalog`. `Err` says how many are missing and names a few.
    pub fn check_catalog(
        &self,
        in_catalog: impl Fn(&str) -> bool,
    ) -> std::result::Result<(), CatalogMismatch> {
        let mut missing = 0;
        let mut missing_examples = Vec::new();
        for id in &self.item_ids {
            if !in_catalog(id) {
                missing += 1;
                if missing_examples.len() < 5 {
                    missing_examples.push(id.clone());
                }
            }
        }
        if missing == 0 {
            Ok(())
        } else {
            Err(CatalogMismatch {
                missing_examples,
                missing,
                total: self.item_ids.len(),
            })
        }
    }
}

impl std::fmt::Display for CatalogMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of the model's {} items are not in the catalog (e.g. {})",
            self.missing,
            self.total,
            self.missing_examples.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            kind: ModelKind::Popularity,
            attune_version: "0.1.0".into(),
            hyper_parameters: serde_json::json!({"half_life_days": 7}),
            dataset: DatasetInfo {
                name: "tiny".into(),
                checksum: "00".into(),
                sequences: 1,
                interactions: 2,
            },
            seed: 7,
            item_ids: vec!["a".into(), "b".into()],
            metrics: BTreeMap::from([("test.hr@10".to_string(), 0.5)]),
            files: vec![],
        }
    }

    #[test]
    fn round_trips_and_refuses_another_kind_or_version() {
        let dir = std::env::temp_dir().join(format!("attune-manifest-{}", std::process::id()));
        let m = sample();
        m.write(&dir).expect("write");
        assert_eq!(
            Manifest::read(&dir, ModelKind::Popularity).expect("read"),
            m
        );
        let err = Manifest::read(&dir, ModelKind::Sasrec).expect_err("kind");
        assert!(err.to_string().contains("kind"), "{err}");
        let mut future = m.clone();
        future.version = MANIFEST_VERSION + 1;
        future.write(&dir).expect("write");
        let err = Manifest::read(&dir, ModelKind::Popularity).expect_err("version");
        assert!(err.to_string().contains("version"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn catalog_check_names_missing_items() {
        let m = sample();
        assert!(m.check_catalog(|id| id == "a" || id == "b").is_ok());
        let err = m.check_catalog(|id| id == "a").expect_err("b is missing");
        assert_eq!(err.missing, 1);
        assert_eq!(err.missing_examples, vec!["b".to_string()]);
        assert!(err.to_string().contains("1 of the model's 2 items"));
    }
}
