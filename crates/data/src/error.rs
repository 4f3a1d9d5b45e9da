//! Errors a user can act on: each names the file (and the line, when there is one) and what is wrong.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A record is malformed; `line` is the 1-based line where the JSONL record or JSON array element starts
    /// (plus the offset of the problem inside it, when serde_json reports one).
    #[error("{path}:{line}: {msg}")]
    AtLine { path: String, line: usize, msg: String },
    /// The file as a whole is unusable (missing, empty, corrupt gzip, ...).
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    /// A bad command-line request (ratios that do not sum to 1, ...).
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    pub fn at_line(path: &Path, line: usize, msg: impl Into<String>) -> Self {
        DataError::AtLine { path: path.display().to_string(), line, msg: msg.into() }
    }
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        DataError::File { path: path.display().to_string(), msg: msg.into() }
    }
}
