//! The one error type of sculpt-report.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("drawing {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, ReportError>;
