//! sculpt-campaign owns a campaign from its TOML file to its finished report: the schema
//! (read raw, then resolved into a checked `Campaign`), the teacher, the search space and
//! its decoding into compression plans, and the one executor that runs the loop of ask,
//! evaluate, store, tell and observe.

pub mod bench;
pub mod config;
pub mod error;
pub mod executor;
pub mod halving;
pub mod latency_check;
pub mod observe;
pub mod rebuild;
pub mod report;
pub mod sensitivity;
pub mod space;
pub mod standalone;
pub mod status;
pub mod teacher;
pub mod workers;

pub use config::{
    Campaign, KnobDomain, KnobSearch, LatencyChoice, Objective, StrategyKind, TeacherSource,
};
pub use error::{CampaignError, Result};
pub use executor::{
    evaluate_teacher, latency_model, run, run_opts, run_with, runtime_accuracy, work, Launcher,
    RunOptions, RunOutcome, WorkerOutcome,
};
pub use observe::{Observer, Progress, ProgressBar};
pub use space::{search_space, trial_view, CampaignSpace, Coordinate};
pub use standalone::{
    compress_model, model_seed, training_record, trial_plan, CompressMetrics, CompressRun,
};
pub use teacher::{train_model, TrainMetrics};
