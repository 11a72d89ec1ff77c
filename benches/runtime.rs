//! Real speed-ups of compression in sculpt's inference runtime, measured: each pair runs in
//! alternating rounds (so machine noise hits both), and the table gives the medians of the
//! per-round medians and their ratio. Weights are random (speed does not depend on them);
//! the architectures are LeNet-300-100 and LeNet-5 on 28×28 inputs.
//!
//! - int8 against f32 on the largest fully connected layer (LeNet-5's fc1, 800→500), at
//!   batch 1 and 64;
//! - 4-bit against 8-bit on the same layer;
//! - 50% structured pruning (every prunable layer) against dense, whole networks;
//! - 90% unstructured sparsity against dense, LeNet-300-100, with the sparse (CSR) kernel
//!   and with the dense one.
//!
//! Run with `cargo bench --bench runtime` on a quiet machine. `ROUNDS` (default 5) sets the
//! rounds.

use std::collections::BTreeMap;

use sculpt_compress::{CompressionPlan, LayerPlan};
use sculpt_nn::{zoo, Graph, WeightQuant};
use sculpt_runtime::{Options, Runtime, SparsePolicy};

fn quantized(g: &Graph, bits: u32) -> Graph {
    let schemes: BTreeMap<String, WeightQuant> = g
        .spec
        .weight_layers()
        .into_iter()
        .map(|l| {
            (
                format!("{l}.weight"),
                WeightQuant::symmetric_per_channel(bits),
            )
        })
        .collect();
    sculpt_compress::quantize(g, &schemes).unwrap()
}

/// LeNet-5's fc1 alone: 800 → 500.
fn fc_layer() -> Graph {
    let mut spec = zoo::spec("lenet-300-100", &[800], 500).unwrap();
    let at = spec
        .nodes
        .iter()
        .position(|n| matches!(n.op, sculpt_nn::Op::Linear { .. }))
        .unwrap();
    spec.nodes.truncate(at + 1);
    if let sculpt_nn::Op::Linear { out_features, .. } = &mut spec.nodes[at].op {
        *out_features = 500;
    }
    spec.output = spec.nodes[at].name.clone();
    spec.num_classes = 500;
    zoo::init(spec, 1).unwrap()
}

fn pruned(g: &Graph, ratio: f64) -> Graph {
    let mut plan = CompressionPlan::default();
    for layer in sculpt_compress::prunable_layers(g) {
        plan.layers.insert(
            layer,
            LayerPlan {
                prune: ratio,
                ..LayerPlan::default()
            },
        );
    }
    sculpt_compress::compress(g, &plan, None).unwrap()
}

fn sparse(g: &Graph, ratio: f64) -> Graph {
    let ratios: BTreeMap<String, f64> = g
        .spec
        .weight_layers()
        .into_iter()
        .map(|l| (l, ratio))
        .collect();
    sculpt_compress::sparsify(g, &ratios).unwrap()
}

fn time(g: &Graph, batch: usize, sparse: SparsePolicy) -> f64 {
    let mut rt = Runtime::compile(
        g,
        &Options {
            max_batch: batch,
            threads: 1,
            isa: None,
            sparse,
        },
    )
    .unwrap();
    let runs = if batch == 1 { 2000 } else { 300 };
    sculpt_runtime::measure(&mut rt, batch, runs / 10, runs)
        .unwrap()
        .median_ms
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let cpu = sculpt_latency::cpu_name();
    println!(
        "# sculpt runtime speed-ups ({cpu}, {}, 1 thread, {rounds} alternating rounds)\n",
        sculpt_runtime::Isa::detect().name()
    );
    let fc = fc_layer();
    let l300 = zoo::build("lenet-300-100", &[784], 10, 1).unwrap();
    let l5 = zoo::build("lenet-5", &[1, 28, 28], 10, 1).unwrap();
    type Case = (String, Graph, Graph, usize, SparsePolicy);
    let m = SparsePolicy::Measure;
    let cases: Vec<Case> = vec![
        (
            "fc 800→500: int8 vs f32".into(),
            fc.clone(),
            quantized(&fc, 8),
            1,
            m,
        ),
        (
            "fc 800→500: int8 vs f32".into(),
            fc.clone(),
            quantized(&fc, 8),
            64,
            m,
        ),
        (
            "fc 800→500: int4 vs int8".into(),
            quantized(&fc, 8),
            quantized(&fc, 4),
            1,
            m,
        ),
        (
            "fc 800→500: int4 vs int8".into(),
            quantized(&fc, 8),
            quantized(&fc, 4),
            64,
            m,
        ),
        (
            "LeNet-300-100: 50% pruned vs dense".into(),
            l300.clone(),
            pruned(&l300, 0.5),
            1,
            m,
        ),
        (
            "LeNet-5: 50% pruned vs dense".into(),
            l5.clone(),
            pruned(&l5, 0.5),
            1,
            m,
        ),
        (
            "LeNet-5: 50% pruned vs dense".into(),
            l5.clone(),
            pruned(&l5, 0.5),
            64,
            m,
        ),
        (
            "LeNet-300-100: 90% sparse (CSR kernel) vs dense".into(),
            l300.clone(),
            sparse(&l300, 0.9),
            1,
            SparsePolicy::Always,
        ),
        (
            "LeNet-300-100: 90% sparse (dense kernel) vs dense".into(),
            l300.clone(),
            sparse(&l300, 0.9),
            1,
            SparsePolicy::Never,
        ),
    ];
    println!("| comparison | batch | baseline ms | compressed ms | speed-up |");
    println!("|---|---|---|---|---|");
    for (name, base, compressed, batch, policy) in &cases {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which goes first.
            if round % 2 == 0 {
                a.push(time(base, *batch, SparsePolicy::Never));
                b.push(time(compressed, *batch, *policy));
            } else {
                b.push(time(compressed, *batch, *policy));
                a.push(time(base, *batch, SparsePolicy::Never));
            }
        }
        let (a, b) = (median(a), median(b));
        println!("| {name} | {batch} | {a:.4} | {b:.4} | {:.2}x |", a / b);
    }
}
