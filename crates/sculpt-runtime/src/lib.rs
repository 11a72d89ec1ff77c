//! sculpt-runtime runs compressed graphs for inference. [`Runtime::compile`] turns a graph
//! into an execution plan once: weights packed for the kernels (f32, or integer codes with
//! their scales and zero points), batch norm, bias and ReLU fused into the matrix kernels
//! where the graph allows, every buffer allocated up front for the largest batch. Running
//! the plan allocates nothing.
//!
//! - Activations are laid out channels-last (NHWC) inside the plan; the input arrives in
//!   the dataset's channels-first order and is converted once, and a Linear layer after a
//!   Flatten reads its weight columns in the matching order.
//! - A layer whose weight is quantized to 8 bits or fewer runs in integers: its input is
//!   quantized to unsigned 8-bit codes (statically, with the calibrated range the graph
//!   records, or on the fly per sample), multiplied by the weight codes with 32-bit integer
//!   sums, and scaled back. Weights of 4 bits or fewer stay packed two per byte.
//! - Half-precision weights run as f32 (their values are rounded to half precision).
//! - A convolution is an im2col followed by the same kernels.
//!
//! The graph's own candle forward is the reference: f32 plans match it to 1e-4, and
//! integer plans differ only by the quantization of activations that the graph leaves in
//! f32 (none at all when the graph quantizes them statically).

pub mod kernel;
pub mod measure;
mod plan;
mod pool;

pub use kernel::Isa;
pub use measure::{measure, Measurement};
pub use plan::{cores, max_threads, LayerInfo, Options, Runtime, SparsePolicy, StepShape};

/// Errors of compiling or running a plan.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Nn(#[from] sculpt_nn::NnError),
    #[error(transparent)]
    Compress(#[from] sculpt_compress::CompressError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("node `{node}` cannot run in the runtime: {message}")]
    Unsupported { node: String, message: String },
    #[error("{0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, RuntimeError>;
