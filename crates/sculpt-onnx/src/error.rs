//! What can go wrong reading or writing ONNX.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The bytes are not an ONNX model (or are cut short).
    #[error("{path}: not a readable ONNX model ({message})")]
    Decode { path: PathBuf, message: String },
    #[error("unsupported op `{op}` at node `{node}`; sculpt imports {supported}")]
    Unsupported {
        op: String,
        node: String,
        supported: &'static str,
    },
    #[error("node `{node}`: {message}")]
    Invalid { node: String, message: String },
    #[error(transparent)]
    Nn(#[from] sculpt_nn::NnError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, OnnxError>;
