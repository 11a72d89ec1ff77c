//! The training loop: seeded shuffled mini-batches, AdamW with a cosine learning-rate
//! schedule, a caller-supplied loss (cross-entropy for teachers, distillation for students)
//! and a caller-supplied view of each weight (identity, or fake quantization with a
//! straight-through estimator). A non-finite loss stops training with an error.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{NnError, Result};
use crate::graph::Graph;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 60,
            batch_size: 64,
            learning_rate: 2e-3,
            weight_decay: 1e-4,
            seed: 0,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(NnError::Config("epochs must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(NnError::Config("batch_size must be at least 1".into()));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(NnError::Config(format!(
                "learning_rate must be positive, got {}",
                self.learning_rate
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(NnError::Config(format!(
                "weight_decay must be non-negative, got {}",
                self.weight_decay
            )));
        }
        Ok(())
    }
}

/// One mini-batch: samples, labels, and the rows of the dataset they came from (so a
/// loss can look up precomputed per-sample targets such as a teacher's logits).
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
    pub rows: Tensor,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub epochs: usize,
    pub loss: f64,
    pub train_accuracy: f64,
    pub samples_per_second: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    pub epochs: usize,
    pub seconds: f64,
    pub seconds_per_epoch: f64,
    pub samples_per_second: f64,
    pub final_loss: f64,
}

/// Plain cross-entropy against the labels.
pub fn cross_entropy(logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, &batch.y)?)
}

/// Trains `graph` in place. `weight_view` maps a parameter's name and trainable tensor to
/// the tensor the forward pass uses; gradients flow to the trainable tensor.
pub fn train(
    graph: &mut Graph,
    data: &Dataset,
    config: &TrainConfig,
    loss_fn: &dyn Fn(&Tensor, &Batch) -> Result<Tensor>,
    weight_view: &dyn Fn(&str, &Tensor) -> Result<Tensor>,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<TrainReport> {
    config.validate()?;
    let n = data.len();
    if n == 0 {
        return Err(NnError::Config("the training set is empty".into()));
    }
    let vars: BTreeMap<String, Var> = graph
        .params
        .iter()
        .map(|(name, t)| Ok((name.clone(), Var::from_tensor(t)?)))
        .collect::<Result<_>>()?;
    let live: BTreeMap<String, Tensor> = vars
        .iter()
        .map(|(name, v)| (name.clone(), v.as_tensor().clone()))
        .collect();
    let mut optimizer = AdamW::new(
        vars.values().cloned().collect(),
        ParamsAdamW {
            lr: config.learning_rate,
            weight_decay: config.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let param = |name: &str| -> Result<Tensor> {
        let t = live
            .get(name)
            .ok_or_else(|| NnError::Graph(format!("parameter `{name}` is missing")))?;
        weight_view(name, t)
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let device = crate::device();
    let started = Instant::now();
    let mut final_loss = f64::NAN;
    let total_steps = config.epochs * n.div_ceil(config.batch_size);
    let mut step = 0usize;
    for epoch in 0..config.epochs {
        let epoch_start = Instant::now();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0u64, 0usize);
        for (batch_index, chunk) in order.chunks(config.batch_size).enumerate() {
            // Cosine decay from the base rate to zero over all steps.
            let progress = step as f64 / total_steps as f64;
            optimizer.set_learning_rate(
                config.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            );
            let rows = Tensor::from_slice(chunk, chunk.len(), &device)?;
            let batch = Batch {
                x: data.x.index_select(&rows, 0)?,
                y: data.y.index_select(&rows, 0)?,
                rows,
            };
            let logits = graph.forward_with(&batch.x, &param)?;
            let loss = loss_fn(&logits, &batch)?;
            let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(NnError::NonFiniteLoss {
                    epoch: epoch + 1,
                    step: batch_index + 1,
                    value,
                });
            }
            optimizer.backward_step(&loss)?;
            loss_sum += value as f64 * chunk.len() as f64;
            correct += count_correct(&logits, &batch.y)?;
            seen += chunk.len();
            step += 1;
        }
        final_loss = loss_sum / seen as f64;
        on_epoch(&EpochStats {
            epoch: epoch + 1,
            epochs: config.epochs,
            loss: final_loss,
            train_accuracy: correct as f64 / seen as f64,
            samples_per_second: seen as f64 / epoch_start.elapsed().as_secs_f64(),
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    for (name, var) in vars {
        graph.params.insert(name, var.as_detached_tensor());
    }
    Ok(TrainReport {
        epochs: config.epochs,
        seconds,
        seconds_per_epoch: seconds / config.epochs as f64,
        samples_per_second: (n * config.epochs) as f64 / seconds,
        final_loss,
    })
}

fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<u64> {
    let predicted = logits.argmax(1)?;
    Ok(predicted
        .eq(labels)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as u64)
}

/// Logits of the whole dataset, computed in chunks.
pub fn predict_logits(graph: &Graph, data: &Dataset) -> Result<Tensor> {
    const CHUNK: usize = 512;
    let mut parts = Vec::new();
    let n = data.len();
    let mut start = 0;
    while start < n {
        let len = CHUNK.min(n - start);
        parts.push(graph.forward(&data.x.narrow(0, start, len)?)?);
        start += len;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Fraction of `data` that `graph` classifies correctly, between 0 and 1.
pub fn accuracy(graph: &Graph, data: &Dataset) -> Result<f64> {
    if data.is_empty() {
        return Err(NnError::Config("cannot score an empty dataset".into()));
    }
    let logits = predict_logits(graph, data)?;
    Ok(count_correct(&logits, &data.y)? as f64 / data.len() as f64)
}
