//! Benchmarks of what a campaign spends its time on: training, one trial's compression
//! and fine-tuning, a forward pass (measured against the roofline model), a strategy's
//! ask, and a durable store append. Run with `cargo bench` (or `just bench`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use sculpt_compress::{CompressionPlan, LayerPlan};
use sculpt_nn::TrainConfig;
use sculpt_search::{
    Dimension, Nsga2, Nsga2Settings, SearchSpace, Strategy, TrialState, TrialView,
};

/// Median wall time of `f` over `runs` runs, after one warm-up run.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    let splits = sculpt_data::load("digits", 42).unwrap();
    println!("{:<44} {:>14}  note", "benchmark", "figure");

    // Teacher training throughput.
    let config = TrainConfig {
        epochs: 20,
        seed: 1,
        ..TrainConfig::default()
    };
    let mut teacher = sculpt_nn::zoo::build("mlp", &[64], 10, 1).unwrap();
    let report = sculpt_nn::train(
        &mut teacher,
        &splits.train,
        &config,
        &sculpt_nn::train::cross_entropy,
        &|_, w| Ok(w.clone()),
        &mut |_| {},
        None,
    )
    .unwrap();
    println!(
        "{:<44} {:>10.0} /s  samples/s, mlp 64-256-128-10, batch 64, AdamW",
        "train teacher (digits)", report.samples_per_second
    );

    // One trial: prune, quantize, distil for 10 epochs, score.
    let logits = sculpt_nn::predict_logits(&teacher, &splits.train).unwrap();
    let mut plan = CompressionPlan::default();
    plan.distill.temperature = 3.0;
    for (layer, prune, bits) in [("fc1", 0.5, 4), ("fc2", 0.5, 4), ("fc3", 0.0, 8)] {
        plan.layers.insert(
            layer.to_string(),
            LayerPlan {
                prune,
                bits,
                ..LayerPlan::default()
            },
        );
    }
    let finetune = TrainConfig {
        epochs: 10,
        learning_rate: 1e-3,
        weight_decay: 0.0,
        ..TrainConfig::default()
    };
    let trial = median(5, || {
        let (student, _) =
            sculpt_compress::apply(&teacher, &plan, &splits.train, &logits, &finetune).unwrap();
        black_box(sculpt_nn::accuracy(&student, &splits.val).unwrap());
    });
    println!(
        "{:<44} {:>11.1} ms  prune 0.5/0.5, bits 4/4/8, 10 epochs of distillation + scoring",
        "one trial (digits)",
        trial.as_secs_f64() * 1e3
    );

    // A forward pass, measured, next to what the roofline model predicts.
    let profile = sculpt_latency::DeviceProfile::load("epyc-zen4-1core").unwrap();
    for batch in [1usize, 64] {
        let x = splits.val.x.narrow(0, 0, batch).unwrap();
        let measured = median(2001, || {
            black_box(teacher.forward(&x).unwrap());
        });
        let modelled = sculpt_latency::estimate(&teacher, &profile, batch)
            .unwrap()
            .total_ms();
        println!(
            "{:<44} {:>11.4} ms  roofline model says {:.4} ms (candle, f32, not yet a deploy kernel)",
            format!("teacher forward, batch {batch} (measured)"),
            measured.as_secs_f64() * 1e3,
            modelled
        );
    }

    // NSGA-II ask with a long history: the strategy rebuilds its population each time.
    let space = SearchSpace::new(vec![
        Dimension::float("temperature", 1.0, 8.0, true),
        Dimension::float("alpha", 0.0, 1.0, false),
        Dimension::float("prune_fc1", 0.0, 0.8, false),
        Dimension::float("prune_fc2", 0.0, 0.8, false),
        Dimension::categorical("bits_fc1", vec![2., 3., 4., 5., 6., 8.]),
        Dimension::categorical("bits_fc2", vec![2., 3., 4., 5., 6., 8.]),
        Dimension::categorical("bits_fc3", vec![2., 3., 4., 5., 6., 8.]),
    ])
    .unwrap();
    let mut nsga2 = Nsga2::new(
        Nsga2Settings::default().with_population_size(50).unwrap(),
        3,
    );
    let mut rng = sculpt_search::trial_rng(9, 0);
    let history: Vec<TrialView> = (0..500u64)
        .map(|id| {
            let point = space.sample(&mut rng);
            TrialView {
                trial_id: id,
                objectives: Some(vec![point[2] * point[3], 1.0 - point[2]]),
                point,
                generation: Some((id / 50) as u32),
                state: TrialState::Complete,
                constraint_violation: 0.0,
            }
        })
        .collect();
    let ask = median(51, || {
        black_box(nsga2.ask(&space, &history, 500).unwrap());
    });
    println!(
        "{:<44} {:>11.3} ms  population 50, 7 dimensions",
        "nsga2 ask, 500 trials of history",
        ask.as_secs_f64() * 1e3
    );

    // Durable append: journal line + fsync + parquet rewrite.
    let dir = std::env::temp_dir().join(format!("sculpt-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store = sculpt_store::Store::open(
        &dir,
        sculpt_store::CampaignMeta {
            identity: None,
            name: "bench".into(),
            fingerprint: "0".into(),
            layers: vec!["fc1".into(), "fc2".into(), "fc3".into()],
            columns: vec!["temperature".into(), "prune_fc1".into(), "bits_fc1".into()],
        },
    )
    .unwrap();
    let start = Instant::now();
    let appends = 200u64;
    for id in 0..appends {
        store
            .append(sculpt_store::TrialRecord {
                trial_id: id,
                state: sculpt_store::TrialState::Complete,
                strategy: "nsga2".into(),
                generation: Some(0),
                params: [
                    ("temperature".to_string(), serde_json::json!(2.0)),
                    ("prune_fc1".to_string(), serde_json::json!(0.5)),
                    ("bits_fc1".to_string(), serde_json::json!(4)),
                ]
                .into(),
                accuracy: Some(0.95),
                latency_ms: Some(0.006),
                size_bytes: Some(5000),
                num_params: Some(20_000),
                nonzeros: Some(19_000),
                flops: Some(40_000),
                bops: Some(40_000 * 4 * 32),
                duration_s: 0.2,
                error: None,
                fidelity: None,
                rungs: Vec::new(),
            })
            .unwrap();
    }
    println!(
        "{:<44} {:>11.3} ms  mean of {appends}: journal line + fsync + parquet rewrite",
        "store append",
        start.elapsed().as_secs_f64() * 1e3 / appends as f64
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = Tensor::zeros(1, candle_core::DType::F32, &sculpt_nn::device());
}
