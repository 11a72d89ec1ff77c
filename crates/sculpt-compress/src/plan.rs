//! A compression plan: what to do to each layer (structured prune ratio, unstructured
//! sparsity and its pattern, low-rank fraction, weight bits and quantization scheme) and
//! how to fine-tune (distillation temperature and weight). Plans are decoded from search
//! points through the knob table, or read from a plan file. [`compress`] runs the plan's
//! graph-to-graph passes (prune, factorise, sparsify, fold, quantize), so a candidate's
//! structure, size and predicted latency are known before any fine-tuning;
//! [`crate::distill::finetune`] then fine-tunes it.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use sculpt_nn::{Dataset, Graph, TrainConfig, TrainReport, WeightQuant};
use serde::{Deserialize, Serialize};

use crate::activations::ActivationOptions;
use crate::error::{CompressError, Result};
use crate::knobs::{ParamValue, KNOBS};

/// How structured pruning ranks the channels of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    /// L1 norm of the channel's weights.
    #[default]
    L1,
    /// L2 norm of the channel's weights.
    L2,
    /// |γ| of the batch norm that follows the channel.
    BnGamma,
    /// First-order Taylor: |gradient × weight| summed over calibration batches.
    Taylor,
}

impl Importance {
    pub const NAMES: &'static [&'static str] = &["l1", "l2", "bn_gamma", "taylor"];

    pub fn name(&self) -> &'static str {
        match self {
            Importance::L1 => "l1",
            Importance::L2 => "l2",
            Importance::BnGamma => "bn_gamma",
            Importance::Taylor => "taylor",
        }
    }

    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "l1" => Ok(Importance::L1),
            "l2" => Ok(Importance::L2),
            "bn_gamma" => Ok(Importance::BnGamma),
            "taylor" => Ok(Importance::Taylor),
            other => Err(format!(
                "unknown importance \"{other}\" (use one of {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// The pattern of unstructured sparsity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// Any weight may be zeroed: the smallest magnitudes go.
    #[default]
    Unstructured,
    /// In every run of `m` consecutive weights along a row, `n` are kept (2:4 is the
    /// pattern sparse tensor cores run). The layer's sparsity is then `1 - n/m`.
    NOfM { n: usize, m: usize },
}

impl Granularity {
    pub fn name(&self) -> String {
        match self {
            Granularity::Unstructured => "unstructured".into(),
            Granularity::NOfM { n, m } => format!("{n}:{m}"),
        }
    }

    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        if text == "unstructured" {
            return Ok(Granularity::Unstructured);
        }
        let parsed = text.split_once(':').and_then(|(n, m)| {
            Some((
                n.trim().parse::<usize>().ok()?,
                m.trim().parse::<usize>().ok()?,
            ))
        });
        match parsed {
            Some((n, m)) if n >= 1 && n < m && m <= 16 => Ok(Granularity::NOfM { n, m }),
            _ => Err(format!(
                "granularity \"{text}\" is neither \"unstructured\" nor N:M with 1 <= N < M <= 16"
            )),
        }
    }
}

impl Serialize for Granularity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Granularity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Granularity::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What happens to one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LayerPlan {
    /// Fraction of the layer's output channels removed (structured), in [0, 1).
    pub prune: f64,
    /// Fraction of the layer's weights zeroed by magnitude (unstructured), in [0, 1).
    pub sparsity: f64,
    pub granularity: Granularity,
    /// Low-rank factorisation: the kept rank as a fraction of the full rank; 1 is off.
    pub rank: f64,
    /// Weight bit width: 2..=8 integer codes, 16 half precision, 32 float.
    pub bits: u32,
    /// One scale per output channel (true) or per tensor.
    pub per_channel: bool,
    /// Symmetric codes (true) or asymmetric with a zero point.
    pub symmetric: bool,
    /// Bit width of the layer's input activations (static, calibrated); 32 is float.
    pub act_bits: u32,
}

impl Default for LayerPlan {
    fn default() -> Self {
        LayerPlan {
            prune: 0.0,
            sparsity: 0.0,
            granularity: Granularity::Unstructured,
            rank: 1.0,
            bits: 32,
            per_channel: true,
            symmetric: true,
            act_bits: 32,
        }
    }
}

impl LayerPlan {
    pub fn weight_quant(&self) -> WeightQuant {
        WeightQuant {
            bits: self.bits,
            per_channel: self.per_channel,
            symmetric: self.symmetric,
        }
    }

    /// The sparsity this layer ends with: an N:M pattern fixes it at 1 - N/M.
    pub fn effective_sparsity(&self) -> f64 {
        match self.granularity {
            Granularity::Unstructured => self.sparsity,
            Granularity::NOfM { n, m } => 1.0 - n as f64 / m as f64,
        }
    }

    fn is_sparse(&self) -> bool {
        self.sparsity > 0.0 || matches!(self.granularity, Granularity::NOfM { .. })
    }
}

/// What the student learns from the teacher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistillKind {
    /// Hinton's response loss on the logits (with weight alpha; the rest on the labels).
    #[default]
    Response,
    /// Cross-entropy on the labels plus feature matching of intermediate layers.
    Feature,
    /// The response loss plus feature matching.
    Both,
}

impl DistillKind {
    pub const NAMES: &'static [&'static str] = &["response", "feature", "both"];

    pub fn name(&self) -> &'static str {
        match self {
            DistillKind::Response => "response",
            DistillKind::Feature => "feature",
            DistillKind::Both => "both",
        }
    }

    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "response" => Ok(DistillKind::Response),
            "feature" => Ok(DistillKind::Feature),
            "both" => Ok(DistillKind::Both),
            other => Err(format!(
                "unknown distillation \"{other}\" (use one of {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Distillation settings of the fine-tuning step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillPlan {
    /// Temperature T of the soft targets (> 0).
    pub temperature: f64,
    /// Weight of the soft-target term, in [0, 1]; 0 is plain fine-tuning on the labels.
    pub alpha: f64,
    pub kind: DistillKind,
    /// Layers whose outputs feature distillation matches (empty: the last two hidden
    /// weight layers).
    pub feature_layers: Vec<String>,
    /// Weight of the feature term.
    pub feature_weight: f64,
}

impl Default for DistillPlan {
    fn default() -> Self {
        DistillPlan {
            temperature: 4.0,
            alpha: 0.7,
            kind: DistillKind::Response,
            feature_layers: Vec::new(),
            feature_weight: 1.0,
        }
    }
}

/// Settings of structured pruning that apply to the whole network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneOptions {
    pub importance: Importance,
    /// Rank channels across the whole network (one threshold over normalised scores)
    /// rather than within each layer.
    pub global: bool,
    /// Channels every pruned group keeps at least.
    pub min_channels: usize,
    /// Calibration batches (of 64 training samples) for Taylor importance.
    pub calibration_batches: usize,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            importance: Importance::L1,
            global: false,
            min_channels: 1,
            calibration_batches: 4,
        }
    }
}

/// How unstructured sparsity is reached during fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SparsitySchedule {
    /// Prune to the target at once, then fine-tune.
    #[default]
    OneShot,
    /// Prune and fine-tune in cycles, the sparsity rising linearly to the target.
    Iterative,
    /// Prune and fine-tune in cycles on Zhu & Gupta's cubic schedule.
    Agp,
}

/// Settings of unstructured pruning that apply to the whole network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SparsifyOptions {
    /// One magnitude threshold across every sparsified layer, set so that the network
    /// reaches the weighted mean of their sparsities, rather than one per layer.
    pub global: bool,
    pub schedule: SparsitySchedule,
    /// Prune-and-fine-tune rounds of the iterative and AGP schedules.
    pub cycles: usize,
    /// Lottery-ticket rewinding: the final mask on the teacher's weights, fine-tuned again.
    pub rewind: bool,
}

impl Default for SparsifyOptions {
    fn default() -> Self {
        SparsifyOptions {
            global: false,
            schedule: SparsitySchedule::OneShot,
            cycles: 4,
            rewind: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionPlan {
    #[serde(default)]
    pub distill: DistillPlan,
    #[serde(default)]
    pub prune: PruneOptions,
    #[serde(default)]
    pub sparsify: SparsifyOptions,
    #[serde(default)]
    pub activations: ActivationOptions,
    /// Fold each batch norm into the convolution before it, before quantization.
    #[serde(default = "default_true")]
    pub fold_batch_norm: bool,
    /// Per-layer settings, by layer (node) name. Absent layers keep their defaults.
    #[serde(default)]
    pub layers: BTreeMap<String, LayerPlan>,
}

fn default_true() -> bool {
    true
}

impl Default for CompressionPlan {
    fn default() -> Self {
        CompressionPlan {
            distill: DistillPlan::default(),
            prune: PruneOptions::default(),
            sparsify: SparsifyOptions::default(),
            activations: ActivationOptions::default(),
            fold_batch_norm: true,
            layers: BTreeMap::new(),
        }
    }
}

/// One graph-to-graph step of a plan, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Structured pruning of channels and neurons.
    Prune,
    /// Low-rank factorisation of Linear layers.
    Factorise,
    /// Unstructured or N:M magnitude pruning.
    Sparsify,
    /// Batch norm folded into the convolution before it.
    Fold,
    /// Weight quantization.
    Quantize,
    /// Static activation quantization, calibrated on training batches.
    QuantizeActivations,
}

impl Pass {
    pub fn name(&self) -> &'static str {
        match self {
            Pass::Prune => "prune",
            Pass::Factorise => "factorise",
            Pass::Sparsify => "sparsify",
            Pass::Fold => "fold",
            Pass::Quantize => "quantize",
            Pass::QuantizeActivations => "quantize_activations",
        }
    }
}

impl CompressionPlan {
    /// The plan for one layer (its defaults when the plan does not name it).
    pub fn layer(&self, name: &str) -> LayerPlan {
        self.layers.get(name).cloned().unwrap_or_default()
    }

    /// Checks every value through the knob table, and that every named layer exists and
    /// can take the knobs set on it. Errors name the layer and the knob.
    pub fn validate(&self, graph: &Graph) -> Result<()> {
        let layers = graph.spec.weight_layers();
        for knob in KNOBS.iter().filter(|k| !k.per_layer) {
            knob.check(&(knob.get)(self, ""))
                .map_err(|m| CompressError::Plan(format!("{}: {m}", knob.name)))?;
        }
        if !(self.activations.percentile > 0.0 && self.activations.percentile <= 100.0) {
            return Err(CompressError::Plan(format!(
                "activations.percentile must lie in (0, 100], got {}",
                self.activations.percentile
            )));
        }
        if self.activations.batches == 0 {
            return Err(CompressError::Plan(
                "activations.batches must be at least 1".into(),
            ));
        }
        if self.prune.min_channels == 0 {
            return Err(CompressError::Plan(
                "prune.min_channels must be at least 1".into(),
            ));
        }
        if self.sparsify.cycles == 0 {
            return Err(CompressError::Plan(
                "sparsify.cycles must be at least 1".into(),
            ));
        }
        if !(self.distill.feature_weight.is_finite() && self.distill.feature_weight >= 0.0) {
            return Err(CompressError::Plan(format!(
                "distill.feature_weight must be zero or positive, got {}",
                self.distill.feature_weight
            )));
        }
        for layer in &self.distill.feature_layers {
            if !layers.contains(layer) {
                return Err(CompressError::Plan(format!(
                    "distill.feature_layers: `{layer}` is not a layer of model `{}` (layers: {})",
                    graph.spec.name,
                    layers.join(", ")
                )));
            }
        }
        if self.prune.calibration_batches == 0 && self.prune.importance == Importance::Taylor {
            return Err(CompressError::Plan(
                "prune.calibration_batches must be at least 1 for Taylor importance".into(),
            ));
        }
        let default = LayerPlan::default();
        for name in self.layers.keys() {
            if !layers.contains(name) {
                return Err(CompressError::Plan(format!(
                    "layer `{name}` is not a layer of model `{}` (layers: {})",
                    graph.spec.name,
                    layers.join(", ")
                )));
            }
            for knob in KNOBS.iter().filter(|k| k.per_layer) {
                let value = (knob.get)(self, name);
                knob.check(&value).map_err(|m| {
                    CompressError::Plan(format!("layers.{name}.{}: {m}", knob.name))
                })?;
                let untouched = (knob.get)(
                    &CompressionPlan {
                        layers: [(name.clone(), default.clone())].into(),
                        ..CompressionPlan::default()
                    },
                    name,
                ) == value;
                if !untouched && !(knob.layers)(graph).contains(name) {
                    return Err(CompressError::Plan(format!(
                        "layers.{name}.{}: layer `{name}` cannot take this knob (it applies to: {})",
                        knob.name,
                        (knob.layers)(graph).join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// The passes this plan runs, in order; passes with nothing to do are left out.
    pub fn passes(&self, graph: &Graph) -> Vec<Pass> {
        let mut passes = Vec::new();
        let any = |f: &dyn Fn(&LayerPlan) -> bool| self.layers.values().any(f);
        if any(&|l| l.prune > 0.0) {
            passes.push(Pass::Prune);
        }
        if any(&|l| l.rank < 1.0) {
            passes.push(Pass::Factorise);
        }
        if any(&|l| l.is_sparse()) {
            passes.push(Pass::Sparsify);
        }
        let has_bn = graph
            .spec
            .nodes
            .iter()
            .any(|n| matches!(n.op, sculpt_nn::Op::BatchNorm2d { .. }));
        let quantized = any(&|l| l.bits < 32 || l.act_bits < 32);
        if self.fold_batch_norm && has_bn && quantized {
            passes.push(Pass::Fold);
        }
        if any(&|l| l.bits < 32) {
            passes.push(Pass::Quantize);
        }
        if any(&|l| l.act_bits < 32) {
            passes.push(Pass::QuantizeActivations);
        }
        passes
    }

    /// Weight quantization schemes keyed by weight parameter name (`fc1.weight`).
    pub fn weight_quant(&self) -> BTreeMap<String, WeightQuant> {
        self.layers
            .iter()
            .filter(|(_, l)| l.bits < 32)
            .map(|(k, l)| (format!("{k}.weight"), l.weight_quant()))
            .collect()
    }

    /// The plan's parameters as knob columns (`temperature`, `bits_fc1`, …) for every
    /// layer of `graph` each knob can address.
    pub fn params(&self, graph: &Graph) -> BTreeMap<String, ParamValue> {
        let mut params = BTreeMap::new();
        for knob in KNOBS {
            if knob.per_layer {
                for layer in (knob.layers)(graph) {
                    params.insert(knob.column(&layer), (knob.get)(self, &layer));
                }
            } else {
                params.insert(knob.column(""), (knob.get)(self, ""));
            }
        }
        params
    }
}

/// Samples per calibration batch of Taylor importance.
const TAYLOR_BATCH_SIZE: usize = 64;

/// Runs one pass of `plan` on `graph`. `calibration` is data for passes that need it
/// (Taylor importance).
pub fn run_pass(
    pass: Pass,
    graph: &Graph,
    plan: &CompressionPlan,
    calibration: Option<&Dataset>,
) -> Result<Graph> {
    match pass {
        Pass::Prune => {
            let ratios: BTreeMap<String, f64> = plan
                .layers
                .iter()
                .filter(|(_, l)| l.prune > 0.0)
                .map(|(k, l)| (k.clone(), l.prune))
                .collect();
            let taylor = if plan.prune.importance == Importance::Taylor {
                let data = calibration.ok_or_else(|| {
                    CompressError::Plan("Taylor importance needs calibration data".into())
                })?;
                Some(crate::prune::taylor_scores(
                    graph,
                    data,
                    plan.prune.calibration_batches,
                    TAYLOR_BATCH_SIZE,
                )?)
            } else {
                None
            };
            crate::prune::prune_channels(
                graph,
                &crate::prune::PruneSettings {
                    ratios,
                    importance: plan.prune.importance,
                    scope: if plan.prune.global {
                        crate::prune::Scope::Global { ratio: None }
                    } else {
                        crate::prune::Scope::Local
                    },
                    min_channels: plan.prune.min_channels,
                    taylor: taylor.as_ref(),
                },
            )
        }
        Pass::Factorise => {
            let fractions: BTreeMap<String, f64> = plan
                .layers
                .iter()
                .filter(|(_, l)| l.rank < 1.0)
                .map(|(k, l)| (k.clone(), l.rank))
                .collect();
            crate::lowrank::factorise(graph, &fractions)
        }
        Pass::Sparsify => {
            let mut out = graph.clone();
            let unstructured: BTreeMap<String, f64> = plan
                .layers
                .iter()
                .filter(|(_, l)| l.granularity == Granularity::Unstructured && l.sparsity > 0.0)
                .map(|(k, l)| (k.clone(), l.sparsity))
                .collect();
            if !unstructured.is_empty() {
                out = if plan.sparsify.global {
                    // One threshold over these layers, set for the weighted mean of their
                    // sparsities: the same number of zeros, placed where weights are least.
                    let layers: Vec<String> = unstructured.keys().cloned().collect();
                    let mut zeros = 0.0;
                    let mut total = 0.0;
                    for (layer, ratio) in &unstructured {
                        let n = out.param(&format!("{layer}.weight"))?.elem_count() as f64;
                        zeros += ratio * n;
                        total += n;
                    }
                    crate::sparsify::sparsify_global(&out, &layers, zeros / total)?
                } else {
                    crate::sparsify::sparsify(&out, &unstructured)?
                };
            }
            let patterns: BTreeMap<String, (usize, usize)> = plan
                .layers
                .iter()
                .filter_map(|(k, l)| match l.granularity {
                    Granularity::NOfM { n, m } => Some((k.clone(), (n, m))),
                    Granularity::Unstructured => None,
                })
                .collect();
            if !patterns.is_empty() {
                out = crate::sparsify::sparsify_n_of_m(&out, &patterns)?;
            }
            Ok(out)
        }
        Pass::Fold => crate::fold::fold_batch_norm(graph),
        Pass::Quantize => {
            // A factorised layer is two layers now: its first factor takes the same scheme.
            let mut schemes = plan.weight_quant();
            for (layer, l) in &plan.layers {
                let first = crate::lowrank::first_factor_name(layer);
                if l.bits < 32 && graph.spec.node(&first).is_some() {
                    schemes.insert(format!("{first}.weight"), l.weight_quant());
                }
            }
            crate::quantize::quantize(graph, &schemes)
        }
        Pass::QuantizeActivations => {
            let data = calibration.ok_or_else(|| {
                CompressError::Plan("activation quantization needs calibration data".into())
            })?;
            let mut bits: BTreeMap<String, u32> = BTreeMap::new();
            for (layer, l) in plan.layers.iter().filter(|(_, l)| l.act_bits < 32) {
                // A factorised layer's input is its first factor's.
                let first = crate::lowrank::first_factor_name(layer);
                let target = if graph.spec.node(&first).is_some() {
                    first
                } else {
                    layer.clone()
                };
                bits.insert(target, l.act_bits);
            }
            crate::activations::quantize_activations(graph, &bits, data, &plan.activations)
        }
    }
}

/// Applies every pass of `plan` to `teacher` and returns the compressed, not yet
/// fine-tuned, graph. The teacher is not changed.
pub fn compress(
    teacher: &Graph,
    plan: &CompressionPlan,
    calibration: Option<&Dataset>,
) -> Result<Graph> {
    plan.validate(teacher)?;
    let mut graph = teacher.clone();
    for pass in plan.passes(teacher) {
        graph = run_pass(pass, &graph, plan, calibration)?;
    }
    Ok(graph)
}

/// Compresses `teacher` by `plan`, then fine-tunes the result by distillation from the
/// teacher (whose logits on `train` are `teacher_logits`), by the plan's schedule.
pub fn apply(
    teacher: &Graph,
    plan: &CompressionPlan,
    train: &Dataset,
    teacher_logits: &Tensor,
    finetune: &TrainConfig,
) -> Result<(Graph, TrainReport)> {
    crate::distill::compress_and_finetune(
        teacher,
        plan,
        train,
        teacher_logits,
        finetune,
        &mut |_| {},
    )
}

/// Fine-tuning settings a plan file may carry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneSettings {
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub learning_rate: Option<f64>,
    pub weight_decay: Option<f64>,
}

/// A plan file: a plan whose `layers` keys may be glob patterns (`conv*`), plus optional
/// fine-tuning settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    distill: DistillPlan,
    #[serde(default)]
    prune: PruneOptions,
    #[serde(default)]
    sparsify: SparsifyOptions,
    #[serde(default)]
    activations: ActivationOptions,
    #[serde(default = "default_true")]
    fold_batch_norm: bool,
    #[serde(default)]
    finetune: FinetuneSettings,
    #[serde(default)]
    layers: BTreeMap<String, toml::Table>,
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn plan_error(path: &Path, message: impl std::fmt::Display) -> CompressError {
    CompressError::PlanFile(format!("{}: {message}", path.display()))
}

/// Reads a plan file against `graph`. Layer keys may be patterns; a layer takes the
/// settings of every pattern it matches, the more specific pattern (fewer `*`, then
/// longer) last, so `[layers."fc*"]` sets a default that `[layers.fc3]` overrides. A
/// pattern that matches no layer, an unknown key or an out-of-range value is an error
/// naming the file and the field.
pub fn read_plan(
    text: &str,
    path: &Path,
    graph: &Graph,
) -> Result<(CompressionPlan, FinetuneSettings)> {
    let raw: PlanFile = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("{line}:{column}: ")
            })
            .unwrap_or_default();
        CompressError::PlanFile(format!("{}:{at}{}", path.display(), e.message().trim()))
    })?;
    let layers = graph.spec.weight_layers();
    let mut patterns: Vec<(&String, &toml::Table)> = raw.layers.iter().collect();
    patterns.sort_by_key(|(p, _)| (std::cmp::Reverse(p.matches('*').count()), p.len()));
    let mut plan = CompressionPlan {
        distill: raw.distill,
        prune: raw.prune,
        sparsify: raw.sparsify,
        activations: raw.activations,
        fold_batch_norm: raw.fold_batch_norm,
        layers: BTreeMap::new(),
    };
    for (pattern, table) in patterns {
        let matched: Vec<&String> = layers
            .iter()
            .filter(|l| matches_pattern(pattern, l))
            .collect();
        if matched.is_empty() {
            return Err(plan_error(
                path,
                format!(
                    "layers.\"{pattern}\" matches no layer of model `{}` (layers: {})",
                    graph.spec.name,
                    layers.join(", ")
                ),
            ));
        }
        for (key, value) in table {
            let field = format!("layers.\"{pattern}\".{key}");
            let knob = KNOBS
                .iter()
                .find(|k| k.per_layer && plan_key(k.name) == key)
                .ok_or_else(|| {
                    plan_error(
                        path,
                        format!(
                            "{field}: unknown setting (known: {})",
                            KNOBS
                                .iter()
                                .filter(|k| k.per_layer)
                                .map(|k| plan_key(k.name))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
            let value = match value {
                toml::Value::Integer(i) => ParamValue::Int(*i),
                toml::Value::Float(f) => ParamValue::Float(*f),
                toml::Value::String(s) => ParamValue::Text(s.clone()),
                toml::Value::Boolean(b) => ParamValue::Text(
                    match (knob.name, b) {
                        ("quant_granularity", true) => "channel",
                        ("quant_granularity", false) => "tensor",
                        ("scheme", true) => "symmetric",
                        ("scheme", false) => "asymmetric",
                        _ => "true",
                    }
                    .into(),
                ),
                other => {
                    return Err(plan_error(
                        path,
                        format!("{field}: expected a number or a string, got {other}"),
                    ))
                }
            };
            let value = knob
                .check(&value)
                .map_err(|m| plan_error(path, format!("{field}: {m}")))?;
            for layer in &matched {
                if !(knob.layers)(graph).contains(layer) {
                    // The default value is no setting at all, so a plan written out in
                    // full (every field of every layer) reads back.
                    let default = (knob.get)(&CompressionPlan::default(), layer);
                    if pattern == *layer && value != default {
                        return Err(plan_error(
                            path,
                            format!(
                                "{field}: layer `{layer}` cannot take this setting (it applies to: {})",
                                (knob.layers)(graph).join(", ")
                            ),
                        ));
                    }
                    // A pattern sets what applies and skips the rest (the output layer
                    // matched by "fc*" cannot lose neurons, but can be quantized).
                    continue;
                }
                (knob.set)(&mut plan, layer, &value);
            }
        }
    }
    plan.validate(graph).map_err(|e| {
        plan_error(
            path,
            e.to_string()
                .trim_start_matches("invalid compression plan: "),
        )
    })?;
    Ok((plan, raw.finetune))
}

/// The key of a per-layer knob in a plan file: the `LayerPlan` field it sets, so a plan
/// written by serde reads back. The two scheme knobs are booleans there.
fn plan_key(knob: &str) -> &str {
    match knob {
        "quant_granularity" => "per_channel",
        "scheme" => "symmetric",
        other => other,
    }
}

/// Reads a plan file from disk.
pub fn load_plan(path: &Path, graph: &Graph) -> Result<(CompressionPlan, FinetuneSettings)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| plan_error(path, format!("cannot read the plan: {e}")))?;
    read_plan(&text, path, graph)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp() -> Graph {
        sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap()
    }

    #[test]
    fn plan_files_resolve_patterns_and_name_bad_fields() {
        let g = mlp();
        let text = r#"
[distill]
temperature = 3.0

[layers."fc*"]
sparsity = 0.9
bits = 6

[layers.fc3]
sparsity = 0.5
"#;
        let (plan, _) = read_plan(text, Path::new("p.toml"), &g).unwrap();
        assert_eq!(plan.distill.temperature, 3.0);
        assert_eq!(plan.layer("fc1").sparsity, 0.9);
        assert_eq!(plan.layer("fc3").sparsity, 0.5);
        assert_eq!(plan.layer("fc3").bits, 6);
        for (bad, needle) in [
            (
                "[layers.fc9]\nbits = 4\n",
                "layers.\"fc9\" matches no layer",
            ),
            (
                "[layers.fc1]\nprune = 1.2\n",
                "layers.\"fc1\".prune: must lie in [0, 1)",
            ),
            (
                "[layers.fc1]\nbits = 9\n",
                "layers.\"fc1\".bits: 9 is not allowed",
            ),
            (
                "[layers.fc1]\nbitz = 4\n",
                "layers.\"fc1\".bitz: unknown setting",
            ),
            ("[layers.fc3]\nprune = 0.5\n", "cannot take this setting"),
            // Written out in full, a plan names defaults everywhere: those read back.
            (
                "[layers.fc3]\nprune = 0.0\nbits = 10\n",
                "bits: 10 is not allowed",
            ),
            ("[distill]\ntemprature = 2.0\n", "p.toml:2:1"),
        ] {
            let err = read_plan(bad, Path::new("p.toml"), &g)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(err.contains("p.toml"), "{err}");
        }
    }

    #[test]
    fn every_pass_runs_in_order_on_a_conv_network() {
        let g = sculpt_nn::zoo::build("resnet-8", &[1, 16, 16], 10, 0).unwrap();
        let text = r#"
[layers."*"]
bits = 8
[layers.fc]
rank = 0.5
sparsity = 0.5
[layers."stem*"]
granularity = "2:4"
"#;
        let layers = g.spec.weight_layers();
        let fc = layers.iter().find(|l| l.starts_with("fc")).unwrap().clone();
        // A 3x3 conv over 16 channels: rows of 144 weights, a multiple of 4.
        let stem = "layer1.conv1".to_string();
        let text = text
            .replace("layers.fc]", &format!("layers.{fc}]"))
            .replace("stem*", &stem);
        let (plan, _) = read_plan(&text, Path::new("p.toml"), &g).unwrap();
        assert_eq!(
            plan.passes(&g),
            vec![Pass::Factorise, Pass::Sparsify, Pass::Fold, Pass::Quantize]
        );
        let c = compress(&g, &plan, None).unwrap();
        // Batch norm is folded, both factors of the factorised layer are quantized, and
        // the sparse layers are marked so fine-tuning keeps their zeros.
        assert!(!c
            .spec
            .nodes
            .iter()
            .any(|n| matches!(n.op, sculpt_nn::Op::BatchNorm2d { .. })));
        assert_eq!(c.weight_bits(&format!("{fc}_lr_a.weight")), 8);
        assert_eq!(c.weight_bits(&format!("{fc}.weight")), 8);
        assert!(c.spec.sparse.contains(&format!("{stem}.weight")));
        let x = Tensor::randn(0f32, 1.0, (2, 1, 16, 16), &sculpt_nn::device()).unwrap();
        assert_eq!(c.forward(&x).unwrap().dims(), &[2, 10]);
        let a = crate::size::account(&c).unwrap();
        assert!(a.size_bytes < crate::size::model_size_bytes(&g).unwrap() / 3);
    }

    #[test]
    fn half_the_channels_of_every_residual_group_go_by_each_criterion() {
        let g = sculpt_nn::zoo::build("resnet-8", &[1, 16, 16], 10, 3).unwrap();
        let data = sculpt_nn::Dataset {
            x: Tensor::randn(0f32, 1.0, (128, 1, 16, 16), &sculpt_nn::device()).unwrap(),
            y: Tensor::from_vec(
                (0..128u32).map(|i| i % 10).collect::<Vec<_>>(),
                128,
                &sculpt_nn::device(),
            )
            .unwrap(),
            num_classes: 10,
        };
        for importance in ["l1", "l2", "bn_gamma", "taylor"] {
            for global in [false, true] {
                let text = format!(
                    "[prune]\nimportance = \"{importance}\"\nglobal = {global}\ncalibration_batches = 2\n\
                     [layers.\"*\"]\nprune = 0.5\n"
                );
                let (plan, _) = read_plan(&text, Path::new("p.toml"), &g).unwrap();
                let c = compress(&g, &plan, Some(&data)).unwrap();
                // Half the channels are gone in all (local) or in total (global).
                let a = crate::size::account(&c).unwrap();
                assert!(
                    a.params < g.num_params() as u64 * 45 / 100,
                    "{importance} global={global}: {} of {}",
                    a.params,
                    g.num_params()
                );
                let x = data.x.narrow(0, 0, 4).unwrap();
                assert_eq!(c.forward(&x).unwrap().dims(), &[4, 10]);
            }
        }
    }

    #[test]
    fn a_plan_written_out_reads_back_the_same() {
        let g = sculpt_nn::zoo::build("resnet-8", &[1, 16, 16], 10, 0).unwrap();
        let text = "[sparsify]\nschedule = \"agp\"\n[distill]\nkind = \"both\"\n\
                    [layers.\"*\"]\nbits = 6\nprune = 0.25\nact_bits = 8\n[layers.fc]\nrank = 0.5\n";
        let (plan, _) = read_plan(text, Path::new("p.toml"), &g).unwrap();
        let written = toml::to_string(&plan).unwrap();
        let (again, _) = read_plan(&written, Path::new("w.toml"), &g).unwrap();
        assert_eq!(again, plan);
    }

    #[test]
    fn structure_is_known_before_fine_tuning_and_the_input_is_untouched() {
        let g = mlp();
        let before = g.params["fc1.weight"].to_vec2::<f32>().unwrap();
        let mut plan = CompressionPlan::default();
        plan.layers.insert(
            "fc1".into(),
            LayerPlan {
                prune: 0.5,
                bits: 4,
                ..LayerPlan::default()
            },
        );
        assert_eq!(plan.passes(&g), vec![Pass::Prune, Pass::Quantize]);
        let c = compress(&g, &plan, None).unwrap();
        assert_eq!(c.param("fc1.weight").unwrap().dims(), &[128, 64]);
        assert_eq!(c.weight_bits("fc1.weight"), 4);
        assert_eq!(g.params["fc1.weight"].to_vec2::<f32>().unwrap(), before);
        assert!(g.spec.weight_quant.is_empty());
    }
}
