//! Structured pruning. Removing a hidden neuron of a Linear layer deletes its weight row
//! and bias entry and the matching input column of the next Linear layer, so the result is
//! a smaller dense network. Neurons are ranked by the L1 norm of their weight row.

use std::collections::BTreeMap;

use candle_core::Tensor;
use sculpt_nn::{Graph, Op};

use crate::error::{layer_error, Result};

/// Linear layers whose outputs feed another Linear layer through element-wise ops only;
/// these can lose neurons. The output layer cannot: its width is the number of classes.
pub fn prunable_layers(graph: &Graph) -> Vec<String> {
    graph
        .spec
        .linear_layers()
        .into_iter()
        .filter(|name| consumer(graph, name).is_some())
        .collect()
}

/// The Linear layer that consumes `layer`'s outputs through a chain of element-wise ops.
fn consumer(graph: &Graph, layer: &str) -> Option<String> {
    let mut current = layer.to_string();
    loop {
        let readers: Vec<_> = graph
            .spec
            .nodes
            .iter()
            .filter(|n| n.inputs.contains(&current))
            .collect();
        if readers.len() != 1 || graph.spec.output == current {
            return None;
        }
        match readers[0].op {
            Op::Relu | Op::Dropout { .. } => current = readers[0].name.clone(),
            Op::Linear { .. } => return Some(readers[0].name.clone()),
            // Channel pruning through convolutions, batch norm and residual sums is not
            // supported yet: such layers keep all their outputs.
            _ => return None,
        }
    }
}

/// The neurons of `layer` that survive pruning `ratio` of them, ascending. At least one
/// neuron is kept; the rest are the largest by L1 norm of their weight row.
pub fn select_neurons(graph: &Graph, layer: &str, ratio: f64) -> Result<Vec<usize>> {
    let weight = graph.param(&format!("{layer}.weight"))?;
    let rows: Vec<Vec<f32>> = weight.to_vec2()?;
    let total = rows.len();
    let removed = ((total as f64) * ratio).floor() as usize;
    let keep = (total - removed.min(total)).max(1);
    let mut scored: Vec<(usize, f32)> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| (i, row.iter().map(|v| v.abs()).sum()))
        .collect();
    // Highest norm first; ties keep the lower index so the choice is deterministic.
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept: Vec<usize> = scored[..keep].iter().map(|(i, _)| *i).collect();
    kept.sort_unstable();
    Ok(kept)
}

/// Returns a new graph with `ratios[layer]` of each named layer's neurons removed. Every
/// layer's neurons are ranked on the original weights, so the result does not depend on
/// the order in which layers are pruned.
pub fn prune(graph: &Graph, ratios: &BTreeMap<String, f64>) -> Result<Graph> {
    let mut selections = Vec::new();
    for (layer, &ratio) in ratios {
        if ratio <= 0.0 {
            continue;
        }
        if !(0.0..1.0).contains(&ratio) {
            return Err(layer_error(
                layer,
                format!("prune ratio {ratio} is not in [0, 1)"),
            ));
        }
        let next = consumer(graph, layer).ok_or_else(|| {
            layer_error(
                layer,
                "cannot be pruned: it is not a Linear layer feeding another Linear layer",
            )
        })?;
        selections.push((layer.clone(), next, select_neurons(graph, layer, ratio)?));
    }
    let mut out = graph.clone();
    for (layer, next, kept) in selections {
        let index = Tensor::from_vec(
            kept.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            kept.len(),
            &sculpt_nn::device(),
        )?;
        let weight_name = format!("{layer}.weight");
        let w = out.param(&weight_name)?.index_select(&index, 0)?;
        out.params.insert(weight_name, w);
        let bias_name = format!("{layer}.bias");
        if let Some(b) = out.params.get(&bias_name) {
            let b = b.index_select(&index, 0)?;
            out.params.insert(bias_name, b);
        }
        let next_weight = format!("{next}.weight");
        let w_next = out.param(&next_weight)?.index_select(&index, 1)?;
        out.params.insert(next_weight, w_next);
        for node in out.spec.nodes.iter_mut() {
            if let Op::Linear {
                in_features,
                out_features,
                ..
            } = &mut node.op
            {
                if node.name == layer {
                    *out_features = kept.len();
                } else if node.name == next {
                    *in_features = kept.len();
                }
            }
        }
    }
    // Re-check the whole graph: shapes must still chain.
    Ok(Graph::new(out.spec, out.params)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sculpt_nn::zoo;

    #[test]
    fn pruned_network_equals_masked_dense_network() {
        let graph = zoo::build("mlp", &[64], 10, 3).unwrap();
        let ratios: BTreeMap<String, f64> =
            [("fc1".to_string(), 0.5), ("fc2".to_string(), 0.3)].into();
        let pruned = prune(&graph, &ratios).unwrap();
        assert_eq!(pruned.param("fc1.weight").unwrap().dims(), &[128, 64]);
        assert_eq!(pruned.param("fc2.weight").unwrap().dims(), &[90, 128]);
        assert_eq!(pruned.param("fc3.weight").unwrap().dims(), &[10, 90]);
        assert!(pruned.num_params() < graph.num_params() / 2);

        // The dense network with the removed neurons' rows and biases zeroed computes
        // the same function: a zeroed neuron outputs relu(0) = 0.
        let mut masked = graph.clone();
        for (layer, ratio) in &ratios {
            let kept = select_neurons(&graph, layer, *ratio).unwrap();
            let out = graph.param(&format!("{layer}.weight")).unwrap().dims()[0];
            let mask: Vec<f32> = (0..out)
                .map(|i| if kept.contains(&i) { 1.0 } else { 0.0 })
                .collect();
            let mask = Tensor::from_vec(mask, out, &sculpt_nn::device()).unwrap();
            let w = masked.params[&format!("{layer}.weight")]
                .broadcast_mul(&mask.unsqueeze(1).unwrap())
                .unwrap();
            let b = masked.params[&format!("{layer}.bias")].mul(&mask).unwrap();
            masked.params.insert(format!("{layer}.weight"), w);
            masked.params.insert(format!("{layer}.bias"), b);
        }
        let x = Tensor::randn(0f32, 1.0, (32, 64), &sculpt_nn::device()).unwrap();
        let a: Vec<Vec<f32>> = pruned.forward(&x).unwrap().to_vec2().unwrap();
        let b: Vec<Vec<f32>> = masked.forward(&x).unwrap().to_vec2().unwrap();
        let max_diff = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(max_diff <= 1e-5, "max difference {max_diff}");
        // And pruning really changed the function compared with the unmasked network.
        let c: Vec<Vec<f32>> = graph.forward(&x).unwrap().to_vec2().unwrap();
        assert!(c
            .iter()
            .flatten()
            .zip(a.iter().flatten())
            .any(|(p, q)| (p - q).abs() > 1e-3));
    }

    #[test]
    fn keeps_the_largest_rows() {
        let spec = sculpt_nn::zoo::mlp_spec("t", &[2], &[4], 2);
        let mut graph = zoo::init(spec, 0).unwrap();
        let w = Tensor::new(
            &[[1f32, 1.], [0.1, 0.], [-3., 0.], [0., 0.5]],
            &sculpt_nn::device(),
        )
        .unwrap();
        graph.params.insert("fc1.weight".into(), w);
        assert_eq!(select_neurons(&graph, "fc1", 0.5).unwrap(), vec![0, 2]);
        assert_eq!(select_neurons(&graph, "fc1", 0.99).unwrap(), vec![2]);
    }

    #[test]
    fn output_layer_cannot_be_pruned() {
        let graph = zoo::build("mlp", &[64], 10, 3).unwrap();
        assert_eq!(prunable_layers(&graph), vec!["fc1", "fc2"]);
        let err = prune(&graph, &[("fc3".to_string(), 0.5)].into()).unwrap_err();
        assert!(err.to_string().contains("fc3"), "{err}");
    }
}
