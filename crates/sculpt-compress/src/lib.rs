//! sculpt-compress owns the compression plan and its application to a graph: structured
//! pruning of hidden neurons, per-channel weight quantization, fine-tuning by knowledge
//! distillation, and honest size accounting. Every pass is a function from graph to graph.
//! It knows nothing about search or storage.

pub mod distill;
pub mod error;
pub mod plan;
pub mod prune;
pub mod quantize;
pub mod size;

pub use distill::{distill, distillation_loss};
pub use error::{CompressError, Result};
pub use plan::{apply, CompressionPlan, LayerPlan};
pub use prune::{prunable_layers, prune, select_neurons};
pub use quantize::{fake_quantize, quantize, quantize_ste, QuantizedTensor};
pub use size::{model_size_bytes, tensor_size_bytes};
