//! The one error type of sculpt-latency.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LatencyError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {message}")]
    Profile { path: PathBuf, message: String },
    #[error("unknown device profile `{0}` (built in: {1})")]
    UnknownProfile(String, String),
    #[error(transparent)]
    Nn(#[from] sculpt_nn::NnError),
    #[error(transparent)]
    Compress(#[from] sculpt_compress::CompressError),
    #[error(transparent)]
    Runtime(#[from] sculpt_runtime::RuntimeError),
    #[error("{path}: {message}")]
    Table { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, LatencyError>;
