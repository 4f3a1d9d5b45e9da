//! Errors a user can act on: each names the file and what is wrong with it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The I/O error is part of the message and not a `source`, so that `{:#}` chains (the
    /// CLI's error line) do not print it twice.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// A file exists but its content is wrong (corrupt, unsupported, mismatched).
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    /// The request cannot be served (prompt longer than the context, unknown model name, ...).
    #[error("{0}")]
    Usage(String),
    #[error("tensor error: {}", candle_msg(.0))]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), err: source }
    }
    pub fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Invalid { path: path.into(), msg: msg.into() }
    }
}

/// candle attaches a backtrace to its errors when `RUST_BACKTRACE` is set; a user needs the
/// message, so the backtrace is dropped.
pub fn candle_msg(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_msg(inner),
        e => e.to_string(),
    }
}
