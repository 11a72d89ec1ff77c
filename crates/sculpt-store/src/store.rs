//! The campaign directory itself: locking, the journal, the parquet frame and the small
//! JSON records beside them. See the crate documentation for the contract.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use polars::prelude::{ParquetCompression, ParquetWriter};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{io, Result, StoreError};
use crate::frame::trials_frame;
use crate::record::{CampaignMeta, TeacherRecord, TrialRecord};

pub const JOURNAL_FILE: &str = "trials.jsonl";
pub const PARQUET_FILE: &str = "trials.parquet";
pub const CAMPAIGN_FILE: &str = "campaign.json";
pub const TEACHER_FILE: &str = "teacher.json";
/// One line per run of the campaign in the directory: who ran what, where and when.
pub const RUNS_FILE: &str = "runs.jsonl";
const LOCK_FILE: &str = ".lock";

/// An open campaign directory, held by one writer.
pub struct Store {
    dir: PathBuf,
    meta: CampaignMeta,
    trials: Vec<TrialRecord>,
    /// What reading the journal found and set aside (duplicated trial lines).
    warnings: Vec<String>,
    journal: File,
    // Held for its lock; released when the store is dropped.
    _lock: File,
}

impl Store {
    /// Opens `dir` for `meta`'s campaign, creating it if needed and loading the trials a
    /// previous run stored. Fails if another process holds the directory or if it belongs
    /// to a different campaign.
    pub fn open(dir: &Path, meta: CampaignMeta) -> Result<Store> {
        Store::open_with(dir, meta, false)
    }

    /// [`Store::open`]; with `force`, a directory of another campaign is taken over (its
    /// metadata replaced, its trials kept), as `sculpt run --force` asks.
    pub fn open_with(dir: &Path, meta: CampaignMeta, force: bool) -> Result<Store> {
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::NotAFolder(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    lock: lock_path,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path, e)),
        }
        let campaign_path = dir.join(CAMPAIGN_FILE);
        let journal_path = dir.join(JOURNAL_FILE);
        // A folder that holds no trial and no cached teacher has nothing to protect:
        // another campaign (or the same one, corrected) may take it over. A cached teacher
        // belongs to the campaign that trained it, so it keeps the folder locked.
        let holds_work =
            journal_path.metadata().is_ok_and(|m| m.len() > 0) || dir.join("teacher").exists();
        if campaign_path.exists() && holds_work {
            let stored: CampaignMeta = read_json(&campaign_path)?;
            if stored.fingerprint != meta.fingerprint || stored.name != meta.name {
                if force {
                    write_json(&campaign_path, &meta)?;
                } else {
                    let changed = match (&stored.identity, &meta.identity) {
                        (Some(old), Some(new)) => crate::record::identity_changes(old, new),
                        _ => Vec::new(),
                    };
                    return Err(StoreError::OtherCampaign(Box::new(
                        crate::error::OtherCampaign {
                            dir: dir.to_path_buf(),
                            expected: meta.name,
                            expected_fingerprint: meta.fingerprint,
                            found: stored.name,
                            found_fingerprint: stored.fingerprint,
                            changed,
                        },
                    )));
                }
            }
        } else {
            write_json(&campaign_path, &meta)?;
        }
        let (trials, warnings) = read_journal(&journal_path, true)?;
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(|e| io(&journal_path, e))?;
        let store = Store {
            dir: dir.to_path_buf(),
            meta,
            trials,
            warnings,
            journal,
            _lock: lock,
        };
        if !store.trials.is_empty() {
            store.write_parquet()?;
        }
        Ok(store)
    }

    /// Reads a campaign directory without opening it for writing (for reports).
    pub fn read(dir: &Path) -> Result<(CampaignMeta, Vec<TrialRecord>)> {
        let meta: CampaignMeta = read_json(&dir.join(CAMPAIGN_FILE))?;
        let (trials, _) = read_journal(&dir.join(JOURNAL_FILE), false)?;
        Ok((meta, trials))
    }

    /// What opening the journal set aside, one message each: a trial id stored on more
    /// than one line keeps its first line, and each later one is reported here.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &CampaignMeta {
        &self.meta
    }

    /// Every stored trial, in the order they were appended.
    pub fn trials(&self) -> &[TrialRecord] {
        &self.trials
    }

    /// Appends one run's record (any serialisable value) to `runs.jsonl`, synced.
    pub fn append_run<T: Serialize>(&self, run: &T) -> Result<()> {
        let path = self.dir.join(RUNS_FILE);
        let mut line = serde_json::to_string(run).map_err(|e| StoreError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        line.push('\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        file.write_all(line.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| io(&path, e))
    }

    /// Appends a finished trial durably, then refreshes `trials.parquet`. The journal is
    /// the truth: when the frame cannot be refreshed (a full disk, a permission), the
    /// trial is still stored, the failure is added to [`Store::warnings`], and the next
    /// refresh rebuilds the whole frame from the journal.
    pub fn append(&mut self, trial: TrialRecord) -> Result<()> {
        if self.trials.iter().any(|t| t.trial_id == trial.trial_id) {
            return Err(StoreError::DuplicateTrial(trial.trial_id));
        }
        let path = self.dir.join(JOURNAL_FILE);
        let mut line = serde_json::to_string(&trial).map_err(|e| StoreError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        line.push('\n');
        let before = self.journal.metadata().map(|m| m.len()).ok();
        if let Err(e) = self
            .journal
            .write_all(line.as_bytes())
            .and_then(|_| self.journal.sync_data())
        {
            // A line written in part is cut off again, so the journal ends on a whole
            // line (reading would also drop a torn tail, but a later append must not
            // follow one).
            if let Some(len) = before {
                let _ = self.journal.set_len(len);
                let _ = self.journal.sync_all();
            }
            let full = matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            );
            return Err(if full {
                StoreError::DiskFull {
                    path,
                    trial: trial.trial_id,
                    stored: self.trials.len(),
                    cause: e,
                }
            } else {
                io(&path, e)
            });
        }
        self.trials.push(trial);
        if let Err(e) = self.write_parquet() {
            let _ = std::fs::remove_file(self.dir.join(format!("{PARQUET_FILE}.tmp")));
            self.warnings.push(format!(
                "could not refresh {}: {e}; the trial is stored in {JOURNAL_FILE}, and the frame is rebuilt from it at the next refresh",
                self.dir.join(PARQUET_FILE).display()
            ));
        }
        Ok(())
    }

    fn write_parquet(&self) -> Result<()> {
        let mut frame = trials_frame(&self.meta.columns, &self.trials)?;
        let path = self.dir.join(PARQUET_FILE);
        let tmp = self.dir.join(format!("{PARQUET_FILE}.tmp"));
        let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Snappy)
            .finish(&mut frame)?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        sync_dir(&self.dir)
    }

    pub fn write_teacher(&self, teacher: &TeacherRecord) -> Result<()> {
        write_json(&self.dir.join(TEACHER_FILE), teacher)
    }

    pub fn read_teacher(dir: &Path) -> Result<TeacherRecord> {
        read_json(&dir.join(TEACHER_FILE))
    }
}

/// Reads the journal. A last line without its newline is a write that was never
/// acknowledged (the process died mid-append); with `repair` it is cut off, otherwise it is
/// skipped. Any other unreadable line is corruption and is reported by line number. A trial
/// id on a second line (a copied or replayed line) is dropped, keeping the first, and
/// reported among the warnings.
fn read_journal(path: &Path, repair: bool) -> Result<(Vec<TrialRecord>, Vec<String>)> {
    if !path.exists() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut first_line: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut warnings = Vec::new();
    let file = File::open(path).map_err(|e| io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut trials = Vec::new();
    let mut good_bytes = 0u64;
    // Bytes, not a String: a torn tail may cut a multi-byte character in half.
    let mut line: Vec<u8> = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io(path, e))?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.last() != Some(&b'\n') {
            if repair {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| io(path, e))?;
                file.set_len(good_bytes).map_err(|e| io(path, e))?;
                file.sync_all().map_err(|e| io(path, e))?;
            }
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            good_bytes += read as u64;
            continue;
        }
        let trial: TrialRecord =
            serde_json::from_slice(&line).map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                line: number,
                message: e.to_string(),
            })?;
        good_bytes += read as u64;
        if let Some(first) = first_line.get(&trial.trial_id) {
            warnings.push(format!(
                "{}: line {number} repeats trial {} of line {first}; the first is kept",
                path.display(),
                trial.trial_id
            ));
            continue;
        }
        first_line.insert(trial.trial_id, number);
        trials.push(trial);
    }
    Ok((trials, warnings))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    serde_json::from_str(&text).map_err(|e| StoreError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes JSON through a temporary file and a rename, synced, so the old file stays whole
/// until the new one is complete.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| StoreError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Syncs a directory, so that a rename into it survives a power loss (the rename is
/// durable only once the directory's entry is).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TrialState;

    fn meta() -> CampaignMeta {
        CampaignMeta {
            identity: None,
            name: "t".into(),
            fingerprint: "abc".into(),
            layers: vec!["fc1".into(), "fc2".into()],
            columns: [
                "temperature",
                "importance",
                "prune_fc1",
                "prune_fc2",
                "bits_fc1",
                "bits_fc2",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    fn trial(id: u64, state: TrialState) -> TrialRecord {
        TrialRecord {
            trial_id: id,
            state,
            strategy: "random".into(),
            generation: None,
            params: [
                ("temperature", serde_json::json!(4.0)),
                ("importance", serde_json::json!("l2")),
                ("prune_fc1", serde_json::json!(0.25)),
                ("prune_fc2", serde_json::json!(0.0)),
                ("bits_fc1", serde_json::json!(4)),
                ("bits_fc2", serde_json::json!(8)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            accuracy: (state == TrialState::Complete).then_some(0.95),
            latency_ms: Some(0.01),
            size_bytes: Some(1000),
            num_params: Some(10),
            nonzeros: Some(8),
            flops: Some(20),
            bops: Some(640),
            duration_s: 1.5,
            error: (state == TrialState::Failed).then(|| "loss became NaN".to_string()),
            fidelity: None,
            rungs: Vec::new(),
        }
    }

    /// A frame that cannot be written does not lose the trial or stop the campaign: the
    /// journal holds it, and the next refresh rebuilds the whole frame.
    #[test]
    fn a_failed_frame_refresh_keeps_the_trial_and_is_rebuilt_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), meta()).unwrap();
        store.append(trial(0, TrialState::Complete)).unwrap();
        // The frame's path taken by a folder: the rename fails.
        let frame = dir.path().join(PARQUET_FILE);
        std::fs::remove_file(&frame).unwrap();
        std::fs::create_dir(&frame).unwrap();
        std::fs::write(frame.join("x"), "x").unwrap();
        store.append(trial(1, TrialState::Complete)).unwrap();
        assert_eq!(store.trials().len(), 2);
        assert_eq!(store.warnings().len(), 1);
        assert!(
            store.warnings()[0].contains("could not refresh"),
            "{:?}",
            store.warnings()
        );
        std::fs::remove_dir_all(&frame).unwrap();
        store.append(trial(2, TrialState::Complete)).unwrap();
        let file = File::open(&frame).unwrap();
        use polars::prelude::SerReader;
        let back = polars::prelude::ParquetReader::new(file).finish().unwrap();
        assert_eq!(back.height(), 3);
        drop(store);
        let (_, trials) = Store::read(dir.path()).unwrap();
        assert_eq!(trials.len(), 3);
    }

    #[test]
    fn a_duplicated_journal_line_keeps_the_first_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), meta()).unwrap();
            store.append(trial(0, TrialState::Complete)).unwrap();
            store.append(trial(1, TrialState::Complete)).unwrap();
            assert!(store.warnings().is_empty());
        }
        // A copied line, as an editor or a replayed write would leave it, with a change.
        let path = dir.path().join(JOURNAL_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text
            .lines()
            .next()
            .unwrap()
            .replace("\"complete\"", "\"failed\"");
        std::fs::write(&path, format!("{text}{first}\n")).unwrap();
        let store = Store::open(dir.path(), meta()).unwrap();
        assert_eq!(store.trials().len(), 2);
        assert_eq!(store.trials()[0].state, TrialState::Complete);
        assert_eq!(store.warnings().len(), 1);
        assert!(
            store.warnings()[0].contains("line 3 repeats trial 0 of line 1"),
            "{:?}",
            store.warnings()
        );
        drop(store);
        let (_, trials) = Store::read(dir.path()).unwrap();
        assert_eq!(trials.len(), 2);
    }

    #[test]
    fn appends_survive_reopen_and_torn_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), meta()).unwrap();
            store.append(trial(0, TrialState::Complete)).unwrap();
            store.append(trial(1, TrialState::Failed)).unwrap();
            assert_eq!(store.trials().len(), 2);
            assert!(matches!(
                store.append(trial(1, TrialState::Complete)),
                Err(StoreError::DuplicateTrial(1))
            ));
            // A second writer is refused while the first holds the directory.
            assert!(matches!(
                Store::open(dir.path(), meta()),
                Err(StoreError::Locked { .. })
            ));
        }
        // Simulate a crash in the middle of a third append.
        let journal = dir.path().join(JOURNAL_FILE);
        let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
        f.write_all("{\"trial_id\": 2, \"error\": \"donn\u{e9}".as_bytes())
            .unwrap();
        f.write_all(&[0xc3]).unwrap(); // half of a two-byte character
        drop(f);
        let store = Store::open(dir.path(), meta()).unwrap();
        assert_eq!(
            store.trials(),
            &[trial(0, TrialState::Complete), trial(1, TrialState::Failed)]
        );
        drop(store);
        let text = std::fs::read_to_string(&journal).unwrap();
        assert!(text.ends_with("}\n"));

        let (_, read) = Store::read(dir.path()).unwrap();
        assert_eq!(read.len(), 2);
    }

    #[test]
    fn other_campaign_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A folder with no trial yet is not locked to its first campaign.
        drop(Store::open(dir.path(), meta()).unwrap());
        let mut corrected = meta();
        corrected.fingerprint = "abd".into();
        drop(Store::open(dir.path(), corrected).unwrap());
        drop(Store::open(dir.path(), meta()).unwrap());
        // Once it holds a trial, it is.
        Store::open(dir.path(), meta())
            .unwrap()
            .append(trial(0, TrialState::Complete))
            .unwrap();
        let mut other = meta();
        other.fingerprint = "def".into();
        let err = Store::open(dir.path(), other).err().unwrap().to_string();
        assert!(err.contains("abc") && err.contains("def"), "{err}");
    }

    #[test]
    fn corrupt_middle_line_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), meta()).unwrap());
        std::fs::write(dir.path().join(JOURNAL_FILE), "garbage\n{}\n").unwrap();
        let err = Store::open(dir.path(), meta()).err().unwrap().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    /// A full disk (the kernel's ENOSPC, from /dev/full) while storing a trial gives one
    /// clear error, and leaves the journal and the trials stored before it whole.
    #[test]
    fn a_full_disk_stops_with_a_clear_error_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), meta()).unwrap();
        store.append(trial(0, TrialState::Complete)).unwrap();
        store.append(trial(1, TrialState::Failed)).unwrap();
        let journal = std::fs::read(dir.path().join(JOURNAL_FILE)).unwrap();
        store.journal = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let err = store.append(trial(2, TrialState::Complete)).unwrap_err();
        assert!(matches!(
            err,
            StoreError::DiskFull {
                trial: 2,
                stored: 2,
                ..
            }
        ));
        let message = err.to_string();
        assert!(message.contains("is full"), "{message}");
        assert!(
            message.contains("2 trials stored before it are intact"),
            "{message}"
        );
        assert!(message.contains("trials.jsonl"), "{message}");
        assert_eq!(store.trials().len(), 2);
        drop(store);
        assert_eq!(
            std::fs::read(dir.path().join(JOURNAL_FILE)).unwrap(),
            journal
        );
        let store = Store::open(dir.path(), meta()).unwrap();
        assert_eq!(store.trials().len(), 2);
        assert!(store.warnings().is_empty());
    }

    #[test]
    fn frame_has_documented_columns() {
        let frame = trials_frame(
            &meta().columns,
            &[trial(0, TrialState::Complete), trial(1, TrialState::Failed)],
        )
        .unwrap();
        let names: Vec<String> = frame
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "trial_id",
                "state",
                "strategy",
                "generation",
                "temperature",
                "importance",
                "prune_fc1",
                "prune_fc2",
                "bits_fc1",
                "bits_fc2",
                "accuracy",
                "latency_ms",
                "size_bytes",
                "params",
                "nonzeros",
                "flops",
                "bops",
                "duration_s",
                "error",
                "fidelity",
                "rungs"
            ]
        );
        assert_eq!(frame.height(), 2);
        assert_eq!(frame.column("accuracy").unwrap().null_count(), 1);
        // Parameter columns take their values' types: ints, floats and text.
        use polars::prelude::DataType;
        assert_eq!(frame.column("bits_fc1").unwrap().dtype(), &DataType::Int64);
        assert_eq!(
            frame.column("prune_fc1").unwrap().dtype(),
            &DataType::Float64
        );
        assert_eq!(
            frame.column("importance").unwrap().dtype(),
            &DataType::String
        );
    }
}
