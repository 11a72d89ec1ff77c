//! The one error type of sculpt-store.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    /// A parquet table that is not what it should be (a missing or mistyped column).
    #[error("{path}: {message}")]
    Table { path: PathBuf, message: String },
    #[error("{dir} is in use by another sculpt process (lock {lock})")]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error("{dir} holds trials of campaign `{found}` ({found_fingerprint}), not of `{expected}` ({expected_fingerprint}); choose another --out or remove that directory")]
    OtherCampaign {
        dir: PathBuf,
        expected: String,
        expected_fingerprint: String,
        found: String,
        found_fingerprint: String,
    },
    #[error("trial {0} is already stored; finished trials are immutable")]
    DuplicateTrial(u64),
    #[error("polars: {0}")]
    Polars(#[from] polars::error::PolarsError),
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.into(),
        cause,
    }
}
