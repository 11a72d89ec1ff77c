//! Compression without a campaign: apply one plan file to a trained model (the `compress`
//! command). The plan is the same one a trial decodes to; the model is compressed, then
//! fine-tuned by distillation from itself as the teacher, and written with its metrics.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What `compress` writes to `OUT/metrics.json`. Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressMetrics {
    /// Test-split accuracy of the compressed, fine-tuned model, as sculpt's runtime runs it.
    pub accuracy: f64,
    pub val_accuracy: f64,
    /// Test accuracy of the compressed model before fine-tuning.
    pub accuracy_before_finetune: f64,
    pub size_bytes: u64,
    pub params: u64,
    pub nonzeros: u64,
    pub flops: u64,
    pub bops: u64,
    pub teacher_accuracy: f64,
    pub teacher_size_bytes: u64,
    pub teacher_params: u64,
    pub compression_ratio: f64,
    /// The passes the plan ran, in order.
    pub passes: Vec<String>,
    pub finetune_epochs: usize,
    pub finetune_seconds: f64,
    /// The seed of the data split and of fine-tuning.
    pub seed: u64,
    /// Things the user should know, such as a seed that differs from the model's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The training record (`metrics.json`) of a model directory written by `sculpt train`,
/// if it has one.
pub fn training_record(model: &Path) -> Option<crate::TrainMetrics> {
    std::fs::read_to_string(model.join(sculpt_nn::io::METRICS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// The seed to split data with for a model: the one asked for, else the one its
/// `metrics.json` records (from `train` or `compress`, so its validation and test splits
/// are ones it never saw), else 42.
pub fn model_seed(model: &Path, asked: Option<u64>) -> u64 {
    // `sculpt train` and `sculpt compress` both record the seed they split with.
    let recorded = || {
        std::fs::read_to_string(model.join(sculpt_nn::io::METRICS_FILE))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("seed").and_then(|s| s.as_u64()))
    };
    asked.or_else(recorded).unwrap_or(42)
}

/// Settings of one `compress` run besides the plan file.
#[derive(Debug, Clone)]
pub struct CompressRun<'a> {
    pub model: &'a Path,
    pub data: &'a str,
    pub plan: &'a Path,
    pub out: &'a Path,
    /// The seed of the data split and of fine-tuning; by default the one the model was
    /// trained with (from its `metrics.json`), else 42.
    pub seed: Option<u64>,
    /// Fine-tuning epochs; overrides the plan file's. Zero skips fine-tuning.
    pub epochs: Option<usize>,
}

/// Compresses the model in `run.model` by the plan file, fine-tunes it, and writes the
/// model directory, `plan.toml` (the resolved plan) and `metrics.json` to `run.out`.
pub fn compress_model(
    run: &CompressRun,
    on_epoch: &mut dyn FnMut(&sculpt_nn::EpochStats),
) -> Result<CompressMetrics> {
    let teacher = sculpt_nn::io::load(run.model)?;
    // The validation and test splits are cut by the seed, so only the model's own seed
    // keeps them unseen by it.
    let trained: Option<crate::TrainMetrics> =
        std::fs::read_to_string(run.model.join(sculpt_nn::io::METRICS_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    let seed = run.seed.or(trained.as_ref().map(|m| m.seed)).unwrap_or(42);
    let mut warnings = Vec::new();
    if let Some(m) = trained
        .as_ref()
        .filter(|m| m.seed != seed && m.data == run.data)
    {
        warnings.push(format!(
            "{} was trained with seed {} but the data is split with seed {seed}: it has seen \
             part of the validation and test splits, so its accuracies will be optimistic",
            run.model.display(),
            m.seed
        ));
    }
    let splits = sculpt_data::load(run.data, seed)?;
    let (splits, data_warning) = crate::teacher::fit_data(run.model, &teacher.spec, splits)?;
    warnings.extend(data_warning);
    let (plan, settings) = sculpt_compress::load_plan(run.plan, &teacher)?;
    let mut config = sculpt_nn::TrainConfig {
        epochs: 10,
        batch_size: 64,
        learning_rate: 1e-3,
        weight_decay: 0.0,
        seed,
        ..sculpt_nn::TrainConfig::default()
    };
    if let Some(e) = settings.epochs {
        config.epochs = e;
    }
    if let Some(b) = settings.batch_size {
        config.batch_size = b;
    }
    if let Some(l) = settings.learning_rate {
        config.learning_rate = l;
    }
    if let Some(w) = settings.weight_decay {
        config.weight_decay = w;
    }
    if let Some(e) = run.epochs {
        config.epochs = e;
    }
    let passes = plan.passes(&teacher);
    let compressed = sculpt_compress::compress(&teacher, &plan, Some(&splits.train))?;
    let accuracy_before_finetune = sculpt_nn::accuracy(&compressed, &splits.test)?;
    let (student, seconds) = if config.epochs == 0 {
        (compressed, 0.0)
    } else {
        let logits = sculpt_nn::predict_logits(&teacher, &splits.train)?;
        let (student, report) = sculpt_compress::finetune_plan(
            &teacher,
            &compressed,
            &plan,
            &splits.train,
            &logits,
            &config,
            on_epoch,
            None,
        )?;
        (student, report.seconds)
    };
    let accounting = sculpt_compress::account(&student)?;
    let teacher_size = sculpt_compress::model_size_bytes(&teacher)?;
    let metrics = CompressMetrics {
        accuracy: crate::executor::runtime_accuracy(&student, &splits.test)?,
        val_accuracy: crate::executor::runtime_accuracy(&student, &splits.val)?,
        accuracy_before_finetune,
        size_bytes: accounting.size_bytes,
        params: accounting.params,
        nonzeros: accounting.nonzeros,
        flops: accounting.flops,
        bops: accounting.bops,
        teacher_accuracy: sculpt_nn::accuracy(&teacher, &splits.test)?,
        teacher_size_bytes: teacher_size,
        teacher_params: teacher.num_params() as u64,
        compression_ratio: teacher_size as f64 / accounting.size_bytes.max(1) as f64,
        passes: passes.iter().map(|p| p.name().to_string()).collect(),
        finetune_epochs: config.epochs,
        finetune_seconds: seconds,
        seed,
        warnings,
    };
    sculpt_nn::io::save(&student, run.out)?;
    let plan_text =
        toml::to_string(&plan).map_err(|e| crate::CampaignError::Invalid(e.to_string()))?;
    write(run.out, "plan.toml", &plan_text)?;
    let json = serde_json::to_string_pretty(&metrics)
        .map_err(|e| crate::CampaignError::Invalid(e.to_string()))?;
    write(run.out, sculpt_nn::io::METRICS_FILE, &json)?;
    Ok(metrics)
}

/// The compression plan of trial `trial_id` of `campaign`, whose trials are in `dir`:
/// its stored parameters encoded into a point and decoded through the campaign's space,
/// as the trial itself was. Fine-tuning settings are the campaign's.
pub fn trial_plan(
    campaign: &crate::Campaign,
    dir: &Path,
    trial_id: u64,
) -> Result<(sculpt_compress::CompressionPlan, sculpt_nn::TrainConfig)> {
    let (meta, trials) = sculpt_store::Store::read(dir)?;
    let fingerprint = crate::executor::fingerprint(campaign)?;
    if meta.fingerprint != fingerprint || meta.name != campaign.name {
        return Err(crate::CampaignError::Invalid(format!(
            "{} holds trials of campaign `{}` ({}), not of {} as it is now ({}); a changed \
             campaign file would rebuild other plans than the trials ran",
            dir.display(),
            meta.name,
            meta.fingerprint,
            campaign.path.display(),
            fingerprint
        )));
    }
    let trial = trials
        .iter()
        .find(|t| t.trial_id == trial_id)
        .ok_or_else(|| {
            crate::CampaignError::Invalid(format!(
                "{} has no trial {trial_id} (it has {} trials)",
                dir.display(),
                trials.len()
            ))
        })?;
    let splits = sculpt_data::load(&campaign.data, campaign.seed)?;
    let spec = crate::executor::teacher_spec(campaign, &splits)?;
    trial_plan_in(campaign, &spec, trial, dir)
}

/// The compression plan of `trial` (stored in `dir`) for a teacher of architecture `spec`.
pub fn trial_plan_in(
    campaign: &crate::Campaign,
    spec: &sculpt_nn::GraphSpec,
    trial: &sculpt_store::TrialRecord,
    dir: &Path,
) -> Result<(sculpt_compress::CompressionPlan, sculpt_nn::TrainConfig)> {
    let space = crate::space::search_space(campaign, &sculpt_nn::zoo::init(spec.clone(), 0)?)?;
    let point = space.encode(&trial.params).ok_or_else(|| {
        crate::CampaignError::Invalid(format!(
            "trial {} of {} has parameters that do not fit the space of {}",
            trial.trial_id,
            dir.display(),
            campaign.path.display()
        ))
    })?;
    Ok((space.decode(&point)?, campaign.finetune.clone()))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    Ok(sculpt_nn::io::write_atomic(
        &dir.join(name),
        text.as_bytes(),
    )?)
}
