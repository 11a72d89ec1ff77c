//! Rebuilding a stored trial after its campaign ended: the campaign as it ran (from the
//! copy of its file that `run` keeps in the folder), the trial's plan, and its student,
//! compressed from the teacher and fine-tuned with the trial's own seed, exactly as the
//! trial was. The report re-scores the Pareto configurations this way on the test split
//! (held-out truth), and `export` writes the rebuilt student.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sculpt_nn::Graph;
use sculpt_store::{Store, TrialRecord};
use serde::{Deserialize, Serialize};

use crate::config::{Campaign, TeacherSource};
use crate::error::{CampaignError, Result};

/// The copy of the campaign file that `run` keeps in its folder.
pub const CAMPAIGN_COPY: &str = "campaign.toml";
/// The cache of test-split scores of rebuilt trials.
pub const HELDOUT_FILE: &str = "heldout.json";

/// Where the campaign file was and which seed the last run used, from `runs.jsonl`
/// (runs of older versions recorded the seed only at their end).
fn last_start(dir: &Path) -> (Option<PathBuf>, Option<u64>) {
    let mut records = crate::report::runs(dir);
    records.reverse();
    let file = records.iter().find_map(|v| {
        v.get("campaign_file")
            .and_then(|p| p.as_str())
            .map(PathBuf::from)
    });
    let seed = records
        .iter()
        .find_map(|v| v.get("seed").and_then(|s| s.as_u64()));
    (file, seed)
}

/// The campaign whose trials `dir` holds: `file` when given, else the copy `run` keeps
/// in the folder (its relative paths resolve against where the original was). Its
/// fingerprint must be the folder's, so a plan rebuilt from it is the plan the trial ran.
pub fn campaign_of(dir: &Path, file: Option<&Path>) -> Result<Campaign> {
    let (meta, _) = Store::read(dir)?;
    let (original, seed) = last_start(dir);
    let mut campaign = match file {
        Some(f) => Campaign::load(f)?,
        None => {
            let copy = dir.join(CAMPAIGN_COPY);
            let text = std::fs::read_to_string(&copy).map_err(|_| {
                CampaignError::Invalid(format!(
                    "{} has no copy of its campaign file ({CAMPAIGN_COPY}; runs before this \
                     version kept none): pass the campaign file with --campaign FILE",
                    dir.display()
                ))
            })?;
            let at = original.unwrap_or_else(|| copy.clone());
            Campaign::parse(&text, &at).map_err(|e| {
                CampaignError::Invalid(format!(
                    "{} (the copy of the campaign file in {}; its line numbers are the copy's): {e}",
                    copy.display(),
                    dir.display()
                ))
            })?
        }
    };
    if let Some(seed) = seed {
        campaign.set_seed(seed);
    }
    let fingerprint = crate::executor::fingerprint(&campaign)?;
    if fingerprint != meta.fingerprint {
        return Err(CampaignError::Invalid(format!(
            "{} holds trials of campaign `{}` (fingerprint {}), but the campaign file{} gives \
             fingerprint {fingerprint}: it, its teacher or its lookup table changed since the \
             trials ran, so their plans cannot be rebuilt from it",
            dir.display(),
            meta.name,
            meta.fingerprint,
            file.map(|f| format!(" {}", f.display()))
                .unwrap_or_default(),
        )));
    }
    Ok(campaign)
}

/// The teacher a campaign distils from: its weights directory, or the zoo model it trained
/// into `dir/teacher`.
pub fn teacher_of(campaign: &Campaign, dir: &Path) -> Result<(PathBuf, Graph)> {
    let at = match &campaign.teacher {
        TeacherSource::Weights(w) => w.clone(),
        TeacherSource::Zoo { .. } => dir.join("teacher"),
    };
    let graph = crate::teacher::weights_graph(&at, campaign.teacher_preprocessing.as_ref())?;
    Ok((at, graph))
}

/// What a rebuild needs once per campaign: the campaign, its data, teacher and the
/// teacher's logits on the training split.
pub struct Workshop {
    pub dir: PathBuf,
    pub campaign: Campaign,
    pub splits: sculpt_data::Splits,
    pub teacher_dir: PathBuf,
    pub teacher: Graph,
    pub trials: Vec<TrialRecord>,
    /// Why a rebuilt trial may differ slightly from the stored one.
    pub warnings: Vec<String>,
    logits: Option<candle_core::Tensor>,
}

/// A warning when the trials ran on another build of sculpt: fine-tuning is reproducible
/// with the same build and thread count, and float arithmetic of another build (a new
/// GEMM kernel) moves a rebuilt student's scores by a few hundredths of a point.
fn build_warning(dir: &Path) -> Option<String> {
    let ran = crate::report::runs(dir).into_iter().rev().find_map(|v| {
        v.get("git_commit")
            .and_then(|c| c.as_str())
            .map(str::to_string)
    })?;
    let now = env!("SCULPT_GIT_COMMIT");
    (ran != now && ran != "unknown" && now != "unknown").then(|| {
        format!(
            "the trials ran on sculpt {ran} and this is {now}: a rebuilt trial's accuracy may differ from the stored one by float rounding"
        )
    })
}

impl Workshop {
    pub fn open(dir: &Path, file: Option<&Path>) -> Result<Workshop> {
        let campaign = campaign_of(dir, file)?;
        let (splits, data_warning) = crate::executor::campaign_splits(&campaign)?;
        let (teacher_dir, teacher) = teacher_of(&campaign, dir)?;
        let (_, trials) = Store::read(dir)?;
        // The fingerprint covers a teacher given as weights, not one the campaign trained
        // into its folder: check that one against the accuracy the campaign stored.
        let stored = Store::read_teacher(dir)?;
        let now = crate::executor::runtime_accuracy(&teacher, &splits.val)?;
        if (now - stored.accuracy).abs() > 0.005 {
            return Err(CampaignError::Invalid(format!(
                "the teacher in {} scores {:.2}% on the validation split, but the campaign stored {:.2}% for it: the teacher or the data changed since the trials ran, so they cannot be rebuilt",
                teacher_dir.display(),
                now * 100.0,
                stored.accuracy * 100.0
            )));
        }
        Ok(Workshop {
            dir: dir.to_path_buf(),
            campaign,
            splits,
            teacher_dir,
            teacher,
            trials,
            warnings: build_warning(dir).into_iter().chain(data_warning).collect(),
            logits: None,
        })
    }

    pub fn trial(&self, trial_id: u64) -> Result<&TrialRecord> {
        self.trials
            .iter()
            .find(|t| t.trial_id == trial_id)
            .ok_or_else(|| {
                CampaignError::Invalid(format!(
                    "{} has no trial {trial_id} (it has {} trials, 0 to {})",
                    self.dir.display(),
                    self.trials.len(),
                    self.trials.len().saturating_sub(1)
                ))
            })
    }

    /// Compresses the teacher by trial `trial_id`'s plan and fine-tunes it with the
    /// trial's seed and the campaign's schedule, as the trial did; returns the student.
    pub fn rebuild(
        &mut self,
        trial_id: u64,
        on_epoch: &mut dyn FnMut(&sculpt_nn::EpochStats),
    ) -> Result<Graph> {
        let trial = self.trial(trial_id)?.clone();
        if !trial.is_complete() {
            return Err(CampaignError::Invalid(format!(
                "trial {trial_id} of {} is {}, not complete: only complete trials have a \
                 fine-tuned student to rebuild",
                self.dir.display(),
                trial.state.as_str()
            )));
        }
        let (plan, mut finetune) = crate::standalone::trial_plan_in(
            &self.campaign,
            &self.teacher.spec,
            &trial,
            &self.dir,
        )?;
        // The trial's own seed, as the executor derives it.
        finetune.seed = crate::executor::trial_seed(&self.campaign, trial_id);
        let compressed = sculpt_compress::compress(&self.teacher, &plan, Some(&self.splits.train))?;
        if finetune.epochs == 0 {
            return Ok(compressed);
        }
        if self.logits.is_none() {
            self.logits = Some(sculpt_nn::predict_logits(
                &self.teacher,
                &self.splits.train,
            )?);
        }
        let (student, _) = sculpt_compress::finetune_plan(
            &self.teacher,
            &compressed,
            &plan,
            &self.splits.train,
            self.logits.as_ref().expect("computed above"),
            &finetune,
            on_epoch,
            None,
        )?;
        Ok(student)
    }
}

/// A rebuilt student must score on validation what its trial stored, up to the float
/// rounding of another build or thread count; anything more means the inputs changed.
fn check_rebuilt(trial_id: u64, stored: f64, rebuilt: f64) -> Result<()> {
    if (stored - rebuilt).abs() > 0.01 {
        return Err(CampaignError::Invalid(format!(
            "trial {trial_id} rebuilt scores {:.2}% on the validation split but stored {:.2}%: its teacher, data or plan changed since it ran, so the rebuild is not that trial (nothing was written)",
            rebuilt * 100.0,
            stored * 100.0
        )));
    }
    Ok(())
}

/// A rebuilt trial scored on both held-out splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    pub trial_id: u64,
    /// The validation accuracy the trial stored.
    pub stored_val_accuracy: f64,
    /// The rebuilt student's validation accuracy (equal to the stored one up to the
    /// float arithmetic of another thread count).
    pub val_accuracy: f64,
    pub test_accuracy: f64,
}

/// The file `heldout.json`: the campaign's fingerprint, the teacher's test accuracy, and
/// each rebuilt trial's scores.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeldOutCache {
    pub fingerprint: String,
    pub teacher_test_accuracy: Option<f64>,
    pub trials: BTreeMap<u64, HeldOut>,
    /// What the caller should tell the user (a cache that could not be used).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl HeldOutCache {
    /// The cache of `dir`, empty when absent or written for another fingerprint.
    pub fn read(dir: &Path, fingerprint: &str) -> HeldOutCache {
        Self::read_checked(dir, fingerprint).0
    }

    /// The cache of `dir`, and a warning when a file was there but could not be used
    /// (unreadable, not a cache, or holding impossible accuracies): its scores are
    /// computed again.
    pub fn read_checked(dir: &Path, fingerprint: &str) -> (HeldOutCache, Option<String>) {
        let empty = HeldOutCache {
            fingerprint: fingerprint.to_string(),
            ..Default::default()
        };
        let path = dir.join(HELDOUT_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return (empty, None);
        };
        match serde_json::from_str::<HeldOutCache>(&text) {
            Err(e) => (
                empty,
                Some(format!(
                    "{} is not a readable cache ({e}); its test scores are computed again",
                    path.display()
                )),
            ),
            Ok(c) if c.fingerprint != fingerprint => (empty, None),
            Ok(c) => {
                let sane = |a: f64| (0.0..=1.0).contains(&a);
                let bad = c.trials.values().any(|h| {
                    !(sane(h.val_accuracy) && sane(h.test_accuracy) && sane(h.stored_val_accuracy))
                }) || c.teacher_test_accuracy.is_some_and(|a| !sane(a));
                if bad {
                    (
                        empty,
                        Some(format!(
                            "{} holds accuracies outside [0, 1]; its test scores are computed again",
                            path.display()
                        )),
                    )
                } else {
                    (c, None)
                }
            }
        }
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| CampaignError::Invalid(e.to_string()))?;
        Ok(sculpt_nn::io::write_atomic(
            &dir.join(HELDOUT_FILE),
            text.as_bytes(),
        )?)
    }
}

/// Scores trials `ids` of the campaign in `dir` on the test split, rebuilding each from
/// its plan and seed; results are cached in `dir/heldout.json`, so a second report costs
/// nothing. `progress(done, total, trial)` is called before each rebuild.
pub fn held_out(
    dir: &Path,
    file: Option<&Path>,
    ids: &[u64],
    progress: &mut dyn FnMut(usize, usize, u64),
) -> Result<HeldOutCache> {
    let (meta, _) = Store::read(dir)?;
    let (mut cache, warning) = HeldOutCache::read_checked(dir, &meta.fingerprint);
    if let Some(w) = warning {
        tracing::warn!("{w}");
        cache.warnings.push(w);
    }
    let missing: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| !cache.trials.contains_key(id))
        .collect();
    if missing.is_empty() && cache.teacher_test_accuracy.is_some() {
        return Ok(cache);
    }
    let mut shop = Workshop::open(dir, file)?;
    if cache.teacher_test_accuracy.is_none() {
        cache.teacher_test_accuracy = Some(crate::executor::runtime_accuracy(
            &shop.teacher,
            &shop.splits.test,
        )?);
    }
    for (k, &id) in missing.iter().enumerate() {
        progress(k, missing.len(), id);
        let stored = shop.trial(id)?.accuracy.unwrap_or(f64::NAN);
        let student = shop.rebuild(id, &mut |_| {})?;
        let val_accuracy = crate::executor::runtime_accuracy(&student, &shop.splits.val)?;
        check_rebuilt(id, stored, val_accuracy)?;
        cache.trials.insert(
            id,
            HeldOut {
                trial_id: id,
                stored_val_accuracy: stored,
                val_accuracy,
                test_accuracy: crate::executor::runtime_accuracy(&student, &shop.splits.test)?,
            },
        );
        // Written after each trial, so an interrupted report keeps what it computed.
        cache.write(dir)?;
    }
    progress(missing.len(), missing.len(), u64::MAX);
    cache.write(dir)?;
    Ok(cache)
}

/// What `export` writes to `OUT/metrics.json`. Accuracies are fractions in [0, 1];
/// `sculpt eval --model OUT` reproduces `val_accuracy`, `test_accuracy`, `size_bytes`
/// and (within the noise of a measurement) `latency_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportMetrics {
    pub campaign: String,
    pub trial_id: u64,
    pub data: String,
    /// The seed the data was split with (`eval` reads it, so it scores the same splits).
    pub seed: u64,
    /// The trial's fine-tuning seed.
    pub finetune_seed: u64,
    /// The validation accuracy the trial stored, and the rebuilt model's.
    pub stored_accuracy: f64,
    pub val_accuracy: f64,
    pub test_accuracy: f64,
    pub teacher_test_accuracy: f64,
    /// Size as the campaign counts it (codes at their bit widths, scales, zero points,
    /// sparse indices, f32 biases), the trial's stored figure, and the bytes of
    /// `model.safetensors` (which also holds its header and stores sparse weights densely).
    pub size_bytes: u64,
    pub stored_size_bytes: Option<u64>,
    pub file_bytes: u64,
    /// Measured by sculpt's runtime at batch 1 on 1 thread (median and p90 of 200 runs).
    pub latency_ms: f64,
    pub latency_p90_ms: f64,
    /// The trial's latency under the campaign's latency model, and that model.
    pub stored_latency_ms: Option<f64>,
    pub latency_model: String,
    pub params: u64,
    pub flops: u64,
    /// The weights stored as packed integer codes, by name, with their bit widths.
    pub packed: BTreeMap<String, u32>,
    /// Bytes of `model.onnx`, when it was written (`--format onnx`). Widths under 8 bits
    /// are stored there in 8-bit containers, so it is larger than `size_bytes` counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx_bytes: Option<u64>,
    /// The input preprocessing the model expects (for ONNX users too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<sculpt_nn::Preprocessing>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The ONNX file `export --format onnx` writes.
pub const ONNX_FILE: &str = "model.onnx";

/// Rebuilds trial `trial_id` of the campaign in `dir` and writes it to `out`: the model
/// (`model.toml`, and `model.safetensors` with quantized weights as packed integer codes,
/// scales and zero points), the plan (`plan.toml`) and `metrics.json`.
pub fn export(
    dir: &Path,
    file: Option<&Path>,
    trial_id: u64,
    out: &Path,
    onnx: bool,
    on_epoch: &mut dyn FnMut(&sculpt_nn::EpochStats),
) -> Result<ExportMetrics> {
    let mut shop = Workshop::open(dir, file)?;
    let trial = shop.trial(trial_id)?.clone();
    let mut student = shop.rebuild(trial_id, on_epoch)?;
    // The inputs the trial was fine-tuned and scored on, recorded in the model even when
    // its teacher (from before models declared it) did not.
    if student.spec.preprocessing.is_none() {
        student.spec.preprocessing = Some(shop.splits.preprocessing.clone());
    }
    check_rebuilt(
        trial_id,
        trial.accuracy.unwrap_or(f64::NAN),
        crate::executor::runtime_accuracy(&student, &shop.splits.val)?,
    )?;
    let (plan, _) =
        crate::standalone::trial_plan_in(&shop.campaign, &shop.teacher.spec, &trial, dir)?;
    let packed = sculpt_compress::pack(&student)?;
    let file_bytes = sculpt_nn::io::save_packed(&student, &packed, out)?;
    // The same model as ONNX: plain dense layers, quantized weights in QDQ form.
    let onnx_bytes = if onnx {
        Some(
            sculpt_onnx::write_model(&student, &packed, &out.join(ONNX_FILE)).map_err(|e| {
                CampaignError::Invalid(format!("writing {}: {e}", out.join(ONNX_FILE).display()))
            })?,
        )
    } else {
        None
    };
    let plan_text = toml::to_string(&plan).map_err(|e| CampaignError::Invalid(e.to_string()))?;
    sculpt_nn::io::write_atomic(&out.join("plan.toml"), plan_text.as_bytes())?;
    // What is measured is what was written: the model read back from OUT.
    let written = sculpt_nn::io::load(out)?;
    let measured = sculpt_latency::measure(&written, &sculpt_latency::MeasureSettings::default())?;
    let accounting = sculpt_compress::account(&written)?;
    let latency = crate::executor::latency_model(&shop.campaign)?;
    let metrics = ExportMetrics {
        campaign: shop.campaign.name.clone(),
        trial_id,
        data: shop.campaign.data.clone(),
        seed: shop.campaign.seed,
        finetune_seed: crate::executor::trial_seed(&shop.campaign, trial_id),
        stored_accuracy: trial.accuracy.unwrap_or(f64::NAN),
        val_accuracy: crate::executor::runtime_accuracy(&written, &shop.splits.val)?,
        test_accuracy: crate::executor::runtime_accuracy(&written, &shop.splits.test)?,
        teacher_test_accuracy: crate::executor::runtime_accuracy(&shop.teacher, &shop.splits.test)?,
        size_bytes: accounting.size_bytes,
        stored_size_bytes: trial.size_bytes,
        file_bytes,
        latency_ms: measured.median_ms,
        latency_p90_ms: measured.p90_ms,
        stored_latency_ms: trial.latency_ms,
        latency_model: latency.describe(),
        params: accounting.params,
        flops: accounting.flops,
        packed: packed.iter().map(|(k, p)| (k.clone(), p.bits)).collect(),
        onnx_bytes,
        preprocessing: written.spec.preprocessing.clone(),
        warnings: shop.warnings.clone(),
    };
    let json = serde_json::to_string_pretty(&metrics)
        .map_err(|e| CampaignError::Invalid(e.to_string()))?;
    sculpt_nn::io::write_atomic(&out.join(sculpt_nn::io::METRICS_FILE), json.as_bytes())?;
    Ok(metrics)
}

/// The trial `select` wrote to `dir/selected.toml`, checked against the folder: the
/// same campaign, and the trial's stored parameters.
pub fn selected_trial(dir: &Path) -> Result<u64> {
    let path = dir.join(SELECTED_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CampaignError::Invalid(if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{} has no {SELECTED_FILE}: run `sculpt select {} --max-latency-ms X` first, or name a trial with --trial N",
                dir.display(),
                dir.display()
            )
        } else {
            format!("{}: {e}", path.display())
        })
    })?;
    let value: toml::Value = toml::from_str(&text)
        .map_err(|e| CampaignError::Invalid(format!("{}: {e}", path.display())))?;
    let id = value
        .get("trial_id")
        .and_then(|v| v.as_integer())
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| {
            CampaignError::Invalid(format!("{}: no integer `trial_id`", path.display()))
        })?;
    let (meta, trials) = Store::read(dir)?;
    let named = value.get("campaign").and_then(|c| c.as_str());
    if named.is_some_and(|n| n != meta.name) {
        return Err(CampaignError::Invalid(format!(
            "{} names campaign `{}`, but {} holds campaign `{}`; run `sculpt select` again",
            path.display(),
            named.unwrap_or_default(),
            dir.display(),
            meta.name
        )));
    }
    if let (Some(params), Some(trial)) = (
        value.get("params").and_then(|p| p.as_table()),
        trials.iter().find(|t| t.trial_id == id),
    ) {
        for (k, v) in params {
            let stored = trial.params.get(k).and_then(|s| s.as_f64());
            let given = v.as_float().or(v.as_integer().map(|i| i as f64));
            if stored
                .zip(given)
                .is_none_or(|(a, b)| (a - b).abs() > 1e-9 * a.abs().max(1.0))
            {
                return Err(CampaignError::Invalid(format!(
                    "{}: `{k}` = {v} is not trial {id}'s stored value; the file was edited or belongs to another campaign: run `sculpt select` again",
                    path.display()
                )));
            }
        }
    }
    Ok(id)
}

/// Refuses an export folder that would overwrite something else: the campaign folder, its
/// teacher, or a folder holding files other than an earlier export.
pub fn check_export_out(dir: &Path, out: &Path) -> Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (d, o) = (canon(dir), canon(out));
    if o == d || o.starts_with(d.join("teacher")) || d.starts_with(&o) {
        return Err(CampaignError::Invalid(format!(
            "--out {} would write into the campaign folder {} or its teacher; choose a new folder",
            out.display(),
            dir.display()
        )));
    }
    if out.is_file() {
        return Err(CampaignError::Invalid(format!(
            "--out {} is a file; export writes a folder",
            out.display()
        )));
    }
    let earlier_export = std::fs::read_to_string(out.join(sculpt_nn::io::METRICS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<ExportMetrics>(&t).ok())
        .is_some();
    let occupied = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if occupied && !earlier_export {
        return Err(CampaignError::Invalid(format!(
            "--out {} is a folder with other files in it (not an earlier export); choose an empty or new folder",
            out.display()
        )));
    }
    Ok(())
}

/// What `select` writes.
pub const SELECTED_FILE: &str = "selected.toml";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_heldout_cache_is_dropped_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HELDOUT_FILE);
        // Absent: empty, no warning.
        let (c, w) = HeldOutCache::read_checked(dir.path(), "fp");
        assert!(c.trials.is_empty() && w.is_none());
        // Not JSON of a cache.
        std::fs::write(&path, "{\"fingerprint\": 5").unwrap();
        let (c, w) = HeldOutCache::read_checked(dir.path(), "fp");
        assert!(c.trials.is_empty() && w.unwrap().contains("not a readable cache"));
        // An impossible accuracy.
        let mut good = HeldOutCache {
            fingerprint: "fp".into(),
            teacher_test_accuracy: Some(0.97),
            ..Default::default()
        };
        good.trials.insert(
            3,
            HeldOut {
                trial_id: 3,
                stored_val_accuracy: 0.95,
                val_accuracy: 0.95,
                test_accuracy: 0.96,
            },
        );
        good.write(dir.path()).unwrap();
        let (c, w) = HeldOutCache::read_checked(dir.path(), "fp");
        assert_eq!(c.trials.len(), 1);
        assert!(w.is_none());
        // Another campaign's cache is ignored quietly.
        assert!(HeldOutCache::read(dir.path(), "other").trials.is_empty());
        good.trials.get_mut(&3).unwrap().test_accuracy = 7.5;
        good.write(dir.path()).unwrap();
        let (c, w) = HeldOutCache::read_checked(dir.path(), "fp");
        assert!(c.trials.is_empty() && w.unwrap().contains("outside [0, 1]"));
    }

    #[test]
    fn rebuilt_scores_must_match_the_stored_ones() {
        assert!(check_rebuilt(1, 0.97, 0.9702).is_ok());
        let e = check_rebuilt(1, 0.97, 0.75).unwrap_err().to_string();
        assert!(e.contains("changed since it ran"), "{e}");
    }
}
