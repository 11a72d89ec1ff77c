//! Batch-norm folding. In evaluation a batch norm is an affine map per channel, so one
//! that directly follows a convolution can be folded into that convolution's weight and
//! bias: with `s = γ / √(var + ε)` per output channel, `w' = w · s` and
//! `b' = (b − mean) · s + β` (a convolution without bias gains one). The batch norm node
//! and its four tensors disappear and its readers read the convolution instead. This is
//! what a deployed model runs, and what quantization must see: a quantized convolution
//! followed by a float batch norm would not be what ships.
//!
//! A batch norm is folded only when the convolution's output is read by that batch norm
//! alone (and is not the graph's output); otherwise the unnormalised value is needed
//! elsewhere and the pair is left as it is, as is a batch norm after anything else.

use candle_core::Tensor;
use sculpt_nn::{Graph, Op};

use crate::error::{layer_error, Result};

/// The `(convolution, batch norm)` pairs [`fold_batch_norm`] folds, in node order.
pub fn foldable_pairs(graph: &Graph) -> Vec<(String, String)> {
    let spec = &graph.spec;
    let reads = |name: &str| -> usize {
        spec.nodes
            .iter()
            .map(|n| n.inputs.iter().filter(|i| *i == name).count())
            .sum::<usize>()
            + usize::from(spec.output == name)
    };
    spec.nodes
        .iter()
        .filter(|n| matches!(n.op, Op::BatchNorm2d { .. }))
        .filter_map(|bn| {
            let conv = spec.node(&bn.inputs[0])?;
            (matches!(conv.op, Op::Conv2d { .. }) && reads(&conv.name) == 1)
                .then(|| (conv.name.clone(), bn.name.clone()))
        })
        .collect()
}

/// Folds every batch norm that directly follows a convolution into it (see the module
/// documentation). Entries of the spec keyed by a removed batch norm's tensors are
/// dropped. A convolution whose weight is already quantized is refused, since the folded
/// weight would be off its grid: fold before quantizing.
pub fn fold_batch_norm(graph: &Graph) -> Result<Graph> {
    let mut spec = graph.spec.clone();
    let mut params = graph.params.clone();
    for (conv, bn) in foldable_pairs(graph) {
        let weight_name = format!("{conv}.weight");
        if spec.weight_quant.contains_key(&weight_name) {
            return Err(layer_error(
                &conv,
                format!("the weight is quantized; fold batch norm `{bn}` before quantizing"),
            ));
        }
        let eps = match spec.node(&bn).map(|n| &n.op) {
            Some(Op::BatchNorm2d { eps, .. }) => *eps,
            _ => unreachable!("foldable_pairs returns batch norm nodes"),
        };
        let vector = |suffix: &str| -> Result<Vec<f64>> {
            let t = graph.param(&format!("{bn}.{suffix}"))?;
            Ok(t.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
        };
        let (gamma, beta) = (vector("weight")?, vector("bias")?);
        let (mean, var) = (vector("running_mean")?, vector("running_var")?);
        let scale: Vec<f64> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + eps).sqrt())
            .collect();

        let node = spec
            .nodes
            .iter_mut()
            .find(|n| n.name == conv)
            .expect("foldable_pairs returns existing convolutions");
        let had_bias = match &mut node.op {
            Op::Conv2d { bias, .. } => std::mem::replace(bias, true),
            _ => unreachable!("foldable_pairs returns convolutions"),
        };
        let w = graph.param(&weight_name)?;
        let (dims, device) = (w.dims().to_vec(), w.device().clone());
        let per_channel = w.elem_count() / dims[0];
        let values: Vec<f32> = w.flatten_all()?.to_vec1()?;
        let folded: Vec<f32> = values
            .chunks(per_channel)
            .zip(&scale)
            .flat_map(|(row, s)| row.iter().map(move |v| (f64::from(*v) * s) as f32))
            .collect();
        let old_bias: Vec<f64> = if had_bias {
            graph
                .param(&format!("{conv}.bias"))?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect()
        } else {
            vec![0.0; dims[0]]
        };
        let bias: Vec<f32> = (0..dims[0])
            .map(|o| ((old_bias[o] - mean[o]) * scale[o] + beta[o]) as f32)
            .collect();
        params.insert(
            weight_name,
            Tensor::from_vec(folded, dims.as_slice(), &device)?,
        );
        params.insert(
            format!("{conv}.bias"),
            Tensor::from_vec(bias, dims[0], &device)?,
        );

        // The batch norm goes; whoever read it reads the convolution.
        spec.nodes.retain(|n| n.name != bn);
        for node in &mut spec.nodes {
            for input in &mut node.inputs {
                if *input == bn {
                    input.clone_from(&conv);
                }
            }
        }
        if spec.output == bn {
            spec.output.clone_from(&conv);
        }
        let removed: Vec<String> = [
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked",
        ]
        .iter()
        .map(|t| format!("{bn}.{t}"))
        .collect();
        for name in &removed {
            params.remove(name);
            spec.weight_quant.remove(name);
            spec.sparse.remove(name);
        }
    }
    Ok(Graph::new(spec, params)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sculpt_nn::{zoo, GraphSpec, Node};
    use std::collections::BTreeMap;

    /// Every batch norm's `(γ, β, mean, var)` by name.
    fn batch_norm_stats(graph: &Graph) -> Result<BTreeMap<String, [Vec<f32>; 4]>> {
        let mut out = BTreeMap::new();
        for node in &graph.spec.nodes {
            if matches!(node.op, Op::BatchNorm2d { .. }) {
                let get = |t: &str| -> Result<Vec<f32>> {
                    Ok(graph.param(&format!("{}.{t}", node.name))?.to_vec1()?)
                };
                out.insert(
                    node.name.clone(),
                    [
                        get("weight")?,
                        get("bias")?,
                        get("running_mean")?,
                        get("running_var")?,
                    ],
                );
            }
        }
        Ok(out)
    }

    fn batch_norms(g: &Graph) -> usize {
        g.spec
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::BatchNorm2d { .. }))
            .count()
    }

    /// Largest difference, relative to the largest output magnitude (at least 1).
    fn relative_diff(a: &Tensor, b: &Tensor) -> f32 {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
            / scale
    }

    #[test]
    fn folding_resnet_and_mobilenet_preserves_the_evaluation_output() {
        // resnet-8: 9 batch norms over 336 channels; mobilenet-s: 7 over 352.
        for (model, shape, bns, channels) in [
            ("resnet-8", [1usize, 16, 16], 9, 336),
            ("mobilenet-s", [3, 16, 16], 7, 352),
        ] {
            let mut g = zoo::build(model, &shape, 10, 3).unwrap();
            crate::testing::randomise_batch_norms(&mut g, 17);
            let before = batch_norm_stats(&g).unwrap();
            assert_eq!((batch_norms(&g), foldable_pairs(&g).len()), (bns, bns));
            let x = Tensor::randn(
                0f32,
                1.0,
                (4, shape[0], shape[1], shape[2]),
                &sculpt_nn::device(),
            )
            .unwrap();
            let expected = g.forward(&x).unwrap();
            let f = fold_batch_norm(&g).unwrap();
            assert_eq!(batch_norms(&f), 0, "{model}");
            let diff = relative_diff(&expected, &f.forward(&x).unwrap());
            assert!(diff < 1e-4, "{model}: {diff}");
            // Each batch norm loses γ and β (running statistics are buffers, not params)
            // and its convolution gains a bias.
            assert_eq!(g.num_params() - f.num_params(), channels, "{model}");
            assert!(f
                .params
                .keys()
                .all(|k| !k.contains("bn") && !k.contains("shortcut.1")));
            // The input graph is unchanged.
            assert_eq!(batch_norms(&g), bns);
            assert_eq!(batch_norm_stats(&g).unwrap(), before);
        }
        // Without the randomised statistics the test would not tell: a fold that used
        // identity statistics changes this output.
        let mut g = zoo::build("resnet-8", &[1, 16, 16], 10, 3).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 1, 16, 16), &sculpt_nn::device()).unwrap();
        let plain = g.forward(&x).unwrap();
        crate::testing::randomise_batch_norms(&mut g, 17);
        assert!(relative_diff(&plain, &g.forward(&x).unwrap()) > 1e-2);
    }

    /// `b0` on the input; `c1 → b1` where `c1` is also read by a residual sum; `c2 → b2`
    /// with a bias of its own.
    fn crafted() -> Graph {
        let conv = |name: &str, input: &str, channels: usize, stride: usize| Node {
            name: name.into(),
            op: Op::Conv2d {
                in_channels: channels,
                out_channels: 4,
                kernel_size: 3,
                stride,
                padding: 1,
                groups: 1,
                bias: true,
            },
            inputs: vec![input.into()],
        };
        let bn = |name: &str, input: &str, c: usize| Node {
            name: name.into(),
            op: Op::BatchNorm2d {
                num_features: c,
                eps: 1e-3,
                momentum: 0.1,
            },
            inputs: vec![input.into()],
        };
        let nodes = vec![
            bn("b0", "input", 2),
            conv("c1", "b0", 2, 1),
            bn("b1", "c1", 4),
            Node {
                name: "add".into(),
                op: Op::Add,
                inputs: vec!["b1".into(), "c1".into()],
            },
            conv("c2", "add", 4, 2),
            bn("b2", "c2", 4),
            Node {
                name: "flatten".into(),
                op: Op::Flatten,
                inputs: vec!["b2".into()],
            },
            Node {
                name: "fc".into(),
                op: Op::Linear {
                    in_features: 64,
                    out_features: 3,
                    bias: true,
                },
                inputs: vec!["flatten".into()],
            },
        ];
        // Struct update keeps any spec fields added later at their defaults.
        let spec = GraphSpec {
            name: "crafted".into(),
            input_shape: vec![2, 8, 8],
            num_classes: 3,
            nodes,
            output: "fc".into(),
            ..zoo::mlp_spec("base", &[1], &[], 1)
        };
        let mut g = zoo::init(spec, 5).unwrap();
        crate::testing::randomise_batch_norms(&mut g, 6);
        g
    }

    #[test]
    fn only_batch_norms_after_a_convolution_read_by_nothing_else_are_folded() {
        let mut g = crafted();
        g.spec.sparse.insert("b2.weight".into());
        g.spec.sparse.insert("c2.weight".into());
        assert_eq!(foldable_pairs(&g), [("c2".to_string(), "b2".to_string())]);
        let x = Tensor::randn(0f32, 1.0, (3, 2, 8, 8), &sculpt_nn::device()).unwrap();
        let f = fold_batch_norm(&g).unwrap();
        let names: Vec<&str> = f.spec.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["b0", "c1", "b1", "add", "c2", "flatten", "fc"]);
        assert_eq!(f.spec.node("flatten").unwrap().inputs, ["c2"]);
        let diff = relative_diff(&g.forward(&x).unwrap(), &f.forward(&x).unwrap());
        assert!(diff < 1e-4, "{diff}");
        // c2 had a bias: b' = (b − mean)·s + β, by hand for channel 0.
        let [gamma, beta, mean, var] = batch_norm_stats(&g).unwrap().remove("b2").unwrap();
        let b: Vec<f32> = g.param("c2.bias").unwrap().to_vec1().unwrap();
        let folded: Vec<f32> = f.param("c2.bias").unwrap().to_vec1().unwrap();
        let s = gamma[0] / (var[0] + 1e-3).sqrt();
        assert!((folded[0] - ((b[0] - mean[0]) * s + beta[0])).abs() < 1e-5);
        // The removed batch norm's marking goes; the convolution's zeros (scaled) stay.
        assert_eq!(f.spec.sparse.iter().collect::<Vec<_>>(), ["c2.weight"]);
        assert!(!f.params.contains_key("b2.running_var"));
        // A quantized convolution is refused.
        let mut q = crafted();
        q.spec.weight_quant.insert(
            "c2.weight".into(),
            sculpt_nn::WeightQuant::symmetric_per_channel(8),
        );
        let err = fold_batch_norm(&q).unwrap_err().to_string();
        assert!(err.contains("c2") && err.contains("quantiz"), "{err}");
    }
}
