//! Size and cost accounting, counted honestly. A quantized weight costs its bit width per
//! stored value, packed, plus an f32 scale per output channel (or per tensor) and, when
//! asymmetric, a zero point of the code's width per scale; half precision costs 2 bytes per
//! value. A sparse weight stores only its nonzeros plus an index, in whichever of three
//! formats is smallest for it: a bitmap, CSR, or Deep Compression's relative index (each
//! nonzero carries the gap since the previous one in `b` bits, with a padding zero
//! inserted when a gap does not fit; `b` from 2 to 8, the best for the tensor). Every other
//! tensor costs 4 bytes per element. No entropy coding is assumed. BOPs are FLOPs times weight bits times activation bits, over the layers
//! that hold weights.

use candle_core::{DType, Tensor};
use sculpt_nn::{Graph, GraphSpec, WeightQuant};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Bytes of the index that locates `nonzeros` values in a `[rows, cols]` matrix: a bitmap
/// of one bit per element, or CSR (u32 row pointers, column indices of the smallest
/// unsigned width that holds `cols`), whichever is smaller.
pub fn sparse_index_bytes(rows: u64, cols: u64, nonzeros: u64) -> u64 {
    let bitmap = (rows * cols).div_ceil(8);
    let column_bytes = if cols <= 1 << 8 {
        1
    } else if cols <= 1 << 16 {
        2
    } else {
        4
    };
    let csr = 4 * (rows + 1) + nonzeros * column_bytes;
    bitmap.min(csr)
}

/// Bytes of the values and index of a sparse tensor stored with a relative index of
/// `index_bits`-bit gaps: every entry holds a gap and a value, and a gap longer than
/// `2^index_bits` takes padding entries (a zero value that jumps the maximum gap).
/// `gaps` are the distances between consecutive nonzeros in row-major order, the first
/// counted from position -1, so every gap is at least 1.
pub fn relative_index_bytes(gaps: &[u64], index_bits: u32, value_bits: u32) -> u64 {
    let span = 1u64 << index_bits;
    let entries: u64 = gaps.iter().map(|g| g.div_ceil(span)).sum();
    (entries * (index_bits + value_bits) as u64).div_ceil(8)
}

/// The gaps between consecutive nonzeros of `t` in row-major order.
pub fn nonzero_gaps(t: &Tensor) -> Result<Vec<u64>> {
    let values: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let mut gaps = Vec::new();
    let mut last: i64 = -1;
    for (i, v) in values.iter().enumerate() {
        if *v != 0.0 {
            gaps.push((i as i64 - last) as u64);
            last = i as i64;
        }
    }
    Ok(gaps)
}

/// Bytes of the values and index of a sparse tensor of `shape` whose nonzeros have `gaps`:
/// the smallest of a bitmap, CSR, or a relative index of 2 to 8 bits.
pub fn sparse_values_and_index_bytes(shape: &[usize], gaps: &[u64], value_bits: u32) -> u64 {
    let count = shape.iter().product::<usize>() as u64;
    let rows = shape.first().copied().unwrap_or(1).max(1) as u64;
    let nonzeros = gaps.len() as u64;
    let values = (nonzeros * value_bits as u64).div_ceil(8);
    let indexed = values + sparse_index_bytes(rows, count / rows, nonzeros);
    (2..=8)
        .map(|b| relative_index_bytes(gaps, b, value_bits))
        .fold(indexed, u64::min)
}

/// Bytes to store a tensor of `shape` with `nonzeros` nonzero values under `scheme`
/// (None: f32), densely or (`sparse`) as nonzeros plus an index.
pub fn stored_bytes(
    shape: &[usize],
    nonzeros: u64,
    scheme: Option<&WeightQuant>,
    sparse: bool,
) -> u64 {
    let count = shape.iter().product::<usize>() as u64;
    let rows = shape.first().copied().unwrap_or(1).max(1) as u64;
    let value_bits = scheme.map_or(32, |q| q.bits.min(32)) as u64;
    let (values, index) = if sparse {
        (nonzeros, sparse_index_bytes(rows, count / rows, nonzeros))
    } else {
        (count, 0)
    };
    let codes = (values * value_bits).div_ceil(8);
    codes + index + side_bytes(shape, scheme)
}

fn count_nonzeros(t: &Tensor) -> Result<u64> {
    Ok(t.ne(0f32)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as u64)
}

/// Bytes to store the named parameter of `graph` as its spec says.
pub fn param_size_bytes(graph: &Graph, name: &str) -> Result<u64> {
    let t = graph.param(name)?;
    let scheme = graph.spec.weight_quant.get(name);
    if !graph.spec.sparse.contains(name) {
        return Ok(stored_bytes(t.dims(), t.elem_count() as u64, scheme, false));
    }
    let gaps = nonzero_gaps(t)?;
    let value_bits = scheme.map_or(32, |q| q.bits.min(32));
    Ok(sparse_values_and_index_bytes(t.dims(), &gaps, value_bits) + side_bytes(t.dims(), scheme))
}

/// Bytes of the scales and zero points of a quantized tensor.
fn side_bytes(shape: &[usize], scheme: Option<&WeightQuant>) -> u64 {
    let rows = shape.first().copied().unwrap_or(1).max(1) as u64;
    match scheme {
        Some(q) if q.bits <= 8 => {
            let groups = if q.per_channel { rows } else { 1 };
            let zero_points = if q.symmetric {
                0
            } else {
                groups * (q.bits as u64).div_ceil(8)
            };
            4 * groups + zero_points
        }
        _ => 0,
    }
}

/// Bytes to store every parameter and buffer of `graph` as its spec says, plus each
/// activation quantizer's f32 scale and one-byte zero point.
pub fn model_size_bytes(graph: &Graph) -> Result<u64> {
    let params: u64 = graph
        .params
        .keys()
        .map(|name| param_size_bytes(graph, name))
        .sum::<Result<u64>>()?;
    Ok(params + 5 * graph.spec.act_quant.len() as u64)
}

/// The costs of a graph, known from its structure and weights alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Accounting {
    /// Scalar parameters, buffers excluded.
    pub params: u64,
    /// Nonzero scalar parameters, buffers excluded.
    pub nonzeros: u64,
    pub size_bytes: u64,
    /// FLOPs of one forward pass for one sample.
    pub flops: u64,
    /// Bit operations of one forward pass for one sample (weight layers only).
    pub bops: u64,
}

/// Accounts `graph`: parameters, nonzeros, bytes, FLOPs and BOPs. A layer's activation
/// bits are those of its input quantizer, 32 without one.
pub fn account(graph: &Graph) -> Result<Accounting> {
    let rows = graph.spec.summarize()?;
    let mut nonzeros = 0;
    for (name, t) in &graph.params {
        if !GraphSpec::is_buffer(name) {
            nonzeros += count_nonzeros(t)?;
        }
    }
    let weight_layers = graph.spec.weight_layers();
    let bops = rows
        .iter()
        .filter(|r| weight_layers.contains(&r.name))
        .map(|r| {
            let act_bits = graph.spec.act_quant.get(&r.name).map_or(32, |q| q.bits);
            r.flops * graph.weight_bits(&format!("{}.weight", r.name)) as u64 * act_bits as u64
        })
        .sum();
    Ok(Accounting {
        params: graph.num_params() as u64,
        nonzeros,
        size_bytes: model_size_bytes(graph)?,
        flops: rows.iter().map(|r| r.flops).sum(),
        bops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn counts_packed_codes_scales_and_float_biases() {
        let graph = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        assert_eq!(model_size_bytes(&graph).unwrap(), 4 * 50_826);
        let schemes: BTreeMap<String, WeightQuant> = [
            (
                "fc1.weight".to_string(),
                WeightQuant::symmetric_per_channel(4),
            ),
            (
                "fc2.weight".to_string(),
                WeightQuant {
                    bits: 3,
                    per_channel: false,
                    symmetric: false,
                },
            ),
            (
                "fc3.weight".to_string(),
                WeightQuant::symmetric_per_channel(16),
            ),
        ]
        .into();
        let q = crate::quantize::quantize(&graph, &schemes).unwrap();
        let expected = (64 * 256 * 4) / 8 + 4 * 256   // fc1 codes + per-channel scales
            + 4 * 256                                // fc1 bias
            + (256 * 128 * 3) / 8 + 4 + 1            // fc2 codes + one scale + one zero point
            + 4 * 128                                // fc2 bias
            + 2 * 128 * 10                           // fc3 in half precision
            + 4 * 10; // fc3 bias
        assert_eq!(model_size_bytes(&q).unwrap(), expected as u64);
    }

    #[test]
    fn sparse_storage_takes_the_smaller_index() {
        // 100 x 300 at 10% density: bitmap 3750 bytes, CSR 404 + 3000 * 2 = 6404.
        assert_eq!(sparse_index_bytes(100, 300, 3000), 3750);
        // At 1% density CSR wins: 404 + 300 * 2 = 1004.
        assert_eq!(sparse_index_bytes(100, 300, 300), 1004);
        // Narrow rows use one-byte column indices: 4 * 11 + 50 = 94 < bitmap 125.
        assert_eq!(sparse_index_bytes(10, 100, 50), 94);
        // 6-bit codes of 3000 nonzeros, per-channel scales, and the bitmap.
        let scheme = WeightQuant::symmetric_per_channel(6);
        assert_eq!(
            stored_bytes(&[100, 300], 3000, Some(&scheme), true),
            3000 * 6 / 8 + 400 + 3750
        );
        assert_eq!(stored_bytes(&[100, 300], 3000, None, false), 4 * 100 * 300);
    }

    #[test]
    fn relative_index_counts_padding_entries() {
        // Nonzeros at 0, 1 and 40 of a row of 64: gaps 1, 1, 39.
        let mut v = vec![0f32; 64];
        v[0] = 1.0;
        v[1] = -2.0;
        v[40] = 0.5;
        let t = Tensor::from_vec(v, (1, 64), &sculpt_nn::device()).unwrap();
        let gaps = nonzero_gaps(&t).unwrap();
        assert_eq!(gaps, vec![1, 1, 39]);
        // 3-bit gaps span 8: 39 needs ceil(39 / 8) = 5 entries, 7 in all, 7 * (3 + 6) bits.
        assert_eq!(relative_index_bytes(&gaps, 3, 6), (7u64 * 9).div_ceil(8));
        // 8-bit gaps: 3 entries of 14 bits.
        assert_eq!(relative_index_bytes(&gaps, 8, 6), (3u64 * 14).div_ceil(8));
        // The bitmap (8 bytes + 3 values) is beaten by the best relative index: 6-bit gaps,
        // 3 entries of 12 bits, 5 bytes.
        let best = sparse_values_and_index_bytes(&[1, 64], &gaps, 6);
        assert_eq!(
            best,
            (2..=8)
                .map(|b| relative_index_bytes(&gaps, b, 6))
                .min()
                .unwrap()
                .min(8 + 3)
        );
        assert_eq!(best, 5);
    }

    #[test]
    fn accounting_counts_nonzeros_and_bops() {
        let mut graph = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        let w = graph.params["fc1.weight"].clone();
        let mask = Tensor::arange(0u32, 64 * 256, &sculpt_nn::device())
            .unwrap()
            .reshape((256, 64))
            .unwrap()
            .ge(64 * 128)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        graph
            .params
            .insert("fc1.weight".into(), (w * mask).unwrap());
        graph.spec.sparse.insert("fc1.weight".into());
        let q = crate::quantize::quantize(
            &graph,
            &[(
                "fc2.weight".to_string(),
                WeightQuant::symmetric_per_channel(4),
            )]
            .into(),
        )
        .unwrap();
        let a = account(&q).unwrap();
        assert_eq!(a.params, 50_826);
        // Counted by hand: every nonzero value of every parameter of the compressed graph
        // (4-bit quantization of fc2 rounds its smallest weights to zero too).
        let by_hand: u64 = q
            .params
            .values()
            .map(|t| {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .filter(|v| **v != 0.0)
                    .count() as u64
            })
            .sum();
        assert_eq!(a.nonzeros, by_hand);
        assert!(a.nonzeros <= 50_826 - 64 * 128);
        let fc1 = 2 * 64 * 256 + 256;
        let fc2 = 2 * 256 * 128 + 128;
        let fc3 = 2 * 128 * 10 + 10;
        assert_eq!(
            a.bops,
            (fc1 * 32 * 32 + fc2 * 4 * 32 + fc3 * 32 * 32) as u64
        );
        // fc1 as sparse: 8192 f32 nonzeros, all in the second half. The bitmap costs 2048
        // bytes (CSR 1028 + 8192); a relative index of 2-bit gaps needs one entry per
        // nonzero plus 2048 padding entries to jump the zero half: 10240 * 34 bits.
        let values = 4 * 8192;
        let relative = (10_240 * 34) / 8;
        assert_eq!(
            relative_index_bytes(&nonzero_gaps(&q.params["fc1.weight"]).unwrap(), 2, 32),
            relative
        );
        assert_eq!(
            param_size_bytes(&q, "fc1.weight").unwrap(),
            (values + 2048).min(relative)
        );
    }
}
