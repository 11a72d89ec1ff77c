//! Measured latency: warm up, then time many runs of a compiled plan and report the median
//! and the 90th percentile. The input is fixed pseudo-random data, so a run's cost does not
//! depend on the data.

use std::time::Instant;

use serde::Serialize;

use crate::{Result, Runtime};

/// Latency of one plan at one batch size and thread count.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub batch: usize,
    pub threads: usize,
    pub isa: String,
    pub runs: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
}

/// Times `runs` calls of `runtime` on `batch` samples after `warmup` untimed ones (and at
/// least 20 ms of them).
pub fn measure(
    runtime: &mut Runtime,
    batch: usize,
    warmup: usize,
    runs: usize,
) -> Result<Measurement> {
    let input = probe_input(batch * runtime.input_len());
    // Warm up by count and for at least 20 ms, so that caches and the clock have settled
    // before timing starts.
    let start = Instant::now();
    let mut done = 0;
    while done < warmup || start.elapsed().as_secs_f64() < 0.02 {
        runtime.run(&input, batch)?;
        done += 1;
    }
    let runs = runs.max(1);
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(runtime.run(&input, batch)?);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(Measurement {
        batch,
        threads: runtime.threads(),
        isa: runtime.isa().name().to_string(),
        runs,
        median_ms: times[runs / 2],
        p90_ms: times[(runs * 9 / 10).min(runs - 1)],
        min_ms: times[0],
    })
}

/// `n` fixed pseudo-random values in [-1, 1): the input latency is measured on.
pub fn probe_input(n: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}
