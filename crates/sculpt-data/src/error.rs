//! The one error type of sculpt-data. Each variant says what is wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    #[error("unknown data source `{0}` (known: {known})", known = crate::load::SOURCES.join(", "))]
    UnknownData(String),
    #[error("invalid data setting: {0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            cause,
        }
    }
}
