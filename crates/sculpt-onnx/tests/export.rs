//! Exported models run in tract (a real ONNX runtime) and give sculpt's outputs: in f32,
//! and with quantized weights in QDQ form.

use std::collections::BTreeMap;
use std::path::Path;

use sculpt_nn::{Graph, WeightQuant};
use tract_onnx::prelude::*;

fn fixture(name: &str) -> Graph {
    // The manifest folder is read when the test runs, not baked in when it is built: a
    // test binary reused from another checkout (a shared target directory) must read this
    // checkout's fixtures.
    let path = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join(format!("../../tests/fixtures/onnx/{name}.onnx"));
    sculpt_onnx::import_file(&path).unwrap()
}

/// Deterministic inputs of the graph's sample shape.
fn inputs(graph: &Graph, n: usize) -> (Vec<usize>, Vec<f32>) {
    let mut shape = vec![n];
    shape.extend(&graph.spec.input_shape);
    let count: usize = shape.iter().product();
    let x = (0..count)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    (shape, x)
}

fn sculpt_logits(graph: &Graph, shape: &[usize], x: &[f32]) -> Vec<f32> {
    let t = candle_core::Tensor::from_vec(x.to_vec(), shape, &sculpt_nn::device()).unwrap();
    graph
        .forward(&t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn tract_logits(onnx: &[u8], shape: &[usize], x: &[f32]) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), x.to_vec()).unwrap();
    let out = model.run(tvec!(Tensor::from(input).into())).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn export(graph: &Graph) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let packed = sculpt_compress::pack(graph).unwrap();
    sculpt_onnx::write_model(graph, &packed, &path).unwrap();
    std::fs::read(path).unwrap()
}

fn assert_same(graph: &Graph, what: &str) {
    let (shape, x) = inputs(graph, 3);
    let want = sculpt_logits(graph, &shape, &x);
    let got = tract_logits(&export(graph), &shape, &x);
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "{what}: tract and sculpt differ by {worst}");
}

#[test]
fn f32_exports_run_in_tract_as_in_sculpt() {
    assert_same(&fixture("digits-mlp"), "digits MLP");
    // Conv, batch norm, residual Add, global average pooling.
    assert_same(&fixture("resnet-small"), "small ResNet");
    assert_same(&fixture("lenet5"), "LeNet-5");
}

#[test]
fn qdq_exports_run_in_tract_as_in_sculpt() {
    let graph = fixture("lenet5");
    let mut schemes = BTreeMap::new();
    schemes.insert(
        "conv1.weight".to_string(),
        WeightQuant::symmetric_per_channel(8),
    );
    schemes.insert(
        "conv2.weight".to_string(),
        WeightQuant::symmetric_per_channel(4),
    );
    schemes.insert(
        "fc1.weight".to_string(),
        WeightQuant {
            bits: 3,
            per_channel: true,
            symmetric: false,
        },
    );
    schemes.insert(
        "fc2.weight".to_string(),
        WeightQuant {
            bits: 8,
            per_channel: false,
            symmetric: true,
        },
    );
    let quantized = sculpt_compress::quantize(&graph, &schemes).unwrap();
    let onnx = export(&quantized);
    let model: sculpt_onnx::pb::ModelProto = prost::Message::decode(onnx.as_slice()).unwrap();
    let g = model.graph.unwrap();
    let dq = g
        .node
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear")
        .count();
    assert_eq!(dq, 4, "one DequantizeLinear per quantized weight");
    let int8 = g
        .initializer
        .iter()
        .find(|t| t.name == "conv2.weight_quantized")
        .unwrap();
    assert_eq!(int8.data_type, sculpt_onnx::pb::data_type::INT8);
    assert!(
        int8.raw_data.iter().all(|&b| (b as i8).abs() <= 7),
        "4-bit codes on their grid in int8"
    );
    let uint8 = g
        .initializer
        .iter()
        .find(|t| t.name == "fc1.weight_quantized")
        .unwrap();
    assert_eq!(uint8.data_type, sculpt_onnx::pb::data_type::UINT8);
    assert_same(&quantized, "QDQ LeNet-5");
}

#[test]
fn quantized_activations_export_as_quantize_dequantize_pairs() {
    // fc2 and fc3 read ReLU outputs: unsigned 8-bit codes with a calibrated scale.
    let mut graph = fixture("lenet5");
    for (layer, scale) in [("fc2", 0.05f32), ("fc3", 0.08)] {
        graph.spec.act_quant.insert(
            layer.to_string(),
            sculpt_nn::ActQuant {
                bits: 8,
                scale,
                zero_point: 0,
                signed: false,
            },
        );
    }
    let onnx = export(&graph);
    let model: sculpt_onnx::pb::ModelProto = prost::Message::decode(onnx.as_slice()).unwrap();
    let ops: Vec<String> = model
        .graph
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.clone())
        .collect();
    assert_eq!(
        ops.iter().filter(|o| *o == "QuantizeLinear").count(),
        2,
        "{ops:?}"
    );
    // Rounding ties go to even in ONNX and away from zero in sculpt, so a value exactly
    // between two codes may land one step apart: compare the classes and a loose bound.
    let (shape, x) = inputs(&graph, 3);
    let want = sculpt_logits(&graph, &shape, &x);
    let got = tract_logits(&onnx, &shape, &x);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 0.05, "tract and sculpt differ by {worst}");
}
