//! sculpt-nn owns the model graph: a plain-data IR of named ops and named parameter
//! tensors in PyTorch naming, its forward and backward pass on candle, the training loop,
//! the model zoo and safetensors/spec I/O. Data sources live in `sculpt-data`. It knows
//! nothing about search or storage.

pub mod batchnorm;
pub mod conv;
pub mod dataset;
pub mod error;
pub mod graph;
pub mod io;
pub mod matmul;
pub mod ops;
pub mod train;
pub mod zoo;

pub use dataset::{Dataset, Splits};
pub use error::{NnError, Result};
pub use graph::{
    ActQuant, ForwardContext, Graph, GraphSpec, LayerSummary, Node, Op, Preprocessing, WeightQuant,
};
pub use ops::{ChannelRule, CostClass, OpDef};
pub use train::{
    accuracy, predict_logits, train, train_gated, EpochGate, EpochStats, LossInput, Objective,
    TrainConfig, TrainReport,
};

/// The device every tensor lives on. The GPU is an optional later feature.
pub fn device() -> candle_core::Device {
    candle_core::Device::Cpu
}
