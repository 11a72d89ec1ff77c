//! The executor: the one loop that runs a campaign. It alone asks the strategy, evaluates
//! the candidate (compress, fine-tune, score), stores the trial, tells the strategy,
//! reports to observers, honours the time limit and writes the report at the end. A trial
//! that fails is stored as failed with its reason, and the campaign goes on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::Tensor;
use sculpt_latency::LatencyModel;
use sculpt_nn::{Dataset, Graph, GraphSpec, Splits};
use sculpt_search::{AutoSettings, GpSettings, Point, Strategy};
use sculpt_store::{CampaignMeta, Store, TeacherRecord, TrialRecord, TrialState};

use crate::config::{Campaign, LatencyChoice, Objective, TeacherSource};
use crate::error::{CampaignError, Result};
use crate::observe::{Observer, Progress};
use crate::space::{search_space, trial_view, CampaignSpace};

/// The file whose appearance in the output folder stops a campaign after the trial in
/// flight.
pub const STOP_FILE: &str = "STOP";

/// The start of a run, as `runs.jsonl` records it (the end follows as a [`RunRecord`]):
/// what `sculpt status` reads while the run goes on.
#[derive(Debug, Clone, serde::Serialize)]
struct RunStart {
    event: &'static str,
    campaign: String,
    pid: u32,
    started: f64,
    /// The trial count and the time limit of this run (flags may override the file).
    trials: usize,
    max_minutes: Option<f64>,
    budget_ms: Option<f64>,
    /// Evaluations at once.
    workers: usize,
    /// The campaign file (absolute), whose copy is `campaign.toml` in the folder: relative
    /// paths in the copy resolve against this file's folder.
    campaign_file: PathBuf,
    /// The seed of this run (a flag may override the file's).
    seed: u64,
}

/// One run of a campaign, as `runs.jsonl` records it.
#[derive(Debug, Clone, serde::Serialize)]
struct RunRecord {
    event: &'static str,
    campaign: String,
    fingerprint: String,
    sculpt_version: &'static str,
    /// The commit sculpt was built from (`unknown` outside a git checkout).
    git_commit: &'static str,
    /// The host name and its CPU.
    host: String,
    seed: u64,
    /// Unix seconds.
    started: f64,
    ended: f64,
    trials_before: usize,
    trials_after: usize,
    stopped_early: Option<String>,
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn host() -> String {
    format!(
        "{} ({})",
        crate::workers::hostname(),
        sculpt_latency::cpu_name()
    )
}

/// What a finished (or stopped) run leaves behind.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub out_dir: PathBuf,
    pub layers: Vec<String>,
    /// The parameter columns of the trials, in frame order.
    pub columns: Vec<String>,
    pub teacher: TeacherRecord,
    pub trials: Vec<TrialRecord>,
    pub budget_ms: Option<f64>,
    /// Trials this run added (the rest were stored by earlier runs).
    pub new_trials: usize,
    /// Why the run ended before the campaign's trial count, if it did.
    pub stopped_early: Option<String>,
    pub summary: PathBuf,
    pub figure: PathBuf,
}

/// Scores the teacher the same way trials are scored: accuracy on the validation split
/// as sculpt's runtime computes it, latency from the campaign's latency model, size at its
/// (f32) bit widths.
pub fn evaluate_teacher(
    model: &str,
    teacher: &Graph,
    val: &Dataset,
    latency: &dyn LatencyModel,
) -> Result<TeacherRecord> {
    Ok(TeacherRecord {
        model: model.to_string(),
        accuracy: runtime_accuracy(teacher, val)?,
        latency_ms: latency.predict_ms(teacher)?,
        size_bytes: sculpt_compress::model_size_bytes(teacher)?,
        params: teacher.num_params() as u64,
        flops: teacher.flops()?,
        latency_model: Some(latency.describe()),
    })
}

/// The accuracy of what sculpt's runtime runs: integer layers in integers, with their
/// activations quantized as the runtime quantizes them.
pub fn runtime_accuracy(graph: &Graph, data: &Dataset) -> Result<f64> {
    let mut runtime = sculpt_runtime::Runtime::compile(
        graph,
        &sculpt_runtime::Options {
            max_batch: 256,
            threads: 1,
            isa: None,
            sparse: Default::default(),
        },
    )
    .map_err(sculpt_latency::LatencyError::from)?;
    Ok(runtime
        .accuracy(data)
        .map_err(sculpt_latency::LatencyError::from)?)
}

/// The fine-tuning seed of trial `trial_id`: each trial has its own, fixed by the
/// campaign's seed, so a trial can be rebuilt exactly.
pub fn trial_seed(campaign: &Campaign, trial_id: u64) -> u64 {
    campaign.seed.wrapping_mul(1_000_003).wrapping_add(trial_id)
}

/// The campaign's latency model.
pub fn latency_model(campaign: &Campaign) -> Result<Box<dyn LatencyModel>> {
    Ok(match &campaign.latency_model {
        LatencyChoice::Roofline => Box::new(sculpt_latency::Roofline {
            profile: campaign.profile.clone(),
            batch: campaign.latency_batch_size,
        }),
        LatencyChoice::Lut(path) => Box::new(sculpt_latency::Lut::load(path)?),
        LatencyChoice::Measured { threads } => Box::new(sculpt_latency::Measured {
            settings: sculpt_latency::MeasureSettings {
                batch: campaign.latency_batch_size,
                threads: *threads,
                warmup: 20,
                runs: 100,
            },
        }),
    })
}

/// The campaign's data as its teacher expects it: a teacher given as weights gets the
/// preprocessing its model declares (with a warning when it declares none); a zoo teacher
/// is trained by the campaign on sculpt's own standardisation.
pub fn campaign_splits(campaign: &Campaign) -> Result<(Splits, Option<String>)> {
    let splits = sculpt_data::load(&campaign.data, campaign.seed)?;
    match &campaign.teacher {
        TeacherSource::Weights(dir) => {
            let spec = crate::teacher::weights_spec(dir, campaign.teacher_preprocessing.as_ref())?;
            crate::teacher::fit_data(dir, &spec, splits)
        }
        TeacherSource::Zoo { .. } => Ok((splits, None)),
    }
}

/// The teacher's architecture, known before any training, so the campaign directory can
/// be locked and checked first.
pub(crate) fn teacher_spec(campaign: &Campaign, splits: &Splits) -> Result<GraphSpec> {
    let spec = match &campaign.teacher {
        TeacherSource::Weights(dir) => {
            crate::teacher::weights_spec(dir, campaign.teacher_preprocessing.as_ref())?
        }
        TeacherSource::Zoo { model, .. } => sculpt_nn::zoo::spec(
            model,
            &splits.train.sample_shape(),
            splits.train.num_classes,
        )?,
    };
    crate::teacher::check_fits(&spec, splits)?;
    Ok(spec)
}

/// The campaign's fingerprint, extended by a digest of user-supplied teacher weights, so
/// trials distilled from one teacher never mix with trials from another.
pub(crate) fn fingerprint(campaign: &Campaign) -> Result<String> {
    let mut fingerprint = campaign.fingerprint();
    if let TeacherSource::Weights(dir) = &campaign.teacher {
        let bytes = crate::teacher::weights_bytes(dir)?;
        fingerprint.push_str(&format!("-{:016x}", crate::config::digest(&bytes)));
    }
    // Trials priced by one lookup table never mix with trials priced by another.
    if let LatencyChoice::Lut(path) = &campaign.latency_model {
        let bytes = std::fs::read(path).map_err(|e| CampaignError::Io {
            path: path.clone(),
            cause: e,
        })?;
        fingerprint.push_str(&format!("-lut{:016x}", crate::config::digest(&bytes)));
    }
    Ok(fingerprint)
}

fn load_teacher(
    campaign: &Campaign,
    splits: &Splits,
    out: &Path,
    observers: &mut [&mut dyn Observer],
    stop: &AtomicBool,
) -> Result<(String, Graph)> {
    Ok(match &campaign.teacher {
        TeacherSource::Weights(dir) => {
            let graph =
                crate::teacher::weights_graph(dir, campaign.teacher_preprocessing.as_ref())?;
            // Validation is carved out of the training data by the seed, so a teacher
            // trained on the same data with another seed has seen part of the validation
            // split, and every accuracy of the campaign would flatter.
            let metrics = std::fs::read_to_string(dir.join(sculpt_nn::io::METRICS_FILE))
                .ok()
                .and_then(|t| serde_json::from_str::<crate::teacher::TrainMetrics>(&t).ok());
            if let Some(m) = metrics {
                if m.data == campaign.data && m.seed != campaign.seed {
                    for o in observers.iter_mut() {
                        o.on_phase(&format!(
                            "warning: the teacher in {} was trained with seed {} but the campaign splits {} with seed {}; \
                             it has seen part of the validation split, so accuracies will be optimistic. \
                             Set `seed = {}` in the campaign.",
                            dir.display(),
                            m.seed,
                            campaign.data,
                            campaign.seed,
                            m.seed
                        ));
                    }
                }
            }
            (graph.spec.name.clone(), graph)
        }
        TeacherSource::Zoo { model, train } => {
            let dir = out.join("teacher");
            let graph = if dir.join(sculpt_nn::io::SPEC_FILE).is_file() {
                for o in observers.iter_mut() {
                    o.on_phase(&format!(
                        "reusing the teacher trained earlier in {}",
                        dir.display()
                    ));
                }
                sculpt_nn::io::load(&dir)?
            } else {
                for o in observers.iter_mut() {
                    o.on_phase(&format!(
                        "training teacher `{model}` on {} ({} epochs) into {}",
                        splits.source,
                        train.epochs,
                        dir.display()
                    ));
                }
                let (graph, metrics) = crate::teacher::train_model(
                    model,
                    splits,
                    train,
                    &dir,
                    true,
                    Some(stop),
                    &mut |_| {},
                )?;
                for o in observers.iter_mut() {
                    o.on_phase(&format!(
                        "teacher trained: test accuracy {:.2}%, {:.0} samples/s",
                        metrics.test_accuracy * 100.0,
                        metrics.samples_per_second
                    ));
                }
                graph
            };
            (model.clone(), graph)
        }
    })
}

/// The GP's settings for a campaign: the hypervolume's reference point is accuracy 0 (or
/// the minimum accuracy) against the latency budget (or the teacher's latency or size: a
/// candidate no better than the teacher adds nothing), and a minimum accuracy is a
/// modelled bound on the error.
fn gp_settings(campaign: &Campaign, teacher: &TeacherRecord) -> GpSettings {
    let error_cap = campaign.min_accuracy.map(|a| 1.0 - a);
    let second = match campaign.objective {
        Objective::Latency => campaign.budget_ms.unwrap_or(teacher.latency_ms),
        Objective::Size => teacher.size_bytes as f64,
    };
    GpSettings {
        reference: Some(sculpt_search::reference_point(
            &[1.0, second],
            &[error_cap, None],
            0.0,
        )),
        bounds: vec![error_cap, None],
        ..GpSettings::default()
    }
}

fn build_strategy(campaign: &Campaign, teacher: &TeacherRecord) -> Result<Box<dyn Strategy>> {
    campaign.strategy.build(
        campaign.seed,
        gp_settings(campaign, teacher),
        AutoSettings::default(),
    )
}

/// Everything one trial evaluation needs, fixed for the whole run.
struct Evaluator<'a> {
    campaign: &'a Campaign,
    space: &'a CampaignSpace,
    teacher: &'a Graph,
    splits: &'a Splits,
    teacher_logits: &'a Tensor,
    latency: &'a dyn LatencyModel,
}

struct Scores {
    /// None when the candidate was screened out before fine-tuning.
    accuracy: Option<f64>,
    /// The rungs of successive halving reached, and the epochs behind the accuracy.
    rungs: Vec<sculpt_store::Rung>,
    fidelity: Option<u32>,
    /// Why fine-tuning is judged to have diverged, if it did.
    diverged: Option<String>,
    latency_ms: f64,
    accounting: sculpt_compress::Accounting,
}

impl Evaluator<'_> {
    /// Whether a point meets the latency budget by the campaign's latency model, from its
    /// structure alone (no fine-tuning). Only deterministic models answer; with `measured`
    /// latency, or without a budget, every point passes (screening still applies). A
    /// point that cannot be built passes too: its evaluation records why it failed.
    fn feasible(&self, point: &Point) -> bool {
        let Some(budget) = self.campaign.budget_ms else {
            return true;
        };
        if self.latency.is_measured() {
            return true;
        }
        let Ok(plan) = self.space.decode(point) else {
            return true;
        };
        match sculpt_compress::compress(self.teacher, &plan, None)
            .ok()
            .and_then(|g| self.latency.predict_ms(&g).ok())
        {
            Some(ms) => ms <= budget,
            None => true,
        }
    }

    /// The campaign's screening margin, else the latency model's measured error, and never
    /// less than the default.
    fn screen_margin(&self) -> f64 {
        self.campaign.screen_margin.unwrap_or_else(|| {
            self.latency
                .error_margin()
                .unwrap_or(0.0)
                .max(crate::config::DEFAULT_SCREEN_MARGIN)
        })
    }

    fn score(
        &self,
        plan: &sculpt_compress::CompressionPlan,
        trial_id: u64,
        competitors: &dyn Fn() -> Vec<TrialRecord>,
    ) -> Result<Scores> {
        let mut finetune = self.campaign.finetune.clone();
        finetune.seed = trial_seed(self.campaign, trial_id);
        // The structure, and so the size and the predicted latency, are known here,
        // before any fine-tuning.
        let compressed = sculpt_compress::compress(self.teacher, plan, Some(&self.splits.train))?;
        let latency_ms = self.latency.predict_ms(&compressed)?;
        // Screening: a candidate predicted over the budget by more than the model's error
        // would be fine-tuned for nothing.
        if let Some(budget) = self.campaign.budget_ms {
            if latency_ms > budget * (1.0 + self.screen_margin()) {
                return Ok(Scores {
                    accuracy: None,
                    rungs: Vec::new(),
                    fidelity: None,
                    diverged: None,
                    latency_ms,
                    accounting: sculpt_compress::account(&compressed)?,
                });
            }
        }
        let mut losses = Vec::new();
        // Successive halving: score at each rung and go on only when promoted.
        let mut rungs: Vec<sculpt_store::Rung> = Vec::new();
        let halving = self.campaign.halving.as_ref().map(|h| {
            let bracket = h.bracket(trial_id);
            (h, bracket, h.rungs(bracket, finetune.epochs))
        });
        let objective = self.campaign.objective;
        let mut gate = |epoch: usize, student: &Graph| -> sculpt_nn::Result<bool> {
            let Some((h, bracket, at)) = &halving else {
                return Ok(true);
            };
            if !at.contains(&epoch) {
                return Ok(true);
            }
            let accuracy = runtime_accuracy(student, &self.splits.val)
                .map_err(|e| sculpt_nn::NnError::Config(e.to_string()))?;
            let second = match objective {
                Objective::Latency => latency_ms,
                Objective::Size => {
                    sculpt_compress::account(student)
                        .map_err(|e| sculpt_nn::NnError::Config(e.to_string()))?
                        .size_bytes as f64
                }
            };
            let second_of = |t: &TrialRecord| match objective {
                Objective::Latency => t.latency_ms,
                Objective::Size => t.size_bytes.map(|b| b as f64),
            };
            let promoted = h.promote(
                *bracket,
                epoch,
                accuracy,
                second,
                &competitors(),
                &second_of,
            );
            rungs.push(crate::halving::rung(epoch, accuracy, promoted));
            Ok(promoted)
        };
        let (student, report) = sculpt_compress::finetune_plan(
            self.teacher,
            &compressed,
            plan,
            &self.splits.train,
            self.teacher_logits,
            &finetune,
            &mut |e| losses.push(e.loss),
            Some(&mut gate),
        )?;
        // Size and nonzeros of what fine-tuning produced (quantization can add zeros).
        let accounting = sculpt_compress::account(&student)?;
        // A measured latency is taken again on the fine-tuned student (the same structure);
        // predictions depend only on the structure, so they stand.
        let latency_ms = if self.latency.is_measured() {
            self.latency.predict_ms(&student)?
        } else {
            latency_ms
        };
        // A trial stopped at a rung keeps that rung's score; one that ran the whole
        // schedule is scored now.
        let accuracy = match rungs.last() {
            Some(r) if !r.promoted => r.accuracy,
            _ => runtime_accuracy(&student, &self.splits.val)?,
        };
        Ok(Scores {
            accuracy: Some(accuracy),
            rungs,
            fidelity: Some(report.epochs_run as u32),
            diverged: divergence(&losses, accuracy, self.teacher.spec.num_classes),
            latency_ms,
            accounting,
        })
    }

    /// Evaluates one candidate. Every failure, even a panic inside a library, becomes a
    /// failed trial with its reason.
    fn evaluate(
        &self,
        point: &Point,
        trial_id: u64,
        strategy: &str,
        generation: Option<u32>,
        competitors: &dyn Fn() -> Vec<TrialRecord>,
    ) -> TrialRecord {
        let started = Instant::now();
        let decoded = self.space.decode(point);
        let params = match &decoded {
            Ok(plan) => self.space.params_at(point, plan),
            Err(_) => Default::default(),
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.score(
                decoded
                    .as_ref()
                    .map_err(|e| CampaignError::Invalid(e.to_string()))?,
                trial_id,
                competitors,
            )
        }));
        let result = match outcome {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(panic) => Err(format!(
                "internal error: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into())
            )),
        };
        let mut record = TrialRecord {
            trial_id,
            state: TrialState::Complete,
            strategy: strategy.to_string(),
            generation,
            params,
            accuracy: None,
            latency_ms: None,
            size_bytes: None,
            num_params: None,
            nonzeros: None,
            flops: None,
            bops: None,
            duration_s: 0.0,
            error: None,
            fidelity: None,
            rungs: Vec::new(),
        };
        match result {
            Ok(s) => {
                if s.rungs.last().is_some_and(|r| !r.promoted) {
                    record.state = TrialState::Stopped;
                    record.error = s.rungs.last().map(|r| {
                        format!(
                            "stopped by successive halving after {} epochs: not among the best at that rung",
                            r.epochs
                        )
                    });
                }
                if s.accuracy.is_none() {
                    record.state = TrialState::Infeasible;
                    record.error = Some(format!(
                        "screened out before fine-tuning: predicted latency {:.4} ms is over the budget by more than {:.0}%",
                        s.latency_ms,
                        self.screen_margin() * 100.0
                    ));
                }
                if let Some(why) = &s.diverged {
                    record.state = TrialState::Diverged;
                    record.error = Some(why.clone());
                }
                record.accuracy = s.accuracy;
                record.latency_ms = Some(s.latency_ms);
                record.size_bytes = Some(s.accounting.size_bytes);
                record.num_params = Some(s.accounting.params);
                record.nonzeros = Some(s.accounting.nonzeros);
                record.flops = Some(s.accounting.flops);
                record.bops = Some(s.accounting.bops);
                record.fidelity = s.fidelity;
                record.rungs = s.rungs;
            }
            Err(reason) => {
                record.state = TrialState::Failed;
                record.error = Some(reason);
            }
        }
        record.duration_s = started.elapsed().as_secs_f64();
        record
    }
}

/// Whether fine-tuning diverged without a NaN: the last epoch's loss more than ten times
/// the first's, or a validation accuracy within 1.5× chance (1 / classes) for a task with
/// at least 3 classes.
fn divergence(losses: &[f64], accuracy: f64, classes: usize) -> Option<String> {
    if let (Some(first), Some(last)) = (losses.first(), losses.last()) {
        if losses.len() > 1 && *last > 10.0 * first.max(1e-6) {
            return Some(format!(
                "diverged: the fine-tuning loss rose from {first:.4} (epoch 1) to {last:.4} (epoch {})",
                losses.len()
            ));
        }
    }
    let chance = 1.0 / classes.max(1) as f64;
    if classes >= 3 && accuracy <= 1.5 * chance {
        return Some(format!(
            "diverged: validation accuracy {:.2}% is at chance ({:.2}% for {classes} classes)",
            accuracy * 100.0,
            chance * 100.0
        ));
    }
    None
}

fn progress(campaign: &Campaign, trials: &[TrialRecord], teacher: &TeacherRecord) -> Progress {
    let within = |t: &&TrialRecord| match (campaign.budget_ms, t.latency_ms) {
        (Some(b), Some(l)) => l <= b,
        _ => true,
    };
    Progress {
        done: trials.len(),
        total: campaign.trials.max(trials.len()),
        failed: trials
            .iter()
            .filter(|t| t.state == TrialState::Failed)
            .count(),
        hypervolume: sculpt_report::hypervolume(trials, teacher),
        best_accuracy: trials
            .iter()
            .filter(|t| t.is_complete())
            .filter(within)
            .filter_map(|t| t.accuracy)
            .fold(None, |best: Option<f64>, a| {
                Some(best.map_or(a, |b| b.max(a)))
            }),
    }
}

/// Runs `campaign` into `out`, resuming from any trials a previous run stored there.
/// When `stop` becomes true (Ctrl-C), the trial in flight finishes and is stored, the
/// report is written and the run returns; running the campaign again resumes it.
pub fn run(
    campaign: &Campaign,
    out: &Path,
    observers: &mut [&mut dyn Observer],
    stop: &AtomicBool,
) -> Result<RunOutcome> {
    run_with(campaign, out, observers, stop, false)
}

/// [`run`]; with `force`, an output directory that holds another campaign's trials is
/// taken over (its trials kept, the new ones added), as `sculpt run --force` asks.
pub fn run_with(
    campaign: &Campaign,
    out: &Path,
    observers: &mut [&mut dyn Observer],
    stop: &AtomicBool,
    force: bool,
) -> Result<RunOutcome> {
    run_opts(
        campaign,
        out,
        observers,
        stop,
        &RunOptions {
            force,
            workers: 1,
            launch: None,
        },
    )
}

/// Starts one worker process (`sculpt worker DIR`) for the campaign folder; the second
/// argument numbers the workers of a run from 0.
pub type Launcher = dyn Fn(&Path, usize) -> std::io::Result<std::process::Child>;

/// How a run goes about its trials.
pub struct RunOptions<'a> {
    /// Take over a folder of a changed campaign (`--force`).
    pub force: bool,
    /// Evaluations at once. With 1 the runner evaluates in its own process, one trial
    /// after another, and the same seed gives the same trials. With more, each is a
    /// worker process that `launch` starts, claiming trials from the folder.
    pub workers: usize,
    pub launch: Option<&'a Launcher>,
}

/// Runs `campaign` into `out` as `options` say; see [`run`].
pub fn run_opts(
    campaign: &Campaign,
    out: &Path,
    observers: &mut [&mut dyn Observer],
    stop: &AtomicBool,
    options: &RunOptions,
) -> Result<RunOutcome> {
    let force = options.force;
    if options.workers > 1 && options.launch.is_none() {
        return Err(CampaignError::Invalid(
            "running with several workers needs a way to start them".into(),
        ));
    }
    let started = Instant::now();
    let started_at = unix_seconds();
    let (splits, data_warning) = campaign_splits(campaign)?;
    // Lock the directory and check that it belongs to this campaign before any training.
    let spec = teacher_spec(campaign, &splits)?;
    let layers = spec.weight_layers();
    // The space is checked against the architecture before anything is trained or
    // written, so a pattern that matches nothing fails at once.
    let skeleton = sculpt_nn::zoo::init(spec, 0)?;
    let columns = search_space(campaign, &skeleton)?.columns();
    let mut store = Store::open_with(
        out,
        CampaignMeta {
            identity: Some(campaign.identity()),
            name: campaign.name.clone(),
            fingerprint: fingerprint(campaign)?,
            layers: layers.clone(),
            columns: columns.clone(),
        },
        force,
    )?;
    for warning in store.warnings() {
        tracing::warn!("{warning}");
        for o in observers.iter_mut() {
            o.on_phase(&format!("warning: {warning}"));
        }
    }
    if let Some(w) = &data_warning {
        tracing::warn!("{w}");
        for o in observers.iter_mut() {
            o.on_phase(&format!("warning: {w}"));
        }
    }
    let warned = store.warnings().len();
    tracing::info!(
        campaign = %campaign.name,
        stored = store.trials().len(),
        trials = campaign.trials,
        seed = campaign.seed,
        "run started"
    );
    store.append_run(&RunStart {
        event: "start",
        campaign: campaign.name.clone(),
        pid: std::process::id(),
        started: started_at,
        trials: campaign.trials,
        max_minutes: campaign.max_minutes,
        budget_ms: campaign.budget_ms,
        workers: options.workers,
        campaign_file: std::path::absolute(&campaign.path)
            .unwrap_or_else(|_| campaign.path.clone()),
        seed: campaign.seed,
    })?;
    // A copy of the campaign file, so the folder alone can rebuild its trials later
    // (`report` re-scores the front on the test split, `export` writes a trial's model).
    if let Ok(text) = std::fs::read_to_string(&campaign.path) {
        sculpt_nn::io::write_atomic(&out.join(crate::rebuild::CAMPAIGN_COPY), text.as_bytes())?;
    }
    // `touch DIR/STOP` ends the campaign cleanly after the trial in flight. One left by an
    // earlier run is cleared, since running again means going on.
    let stop_file = out.join(STOP_FILE);
    if stop_file.exists() {
        std::fs::remove_file(&stop_file).map_err(|e| CampaignError::Io {
            path: stop_file.clone(),
            cause: e,
        })?;
        for o in observers.iter_mut() {
            o.on_phase(&format!(
                "removed the stop file {} left by an earlier run",
                stop_file.display()
            ));
        }
    }
    let (teacher_name, teacher) = load_teacher(campaign, &splits, out, observers, stop)?;
    let space = search_space(campaign, &teacher)?;
    if let Some(limit) = &campaign.sensitivity {
        for o in observers.iter_mut() {
            o.on_phase(&format!(
                "the sensitivity table {} (max_drop {}) narrows {} of the space's domains{}{}",
                limit.table.display(),
                limit.max_drop,
                space.narrowed.len(),
                if space.narrowed.is_empty() { "" } else { ": " },
                space.narrowed.join("; ")
            ));
        }
    }
    let latency = latency_model(campaign)?;
    let teacher_record = evaluate_teacher(&teacher_name, &teacher, &splits.val, latency.as_ref())?;
    store.write_teacher(&teacher_record)?;
    let teacher_logits = sculpt_nn::predict_logits(&teacher, &splits.train)?;
    let mut strategy = build_strategy(campaign, &teacher_record)?;
    let evaluator = Evaluator {
        campaign,
        space: &space,
        teacher: &teacher,
        splits: &splits,
        teacher_logits: &teacher_logits,
        latency: latency.as_ref(),
    };

    let done_before = store.trials().len();
    for o in observers.iter_mut() {
        o.on_start(
            &campaign.name,
            done_before,
            campaign.trials.max(done_before),
        );
    }
    let work = crate::workers::WorkDir::open(out)?;
    // Trials that workers of an earlier run finished are stored first.
    let mut warned = warned;
    collect_finished(
        &work,
        &mut store,
        strategy.as_mut(),
        &space,
        campaign,
        &teacher_record,
        observers,
        &mut warned,
    )?;
    let stopped_early = if options.workers > 1 {
        run_parallel(
            &Parallel {
                campaign,
                out,
                space: &space,
                evaluator: &evaluator,
                teacher: &teacher_record,
                stop,
                stop_file: &stop_file,
                started,
                workers: options.workers,
                launch: options.launch.expect("checked above"),
                work: &work,
            },
            &mut store,
            strategy.as_mut(),
            observers,
            &mut warned,
        )?
    } else {
        // Candidates an earlier parallel run queued, or left claimed, are asked again,
        // under new ids: a worker of that run still alive may yet report its trial.
        let first_free = work.max_id().map_or(0, |id| id + 1);
        let dropped = work.clear_queue() + work.requeue_stale(std::time::Duration::ZERO).len();
        let _ = work.clear_queue();
        if dropped > 0 {
            for o in observers.iter_mut() {
                o.on_phase(&format!(
                    "{dropped} candidates an earlier parallel run had not finished are asked again"
                ));
            }
        }
        run_sequential(
            campaign,
            first_free,
            &space,
            &evaluator,
            &teacher_record,
            stop,
            &stop_file,
            started,
            &mut store,
            strategy.as_mut(),
            observers,
            &mut warned,
        )?
    };
    let p = progress(campaign, store.trials(), &teacher_record);
    for o in observers.iter_mut() {
        o.on_finish(&p);
    }
    let (summary, figure) = sculpt_report::write_report(
        out,
        &sculpt_report::Report {
            campaign: &campaign.name,
            columns: &columns,
            trials: store.trials(),
            teacher: &teacher_record,
            budget_ms: campaign.budget_ms,
        },
    )?;
    tracing::info!(
        stored = store.trials().len(),
        new = store.trials().len() - done_before,
        stopped_early = stopped_early.as_deref().unwrap_or(""),
        "run ended"
    );
    store.append_run(&RunRecord {
        event: "end",
        campaign: campaign.name.clone(),
        fingerprint: store.meta().fingerprint.clone(),
        sculpt_version: env!("CARGO_PKG_VERSION"),
        git_commit: env!("SCULPT_GIT_COMMIT"),
        host: host(),
        seed: campaign.seed,
        started: started_at,
        ended: unix_seconds(),
        trials_before: done_before,
        trials_after: store.trials().len(),
        stopped_early: stopped_early.clone(),
    })?;
    Ok(RunOutcome {
        out_dir: out.to_path_buf(),
        layers,
        columns,
        teacher: teacher_record,
        trials: store.trials().to_vec(),
        budget_ms: campaign.budget_ms,
        new_trials: store.trials().len() - done_before,
        stopped_early,
        summary,
        figure,
    })
}

/// Why the run should stop now, if it should: Ctrl-C, the stop file, or the time limit.
fn should_stop(
    campaign: &Campaign,
    stop: &AtomicBool,
    stop_file: &Path,
    started: Instant,
) -> Option<String> {
    if stop.load(Ordering::SeqCst) {
        return Some("interrupted; run the campaign again to resume".to_string());
    }
    if stop_file.exists() {
        return Some(format!(
            "the stop file {} appeared; run the campaign again to resume",
            stop_file.display()
        ));
    }
    if let Some(limit) = campaign.max_minutes {
        if started.elapsed().as_secs_f64() > limit * 60.0 {
            return Some(format!("time limit of {limit} minutes reached"));
        }
    }
    None
}

/// Stores a finished trial, logs it, tells the strategy and the observers.
#[allow(clippy::too_many_arguments)]
fn store_trial(
    record: TrialRecord,
    store: &mut Store,
    strategy: &mut dyn Strategy,
    space: &CampaignSpace,
    campaign: &Campaign,
    teacher: &TeacherRecord,
    observers: &mut [&mut dyn Observer],
    warned: &mut usize,
) -> Result<()> {
    store.append(record.clone())?;
    tracing::info!(
        trial = record.trial_id,
        state = record.state.as_str(),
        strategy = %record.strategy,
        accuracy = record.accuracy,
        latency_ms = record.latency_ms,
        size_bytes = record.size_bytes,
        seconds = record.duration_s,
        error = record.error.as_deref().unwrap_or(""),
        "trial stored"
    );
    for warning in &store.warnings()[*warned..] {
        tracing::warn!("{warning}");
        for o in observers.iter_mut() {
            o.on_phase(&format!("warning: {warning}"));
        }
    }
    *warned = store.warnings().len();
    strategy.tell(&trial_view(
        &record,
        space,
        campaign.objective,
        campaign.budget_ms,
    ));
    let p = progress(campaign, store.trials(), teacher);
    for o in observers.iter_mut() {
        o.on_trial(&record, &p);
    }
    Ok(())
}

/// Stores the trials workers have finished and not yet handed over. A trial finished
/// twice (by a worker taken for dead) is stored once.
#[allow(clippy::too_many_arguments)]
fn collect_finished(
    work: &crate::workers::WorkDir,
    store: &mut Store,
    strategy: &mut dyn Strategy,
    space: &CampaignSpace,
    campaign: &Campaign,
    teacher: &TeacherRecord,
    observers: &mut [&mut dyn Observer],
    warned: &mut usize,
) -> Result<()> {
    for (record, file) in work.finished() {
        let id = record.trial_id;
        if store.trials().iter().any(|t| t.trial_id == id) {
            tracing::warn!("trial {id} was finished twice; the first is kept");
        } else {
            store_trial(
                record, store, strategy, space, campaign, teacher, observers, warned,
            )?;
        }
        work.collected(id, &file);
    }
    Ok(())
}

/// The next free trial id.
fn next_id(store: &Store, work: &crate::workers::WorkDir) -> u64 {
    let stored = store.trials().iter().map(|t| t.trial_id + 1).max();
    let elsewhere = work.max_id().map(|id| id + 1);
    stored.max(elsewhere).unwrap_or(0)
}

/// One trial after another in this process.
#[allow(clippy::too_many_arguments)]
fn run_sequential(
    campaign: &Campaign,
    first_free: u64,
    space: &CampaignSpace,
    evaluator: &Evaluator,
    teacher: &TeacherRecord,
    stop: &AtomicBool,
    stop_file: &Path,
    started: Instant,
    store: &mut Store,
    strategy: &mut dyn Strategy,
    observers: &mut [&mut dyn Observer],
    warned: &mut usize,
) -> Result<Option<String>> {
    while store.trials().len() < campaign.trials {
        if let Some(why) = should_stop(campaign, stop, stop_file, started) {
            return Ok(Some(why));
        }
        let history: Vec<_> = store
            .trials()
            .iter()
            .map(|t| trial_view(t, space, campaign.objective, campaign.budget_ms))
            .collect();
        let trial_id = store
            .trials()
            .iter()
            .map(|t| t.trial_id + 1)
            .max()
            .unwrap_or(0)
            .max(first_free);
        let proposal =
            strategy.ask_feasible(&space.space, &history, trial_id, &|p| evaluator.feasible(p))?;
        let stored = store.trials().to_vec();
        let record = evaluator.evaluate(
            &proposal.point,
            trial_id,
            proposal.strategy.unwrap_or(strategy.name()),
            proposal.generation,
            &|| stored.clone(),
        );
        store_trial(
            record, store, strategy, space, campaign, teacher, observers, warned,
        )?;
    }
    Ok(None)
}

/// What the parallel runner holds fixed.
struct Parallel<'a> {
    campaign: &'a Campaign,
    out: &'a Path,
    space: &'a CampaignSpace,
    evaluator: &'a Evaluator<'a>,
    teacher: &'a TeacherRecord,
    stop: &'a AtomicBool,
    stop_file: &'a Path,
    started: Instant,
    workers: usize,
    launch: &'a Launcher,
    work: &'a crate::workers::WorkDir,
}

/// The runner of a parallel campaign: it keeps one candidate per worker queued or
/// claimed, stores what the workers finish, queues again the claims of dead workers and
/// starts replacements. When it must stop, no new candidate is queued, the unclaimed ones
/// are dropped, and the trials in flight finish.
fn run_parallel(
    p: &Parallel,
    store: &mut Store,
    strategy: &mut dyn Strategy,
    observers: &mut [&mut dyn Observer],
    warned: &mut usize,
) -> Result<Option<String>> {
    use crate::workers::{RunInfo, WorkItem, STALE_AFTER};
    let (campaign, work) = (p.campaign, p.work);
    work.reopen()?;
    work.write_run(&RunInfo {
        campaign: std::fs::canonicalize(&campaign.path).unwrap_or(campaign.path.clone()),
        seed: campaign.seed,
        fingerprint: store.meta().fingerprint.clone(),
        runner_pid: std::process::id(),
    })?;
    let launch = |k: usize| -> Result<std::process::Child> {
        (p.launch)(p.out, k).map_err(|e| CampaignError::Io {
            path: p.out.to_path_buf(),
            cause: e,
        })
    };
    let mut children = (0..p.workers).map(launch).collect::<Result<Vec<_>>>()?;
    tracing::info!(workers = p.workers, "workers started");
    let mut restarts = 0usize;
    let mut stopping: Option<String> = None;
    let outcome = loop {
        collect_finished(
            work, store, strategy, p.space, campaign, p.teacher, observers, warned,
        )?;
        for id in work.requeue_stale(STALE_AFTER) {
            let message = format!(
                "trial {id} was abandoned by its worker (no heartbeat for {} s); queued again",
                STALE_AFTER.as_secs()
            );
            tracing::warn!("{message}");
            for o in observers.iter_mut() {
                o.on_phase(&message);
            }
        }
        if stopping.is_none() {
            if let Some(why) = should_stop(campaign, p.stop, p.stop_file, p.started) {
                // Workers finish the trial in hand and leave; unclaimed candidates go.
                work.close()?;
                work.clear_queue();
                stopping = Some(why);
            }
        }
        let claims = work.claims();
        let queued = work.queued();
        let stored = store.trials().len();
        let all_exited = children
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(Some(_))));
        if stopping.is_some() && (claims.is_empty() || all_exited) {
            break stopping.clone();
        }
        if stopping.is_none() && stored >= campaign.trials && claims.is_empty() && queued.is_empty()
        {
            break None;
        }
        if stopping.is_none() {
            let mut pending: Vec<WorkItem> =
                claims.into_iter().map(|c| c.item).chain(queued).collect();
            // Trials a worker finished since they were collected count as in flight: they
            // left the claims and are not stored yet.
            let finished = work
                .finished()
                .into_iter()
                .filter(|(t, _)| !pending.iter().any(|i| i.trial_id == t.trial_id))
                .count();
            while stored + finished + pending.len() < campaign.trials && pending.len() < p.workers {
                let mut history: Vec<_> = store
                    .trials()
                    .iter()
                    .map(|t| trial_view(t, p.space, campaign.objective, campaign.budget_ms))
                    .collect();
                history.extend(pending.iter().map(|item| sculpt_search::TrialView {
                    trial_id: item.trial_id,
                    point: item.point.clone(),
                    generation: item.generation,
                    state: sculpt_search::TrialState::Pending,
                    objectives: None,
                    constraint_violation: 0.0,
                }));
                let trial_id = next_id(store, work)
                    .max(pending.iter().map(|i| i.trial_id + 1).max().unwrap_or(0));
                let proposal = strategy.ask_feasible(&p.space.space, &history, trial_id, &|x| {
                    p.evaluator.feasible(x)
                })?;
                let item = WorkItem {
                    trial_id,
                    point: proposal.point,
                    strategy: proposal.strategy.unwrap_or(strategy.name()).to_string(),
                    generation: proposal.generation,
                    worker: None,
                };
                work.enqueue(&item)?;
                pending.push(item);
            }
            // A worker that died is replaced; one that keeps dying stops the campaign.
            for (k, child) in children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    restarts += 1;
                    if restarts > 3 * p.workers {
                        work.close()?;
                        return Err(CampaignError::Invalid(format!(
                            "workers keep dying ({restarts} restarts, the last with {status}); see {}",
                            p.out.join("work").display()
                        )));
                    }
                    let message = format!("worker {k} exited ({status}); starting another");
                    tracing::warn!("{message}");
                    for o in observers.iter_mut() {
                        o.on_phase(&message);
                    }
                    *child = launch(k)?;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    };
    work.close()?;
    // Workers leave once the folder is closed; the ones that do not are stopped.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    for child in children.iter_mut() {
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    // Whatever finished meanwhile is stored.
    collect_finished(
        work, store, strategy, p.space, campaign, p.teacher, observers, warned,
    )?;
    Ok(outcome)
}

/// What a worker did.
#[derive(Debug, Clone)]
pub struct WorkerOutcome {
    pub id: String,
    pub trials: usize,
}

/// A worker: claims candidates from the campaign folder `out` one at a time, evaluates
/// each (compress, fine-tune, score) and reports it, until the runner closes the folder,
/// the runner is gone, or `stop` is raised (the trial in hand is finished first).
pub fn work(out: &Path, stop: &AtomicBool) -> Result<WorkerOutcome> {
    use crate::workers::{alive, WorkDir, HEARTBEAT_EVERY};
    let work = WorkDir::existing(out).ok_or_else(|| {
        CampaignError::Invalid(format!(
            "{} holds no parallel campaign (no work/ folder); `sculpt run CAMPAIGN --workers N` starts one",
            out.display()
        ))
    })?;
    let run = work.read_run()?;
    let mut campaign = Campaign::load(&run.campaign)?;
    campaign.set_seed(run.seed);
    let fingerprint = fingerprint(&campaign)?;
    if fingerprint != run.fingerprint {
        return Err(CampaignError::Invalid(format!(
            "{} changed since the campaign in {} started (fingerprint {fingerprint}, the run's {}); restart the run",
            run.campaign.display(),
            out.display(),
            run.fingerprint
        )));
    }
    let (splits, data_warning) = campaign_splits(&campaign)?;
    if let Some(w) = data_warning {
        tracing::warn!("{w}");
    }
    let teacher = match &campaign.teacher {
        TeacherSource::Weights(dir) => {
            crate::teacher::weights_graph(dir, campaign.teacher_preprocessing.as_ref())?
        }
        TeacherSource::Zoo { .. } => {
            let dir = out.join("teacher");
            if !dir.join(sculpt_nn::io::SPEC_FILE).is_file() {
                return Err(CampaignError::Invalid(format!(
                    "the teacher is not trained yet ({} is missing); the runner trains it before starting workers",
                    dir.display()
                )));
            }
            sculpt_nn::io::load(&dir)?
        }
    };
    let space = search_space(&campaign, &teacher)?;
    let latency = latency_model(&campaign)?;
    let teacher_logits = sculpt_nn::predict_logits(&teacher, &splits.train)?;
    let evaluator = Evaluator {
        campaign: &campaign,
        space: &space,
        teacher: &teacher,
        splits: &splits,
        teacher_logits: &teacher_logits,
        latency: latency.as_ref(),
    };
    let id = crate::workers::worker_id();
    tracing::info!(worker = %id, "worker started");
    let mut trials = 0;
    let mut runner = run.runner_pid;
    loop {
        if stop.load(Ordering::SeqCst) || work.is_closed() {
            break;
        }
        if !alive(runner) {
            // A new runner may have taken over the folder.
            match work.read_run() {
                Ok(r) if alive(r.runner_pid) && r.fingerprint == run.fingerprint => {
                    runner = r.runner_pid
                }
                _ => break,
            }
        }
        let Some(item) = work.claim(&id)? else {
            std::thread::sleep(std::time::Duration::from_millis(25));
            continue;
        };
        let done = AtomicBool::new(false);
        let record = std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut last = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    if last.elapsed() >= HEARTBEAT_EVERY {
                        work.heartbeat(item.trial_id);
                        last = Instant::now();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
            // Successive halving compares with the stored trials and the ones finished
            // but not yet stored.
            let competitors = || {
                let mut all = Store::read(out).map(|(_, t)| t).unwrap_or_default();
                for (t, _) in work.finished() {
                    if !all.iter().any(|s| s.trial_id == t.trial_id) {
                        all.push(t);
                    }
                }
                all
            };
            let record = evaluator.evaluate(
                &item.point,
                item.trial_id,
                &item.strategy,
                item.generation,
                &competitors,
            );
            done.store(true, Ordering::SeqCst);
            record
        });
        work.finish(&record)?;
        tracing::info!(
            trial = record.trial_id,
            state = record.state.as_str(),
            seconds = record.duration_s,
            "trial finished"
        );
        trials += 1;
    }
    Ok(WorkerOutcome { id, trials })
}
