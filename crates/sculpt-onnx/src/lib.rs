//! sculpt-onnx brings users' networks in and hands compressed ones back: the ONNX
//! protobuf messages sculpt reads and writes (`pb`), and the import of an ONNX classifier
//! into a sculpt graph (`import`), with PyTorch's parameter names.

pub mod error;
pub mod export;
pub mod import;
pub mod pb;

use std::path::Path;

use prost::Message;

pub use error::{OnnxError, Result};
pub use export::{export_model, QdqWeight};
pub use import::{import_model, SUPPORTED};

/// Reads an ONNX file. A missing file, an empty one, a truncated one and one that is not
/// ONNX each fail with one message naming the file.
pub fn read_model(path: &Path) -> Result<pb::ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| OnnxError::Io {
        path: path.to_path_buf(),
        cause: e,
    })?;
    let decode = |message: String| OnnxError::Decode {
        path: path.to_path_buf(),
        message,
    };
    if bytes.is_empty() {
        return Err(decode("the file is empty".into()));
    }
    let model = pb::ModelProto::decode(bytes.as_slice()).map_err(|e| {
        decode(format!(
            "protobuf: {e}; is the file cut short, or not ONNX?"
        ))
    })?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| decode("it holds no graph; is it an ONNX model?".into()))?;
    if model.ir_version == 0 || graph.node.is_empty() {
        return Err(decode(format!(
            "IR version {} and {} nodes; is it an ONNX model?",
            model.ir_version,
            graph.node.len()
        )));
    }
    Ok(model)
}

/// Reads an ONNX file and imports its graph, named after the file.
pub fn import_file(path: &Path) -> Result<sculpt_nn::Graph> {
    let model = read_model(path)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "imported".into());
    import_model(&model, &name)
}

/// The QDQ codes of a graph's packed weights (`sculpt_compress::pack`): a symmetric
/// weight's codes shifted back to signed with zero point 0, an asymmetric one's unsigned
/// codes with their zero points.
pub fn qdq_from_packed(
    graph: &sculpt_nn::Graph,
    packed: &std::collections::BTreeMap<String, sculpt_nn::io::PackedWeight>,
) -> std::collections::BTreeMap<String, QdqWeight> {
    packed
        .iter()
        .map(|(name, p)| {
            let symmetric = graph
                .spec
                .weight_quant
                .get(name)
                .is_none_or(|q| q.symmetric);
            let group = p.codes.len() / p.scales.len().max(1);
            let q = if symmetric {
                QdqWeight {
                    codes: p
                        .codes
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| c as i32 - p.zero_points[i / group.max(1)] as i32)
                        .collect(),
                    scales: p.scales.clone(),
                    zero_points: vec![0; p.scales.len()],
                    signed: true,
                }
            } else {
                QdqWeight {
                    codes: p.codes.iter().map(|&c| c as i32).collect(),
                    scales: p.scales.clone(),
                    zero_points: p.zero_points.iter().map(|&z| z as i32).collect(),
                    signed: false,
                }
            };
            (name.clone(), q)
        })
        .collect()
}

/// Writes `graph` to `path` as ONNX (see [`export`]), its quantized weights in QDQ form.
pub fn write_model(
    graph: &sculpt_nn::Graph,
    packed: &std::collections::BTreeMap<String, sculpt_nn::io::PackedWeight>,
    path: &Path,
) -> Result<u64> {
    let model = export_model(graph, &qdq_from_packed(graph, packed))?;
    let bytes = model.encode_to_vec();
    sculpt_nn::io::write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}
