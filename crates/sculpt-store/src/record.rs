//! The records a campaign directory holds: one row per trial, the teacher's scores and the
//! campaign's identity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    Complete,
    Failed,
    /// Screened out before fine-tuning: its predicted latency was over the budget by more
    /// than the latency model's error. It has a latency and a size but no accuracy.
    Infeasible,
    /// Fine-tuning ran without a NaN but diverged: the loss rose far above where it
    /// started, or the student ended at chance accuracy. Its accuracy is kept, but it is
    /// never on a front.
    Diverged,
    /// Stopped at a rung of successive halving: not among the best at that fidelity, so
    /// its fine-tuning ended early. Its accuracy is the score at that rung (a low-fidelity
    /// score), which strategies learn from, but it is never on a front.
    Stopped,
}

impl TrialState {
    pub fn as_str(&self) -> &'static str {
        match self {
            TrialState::Complete => "complete",
            TrialState::Failed => "failed",
            TrialState::Infeasible => "infeasible",
            TrialState::Diverged => "diverged",
            TrialState::Stopped => "stopped",
        }
    }
}

/// One parameter value of a trial: a number or a named choice. Stored as plain JSON, so
/// the store needs to know nothing about the knobs that produce them.
pub type ParamValue = serde_json::Value;

/// One finished trial. Scores are `None` when the trial failed; `error` then says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialRecord {
    pub trial_id: u64,
    pub state: TrialState,
    pub strategy: String,
    /// NSGA-II generation (None for strategies without generations).
    pub generation: Option<u32>,
    /// The configuration, keyed by column (`temperature`, `prune_fc1`, `bits_fc1`, …), as
    /// the knob table names them.
    pub params: BTreeMap<String, ParamValue>,
    /// Validation accuracy, a fraction between 0 and 1.
    pub accuracy: Option<f64>,
    pub latency_ms: Option<f64>,
    pub size_bytes: Option<u64>,
    /// Scalar parameters of the compressed model (the `params` map is the configuration).
    pub num_params: Option<u64>,
    pub nonzeros: Option<u64>,
    pub flops: Option<u64>,
    pub bops: Option<u64>,
    pub duration_s: f64,
    pub error: Option<String>,
    /// The epochs of fine-tuning the trial's scores come from (its fidelity); absent for
    /// trials that were not fine-tuned or were stored before the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<u32>,
    /// Every rung of successive halving the trial reached, in order, with its score there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<Rung>,
}

/// A trial's score at one rung of successive halving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    /// Epochs of fine-tuning at this rung.
    pub epochs: u32,
    /// Validation accuracy there.
    pub accuracy: f64,
    /// Whether the trial was promoted past it.
    pub promoted: bool,
}

impl TrialRecord {
    pub fn is_complete(&self) -> bool {
        self.state == TrialState::Complete
    }

    /// A numeric parameter, if the trial has it.
    pub fn param_f64(&self, column: &str) -> Option<f64> {
        self.params.get(column).and_then(|v| v.as_f64())
    }

    /// A parameter as text (numbers as written), if the trial has it.
    pub fn param_text(&self, column: &str) -> Option<String> {
        self.params.get(column).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
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
    /// The latency model that produced every latency of the campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_model: Option<String>,
}

/// Which campaign a directory belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignMeta {
    pub name: String,
    /// A digest of everything in the campaign that changes what a trial means.
    pub fingerprint: String,
    /// Layer names, in order.
    pub layers: Vec<String>,
    /// The parameter columns of the trials, in frame order.
    pub columns: Vec<String>,
    /// Everything the fingerprint digests, as JSON, so that a refusal can say what changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<serde_json::Value>,
}

/// The settings that differ between two campaign identities, as dotted paths
/// (`finetune.epochs`, `knobs`), at most two levels deep.
pub fn identity_changes(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    let mut changes = Vec::new();
    if let (Value::Object(a), Value::Object(b)) = (old, new) {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            match (a.get(k), b.get(k)) {
                (Some(Value::Object(x)), Some(Value::Object(y))) if x != y => {
                    let mut inner: Vec<&String> = x.keys().chain(y.keys()).collect();
                    inner.sort();
                    inner.dedup();
                    for i in inner {
                        if x.get(i) != y.get(i) {
                            changes.push(format!("{k}.{i}"));
                        }
                    }
                }
                (x, y) if x != y => changes.push(k.clone()),
                _ => {}
            }
        }
    } else if old != new {
        changes.push("(everything)".into());
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_changes_name_the_settings_that_differ() {
        let old = serde_json::json!({"seed": 7, "finetune": {"epochs": 2, "batch_size": 64}, "knobs": [1]});
        let new = serde_json::json!({"seed": 7, "finetune": {"epochs": 3, "batch_size": 64}, "knobs": [2], "min_accuracy": 0.9});
        assert_eq!(
            identity_changes(&old, &new),
            ["finetune.epochs", "knobs", "min_accuracy"]
        );
        assert!(identity_changes(&old, &old).is_empty());
    }
}
