//! The records a campaign directory holds: one row per trial, the teacher's scores and the
//! campaign's identity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    Complete,
    Failed,
}

impl TrialState {
    pub fn as_str(&self) -> &'static str {
        match self {
            TrialState::Complete => "complete",
            TrialState::Failed => "failed",
        }
    }
}

/// One finished trial. Scores are `None` when the trial failed; `error` then says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub trial_id: u64,
    pub state: TrialState,
    pub strategy: String,
    /// NSGA-II generation (None for strategies without generations).
    pub generation: Option<u32>,
    pub temperature: f64,
    pub alpha: f64,
    /// Prune ratio per layer, in layer order.
    pub prune: BTreeMap<String, f64>,
    /// Weight bit width per layer.
    pub bits: BTreeMap<String, u32>,
    /// Validation accuracy, a fraction between 0 and 1.
    pub accuracy: Option<f64>,
    pub latency_ms: Option<f64>,
    pub size_bytes: Option<u64>,
    pub params: Option<u64>,
    pub flops: Option<u64>,
    pub duration_s: f64,
    pub error: Option<String>,
}

impl TrialRecord {
    pub fn is_complete(&self) -> bool {
        self.state == TrialState::Complete
    }
}

/// The uncompressed teacher, scored on the same validation split as the trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherRecord {
    pub model: String,
    pub accuracy: f64,
    pub latency_ms: f64,
    pub size_bytes: u64,
    pub params: u64,
    pub flops: u64,
}

/// Which campaign a directory belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignMeta {
    pub name: String,
    /// A digest of everything in the campaign that changes what a trial means.
    pub fingerprint: String,
    /// Layer names, in order: they name the prune_/bits_ columns.
    pub layers: Vec<String>,
}
