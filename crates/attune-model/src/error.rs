//! The crate's error type.

use std::fmt;
use std::path::{Path, PathBuf};

/// Result of this crate's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong loading or running a model. Every variant about a file names it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file or directory does not exist.
    #[error("model file {} not found (scripts/fetch-model downloads the model)", path.display())]
    NotFound {
        /// The missing file or directory.
        path: PathBuf,
    },
    /// A model file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model config is not valid JSON or lacks a field.
    #[error("{} is not a valid model config: {source}", path.display())]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The model config asks for something this implementation does not do.
    #[error("{}: unsupported {field} = {value}", path.display())]
    UnsupportedConfig {
        /// The config file.
        path: PathBuf,
        /// The offending field.
        field: &'static str,
        /// Its value, as written.
        value: String,
    },
    /// The vocabulary lacks a token the tokenizer needs.
    #[error("vocabulary {} lacks the token {token}", path.display())]
    MissingToken {
        /// The vocabulary file.
        path: PathBuf,
        /// The missing token, e.g. `[UNK]`.
        token: &'static str,
    },
    /// The weights file is not a readable safetensors file.
    #[error("{}: cannot load the weights: {source}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What the tensor backend reported.
        #[source]
        source: BackendError,
    },
    /// The weights file lacks a tensor the model needs.
    #[error("{}: tensor {name} is missing", path.display())]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name (without any `bert.` prefix).
        name: String,
    },
    /// A tensor in the weights file does not have the shape the config implies.
    #[error("{}: tensor {name} has shape {found:?}, expected {expected:?}", path.display())]
    TensorShape {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The forward pass failed (a bug or resource exhaustion, not bad input).
    #[error("inference failed: {0}")]
    Inference(#[source] BackendError),
    /// A line of a data file does not have the expected shape.
    #[error("{}, line {line}: {reason}: `{found}`", path.display())]
    BadLine {
        /// The data file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What was expected there.
        reason: String,
        /// The line as found (cut to 80 characters).
        found: String,
    },
    /// A data file parses but cannot be used as a whole (no sequences, no items, …).
    #[error("{}: {reason}", path.display())]
    BadData {
        /// The data file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A model data file could not be encoded or decoded.
    #[error("{}: not a valid model data file: {source}", path.display())]
    Encoding {
        /// The model data file.
        path: PathBuf,
        /// The codec error.
        #[source]
        source: postcard::Error,
    },
    /// A model's manifest disagrees with its data file (or with the data it is used on).
    #[error("{}: the manifest says {field} = {manifest}, but {found}", path.display())]
    ManifestMismatch {
        /// The model directory.
        path: PathBuf,
        /// The disagreeing field.
        field: &'static str,
        /// The manifest's value.
        manifest: String,
        /// What was found instead, as a phrase (`the data file has 12 items`).
        found: String,
    },
    /// An argument (hyper-parameter, protocol option) is out of range.
    #[error("{name} = {value}: {reason}")]
    InvalidArgument {
        /// The argument's name.
        name: &'static str,
        /// Its value, as given.
        value: String,
        /// Why it cannot be used.
        reason: String,
    },
}

/// An error of the tensor backend, kept opaque so that no candle type is part of the public API.
#[derive(Debug)]
pub struct BackendError(candle_core::Error);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl BackendError {
    /// Wraps a candle error (crate-internal: candle stays out of the public API).
    pub(crate) fn new(e: candle_core::Error) -> Self {
        Self(e)
    }
}

/// Reads a text file, naming it in the error.
pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| io_error(path, source))
}

/// An I/O error on `path`: [`Error::NotFound`] when it is missing, [`Error::Read`] otherwise.
pub(crate) fn io_error(path: &Path, source: std::io::Error) -> Error {
    match source.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_owned(),
        },
        _ => Error::Read {
            path: path.to_owned(),
            source,
        },
    }
}
