//! Size accounting, counted honestly: a quantized weight costs its bit width per element,
//! packed, plus one f32 scale per output channel; every other tensor costs 4 bytes per
//! element. No entropy coding is assumed.

use candle_core::Tensor;
use sculpt_nn::Graph;

/// Bytes to store `tensor` at `bits` (None: f32).
pub fn tensor_size_bytes(tensor: &Tensor, bits: Option<u32>) -> u64 {
    let count = tensor.elem_count() as u64;
    match bits {
        Some(b) if b < 32 => {
            let channels = tensor.dims().first().copied().unwrap_or(1) as u64;
            (count * b as u64).div_ceil(8) + 4 * channels
        }
        _ => 4 * count,
    }
}

/// Bytes to store every parameter of `graph` at its recorded bit width.
pub fn model_size_bytes(graph: &Graph) -> u64 {
    graph
        .params
        .iter()
        .map(|(name, t)| tensor_size_bytes(t, graph.spec.weight_bits.get(name).copied()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn counts_packed_codes_scales_and_float_biases() {
        let graph = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        assert_eq!(model_size_bytes(&graph), 4 * 50_826);
        let bits: BTreeMap<String, u32> =
            [("fc1.weight".to_string(), 4), ("fc2.weight".to_string(), 3)].into();
        let q = crate::quantize::quantize(&graph, &bits).unwrap();
        let expected = (64 * 256 * 4) / 8 + 4 * 256   // fc1 codes + scales
            + 4 * 256                                // fc1 bias
            + (256 * 128 * 3) / 8 + 4 * 128          // fc2 codes + scales
            + 4 * 128                                // fc2 bias
            + 4 * (128 * 10 + 10); // fc3 in f32
        assert_eq!(model_size_bytes(&q), expected as u64);
    }
}
