//! Errors a user can act on. The CLI maps any of them to a non-zero exit; they convert into `anyhow::Error`.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The pairs file is missing or malformed; the message names the file and, for a bad record, the line.
    #[error(transparent)]
    Data(#[from] mismatch_data::DataError),
    /// The labels database could not be opened, read or written.
    #[error("{path}: {msg}")]
    Db { path: String, msg: String },
    /// A bad command-line request (unknown annotator, duplicate name, no items to serve, ...).
    #[error("{0}")]
    Usage(String),
    /// Binding the listening socket or starting the server failed.
    #[error("{0}")]
    Io(String),
}

pub type Result<T> = std::result::Result<T, LabelError>;

impl LabelError {
    pub fn db(path: &Path, e: impl std::fmt::Display) -> Self {
        LabelError::Db { path: path.display().to_string(), msg: e.to_string() }
    }
}
