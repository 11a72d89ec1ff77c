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
    if dir.is_file() {
        return Err(NnError::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "is a file, not a model directory (a folder with {SPEC_FILE} and {WEIGHTS_FILE})"
                ),
            ),
        ));
    }
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
    let mut params: BTreeMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(name, _)| !name.ends_with(".num_batches_tracked"))
        .collect();
    if params.keys().any(|k| k.ends_with(PACKED_SUFFIX)) {
        unpack_all(&mut params, &weights)?;
    }
    // Half-precision weights are computed in f32.
    for t in params.values_mut() {
        if t.dtype() != candle_core::DType::F32 {
            *t = t.to_dtype(candle_core::DType::F32)?;
        }
    }
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

/// The safetensors metadata key that marks a file of packed weights, and its value.
pub const PACKED_FORMAT_KEY: &str = "format";
pub const PACKED_FORMAT: &str = "sculpt-packed-1";
/// `<weight>.qweight`: the codes of a packed weight, `bits` bits each, least significant
/// bit first, in row-major order.
pub const PACKED_SUFFIX: &str = ".qweight";

/// A weight stored as integer codes: `value = (code - zero_point[g]) * scale[g]`, where
/// `g` is the code's output channel (or 0 for one scale per tensor). Codes are unsigned
/// and `bits` wide; a symmetric code `c` is stored as `c + 2^(bits-1)` with that zero point.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeight {
    pub bits: u32,
    pub shape: Vec<usize>,
    pub codes: Vec<u32>,
    pub scales: Vec<f32>,
    pub zero_points: Vec<u32>,
}

/// Packs `values`, `bits` each, least significant bit first.
fn pack_bits(values: &[u32], bits: u32) -> Vec<u8> {
    let bits = bits as usize;
    let mut out = vec![0u8; (values.len() * bits).div_ceil(8)];
    for (i, &c) in values.iter().enumerate() {
        for b in 0..bits {
            if (c >> b) & 1 == 1 {
                let at = i * bits + b;
                out[at / 8] |= 1 << (at % 8);
            }
        }
    }
    out
}

/// A sparse weight's entries under a relative index of `index_bits`-bit gaps (Deep
/// Compression's format, as the size accounting counts it): each entry is a gap since the
/// previous entry (1 to 2^index_bits, stored minus one) and a code; a gap too long for the
/// index takes padding entries that hold the zero code.
fn relative_entries(p: &PackedWeight, index_bits: u32) -> (Vec<u32>, Vec<u32>) {
    let span = 1usize << index_bits;
    let group = p.codes.len() / p.scales.len().max(1);
    let zero = |i: usize| p.zero_points[i / group.max(1)];
    let (mut gaps, mut codes) = (Vec::new(), Vec::new());
    let mut last: isize = -1;
    for (i, &c) in p.codes.iter().enumerate() {
        if c == zero(i) {
            continue;
        }
        let mut gap = (i as isize - last) as usize;
        while gap > span {
            last += span as isize;
            gaps.push((span - 1) as u32);
            codes.push(zero(last as usize));
            gap -= span;
        }
        gaps.push((gap - 1) as u32);
        codes.push(c);
        last = i as isize;
    }
    (gaps, codes)
}

impl PackedWeight {
    /// The codes packed `bits` to a code, least significant bit first.
    pub fn packed_codes(&self) -> Vec<u8> {
        pack_bits(&self.codes, self.bits)
    }

    /// The dequantized values.
    pub fn values(&self) -> Vec<f32> {
        let group = self.codes.len() / self.scales.len().max(1);
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let g = i / group.max(1);
                (c as i64 - self.zero_points[g] as i64) as f32 * self.scales[g]
            })
            .collect()
    }
}

fn unpack_codes(bytes: &[u8], bits: u32, count: usize) -> Vec<u32> {
    let bits = bits as usize;
    (0..count)
        .map(|i| {
            (0..bits).fold(0u32, |c, b| {
                let at = i * bits + b;
                c | ((((bytes[at / 8] >> (at % 8)) & 1) as u32) << b)
            })
        })
        .collect()
}

/// Writes a model directory whose weights named in `packed` are stored as packed integer
/// codes with their scales and zero points (see [`PackedWeight`]), half-precision weights
/// as f16, and the rest as f32; returns the size of the weights file in bytes. [`load`]
/// reads it back to the same values.
pub fn save_packed(
    graph: &Graph,
    packed: &BTreeMap<String, PackedWeight>,
    dir: &Path,
) -> Result<u64> {
    use safetensors::tensor::{Dtype, TensorView};
    std::fs::create_dir_all(dir).map_err(|e| NnError::io(dir, e))?;
    let path = dir.join(WEIGHTS_FILE);
    let spec_err = |m: String| NnError::Spec {
        path: path.clone(),
        message: m,
    };
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(PACKED_FORMAT_KEY.to_string(), PACKED_FORMAT.to_string());
    for (name, tensor) in &graph.params {
        if let Some(p) = packed.get(name) {
            if p.bits == 0 || p.bits > 8 || p.zero_points.iter().any(|&z| z >= 1 << p.bits) {
                return Err(spec_err(format!("{name}: cannot pack {} bits", p.bits)));
            }
            // A sparse weight stores its nonzero codes with a relative index, in the
            // index width that makes it smallest, when that beats the dense codes.
            let relative = graph.spec.sparse.contains(name).then(|| {
                (2..=8u32)
                    .map(|b| (b, relative_entries(p, b)))
                    .min_by_key(|(b, (gaps, _))| gaps.len() * (*b + p.bits) as usize)
                    .expect("a non-empty range")
            });
            let dense_bits = p.codes.len() * p.bits as usize;
            match relative
                .filter(|(b, (gaps, _))| gaps.len() * ((*b + p.bits) as usize) < dense_bits)
            {
                Some((index_bits, (gaps, codes))) => {
                    metadata.insert(format!("{name}.index_bits"), index_bits.to_string());
                    metadata.insert(format!("{name}.entries"), codes.len().to_string());
                    let codes = pack_bits(&codes, p.bits);
                    let gaps = pack_bits(&gaps, index_bits);
                    buffers.push((
                        format!("{name}{PACKED_SUFFIX}"),
                        Dtype::U8,
                        vec![codes.len()],
                        codes,
                    ));
                    buffers.push((format!("{name}.gaps"), Dtype::U8, vec![gaps.len()], gaps));
                }
                None => {
                    let codes = p.packed_codes();
                    buffers.push((
                        format!("{name}{PACKED_SUFFIX}"),
                        Dtype::U8,
                        vec![codes.len()],
                        codes,
                    ));
                }
            }
            buffers.push((
                format!("{name}.scale"),
                Dtype::F32,
                vec![p.scales.len()],
                p.scales.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
            buffers.push((
                format!("{name}.zero_point"),
                Dtype::U8,
                vec![p.zero_points.len()],
                p.zero_points.iter().map(|&z| z as u8).collect(),
            ));
            metadata.insert(format!("{name}.bits"), p.bits.to_string());
            metadata.insert(
                format!("{name}.shape"),
                serde_json::to_string(&p.shape).unwrap_or_default(),
            );
            continue;
        }
        let half = graph
            .spec
            .weight_quant
            .get(name)
            .is_some_and(|q| q.bits == 16);
        let (dtype, bytes) = if half {
            let v: Vec<half::f16> = tensor
                .to_dtype(candle_core::DType::F16)?
                .flatten_all()?
                .to_vec1()?;
            (Dtype::F16, v.iter().flat_map(|x| x.to_le_bytes()).collect())
        } else {
            let v: Vec<f32> = tensor.flatten_all()?.to_vec1()?;
            (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
        };
        buffers.push((name.clone(), dtype, tensor.dims().to_vec(), bytes));
    }
    let views = buffers
        .iter()
        .map(|(n, d, shape, bytes)| {
            TensorView::new(*d, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| spec_err(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| spec_err(e.to_string()))?;
    let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    if let Err(e) = std::fs::write(&tmp, &bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(NnError::io(&tmp, e));
    }
    sync(&tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| NnError::io(&path, e))?;
    let spec = toml::to_string_pretty(&graph.spec).map_err(|e| NnError::Spec {
        path: dir.join(SPEC_FILE),
        message: e.to_string(),
    })?;
    write_atomic(&dir.join(SPEC_FILE), spec.as_bytes())?;
    Ok(bytes.len() as u64)
}

/// Replaces every packed weight in `params` (`<name>.qweight`, `.scale`, `.zero_point`)
/// by its f32 values, reading bit widths and shapes from the file's metadata.
fn unpack_all(params: &mut BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    let err = |m: String| NnError::Spec {
        path: path.to_path_buf(),
        message: m,
    };
    let bytes = std::fs::read(path).map_err(|e| NnError::io(path, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(format!("not a readable safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    match metadata.get(PACKED_FORMAT_KEY) {
        Some(f) if f == PACKED_FORMAT => {}
        other => {
            return Err(err(format!(
                "packed weights in format {}, but this sculpt reads {PACKED_FORMAT}; export the model again with this version",
                other.map_or("(none)".to_string(), |f| format!("`{f}`"))
            )))
        }
    }
    let names: Vec<String> = params
        .keys()
        .filter_map(|k| k.strip_suffix(PACKED_SUFFIX).map(str::to_string))
        .collect();
    for name in names {
        let field = |key: &str| {
            metadata
                .get(&format!("{name}.{key}"))
                .cloned()
                .ok_or_else(|| {
                    err(format!(
                        "packed weight `{name}` has no `{name}.{key}` in the metadata"
                    ))
                })
        };
        let bits: u32 = field("bits")?
            .parse()
            .map_err(|_| err(format!("`{name}.bits` is not a number")))?;
        let shape: Vec<usize> = serde_json::from_str(&field("shape")?)
            .map_err(|_| err(format!("`{name}.shape` is not a list of sizes")))?;
        let mut take = |suffix: &str| {
            params
                .remove(&format!("{name}{suffix}"))
                .ok_or_else(|| err(format!("packed weight `{name}` lacks `{name}{suffix}`")))
        };
        let codes: Vec<u8> = take(PACKED_SUFFIX)?.to_vec1()?;
        let scales: Vec<f32> = take(".scale")?.to_vec1()?;
        let zero_points: Vec<u8> = take(".zero_point")?.to_vec1()?;
        let count: usize = shape.iter().product();
        let relative = match metadata.get(&format!("{name}.index_bits")) {
            None => None,
            Some(b) => {
                let index_bits: u32 =
                    b.parse()
                        .ok()
                        .filter(|b| (1..=16).contains(b))
                        .ok_or_else(|| {
                            err(format!("`{name}.index_bits` is not a width from 1 to 16"))
                        })?;
                let entries: usize = field("entries")?
                    .parse()
                    .map_err(|_| err(format!("`{name}.entries` is not a count")))?;
                let gaps: Vec<u8> = take(".gaps")?.to_vec1()?;
                Some((index_bits, entries, gaps))
            }
        };
        let stored = relative.as_ref().map_or(count, |r| r.1);
        if !(1..=8).contains(&bits)
            || codes.len() != (stored * bits as usize).div_ceil(8)
            || relative
                .as_ref()
                .is_some_and(|(b, n, g)| g.len() != (n * *b as usize).div_ceil(8))
            || scales.is_empty()
            || scales.len() != zero_points.len()
            || !count.is_multiple_of(scales.len())
        {
            return Err(err(format!(
                "packed weight `{name}`: {} bytes of {bits}-bit codes, {} scales and {} zero points do not fit shape {shape:?}",
                codes.len(),
                scales.len(),
                zero_points.len()
            )));
        }
        let zero_points: Vec<u32> = zero_points.into_iter().map(u32::from).collect();
        let codes = match &relative {
            None => unpack_codes(&codes, bits, count),
            Some((index_bits, entries, gaps)) => {
                let group = count / scales.len();
                let mut dense: Vec<u32> = (0..count).map(|i| zero_points[i / group]).collect();
                let values = unpack_codes(&codes, bits, *entries);
                let mut at: isize = -1;
                for (gap, value) in unpack_codes(gaps, *index_bits, *entries)
                    .into_iter()
                    .zip(values)
                {
                    at += gap as isize + 1;
                    let slot = dense.get_mut(at as usize).ok_or_else(|| {
                        err(format!(
                            "packed weight `{name}`: its index runs past {count} values"
                        ))
                    })?;
                    *slot = value;
                }
                dense
            }
        };
        let weight = PackedWeight {
            bits,
            shape: shape.clone(),
            codes,
            scales,
            zero_points,
        };
        params.insert(
            name.clone(),
            Tensor::from_vec(weight.values(), shape, &crate::device())?,
        );
    }
    Ok(())
}
