//! The claim protocol between a campaign's runner and its workers, in the campaign folder.
//!
//! The runner alone asks the strategy and writes the journal. It puts each candidate in
//! `work/queue/<id>.json`. A worker (`sculpt worker DIR`, a separate process) claims one
//! by renaming it into `work/claims/` (a rename is atomic, so two workers never hold the
//! same claim), stamps it with its id, and keeps the claim's modification time fresh as a
//! heartbeat while it evaluates. It writes the finished trial to `work/done/<id>.json`
//! (through a temporary file and a rename) and then drops the claim. The runner stores
//! each finished trial in the journal, tells the strategy, and removes the file.
//!
//! Nothing is lost when a process dies:
//! - a worker that dies leaves a claim whose heartbeat stops; after [`STALE_AFTER`] the
//!   runner queues it again (the trial is *abandoned* until then);
//! - a runner that dies leaves queued, claimed and finished files; the next run stores
//!   the finished ones, keeps the queue, and requeues claims whose heartbeat stopped;
//! - the same trial finished twice (a slow worker thought dead) is stored once.
//!
//! The folder is the only shared state, so the same protocol can later move to a shared
//! database and a cluster scheduler.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sculpt_search::Point;
use sculpt_store::TrialRecord;
use serde::{Deserialize, Serialize};

use crate::error::{CampaignError, Result};

/// A claim whose heartbeat is older than this is taken as abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(20);
/// How often a worker refreshes its claim's heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// What the runner tells its workers: which campaign, with which seed, and who runs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// The campaign file, absolute.
    pub campaign: PathBuf,
    /// The seed the runner uses (the file's, or `--seed`).
    pub seed: u64,
    /// The campaign's fingerprint: a worker refuses a file that no longer matches it.
    pub fingerprint: String,
    pub runner_pid: u32,
}

/// One candidate to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    pub trial_id: u64,
    pub point: Point,
    pub strategy: String,
    pub generation: Option<u32>,
    /// The worker holding it, once claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// A claim as the runner sees it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub item: WorkItem,
    /// Seconds since its last heartbeat.
    pub silent_for: f64,
}

/// The `work/` folder of a campaign.
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
}

fn io(path: &Path, cause: std::io::Error) -> CampaignError {
    CampaignError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

fn id_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// Writes `bytes` through a temporary file, synced, and a rename, so a reader never sees
/// half a file (`<id>.tmp`, which the listings skip).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(sculpt_nn::io::write_atomic(path, bytes)?)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| CampaignError::Invalid(format!("{}: {e}", path.display())))
}

impl WorkDir {
    pub const CLOSED: &'static str = "closed";
    pub const RUN: &'static str = "run.json";

    /// The work folder of the campaign in `out` (created when missing).
    pub fn open(out: &Path) -> Result<WorkDir> {
        let root = out.join("work");
        for sub in ["queue", "claims", "done"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        }
        Ok(WorkDir { root })
    }

    /// The work folder, if the campaign in `out` has one (read-only use).
    pub fn existing(out: &Path) -> Option<WorkDir> {
        let root = out.join("work");
        root.is_dir().then_some(WorkDir { root })
    }

    fn sub(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn ids(&self, sub: &str) -> Vec<(u64, PathBuf)> {
        let mut ids: Vec<(u64, PathBuf)> = std::fs::read_dir(self.sub(sub))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter_map(|p| id_of(&p).map(|id| (id, p)))
            .collect();
        ids.sort();
        ids
    }

    pub fn write_run(&self, run: &RunInfo) -> Result<()> {
        let text =
            serde_json::to_string_pretty(run).map_err(|e| CampaignError::Invalid(e.to_string()))?;
        write_atomic(&self.sub(Self::RUN), text.as_bytes())
    }

    pub fn read_run(&self) -> Result<RunInfo> {
        read_json(&self.sub(Self::RUN))
    }

    /// Opens the folder to work (clears the closing mark of an earlier run).
    pub fn reopen(&self) -> Result<()> {
        let closed = self.sub(Self::CLOSED);
        match std::fs::remove_file(&closed) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&closed, e)),
            _ => Ok(()),
        }
    }

    /// Tells workers that no more work comes: each exits once the queue is empty.
    pub fn close(&self) -> Result<()> {
        let closed = self.sub(Self::CLOSED);
        std::fs::write(&closed, b"").map_err(|e| io(&closed, e))
    }

    pub fn is_closed(&self) -> bool {
        self.sub(Self::CLOSED).exists()
    }

    /// Queues a candidate.
    pub fn enqueue(&self, item: &WorkItem) -> Result<()> {
        let text = serde_json::to_vec(item).map_err(|e| CampaignError::Invalid(e.to_string()))?;
        write_atomic(
            &self.sub("queue").join(format!("{}.json", item.trial_id)),
            &text,
        )
    }

    pub fn queued(&self) -> Vec<WorkItem> {
        self.ids("queue")
            .into_iter()
            .filter_map(|(_, p)| read_json(&p).ok())
            .collect()
    }

    /// Removes every queued (unclaimed) candidate; returns how many.
    pub fn clear_queue(&self) -> usize {
        self.ids("queue")
            .into_iter()
            .filter(|(_, p)| std::fs::remove_file(p).is_ok())
            .count()
    }

    /// Claims the lowest queued trial for `worker`, if any.
    pub fn claim(&self, worker: &str) -> Result<Option<WorkItem>> {
        for (id, path) in self.ids("queue") {
            let claim = self.sub("claims").join(format!("{id}.json"));
            if std::fs::rename(&path, &claim).is_err() {
                // Another worker took it first.
                continue;
            }
            let mut item: WorkItem = read_json(&claim)?;
            item.worker = Some(worker.to_string());
            let text =
                serde_json::to_vec(&item).map_err(|e| CampaignError::Invalid(e.to_string()))?;
            write_atomic(&claim, &text)?;
            return Ok(Some(item));
        }
        Ok(None)
    }

    /// Refreshes the heartbeat of a claim.
    pub fn heartbeat(&self, trial_id: u64) {
        let path = self.sub("claims").join(format!("{trial_id}.json"));
        if let Ok(file) = std::fs::File::options().append(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Every claim, with the age of its heartbeat.
    pub fn claims(&self) -> Vec<Claim> {
        let now = SystemTime::now();
        self.ids("claims")
            .into_iter()
            .filter_map(|(_, p)| {
                let item: WorkItem = read_json(&p).ok()?;
                let modified = p.metadata().and_then(|m| m.modified()).ok()?;
                Some(Claim {
                    item,
                    silent_for: now
                        .duration_since(modified)
                        .unwrap_or_default()
                        .as_secs_f64(),
                })
            })
            .collect()
    }

    /// Queues again every claim whose heartbeat stopped more than `stale` ago, or whose
    /// worker ran on this host and is gone; returns their trial ids.
    pub fn requeue_stale(&self, stale: Duration) -> Vec<u64> {
        let mut requeued = Vec::new();
        for claim in self.claims() {
            let dead = claim
                .item
                .worker
                .as_deref()
                .is_some_and(local_worker_is_gone);
            if claim.silent_for < stale.as_secs_f64() && !dead {
                continue;
            }
            let id = claim.item.trial_id;
            let from = self.sub("claims").join(format!("{id}.json"));
            let to = self.sub("queue").join(format!("{id}.json"));
            let mut item = claim.item;
            item.worker = None;
            if let Ok(text) = serde_json::to_vec(&item) {
                if write_atomic(&to, &text).is_ok() {
                    let _ = std::fs::remove_file(&from);
                    requeued.push(id);
                }
            }
        }
        requeued
    }

    /// Reports a finished trial, then drops its claim.
    pub fn finish(&self, record: &TrialRecord) -> Result<()> {
        let text = serde_json::to_vec(record).map_err(|e| CampaignError::Invalid(e.to_string()))?;
        write_atomic(
            &self.sub("done").join(format!("{}.json", record.trial_id)),
            &text,
        )?;
        let claim = self.sub("claims").join(format!("{}.json", record.trial_id));
        let _ = std::fs::remove_file(claim);
        Ok(())
    }

    /// The finished trials not yet collected, in trial order, with their files.
    pub fn finished(&self) -> Vec<(TrialRecord, PathBuf)> {
        self.ids("done")
            .into_iter()
            .filter_map(|(_, p)| read_json(&p).ok().map(|r| (r, p)))
            .collect()
    }

    /// Forgets a collected trial's file (and any claim or queue entry left for it).
    pub fn collected(&self, trial_id: u64, file: &Path) {
        let _ = std::fs::remove_file(file);
        for sub in ["claims", "queue"] {
            let _ = std::fs::remove_file(self.sub(sub).join(format!("{trial_id}.json")));
        }
    }

    /// The highest trial id anywhere in the folder.
    pub fn max_id(&self) -> Option<u64> {
        ["queue", "claims", "done"]
            .iter()
            .flat_map(|s| self.ids(s))
            .map(|(id, _)| id)
            .max()
    }
}

/// This host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// A worker's id: its host and process id.
pub fn worker_id() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

/// Whether the worker `id` ran on this host and its process is gone.
fn local_worker_is_gone(id: &str) -> bool {
    match id.rsplit_once('-') {
        Some((host, pid)) if host == hostname() => pid.parse().is_ok_and(|pid| !alive(pid)),
        _ => false,
    }
}

/// Whether a process is alive (Linux: its `/proc` entry exists).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64) -> WorkItem {
        WorkItem {
            trial_id: id,
            point: vec![0.5, 1.0],
            strategy: "random".into(),
            generation: None,
            worker: None,
        }
    }

    #[test]
    fn a_claim_is_taken_once_and_a_silent_one_is_queued_again() {
        let tmp = tempfile::tempdir().unwrap();
        let work = WorkDir::open(tmp.path()).unwrap();
        work.enqueue(&item(3)).unwrap();
        work.enqueue(&item(1)).unwrap();
        // The lowest id first, and each only once.
        let a = work.claim("a").unwrap().unwrap();
        let b = work.claim("b").unwrap().unwrap();
        assert_eq!((a.trial_id, b.trial_id), (1, 3));
        assert_eq!(a.worker.as_deref(), Some("a"));
        assert!(work.claim("c").unwrap().is_none());
        assert_eq!(work.claims().len(), 2);
        // Fresh heartbeats are left alone; silent ones go back to the queue.
        assert!(work.requeue_stale(Duration::from_secs(60)).is_empty());
        let old = SystemTime::now() - Duration::from_secs(120);
        let path = tmp.path().join("work/claims/3.json");
        std::fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(work.requeue_stale(Duration::from_secs(60)), vec![3]);
        assert_eq!(work.queued(), vec![item(3)]);
        // A claim whose worker on this host is gone is queued again at once.
        let c = work.claim("c").unwrap().unwrap();
        assert_eq!(c.trial_id, 3);
        let path = tmp.path().join("work/claims/3.json");
        let mut dead = c.clone();
        dead.worker = Some(format!("{}-{}", hostname(), u32::MAX - 1));
        std::fs::write(&path, serde_json::to_vec(&dead).unwrap()).unwrap();
        assert_eq!(work.requeue_stale(Duration::from_secs(60)), vec![3]);
        // A heartbeat keeps a claim fresh.
        work.heartbeat(1);
        assert!(work.claims()[0].silent_for < 5.0);
        // Finishing reports the trial and drops the claim.
        let mut record: TrialRecord = serde_json::from_value(serde_json::json!({
            "trial_id": 1, "state": "complete", "strategy": "random", "generation": null,
            "params": {}, "accuracy": 0.9, "latency_ms": 1.0, "size_bytes": 10,
            "num_params": 1, "nonzeros": 1, "flops": 1, "bops": 1, "duration_s": 0.1,
            "error": null
        }))
        .unwrap();
        work.finish(&record).unwrap();
        assert!(work.claims().is_empty());
        let done = work.finished();
        assert_eq!(done.len(), 1);
        record.duration_s = done[0].0.duration_s;
        assert_eq!(done[0].0, record);
        assert_eq!(work.max_id(), Some(3));
        work.collected(1, &done[0].1);
        assert!(work.finished().is_empty());
        assert_eq!(work.clear_queue(), 1);
        assert_eq!(work.max_id(), None);
    }
}
