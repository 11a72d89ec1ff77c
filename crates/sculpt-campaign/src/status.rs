//! How a campaign stands, read from its folder while it runs or after: the stored trials
//! by state, the run going on (from `runs.jsonl`: a start without its end, whose process
//! is alive), elapsed time and ETA, the best hypervolume and the front. It only reads.

use std::path::Path;

use sculpt_store::{Store, TeacherRecord, TrialRecord, TrialState, RUNS_FILE};
use serde::Serialize;

use crate::error::Result;

/// One front member, as `sculpt status --json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FrontMember {
    pub trial_id: u64,
    pub accuracy: Option<f64>,
    pub latency_ms: Option<f64>,
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub campaign: String,
    pub complete: usize,
    pub failed: usize,
    pub infeasible: usize,
    pub diverged: usize,
    /// Stopped early by successive halving.
    pub stopped: usize,
    /// 1 while a run is going on, else 0.
    pub running: usize,
    pub stored: usize,
    /// The last run's trial count.
    pub budget: Option<usize>,
    pub budget_ms: Option<f64>,
    pub elapsed_s: Option<f64>,
    pub eta_s: Option<f64>,
    pub hypervolume: Option<f64>,
    pub front: Vec<FrontMember>,
    #[serde(skip)]
    pub columns: Vec<String>,
    #[serde(skip)]
    pub trials: Vec<TrialRecord>,
    #[serde(skip)]
    pub teacher: Option<TeacherRecord>,
}

/// Reads the status of the campaign in `dir`.
pub fn status(dir: &Path) -> Result<Status> {
    let (meta, trials) = Store::read(dir)?;
    let runs: Vec<serde_json::Value> = std::fs::read_to_string(dir.join(RUNS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let last_start = runs.iter().rposition(|r| r["event"] == "start");
    let ended = last_start.is_some_and(|i| runs[i + 1..].iter().any(|r| r["event"] == "end"));
    let start = last_start.map(|i| &runs[i]);
    let alive = start
        .and_then(|s| s["pid"].as_u64())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    let running = start.is_some() && !ended && alive;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let budget = start.and_then(|s| s["trials"].as_u64()).map(|n| n as usize);
    let count = |state: TrialState| trials.iter().filter(|t| t.state == state).count();
    let elapsed = start
        .and_then(|s| s["started"].as_f64())
        .filter(|_| running)
        .map(|t| now - t);
    let mean = (!trials.is_empty())
        .then(|| trials.iter().map(|t| t.duration_s).sum::<f64>() / trials.len() as f64);
    let eta = match (budget, mean) {
        (Some(b), Some(m)) if running => Some(b.saturating_sub(trials.len()) as f64 * m),
        _ => None,
    };
    let teacher = Store::read_teacher(dir).ok();
    let front = sculpt_report::pareto_indices(&trials)
        .into_iter()
        .map(|i| FrontMember {
            trial_id: trials[i].trial_id,
            accuracy: trials[i].accuracy,
            latency_ms: trials[i].latency_ms,
            size_bytes: trials[i].size_bytes,
        })
        .collect();
    Ok(Status {
        campaign: meta.name,
        complete: count(TrialState::Complete),
        failed: count(TrialState::Failed),
        infeasible: count(TrialState::Infeasible),
        diverged: count(TrialState::Diverged),
        stopped: count(TrialState::Stopped),
        running: usize::from(running),
        stored: trials.len(),
        budget,
        budget_ms: start.and_then(|s| s["budget_ms"].as_f64()),
        elapsed_s: elapsed,
        eta_s: eta,
        hypervolume: teacher
            .as_ref()
            .map(|t| sculpt_report::hypervolume(&trials, t)),
        front,
        columns: meta.columns,
        trials,
        teacher,
    })
}
