//! sculpt-onnx brings users' networks in and hands compressed ones back: the ONNX
//! protobuf messages sculpt reads and writes (`pb`), and the import of an ONNX classifier
//! into a sculpt graph (`import`), with PyTorch's parameter names.

pub mod error;
pub mod import;
pub mod pb;

use std::path::Path;

use prost::Message;

pub use error::{OnnxError, Result};
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
