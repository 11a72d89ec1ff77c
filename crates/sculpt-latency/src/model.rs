//! Latency models behind one trait: the analytic roofline, the lookup table profiled on
//! this host, and measurement itself.

use sculpt_nn::Graph;

use crate::error::Result;
use crate::measure::{measure, MeasureSettings};
use crate::profile::DeviceProfile;

/// Predicts the latency of a graph, in milliseconds.
pub trait LatencyModel: Send + Sync {
    /// Names the model and its settings, for reports (`roofline (epyc-zen4-1core)`).
    fn describe(&self) -> String;
    fn predict_ms(&self, graph: &Graph) -> Result<f64>;
    /// The relative error this model has been measured to make, when known (a lookup
    /// table's largest error on its calibration graphs). Screening allows this much.
    fn error_margin(&self) -> Option<f64> {
        None
    }
    /// Whether a prediction is a measurement (noisy: repeated runs differ).
    fn is_measured(&self) -> bool {
        false
    }
}

/// The analytic roofline on a device profile.
pub struct Roofline {
    pub profile: DeviceProfile,
    pub batch: usize,
}

impl LatencyModel for Roofline {
    fn describe(&self) -> String {
        format!(
            "roofline ({}, batch {}; an analytic estimate)",
            self.profile.name, self.batch
        )
    }

    fn predict_ms(&self, graph: &Graph) -> Result<f64> {
        Ok(crate::roofline::estimate(graph, &self.profile, self.batch)?.total_ms())
    }
}

/// The median of runs of sculpt's runtime on this machine.
pub struct Measured {
    pub settings: MeasureSettings,
}

impl LatencyModel for Measured {
    fn describe(&self) -> String {
        format!(
            "measured (sculpt runtime on this host, batch {}, {} thread{}, median of {} runs)",
            self.settings.batch,
            self.settings.threads,
            if self.settings.threads == 1 { "" } else { "s" },
            self.settings.runs
        )
    }

    fn predict_ms(&self, graph: &Graph) -> Result<f64> {
        Ok(measure(graph, &self.settings)?.median_ms)
    }

    fn is_measured(&self) -> bool {
        true
    }
}
