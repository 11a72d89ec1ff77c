//! The model graph IR. A graph is plain data: a list of named nodes, each an op with named
//! inputs, plus a map of named parameter tensors in PyTorch naming (`fc1.weight` is
//! `[out, in]`). Nodes are kept in topological order, so the forward pass is one walk.
//! Compression passes take a graph and return a new one. What each op is (its parameters,
//! shapes, FLOPs and forward) lives in `ops`; the graph only walks the nodes and asks.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
pub use crate::ops::Op;
use crate::ops::{default_true, OpEnv, ParamDef};

/// The name by which a node refers to the graph's input.
pub const INPUT: &str = "input";

// No deny_unknown_fields here: serde cannot combine it with `flatten`. Unknown keys of a
// node still fail, in `Op`, which denies them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(flatten)]
    pub op: Op,
    /// Names of the nodes (or `input`) this node reads.
    pub inputs: Vec<String>,
}

/// The architecture, without weights: what `model.toml` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    pub name: String,
    /// Shape of one sample, without the batch dimension.
    pub input_shape: Vec<usize>,
    pub num_classes: usize,
    pub nodes: Vec<Node>,
    /// The node whose value is the graph's output (the logits).
    pub output: String,
    /// How each quantized weight is stored, by parameter name (absent: 32-bit float).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weight_quant: BTreeMap<String, WeightQuant>,
    /// Weights pruned without structure: their zeros are a mask that fine-tuning keeps and
    /// that size accounting stores as a sparse index.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub sparse: std::collections::BTreeSet<String>,
    /// Static quantization of the input activations of a layer, by layer (node) name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub act_quant: BTreeMap<String, ActQuant>,
    /// The input preprocessing the model was trained with. Absent in models from before
    /// the field and in hand-written specs that do not declare it: sculpt then feeds its
    /// own standardisation of the data, and says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
}

/// What a model expects of its input: it sees `(x * scale - mean) / std`, where `x` is
/// the raw value in the data file (0 to 255 for IDX and CIFAR-10 images, 0 to 16 for the
/// digits, the numbers themselves for CSV and parquet). `mean` and `std` hold one value
/// for every feature, one per channel (the first dimension of an image), or one per
/// feature. `[preprocessing]` with no keys declares a model that takes raw inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    #[serde(default = "one")]
    pub scale: f32,
    #[serde(default = "zero_vec")]
    pub mean: Vec<f32>,
    #[serde(default = "one_vec")]
    pub std: Vec<f32>,
}

fn one() -> f32 {
    1.0
}
fn zero_vec() -> Vec<f32> {
    vec![0.0]
}
fn one_vec() -> Vec<f32> {
    vec![1.0]
}

impl Preprocessing {
    /// Raw inputs: scale 1, mean 0, std 1.
    pub fn raw() -> Self {
        Preprocessing {
            scale: 1.0,
            mean: vec![0.0],
            std: vec![1.0],
        }
    }

    /// Per-feature `(a, b)` with `model input = raw * a + b`, for samples of
    /// `sample_shape`; an error names a length that fits neither 1, the channels nor the
    /// features, or a zero deviation.
    pub fn affine(
        &self,
        sample_shape: &[usize],
    ) -> std::result::Result<(Vec<f32>, Vec<f32>), String> {
        let features: usize = sample_shape.iter().product();
        let channels = if sample_shape.len() >= 2 {
            sample_shape[0]
        } else {
            features
        };
        let per = features / channels.max(1);
        let expand = |v: &[f32], what: &str| -> std::result::Result<Vec<f32>, String> {
            match v.len() {
                1 => Ok(vec![v[0]; features]),
                n if n == features => Ok(v.to_vec()),
                n if n == channels => Ok((0..features).map(|f| v[f / per]).collect()),
                n => Err(format!(
                    "preprocessing `{what}` has {n} values; give 1, one per channel ({channels}) or one per feature ({features})"
                )),
            }
        };
        let mean = expand(&self.mean, "mean")?;
        let std = expand(&self.std, "std")?;
        if !self.scale.is_finite() || self.scale == 0.0 {
            return Err(format!(
                "preprocessing `scale` is {}; it must be a finite non-zero number",
                self.scale
            ));
        }
        if let Some(s) = std.iter().find(|s| !s.is_finite() || **s == 0.0) {
            return Err(format!(
                "preprocessing `std` holds {s}; every deviation must be finite and non-zero"
            ));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(format!(
                "preprocessing `mean` holds {m}; every mean must be finite"
            ));
        }
        let a: Vec<f32> = std.iter().map(|s| self.scale / s).collect();
        let b: Vec<f32> = mean.iter().zip(&std).map(|(m, s)| -m / s).collect();
        if a.iter().chain(&b).any(|v| !v.is_finite()) {
            return Err(
                "preprocessing `std` is so small that (x * scale - mean) / std overflows".into(),
            );
        }
        Ok((a, b))
    }

    /// One line for messages: `x * 0.003922, mean 0.1307, std 0.3081` (long vectors
    /// summarised).
    pub fn describe(&self) -> String {
        let v = |x: &[f32]| {
            if x.len() <= 3 {
                x.iter()
                    .map(|a| format!("{a:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                format!("{} values, {:.4} … {:.4}", x.len(), x[0], x[x.len() - 1])
            }
        };
        format!(
            "x × {:.6}, then mean {} and std {}",
            self.scale,
            v(&self.mean),
            v(&self.std)
        )
    }
}

/// Static quantization of a layer's input activations: the range was fixed by calibration,
/// so inference needs no statistics. Unsigned codes `[0, 2^bits - 1]` with a zero point
/// when the activations are never negative (after a ReLU), signed symmetric codes
/// `[-(2^(bits-1) - 1), 2^(bits-1) - 1]` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActQuant {
    pub bits: u32,
    pub scale: f32,
    #[serde(default)]
    pub zero_point: i32,
    pub signed: bool,
}

impl ActQuant {
    /// The smallest and largest code.
    pub fn code_range(&self) -> (f64, f64) {
        if self.signed {
            let m = ((1u64 << (self.bits - 1)) - 1) as f64;
            (-m, m)
        } else {
            (0.0, ((1u64 << self.bits) - 1) as f64)
        }
    }

    /// Fake-quantizes `x`; gradients pass straight through (the STE), so quantization-aware
    /// training sees the quantized value in the forward pass only.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (low, high) = self.code_range();
        let zero = self.zero_point as f64;
        let q = ((x.detach() / self.scale as f64)?.round()? + zero)?.clamp(low, high)?;
        let q = ((q - zero)? * self.scale as f64)?;
        Ok((x + (q - x.detach())?)?)
    }
}

/// The storage of one quantized weight tensor. 16 bits means IEEE half precision (no
/// scales); 2 to 8 bits are integer codes with one scale per output channel (or one per
/// tensor), and a zero point per scale when asymmetric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightQuant {
    pub bits: u32,
    #[serde(default = "default_true")]
    pub per_channel: bool,
    #[serde(default = "default_true")]
    pub symmetric: bool,
}

impl WeightQuant {
    pub fn symmetric_per_channel(bits: u32) -> Self {
        WeightQuant {
            bits,
            per_channel: true,
            symmetric: true,
        }
    }
}

/// One row of a layer table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSummary {
    pub name: String,
    pub op: String,
    pub output_shape: Vec<usize>,
    pub params: usize,
    pub flops: u64,
}

impl GraphSpec {
    /// The tensors this spec requires (parameters and buffers), with their shapes, in node
    /// order and PyTorch naming.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.param_defs()
            .into_iter()
            .map(|(name, def)| (name, def.shape))
            .collect()
    }

    /// Every parameter and buffer as its op defines it, under its full name
    /// (`{node}.{local}`), in node order.
    pub fn param_defs(&self) -> Vec<(String, ParamDef)> {
        self.nodes
            .iter()
            .flat_map(|node| {
                node.op
                    .def()
                    .params()
                    .into_iter()
                    .map(move |p| (format!("{}.{}", node.name, p.name), p))
            })
            .collect()
    }

    /// Whether the named tensor is a buffer (running statistics), not trained by gradient.
    /// Decided by name, because callers hold only names; ops declare their buffers
    /// (`ParamDef::buffer`) under these names, which a test of `ops` checks.
    pub fn is_buffer(name: &str) -> bool {
        name.ends_with(".running_mean") || name.ends_with(".running_var")
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Names of the Linear nodes, in order.
    pub fn linear_layers(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Linear { .. }))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Names of the layers that hold weights (Linear and Conv2d: cost class `Weighted`), in
    /// order.
    pub fn weight_layers(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.op.def().cost() == crate::ops::CostClass::Weighted)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Checks names, input references and shapes, and returns the per-layer table
    /// (output shape per sample, params and FLOPs per sample).
    pub fn summarize(&self) -> Result<Vec<LayerSummary>> {
        let mut shapes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        shapes.insert(INPUT, self.input_shape.clone());
        let mut rows = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            if node.name == INPUT || shapes.contains_key(node.name.as_str()) {
                return Err(NnError::Graph(format!(
                    "node name `{}` is used twice",
                    node.name
                )));
            }
            let def = node.op.def();
            if node.inputs.len() != def.arity() {
                return Err(NnError::Graph(format!(
                    "node `{}` ({}) takes {} input(s), got {}",
                    node.name,
                    def.kind(),
                    def.arity(),
                    node.inputs.len()
                )));
            }
            let mut inputs: Vec<&[usize]> = Vec::with_capacity(node.inputs.len());
            for name in &node.inputs {
                let shape = shapes.get(name.as_str()).ok_or_else(|| {
                    NnError::Graph(format!(
                        "node `{}` reads `{}`, which is not defined before it",
                        node.name, name
                    ))
                })?;
                inputs.push(shape);
            }
            let inferred = def
                .infer(&inputs)
                .map_err(|message| NnError::Graph(format!("node `{}`: {message}", node.name)))?;
            let params = def
                .params()
                .iter()
                .filter(|p| !p.buffer)
                .map(|p| p.shape.iter().product::<usize>())
                .sum();
            let out = inferred.output;
            let flops = inferred.flops;
            shapes.insert(node.name.as_str(), out.clone());
            rows.push(LayerSummary {
                name: node.name.clone(),
                op: def.kind().to_string(),
                output_shape: out,
                params,
                flops,
            });
        }
        let out = shapes.get(self.output.as_str()).ok_or_else(|| {
            NnError::Graph(format!("output node `{}` does not exist", self.output))
        })?;
        if out != &vec![self.num_classes] {
            return Err(NnError::Graph(format!(
                "output `{}` has shape {:?}, expected [{}] logits",
                self.output, out, self.num_classes
            )));
        }
        Ok(rows)
    }
}

/// A network: architecture plus weights (parameters and buffers).
#[derive(Debug, Clone)]
pub struct Graph {
    pub spec: GraphSpec,
    pub params: BTreeMap<String, Tensor>,
}

/// How a forward pass runs. Evaluation uses running statistics and no dropout; training
/// uses batch statistics, records the new running statistics and draws dropout masks from
/// a seeded RNG.
pub struct ForwardContext {
    pub train: bool,
    pub rng: Option<rand::rngs::StdRng>,
    /// Running-statistics updates computed in a training pass, to be stored by the caller.
    pub buffer_updates: Vec<(String, Tensor)>,
    /// Nodes (or `input`) whose values the pass keeps in `captured`, for feature
    /// distillation and calibration.
    pub capture: std::collections::BTreeSet<String>,
    pub captured: BTreeMap<String, Tensor>,
}

impl ForwardContext {
    pub fn eval() -> Self {
        ForwardContext {
            train: false,
            rng: None,
            buffer_updates: Vec::new(),
            capture: Default::default(),
            captured: BTreeMap::new(),
        }
    }

    pub fn train(seed: u64) -> Self {
        use rand::SeedableRng;
        ForwardContext {
            rng: Some(rand::rngs::StdRng::seed_from_u64(seed)),
            train: true,
            ..Self::eval()
        }
    }

    /// Also keeps the values of `nodes`.
    pub fn capturing(mut self, nodes: impl IntoIterator<Item = String>) -> Self {
        self.capture.extend(nodes);
        self
    }
}

impl Graph {
    /// Builds a graph, checking that the parameters match the spec by name and shape.
    pub fn new(spec: GraphSpec, params: BTreeMap<String, Tensor>) -> Result<Self> {
        spec.summarize()?;
        check_params(&spec, &params, std::path::Path::new("<memory>"))?;
        Ok(Graph { spec, params })
    }

    pub fn param(&self, name: &str) -> Result<&Tensor> {
        self.params
            .get(name)
            .ok_or_else(|| NnError::Graph(format!("parameter `{name}` is missing")))
    }

    /// Number of nonzero scalar parameters (buffers excluded).
    pub fn nonzeros(&self) -> Result<usize> {
        let mut count = 0;
        for (name, t) in &self.params {
            if !GraphSpec::is_buffer(name) {
                count += t
                    .ne(0f32)?
                    .to_dtype(DType::F32)?
                    .sum_all()?
                    .to_scalar::<f32>()? as usize;
            }
        }
        Ok(count)
    }

    /// Bit width of a weight as stored (32 when it is not quantized).
    pub fn weight_bits(&self, name: &str) -> u32 {
        self.spec.weight_quant.get(name).map_or(32, |q| q.bits)
    }

    /// Number of scalar parameters (buffers excluded).
    pub fn num_params(&self) -> usize {
        self.params
            .iter()
            .filter(|(name, _)| !GraphSpec::is_buffer(name))
            .map(|(_, t)| t.elem_count())
            .sum()
    }

    /// FLOPs of one forward pass for one sample.
    pub fn flops(&self) -> Result<u64> {
        Ok(self.spec.summarize()?.iter().map(|r| r.flops).sum())
    }

    /// Forward pass in evaluation mode with the stored parameters.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &|name| Ok(self.param(name)?.clone()))
    }

    /// Forward pass in evaluation mode that looks each parameter up through `param`, so a
    /// caller can substitute fake-quantized weights without copying the graph.
    pub fn forward_with(
        &self,
        x: &Tensor,
        param: &dyn Fn(&str) -> Result<Tensor>,
    ) -> Result<Tensor> {
        self.forward_ctx(x, param, &mut ForwardContext::eval())
    }

    /// The general forward pass.
    pub fn forward_ctx(
        &self,
        x: &Tensor,
        param: &dyn Fn(&str) -> Result<Tensor>,
        ctx: &mut ForwardContext,
    ) -> Result<Tensor> {
        let mut values: BTreeMap<&str, Tensor> = BTreeMap::new();
        values.insert(INPUT, x.clone());
        if ctx.capture.contains(INPUT) {
            ctx.captured.insert(INPUT.to_string(), x.clone());
        }
        for node in &self.spec.nodes {
            let out = {
                let quantized;
                let mut inputs: Vec<&Tensor> = Vec::with_capacity(node.inputs.len());
                for name in &node.inputs {
                    inputs.push(values.get(name.as_str()).ok_or_else(|| {
                        NnError::Graph(format!("node `{}` has no input value", node.name))
                    })?);
                }
                // Static activation quantization applies to what a layer reads: its first
                // input.
                if let (Some(q), Some(first)) =
                    (self.spec.act_quant.get(&node.name), inputs.first_mut())
                {
                    quantized = q.apply(first)?;
                    *first = &quantized;
                }
                let mut env = OpEnv::new(&node.name, param, ctx);
                node.op.def().forward(&inputs, &mut env)?
            };
            if ctx.capture.contains(&node.name) {
                ctx.captured.insert(node.name.clone(), out.clone());
            }
            values.insert(node.name.as_str(), out);
        }
        values.remove(self.spec.output.as_str()).ok_or_else(|| {
            NnError::Graph(format!("output `{}` was not computed", self.spec.output))
        })
    }
}

/// Checks a parameter map against a spec and reports the first mismatch by name.
pub fn check_params(
    spec: &GraphSpec,
    params: &BTreeMap<String, Tensor>,
    path: &std::path::Path,
) -> Result<()> {
    let expected = spec.param_shapes();
    for (name, shape) in &expected {
        let tensor = params.get(name).ok_or_else(|| NnError::MissingTensor {
            path: path.to_path_buf(),
            name: name.clone(),
        })?;
        if tensor.dims() != shape.as_slice() {
            return Err(NnError::ShapeMismatch {
                path: path.to_path_buf(),
                name: name.clone(),
                expected: shape.clone(),
                found: tensor.dims().to_vec(),
            });
        }
        if tensor.dtype() != DType::F32 {
            return Err(NnError::Spec {
                path: path.to_path_buf(),
                message: format!("tensor `{name}` is {:?}, expected f32", tensor.dtype()),
            });
        }
    }
    // PyTorch's BatchNorm also saves `num_batches_tracked`, which nothing here needs.
    if let Some(extra) = params
        .keys()
        .filter(|k| !k.ends_with(".num_batches_tracked"))
        .find(|k| !expected.iter().any(|(name, _)| name == *k))
    {
        return Err(NnError::UnexpectedTensor {
            path: path.to_path_buf(),
            name: extra.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bn_graph() -> Graph {
        let spec = GraphSpec {
            name: "bn".into(),
            input_shape: vec![2, 3, 3],
            num_classes: 18,
            nodes: vec![
                Node {
                    name: "bn".into(),
                    op: Op::BatchNorm2d {
                        num_features: 2,
                        eps: 1e-5,
                        momentum: 0.1,
                    },
                    inputs: vec![INPUT.into()],
                },
                Node {
                    name: "flat".into(),
                    op: Op::Flatten,
                    inputs: vec!["bn".into()],
                },
            ],
            output: "flat".into(),
            weight_quant: BTreeMap::new(),
            sparse: Default::default(),
            act_quant: BTreeMap::new(),
            preprocessing: None,
        };
        let dev = crate::device();
        let params: BTreeMap<String, Tensor> = [
            ("bn.weight", vec![2f32, 1.]),
            ("bn.bias", vec![0.5f32, 0.]),
            ("bn.running_mean", vec![1f32, -1.]),
            ("bn.running_var", vec![4f32, 1.]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Tensor::from_vec(v, 2, &dev).unwrap()))
        .collect();
        Graph::new(spec, params).unwrap()
    }

    #[test]
    fn batch_norm_uses_batch_statistics_in_training_and_running_ones_in_evaluation() {
        let g = bn_graph();
        let x = Tensor::randn(3f32, 2.0, (4, 2, 3, 3), &crate::device()).unwrap();
        let mut ctx = ForwardContext::train(0);
        let y = g
            .forward_ctx(&x, &|n| Ok(g.param(n)?.clone()), &mut ctx)
            .unwrap();
        let y = y
            .reshape((4, 2, 9))
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .reshape((2, 36))
            .unwrap();
        let mean: Vec<f32> = y.mean(1).unwrap().to_vec1().unwrap();
        let sd: Vec<f32> = y
            .broadcast_sub(&y.mean_keepdim(1).unwrap())
            .unwrap()
            .sqr()
            .unwrap()
            .mean(1)
            .unwrap()
            .sqrt()
            .unwrap()
            .to_vec1()
            .unwrap();
        // weight (2, 1), bias (0.5, 0): normalised then scaled and shifted.
        assert!(
            (mean[0] - 0.5).abs() < 1e-4 && mean[1].abs() < 1e-4,
            "{mean:?}"
        );
        assert!(
            (sd[0] - 2.0).abs() < 1e-3 && (sd[1] - 1.0).abs() < 1e-3,
            "{sd:?}"
        );
        // Running statistics move 10% of the way to the batch's (unbiased variance).
        let xs = x.transpose(0, 1).unwrap().reshape((2, 36)).unwrap();
        let batch_mean: Vec<f32> = xs.mean(1).unwrap().to_vec1().unwrap();
        let updates: BTreeMap<String, Vec<f32>> = ctx
            .buffer_updates
            .iter()
            .map(|(k, t)| (k.clone(), t.to_vec1().unwrap()))
            .collect();
        let rm = &updates["bn.running_mean"];
        assert!((rm[0] - (0.9 * 1.0 + 0.1 * batch_mean[0])).abs() < 1e-5);
        assert!((rm[1] - (-0.9 + 0.1 * batch_mean[1])).abs() < 1e-5);
        // Evaluation: (x - running_mean) / sqrt(running_var + eps) * weight + bias.
        let one = Tensor::ones((1, 2, 3, 3), DType::F32, &crate::device()).unwrap();
        let y: Vec<f32> = g
            .forward(&one)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((y[0] - 0.5).abs() < 1e-5, "{}", y[0]); // (1 - 1) / 2 * 2 + 0.5
        assert!(
            (y[9] - 2.0 / (1.0f32 + 1e-5).sqrt()).abs() < 1e-5,
            "{}",
            y[9]
        ); // (1 + 1) / 1
    }
}
