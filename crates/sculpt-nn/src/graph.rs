//! The model graph IR. A graph is plain data: a list of named nodes, each an op with named
//! inputs, plus a map of named parameter tensors in PyTorch naming (`fc1.weight` is
//! `[out, in]`). Nodes are kept in topological order, so the forward pass is one walk.
//! Compression passes take a graph and return a new one.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};

/// The name by which a node refers to the graph's input.
pub const INPUT: &str = "input";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// `y = x W^T + b`, with `W` of shape `[out_features, in_features]`.
    Linear {
        in_features: usize,
        out_features: usize,
        #[serde(default = "default_true")]
        bias: bool,
    },
    Relu,
    /// Flattens every dimension after the batch dimension.
    Flatten,
}

fn default_true() -> bool {
    true
}

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
    /// Bit width the weights of a parameter are quantized to (absent: 32-bit float).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weight_bits: BTreeMap<String, u32>,
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
    /// The parameter tensors this spec requires, with their shapes, in node order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut shapes = Vec::new();
        for node in &self.nodes {
            if let Op::Linear {
                in_features,
                out_features,
                bias,
            } = node.op
            {
                shapes.push((
                    format!("{}.weight", node.name),
                    vec![out_features, in_features],
                ));
                if bias {
                    shapes.push((format!("{}.bias", node.name), vec![out_features]));
                }
            }
        }
        shapes
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
            if node.inputs.len() != 1 {
                return Err(NnError::Graph(format!(
                    "node `{}` takes exactly one input, got {}",
                    node.name,
                    node.inputs.len()
                )));
            }
            let input = shapes.get(node.inputs[0].as_str()).ok_or_else(|| {
                NnError::Graph(format!(
                    "node `{}` reads `{}`, which is not defined before it",
                    node.name, node.inputs[0]
                ))
            })?;
            let (out, params, flops, op) = match &node.op {
                Op::Linear {
                    in_features,
                    out_features,
                    bias,
                } => {
                    if input.len() != 1 || input[0] != *in_features {
                        return Err(NnError::Graph(format!(
                            "node `{}` expects {} input features but receives shape {:?}",
                            node.name, in_features, input
                        )));
                    }
                    let params = in_features * out_features + if *bias { *out_features } else { 0 };
                    let flops = 2 * (*in_features as u64) * (*out_features as u64)
                        + if *bias { *out_features as u64 } else { 0 };
                    (vec![*out_features], params, flops, "Linear")
                }
                Op::Relu => (
                    input.clone(),
                    0,
                    input.iter().product::<usize>() as u64,
                    "Relu",
                ),
                Op::Flatten => (vec![input.iter().product()], 0, 0, "Flatten"),
            };
            shapes.insert(node.name.as_str(), out.clone());
            rows.push(LayerSummary {
                name: node.name.clone(),
                op: op.to_string(),
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

/// A network: architecture plus weights.
#[derive(Debug, Clone)]
pub struct Graph {
    pub spec: GraphSpec,
    pub params: BTreeMap<String, Tensor>,
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

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.params.values().map(|t| t.elem_count()).sum()
    }

    /// FLOPs of one forward pass for one sample.
    pub fn flops(&self) -> Result<u64> {
        Ok(self.spec.summarize()?.iter().map(|r| r.flops).sum())
    }

    /// Forward pass with the stored parameters.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &|name| Ok(self.param(name)?.clone()))
    }

    /// Forward pass that looks each parameter up through `param`, so a caller can
    /// substitute trainable variables or fake-quantized weights without copying the graph.
    pub fn forward_with(
        &self,
        x: &Tensor,
        param: &dyn Fn(&str) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut values: BTreeMap<&str, Tensor> = BTreeMap::new();
        values.insert(INPUT, x.clone());
        for node in &self.spec.nodes {
            let input = values.get(node.inputs[0].as_str()).ok_or_else(|| {
                NnError::Graph(format!("node `{}` has no input value", node.name))
            })?;
            let out = match &node.op {
                Op::Linear { bias, .. } => {
                    let w = param(&format!("{}.weight", node.name))?;
                    let y = input.matmul(&w.t()?)?;
                    if *bias {
                        y.broadcast_add(&param(&format!("{}.bias", node.name))?)?
                    } else {
                        y
                    }
                }
                Op::Relu => input.relu()?,
                Op::Flatten => input.flatten_from(1)?,
            };
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
    if let Some(extra) = params
        .keys()
        .find(|k| !expected.iter().any(|(name, _)| name == *k))
    {
        return Err(NnError::UnexpectedTensor {
            path: path.to_path_buf(),
            name: extra.clone(),
        });
    }
    Ok(())
}
