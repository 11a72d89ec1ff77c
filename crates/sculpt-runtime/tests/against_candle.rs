//! The runtime against the graph's own candle forward: every zoo architecture in f32 on
//! every instruction set, integer weights of every scheme, static activation quantization,
//! and accuracy on real data.

use std::collections::BTreeMap;

use candle_core::Tensor;
use sculpt_compress::{quantize, quantize_activations, ActivationOptions};
use sculpt_nn::{zoo, Graph, WeightQuant};
use sculpt_runtime::{Isa, Options, Runtime};

fn input(shape: &[usize], batch: usize, seed: u64) -> Tensor {
    let n: usize = batch * shape.iter().product::<usize>();
    let mut s = seed.wrapping_mul(2654435761).max(1);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    let mut dims = vec![batch];
    dims.extend_from_slice(shape);
    Tensor::from_vec(v, dims, &sculpt_nn::device()).unwrap()
}

fn reference(g: &Graph, x: &Tensor) -> Vec<f32> {
    g.forward(x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn run(g: &Graph, x: &Tensor, options: Options) -> Vec<f32> {
    let mut rt = Runtime::compile(g, &options).unwrap();
    rt.logits(x).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// BatchNorm statistics away from the identity, so folding them is tested.
fn perturb_batch_norms(g: &mut Graph) {
    let names: Vec<String> = g.params.keys().cloned().collect();
    for (i, name) in names.iter().enumerate() {
        let t = &g.params[name];
        let shift = 0.1 * ((i % 5) as f64 - 2.0);
        if name.ends_with("running_var") || name.ends_with("bn.weight") {
            g.params
                .insert(name.clone(), (t * 0.7).unwrap().affine(1.0, 0.5).unwrap());
        } else if name.ends_with("running_mean") {
            g.params.insert(name.clone(), (t + shift).unwrap());
        }
    }
}

#[test]
fn f32_plans_match_the_candle_forward_for_every_architecture_and_isa() {
    for (model, shape) in [
        ("lenet-300-100", vec![784]),
        ("lenet-5", vec![1, 28, 28]),
        ("resnet-8", vec![3, 20, 20]),
        ("mobilenet-s", vec![3, 16, 16]),
    ] {
        let mut g = zoo::build(model, &shape, 10, 3).unwrap();
        perturb_batch_norms(&mut g);
        let x = input(&shape, 5, 1);
        let want = reference(&g, &x);
        for isa in Isa::available() {
            for threads in [1, 2] {
                let got = run(
                    &g,
                    &x,
                    Options {
                        max_batch: 3,
                        threads,
                        isa: Some(isa),
                        sparse: Default::default(),
                    },
                );
                let d = max_diff(&got, &want);
                assert!(
                    d <= 1e-4 * max_abs(&want).max(1.0),
                    "{model} {isa:?} {threads} threads: differs by {d}"
                );
            }
        }
    }
}

fn quantize_all(g: &Graph, scheme: WeightQuant) -> Graph {
    let schemes: BTreeMap<String, WeightQuant> = g
        .spec
        .weight_layers()
        .into_iter()
        .map(|l| (format!("{l}.weight"), scheme))
        .collect();
    quantize(g, &schemes).unwrap()
}

#[test]
fn integer_plans_are_within_activation_quantization_error_for_every_scheme() {
    // resnet-8's padded and strided convolutions pad with each sample's zero point; two
    // threads split LeNet-5's and resnet-8's convolutions into chunks of rows, each of which
    // gathers its own patches.
    for (model, shape) in [
        ("lenet-300-100", vec![784]),
        ("lenet-5", vec![1, 28, 28]),
        ("resnet-8", vec![3, 20, 20]),
    ] {
        let g = zoo::build(model, &shape, 10, 4).unwrap();
        let x = input(&shape, 4, 2);
        for (bits, per_channel, symmetric) in [
            (8, true, true),
            (8, true, false),
            (8, false, true),
            (6, true, false),
            (4, true, true),
            (4, false, false),
            (3, true, true),
            (2, true, false),
        ] {
            let q = quantize_all(
                &g,
                WeightQuant {
                    bits,
                    per_channel,
                    symmetric,
                },
            );
            let want = reference(&q, &x);
            for (isa, threads) in Isa::available()
                .into_iter()
                .flat_map(|isa| [(isa, 1), (isa, 2)])
            {
                let mut rt = Runtime::compile(
                    &q,
                    &Options {
                        max_batch: 4,
                        threads,
                        isa: Some(isa),
                        sparse: Default::default(),
                    },
                )
                .unwrap();
                let kind = &rt.layers()[0].kernel;
                assert!(
                    kind.starts_with(if bits <= 4 { "int4" } else { "int8" }),
                    "{bits} bits runs as {kind}"
                );
                let got = rt.logits(&x).unwrap();
                // Only the activations' 8-bit rounding separates the two: a few percent of
                // the logits' range, never more.
                let d = max_diff(&got, &want);
                assert!(
                    d <= 0.03 * max_abs(&want),
                    "{model} {bits}-bit pc {per_channel} sym {symmetric} {isa:?} {threads} threads: {d} of {}",
                    max_abs(&want)
                );
            }
        }
    }
}

#[test]
fn static_activation_quantization_runs_exactly_as_the_graph_scores_it() {
    let splits = sculpt_data::load("digits", 3).unwrap();
    let g = zoo::build("mlp", &[64], 10, 3).unwrap();
    let q = quantize_all(&g, WeightQuant::symmetric_per_channel(8));
    let bits: BTreeMap<String, u32> = q.spec.weight_layers().into_iter().map(|l| (l, 8)).collect();
    let q = quantize_activations(&q, &bits, &splits.train, &ActivationOptions::default()).unwrap();
    let x = splits.val.x.narrow(0, 0, 32).unwrap();
    let want = reference(&q, &x);
    let mut rt = Runtime::compile(&q, &Options::default()).unwrap();
    assert!(rt.layers()[0].kernel.contains("calibrated"));
    let got = rt.logits(&x).unwrap();
    let d = max_diff(&got, &want);
    // Same codes, same integer sums: only f32 rounding of the rescale differs.
    assert!(d <= 1e-3 * max_abs(&want).max(1.0), "differs by {d}");
}

#[test]
fn a_trained_network_scores_the_same_in_the_runtime_and_in_candle() {
    let splits = sculpt_data::load("digits", 5).unwrap();
    let mut g = zoo::build("mlp", &[64], 10, 5).unwrap();
    let config = sculpt_nn::TrainConfig {
        epochs: 8,
        seed: 5,
        ..Default::default()
    };
    sculpt_nn::train(
        &mut g,
        &splits.train,
        &config,
        &sculpt_nn::train::cross_entropy,
        &|_, w| Ok(w.clone()),
        &mut |_| {},
        None,
    )
    .unwrap();
    let candle = sculpt_nn::accuracy(&g, &splits.val).unwrap();
    let mut rt = Runtime::compile(&g, &Options::default()).unwrap();
    assert_eq!(rt.accuracy(&splits.val).unwrap(), candle);
    let q = quantize_all(&g, WeightQuant::symmetric_per_channel(8));
    let candle_q = sculpt_nn::accuracy(&q, &splits.val).unwrap();
    let mut rt = Runtime::compile(&q, &Options::default()).unwrap();
    let runtime_q = rt.accuracy(&splits.val).unwrap();
    assert!(candle > 0.9, "{candle}");
    assert!(
        (runtime_q - candle_q).abs() <= 0.01,
        "{runtime_q} vs {candle_q}"
    );
}

#[test]
fn bad_batches_are_refused() {
    let g = zoo::build("mlp", &[64], 10, 1).unwrap();
    let mut rt = Runtime::compile(
        &g,
        &Options {
            max_batch: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(rt.run(&[0.0; 64 * 3], 3).is_err());
    assert!(rt.run(&[0.0; 63], 1).is_err());
    assert!(rt.run(&[0.0; 64], 1).is_ok());
    // Data of another shape than the model takes (MNIST images into a 64-input MLP).
    let images = Tensor::zeros(
        (3, 1, 28, 28),
        candle_core::DType::F32,
        &sculpt_nn::device(),
    )
    .unwrap();
    let e = rt.logits(&images).unwrap_err().to_string();
    assert!(e.contains("[1, 28, 28]") && e.contains("[64]"), "{e}");
    // Plans of no batch, no threads, or more threads than the machine can use are refused
    // (100000 spinning threads would take the machine down).
    for (max_batch, threads) in [(0, 1), (1, 0), (1, 100_000), (usize::MAX, 1)] {
        let e = Runtime::compile(
            &g,
            &Options {
                max_batch,
                threads,
                ..Default::default()
            },
        )
        .err()
        .unwrap_or_else(|| panic!("batch {max_batch}, {threads} threads accepted"))
        .to_string();
        assert!(e.contains("batch") || e.contains("threads"), "{e}");
    }
}

#[test]
fn sparse_layers_give_the_same_logits_with_either_kernel() {
    let g = zoo::build("lenet-300-100", &[784], 10, 6).unwrap();
    let ratios: BTreeMap<String, f64> = [("fc1".to_string(), 0.9), ("fc2".to_string(), 0.9)]
        .into_iter()
        .collect();
    let s = sculpt_compress::sparsify(&g, &ratios).unwrap();
    assert!(s.spec.sparse.contains("fc1.weight"));
    let x = input(&[784], 3, 9);
    let want = reference(&s, &x);
    for sparse in [
        sculpt_runtime::SparsePolicy::Always,
        sculpt_runtime::SparsePolicy::Never,
    ] {
        let mut rt = Runtime::compile(
            &s,
            &Options {
                max_batch: 2,
                sparse,
                ..Default::default()
            },
        )
        .unwrap();
        let uses_csr = rt.layers()[0].kernel.contains("CSR");
        assert_eq!(uses_csr, sparse == sculpt_runtime::SparsePolicy::Always);
        let got = rt.logits(&x).unwrap();
        let d = max_diff(&got, &want);
        assert!(d <= 1e-4 * max_abs(&want).max(1.0), "{sparse:?}: {d}");
    }
}

/// A relation, not an absolute time: measured latency is positive, and an 8-bit layer is
/// not slower than its f32 original on a large layer (with a generous margin: the integer
/// kernel is about twice as fast on AVX-512 VNNI and AVX2 machines, and this must hold on
/// a busy one).
#[test]
fn measured_latency_is_positive_and_int8_is_not_slower_than_f32_on_a_large_layer() {
    let mut spec = zoo::spec("lenet-300-100", &[1024], 10).unwrap();
    let at = spec
        .nodes
        .iter()
        .position(|n| matches!(n.op, sculpt_nn::Op::Linear { .. }))
        .unwrap();
    spec.nodes.truncate(at + 1);
    if let sculpt_nn::Op::Linear { out_features, .. } = &mut spec.nodes[at].op {
        *out_features = 1024;
    }
    spec.output = spec.nodes[at].name.clone();
    spec.num_classes = 1024;
    let f32_layer = zoo::init(spec, 2).unwrap();
    let int8_layer = quantize_all(&f32_layer, WeightQuant::symmetric_per_channel(8));
    let time = |g: &Graph| {
        let mut rt = Runtime::compile(g, &Options::default()).unwrap();
        sculpt_runtime::measure(&mut rt, 1, 20, 300).unwrap()
    };
    // Alternate, and keep each one's best median over three rounds.
    let (mut f, mut q) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        let a = time(&f32_layer);
        let b = time(&int8_layer);
        assert!(a.median_ms > 0.0 && a.p90_ms >= a.median_ms && a.min_ms > 0.0);
        f = f.min(a.median_ms);
        q = q.min(b.median_ms);
    }
    assert!(q <= 1.5 * f, "int8 {q} ms against f32 {f} ms");
}
