//! How a campaign stands, read from its folder while it runs or after: the stored trials
//! by state, the run going on (from `runs.jsonl`: a start without its end, whose process
//! is alive), elapsed time and ETA, the best hypervolume and the front. It only reads.

use std::path::Path;

use sculpt_store::{Store, TeacherRecord, TrialRecord, TrialState};
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
    /// Trials being evaluated now: the claims of a parallel run whose workers are alive,
    /// or 1 while a sequential run goes on.
    pub running: usize,
    /// Claims whose worker stopped its heartbeat: queued again by the runner (at once if
    /// it is running, else when the campaign resumes).
    pub abandoned: usize,
    /// Candidates waiting for a worker.
    pub queued: usize,
    /// Whether a run is going on.
    pub active: bool,
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
    let runs = crate::report::runs(dir);
    let last_start = runs.iter().rposition(|r| r["event"] == "start");
    let ended = last_start.is_some_and(|i| runs[i + 1..].iter().any(|r| r["event"] == "end"));
    let start = last_start.map(|i| &runs[i]);
    let alive = start
        .and_then(|s| s["pid"].as_u64())
        .is_some_and(|pid| crate::workers::alive(pid as u32));
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
        (Some(b), Some(m)) if running => {
            let workers = start
                .and_then(|s| s["workers"].as_u64())
                .unwrap_or(1)
                .max(1);
            let by_trials = b.saturating_sub(trials.len()) as f64 * m / workers as f64;
            // A time budget ends the run first when it is nearer.
            let by_time = start
                .and_then(|s| s["max_minutes"].as_f64())
                .zip(elapsed)
                .map(|(limit, e)| (limit * 60.0 - e).max(0.0));
            Some(by_time.map_or(by_trials, |t| t.min(by_trials)))
        }
        _ => None,
    };
    let teacher = Store::read_teacher(dir).ok();
    let work = crate::workers::WorkDir::existing(dir);
    let claims = work.as_ref().map(|w| w.claims()).unwrap_or_default();
    let stale = crate::workers::STALE_AFTER.as_secs_f64();
    let (in_flight, silent): (Vec<_>, Vec<_>) =
        claims.iter().partition(|c| running && c.silent_for < stale);
    let abandoned = silent.len();
    let queued = work.as_ref().map_or(0, |w| w.queued().len());
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
        running: if in_flight.is_empty() {
            usize::from(running)
        } else {
            in_flight.len()
        },
        abandoned,
        queued,
        active: running,
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
