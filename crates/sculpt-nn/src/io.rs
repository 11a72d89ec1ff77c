//! Model directories on disk: `model.toml` (the graph spec), `model.safetensors` (the
//! weights, PyTorch state_dict naming) and `metrics.json`. Loading checks every tensor's
//! name and shape against the spec and reports the first mismatch by name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;

use crate::error::{NnError, Result};
use crate::graph::{check_params, Graph, GraphSpec};

pub const SPEC_FILE: &str = "model.toml";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const METRICS_FILE: &str = "metrics.json";

/// Writes `model.safetensors` and then `model.toml` into `dir`, creating it. The spec is
/// written last, so a directory with a spec always holds complete weights.
pub fn save(graph: &Graph, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| NnError::io(dir, e))?;
    let tensors: HashMap<String, Tensor> = graph
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    save_tensors(&tensors, &tmp)?;
    std::fs::rename(&tmp, dir.join(WEIGHTS_FILE))
        .map_err(|e| NnError::io(dir.join(WEIGHTS_FILE), e))?;
    let spec = toml::to_string_pretty(&graph.spec).map_err(|e| NnError::Spec {
        path: dir.join(SPEC_FILE),
        message: e.to_string(),
    })?;
    write_atomic(&dir.join(SPEC_FILE), spec.as_bytes())
}

/// Flushes a file's contents to disk.
pub fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| NnError::io(path, e))
}

/// Reads a spec file.
pub fn load_spec(path: &Path) -> Result<GraphSpec> {
    let text = std::fs::read_to_string(path).map_err(|e| NnError::io(path, e))?;
    let spec: GraphSpec = toml::from_str(&text).map_err(|e| NnError::Spec {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    spec.summarize().map_err(|e| NnError::Spec {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(spec)
}

/// Loads a model directory written by `save`.
pub fn load(dir: &Path) -> Result<Graph> {
    if !dir.is_dir() {
        return Err(NnError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
        ));
    }
    let spec = load_spec(&dir.join(SPEC_FILE))?;
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        return Err(NnError::io(
            &weights,
            std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
        ));
    }
    let tensors =
        candle_core::safetensors::load(&weights, &crate::device()).map_err(|e| NnError::Spec {
            path: weights.clone(),
            message: format!("not a readable safetensors file: {e}"),
        })?;
    let params: BTreeMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(name, _)| !name.ends_with(".num_batches_tracked"))
        .collect();
    check_params(&spec, &params, &weights)?;
    Graph::new(spec, params)
}

/// Writes `tensors` to `path` as safetensors, synced. A failed write (a full disk) names
/// the file and removes what was written of it.
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let bytes =
        safetensors::tensor::serialize(tensors.iter(), None).map_err(|e| NnError::Spec {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if let Err(e) = std::fs::write(path, bytes) {
        let _ = std::fs::remove_file(path);
        return Err(NnError::io(path, e));
    }
    sync(path)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a crash never
/// leaves a half-written file in place of a good one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| NnError::io(&tmp, e))?;
    sync(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| NnError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_mismatches_are_named() {
        let dir = std::env::temp_dir().join(format!("sculpt-io-{}", std::process::id()));
        let graph = crate::zoo::build("mlp", &[64], 10, 1).unwrap();
        save(&graph, &dir).unwrap();
        let back = load(&dir).unwrap();
        assert_eq!(back.spec, graph.spec);
        for (name, t) in &graph.params {
            let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = back.params[name].flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b, "{name}");
        }

        // A spec that disagrees with the weights names the tensor.
        let text = std::fs::read_to_string(dir.join(SPEC_FILE)).unwrap();
        std::fs::write(
            dir.join(SPEC_FILE),
            text.replacen("out_features = 256", "out_features = 200", 1)
                .replacen("in_features = 256", "in_features = 200", 1),
        )
        .unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("fc1.weight") && err.contains("[200, 64]"),
            "{err}"
        );

        // Unknown keys in a node are refused.
        std::fs::write(
            dir.join(SPEC_FILE),
            text.replacen("bias = true", "bias = true\nwidth = 3", 1),
        )
        .unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("width"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
