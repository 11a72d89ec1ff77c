//! Measured latency: run the model's forward pass on this machine and take the median of
//! many runs, after a warm-up. This measures sculpt's own candle kernels; it is the
//! ground truth the analytic model is compared against.

use std::time::Instant;

use candle_core::Tensor;
use sculpt_nn::Graph;

use crate::error::Result;

/// Median milliseconds of one forward pass of `batch_size` samples, over `runs` runs.
pub fn measure(graph: &Graph, batch_size: usize, runs: usize) -> Result<f64> {
    let mut shape = vec![batch_size.max(1)];
    shape.extend_from_slice(&graph.spec.input_shape);
    let x =
        Tensor::randn(0f32, 1.0, shape, &sculpt_nn::device()).map_err(sculpt_nn::NnError::from)?;
    for _ in 0..runs.clamp(1, 10) {
        graph.forward(&x)?;
    }
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            graph
                .forward(&x)
                .map(|_| start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<std::result::Result<_, _>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
