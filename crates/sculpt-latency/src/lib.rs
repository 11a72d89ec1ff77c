//! sculpt-latency owns latency: device profiles and the analytic roofline model,
//! measurement through sculpt's inference runtime, and the [`LatencyModel`] trait that
//! campaigns, screening and reports use without knowing which model answers. It knows
//! nothing about search or storage.

pub mod calibrate;
pub mod error;
pub mod lut;
pub mod measure;
pub mod model;
pub mod profile;
pub mod roofline;

pub use calibrate::calibrate_host;
pub use error::{LatencyError, Result};
pub use lut::{cpu_name, profile, Lut, LutEntry, ProfileSettings};
pub use measure::{host_speed, measure, reference_ms, HostSpeed, MeasureSettings};
pub use model::{LatencyModel, Measured, Roofline};
pub use profile::{DeviceProfile, OpsPerSecond};
pub use roofline::{estimate, Bound, LatencyEstimate, LayerLatency};
pub use sculpt_runtime::Measurement;
