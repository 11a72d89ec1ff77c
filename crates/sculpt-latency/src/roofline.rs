//! The analytic roofline model. Each layer costs
//! `max(flops / rate, bytes / bandwidth) + overhead`, charged by its op's cost class
//! (`sculpt_nn::CostClass`): a weighted layer (Linear, Conv2d) runs at the rate of its
//! weight's bit width and reads its weight as stored (with scales) and its f32 bias; an
//! element-wise op (batch norm, pooling, residual sums) runs at the f32 rate and reads its
//! f32 parameters and buffers; both read their f32 inputs and write their f32 output.
//! Fused ops (ReLU, in the epilogue of the layer before it) and views (Flatten, Dropout at
//! inference) are not charged.

use sculpt_nn::{CostClass, Graph};
use serde::Serialize;

use crate::error::Result;
use crate::profile::DeviceProfile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Bound {
    Compute,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerLatency {
    pub name: String,
    pub seconds: f64,
    pub bound: Bound,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyEstimate {
    pub batch_size: usize,
    pub layers: Vec<LayerLatency>,
}

impl LatencyEstimate {
    pub fn total_ms(&self) -> f64 {
        self.layers.iter().map(|l| l.seconds).sum::<f64>() * 1e3
    }
}

/// Estimates the latency of one forward pass of `batch_size` samples on `profile`.
pub fn estimate(
    graph: &Graph,
    profile: &DeviceProfile,
    batch_size: usize,
) -> Result<LatencyEstimate> {
    let batch = batch_size.max(1) as f64;
    let rows = graph.spec.summarize()?;
    let mut shapes: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    shapes.insert(
        sculpt_nn::graph::INPUT,
        graph.spec.input_shape.iter().product(),
    );
    let mut layers = Vec::new();
    for (node, row) in graph.spec.nodes.iter().zip(&rows) {
        let out_elems: usize = row.output_shape.iter().product();
        let in_elems: usize = node
            .inputs
            .iter()
            .map(|i| shapes.get(i.as_str()).copied().unwrap_or(0))
            .sum();
        shapes.insert(node.name.as_str(), out_elems);
        let activation_bytes = 4.0 * batch * (in_elems + out_elems) as f64;
        let flops = batch * row.flops as f64;
        let def = node.op.def();
        let (weight_bytes, rate) = match def.cost() {
            CostClass::Weighted => {
                let weight_name = format!("{}.weight", node.name);
                let bits = graph.weight_bits(&weight_name);
                let weight = sculpt_compress::param_size_bytes(graph, &weight_name)? as f64;
                let bias = graph
                    .params
                    .get(&format!("{}.bias", node.name))
                    .map_or(0.0, |b| 4.0 * b.elem_count() as f64);
                (weight + bias, profile.rate_for_bits(bits))
            }
            CostClass::Elementwise => {
                let elems: usize = def
                    .params()
                    .iter()
                    .map(|p| p.shape.iter().product::<usize>())
                    .sum();
                (4.0 * elems as f64, profile.ops_per_second.f32)
            }
            CostClass::Fused | CostClass::View => continue,
        };
        let compute = flops / rate;
        let memory = (weight_bytes + activation_bytes) / profile.memory_bandwidth_bytes_per_s;
        layers.push(LayerLatency {
            name: node.name.clone(),
            seconds: compute.max(memory) + profile.layer_overhead_s,
            bound: if compute >= memory {
                Bound::Compute
            } else {
                Bound::Memory
            },
        });
    }
    Ok(LatencyEstimate {
        batch_size: batch_size.max(1),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn profile() -> DeviceProfile {
        DeviceProfile {
            name: "t".into(),
            description: String::new(),
            source: String::new(),
            ops_per_second: crate::OpsPerSecond {
                f32: 1e9,
                int8: 4e9,
                int4: 4e9,
            },
            memory_bandwidth_bytes_per_s: 1e9,
            layer_overhead_s: 1e-6,
        }
    }

    #[test]
    fn hand_computed_roofline() {
        let graph = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        let est = estimate(&graph, &profile(), 1).unwrap();
        // fc1: flops 2*64*256 = 32768 → 32.768 µs; bytes 4*(64*256 + 256 + 64 + 256)
        // = 67840 → 67.84 µs: memory bound.
        assert_eq!(est.layers[0].bound, Bound::Memory);
        assert!((est.layers[0].seconds - (67.84e-6 + 1e-6)).abs() < 1e-12);
        // At batch 256 the same layer is compute bound.
        let big = estimate(&graph, &profile(), 256).unwrap();
        assert_eq!(big.layers[0].bound, Bound::Compute);
    }

    #[test]
    fn quantization_and_pruning_make_it_faster() {
        let graph = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        let base = estimate(&graph, &profile(), 1).unwrap().total_ms();
        let bits: BTreeMap<String, sculpt_nn::WeightQuant> = [(
            "fc2.weight".to_string(),
            sculpt_nn::WeightQuant::symmetric_per_channel(4),
        )]
        .into();
        let q = sculpt_compress::quantize(&graph, &bits).unwrap();
        let quantized = estimate(&q, &profile(), 1).unwrap().total_ms();
        let p = sculpt_compress::prune(&graph, &[("fc1".to_string(), 0.5)].into()).unwrap();
        let pruned = estimate(&p, &profile(), 1).unwrap().total_ms();
        assert!(
            quantized < base && pruned < base,
            "{base} {quantized} {pruned}"
        );
    }
}
