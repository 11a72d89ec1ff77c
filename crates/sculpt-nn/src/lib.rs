//! sculpt-nn owns the model graph: a plain-data IR of named ops and named parameter
//! tensors in PyTorch naming, its forward and backward pass on candle, the training loop,
//! the model zoo, safetensors/spec I/O and the datasets models are trained on. It knows
//! nothing about search or storage.

pub mod batchnorm;
pub mod conv;
pub mod data;
pub mod error;
pub mod graph;
pub mod idx;
pub mod io;
pub mod ops;
pub mod tabular;
pub mod train;
pub mod zoo;

pub use data::{Dataset, Splits};
pub use error::{NnError, Result};
pub use graph::{ActQuant, ForwardContext, Graph, GraphSpec, LayerSummary, Node, Op, WeightQuant};
pub use ops::{CostClass, OpDef};
pub use train::{
    accuracy, predict_logits, train, EpochStats, LossInput, Objective, TrainConfig, TrainReport,
};

/// The device every tensor lives on. The GPU is an optional later feature.
pub fn device() -> candle_core::Device {
    candle_core::Device::Cpu
}
