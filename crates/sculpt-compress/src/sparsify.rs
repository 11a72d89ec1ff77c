//! Unstructured pruning: zeroing individual weights of Linear and Conv2d layers by
//! magnitude, per layer, with one threshold across layers, or in the N:M pattern that
//! sparse tensor cores run (N kept in every M consecutive weights of a row). Shapes do not
//! change; the zeros are recorded by adding the weight to `spec.sparse`, so fine-tuning
//! keeps them as a mask ([`masks`]) and size accounting stores the weight sparsely. Biases
//! and batch-norm parameters are never touched: they are few, and zeroing them saves
//! nothing but costs accuracy.
//!
//! Every selection is deterministic: weights are ranked by (|w|, position), so among equal
//! magnitudes the earlier weight goes first, and a run repeats exactly.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use sculpt_nn::{Graph, Op};

use crate::error::{layer_error, Result};

/// Number of nonzero entries of `t`, of any dtype.
///
/// Panics only if the tensor cannot be read back to the host, which cannot happen on the
/// CPU device every tensor lives on.
pub fn nonzeros(t: &Tensor) -> usize {
    let values = t
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .expect("a tensor on the CPU device can be read back");
    values.iter().filter(|v| **v != 0.0).count()
}

/// The keep-masks of the named layers' weights, keyed by parameter name
/// (`fc1.weight`): 1.0 where the weight is nonzero and 0.0 where it is zero, in the
/// weight's shape. Multiplying the weight by its mask during fine-tuning holds the zeros.
pub fn masks(graph: &Graph, layers: &[String]) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for layer in layers {
        let weight = weight_layer(graph, layer)?.name;
        let w = graph.param(&weight)?;
        out.insert(weight, w.ne(0f32)?.to_dtype(DType::F32)?);
    }
    Ok(out)
}

/// Magnitude pruning layer by layer: for each `(layer, ratio)`, the `round(ratio × n)`
/// smallest-magnitude weights of the layer's `n` weights become zero. A ratio of 0 leaves
/// the layer (and its dense marking) alone. Ratios must lie in [0, 1].
pub fn sparsify(graph: &Graph, ratios: &BTreeMap<String, f64>) -> Result<Graph> {
    let mut out = graph.clone();
    for (layer, &ratio) in ratios {
        check_ratio(layer, ratio)?;
        let target = weight_layer(graph, layer)?;
        if ratio == 0.0 {
            continue;
        }
        let (mut values, shape) = weight_values(graph, &target.name)?;
        let count = (ratio * values.len() as f64).round() as usize;
        for i in smallest(&values, count) {
            values[i] = 0.0;
        }
        store(&mut out, &target.name, values, &shape)?;
    }
    Ok(out)
}

/// Global magnitude pruning: one threshold across all the named layers, set so that
/// `round(ratio × n)` of their `n` weights together become zero. Layers whose weights are
/// small lose more than layers whose weights are large. Every named layer is marked
/// sparse, even one that happens to lose nothing, so that all keep their masks.
pub fn sparsify_global(graph: &Graph, layers: &[String], ratio: f64) -> Result<Graph> {
    let scope = if layers.is_empty() {
        "global".to_string()
    } else {
        layers.join(", ")
    };
    check_ratio(&scope, ratio)?;
    let mut targets = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut all: Vec<f32> = Vec::new();
    for layer in layers {
        if !seen.insert(layer) {
            return Err(layer_error(
                layer,
                "is named twice for global sparsification",
            ));
        }
        let target = weight_layer(graph, layer)?;
        let (values, shape) = weight_values(graph, &target.name)?;
        let start = all.len();
        all.extend_from_slice(&values);
        targets.push((target, start, values.len(), shape));
    }
    let mut out = graph.clone();
    if ratio == 0.0 {
        return Ok(out);
    }
    // Ranking the concatenation ranks by (|w|, layer order, position): deterministic.
    let count = (ratio * all.len() as f64).round() as usize;
    for i in smallest(&all, count) {
        all[i] = 0.0;
    }
    for (target, start, len, shape) in targets {
        store(
            &mut out,
            &target.name,
            all[start..start + len].to_vec(),
            &shape,
        )?;
    }
    Ok(out)
}

/// N:M semi-structured sparsity: in every group of `m` consecutive weights along each
/// row (the input dimension of a Linear weight `[out, in]`; the flattened `in/groups × k
/// × k` of a Conv2d weight), the `n` largest magnitudes are kept and the rest become
/// zero. `patterns` maps a layer to its `(n, m)`, with 1 <= n < m. A row whose length is
/// not a multiple of `m` keeps its last, shorter run dense.
pub fn sparsify_n_of_m(
    graph: &Graph,
    patterns: &BTreeMap<String, (usize, usize)>,
) -> Result<Graph> {
    let mut out = graph.clone();
    for (layer, &(n, m)) in patterns {
        let target = weight_layer(graph, layer)?;
        if n == 0 || n >= m {
            return Err(layer_error(
                layer,
                format!("an N:M pattern needs 1 <= N < M, got {n}:{m}"),
            ));
        }
        // Groups run along each row; a row whose length is not a multiple of M keeps its
        // last, shorter run dense (as sparse kernels leave a ragged tail), so pruning an
        // earlier layer to any width never makes the pattern impossible.
        let (mut values, shape) = weight_values(graph, &target.name)?;
        for row in values.chunks_mut(target.row.max(1)) {
            for group in row.chunks_mut(m) {
                if group.len() == m {
                    for i in smallest(group, m - n) {
                        group[i] = 0.0;
                    }
                }
            }
        }
        store(&mut out, &target.name, values, &shape)?;
    }
    Ok(out)
}

/// A layer that holds a prunable weight.
struct WeightLayer {
    /// The weight's parameter name.
    name: String,
    /// Length of one row: the weights that feed one output.
    row: usize,
}

fn weight_layer(graph: &Graph, layer: &str) -> Result<WeightLayer> {
    let node = crate::error::weight_node(graph, layer)?;
    let row = match node.op {
        Op::Linear { in_features, .. } => in_features,
        Op::Conv2d {
            in_channels,
            kernel_size,
            groups,
            ..
        } => in_channels / groups.max(1) * kernel_size * kernel_size,
        ref other => {
            return Err(layer_error(
                layer,
                format!(
                    "is a {} layer; only Linear and Conv2d weights can be sparsified",
                    other.kind()
                ),
            ))
        }
    };
    Ok(WeightLayer {
        name: format!("{layer}.weight"),
        row,
    })
}

fn check_ratio(scope: &str, ratio: f64) -> Result<()> {
    if (0.0..=1.0).contains(&ratio) {
        Ok(())
    } else {
        Err(layer_error(
            scope,
            format!("sparsity {ratio} is not in [0, 1]"),
        ))
    }
}

fn weight_values(graph: &Graph, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let w = graph.param(name)?;
    Ok((w.flatten_all()?.to_vec1::<f32>()?, w.dims().to_vec()))
}

/// Positions of the `count` smallest magnitudes, ranked by (|w|, position).
fn smallest(values: &[f32], count: usize) -> Vec<usize> {
    let count = count.min(values.len());
    let mut order: Vec<usize> = (0..values.len()).collect();
    if count == 0 {
        return Vec::new();
    }
    let rank = |a: &usize, b: &usize| values[*a].abs().total_cmp(&values[*b].abs()).then(a.cmp(b));
    // Partitioning is linear; only the chosen positions matter, not their order.
    if count < order.len() {
        order.select_nth_unstable_by(count - 1, rank);
    }
    order.truncate(count);
    order
}

/// Stores new weight values and marks the weight sparse.
fn store(out: &mut Graph, name: &str, values: Vec<f32>, shape: &[usize]) -> Result<()> {
    let device = out.param(name)?.device().clone();
    out.params
        .insert(name.to_string(), Tensor::from_vec(values, shape, &device)?);
    out.spec.sparse.insert(name.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sculpt_nn::zoo;

    fn zeros(g: &Graph, name: &str) -> usize {
        let w = g.param(name).unwrap();
        w.elem_count() - nonzeros(w)
    }

    fn snapshot(g: &Graph) -> BTreeMap<String, Vec<f32>> {
        g.params
            .iter()
            .map(|(k, t)| (k.clone(), t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect()
    }

    #[test]
    fn per_layer_magnitude_zeroes_exactly_the_requested_count_of_smallest_weights() {
        let g = zoo::build("mlp", &[64], 10, 3).unwrap();
        let before = snapshot(&g);
        let ratios: BTreeMap<String, f64> = [
            ("fc1".to_string(), 0.5),
            ("fc2".to_string(), 0.9),
            ("fc3".to_string(), 0.0),
        ]
        .into();
        let s = sparsify(&g, &ratios).unwrap();
        // fc1 is 256x64, fc2 128x256, fc3 10x128.
        assert_eq!(zeros(&s, "fc1.weight"), 8192);
        assert_eq!(zeros(&s, "fc2.weight"), 29491); // round(0.9 * 32768)
        assert_eq!(zeros(&s, "fc3.weight"), 0);
        // Biases are never touched.
        for bias in ["fc1.bias", "fc2.bias", "fc3.bias"] {
            assert_eq!(zeros(&s, bias), 0, "{bias}");
        }
        // The zeros are the smallest: every kept magnitude is at least every removed one.
        let old = &before["fc1.weight"];
        let new: Vec<f32> = s
            .param("fc1.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let max_removed = old
            .iter()
            .zip(&new)
            .filter(|(_, n)| **n == 0.0)
            .map(|(o, _)| o.abs())
            .fold(0f32, f32::max);
        let min_kept = new
            .iter()
            .filter(|n| **n != 0.0)
            .map(|n| n.abs())
            .fold(f32::INFINITY, f32::min);
        assert!(max_removed <= min_kept, "{max_removed} > {min_kept}");
        // Kept weights keep their values.
        assert!(old.iter().zip(&new).all(|(o, n)| *n == 0.0 || n == o));
        let marked: Vec<&str> = s.spec.sparse.iter().map(|s| s.as_str()).collect();
        assert_eq!(marked, ["fc1.weight", "fc2.weight"]);
        // The input graph is unchanged.
        assert_eq!(snapshot(&g), before);
        assert!(g.spec.sparse.is_empty());
        // And the result is a valid graph that runs.
        let s = Graph::new(s.spec.clone(), s.params.clone()).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 64), &sculpt_nn::device()).unwrap();
        assert_eq!(s.forward(&x).unwrap().dims(), &[3, 10]);
    }

    #[test]
    fn convolution_weights_are_sparsified_and_batch_norm_is_refused() {
        let g = zoo::build("resnet-8", &[1, 16, 16], 10, 0).unwrap();
        let ratios: BTreeMap<String, f64> = [("layer2.conv1".to_string(), 0.75)].into();
        let s = sparsify(&g, &ratios).unwrap();
        // 32 x 16 x 3 x 3 = 4608 weights.
        assert_eq!(zeros(&s, "layer2.conv1.weight"), 3456);
        assert_eq!(zeros(&s, "layer2.bn1.weight"), 0);
        let err = sparsify(&g, &[("bn1".to_string(), 0.5)].into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bn1") && err.contains("BatchNorm2d"), "{err}");
        let err = sparsify(&g, &[("nope".to_string(), 0.5)].into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
        let err = sparsify(&g, &[("fc".to_string(), 1.5)].into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("1.5"), "{err}");
    }

    #[test]
    fn ties_are_broken_by_position() {
        let mut g = zoo::build("mlp", &[4], 2, 0).unwrap();
        // fc3 is 2x128; make it all equal magnitudes but for signs.
        let values: Vec<f32> = (0..256)
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        g.params.insert(
            "fc3.weight".into(),
            Tensor::from_vec(values, (2, 128), &sculpt_nn::device()).unwrap(),
        );
        let s = sparsify(&g, &[("fc3".to_string(), 0.25)].into()).unwrap();
        let new: Vec<f32> = s
            .param("fc3.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // The first 64 positions go, the rest stay.
        assert!(new[..64].iter().all(|v| *v == 0.0));
        assert!(new[64..].iter().all(|v| *v != 0.0));
    }

    /// Two layers of the same size, one with weights ten times smaller than the other.
    fn two_layers() -> Graph {
        let spec = sculpt_nn::zoo::mlp_spec("two", &[16], &[16], 16);
        let mut g = zoo::init(spec, 7).unwrap();
        let small = (g.param("fc1.weight").unwrap() * 0.1).unwrap();
        g.params.insert("fc1.weight".into(), small);
        g
    }

    #[test]
    fn a_global_threshold_takes_more_from_the_layer_with_smaller_weights() {
        let g = two_layers();
        let layers = vec!["fc1".to_string(), "fc2".to_string()];
        let s = sparsify_global(&g, &layers, 0.5).unwrap();
        let (z1, z2) = (zeros(&s, "fc1.weight"), zeros(&s, "fc2.weight"));
        // Together exactly half of the 512 weights.
        assert_eq!(z1 + z2, 256);
        // fc1's weights are in ±0.025, fc2's in ±0.25: fc1 loses nearly everything.
        assert!(z1 > 200 && z2 < 56, "fc1 lost {z1}, fc2 lost {z2}");
        // One threshold: every kept magnitude (either layer) beats every removed one.
        let before = snapshot(&g);
        let mut removed_max = 0f32;
        let mut kept_min = f32::INFINITY;
        for name in ["fc1.weight", "fc2.weight"] {
            let new: Vec<f32> = s
                .param(name)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (o, n) in before[name].iter().zip(&new) {
                if *n == 0.0 {
                    removed_max = removed_max.max(o.abs());
                } else {
                    kept_min = kept_min.min(n.abs());
                }
            }
        }
        assert!(removed_max <= kept_min);
        assert_eq!(s.spec.sparse.len(), 2);
        // Per-layer pruning at the same ratio takes half of each instead.
        let per_layer: BTreeMap<String, f64> = layers.iter().map(|l| (l.clone(), 0.5)).collect();
        let p = sparsify(&g, &per_layer).unwrap();
        assert_eq!(zeros(&p, "fc1.weight"), 128);
        assert_eq!(zeros(&p, "fc2.weight"), 128);
        assert_eq!(snapshot(&g), before);
    }

    #[test]
    fn two_of_four_keeps_the_two_largest_of_every_group() {
        let g = zoo::build("mlp", &[64], 10, 11).unwrap();
        let before = snapshot(&g);
        let patterns: BTreeMap<String, (usize, usize)> =
            [("fc1".to_string(), (2, 4)), ("fc2".to_string(), (2, 4))].into();
        let s = sparsify_n_of_m(&g, &patterns).unwrap();
        for name in ["fc1.weight", "fc2.weight"] {
            let new: Vec<f32> = s
                .param(name)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (old, new) in before[name].chunks(4).zip(new.chunks(4)) {
                assert_eq!(
                    new.iter().filter(|v| **v != 0.0).count(),
                    2,
                    "{old:?} → {new:?}"
                );
                let mut sorted: Vec<f32> = old.iter().map(|v| v.abs()).collect();
                sorted.sort_by(|a, b| b.total_cmp(a));
                for (o, n) in old.iter().zip(new) {
                    if *n != 0.0 {
                        assert_eq!(n, o);
                        assert!(o.abs() >= sorted[1], "{old:?} → {new:?}");
                    }
                }
            }
        }
        assert_eq!(zeros(&s, "fc3.weight"), 0);
        assert_eq!(snapshot(&g), before);
        // block1.pw's rows of 16 split into groups of 8. A depthwise 3x3 row of 9 holds two
        // groups of 4 and a dense tail of 1: 4 of its 9 weights go, in every row.
        let m = zoo::build("mobilenet-s", &[3, 16, 16], 10, 0).unwrap();
        let s = sparsify_n_of_m(&m, &[("block1.pw".to_string(), (1, 8))].into()).unwrap();
        assert_eq!(zeros(&s, "block1.pw.weight"), 32 * 16 * 7 / 8);
        let s = sparsify_n_of_m(&m, &[("block1.dw".to_string(), (2, 4))].into()).unwrap();
        let rows = m.param("block1.dw.weight").unwrap().dims()[0];
        assert_eq!(zeros(&s, "block1.dw.weight"), rows * 4);
        let dw: Vec<f32> = s
            .param("block1.dw.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            dw.chunks(9).all(|row| row[8] != 0.0),
            "the tail stays dense"
        );
        let err = sparsify_n_of_m(&g, &[("fc1".to_string(), (4, 4))].into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("fc1") && err.contains("4:4"), "{err}");
    }

    #[test]
    fn masks_follow_the_nonzeros() {
        let g = zoo::build("mlp", &[8], 3, 1).unwrap();
        let s = sparsify(&g, &[("fc2".to_string(), 0.3)].into()).unwrap();
        let masks = masks(&s, &["fc2".to_string(), "fc3".to_string()]).unwrap();
        assert_eq!(
            masks.keys().collect::<Vec<_>>(),
            ["fc2.weight", "fc3.weight"]
        );
        let mask = &masks["fc2.weight"];
        assert_eq!(mask.dims(), &[128, 256]);
        assert_eq!(mask.dtype(), DType::F32);
        let w: Vec<f32> = s
            .param("fc2.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let m: Vec<f32> = mask.flatten_all().unwrap().to_vec1().unwrap();
        assert!(w
            .iter()
            .zip(&m)
            .all(|(w, m)| *m == if *w == 0.0 { 0.0 } else { 1.0 }));
        assert_eq!(nonzeros(mask), 32768 - 9830); // round(0.3 * 32768) zeros
        assert_eq!(nonzeros(&masks["fc3.weight"]), 3 * 128);
        assert!(super::masks(&s, &["relu1".to_string()]).is_err());
    }
}
