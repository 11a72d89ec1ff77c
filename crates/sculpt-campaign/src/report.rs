//! What `sculpt report` reads from a campaign folder: the trials, the teacher, the summary
//! facts (from the campaign's stored identity and `runs.jsonl`), the latency budget, the
//! sensitivity table, and the held-out test scores of the Pareto configurations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sculpt_report::figures::Cost;
use sculpt_report::CampaignReport;
use sculpt_store::{CampaignMeta, SensitivityRow, Store, TeacherRecord, TrialRecord, RUNS_FILE};
use serde_json::Value;

use crate::error::Result;

/// A campaign folder, read.
#[derive(Debug, Clone)]
pub struct LoadedCampaign {
    pub dir: PathBuf,
    pub meta: CampaignMeta,
    pub trials: Vec<TrialRecord>,
    pub teacher: TeacherRecord,
    pub budget_ms: Option<f64>,
    pub objective: Cost,
    pub facts: Vec<(String, String)>,
    pub heldout: BTreeMap<u64, (f64, f64)>,
    pub teacher_test: Option<f64>,
    pub sensitivity: Option<(Vec<SensitivityRow>, Option<f64>)>,
}

/// The records of `runs.jsonl`, oldest first (none when the file is absent); lines that
/// do not parse are skipped.
pub(crate) fn runs(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join(RUNS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The latency budget of the campaign in `dir`: its stored identity's, else the last
/// run's.
pub fn stored_budget(meta: &CampaignMeta, dir: &Path) -> Option<f64> {
    meta.identity
        .as_ref()
        .and_then(|i| i.get("budget_ms"))
        .and_then(Value::as_f64)
        .or_else(|| {
            runs(dir)
                .iter()
                .rev()
                .find_map(|r| r.get("budget_ms").and_then(Value::as_f64))
        })
}

fn strategy_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_lowercase(),
        Value::Object(o) => o
            .iter()
            .map(|(k, inner)| {
                let settings: Vec<String> = inner
                    .as_object()
                    .map(|m| m.iter().map(|(a, b)| format!("{a} {b}")).collect())
                    .unwrap_or_default();
                if settings.is_empty() {
                    k.to_lowercase()
                } else {
                    format!("{} ({})", k.to_lowercase(), settings.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn duration_text(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Reads the campaign in `dir`. `budget_ms` overrides the stored budget.
pub fn load_campaign(dir: &Path, budget_ms: Option<f64>) -> Result<LoadedCampaign> {
    let (meta, trials) = Store::read(dir)?;
    let teacher = Store::read_teacher(dir)?;
    let identity = meta.identity.clone().unwrap_or(Value::Null);
    let budget_ms = budget_ms.or_else(|| stored_budget(&meta, dir));
    let objective = match identity.get("objective").and_then(Value::as_str) {
        Some("size") => Cost::Size,
        _ => Cost::Latency,
    };
    let runs = runs(dir);
    let mut facts: Vec<(String, String)> = Vec::new();
    let teacher_source = match identity.get("teacher") {
        Some(Value::Object(o)) if o.contains_key("Weights") => {
            format!("weights from {}", o["Weights"].as_str().unwrap_or("?"))
        }
        Some(Value::Object(o)) if o.contains_key("Zoo") => {
            "zoo model, trained by the campaign".into()
        }
        _ => String::new(),
    };
    facts.push((
        "model".into(),
        format!(
            "{} ({} parameters){}",
            teacher.model,
            teacher.params,
            if teacher_source.is_empty() {
                String::new()
            } else {
                format!("; {teacher_source}")
            }
        ),
    ));
    if let Some(d) = identity.get("data").and_then(Value::as_str) {
        facts.push(("data".into(), d.to_string()));
    }
    let host = runs
        .iter()
        .rev()
        .find_map(|r| r.get("host").and_then(Value::as_str).map(str::to_string));
    facts.push((
        "device and latency model".into(),
        format!(
            "{}{}",
            teacher
                .latency_model
                .clone()
                .unwrap_or_else(|| "latency model not recorded".into()),
            host.map(|h| format!("; trials ran on {h}"))
                .unwrap_or_default()
        ),
    ));
    let mut constraints = Vec::new();
    if let Some(b) = budget_ms {
        constraints.push(format!("latency ≤ {b} ms"));
    }
    if let Some(a) = identity.get("min_accuracy").and_then(Value::as_f64) {
        constraints.push(format!("validation accuracy ≥ {:.2}%", a * 100.0));
    }
    facts.push((
        "objectives and constraints".into(),
        format!(
            "maximise validation accuracy, minimise {}{}",
            match objective {
                Cost::Latency => "latency",
                Cost::Size => "size",
            },
            if constraints.is_empty() {
                "; no constraint".to_string()
            } else {
                format!("; {}", constraints.join(", "))
            }
        ),
    ));
    if let Some(s) = identity.get("strategy") {
        let halving = identity
            .get("halving")
            .filter(|h| !h.is_null())
            .map(|h| {
                format!(
                    "; successive halving from {} epochs, η = {}, {} bracket(s)",
                    h["min_epochs"], h["reduction_factor"], h["brackets"]
                )
            })
            .unwrap_or_default();
        facts.push(("strategy".into(), format!("{}{halving}", strategy_text(s))));
    }
    if let Some(f) = identity.get("finetune") {
        facts.push((
            "fine-tuning".into(),
            format!(
                "{} epochs of distillation, batch {}, learning rate {}",
                f["epochs"], f["batch_size"], f["learning_rate"]
            ),
        ));
    }
    if let Some(start) = runs
        .iter()
        .rev()
        .find(|r| r.get("event").and_then(Value::as_str) == Some("start"))
    {
        let trials_budget = start.get("trials").and_then(Value::as_u64);
        let minutes = start.get("max_minutes").and_then(Value::as_f64);
        facts.push((
            "budget".into(),
            match (trials_budget, minutes) {
                (Some(t), Some(m)) => format!("{t} trials or {m} minutes, whichever comes first"),
                (Some(t), None) => format!("{t} trials"),
                (None, Some(m)) => format!("{m} minutes"),
                (None, None) => "none recorded".into(),
            },
        ));
    }
    let ran: f64 = runs
        .iter()
        .filter(|r| r.get("event").and_then(Value::as_str) == Some("end"))
        .filter_map(|r| Some(r.get("ended")?.as_f64()? - r.get("started")?.as_f64()?))
        .sum();
    let run_count = runs
        .iter()
        .filter(|r| r.get("event").and_then(Value::as_str) == Some("end"))
        .count();
    if run_count > 0 {
        facts.push((
            "duration".into(),
            format!(
                "{} over {run_count} run{}",
                duration_text(ran),
                if run_count == 1 { "" } else { "s" }
            ),
        ));
    }
    if let Some(seed) = identity.get("seed") {
        facts.push(("seed".into(), seed.to_string()));
    }
    // The sensitivity table the campaign narrowed its space with, or one written next to
    // its trials by `sculpt sensitivity --out DIR`.
    let sensitivity = crate::rebuild::campaign_of(dir, None)
        .ok()
        .and_then(|c| c.sensitivity)
        .map(|s| (s.rows, Some(s.max_drop)))
        .or_else(|| {
            sculpt_store::read_sensitivity(&dir.join(sculpt_store::SENSITIVITY_FILE))
                .ok()
                .map(|rows| (rows, None))
        })
        .filter(|(rows, _)| !rows.is_empty());
    let cached = crate::rebuild::HeldOutCache::read(dir, &meta.fingerprint);
    Ok(LoadedCampaign {
        dir: dir.to_path_buf(),
        heldout: cached
            .trials
            .values()
            .map(|h| (h.trial_id, (h.val_accuracy, h.test_accuracy)))
            .collect(),
        teacher_test: cached.teacher_test_accuracy,
        meta,
        trials,
        teacher,
        budget_ms,
        objective,
        facts,
        sensitivity,
    })
}

impl LoadedCampaign {
    pub fn view(&self) -> CampaignReport<'_> {
        CampaignReport {
            name: self.meta.name.clone(),
            dir: self.dir.clone(),
            columns: &self.meta.columns,
            layers: &self.meta.layers,
            trials: &self.trials,
            teacher: &self.teacher,
            budget_ms: self.budget_ms,
            objective: self.objective,
            facts: self.facts.clone(),
            heldout: self.heldout.clone(),
            teacher_test: self.teacher_test,
            sensitivity: self.sensitivity.clone(),
        }
    }

    /// Rebuilds the Pareto configurations not scored yet and scores them on the test
    /// split (see [`crate::rebuild::held_out`]).
    /// Returns the warnings the user should see.
    pub fn score_held_out(
        &mut self,
        file: Option<&Path>,
        progress: &mut dyn FnMut(usize, usize, u64),
    ) -> Result<Vec<String>> {
        let ids: Vec<u64> = self
            .view()
            .pareto()
            .into_iter()
            .map(|i| self.trials[i].trial_id)
            .collect();
        let cache = crate::rebuild::held_out(&self.dir, file, &ids, progress)?;
        self.teacher_test = cache.teacher_test_accuracy;
        self.heldout = cache
            .trials
            .values()
            .map(|h| (h.trial_id, (h.val_accuracy, h.test_accuracy)))
            .collect();
        Ok(cache.warnings)
    }
}
