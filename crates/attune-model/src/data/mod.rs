//! Dataset loaders: the public benchmark formats in `shared/data` and Attune's own event log,
//! all turned into sequences of dense item indices.
//!
//! Every loader returns a [`Dataset`]: one sequence per user or session (oldest item first) of
//! item indices `1..=num_items` (0 is padding and never appears), the external id of each index,
//! and a SHA-256 of the source files so a trained model can name exactly what it saw.
//!
//! - [`amazon`]: `amazon-games` (`user item` per line) and `amazon-beauty` (`user item item …`).
//!   Their ids are already dense `1..=n`, so they are kept as they are: index `i` *is* dataset
//!   item `i`, and the numbers match the published setups (SASRec, S3-Rec).
//! - [`beauty`]: the Beauty item features (ASIN, brand, category path, S3-Rec attribute ids).
//! - [`diginetica`]: the SR-GNN split: training sessions and the test prefixes with their labels
//!   (ids `1..=43,097`, kept as they are).
//! - [`events`]: Attune's event log (NDJSON events), item events grouped by session or user in
//!   time order; external item ids get indices in order of first appearance.
//! - [`split`]: the leave-one-out split of the Amazon protocols.
//!
//! Errors name the file and, for a bad line, its number.
//!
//! ```no_run
//! use attune_model::data::{self, Source};
//! use std::path::Path;
//!
//! let games = data::load(&"amazon-games".parse::<Source>()?, Path::new("../shared/data"))?;
//! assert_eq!(games.sequences.len(), 31_013);
//! # Ok::<(), attune_model::Error>(())
//! ```

pub mod amazon;
pub mod beauty;
pub mod diginetica;
pub mod events;
pub mod split;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::manifest::{DatasetInfo, MANIFEST_VERSION, Manifest, ModelKind};
use crate::{Error, Result};

/// Sequences of dense item indices, with what is needed to map them back and to identify them.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The dataset's name (`amazon-games`, `diginetica`, `events:log.ndjson`).
    pub name: String,
    /// One sequence per user or session, oldest first; items are `1..=num_items`.
    pub sequences: Vec<Vec<u32>>,
    /// When the data has them, each interaction's time (epoch milliseconds), parallel to
    /// `sequences`.
    pub timestamps: Option<Vec<Vec<i64>>>,
    /// The number of items; indices are `1..=num_items`.
    pub num_items: usize,
    /// The external id of each index: `item_ids[i]` is index `i + 1`.
    pub item_ids: Vec<String>,
    /// SHA-256 (hex) of the source files, in a fixed order.
    pub checksum: String,
    /// Held-out cases that come with the data (DIGINETICA's test prefixes); empty for data whose
    /// protocol derives them (leave-one-out).
    pub test: Vec<Prefix>,
}

/// One next-item case: predict `target` after `input`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    /// The items so far, oldest first.
    pub input: Vec<u32>,
    /// The next item.
    pub target: u32,
}

impl Dataset {
    /// The number of interactions (items over all sequences).
    pub fn interactions(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }

    /// What a manifest records about the data a model was trained on.
    pub fn info(&self) -> DatasetInfo {
        DatasetInfo {
            name: self.name.clone(),
            checksum: self.checksum.clone(),
            sequences: self.sequences.len(),
            interactions: self.interactions(),
        }
    }

    /// A manifest for a model of `kind` trained on this data, with no metrics and no files yet.
    pub fn manifest(
        &self,
        kind: ModelKind,
        hyper_parameters: serde_json::Value,
        seed: u64,
    ) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            kind,
            attune_version: env!("CARGO_PKG_VERSION").to_owned(),
            hyper_parameters,
            dataset: self.info(),
            seed,
            item_ids: self.item_ids.clone(),
            metrics: BTreeMap::new(),
            files: Vec::new(),
        }
    }

    /// The first `n` sequences (and the first `n` test prefixes), keeping every item index: a
    /// slice for tests that is scored against the same item space.
    pub fn head(&self, n: usize) -> Dataset {
        Dataset {
            name: self.name.clone(),
            sequences: self.sequences.iter().take(n).cloned().collect(),
            timestamps: self
                .timestamps
                .as_ref()
                .map(|t| t.iter().take(n).cloned().collect()),
            num_items: self.num_items,
            item_ids: self.item_ids.clone(),
            checksum: self.checksum.clone(),
            test: self.test.iter().take(n).cloned().collect(),
        }
    }

    /// The usual session-based training samples: each sequence `s` gives `(s[..i], s[i])` for
    /// every `i` from 1 (so a session of `n` items gives `n - 1` samples).
    pub fn expanded_prefixes(&self) -> Vec<Prefix> {
        self.sequences
            .iter()
            .flat_map(|s| {
                (1..s.len()).map(move |i| Prefix {
                    input: s[..i].to_vec(),
                    target: s[i],
                })
            })
            .collect()
    }
}

/// The datasets `attune train` and `attune eval` know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `amazon-games/sequences.txt` (SASRec's Video Games).
    AmazonGames,
    /// `amazon-beauty/sequences.txt` (S3-Rec's Beauty).
    AmazonBeauty,
    /// `diginetica/train_sessions.txt` and `test.tsv` (the SR-GNN split).
    Diginetica,
    /// An NDJSON event log.
    Events {
        /// The log file.
        path: PathBuf,
        /// How events are grouped into sequences.
        group: events::Grouping,
    },
}

impl Source {
    /// Whether the data is evaluated by leave-one-out (the Amazon sets and event logs) rather than
    /// with its own test cases (DIGINETICA).
    pub fn is_leave_one_out(&self) -> bool {
        !matches!(self, Source::Diginetica)
    }

    /// The number of sampled negatives of the published setup: 100 for amazon-games (the SASRec
    /// paper), 99 for amazon-beauty (S3-Rec), 100 otherwise.
    pub fn sampled_negatives(&self) -> usize {
        match self {
            Source::AmazonBeauty => 99,
            _ => 100,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::AmazonGames => f.write_str("amazon-games"),
            Source::AmazonBeauty => f.write_str("amazon-beauty"),
            Source::Diginetica => f.write_str("diginetica"),
            Source::Events { path, .. } => write!(f, "events:{}", path.display()),
        }
    }
}

impl FromStr for Source {
    type Err = Error;

    /// `amazon-games`, `amazon-beauty`, `diginetica` or `events:<path>` (grouped by session).
    fn from_str(s: &str) -> Result<Source> {
        match s {
            "amazon-games" => Ok(Source::AmazonGames),
            "amazon-beauty" => Ok(Source::AmazonBeauty),
            "diginetica" => Ok(Source::Diginetica),
            _ => match s.strip_prefix("events:") {
                Some(path) if !path.is_empty() => Ok(Source::Events {
                    path: PathBuf::from(path),
                    group: events::Grouping::Session,
                }),
                _ => Err(Error::InvalidArgument {
                    name: "dataset",
                    value: s.to_owned(),
                    reason: "expected amazon-games, amazon-beauty, diginetica or events:<path>"
                        .to_owned(),
                }),
            },
        }
    }
}

/// Loads a dataset; the public sets are read from their folder under `data_dir` (the
/// `shared/data` directory), an event log from its own path.
pub fn load(source: &Source, data_dir: &Path) -> Result<Dataset> {
    match source {
        Source::AmazonGames => amazon::load_games(&data_dir.join("amazon-games")),
        Source::AmazonBeauty => amazon::load_beauty(&data_dir.join("amazon-beauty")),
        Source::Diginetica => diginetica::load(&data_dir.join("diginetica")),
        Source::Events { path, group } => events::load(path, *group),
    }
}

/// SHA-256 over several files in the order they are added (each file's name and length go in
/// before its bytes, so files cannot run into each other).
#[derive(Default)]
pub(crate) struct Checksum(Sha256);

impl Checksum {
    pub(crate) fn add(&mut self, name: &str, bytes: &[u8]) {
        self.0.update(name.as_bytes());
        self.0.update([0u8]);
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    pub(crate) fn hex(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Reads a whole data file as UTF-8 text.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| Error::BadData {
        path: path.to_owned(),
        reason: format!("not UTF-8 text (at byte {})", e.utf8_error().valid_up_to()),
    })
}

/// A [`Error::BadLine`] for line `line` (1-based) of `path`.
pub(crate) fn bad_line(path: &Path, line: usize, reason: impl Into<String>, text: &str) -> Error {
    let found: String = if text.chars().count() > 80 {
        text.chars().take(77).chain("...".chars()).collect()
    } else {
        text.to_owned()
    };
    Error::BadLine {
        path: path.to_owned(),
        line,
        reason: reason.into(),
        found,
    }
}

/// Parses a dataset id: a whole number from 1 to `u32::MAX - 1`.
pub(crate) fn parse_id(token: &str, path: &Path, line: usize, text: &str) -> Result<u32> {
    match token.parse::<u32>() {
        Ok(id) if (1..u32::MAX).contains(&id) => Ok(id),
        _ => Err(bad_line(
            path,
            line,
            format!("`{token}` is not an id (a whole number from 1)"),
            text,
        )),
    }
}

/// `"1"`, `"2"`, … `"n"`: the external ids of a dataset whose ids are already dense.
pub(crate) fn dense_ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| i.to_string()).collect()
}
