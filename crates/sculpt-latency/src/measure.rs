//! Measured latency: compile the graph with sculpt's inference runtime and time it on this
//! machine (warm-up, then the median and 90th percentile of many runs). This is the ground
//! truth the predictors are validated against.

use sculpt_nn::Graph;
use sculpt_runtime::{Measurement, Options, Runtime};

use crate::error::Result;

/// How a measurement runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasureSettings {
    pub batch: usize,
    pub threads: usize,
    pub warmup: usize,
    pub runs: usize,
}

impl Default for MeasureSettings {
    fn default() -> Self {
        MeasureSettings {
            batch: 1,
            threads: 1,
            warmup: 50,
            runs: 200,
        }
    }
}

/// Compiles `graph` and measures it.
pub fn measure(graph: &Graph, settings: &MeasureSettings) -> Result<Measurement> {
    if settings.runs == 0 {
        return Err(sculpt_runtime::RuntimeError::Input(
            "a measurement needs at least 1 timed run".into(),
        )
        .into());
    }
    let mut runtime = Runtime::compile(
        graph,
        &Options {
            max_batch: settings.batch,
            threads: settings.threads,
            isa: None,
            sparse: Default::default(),
        },
    )?;
    Ok(sculpt_runtime::measure(
        &mut runtime,
        settings.batch,
        settings.warmup,
        settings.runs,
    )?)
}

/// The host's speed right now: the median time of a fixed reference network (the zoo's
/// dense LeNet-5, whose convolutions, pooling and Linear layers cover the runtime's main
/// kernels) at this batch and thread count. Shared machines slow down by 1.3 to 1.6× for
/// minutes at a time; a table profiled in one such phase and used in another is off by
/// that factor everywhere. Profiling records this reference alongside its probes, and
/// `sculpt latency validate` measures it beside every plan, so that drift of the host is
/// told apart from error of the predictor.
pub fn reference_ms(batch: usize, threads: usize) -> Result<f64> {
    let graph = reference_graph()?;
    let mut runtime = Runtime::compile(
        &graph,
        &Options {
            max_batch: batch,
            threads,
            isa: None,
            sparse: Default::default(),
        },
    )?;
    let first = sculpt_runtime::measure(&mut runtime, batch, 1, 3)?.median_ms;
    // About 20 ms of timed runs.
    let runs = ((20.0 / first.max(1e-4)) as usize).clamp(5, 400);
    Ok(sculpt_runtime::measure(&mut runtime, batch, 3, runs)?.median_ms)
}

fn reference_graph() -> Result<Graph> {
    static GRAPH: std::sync::OnceLock<Graph> = std::sync::OnceLock::new();
    if let Some(g) = GRAPH.get() {
        return Ok(g.clone());
    }
    let g = sculpt_nn::zoo::build("lenet-5", &[1, 28, 28], 10, 0x5EED)?;
    Ok(GRAPH.get_or_init(|| g).clone())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reference_time_is_positive_and_grows_with_the_batch() {
        let one = super::reference_ms(1, 1).unwrap();
        let many = super::reference_ms(32, 1).unwrap();
        assert!(one > 0.0 && one.is_finite(), "{one}");
        // 32 samples cannot take less time than one (a generous relation, not a timing).
        assert!(many > 2.0 * one, "batch 1 {one} ms, batch 32 {many} ms");
    }
}
