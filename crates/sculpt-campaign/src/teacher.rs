//! Training a model from the zoo (what `sculpt train` and a campaign without teacher
//! weights do), and the metrics written beside it.

use std::path::Path;

use sculpt_nn::{Graph, Splits, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::error::{CampaignError, Result};

/// What `metrics.json` holds for a trained model. Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainMetrics {
    pub model: String,
    pub data: String,
    pub seed: u64,
    pub test_accuracy: f64,
    pub val_accuracy: f64,
    pub train_accuracy: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seconds_per_epoch: f64,
    pub samples_per_second: f64,
    pub params: usize,
    pub size_bytes: u64,
    pub flops: u64,
}

/// A teacher given as weights: a model directory, or an ONNX file imported on the fly.
/// `preprocessing` (the campaign's `[teacher] preprocessing`) overrides the model's own.
pub fn weights_graph(
    path: &Path,
    preprocessing: Option<&sculpt_nn::Preprocessing>,
) -> Result<Graph> {
    let mut graph = if path.is_file() {
        sculpt_onnx::import_file(path).map_err(|e| {
            CampaignError::Invalid(match e {
                // These name the file already.
                sculpt_onnx::OnnxError::Io { .. } | sculpt_onnx::OnnxError::Decode { .. } => {
                    format!("the teacher: {e}")
                }
                other => format!("the teacher {}: {other}", path.display()),
            })
        })?
    } else {
        sculpt_nn::io::load(path)?
    };
    if let Some(p) = preprocessing {
        graph.spec.preprocessing = Some(p.clone());
    }
    Ok(graph)
}

/// The architecture of a weights teacher (see [`weights_graph`]).
pub fn weights_spec(
    path: &Path,
    preprocessing: Option<&sculpt_nn::Preprocessing>,
) -> Result<sculpt_nn::GraphSpec> {
    if path.is_file() {
        return Ok(weights_graph(path, preprocessing)?.spec);
    }
    let mut spec = sculpt_nn::io::load_spec(&path.join(sculpt_nn::io::SPEC_FILE))?;
    if let Some(p) = preprocessing {
        spec.preprocessing = Some(p.clone());
    }
    Ok(spec)
}

/// The bytes that identify a weights teacher: the ONNX file, or `model.safetensors`.
pub fn weights_bytes(path: &Path) -> Result<Vec<u8>> {
    let file = if path.is_file() {
        path.to_path_buf()
    } else {
        path.join(sculpt_nn::io::WEIGHTS_FILE)
    };
    std::fs::read(&file).map_err(|e| CampaignError::Io {
        path: file,
        cause: e,
    })
}

/// The splits as the model in `dir` (of architecture `spec`) expects them: checked to fit,
/// then remapped to the preprocessing the model declares (see [`sculpt_data::conform`]).
/// A model without a declaration that sculpt itself trained on this very source (its
/// `metrics.json` says so) was trained on sculpt's standardisation, and is fed it without
/// a warning; any other gets the warning.
pub fn fit_data(
    dir: &std::path::Path,
    spec: &sculpt_nn::GraphSpec,
    mut splits: Splits,
) -> Result<(Splits, Option<String>)> {
    // A model that takes the same values in another shape (an MLP exported with
    // [784] inputs, for 1×28×28 images) gets its samples reshaped.
    let sample = splits.train.sample_shape();
    if spec.input_shape != sample
        && spec.input_shape.iter().product::<usize>() == sample.iter().product::<usize>()
    {
        for d in [&mut splits.train, &mut splits.val, &mut splits.test] {
            let mut shape = vec![d.len()];
            shape.extend(&spec.input_shape);
            d.x = d.x.reshape(shape)?;
        }
    }
    check_fits(spec, &splits)?;
    if spec.preprocessing.is_none()
        && crate::standalone::training_record(dir).is_some_and(|m| m.data == splits.source)
    {
        return Ok((splits, None));
    }
    Ok(sculpt_data::conform(
        splits,
        spec,
        &dir.display().to_string(),
    )?)
}

/// Checks that a model takes the data's samples and predicts its classes.
pub fn check_fits(spec: &sculpt_nn::GraphSpec, splits: &Splits) -> Result<()> {
    if spec.input_shape != splits.train.sample_shape()
        || spec.num_classes != splits.train.num_classes
    {
        return Err(CampaignError::Invalid(format!(
            "the model takes inputs {:?} with {} classes, but {} has samples {:?} with {} classes",
            spec.input_shape,
            spec.num_classes,
            splits.source,
            splits.train.sample_shape(),
            splits.train.num_classes
        )));
    }
    Ok(())
}

/// Trains zoo model `model` on `splits` and writes `model.toml`, `model.safetensors` and
/// `metrics.json` into `out`. A checkpoint is kept in `out` after every epoch; with
/// `resume`, training continues from it. `on_epoch` sees each epoch's statistics.
pub fn train_model(
    model: &str,
    splits: &Splits,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    stop: Option<&std::sync::atomic::AtomicBool>,
    on_epoch: &mut dyn FnMut(&sculpt_nn::EpochStats),
) -> Result<(Graph, TrainMetrics)> {
    // A path to a model spec (TOML) trains a custom architecture; anything else names a
    // zoo model.
    let mut graph = if model.ends_with(".toml") {
        let spec = sculpt_nn::io::load_spec(Path::new(model))?;
        check_fits(&spec, splits).map_err(|e| CampaignError::Invalid(format!("{model}: {e}")))?;
        sculpt_nn::zoo::init(spec, config.seed)?
    } else {
        sculpt_nn::zoo::build(
            model,
            &splits.train.sample_shape(),
            splits.train.num_classes,
            config.seed,
        )?
    };
    let report = sculpt_nn::train(
        &mut graph,
        &splits.train,
        config,
        &sculpt_nn::train::cross_entropy,
        &|_, w| Ok(w.clone()),
        on_epoch,
        Some(&sculpt_nn::train::Checkpointing {
            dir: out,
            resume,
            stop,
        }),
    )?;
    let metrics = TrainMetrics {
        model: model.to_string(),
        data: splits.source.clone(),
        seed: config.seed,
        test_accuracy: sculpt_nn::accuracy(&graph, &splits.test)?,
        val_accuracy: sculpt_nn::accuracy(&graph, &splits.val)?,
        train_accuracy: sculpt_nn::accuracy(&graph, &splits.train)?,
        epochs: report.epochs,
        batch_size: config.batch_size,
        learning_rate: config.learning_rate,
        seconds_per_epoch: report.seconds_per_epoch,
        samples_per_second: report.samples_per_second,
        params: graph.num_params(),
        size_bytes: sculpt_compress::model_size_bytes(&graph)?,
        flops: graph.flops()?,
    };
    // The model records what it was trained on, so anything that scores it later feeds
    // it the same inputs.
    let mut graph = graph;
    graph.spec.preprocessing = Some(splits.preprocessing.clone());
    sculpt_nn::io::save(&graph, out)?;
    sculpt_nn::train::remove_checkpoint(out);
    sculpt_nn::train::remove_checkpoint(out);
    let path = out.join(sculpt_nn::io::METRICS_FILE);
    let text = serde_json::to_string_pretty(&metrics)
        .map_err(|e| CampaignError::Invalid(e.to_string()))?;
    sculpt_nn::io::write_atomic(&path, text.as_bytes())?;
    Ok((graph, metrics))
}
