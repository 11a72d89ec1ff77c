//! A compression plan: what to do to each layer (prune ratio, bit width) and how to
//! fine-tune (distillation temperature and weight). Plans are decoded from search points;
//! `apply` runs prune → quantize → distill and returns the compressed graph.

use std::collections::BTreeMap;

use candle_core::Tensor;
use sculpt_nn::{Dataset, Graph, TrainConfig, TrainReport};
use serde::{Deserialize, Serialize};

use crate::error::{CompressError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPlan {
    /// Fraction of the layer's output neurons to remove, in [0, 1).
    pub prune_ratio: f64,
    /// Weight bit width; 32 leaves the layer in float.
    pub bits: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressionPlan {
    /// Distillation temperature T (> 0).
    pub temperature: f64,
    /// Weight of the soft-target term, in [0, 1]; the hard-label term gets 1 - alpha.
    pub alpha: f64,
    /// Per-layer settings, by layer (node) name.
    pub layers: BTreeMap<String, LayerPlan>,
}

impl CompressionPlan {
    pub fn validate(&self, graph: &Graph) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(CompressError::Plan(format!(
                "temperature must be positive, got {}",
                self.temperature
            )));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(CompressError::Plan(format!(
                "alpha must lie in [0, 1], got {}",
                self.alpha
            )));
        }
        let layers = graph.spec.weight_layers();
        for (name, layer) in &self.layers {
            if !layers.contains(name) {
                return Err(CompressError::Plan(format!(
                    "layer `{name}` is not a layer of model `{}` (layers: {})",
                    graph.spec.name,
                    layers.join(", ")
                )));
            }
            if !(0.0..1.0).contains(&layer.prune_ratio) {
                return Err(CompressError::Plan(format!(
                    "layer `{name}`: prune ratio must lie in [0, 1), got {}",
                    layer.prune_ratio
                )));
            }
            if !(2..=32).contains(&layer.bits) {
                return Err(CompressError::Plan(format!(
                    "layer `{name}`: bits must lie in 2..=32, got {}",
                    layer.bits
                )));
            }
        }
        Ok(())
    }

    pub fn prune_ratios(&self) -> BTreeMap<String, f64> {
        self.layers
            .iter()
            .filter(|(_, l)| l.prune_ratio > 0.0)
            .map(|(k, l)| (k.clone(), l.prune_ratio))
            .collect()
    }

    /// Bit widths keyed by weight parameter name (`fc1.weight`).
    pub fn weight_bits(&self) -> BTreeMap<String, u32> {
        self.layers
            .iter()
            .filter(|(_, l)| l.bits < 32)
            .map(|(k, l)| (format!("{k}.weight"), l.bits))
            .collect()
    }
}

/// Compresses `teacher` by `plan`: structured pruning, then weight quantization, then
/// quantization-aware fine-tuning by distillation from the teacher's logits on `train`.
pub fn apply(
    teacher: &Graph,
    plan: &CompressionPlan,
    train: &Dataset,
    teacher_logits: &Tensor,
    finetune: &TrainConfig,
) -> Result<(Graph, TrainReport)> {
    plan.validate(teacher)?;
    let pruned = crate::prune::prune(teacher, &plan.prune_ratios())?;
    let mut student = crate::quantize::quantize(&pruned, &plan.weight_bits())?;
    let report = crate::distill::distill(&mut student, train, teacher_logits, plan, finetune)?;
    Ok((student, report))
}
