//! Training and inference throughput of LeNet-300-100 and LeNet-5 on MNIST at batch 1, 64
//! and 256, with the achieved GFLOP/s next to this machine's peak. MNIST is read from
//! `$SCULPT_MNIST`, or from `../shared/data/mnist`; without it the benchmark says so and
//! exits. Run with `cargo bench --bench mnist`.

use std::time::Instant;

use candle_core::Tensor;
use sculpt_nn::{Dataset, TrainConfig};

/// Peak f32 rate of the machine: cores × 32 FLOP/cycle (two 256-bit FMA pipes, as Zen 4
/// runs AVX-512) × the clock /proc/cpuinfo reports.
fn peak_gflops() -> (f64, String) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mhz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(3000.0);
    let peak = cores as f64 * 32.0 * mhz / 1e3;
    (
        peak,
        format!("{cores} cores x 32 FLOP/cycle x {:.2} GHz", mhz / 1e3),
    )
}

fn subset(data: &Dataset, n: usize) -> Dataset {
    Dataset {
        x: data.x.narrow(0, 0, n).unwrap(),
        y: data.y.narrow(0, 0, n).unwrap(),
        num_classes: data.num_classes,
    }
}

fn main() {
    let dir = std::env::var("SCULPT_MNIST").unwrap_or_else(|_| "../shared/data/mnist".into());
    if !std::path::Path::new(&dir).is_dir() {
        println!("MNIST not found at {dir}; set SCULPT_MNIST to its folder. Skipping.");
        return;
    }
    let splits = sculpt_data::load(&format!("mnist:{dir}"), 42).unwrap();
    let (peak, how) = peak_gflops();
    println!("peak f32: {peak:.0} GFLOP/s ({how})");
    println!(
        "{:<15} {:<10} {:>6} {:>14} {:>10} {:>8}",
        "model", "mode", "batch", "samples/s", "GFLOP/s", "of peak"
    );
    for model in ["lenet-300-100", "lenet-5"] {
        let graph = sculpt_nn::zoo::build(model, &[1, 28, 28], 10, 1).unwrap();
        let flops = graph.flops().unwrap() as f64;
        for batch in [1usize, 64, 256] {
            // Training: forward and backward cost about 3x the forward FLOPs.
            let steps = if batch == 1 {
                2000
            } else {
                (20_000 / batch).max(20)
            };
            let data = subset(&splits.train, steps * batch);
            let config = TrainConfig {
                epochs: 1,
                batch_size: batch,
                learning_rate: 1e-3,
                ..TrainConfig::default()
            };
            let mut g = graph.clone();
            let report = sculpt_nn::train(
                &mut g,
                &data,
                &config,
                &sculpt_nn::train::cross_entropy,
                &|_, w| Ok(w.clone()),
                &mut |_| {},
                None,
            )
            .unwrap();
            let rate = report.samples_per_second;
            let gflops = rate * 3.0 * flops / 1e9;
            println!(
                "{model:<15} {:<10} {batch:>6} {rate:>14.0} {gflops:>10.1} {:>7.1}%",
                "train",
                100.0 * gflops / peak
            );
            // Inference.
            let x: Tensor = splits.test.x.narrow(0, 0, batch).unwrap();
            let runs = (20_000 / batch).clamp(50, 5000);
            graph.forward(&x).unwrap();
            let start = Instant::now();
            for _ in 0..runs {
                std::hint::black_box(graph.forward(&x).unwrap());
            }
            let rate = (runs * batch) as f64 / start.elapsed().as_secs_f64();
            let gflops = rate * flops / 1e9;
            println!(
                "{model:<15} {:<10} {batch:>6} {rate:>14.0} {gflops:>10.1} {:>7.1}%",
                "inference",
                100.0 * gflops / peak
            );
        }
    }
}
