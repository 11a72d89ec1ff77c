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

/// The host's speed right now: the median time of a fixed reference network at this batch
/// and thread count. Shared machines slow down by 1.3 to 1.6× for minutes at a time; a
/// table profiled in one such phase and used in another is off by that factor everywhere.
/// Profiling records the references alongside its probes, and `sculpt latency validate`
/// measures them beside every plan, so that drift of the host is told apart from error of
/// the predictor.
///
/// Two references, because a co-tenant slows compute and memory traffic by different
/// factors: the zoo's dense LeNet-5 (convolutions and pooling, compute-bound) stands for
/// every convolution and element-wise step, and the zoo's dense LeNet-300-100 (matrix-vector
/// products streaming a megabyte of weights) for Linear steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostSpeed {
    /// The reference for convolutions, pooling and element-wise steps (LeNet-5).
    pub conv_ms: f64,
    /// The reference for Linear steps (LeNet-300-100).
    pub linear_ms: f64,
}

impl HostSpeed {
    /// The mean of two readings (the references timed before and after a measurement).
    pub fn mean(&self, other: &HostSpeed) -> HostSpeed {
        HostSpeed {
            conv_ms: 0.5 * (self.conv_ms + other.conv_ms),
            linear_ms: 0.5 * (self.linear_ms + other.linear_ms),
        }
    }
}

/// Times both references (about 40 ms).
pub fn host_speed(batch: usize, threads: usize) -> Result<HostSpeed> {
    Ok(HostSpeed {
        conv_ms: reference_ms(batch, threads)?,
        linear_ms: time_reference(&linear_reference_graph()?, batch, threads)?,
    })
}

/// The convolutional reference alone: the zoo's dense LeNet-5 (see [`HostSpeed`]).
pub fn reference_ms(batch: usize, threads: usize) -> Result<f64> {
    time_reference(&reference_graph()?, batch, threads)
}

fn time_reference(graph: &Graph, batch: usize, threads: usize) -> Result<f64> {
    let mut runtime = Runtime::compile(
        graph,
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

fn linear_reference_graph() -> Result<Graph> {
    static GRAPH: std::sync::OnceLock<Graph> = std::sync::OnceLock::new();
    if let Some(g) = GRAPH.get() {
        return Ok(g.clone());
    }
    let g = sculpt_nn::zoo::build("lenet-300-100", &[784], 10, 0x5EED)?;
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
        let speed = super::host_speed(1, 1).unwrap();
        assert!(
            speed.linear_ms > 0.0 && speed.linear_ms.is_finite(),
            "{speed:?}"
        );
        // LeNet-300-100 has a tenth of LeNet-5's multiply-adds at batch 1.
        assert!(speed.linear_ms < speed.conv_ms, "{speed:?}");
    }
}
