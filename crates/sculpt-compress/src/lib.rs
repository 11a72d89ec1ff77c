//! sculpt-compress owns the knob table (one codec from search point to plan to record),
//! the compression plan and its passes (structured and unstructured pruning, low rank,
//! batch-norm folding, quantization), fine-tuning by knowledge distillation, and honest
//! accounting of size, FLOPs and BOPs. Every pass is a function from graph to graph. It
//! knows nothing about search or storage.

pub mod activations;
pub mod distill;
pub mod error;
pub mod fold;
pub mod knobs;
pub mod lowrank;
pub mod plan;
pub mod prune;
pub mod quantize;
pub mod size;
pub mod sparsify;
#[cfg(test)]
mod testing;

pub use activations::{quantize_activations, ActivationOptions, Calibration};
pub use distill::{
    compress_and_finetune, distillation_loss, finetune, finetune_gated, finetune_plan,
};
pub use error::{CompressError, Result};
pub use fold::{fold_batch_norm, foldable_pairs};
pub use knobs::{knob, Knob, KnobKind, ParamValue, KNOBS};
pub use lowrank::{factorise, factorise_layer};
pub use plan::{
    apply, compress, load_plan, matches_pattern, read_plan, CompressionPlan, DistillKind,
    DistillPlan, FinetuneSettings, Granularity, Importance, LayerPlan, Pass, SparsitySchedule,
};
pub use prune::{
    channel_scores, dependency_groups, prune_channels, remove_channels, select_channels,
    taylor_scores, Consumer, ParamSlice, PruneGroup, PruneSettings, Scope,
};
pub use prune::{prunable_layers, prune, select_neurons};
pub use quantize::{fake_quantize, pack, quantize, quantize_ste, requantize, QuantizedTensor};
pub use size::{account, model_size_bytes, param_size_bytes, Accounting};
pub use sparsify::{masks, nonzeros, sparsify, sparsify_global, sparsify_n_of_m};
