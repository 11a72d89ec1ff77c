//! sculpt-latency owns device profiles and the analytic latency model. A profile gives a
//! device's arithmetic rate per precision, its memory bandwidth and a fixed cost per layer;
//! the roofline model charges each layer the larger of its compute time and its memory
//! time, plus that fixed cost. It knows nothing about search or storage.

pub mod error;
pub mod measure;
pub mod profile;
pub mod roofline;

pub use error::{LatencyError, Result};
pub use measure::measure;
pub use profile::{DeviceProfile, OpsPerSecond};
pub use roofline::{estimate, Bound, LatencyEstimate, LayerLatency};
