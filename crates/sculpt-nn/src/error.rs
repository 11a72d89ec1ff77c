//! The one error type of sculpt-nn. Each variant says what is wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    // Not `source`: the message already carries the cause, and a source would print it
    // twice in a chain of errors.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {message}")]
    Spec { path: PathBuf, message: String },
    #[error("{path}: tensor `{name}` has shape {found:?} but the model spec expects {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor `{name}` required by the model spec is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` is not a parameter of the model spec")]
    UnexpectedTensor { path: PathBuf, name: String },
    #[error("unknown model `{0}` (known: mlp, lenet-300-100)")]
    UnknownModel(String),
    #[error("invalid graph: {0}")]
    Graph(String),
    #[error("invalid training setting: {0}")]
    Config(String),
    /// Training was asked to stop; the checkpoint of the last finished epoch is kept.
    #[error("interrupted after epoch {epoch} of {epochs}; the checkpoint is kept, and running again resumes from it")]
    Interrupted { epoch: usize, epochs: usize },
    #[error("loss became {value} at epoch {epoch}, step {step}: training diverged (lower the learning rate)")]
    NonFiniteLoss {
        epoch: usize,
        step: usize,
        value: f32,
    },
}

pub type Result<T> = std::result::Result<T, NnError>;

impl NnError {
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        NnError::Io {
            path: path.into(),
            cause,
        }
    }
}
