//! ONNX → sculpt graph. The ops a PyTorch classifier exports become sculpt ops with
//! PyTorch's parameter names kept from the initializers:
//!
//! - `Gemm` (with `transB`, `alpha`, `beta`) and `MatMul` followed by `Add` of a bias → Linear;
//! - `Conv` (square kernels, symmetric padding, any `group`) → Conv2d;
//! - `BatchNormalization` → BatchNorm2d; `Relu`; `MaxPool` and `AveragePool` (no padding);
//!   `GlobalAveragePool`; `Flatten`; `Add` of two activations;
//! - `Reshape` to `[batch, -1]`, including the shape arithmetic (`Shape`, `Gather`,
//!   `Unsqueeze`, `Concat`) that `x.view(x.size(0), -1)` exports → Flatten;
//! - `Identity`, `Dropout` and `Constant` are folded away, and a final `Softmax` or
//!   `LogSoftmax` is dropped (the argmax and the distillation targets are unchanged).
//!
//! Anything else fails with one error naming the op and the node.

use std::collections::{BTreeMap, HashMap};

use candle_core::Tensor;
use sculpt_nn::{Graph, GraphSpec, Node, Op};

use crate::error::{OnnxError, Result};
use crate::pb;

/// The ops `import` understands, for messages.
pub const SUPPORTED: &str = "Gemm, MatMul (+ Add), Conv, BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape (to [batch, -1]), Add, Identity, Dropout, Constant, and a final Softmax or LogSoftmax";

/// A constant tensor of the ONNX graph: f32 values or integers.
#[derive(Debug, Clone)]
enum Const {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<usize>, Vec<i64>),
}

/// What an ONNX value is in the sculpt graph being built.
#[derive(Debug, Clone)]
enum Value {
    /// An activation: the sculpt node that computes it (`input` for the graph input), and
    /// its per-sample shape.
    Act { node: String, shape: Vec<usize> },
    /// A constant (an initializer or a `Constant` node's output).
    Const(Const),
    /// Shape arithmetic on an activation (`Shape` and what follows it): only a `Reshape`
    /// may consume it.
    /// With the number of elements it holds, when known (the target of `x.view(n, -1)`
    /// is two: the batch, then -1).
    ShapeOf(Option<usize>),
}

fn tensor(t: &pb::TensorProto, node: &str) -> Result<Const> {
    let invalid = |m: String| OnnxError::Invalid {
        node: node.to_string(),
        message: m,
    };
    if !t.external_data.is_empty() || t.data_location == 1 {
        return Err(invalid(format!(
            "tensor `{}` keeps its data in an external file; export the model with the weights inside (onnx.save(..., save_as_external_data=False))",
            t.name
        )));
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| invalid(format!("tensor `{}` has dimension {d}", t.name)))
        })
        .collect::<Result<_>>()?;
    let count: usize = dims.iter().product();
    let raw = &t.raw_data;
    let width = match t.data_type {
        pb::data_type::DOUBLE | pb::data_type::INT64 => 8,
        _ => 4,
    };
    if !raw.is_empty() && raw.len() != count * width {
        return Err(invalid(format!(
            "tensor `{}` has {} bytes of data for shape {dims:?}",
            t.name,
            raw.len()
        )));
    }
    let check = |n: usize| {
        if n == count {
            Ok(())
        } else {
            Err(invalid(format!(
                "tensor `{}` holds {n} values for shape {dims:?}",
                t.name
            )))
        }
    };
    Ok(match t.data_type {
        pb::data_type::FLOAT => {
            let v: Vec<f32> = if raw.is_empty() {
                t.float_data.clone()
            } else {
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            };
            check(v.len())?;
            Const::F32(dims, v)
        }
        pb::data_type::DOUBLE => {
            let v: Vec<f32> = if raw.is_empty() {
                t.double_data.iter().map(|&x| x as f32).collect()
            } else {
                raw.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                    .collect()
            };
            check(v.len())?;
            Const::F32(dims, v)
        }
        pb::data_type::INT64 => {
            let v: Vec<i64> = if raw.is_empty() {
                t.int64_data.clone()
            } else {
                raw.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect()
            };
            check(v.len())?;
            Const::I64(dims, v)
        }
        pb::data_type::INT32 => {
            let v: Vec<i64> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as i64).collect()
            } else {
                raw.chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                    .collect()
            };
            check(v.len())?;
            Const::I64(dims, v)
        }
        other => {
            return Err(invalid(format!(
                "tensor `{}` has ONNX data type {other}; float, double, int32 and int64 are read",
                t.name
            )))
        }
    })
}

struct Attrs<'a>(&'a pb::NodeProto);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&pb::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

/// A name usable as a sculpt node name: letters, digits and `_`.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let s = s.trim_matches('_').to_string();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("n_{s}")
    } else {
        s
    }
}

/// The module name PyTorch gave a parameter: `fc1.weight` → `fc1`, `layer1.0.conv1.weight`
/// → `layer1.0.conv1`.
fn module_of(initializer: &str) -> Option<&str> {
    initializer
        .strip_suffix(".weight")
        .or_else(|| initializer.strip_suffix(".bias"))
}

struct Builder {
    nodes: Vec<Node>,
    params: BTreeMap<String, Tensor>,
    values: HashMap<String, Value>,
    used: std::collections::HashSet<String>,
    /// Linear nodes made from a MatMul that may still take an Add's bias.
    open_matmul: HashMap<String, usize>,
}

impl Builder {
    fn unique(&mut self, wanted: &str) -> String {
        let base = if wanted.contains('.') {
            // PyTorch module paths keep their dots as parameter names do: `layer1.0.conv1`.
            wanted
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        } else {
            sanitize(wanted)
        };
        let mut name = base.clone();
        let mut k = 1;
        while name == "input" || self.used.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.used.insert(name.clone());
        name
    }

    fn param(&mut self, name: String, shape: &[usize], values: Vec<f32>) -> Result<()> {
        let t = Tensor::from_vec(values, shape, &sculpt_nn::device())?;
        self.params.insert(name, t);
        Ok(())
    }
}

fn shape_of_features(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Reads an ONNX model and builds the sculpt graph it describes.
pub fn import_model(model: &pb::ModelProto, name: &str) -> Result<Graph> {
    let graph = model.graph.as_ref().ok_or_else(|| OnnxError::Invalid {
        node: "(model)".into(),
        message: "the model has no graph".into(),
    })?;
    let mut b = Builder {
        nodes: Vec::new(),
        params: BTreeMap::new(),
        values: HashMap::new(),
        used: Default::default(),
        open_matmul: HashMap::new(),
    };
    // How many nodes (and graph outputs) read each value: a MatMul's bias is folded
    // into it only when the Add is its one reader.
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for n in &graph.node {
        for i in &n.input {
            *readers.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &graph.output {
        *readers.entry(o.name.as_str()).or_default() += 1;
    }
    if graph.output.len() != 1 {
        return Err(OnnxError::Invalid {
            node: "(graph)".into(),
            message: format!(
                "the graph has {} outputs ({}); sculpt imports a classifier with one output, its logits",
                graph.output.len(),
                graph.output.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let mut initializer_names: HashMap<String, String> = HashMap::new();
    for t in &graph.initializer {
        b.values
            .insert(t.name.clone(), Value::Const(tensor(t, &t.name)?));
        initializer_names.insert(t.name.clone(), t.name.clone());
    }
    // The graph input: the one input that is not an initializer.
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !b.values.contains_key(&i.name))
        .collect();
    if inputs.len() != 1 {
        return Err(OnnxError::Invalid {
            node: "(graph)".into(),
            message: format!(
                "the graph has {} inputs besides its weights ({}); sculpt imports a classifier with one input",
                inputs.len(),
                inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let input = inputs[0];
    let dims: Vec<Option<i64>> = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|s| s.dim.iter().map(|d| d.dim_value).collect())
        .unwrap_or_default();
    if dims.len() < 2 || dims[1..].iter().any(|d| d.is_none_or(|v| v <= 0)) {
        return Err(OnnxError::Invalid {
            node: input.name.clone(),
            message: format!(
                "the input's shape is {dims:?}: sculpt needs [batch, features…] with every dimension after the batch fixed"
            ),
        });
    }
    let input_shape: Vec<usize> = dims[1..].iter().map(|d| d.unwrap_or(0) as usize).collect();
    let features = input_shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&f| f <= 1 << 26);
    if features.is_none() {
        return Err(OnnxError::Invalid {
            node: input.name.clone(),
            message: format!("an input of shape {input_shape:?} is too large for sculpt (at most 2^26 values a sample)"),
        });
    }
    b.values.insert(
        input.name.clone(),
        Value::Act {
            node: "input".into(),
            shape: input_shape.clone(),
        },
    );
    let last_real = graph.node.iter().rposition(|n| {
        !matches!(
            n.op_type.as_str(),
            "Softmax" | "LogSoftmax" | "Identity" | "Dropout"
        )
    });

    for (index, n) in graph.node.iter().enumerate() {
        let node_name = if n.name.is_empty() {
            format!("{}_{index}", n.op_type)
        } else {
            n.name.clone()
        };
        let invalid = |m: String| OnnxError::Invalid {
            node: node_name.clone(),
            message: m,
        };
        let attrs = Attrs(n);
        let value = |k: usize| -> Result<Value> {
            let name = n
                .input
                .get(k)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(format!("{} has no input {k}", n.op_type)))?;
            b.values.get(name).cloned().ok_or_else(|| {
                invalid(format!(
                    "input `{name}` is not produced by any earlier node"
                ))
            })
        };
        let act = |k: usize| -> Result<(String, Vec<usize>)> {
            match value(k)? {
                Value::Act { node, shape } => Ok((node, shape)),
                _ => Err(invalid(format!(
                    "{} input {k} must be an activation, not a constant",
                    n.op_type
                ))),
            }
        };
        let constant = |k: usize| -> Result<Const> {
            match value(k)? {
                Value::Const(c) => Ok(c),
                _ => Err(invalid(format!(
                    "{} input {k} must be a weight (an initializer or a Constant)",
                    n.op_type
                ))),
            }
        };
        let output = n
            .output
            .first()
            .cloned()
            .ok_or_else(|| invalid("the node has no output".into()))?;
        // The name of a layer with weights: its PyTorch module, from the weight's name.
        let module_name = |k: usize| -> String {
            n.input
                .get(k)
                .and_then(|w| initializer_names.get(w))
                .and_then(|w| module_of(w).map(str::to_string))
                .unwrap_or_else(|| node_name.clone())
        };
        let produced: Value = match n.op_type.as_str() {
            "Constant" => {
                let t = attrs
                    .get("value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| {
                        invalid("a Constant without a tensor `value` is not read".into())
                    })?;
                Value::Const(tensor(t, &node_name)?)
            }
            "Identity" | "Dropout" => value(0)?,
            "Softmax" | "LogSoftmax" => {
                if Some(index) < last_real {
                    return Err(OnnxError::Unsupported {
                        op: n.op_type.clone(),
                        node: node_name.clone(),
                        supported: SUPPORTED,
                    });
                }
                value(0)?
            }
            "Shape" => {
                let (_, shape) = act(0)?;
                Value::ShapeOf(Some(shape.len() + 1))
            }
            "Gather" | "Unsqueeze" | "Concat" | "Cast" | "Slice" | "Squeeze" => {
                // Shape arithmetic: any input that is a shape makes the result one.
                let mut any_shape = false;
                // Elements of a Concat's result, when every part's is known; a Gather of
                // one index or an Unsqueeze of a scalar gives one.
                let mut elements = Some(0usize);
                for k in 0..n.input.len() {
                    match value(k)? {
                        Value::ShapeOf(e) => {
                            any_shape = true;
                            elements = elements.zip(e).map(|(a, b)| a + b);
                        }
                        Value::Const(c) => {
                            let len = match &c {
                                Const::F32(_, v) => v.len(),
                                Const::I64(_, v) => v.len(),
                            };
                            elements = elements.map(|a| a + len);
                        }
                        Value::Act { .. } => {
                            return Err(OnnxError::Unsupported {
                                op: n.op_type.clone(),
                                node: node_name.clone(),
                                supported: SUPPORTED,
                            })
                        }
                    }
                }
                if !any_shape {
                    return Err(OnnxError::Unsupported {
                        op: n.op_type.clone(),
                        node: node_name.clone(),
                        supported: SUPPORTED,
                    });
                }
                Value::ShapeOf(match n.op_type.as_str() {
                    "Concat" => elements,
                    "Gather" | "Unsqueeze" => Some(1),
                    "Cast" => match value(0)? {
                        Value::ShapeOf(e) => e,
                        _ => None,
                    },
                    _ => None,
                })
            }
            "Flatten" | "Reshape" => {
                let (from, shape) = act(0)?;
                if n.op_type == "Flatten" && attrs.int("axis", 1) != 1 {
                    return Err(invalid(format!(
                        "Flatten with axis {} (only axis 1, keeping the batch, is read)",
                        attrs.int("axis", 1)
                    )));
                }
                if n.op_type == "Reshape" {
                    match value(1)? {
                        Value::ShapeOf(Some(2)) => {}
                        Value::ShapeOf(e) => {
                            return Err(invalid(format!(
                                "Reshape to a shape computed from the input, of {}: only a flatten to [batch, -1] is read",
                                e.map_or("unknown rank".to_string(), |e| format!("rank {e}"))
                            )))
                        }
                        Value::Const(Const::I64(dims, target)) if dims.len() == 1 => {
                            let features = shape_of_features(&shape) as i64;
                            // [0, -1], [0, F], [-1, F], and a batch-1 export's [1, -1] or [1, F].
                            let flat = target.len() == 2
                                && match (target[0], target[1]) {
                                    (0 | 1, t) => t == -1 || t == features,
                                    (-1, t) => t == features,
                                    _ => false,
                                };
                            if !flat {
                                return Err(invalid(format!(
                                    "Reshape to {target:?}: only a flatten to [batch, -1] is read"
                                )));
                            }
                        }
                        _ => return Err(invalid("Reshape's target shape is not read".into())),
                    }
                }
                if shape.len() == 1 {
                    Value::Act { node: from, shape }
                } else if shape.len() == 3
                    && shape[1] == 1
                    && shape[2] == 1
                    && b.nodes
                        .last()
                        .is_some_and(|l| l.name == from && matches!(l.op, Op::GlobalAvgPool))
                {
                    // GlobalAveragePool's [c, 1, 1] is already [c] in sculpt.
                    Value::Act {
                        node: from,
                        shape: vec![shape[0]],
                    }
                } else {
                    let name = b.unique(&node_name);
                    b.nodes.push(Node {
                        name: name.clone(),
                        op: Op::Flatten,
                        inputs: vec![from],
                    });
                    Value::Act {
                        node: name,
                        shape: vec![shape_of_features(&shape)],
                    }
                }
            }
            "Relu" => {
                let (from, shape) = act(0)?;
                let name = b.unique(&node_name);
                b.nodes.push(Node {
                    name: name.clone(),
                    op: Op::Relu,
                    inputs: vec![from],
                });
                Value::Act { node: name, shape }
            }
            "Gemm" | "MatMul" => {
                let (from, shape) = act(0)?;
                if shape.len() != 1 {
                    return Err(invalid(format!(
                        "{} on a {}-D sample {shape:?}; flatten it first",
                        n.op_type,
                        shape.len()
                    )));
                }
                let Const::F32(wshape, w) = constant(1)? else {
                    return Err(invalid("the weight is not a float tensor".into()));
                };
                if wshape.len() != 2 {
                    return Err(invalid(format!("the weight has shape {wshape:?}, not 2-D")));
                }
                if n.op_type == "Gemm" && attrs.int("transA", 0) != 0 {
                    return Err(invalid("Gemm with transA = 1 is not read".into()));
                }
                // sculpt's weight is [out, in]: Gemm's B as is with transB = 1, else B^T;
                // MatMul's B is [in, out].
                let trans_b = n.op_type == "Gemm" && attrs.int("transB", 0) != 0;
                let (out_f, in_f) = if trans_b {
                    (wshape[0], wshape[1])
                } else {
                    (wshape[1], wshape[0])
                };
                if in_f != shape[0] {
                    return Err(invalid(format!(
                        "the weight takes {in_f} features but the input has {}",
                        shape[0]
                    )));
                }
                let alpha = if n.op_type == "Gemm" {
                    attrs.float("alpha", 1.0)
                } else {
                    1.0
                };
                let weight: Vec<f32> = if trans_b {
                    w.iter().map(|x| x * alpha).collect()
                } else {
                    (0..out_f)
                        .flat_map(|o| (0..in_f).map(move |i| (o, i)))
                        .map(|(o, i)| w[i * out_f + o] * alpha)
                        .collect()
                };
                let bias = if n.op_type == "Gemm" && n.input.len() > 2 && !n.input[2].is_empty() {
                    let Const::F32(bshape, bv) = constant(2)? else {
                        return Err(invalid("the bias is not a float tensor".into()));
                    };
                    let beta = attrs.float("beta", 1.0);
                    if bv.len() == out_f {
                        Some(bv.iter().map(|x| x * beta).collect::<Vec<f32>>())
                    } else if bv.len() == 1 {
                        Some(vec![bv[0] * beta; out_f])
                    } else {
                        return Err(invalid(format!(
                            "the bias has shape {bshape:?} for {out_f} outputs"
                        )));
                    }
                } else {
                    None
                };
                let name = b.unique(&module_name(1));
                b.param(format!("{name}.weight"), &[out_f, in_f], weight)?;
                let has_bias = bias.is_some();
                if let Some(bias) = bias {
                    b.param(format!("{name}.bias"), &[out_f], bias)?;
                }
                b.nodes.push(Node {
                    name: name.clone(),
                    op: Op::Linear {
                        in_features: in_f,
                        out_features: out_f,
                        bias: has_bias,
                    },
                    inputs: vec![from],
                });
                if n.op_type == "MatMul" && readers.get(output.as_str()) == Some(&1) {
                    b.open_matmul.insert(name.clone(), b.nodes.len() - 1);
                }
                Value::Act {
                    node: name,
                    shape: vec![out_f],
                }
            }
            "Add" => {
                let (a, c) = (value(0)?, value(1)?);
                match (a, c) {
                    (Value::Act { node: x, shape: sx }, Value::Act { node: y, shape: sy }) => {
                        if sx != sy {
                            return Err(invalid(format!("Add of shapes {sx:?} and {sy:?}")));
                        }
                        let name = b.unique(&node_name);
                        b.nodes.push(Node {
                            name: name.clone(),
                            op: Op::Add,
                            inputs: vec![x, y],
                        });
                        Value::Act {
                            node: name,
                            shape: sx,
                        }
                    }
                    (Value::Act { node, shape }, Value::Const(Const::F32(_, v)))
                    | (Value::Const(Const::F32(_, v)), Value::Act { node, shape }) => {
                        // The bias of a MatMul: it becomes the Linear's bias.
                        let Some(&at) = b.open_matmul.get(&node) else {
                            return Err(invalid(
                                "Add of a constant is read only as the bias of a MatMul".into(),
                            ));
                        };
                        let out_f = shape[0];
                        let bias = if v.len() == out_f {
                            v
                        } else if v.len() == 1 {
                            vec![v[0]; out_f]
                        } else {
                            return Err(invalid(format!(
                                "a bias of {} values for {out_f} outputs",
                                v.len()
                            )));
                        };
                        b.param(format!("{node}.bias"), &[out_f], bias)?;
                        if let Op::Linear { bias, .. } = &mut b.nodes[at].op {
                            *bias = true;
                        }
                        b.open_matmul.remove(&node);
                        Value::Act { node, shape }
                    }
                    _ => {
                        return Err(invalid("Add of these inputs is not read".into()));
                    }
                }
            }
            "Conv" => {
                let (from, shape) = act(0)?;
                if shape.len() != 3 {
                    return Err(invalid(format!(
                        "Conv on a sample of shape {shape:?}, not [c, h, w]"
                    )));
                }
                let Const::F32(wshape, w) = constant(1)? else {
                    return Err(invalid("the weight is not a float tensor".into()));
                };
                if wshape.len() != 4 || wshape[2] != wshape[3] {
                    return Err(invalid(format!(
                        "a kernel of shape {wshape:?}: only square 2-D kernels are read"
                    )));
                }
                let group = attrs.int("group", 1);
                if group < 1 {
                    return Err(invalid(format!("group = {group}")));
                }
                let groups = group as usize;
                if let Some(ks) = attrs.ints("kernel_shape") {
                    if ks.len() != 2 || ks[0] as usize != wshape[2] || ks[1] as usize != wshape[3] {
                        return Err(invalid(format!(
                            "kernel_shape {ks:?} does not match the weight's {:?}",
                            &wshape[2..]
                        )));
                    }
                }
                let k = wshape[2];
                let strides = attrs.ints("strides").unwrap_or(vec![1, 1]);
                let pads = attrs.ints("pads").unwrap_or(vec![0, 0, 0, 0]);
                let dilations = attrs.ints("dilations").unwrap_or(vec![1, 1]);
                if let Some(p) = attrs
                    .string("auto_pad")
                    .filter(|p| p != "NOTSET" && !p.is_empty())
                {
                    return Err(invalid(format!(
                        "auto_pad = {p} is not read; export with explicit pads"
                    )));
                }
                if strides.len() != 2 || strides[0] != strides[1] || strides[0] < 1 {
                    return Err(invalid(format!(
                        "strides {strides:?}: only equal strides of 1 or more are read"
                    )));
                }
                if pads.len() != 4 || pads.iter().any(|&p| p != pads[0] || p < 0) {
                    return Err(invalid(format!(
                        "pads {pads:?}: only the same padding on every side is read"
                    )));
                }
                if dilations.iter().any(|&d| d != 1) {
                    return Err(invalid(format!("dilations {dilations:?} are not read")));
                }
                let (out_c, in_c) = (wshape[0], wshape[1] * groups);
                if out_c % groups != 0 {
                    return Err(invalid(format!(
                        "{out_c} output channels do not split into {groups} groups"
                    )));
                }
                if in_c != shape[0] {
                    return Err(invalid(format!(
                        "the kernel reads {in_c} channels but the input has {}",
                        shape[0]
                    )));
                }
                let (stride, padding) = (strides[0] as usize, pads[0] as usize);
                let side = |x: usize| (x + 2 * padding).saturating_sub(k) / stride + 1;
                let has_bias = n.input.len() > 2 && !n.input[2].is_empty();
                let bias = if has_bias {
                    let Const::F32(_, bv) = constant(2)? else {
                        return Err(invalid("the bias is not a float tensor".into()));
                    };
                    if bv.len() != out_c {
                        return Err(invalid(format!(
                            "a bias of {} values for {out_c} channels",
                            bv.len()
                        )));
                    }
                    Some(bv)
                } else {
                    None
                };
                let name = b.unique(&module_name(1));
                b.param(format!("{name}.weight"), &wshape, w)?;
                if let Some(bv) = bias {
                    b.param(format!("{name}.bias"), &[out_c], bv)?;
                }
                b.nodes.push(Node {
                    name: name.clone(),
                    op: Op::Conv2d {
                        in_channels: in_c,
                        out_channels: out_c,
                        kernel_size: k,
                        stride,
                        padding,
                        groups,
                        bias: has_bias,
                    },
                    inputs: vec![from],
                });
                Value::Act {
                    node: name,
                    shape: vec![out_c, side(shape[1]), side(shape[2])],
                }
            }
            "BatchNormalization" => {
                let (from, shape) = act(0)?;
                let mut tensors = Vec::new();
                for k in 1..5 {
                    let Const::F32(_, v) = constant(k)? else {
                        return Err(invalid(
                            "a batch-norm statistic is not a float tensor".into(),
                        ));
                    };
                    if v.len() != shape[0] {
                        return Err(invalid(format!(
                            "{} values for {} channels",
                            v.len(),
                            shape[0]
                        )));
                    }
                    tensors.push(v);
                }
                let name = b.unique(&module_name(1));
                let c = shape[0];
                for (suffix, v) in ["weight", "bias", "running_mean", "running_var"]
                    .iter()
                    .zip(tensors)
                {
                    b.param(format!("{name}.{suffix}"), &[c], v)?;
                }
                b.nodes.push(Node {
                    name: name.clone(),
                    op: Op::BatchNorm2d {
                        num_features: c,
                        eps: attrs.float("epsilon", 1e-5) as f64,
                        // ONNX's momentum weighs the running value; PyTorch's the new one.
                        momentum: 1.0 - attrs.float("momentum", 0.9) as f64,
                    },
                    inputs: vec![from],
                });
                Value::Act { node: name, shape }
            }
            "MaxPool" | "AveragePool" => {
                let (from, shape) = act(0)?;
                if shape.len() != 3 {
                    return Err(invalid(format!(
                        "{} on a sample of shape {shape:?}, not [c, h, w]",
                        n.op_type
                    )));
                }
                if attrs
                    .ints("dilations")
                    .is_some_and(|d| d.iter().any(|&x| x != 1))
                {
                    return Err(invalid("dilated pooling is not read".into()));
                }
                let kernel = attrs.ints("kernel_shape").unwrap_or_default();
                if kernel.len() != 2 || kernel[0] != kernel[1] {
                    return Err(invalid(format!(
                        "kernel_shape {kernel:?}: only square pools are read"
                    )));
                }
                let pads = attrs.ints("pads").unwrap_or_default();
                if pads.iter().any(|&p| p != 0) || attrs.int("ceil_mode", 0) != 0 {
                    return Err(invalid("padded or ceil-mode pooling is not read".into()));
                }
                let k = kernel[0] as usize;
                // ONNX's default stride is 1 (PyTorch's export always writes it).
                let strides = attrs.ints("strides").unwrap_or(vec![1, 1]);
                if k == 0 || k > shape[1] || k > shape[2] {
                    return Err(invalid(format!(
                        "a {k}×{k} pool on a {}×{} input",
                        shape[1], shape[2]
                    )));
                }
                if strides.len() != 2 || strides[0] != strides[1] || strides[0] < 1 {
                    return Err(invalid(format!(
                        "strides {strides:?}: only equal strides are read"
                    )));
                }
                let stride = strides[0] as usize;
                let name = b.unique(&node_name);
                let stride_opt = (stride != k).then_some(stride);
                b.nodes.push(Node {
                    name: name.clone(),
                    op: if n.op_type == "MaxPool" {
                        Op::MaxPool2d {
                            kernel_size: k,
                            stride: stride_opt,
                        }
                    } else {
                        Op::AvgPool2d {
                            kernel_size: k,
                            stride: stride_opt,
                        }
                    },
                    inputs: vec![from],
                });
                let side = |x: usize| x.saturating_sub(k) / stride + 1;
                Value::Act {
                    node: name,
                    shape: vec![shape[0], side(shape[1]), side(shape[2])],
                }
            }
            "GlobalAveragePool" => {
                let (from, shape) = act(0)?;
                let name = b.unique(&node_name);
                b.nodes.push(Node {
                    name: name.clone(),
                    op: Op::GlobalAvgPool,
                    inputs: vec![from],
                });
                // ONNX keeps [c, 1, 1]; a Flatten after it is folded (see above).
                Value::Act {
                    node: name,
                    shape: vec![shape[0], 1, 1],
                }
            }
            other => {
                return Err(OnnxError::Unsupported {
                    op: other.to_string(),
                    node: node_name.clone(),
                    supported: SUPPORTED,
                })
            }
        };
        b.values.insert(output, produced);
    }
    let out_name = graph
        .output
        .first()
        .map(|o| o.name.clone())
        .ok_or_else(|| OnnxError::Invalid {
            node: "(graph)".into(),
            message: "the graph has no output".into(),
        })?;
    let (output, shape) = match b.values.get(&out_name) {
        Some(Value::Act { node, shape }) => (node.clone(), shape.clone()),
        _ => {
            return Err(OnnxError::Invalid {
                node: out_name,
                message: "the graph's output is not computed from its input".into(),
            })
        }
    };
    if shape.len() != 1 {
        return Err(OnnxError::Invalid {
            node: out_name,
            message: format!(
                "the output has per-sample shape {shape:?}; a classifier's logits are [classes]"
            ),
        });
    }
    // Drop what the output does not depend on (an unused branch).
    let mut live: std::collections::HashSet<String> =
        std::collections::HashSet::from([output.clone()]);
    for n in b.nodes.iter().rev() {
        if live.contains(&n.name) {
            live.extend(n.inputs.iter().cloned());
        }
    }
    b.nodes.retain(|n| live.contains(&n.name));
    let params = std::mem::take(&mut b.params)
        .into_iter()
        .filter(|(k, _)| {
            k.rsplit_once('.')
                .is_some_and(|(node, _)| live.contains(node))
        })
        .collect::<BTreeMap<_, _>>();
    b.params = params;
    let spec = GraphSpec {
        name: name.to_string(),
        input_shape,
        num_classes: shape[0],
        nodes: b.nodes,
        output,
        weight_quant: Default::default(),
        sparse: Default::default(),
        act_quant: Default::default(),
        preprocessing: None,
    };
    spec.summarize().map_err(|e| OnnxError::Invalid {
        node: "(graph)".into(),
        message: format!("the imported graph does not check: {e}"),
    })?;
    Ok(Graph::new(spec, b.params)?)
}
