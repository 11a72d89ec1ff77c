//! Imports the ONNX fixtures PyTorch exported (`tests/fixtures/onnx`, made by
//! `make_fixtures.py`) and checks sculpt's logits against PyTorch's for the same raw
//! images; and checks that bad files fail with one clear message.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use prost::Message;
use sculpt_onnx::{import_file, pb, read_model, OnnxError};

fn fixtures() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../tests/fixtures/onnx")
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

fn vi(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    let mut dim = vec![pb::Dimension {
        dim_value: None,
        dim_param: Some("batch".into()),
    }];
    dim.extend(dims.iter().map(|&d| pb::Dimension {
        dim_value: Some(d),
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

fn init(name: &str, dims: &[i64], v: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::data_type::FLOAT,
        float_data: v,
        ..Default::default()
    }
}

fn op(
    kind: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: kind.into(),
        name: format!("/{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn model(
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    input: pb::ValueInfoProto,
    outputs: &[&str],
) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 7,
        graph: Some(pb::GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![input],
            output: outputs.iter().map(|o| vi(o, &[])).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// ONNX semantics the review found misread: a pool's default stride is 1, a MatMul read by
/// two nodes keeps its bias out of the other reader, an unused branch is dropped, and a
/// graph with two outputs is refused.
#[test]
fn onnx_defaults_and_graph_structure_are_respected() {
    let ints = |name: &str, v: Vec<i64>| pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_type::INTS,
        ints: v,
        ..Default::default()
    };
    // MaxPool 2x2 with no `strides`: stride 1, so 4x4 becomes 3x3 = 9 features.
    let m = model(
        vec![
            op(
                "MaxPool",
                &["x"],
                "p",
                vec![ints("kernel_shape", vec![2, 2])],
            ),
            op("Flatten", &["p"], "f", vec![]),
            op(
                "Gemm",
                &["f", "w", "b"],
                "y",
                vec![pb::AttributeProto {
                    name: "transB".into(),
                    r#type: pb::attribute_type::INT,
                    i: 1,
                    ..Default::default()
                }],
            ),
        ],
        vec![
            init("w", &[2, 9], vec![0.1; 18]),
            init("b", &[2], vec![0.0; 2]),
        ],
        vi("x", &[1, 4, 4]),
        &["y"],
    );
    let g = sculpt_onnx::import_model(&m, "pool").unwrap();
    assert_eq!(g.params["y.weight"].dims(), &[2, 9], "{:?}", g.spec.nodes);

    // z = x W; y = z + b; out = y + z: the bias must not reach the second reader of z.
    let m = model(
        vec![
            op("MatMul", &["x", "w"], "z", vec![]),
            op("Add", &["z", "b"], "y", vec![]),
            op("Add", &["y", "z"], "out", vec![]),
            op("Relu", &["x"], "unused", vec![]),
        ],
        vec![
            init("w", &[2, 2], vec![1.0, 0.0, 0.0, 1.0]),
            init("b", &[2], vec![10.0, 20.0]),
        ],
        vi("x", &[2]),
        &["out"],
    );
    let e = sculpt_onnx::import_model(&m, "shared")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Add of a constant"),
        "the bias is not folded into a shared MatMul: {e}"
    );

    // An unused branch is dropped.
    let m = model(
        vec![
            op("Relu", &["x"], "unused", vec![]),
            op(
                "Gemm",
                &["x", "w"],
                "y",
                vec![pb::AttributeProto {
                    name: "transB".into(),
                    r#type: pb::attribute_type::INT,
                    i: 1,
                    ..Default::default()
                }],
            ),
        ],
        vec![init("w", &[3, 2], vec![1.0; 6])],
        vi("x", &[2]),
        &["y"],
    );
    let g = sculpt_onnx::import_model(&m, "branch").unwrap();
    assert_eq!(g.spec.nodes.len(), 1, "{:?}", g.spec.nodes);

    // Two outputs are refused.
    let mut two = m.clone();
    two.graph.as_mut().unwrap().output.push(vi("unused", &[2]));
    let e = sculpt_onnx::import_model(&two, "two")
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 outputs"), "{e}");
}
