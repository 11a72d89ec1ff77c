//! Weight quantization, the pass and its arithmetic. A weight is quantized per output
//! channel or per tensor, symmetrically or with a zero point, to 2..=8 bits; 16 bits means
//! IEEE half precision. A symmetric `b`-bit code lies in `[-(2^(b-1) - 1), 2^(b-1) - 1]`
//! with scale `max|w| / max_code`; an asymmetric one in `[0, 2^b - 1]` with scale
//! `(max - min) / (2^b - 1)` and an integer zero point, so the grid always holds an exact
//! zero (pruned weights stay zero). Fake quantization stores the dequantized values in f32,
//! which is what training and accuracy need; the size accounting counts the packed codes,
//! scales and zero points.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use sculpt_nn::{Graph, WeightQuant};

use crate::error::{layer_error, CompressError, Result};

/// The largest code magnitude of a `bits`-wide symmetric code.
pub fn max_code(bits: u32) -> f32 {
    ((1u64 << (bits - 1)) - 1) as f32
}

/// Integer codes, scales and zero points of a quantized weight tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    pub shape: Vec<usize>,
    pub scheme: WeightQuant,
    /// Row-major codes (signed when symmetric, unsigned when asymmetric).
    pub codes: Vec<i32>,
    /// One scale per output channel, or a single one per tensor.
    pub scales: Vec<f32>,
    /// One zero point per scale (all 0 when symmetric).
    pub zero_points: Vec<i32>,
}

impl QuantizedTensor {
    pub fn dequantize(&self) -> Result<Tensor> {
        let group = self.codes.len() / self.scales.len().max(1);
        let values: Vec<f32> = self
            .codes
            .iter()
            .enumerate()
            .map(|(i, &c)| (c - self.zero_points[i / group]) as f32 * self.scales[i / group])
            .collect();
        Ok(Tensor::from_vec(
            values,
            self.shape.clone(),
            &sculpt_nn::device(),
        )?)
    }
}

/// Checks a scheme: 2..=8 integer bits or 16 (half precision).
pub fn check_scheme(scheme: &WeightQuant) -> Result<()> {
    if (2..=8).contains(&scheme.bits) || scheme.bits == 16 {
        Ok(())
    } else {
        Err(CompressError::Plan(format!(
            "bit width {} is not supported (use 2 to 8, 16 for half precision, or 32 for float)",
            scheme.bits
        )))
    }
}

/// Codes `[groups, rest]` (as f32), scales `[groups, 1]` and zero points `[groups, 1]`,
/// where a group is an output channel or the whole tensor.
fn codes_scales_zeros(weight: &Tensor, scheme: &WeightQuant) -> Result<(Tensor, Tensor, Tensor)> {
    check_scheme(scheme)?;
    if scheme.bits == 16 {
        return Err(CompressError::Plan(
            "half precision has no integer codes".into(),
        ));
    }
    let rows = if scheme.per_channel {
        weight.flatten_from(1)?
    } else {
        weight.flatten_all()?.unsqueeze(0)?
    };
    let bits = scheme.bits;
    if scheme.symmetric {
        let max_abs = rows.abs()?.max_keepdim(1)?;
        // All-zero groups get scale 1 so that their codes are 0 rather than NaN.
        let zero = max_abs.eq(0f32)?.to_dtype(DType::F32)?;
        let scale = ((max_abs + zero)? / max_code(bits) as f64)?;
        let limit = max_code(bits) as f64;
        let codes = rows.broadcast_div(&scale)?.round()?.clamp(-limit, limit)?;
        let zeros = scale.zeros_like()?;
        Ok((codes, scale, zeros))
    } else {
        // The range always includes 0, so an exact zero is on the grid.
        let low = rows.min_keepdim(1)?.minimum(0f32)?;
        let high = rows.max_keepdim(1)?.maximum(0f32)?;
        let levels = ((1u64 << bits) - 1) as f64;
        let span = (high - &low)?;
        let empty = span.eq(0f32)?.to_dtype(DType::F32)?;
        let scale = ((span + empty)? / levels)?;
        let zero_point = (low.neg()? / &scale)?.round()?.clamp(0.0, levels)?;
        let codes = rows
            .broadcast_div(&scale)?
            .round()?
            .broadcast_add(&zero_point)?
            .clamp(0.0, levels)?;
        Ok((codes, scale, zero_point))
    }
}

/// Quantizes `weight` by `scheme` and returns codes, scales and zero points.
pub fn quantize_codes(weight: &Tensor, scheme: &WeightQuant) -> Result<QuantizedTensor> {
    let (codes, scale, zeros) = codes_scales_zeros(weight, scheme)?;
    Ok(QuantizedTensor {
        shape: weight.dims().to_vec(),
        scheme: *scheme,
        codes: codes
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|c| c as i32)
            .collect(),
        scales: scale.flatten_all()?.to_vec1()?,
        zero_points: zeros
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|z| z as i32)
            .collect(),
    })
}

/// The dequantized value of `weight` under `scheme`: every weight moves to the nearest
/// point of its group's grid, so the error is at most half a step.
pub fn fake_quantize(weight: &Tensor, scheme: &WeightQuant) -> Result<Tensor> {
    if scheme.bits == 16 {
        check_scheme(scheme)?;
        return Ok(weight.to_dtype(DType::F16)?.to_dtype(DType::F32)?);
    }
    let (codes, scale, zeros) = codes_scales_zeros(weight, scheme)?;
    Ok(codes
        .broadcast_sub(&zeros)?
        .broadcast_mul(&scale)?
        .reshape(weight.dims())?)
}

/// Fake quantization with a straight-through estimator: the forward value is quantized,
/// the gradient passes to `weight` unchanged.
pub fn quantize_ste(weight: &Tensor, scheme: &WeightQuant) -> Result<Tensor> {
    let q = fake_quantize(&weight.detach(), scheme)?;
    Ok((weight + (q - weight.detach())?)?)
}

/// Returns a new graph whose named weights are quantized, recording each scheme in the
/// spec so that size accounting and fine-tuning know of it. A scheme of 32 bits leaves
/// the weight in float.
pub fn quantize(graph: &Graph, schemes: &BTreeMap<String, WeightQuant>) -> Result<Graph> {
    let mut out = graph.clone();
    for (name, scheme) in schemes {
        if scheme.bits >= 32 {
            continue;
        }
        let w = out
            .params
            .get(name)
            .ok_or_else(|| layer_error(name, "no such parameter to quantize"))?;
        if w.rank() < 2 {
            return Err(layer_error(name, "only weight matrices are quantized"));
        }
        check_scheme(scheme).map_err(|e| layer_error(name, e.to_string()))?;
        let q = fake_quantize(w, scheme)?;
        out.params.insert(name.clone(), q);
        out.spec.weight_quant.insert(name.clone(), *scheme);
    }
    Ok(out)
}

/// Puts every quantized weight of `graph` back on its grid (after fine-tuning moved it).
pub fn requantize(graph: &Graph) -> Result<Graph> {
    let schemes = graph.spec.weight_quant.clone();
    quantize(graph, &schemes)
}

/// The integer codes of every 2- to 8-bit weight of `graph`, ready for
/// [`sculpt_nn::io::save_packed`]: the weights sit on their grids already (fine-tuning
/// ends with [`requantize`]), so the codes reproduce them. Symmetric codes are shifted
/// to unsigned by a zero point of `2^(bits-1)`.
pub fn pack(graph: &Graph) -> Result<BTreeMap<String, sculpt_nn::io::PackedWeight>> {
    let mut out = BTreeMap::new();
    for (name, scheme) in &graph.spec.weight_quant {
        if !(2..=8).contains(&scheme.bits) {
            continue;
        }
        let w = graph
            .params
            .get(name)
            .ok_or_else(|| layer_error(name, "no such parameter to pack"))?;
        let q = quantize_codes(w, scheme)?;
        let shift = if scheme.symmetric {
            1i32 << (scheme.bits - 1)
        } else {
            0
        };
        out.insert(
            name.clone(),
            sculpt_nn::io::PackedWeight {
                bits: scheme.bits,
                shape: q.shape.clone(),
                codes: q.codes.iter().map(|&c| (c + shift) as u32).collect(),
                scales: q.scales.clone(),
                zero_points: q.zero_points.iter().map(|&z| (z + shift) as u32).collect(),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(bits: u32) -> WeightQuant {
        WeightQuant::symmetric_per_channel(bits)
    }

    #[test]
    fn error_per_weight_is_at_most_half_a_step() {
        let w = Tensor::randn(0f32, 0.3, (64, 48), &sculpt_nn::device()).unwrap();
        for bits in [2, 3, 4, 5, 6, 8] {
            let q = quantize_codes(&w, &sym(bits)).unwrap();
            let deq: Vec<Vec<f32>> = fake_quantize(&w, &sym(bits)).unwrap().to_vec2().unwrap();
            let orig: Vec<Vec<f32>> = w.to_vec2().unwrap();
            let limit = max_code(bits) as i32;
            assert!(q.codes.iter().all(|c| c.abs() <= limit));
            let mut levels = std::collections::BTreeSet::new();
            for (row, (a, b)) in orig.iter().zip(&deq).enumerate() {
                let step = q.scales[row];
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= step / 2.0 + 1e-6,
                        "{bits} bits: |{x} - {y}| > {step}/2"
                    );
                    if row == 0 {
                        levels.insert((y / step).round() as i32);
                    }
                }
            }
            // The grid really is coarse: a row uses at most 2^b - 1 distinct levels.
            assert!(levels.len() <= (2 * limit + 1) as usize);
            let from_codes: Vec<Vec<f32>> = q.dequantize().unwrap().to_vec2().unwrap();
            assert_eq!(from_codes, deq);
        }
    }

    #[test]
    fn asymmetric_and_per_tensor_grids_match_a_reference() {
        // A hand-computed case: one row in [-0.4, 0.8] at 2 bits has scale 1.2 / 3 = 0.4
        // and zero point 0.4 / 0.4 = 1, so the grid is {-0.4, 0, 0.4, 0.8}.
        let w = Tensor::new(&[[-0.4f32, 0.0, 0.3, 0.8]], &sculpt_nn::device()).unwrap();
        let scheme = WeightQuant {
            bits: 2,
            per_channel: true,
            symmetric: false,
        };
        let q = quantize_codes(&w, &scheme).unwrap();
        assert!((q.scales[0] - 0.4).abs() < 1e-6);
        assert_eq!(q.zero_points, vec![1]);
        assert_eq!(q.codes, vec![0, 1, 2, 3]);
        let deq: Vec<Vec<f32>> = fake_quantize(&w, &scheme).unwrap().to_vec2().unwrap();
        let expected = [-0.4f32, 0.0, 0.4, 0.8];
        for (a, b) in deq[0].iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{deq:?}");
        }
        // Per tensor: one scale for all rows, set by the largest magnitude anywhere.
        let w = Tensor::new(&[[1f32, -0.6], [0.1, 0.05]], &sculpt_nn::device()).unwrap();
        let q = quantize_codes(
            &w,
            &WeightQuant {
                bits: 8,
                per_channel: false,
                symmetric: true,
            },
        )
        .unwrap();
        assert_eq!(q.scales.len(), 1);
        assert!((q.scales[0] - 1.0 / 127.0).abs() < 1e-9);
        assert_eq!(q.codes, vec![127, -76, 13, 6]);
        // Asymmetric 8-bit error is within half a step on random weights.
        let w = Tensor::randn(0.2f32, 0.3, (16, 40), &sculpt_nn::device()).unwrap();
        let scheme = WeightQuant {
            bits: 8,
            per_channel: true,
            symmetric: false,
        };
        let q = quantize_codes(&w, &scheme).unwrap();
        let deq: Vec<Vec<f32>> = fake_quantize(&w, &scheme).unwrap().to_vec2().unwrap();
        let orig: Vec<Vec<f32>> = w.to_vec2().unwrap();
        for (row, (a, b)) in orig.iter().zip(&deq).enumerate() {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= q.scales[row] / 2.0 + 1e-6);
            }
        }
        assert!(q.codes.iter().all(|c| (0..=255).contains(c)));
    }

    #[test]
    fn half_precision_rounds_to_f16() {
        let w = Tensor::new(&[[1.0f32 + 1e-4, 0.1]], &sculpt_nn::device()).unwrap();
        let q: Vec<Vec<f32>> = fake_quantize(&w, &sym(16)).unwrap().to_vec2().unwrap();
        // 1 + 1e-4 is below half an f16 step (2^-10) above 1, so it rounds to 1.
        assert_eq!(q[0][0], 1.0);
        assert!((q[0][1] - 0.1).abs() < 1e-4 && q[0][1] != 0.1);
        assert!(fake_quantize(&w, &sym(12)).is_err());
    }

    #[test]
    fn ste_passes_gradient_through() {
        let w = candle_core::Var::new(&[[0.1f32, -0.7, 0.33]], &sculpt_nn::device()).unwrap();
        let y = quantize_ste(w.as_tensor(), &sym(2)).unwrap();
        let values: Vec<Vec<f32>> = y.to_vec2().unwrap();
        assert_eq!(values, vec![vec![0.0, -0.7, 0.0]]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g: Vec<Vec<f32>> = grads.get(w.as_tensor()).unwrap().to_vec2().unwrap();
        assert_eq!(g, vec![vec![1.0, 1.0, 1.0]]);
    }

    #[test]
    fn zero_rows_stay_zero() {
        let w = Tensor::zeros((2, 3), DType::F32, &sculpt_nn::device()).unwrap();
        for symmetric in [true, false] {
            let scheme = WeightQuant {
                bits: 4,
                per_channel: true,
                symmetric,
            };
            let q: Vec<Vec<f32>> = fake_quantize(&w, &scheme).unwrap().to_vec2().unwrap();
            assert!(q.iter().flatten().all(|v| *v == 0.0));
        }
    }

    #[test]
    fn packed_weights_load_back_to_the_same_values() {
        use sculpt_nn::zoo;
        let graph = zoo::init(zoo::spec("mlp", &[64], 10).unwrap(), 3).unwrap();
        let mut schemes = BTreeMap::new();
        let names: Vec<String> = graph
            .spec
            .weight_layers()
            .iter()
            .map(|l| format!("{l}.weight"))
            .collect();
        schemes.insert(names[0].clone(), sym(3));
        schemes.insert(
            names[1].clone(),
            WeightQuant {
                bits: 5,
                per_channel: true,
                symmetric: false,
            },
        );
        schemes.insert(
            names[2].clone(),
            WeightQuant {
                bits: 16,
                per_channel: true,
                symmetric: true,
            },
        );
        let q = quantize(&graph, &schemes).unwrap();
        let packed = pack(&q).unwrap();
        assert_eq!(
            packed.len(),
            2,
            "3 and 5 bits are packed; 16 is half precision"
        );
        let dir = tempfile::tempdir().unwrap();
        let bytes = sculpt_nn::io::save_packed(&q, &packed, dir.path()).unwrap();
        let back = sculpt_nn::io::load(dir.path()).unwrap();
        assert_eq!(back.spec, q.spec);
        for (name, t) in &q.params {
            let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = back.params[name].flatten_all().unwrap().to_vec1().unwrap();
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-6, "{name}: {worst}");
        }
        // 3-bit codes take 3/32 of the f32 bytes of that layer.
        let f32_bytes: usize = q.params.values().map(|t| t.elem_count() * 4).sum();
        assert!(
            (bytes as usize) < f32_bytes * 2 / 3,
            "{bytes} against {f32_bytes}"
        );
    }

    #[test]
    fn sparse_packed_weights_store_a_relative_index_and_load_back() {
        use sculpt_nn::zoo;
        let graph = zoo::init(zoo::spec("mlp", &[64], 10).unwrap(), 5).unwrap();
        let name = format!("{}.weight", graph.spec.weight_layers()[0]);
        let w = graph.params[&name].clone();
        // 90% of the weights zeroed at random, and the first 40 rows entirely, so some
        // gaps outrun every index width and need padding entries.
        let values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let cols = w.dims()[1];
        let sparse: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i / cols < 40 || (i * 7919) % 10 != 0 {
                    0.0
                } else {
                    v
                }
            })
            .collect();
        let mut g = graph.clone();
        g.params.insert(
            name.clone(),
            Tensor::from_vec(sparse, w.dims(), &sculpt_nn::device()).unwrap(),
        );
        g.spec.sparse.insert(name.clone());
        let mut schemes = BTreeMap::new();
        schemes.insert(
            name.clone(),
            WeightQuant {
                bits: 4,
                per_channel: true,
                symmetric: false,
            },
        );
        let q = quantize(&g, &schemes).unwrap();
        let packed = pack(&q).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bytes = sculpt_nn::io::save_packed(&q, &packed, dir.path()).unwrap();
        let text = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        assert!(String::from_utf8_lossy(&text).contains(&format!("{name}.gaps")));
        let back = sculpt_nn::io::load(dir.path()).unwrap();
        let a: Vec<f32> = q.params[&name].flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = back.params[&name].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            a.iter().filter(|v| **v != 0.0).count(),
            b.iter().filter(|v| **v != 0.0).count()
        );
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-6, "{worst}");
        // The layer's stored bytes are near what the size accounting counts for it.
        let counted = crate::size::param_size_bytes(&q, &name).unwrap();
        let dense_codes = (a.len() * 4).div_ceil(8) as u64;
        assert!(counted < dense_codes / 2, "{counted} against {dense_codes}");
        let others: u64 = q
            .params
            .iter()
            .filter(|(k, _)| **k != name)
            .map(|(_, t)| t.elem_count() as u64 * 4)
            .sum();
        assert!(
            bytes < others + counted + 2048,
            "{bytes} against {} + {counted}",
            others
        );
    }
}
