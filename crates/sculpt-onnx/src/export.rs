//! sculpt graph → ONNX (opset 13), for onnxruntime, TensorRT, OpenVINO and tract.
//!
//! - Pruned models are plain, smaller dense ONNX: Gemm (`transB = 1`), Conv,
//!   BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool (then Flatten),
//!   Flatten and Add; Dropout is dropped.
//! - Quantized weights are QDQ: an integer initializer `<name>_quantized` with a per-output-
//!   channel `<name>_scale` and `<name>_zero_point`, then `DequantizeLinear` with `axis = 0`.
//!   Symmetric codes go in int8 with zero point 0 (within [-127, 127], as TensorRT expects);
//!   asymmetric ones in uint8 with their zero points. Widths under 8 bits are stored in
//!   these 8-bit containers, on the grid of their own width.
//! - Statically quantized activations pass through a QuantizeLinear → DequantizeLinear
//!   pair with the calibrated scale and zero point (uint8 for unsigned codes, int8 for
//!   signed); the containers clamp at 8 bits, so a narrower width's clamp is not expressed.
//! - 16-bit weights are written as their f32 values (already on the half-precision grid).
//!
//! The model takes the same input the sculpt model does: the preprocessing its spec
//! declares is the caller's to apply, and `metrics.json` and `model.toml` state it.

use std::collections::BTreeMap;

use candle_core::Tensor;
use sculpt_nn::{Graph, Op};

use crate::error::{OnnxError, Result};
use crate::pb;

/// Integer codes of one weight, ready for QDQ.
#[derive(Debug, Clone, PartialEq)]
pub struct QdqWeight {
    /// Codes in row-major order; signed when `signed`, else unsigned.
    pub codes: Vec<i32>,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i32>,
    pub signed: bool,
}

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_type::INT,
        i,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_type::INTS,
        ints,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_type::FLOAT,
        f,
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::data_type::FLOAT,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[usize]) -> pb::ValueInfoProto {
    let mut dim = vec![pb::Dimension {
        dim_value: None,
        dim_param: Some("batch".into()),
    }];
    dim.extend(dims.iter().map(|&d| pb::Dimension {
        dim_value: Some(d as i64),
        dim_param: None,
    }));
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            tensor_type: Some(pb::TypeProtoTensor {
                elem_type: pb::data_type::FLOAT,
                shape: Some(pb::TensorShapeProto { dim }),
            }),
        }),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: Vec<String>,
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs,
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1()?)
}

/// A weight as the graph reads it: an initializer, or a DequantizeLinear's output.
fn weight_input(
    graph: &Graph,
    qdq: &BTreeMap<String, QdqWeight>,
    name: &str,
    nodes: &mut Vec<pb::NodeProto>,
    initializers: &mut Vec<pb::TensorProto>,
) -> Result<String> {
    let t = graph.param(name)?;
    let dims = t.dims().to_vec();
    match qdq.get(name) {
        None => {
            initializers.push(float_tensor(name, &dims, &values(t)?));
            Ok(name.to_string())
        }
        Some(q) => {
            let (data_type, bytes): (i32, Vec<u8>) = if q.signed {
                (
                    pb::data_type::INT8,
                    q.codes
                        .iter()
                        .map(|&c| (c.clamp(-127, 127) as i8) as u8)
                        .collect(),
                )
            } else {
                (
                    pb::data_type::UINT8,
                    q.codes.iter().map(|&c| c.clamp(0, 255) as u8).collect(),
                )
            };
            let zp: Vec<u8> = q
                .zero_points
                .iter()
                .map(|&z| if q.signed { (z as i8) as u8 } else { z as u8 })
                .collect();
            let (codes_name, scale_name, zp_name) = (
                format!("{name}_quantized"),
                format!("{name}_scale"),
                format!("{name}_zero_point"),
            );
            initializers.push(pb::TensorProto {
                name: codes_name.clone(),
                dims: dims.iter().map(|&d| d as i64).collect(),
                data_type,
                raw_data: bytes,
                ..Default::default()
            });
            initializers.push(float_tensor(&scale_name, &[q.scales.len()], &q.scales));
            initializers.push(pb::TensorProto {
                name: zp_name.clone(),
                dims: vec![zp.len() as i64],
                data_type,
                raw_data: zp,
                ..Default::default()
            });
            let per_channel = q.scales.len() > 1;
            nodes.push(node(
                "DequantizeLinear",
                &format!("{name}_dequantize"),
                vec![codes_name, scale_name, zp_name],
                name,
                if per_channel {
                    vec![attr_int("axis", 0)]
                } else {
                    Vec::new()
                },
            ));
            Ok(name.to_string())
        }
    }
}

/// A layer's inputs: the activation, then its parameters `<layer>.<suffix>` in order.
fn layer_inputs(
    graph: &Graph,
    qdq: &BTreeMap<String, QdqWeight>,
    layer: &str,
    activation: &str,
    suffixes: &[&str],
    nodes: &mut Vec<pb::NodeProto>,
    initializers: &mut Vec<pb::TensorProto>,
) -> Result<Vec<String>> {
    let mut ins = vec![activation.to_string()];
    for suffix in suffixes {
        ins.push(weight_input(
            graph,
            qdq,
            &format!("{layer}.{suffix}"),
            nodes,
            initializers,
        )?);
    }
    Ok(ins)
}

/// Writes `graph` as an ONNX model. `qdq` holds the integer codes of the weights to write
/// in QDQ form (from `sculpt_compress::qdq_codes`); any other weight is written in f32.
pub fn export_model(graph: &Graph, qdq: &BTreeMap<String, QdqWeight>) -> Result<pb::ModelProto> {
    let spec = &graph.spec;
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let value_name = |n: &str| -> String {
        if n == "input" {
            "input".to_string()
        } else {
            format!("{n}_out")
        }
    };
    for n in &spec.nodes {
        let mut inputs: Vec<String> = n.inputs.iter().map(|i| value_name(i)).collect();
        // A statically quantized input: QuantizeLinear → DequantizeLinear.
        if let (Some(a), Some(first)) = (spec.act_quant.get(&n.name), inputs.first_mut()) {
            let data_type = if a.signed {
                pb::data_type::INT8
            } else {
                pb::data_type::UINT8
            };
            let zp = if a.signed {
                (a.zero_point as i8) as u8
            } else {
                a.zero_point.clamp(0, 255) as u8
            };
            let (s, z) = (
                format!("{}_act_scale", n.name),
                format!("{}_act_zero_point", n.name),
            );
            initializers.push(float_tensor(&s, &[], &[a.scale]));
            initializers.push(pb::TensorProto {
                name: z.clone(),
                dims: vec![],
                data_type,
                raw_data: vec![zp],
                ..Default::default()
            });
            let q = format!("{}_act_q", n.name);
            let dq = format!("{}_act_dq", n.name);
            nodes.push(node(
                "QuantizeLinear",
                &format!("{}_quantize_input", n.name),
                vec![first.clone(), s.clone(), z.clone()],
                &q,
                vec![],
            ));
            nodes.push(node(
                "DequantizeLinear",
                &format!("{}_dequantize_input", n.name),
                vec![q, s, z],
                &dq,
                vec![],
            ));
            *first = dq;
        }
        let out = value_name(&n.name);
        match &n.op {
            Op::Linear { bias, .. } => {
                let params: &[&str] = if *bias {
                    &["weight", "bias"]
                } else {
                    &["weight"]
                };
                let ins = layer_inputs(
                    graph,
                    qdq,
                    &n.name,
                    &inputs[0],
                    params,
                    &mut nodes,
                    &mut initializers,
                )?;
                nodes.push(node(
                    "Gemm",
                    &n.name,
                    ins,
                    &out,
                    vec![attr_int("transB", 1)],
                ));
            }
            Op::Conv2d {
                kernel_size,
                stride,
                padding,
                groups,
                bias,
                ..
            } => {
                let params: &[&str] = if *bias {
                    &["weight", "bias"]
                } else {
                    &["weight"]
                };
                let ins = layer_inputs(
                    graph,
                    qdq,
                    &n.name,
                    &inputs[0],
                    params,
                    &mut nodes,
                    &mut initializers,
                )?;
                let (k, s, p) = (*kernel_size as i64, *stride as i64, *padding as i64);
                nodes.push(node(
                    "Conv",
                    &n.name,
                    ins,
                    &out,
                    vec![
                        attr_ints("kernel_shape", vec![k, k]),
                        attr_ints("strides", vec![s, s]),
                        attr_ints("pads", vec![p, p, p, p]),
                        attr_int("group", *groups as i64),
                    ],
                ));
            }
            Op::BatchNorm2d { eps, momentum, .. } => {
                let params = ["weight", "bias", "running_mean", "running_var"];
                let ins = layer_inputs(
                    graph,
                    qdq,
                    &n.name,
                    &inputs[0],
                    &params,
                    &mut nodes,
                    &mut initializers,
                )?;
                nodes.push(node(
                    "BatchNormalization",
                    &n.name,
                    ins,
                    &out,
                    vec![
                        attr_float("epsilon", *eps as f32),
                        attr_float("momentum", 1.0 - *momentum as f32),
                    ],
                ));
            }
            Op::Relu => nodes.push(node("Relu", &n.name, inputs, &out, vec![])),
            Op::MaxPool2d {
                kernel_size,
                stride,
            }
            | Op::AvgPool2d {
                kernel_size,
                stride,
            } => {
                let k = *kernel_size as i64;
                let s = stride.unwrap_or(*kernel_size) as i64;
                let op = if matches!(n.op, Op::MaxPool2d { .. }) {
                    "MaxPool"
                } else {
                    "AveragePool"
                };
                nodes.push(node(
                    op,
                    &n.name,
                    inputs,
                    &out,
                    vec![
                        attr_ints("kernel_shape", vec![k, k]),
                        attr_ints("strides", vec![s, s]),
                    ],
                ));
            }
            Op::GlobalAvgPool => {
                // ONNX keeps [c, 1, 1]; sculpt's op gives [c].
                let pooled = format!("{}_pooled", n.name);
                nodes.push(node("GlobalAveragePool", &n.name, inputs, &pooled, vec![]));
                nodes.push(node(
                    "Flatten",
                    &format!("{}_flatten", n.name),
                    vec![pooled],
                    &out,
                    vec![attr_int("axis", 1)],
                ));
            }
            Op::Flatten => nodes.push(node(
                "Flatten",
                &n.name,
                inputs,
                &out,
                vec![attr_int("axis", 1)],
            )),
            Op::Add => nodes.push(node("Add", &n.name, inputs, &out, vec![])),
            Op::Dropout { .. } => nodes.push(node("Identity", &n.name, inputs, &out, vec![])),
        }
    }
    // The output under a stable name.
    nodes.push(node(
        "Identity",
        "logits",
        vec![value_name(&spec.output)],
        "logits",
        vec![],
    ));
    let graph_proto = pb::GraphProto {
        name: spec.name.clone(),
        node: nodes,
        initializer: initializers,
        input: vec![value_info("input", &spec.input_shape)],
        output: vec![value_info("logits", &[spec.num_classes])],
        doc_string: spec
            .preprocessing
            .as_ref()
            .map(|p| format!("input: {}", p.describe()))
            .unwrap_or_default(),
        ..Default::default()
    };
    if graph_proto.node.is_empty() {
        return Err(OnnxError::Invalid {
            node: "(graph)".into(),
            message: "nothing to export".into(),
        });
    }
    Ok(pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "sculpt".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph_proto),
        ..Default::default()
    })
}
