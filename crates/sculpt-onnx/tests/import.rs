//! Imports the ONNX fixtures PyTorch exported (`tests/fixtures/onnx`, made by
//! `make_fixtures.py`) and checks sculpt's logits against PyTorch's for the same raw
//! images; and checks that bad files fail with one clear message.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use prost::Message;
use sculpt_onnx::{import_file, pb, read_model, OnnxError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/onnx")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("fixtures.json")).unwrap())
        .unwrap()
}

/// sculpt's logits for the fixture's raw images, through the preprocessing PyTorch used.
fn logits(name: &str) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let graph = import_file(&fixtures().join(format!("{name}.onnx"))).unwrap();
    let fixture = &expected()[name];
    let raw: Vec<Vec<f32>> = serde_json::from_value(fixture["raw_inputs"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(fixture["logits"].clone()).unwrap();
    let pre: sculpt_nn::Preprocessing =
        serde_json::from_value(fixture["preprocessing"].clone()).unwrap();
    let (a, b) = pre.affine(&graph.spec.input_shape).unwrap();
    let x: Vec<f32> = raw
        .iter()
        .flat_map(|row| row.iter().zip(&a).zip(&b).map(|((v, a), b)| v * a + b))
        .collect();
    let mut shape = vec![raw.len()];
    shape.extend(&graph.spec.input_shape);
    let x = Tensor::from_vec(x, shape, &sculpt_nn::device()).unwrap();
    let got: Vec<Vec<f32>> = graph.forward(&x).unwrap().to_vec2().unwrap();
    (got, want)
}

fn assert_close(name: &str) {
    let (got, want) = logits(name);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        for (x, y) in g.iter().zip(w) {
            assert!((x - y).abs() < 1e-3, "{name}: {x} against PyTorch's {y}");
        }
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
        assert_eq!(argmax(g), argmax(w));
    }
}

#[test]
fn lenet5_from_pytorch_gives_pytorchs_logits() {
    // Conv with padding, MaxPool, x.view(x.size(0), -1) as shape arithmetic, Gemm, Dropout.
    assert_close("lenet5");
    let graph = import_file(&fixtures().join("lenet5.onnx")).unwrap();
    for name in ["conv1.weight", "conv2.bias", "fc1.weight", "fc3.bias"] {
        assert!(
            graph.params.contains_key(name),
            "{name}: PyTorch's names are kept"
        );
    }
}

#[test]
fn small_resnet_from_pytorch_gives_pytorchs_logits() {
    // Batch norm, strided and 1x1 convolutions, the residual Add, GlobalAveragePool.
    assert_close("resnet-small");
}

#[test]
fn an_mlp_from_pytorch_gives_pytorchs_logits() {
    // nn.Sequential(Linear, ReLU, Linear) on the raw digits scaled by 1/16.
    assert_close("digits-mlp");
}

#[test]
fn bad_files_fail_with_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    // Not ONNX at all.
    let text = dir.path().join("notes.onnx");
    std::fs::write(&text, "this is a text file, not a model\n").unwrap();
    let e = read_model(&text).unwrap_err().to_string();
    assert!(
        e.contains("notes.onnx") && e.contains("not a readable ONNX model"),
        "{e}"
    );
    // Empty.
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let e = read_model(&empty).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    // Cut short.
    let bytes = std::fs::read(fixtures().join("lenet5.onnx")).unwrap();
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = import_file(&cut).unwrap_err().to_string();
    assert!(
        e.contains("cut.onnx") && e.contains("not a readable ONNX model"),
        "{e}"
    );
    // Missing.
    let e = read_model(&dir.path().join("missing.onnx")).unwrap_err();
    assert!(matches!(e, OnnxError::Io { .. }), "{e}");
    // An op sculpt does not import: the LeNet with a Sigmoid in place of its first ReLU.
    let mut model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let node = model
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Relu")
        .unwrap();
    node.op_type = "Sigmoid".into();
    let node_name = node.name.clone();
    let odd = dir.path().join("sigmoid.onnx");
    std::fs::write(&odd, model.encode_to_vec()).unwrap();
    let e = import_file(&odd).unwrap_err().to_string();
    assert!(
        e.contains("unsupported op `Sigmoid`") && e.contains(&node_name),
        "{e}"
    );
}
