//! Low-rank factorisation by truncated SVD. A weight `W` of shape `[out, in]` (a Conv2d
//! kernel read as `[out, in × k × k]`) is replaced by the best rank-`r` product in the
//! Frobenius norm (Eckart–Young), split symmetrically as `(U_r √S_r)(√S_r V_rᵀ)` so both
//! factors have comparable scales for later quantization. The layer becomes two nodes:
//! `{layer}_lr_a` (`in → r`, no bias, weight `√S_r V_rᵀ`; for a convolution, the original
//! k×k kernel, stride and padding with `r` outputs) reading the layer's input, then
//! `{layer}` itself (`r → out`, the original bias, weight `U_r √S_r`; for a convolution a
//! 1×1 kernel). The second node keeps the layer's name, so everything downstream that
//! reads the layer or is keyed by its name still finds its output.
//!
//! The SVD is nalgebra's, in f64. Factorising only pays when `r (in + out) < in × out`;
//! [`factorise`] leaves any other layer as it is, while [`factorise_layer`] factorises at
//! any rank it is given (at full rank the product reproduces the layer).

use std::collections::BTreeMap;

use candle_core::Tensor;
use nalgebra::{linalg::SVD, DMatrix};
use sculpt_nn::{Graph, Node, Op};

use crate::error::{layer_error, Result};

/// Appended to a layer's name to name the first of its two factor nodes.
pub const FIRST_FACTOR_SUFFIX: &str = "_lr_a";

/// Name of the node that holds the first factor of `layer` (`fc1` → `fc1_lr_a`).
pub fn first_factor_name(layer: &str) -> String {
    format!("{layer}{FIRST_FACTOR_SUFFIX}")
}

/// The rank kept for `fraction` of the full rank of a `rows × cols` weight:
/// `max(1, round(fraction × min(rows, cols)))`, never above the full rank.
pub fn kept_rank(fraction: f64, rows: usize, cols: usize) -> usize {
    let full = rows.min(cols);
    ((fraction * full as f64).round() as usize).clamp(1, full.max(1))
}

/// Weights (bias excluded) of the two factors of a `rows × cols` weight at `rank`.
pub fn factorised_weights(rows: usize, cols: usize, rank: usize) -> usize {
    rank * (rows + cols)
}

/// Whether factorising a `rows × cols` weight at `rank` leaves fewer weights.
pub fn saves_params(rows: usize, cols: usize, rank: usize) -> bool {
    factorised_weights(rows, cols, rank) < rows * cols
}

/// The rank-`rank` factors of `weight` read as a matrix `[d0, d1 × d2 × …]`: returns
/// `(first, second, singular_values)` with `first = √S_r V_rᵀ` of shape `[rank, cols]`,
/// `second = U_r √S_r` of shape `[rows, rank]` (so `second · first` is the best rank-`rank`
/// approximation), and every singular value, descending.
pub fn factor(weight: &Tensor, rank: usize) -> Result<(Tensor, Tensor, Vec<f64>)> {
    let dims = weight.dims();
    if dims.len() < 2 {
        return Err(layer_error(
            "<matrix>",
            format!("a weight of shape {dims:?} is not a matrix"),
        ));
    }
    let rows = dims[0];
    let cols: usize = dims[1..].iter().product();
    let full = rows.min(cols);
    if rank == 0 || rank > full {
        return Err(layer_error(
            "<matrix>",
            format!("rank {rank} is not in 1..={full} for a {rows}x{cols} weight"),
        ));
    }
    let values: Vec<f32> = weight.flatten_all()?.to_vec1()?;
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(layer_error(
            "<matrix>",
            format!("cannot factorise a weight holding {bad}"),
        ));
    }
    let matrix = DMatrix::from_row_iterator(rows, cols, values.iter().map(|v| *v as f64));
    // Bounded so that a pathological matrix fails instead of iterating forever; converged
    // SVDs take a few sweeps per singular value.
    let svd =
        SVD::try_new(matrix, true, true, f64::EPSILON, 100 * full + 1000).ok_or_else(|| {
            layer_error(
                "<matrix>",
                format!("the SVD of a {rows}x{cols} weight did not converge"),
            )
        })?;
    let (u, v_t) = match (&svd.u, &svd.v_t) {
        (Some(u), Some(v_t)) => (u, v_t),
        _ => unreachable!("both singular vector sets were requested"),
    };
    let singular: Vec<f64> = svd.singular_values.iter().copied().collect();
    let root: Vec<f64> = singular[..rank].iter().map(|s| s.max(0.0).sqrt()).collect();
    let mut first = Vec::with_capacity(rank * cols);
    for (j, scale) in root.iter().enumerate() {
        first.extend((0..cols).map(|c| (scale * v_t[(j, c)]) as f32));
    }
    let mut second = Vec::with_capacity(rows * rank);
    for r in 0..rows {
        second.extend(
            root.iter()
                .enumerate()
                .map(|(j, scale)| (u[(r, j)] * scale) as f32),
        );
    }
    let device = weight.device();
    Ok((
        Tensor::from_vec(first, (rank, cols), device)?,
        Tensor::from_vec(second, (rows, rank), device)?,
        singular,
    ))
}

/// Factorises each named layer at `max(1, round(fraction × full rank))`, with fractions
/// in (0, 1]. A layer whose factors would not hold fewer weights than it does (a fraction
/// near 1, or a small square-ish layer) is left as it is: the pass only ever shrinks.
pub fn factorise(graph: &Graph, fractions: &BTreeMap<String, f64>) -> Result<Graph> {
    let mut out = graph.clone();
    for (layer, &fraction) in fractions {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(layer_error(
                layer,
                format!("low-rank fraction {fraction} is not in (0, 1]"),
            ));
        }
        let (rows, cols) = matrix_shape(graph, layer)?;
        let rank = kept_rank(fraction, rows, cols);
        if saves_params(rows, cols, rank) {
            out = factorise_layer(&out, layer, rank)?;
        }
    }
    Ok(out)
}

/// Replaces `layer` (Linear, or Conv2d without groups) by its two rank-`rank` factor
/// nodes, whether or not that saves weights. The weight's sparse marking is dropped (the
/// factors are dense); a quantized weight is refused, since its factors would be off its
/// grid: factorise before quantizing.
pub fn factorise_layer(graph: &Graph, layer: &str, rank: usize) -> Result<Graph> {
    let (rows, cols) = matrix_shape(graph, layer)?;
    let first_name = first_factor_name(layer);
    if graph.spec.node(&first_name).is_some() {
        return Err(layer_error(
            layer,
            format!("node `{first_name}` already exists (is the layer already factorised?)"),
        ));
    }
    let weight_name = format!("{layer}.weight");
    if graph.spec.weight_quant.contains_key(&weight_name) {
        return Err(layer_error(
            layer,
            "the weight is quantized; factorise before quantizing",
        ));
    }
    let (first, second, _) = factor(graph.param(&weight_name)?, rank).map_err(|e| match e {
        crate::CompressError::Layer { message, .. } => layer_error(layer, message),
        other => other,
    })?;
    let index = graph
        .spec
        .nodes
        .iter()
        .position(|n| n.name == layer)
        .expect("matrix_shape found the node");
    let node = &graph.spec.nodes[index];
    let (first_op, second_op, first_shape, second_shape) = match node.op {
        Op::Linear {
            in_features,
            out_features,
            bias,
        } => (
            Op::Linear {
                in_features,
                out_features: rank,
                bias: false,
            },
            Op::Linear {
                in_features: rank,
                out_features,
                bias,
            },
            vec![rank, in_features],
            vec![out_features, rank],
        ),
        Op::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            bias,
            ..
        } => (
            Op::Conv2d {
                in_channels,
                out_channels: rank,
                kernel_size,
                stride,
                padding,
                groups: 1,
                bias: false,
            },
            Op::Conv2d {
                in_channels: rank,
                out_channels,
                kernel_size: 1,
                stride: 1,
                padding: 0,
                groups: 1,
                bias,
            },
            vec![rank, in_channels, kernel_size, kernel_size],
            vec![out_channels, rank, 1, 1],
        ),
        _ => unreachable!("matrix_shape accepts Linear and Conv2d only"),
    };
    debug_assert_eq!(
        (rows, cols),
        (second_shape[0], first_shape[1..].iter().product::<usize>())
    );
    let mut spec = graph.spec.clone();
    spec.nodes[index] = Node {
        name: layer.to_string(),
        op: second_op,
        inputs: vec![first_name.clone()],
    };
    spec.nodes.insert(
        index,
        Node {
            name: first_name.clone(),
            op: first_op,
            inputs: node.inputs.clone(),
        },
    );
    spec.sparse.remove(&weight_name);
    let mut params = graph.params.clone();
    params.insert(format!("{first_name}.weight"), first.reshape(first_shape)?);
    params.insert(weight_name, second.reshape(second_shape)?);
    Ok(Graph::new(spec, params)?)
}

/// The weight of `layer` read as a matrix: `(out, in)` for Linear, `(out, in × k × k)`
/// for an ungrouped Conv2d.
fn matrix_shape(graph: &Graph, layer: &str) -> Result<(usize, usize)> {
    let node = crate::error::weight_node(graph, layer)?;
    match node.op {
        Op::Linear {
            in_features,
            out_features,
            ..
        } => Ok((out_features, in_features)),
        Op::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            groups: 1,
            ..
        } => Ok((out_channels, in_channels * kernel_size * kernel_size)),
        Op::Conv2d { groups, .. } => Err(layer_error(
            layer,
            format!(
                "a convolution with groups = {groups} has no single weight matrix to factorise"
            ),
        )),
        ref other => Err(layer_error(
            layer,
            format!(
                "is a {} layer; only Linear and Conv2d layers can be factorised",
                other.kind()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use sculpt_nn::zoo;

    fn input(g: &Graph, batch: usize) -> Tensor {
        let mut dims = vec![batch];
        dims.extend_from_slice(&g.spec.input_shape);
        Tensor::randn(0f32, 1.0, dims, &sculpt_nn::device()).unwrap()
    }

    #[test]
    fn full_rank_factors_reproduce_linear_and_convolution_layers() {
        let g = zoo::build("mlp", &[64], 10, 5).unwrap();
        let x = input(&g, 4);
        let expected = g.forward(&x).unwrap();
        // fc1 is 256x64 (full rank 64), fc2 128x256 (128), fc3 10x128 (10).
        let mut f = g.clone();
        for (layer, rank) in [("fc1", 64), ("fc2", 128), ("fc3", 10)] {
            f = factorise_layer(&f, layer, rank).unwrap();
        }
        let names: Vec<&str> = f.spec.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "flatten", "fc1_lr_a", "fc1", "relu1", "fc2_lr_a", "fc2", "relu2", "fc3_lr_a",
                "fc3"
            ]
        );
        let diff = crate::testing::max_abs_diff(&f.forward(&x).unwrap(), &expected);
        assert!(diff < 1e-4, "{diff}");

        // Convolutions, with stride and padding kept on the k×k factor: resnet-8's
        // layer2.conv1 (32 x 16·3·3, stride 2) and a 1×1 projection shortcut.
        let g = zoo::build("resnet-8", &[1, 16, 16], 10, 2).unwrap();
        let x = input(&g, 2);
        let expected = g.forward(&x).unwrap();
        let f = factorise_layer(&g, "layer2.conv1", 32).unwrap();
        let f = factorise_layer(&f, "layer3.shortcut.0", 32).unwrap();
        let diff = crate::testing::max_abs_diff(&f.forward(&x).unwrap(), &expected);
        assert!(diff < 1e-4, "{diff}");
        let first = f.spec.node("layer2.conv1_lr_a").unwrap();
        assert_eq!(
            first.op,
            Op::Conv2d {
                in_channels: 16,
                out_channels: 32,
                kernel_size: 3,
                stride: 2,
                padding: 1,
                groups: 1,
                bias: false
            }
        );
        assert_eq!(first.inputs, ["layer1.relu2"]);
        assert_eq!(
            f.spec.node("layer2.conv1").unwrap().inputs,
            ["layer2.conv1_lr_a"]
        );
    }

    #[test]
    fn truncation_error_is_the_eckart_young_bound() {
        let mut rng = StdRng::seed_from_u64(9);
        let (rows, cols) = (30, 20);
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let w = Tensor::from_vec(values.clone(), (rows, cols), &sculpt_nn::device()).unwrap();
        // The singular values, independently of `factor`.
        let m = DMatrix::from_row_iterator(rows, cols, values.iter().map(|v| *v as f64));
        let mut singular: Vec<f64> = m.singular_values().iter().copied().collect();
        singular.sort_by(|a, b| b.total_cmp(a));
        for rank in [1, 7, 19, 20] {
            let (first, second, s) = factor(&w, rank).unwrap();
            assert_eq!(first.dims(), &[rank, cols]);
            assert_eq!(second.dims(), &[rows, rank]);
            assert_eq!(s.len(), 20);
            let approx = second.matmul(&first).unwrap();
            let error = (&w - &approx)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .sqrt() as f64;
            let bound = singular[rank..].iter().map(|s| s * s).sum::<f64>().sqrt();
            assert!(
                (error - bound).abs() < 1e-4 * (1.0 + bound),
                "rank {rank}: {error} vs {bound}"
            );
            // Both factors carry √S: their row / column norms are equal.
            let a: Vec<Vec<f32>> = first.to_vec2().unwrap();
            let b: Vec<Vec<f32>> = second.t().unwrap().to_vec2().unwrap();
            for (j, (a, b)) in a.iter().zip(&b).enumerate() {
                let na: f32 = a.iter().map(|v| v * v).sum();
                let nb: f32 = b.iter().map(|v| v * v).sum();
                assert!((na - nb).abs() < 1e-4 * (1.0 + na), "{j}: {na} vs {nb}");
                assert!((na as f64 - singular[j]).abs() < 1e-4 * (1.0 + singular[j]));
            }
        }
        assert!(factor(&w, 0).is_err());
        assert!(factor(&w, 21).is_err());
    }

    /// The graph with `layer`'s weight replaced by its dense rank-`rank` reconstruction.
    fn reconstructed(g: &Graph, layer: &str, rank: usize) -> Graph {
        let name = format!("{layer}.weight");
        let w = g.param(&name).unwrap();
        let (first, second, _) = factor(w, rank).unwrap();
        let dense = second.matmul(&first).unwrap().reshape(w.dims()).unwrap();
        let mut r = g.clone();
        r.params.insert(name, dense);
        r
    }

    #[test]
    fn fractions_give_the_hand_counted_params_and_skip_layers_that_would_grow() {
        let g = zoo::build("mlp", &[64], 10, 1).unwrap();
        assert_eq!(
            g.num_params(),
            64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
        );
        let fractions: BTreeMap<String, f64> = [
            ("fc1".to_string(), 0.25), // rank 16: 16·64 + 256·16 + 256 bias = 5376
            ("fc2".to_string(), 0.1),  // rank round(12.8) = 13: 13·256 + 128·13 + 128 = 5120
            ("fc3".to_string(), 0.95), // rank round(9.5) = 10: 10·138 = 1380 ≥ 1280, skipped
        ]
        .into();
        let f = factorise(&g, &fractions).unwrap();
        assert_eq!(f.num_params(), 5376 + 5120 + 1290);
        assert_eq!(f.param("fc1_lr_a.weight").unwrap().dims(), &[16, 64]);
        assert_eq!(f.param("fc1.weight").unwrap().dims(), &[256, 16]);
        assert_eq!(f.param("fc2_lr_a.weight").unwrap().dims(), &[13, 256]);
        assert!(f.spec.node("fc3_lr_a").is_none());
        assert_eq!(f.param("fc3.weight").unwrap().dims(), &[10, 128]);
        assert_eq!(kept_rank(0.95, 10, 128), 10);
        assert_eq!(kept_rank(0.001, 10, 128), 1);
        // The graph runs and computes what the dense reconstructions compute.
        let x = input(&g, 5);
        let y = f.forward(&x).unwrap();
        assert_eq!(y.dims(), &[5, 10]);
        let dense = reconstructed(&reconstructed(&g, "fc1", 16), "fc2", 13);
        let diff = crate::testing::max_abs_diff(&y, &dense.forward(&x).unwrap());
        assert!(diff < 1e-4, "{diff}");
        // The input graph is unchanged, and its output differs from the factorised one.
        assert_eq!(g.spec.nodes.len(), 6);
        assert_eq!(g.param("fc1.weight").unwrap().dims(), &[256, 64]);
        assert!(crate::testing::max_abs_diff(&y, &g.forward(&x).unwrap()) > 1e-3);
    }

    #[test]
    fn convolutions_factor_into_a_kxk_then_a_1x1_convolution() {
        let g = zoo::build("resnet-8", &[3, 16, 16], 10, 4).unwrap();
        // layer3.conv2 is 64 x 64·3·3; a quarter of rank 64 is 16:
        // 16·576 + 64·16 = 10240 weights instead of 36864.
        let f = factorise(&g, &[("layer3.conv2".to_string(), 0.25)].into()).unwrap();
        assert_eq!(g.num_params() - f.num_params(), 36864 - 10240);
        assert_eq!(
            f.param("layer3.conv2_lr_a.weight").unwrap().dims(),
            &[16, 64, 3, 3]
        );
        assert_eq!(
            f.param("layer3.conv2.weight").unwrap().dims(),
            &[64, 16, 1, 1]
        );
        let x = input(&g, 2);
        let dense = reconstructed(&g, "layer3.conv2", 16);
        let diff =
            crate::testing::max_abs_diff(&f.forward(&x).unwrap(), &dense.forward(&x).unwrap());
        assert!(diff < 1e-4, "{diff}");
        // Depthwise convolutions and batch norm have nothing to factorise.
        let m = zoo::build("mobilenet-s", &[3, 16, 16], 10, 0).unwrap();
        let err = factorise(&m, &[("block1.dw".to_string(), 0.5)].into())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("block1.dw") && err.contains("groups = 16"),
            "{err}"
        );
        let err = factorise(&m, &[("bn1".to_string(), 0.5)].into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bn1") && err.contains("BatchNorm2d"), "{err}");
    }

    #[test]
    fn bad_settings_and_spec_markings() {
        let g = zoo::build("mlp", &[64], 10, 1).unwrap();
        for fraction in [0.0, -0.5, 1.5, f64::NAN] {
            let err = factorise(&g, &[("fc1".to_string(), fraction)].into())
                .unwrap_err()
                .to_string();
            assert!(err.contains("fc1") && err.contains("(0, 1]"), "{err}");
        }
        let err = factorise(&g, &[("fc9".to_string(), 0.5)].into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("fc9"), "{err}");
        let f = factorise_layer(&g, "fc1", 8).unwrap();
        let err = factorise_layer(&f, "fc1", 4).unwrap_err().to_string();
        assert!(err.contains("fc1_lr_a"), "{err}");
        let err = factorise_layer(&g, "fc1", 65).unwrap_err().to_string();
        assert!(err.contains("fc1") && err.contains("65"), "{err}");
        // A sparse weight's factors are dense; a quantized weight is refused.
        let mut sparse = g.clone();
        sparse.spec.sparse.insert("fc1.weight".into());
        sparse.spec.sparse.insert("fc2.weight".into());
        let f = factorise_layer(&sparse, "fc1", 8).unwrap();
        assert_eq!(f.spec.sparse.iter().collect::<Vec<_>>(), ["fc2.weight"]);
        let mut quantized = g.clone();
        quantized.spec.weight_quant.insert(
            "fc1.weight".into(),
            sculpt_nn::WeightQuant::symmetric_per_channel(8),
        );
        let err = factorise_layer(&quantized, "fc1", 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("quantiz"), "{err}");
    }
}
