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
