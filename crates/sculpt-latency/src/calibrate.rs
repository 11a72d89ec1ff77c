//! The `host` device profile: the roofline's rates measured on this machine by
//! microbenchmarks of sculpt's own runtime, rather than read from a data sheet.
//!
//! - arithmetic rates: a 512×512 Linear layer at batch 256 in f32, int8 and packed int4
//!   (compute-bound), 2 ops per multiply-add;
//! - memory bandwidth: a 4096×4096 f32 Linear layer at batch 1 (64 MiB of weights, read
//!   once per run, far beyond the caches);
//! - layer overhead: an 8×8 Linear layer at batch 1, whose arithmetic is negligible.

use sculpt_nn::graph::INPUT;
use sculpt_nn::{Graph, GraphSpec, Node, Op, WeightQuant};

use crate::error::Result;
use crate::measure::{measure, MeasureSettings};
use crate::profile::{DeviceProfile, OpsPerSecond};

fn linear(n: usize, k: usize, bits: u32) -> Result<Graph> {
    let spec = GraphSpec {
        name: "calibration".into(),
        input_shape: vec![k],
        num_classes: n,
        nodes: vec![Node {
            name: "fc".into(),
            op: Op::Linear {
                in_features: k,
                out_features: n,
                bias: true,
            },
            inputs: vec![INPUT.into()],
        }],
        output: "fc".into(),
        weight_quant: Default::default(),
        sparse: Default::default(),
        act_quant: Default::default(),
        preprocessing: None,
    };
    let graph = sculpt_nn::zoo::init(spec, 3)?;
    if bits >= 32 {
        return Ok(graph);
    }
    let schemes = [(
        "fc.weight".to_string(),
        WeightQuant::symmetric_per_channel(bits),
    )]
    .into_iter()
    .collect();
    Ok(sculpt_compress::quantize(&graph, &schemes)?)
}

fn median_ms(graph: &Graph, batch: usize, threads: usize, runs: usize) -> Result<f64> {
    Ok(measure(
        graph,
        &MeasureSettings {
            batch,
            threads,
            warmup: 3,
            runs,
        },
    )?
    .median_ms)
}

/// Measures this host and returns its profile (about two seconds).
pub fn calibrate_host(threads: usize) -> Result<DeviceProfile> {
    let (n, k, batch) = (512usize, 512usize, 256usize);
    let ops = 2.0 * (n * k * batch) as f64;
    let mut rates = [0.0; 3];
    for (rate, bits) in rates.iter_mut().zip([32u32, 8, 4]) {
        let ms = median_ms(&linear(n, k, bits)?, batch, threads, 15)?;
        *rate = ops / (ms * 1e-3);
    }
    let big = 4096usize;
    let ms = median_ms(&linear(big, big, 32)?, 1, threads, 15)?;
    let bandwidth = (big * big * 4) as f64 / (ms * 1e-3);
    let overhead_ms = median_ms(&linear(8, 8, 32)?, 1, threads, 2000)?;
    let isa = sculpt_runtime::Isa::detect().name();
    Ok(DeviceProfile {
        name: "host".into(),
        description: format!(
            "this machine, {threads} thread(s), {isa}: rates measured by sculpt's runtime"
        ),
        source: format!(
            "Calibrated by microbenchmarks of sculpt's runtime ({isa}): f32 {:.1} GFLOP/s, int8 {:.1} GOP/s, \
             int4 {:.1} GOP/s from a 512x512 Linear at batch 256; {:.1} GB/s from a 4096x4096 f32 Linear \
             at batch 1; {:.2} us per layer from an 8x8 Linear at batch 1.",
            rates[0] / 1e9,
            rates[1] / 1e9,
            rates[2] / 1e9,
            bandwidth / 1e9,
            overhead_ms * 1e3
        ),
        ops_per_second: OpsPerSecond {
            f32: rates[0],
            int8: rates[1],
            int4: rates[2],
        },
        memory_bandwidth_bytes_per_s: bandwidth,
        layer_overhead_s: overhead_ms * 1e-3,
    })
}
