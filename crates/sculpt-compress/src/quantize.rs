//! Weight quantization: symmetric, per output channel. A `b`-bit code lies in
//! `[-(2^(b-1) - 1), 2^(b-1) - 1]` and each output channel has one f32 scale, its largest
//! absolute weight divided by the largest code. Fake quantization stores the dequantized
//! values in f32, which is what training and accuracy need; the size accounting counts the
//! packed codes and scales.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use sculpt_nn::Graph;

use crate::error::{layer_error, Result};

/// The largest code magnitude of a `bits`-wide symmetric code.
pub fn max_code(bits: u32) -> f32 {
    ((1u64 << (bits - 1)) - 1) as f32
}

/// Integer codes and per-channel scales of a quantized weight matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    pub shape: Vec<usize>,
    pub bits: u32,
    /// Row-major codes.
    pub codes: Vec<i32>,
    /// One scale per output channel (row).
    pub scales: Vec<f32>,
}

impl QuantizedTensor {
    pub fn dequantize(&self) -> Result<Tensor> {
        let row = self.codes.len() / self.scales.len().max(1);
        let values: Vec<f32> = self
            .codes
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f32 * self.scales[i / row])
            .collect();
        Ok(Tensor::from_vec(
            values,
            self.shape.clone(),
            &sculpt_nn::device(),
        )?)
    }
}

/// Per-channel scales of `weight` (`[out, ...]`) as an `[out, 1]` tensor. All-zero rows get
/// scale 1 so that their codes are 0 rather than NaN.
fn scales(weight: &Tensor, bits: u32) -> Result<Tensor> {
    let rows = weight.flatten_from(1)?;
    let max_abs = rows.abs()?.max_keepdim(1)?;
    let zero = max_abs.eq(0f32)?.to_dtype(DType::F32)?;
    Ok(((max_abs + zero)? / max_code(bits) as f64)?)
}

/// The integer codes of `weight` as an `[out, rest]` f32 tensor, and the `[out, 1]` scales.
fn codes_and_scales(weight: &Tensor, bits: u32) -> Result<(Tensor, Tensor)> {
    check_bits(bits)?;
    let scale = scales(weight, bits)?;
    let limit = max_code(bits) as f64;
    let codes = weight
        .flatten_from(1)?
        .broadcast_div(&scale)?
        .round()?
        .clamp(-limit, limit)?;
    Ok((codes, scale))
}

/// Quantizes `weight` to `bits` and returns codes and scales.
pub fn quantize_codes(weight: &Tensor, bits: u32) -> Result<QuantizedTensor> {
    let (codes, scale) = codes_and_scales(weight, bits)?;
    Ok(QuantizedTensor {
        shape: weight.dims().to_vec(),
        bits,
        codes: codes
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|c| c as i32)
            .collect(),
        scales: scale.flatten_all()?.to_vec1()?,
    })
}

/// The dequantized value of `weight` at `bits`: every weight moves to the nearest point of
/// its channel's grid, so the error is at most half a step.
pub fn fake_quantize(weight: &Tensor, bits: u32) -> Result<Tensor> {
    let (codes, scale) = codes_and_scales(weight, bits)?;
    Ok(codes.broadcast_mul(&scale)?.reshape(weight.dims())?)
}

/// Fake quantization with a straight-through estimator: the forward value is quantized,
/// the gradient passes to `weight` unchanged.
pub fn quantize_ste(weight: &Tensor, bits: u32) -> Result<Tensor> {
    let q = fake_quantize(&weight.detach(), bits)?;
    Ok((weight + (q - weight.detach())?)?)
}

/// Returns a new graph whose named weights are quantized, recording each bit width in the
/// spec so that size accounting and fine-tuning know of it.
pub fn quantize(graph: &Graph, bits: &BTreeMap<String, u32>) -> Result<Graph> {
    let mut out = graph.clone();
    for (name, &b) in bits {
        if b >= 32 {
            continue;
        }
        let w = out
            .params
            .get(name)
            .ok_or_else(|| layer_error(name, "no such parameter to quantize"))?;
        if w.rank() < 2 {
            return Err(layer_error(name, "only weight matrices are quantized"));
        }
        let q = fake_quantize(w, b)?;
        out.params.insert(name.clone(), q);
        out.spec.weight_bits.insert(name.clone(), b);
    }
    Ok(out)
}

fn check_bits(bits: u32) -> Result<()> {
    if (2..=16).contains(&bits) {
        Ok(())
    } else {
        Err(crate::error::CompressError::Plan(format!(
            "bit width {bits} is outside 2..=16"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_per_weight_is_at_most_half_a_step() {
        let w = Tensor::randn(0f32, 0.3, (64, 48), &sculpt_nn::device()).unwrap();
        for bits in [2, 3, 4, 5, 6, 8] {
            let q = quantize_codes(&w, bits).unwrap();
            let deq: Vec<Vec<f32>> = fake_quantize(&w, bits).unwrap().to_vec2().unwrap();
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
    fn ste_passes_gradient_through() {
        let w = candle_core::Var::new(&[[0.1f32, -0.7, 0.33]], &sculpt_nn::device()).unwrap();
        let y = quantize_ste(w.as_tensor(), 2).unwrap();
        let values: Vec<Vec<f32>> = y.to_vec2().unwrap();
        assert_eq!(values, vec![vec![0.0, -0.7, 0.0]]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g: Vec<Vec<f32>> = grads.get(w.as_tensor()).unwrap().to_vec2().unwrap();
        assert_eq!(g, vec![vec![1.0, 1.0, 1.0]]);
    }

    #[test]
    fn zero_rows_stay_zero() {
        let w = Tensor::zeros((2, 3), DType::F32, &sculpt_nn::device()).unwrap();
        let q: Vec<Vec<f32>> = fake_quantize(&w, 4).unwrap().to_vec2().unwrap();
        assert!(q.iter().flatten().all(|v| *v == 0.0));
    }
}
