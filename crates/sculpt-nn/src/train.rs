//! The training loop: seeded shuffled mini-batches, AdamW with a cosine learning-rate
//! schedule, a caller-supplied loss (cross-entropy for teachers, distillation for students)
//! and a caller-supplied view of each weight (identity, or fake quantization with a
//! straight-through estimator). A non-finite loss stops training with an error.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{NnError, Result};
use crate::graph::{ForwardContext, Graph, GraphSpec};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum OptimizerKind {
    /// AdamW with decoupled weight decay (betas 0.9, 0.999; eps 1e-8), as in PyTorch.
    AdamW,
    /// SGD with momentum and L2 weight decay, as PyTorch's `SGD` (no dampening).
    Sgd { momentum: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Schedule {
    Constant,
    /// Cosine decay from the base rate to zero over all steps.
    Cosine,
    /// Multiply the rate by `gamma` every `every` epochs.
    Step {
        every: usize,
        gamma: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub seed: u64,
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
}

fn default_optimizer() -> OptimizerKind {
    OptimizerKind::AdamW
}

fn default_schedule() -> Schedule {
    Schedule::Cosine
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 60,
            batch_size: 64,
            learning_rate: 2e-3,
            weight_decay: 1e-4,
            seed: 0,
            optimizer: OptimizerKind::AdamW,
            schedule: Schedule::Cosine,
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
        if let OptimizerKind::Sgd { momentum } = self.optimizer {
            if !(0.0..1.0).contains(&momentum) {
                return Err(NnError::Config(format!(
                    "momentum must lie in [0, 1), got {momentum}"
                )));
            }
        }
        if let Schedule::Step { every, gamma } = self.schedule {
            if every == 0 || !(gamma.is_finite() && gamma > 0.0) {
                return Err(NnError::Config(format!(
                    "a step schedule needs every >= 1 and gamma > 0, got every = {every}, gamma = {gamma}"
                )));
            }
        }
        Ok(())
    }

    /// The learning rate of `step` (0-based) in `epoch` (0-based).
    pub fn rate_at(&self, epoch: usize, step: usize, total_steps: usize) -> f64 {
        match self.schedule {
            Schedule::Constant => self.learning_rate,
            Schedule::Cosine => {
                let progress = step as f64 / total_steps.max(1) as f64;
                self.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Schedule::Step { every, gamma } => {
                self.learning_rate * gamma.powi((epoch / every) as i32)
            }
        }
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
    /// Epochs run by this call (fewer than `epochs` after a resume).
    pub epochs_run: usize,
    pub seconds: f64,
    pub seconds_per_epoch: f64,
    pub samples_per_second: f64,
    pub final_loss: f64,
}

/// What a loss sees of one training step: the logits, the batch, the values of the nodes
/// the objective asked to capture, and the (viewed) parameters, including any extra
/// trainable tensors the caller added to the graph (a feature adapter's weights).
pub struct LossInput<'a> {
    pub logits: &'a Tensor,
    pub batch: &'a Batch,
    pub features: &'a BTreeMap<String, Tensor>,
    pub param: &'a dyn Fn(&str) -> Result<Tensor>,
}

/// A training objective. Any `Fn(&logits, &batch) -> loss` is one; objectives that need
/// intermediate values name the nodes to capture.
pub trait Objective: Sync {
    /// Nodes whose values `loss` needs in `LossInput::features`.
    fn captures(&self) -> Vec<String> {
        Vec::new()
    }
    fn loss(&self, input: &LossInput) -> Result<Tensor>;
}

impl<F: Fn(&Tensor, &Batch) -> Result<Tensor> + Sync> Objective for F {
    fn loss(&self, input: &LossInput) -> Result<Tensor> {
        self(input.logits, input.batch)
    }
}

/// Plain cross-entropy against the labels.
pub fn cross_entropy(logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, &batch.y)?)
}

/// The optimizers, written out so that their state can be checkpointed exactly.
struct Optimizer {
    kind: OptimizerKind,
    weight_decay: f64,
    vars: Vec<(String, Var)>,
    /// AdamW first moments, or SGD velocities.
    first: Vec<Tensor>,
    /// AdamW second moments (unused by SGD).
    second: Vec<Tensor>,
    step: usize,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl Optimizer {
    fn new(kind: OptimizerKind, weight_decay: f64, vars: Vec<(String, Var)>) -> Result<Self> {
        let zeros = |v: &Var| v.zeros_like();
        let first = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        let second = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        Ok(Optimizer {
            kind,
            weight_decay,
            vars,
            first,
            second,
            step: 0,
        })
    }

    /// One step from the gradients of each variable, in order.
    fn apply(&mut self, grads: &[Option<Tensor>], rate: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(grad) = &grads[i] else {
                continue;
            };
            let w = var.as_tensor();
            match self.kind {
                OptimizerKind::AdamW => {
                    // Three passes in place (the moments, then the weights), where the
                    // tensor expressions took a dozen passes, each allocating.
                    let grad = grad.contiguous()?;
                    self.first[i].inplace_op2(
                        &grad,
                        &Moment {
                            beta: BETA1 as f32,
                            squared: false,
                        },
                    )?;
                    self.second[i].inplace_op2(
                        &grad,
                        &Moment {
                            beta: BETA2 as f32,
                            squared: true,
                        },
                    )?;
                    w.inplace_op3(
                        &self.first[i],
                        &self.second[i],
                        &AdamWUpdate {
                            rate: rate as f32,
                            decay: (1.0 - rate * self.weight_decay) as f32,
                            correction1: (1.0 - BETA1.powi(t)) as f32,
                            correction2: (1.0 - BETA2.powi(t)) as f32,
                            eps: EPS as f32,
                        },
                    )?;
                }
                OptimizerKind::Sgd { momentum } => {
                    let g = if self.weight_decay > 0.0 {
                        (grad + (w * self.weight_decay)?)?
                    } else {
                        grad.clone()
                    };
                    let velocity = if self.step == 1 {
                        g
                    } else {
                        ((&self.first[i] * momentum)? + g)?
                    };
                    var.set(&(w - (&velocity * rate)?)?)?;
                    self.first[i] = velocity;
                }
            }
        }
        Ok(())
    }
}

/// The contiguous f32 values of a CPU tensor's storage.
fn values<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => candle_core::bail!("{op}: needs a contiguous f32 tensor"),
    }
}

fn values_mut<'a>(
    storage: &'a mut candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a mut [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(v), Some((start, end))) => Ok(&mut v[start..end]),
        _ => candle_core::bail!("{op}: needs a contiguous f32 tensor"),
    }
}

/// An AdamW moment updated in place from the gradient: `m = β m + (1 - β) g`, or with
/// `squared`, `v = β v + (1 - β) g²`.
struct Moment {
    beta: f32,
    squared: bool,
}

impl candle_core::InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let m = values_mut(s1, l1, self.name())?;
        let g = values(s2, l2, self.name())?;
        if m.len() != g.len() {
            candle_core::bail!(
                "adamw-moment: {} moments for {} gradients",
                m.len(),
                g.len()
            );
        }
        let (b, c) = (self.beta, 1.0 - self.beta);
        let squared = self.squared;
        par_zip(m, g, |m, g| {
            if squared {
                m.iter_mut()
                    .zip(g)
                    .for_each(|(m, g)| *m = b * *m + c * g * g);
            } else {
                m.iter_mut().zip(g).for_each(|(m, g)| *m = b * *m + c * g);
            }
        });
        Ok(())
    }
}

/// The gradients of `loss` for each of `vars`, in order.
fn gradients(vars: &[Tensor], loss: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let grads = loss.backward()?;
    Ok(vars.iter().map(|v| grads.get(v).cloned()).collect())
}

/// Element-wise passes over parameters split into chunks of this many floats across the
/// pool (each element is computed alone, so the split changes nothing but the time).
const PAR_CHUNK: usize = 16 * 1024;

/// `f(dst chunk, src chunk)` over equal chunks of two slices, across the pool.
fn par_zip(dst: &mut [f32], src: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    if dst.len() < 2 * PAR_CHUNK || rayon::current_num_threads() == 1 {
        f(dst, src);
        return;
    }
    dst.par_chunks_mut(PAR_CHUNK)
        .zip(src.par_chunks(PAR_CHUNK))
        .for_each(|(d, s)| f(d, s));
}

/// The shards' gradients of one variable summed in shard order, one pass across the pool.
fn sum_in_order(grads: &[Tensor]) -> Result<Tensor> {
    let first = &grads[0];
    let parts = grads
        .iter()
        .map(|g| Ok(g.contiguous()?.flatten_all()?))
        .collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = parts.iter().map(|t| t.storage_and_layout()).collect();
    let slices = guards
        .iter()
        .map(|(s, l)| match &**s {
            candle_core::Storage::Cpu(c) => Ok(values(c, l, "gradient-sum")?),
            _ => Err(NnError::Graph("gradients must be on the CPU".into())),
        })
        .collect::<Result<Vec<&[f32]>>>()?;
    let mut out = slices[0].to_vec();
    for other in &slices[1..] {
        par_zip(&mut out, other, |o, g| {
            o.iter_mut().zip(g).for_each(|(o, g)| *o += g);
        });
    }
    Ok(Tensor::from_vec(out, first.shape(), first.device())?)
}

/// The AdamW step on the weights, in place, from the updated moments:
/// `w = w (1 - lr·wd) - lr (m / c1) / (sqrt(v / c2) + ε)`.
struct AdamWUpdate {
    rate: f32,
    decay: f32,
    correction1: f32,
    correction2: f32,
    eps: f32,
}

impl candle_core::InplaceOp3 for AdamWUpdate {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let w = values_mut(s1, l1, self.name())?;
        let m = values(s2, l2, self.name())?;
        let v = values(s3, l3, self.name())?;
        if w.len() != m.len() || w.len() != v.len() {
            candle_core::bail!("adamw-update: weights and moments differ in length");
        }
        let (c1, c2) = (1.0 / self.correction1, 1.0 / self.correction2);
        let (rate, decay, eps) = (self.rate, self.decay, self.eps);
        let update = |w: &mut [f32], m: &[f32], v: &[f32]| {
            for ((w, m), v) in w.iter_mut().zip(m).zip(v) {
                *w = *w * decay - rate * (m * c1) / ((v * c2).sqrt() + eps);
            }
        };
        if w.len() < 2 * PAR_CHUNK || rayon::current_num_threads() == 1 {
            update(w, m, v);
        } else {
            w.par_chunks_mut(PAR_CHUNK)
                .zip(m.par_chunks(PAR_CHUNK).zip(v.par_chunks(PAR_CHUNK)))
                .for_each(|(w, (m, v))| update(w, m, v));
        }
        Ok(())
    }
}

/// Where a training run keeps its per-epoch checkpoint, and whether to resume from it.
pub struct Checkpointing<'a> {
    pub dir: &'a Path,
    pub resume: bool,
    /// Raised (by a Ctrl-C handler) to stop at the end of the current epoch, once its
    /// checkpoint is written: training then fails with [`NnError::Interrupted`].
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
const CHECKPOINT_META: &str = "checkpoint.json";

/// What a checkpoint was made with, checked on resume. The progress itself (epochs and
/// steps done) lives inside the tensor file as `__checkpoint.progress`, so the weights, the
/// optimizer state and the progress always change together, in one rename.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    config: TrainConfig,
    spec_name: String,
}

const PROGRESS_TENSOR: &str = "__checkpoint.progress";

/// Mixes a seed with counters for per-epoch and per-step random streams, so a resumed run
/// draws exactly what an uninterrupted one would have.
fn stream_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Trains `graph` in place. `weight_view` maps a parameter's name and trainable tensor to
/// the tensor the forward pass uses; gradients flow to the trainable tensor. With
/// `checkpoint`, the weights and optimizer state are saved after every epoch, and a
/// resumed run continues exactly where the saved one stopped.
pub fn train(
    graph: &mut Graph,
    data: &Dataset,
    config: &TrainConfig,
    loss_fn: &dyn Objective,
    weight_view: &WeightView<'_>,
    on_epoch: &mut dyn FnMut(&EpochStats),
    checkpoint: Option<&Checkpointing>,
) -> Result<TrainReport> {
    train_gated(
        graph,
        data,
        config,
        loss_fn,
        weight_view,
        on_epoch,
        checkpoint,
        None,
    )
}

/// Maps a parameter's name and trainable tensor to the tensor the forward pass uses.
/// Shards of a batch run on several threads, so it is `Sync`.
pub type WeightView<'a> = dyn Fn(&str, &Tensor) -> Result<Tensor> + Sync + 'a;

/// On more than one thread, a batch is split into one shard per thread (at most
/// `MAX_SHARDS`, and none smaller than `MIN_SHARD` samples), each run forward and backward
/// on its own thread, with the gradients summed in shard order and applied once, as
/// data-parallel training does. Splitting the small products of these networks across
/// threads inside one pass gained little; whole passes side by side scale. A seed gives
/// the same weights for the same thread count; graphs with batch norm are never split
/// (their statistics are the whole batch's).
const MAX_SHARDS: usize = 8;

/// The smallest shard.
const MIN_SHARD: usize = 8;

/// Shards of a batch of `len` samples on `threads` threads.
fn shard_count(len: usize, threads: usize) -> usize {
    threads.min(MAX_SHARDS).min(len / MIN_SHARD).max(1)
}

/// What one shard of a batch gives: its mean loss, its size, its correct predictions, its
/// gradients (of its loss scaled by its share of the batch) and its buffer updates.
struct ShardResult {
    loss: f64,
    len: usize,
    correct: u64,
    grads: Vec<Option<Tensor>>,
    buffer_updates: Vec<(String, Tensor)>,
}

/// Decides, after an epoch, whether training goes on: it sees the epoch just finished
/// (counted from 1) and the graph with the weights reached so far, and answers `true` to
/// continue. Successive halving scores a candidate here and stops the ones that are not
/// promoted, keeping the full run's learning-rate schedule.
pub type EpochGate<'a> = dyn FnMut(usize, &Graph) -> Result<bool> + 'a;

/// [`train`], with a `gate` asked after every epoch but the last; when it answers
/// `false`, training stops there and the graph keeps the weights reached
/// ([`TrainReport::epochs_run`] says how many epochs ran).
#[allow(clippy::too_many_arguments)]
pub fn train_gated(
    graph: &mut Graph,
    data: &Dataset,
    config: &TrainConfig,
    loss_fn: &dyn Objective,
    weight_view: &WeightView<'_>,
    on_epoch: &mut dyn FnMut(&EpochStats),
    checkpoint: Option<&Checkpointing>,
    mut gate: Option<&mut EpochGate>,
) -> Result<TrainReport> {
    config.validate()?;
    let n = data.len();
    if n == 0 {
        return Err(NnError::Config("the training set is empty".into()));
    }
    let mut start_epoch = 0;
    let mut step = 0usize;
    let mut saved_state: Option<HashMap<String, Tensor>> = None;
    if let Some(ck) = checkpoint.filter(|c| c.resume) {
        let meta_path = ck.dir.join(CHECKPOINT_META);
        if meta_path.is_file() {
            let text =
                std::fs::read_to_string(&meta_path).map_err(|e| NnError::io(&meta_path, e))?;
            let meta: CheckpointMeta = serde_json::from_str(&text).map_err(|e| NnError::Spec {
                path: meta_path.clone(),
                message: e.to_string(),
            })?;
            if meta.config != *config || meta.spec_name != graph.spec.name {
                return Err(NnError::Spec {
                    path: meta_path,
                    message:
                        "the checkpoint was made with other training settings or another model; \
                              resume with the same settings, or train without --resume"
                            .into(),
                });
            }
            let path = ck.dir.join(CHECKPOINT_FILE);
            let tensors = candle_core::safetensors::load(&path, &crate::device())?;
            let progress: Vec<u32> = tensors
                .get(PROGRESS_TENSOR)
                .ok_or_else(|| NnError::Spec {
                    path: path.clone(),
                    message: format!("not a checkpoint: `{PROGRESS_TENSOR}` is missing"),
                })?
                .to_vec1()?;
            for (name, t) in &tensors {
                if graph.params.contains_key(name) {
                    graph.params.insert(name.clone(), t.clone());
                }
            }
            start_epoch = progress[0] as usize;
            step = progress[1] as usize;
            saved_state = Some(tensors);
        }
    }
    let trainable: Vec<(String, Var)> = graph
        .params
        .iter()
        .filter(|(name, _)| !GraphSpec::is_buffer(name))
        .map(|(name, t)| Ok((name.clone(), Var::from_tensor(t)?)))
        .collect::<Result<_>>()?;
    let live: BTreeMap<String, Tensor> = trainable
        .iter()
        .map(|(name, v)| (name.clone(), v.as_tensor().clone()))
        .collect();
    let buffers: std::cell::RefCell<BTreeMap<String, Tensor>> = std::cell::RefCell::new(
        graph
            .params
            .iter()
            .filter(|(name, _)| GraphSpec::is_buffer(name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let mut optimizer = Optimizer::new(config.optimizer, config.weight_decay, trainable)?;
    if let Some(state) = &saved_state {
        for (i, (name, _)) in optimizer.vars.iter().enumerate() {
            if let Some(m) = state.get(&format!("__optimizer.first.{name}")) {
                optimizer.first[i] = m.clone();
            }
            if let Some(v) = state.get(&format!("__optimizer.second.{name}")) {
                optimizer.second[i] = v.clone();
            }
        }
        optimizer.step = step;
    }
    let param_in = |buffers: &BTreeMap<String, Tensor>, name: &str| -> Result<Tensor> {
        if let Some(t) = live.get(name) {
            return weight_view(name, t);
        }
        buffers
            .get(name)
            .cloned()
            .ok_or_else(|| NnError::Graph(format!("parameter `{name}` is missing")))
    };
    let sharded = !graph
        .spec
        .nodes
        .iter()
        .any(|n| matches!(n.op, crate::graph::Op::BatchNorm2d { .. }));
    let device = crate::device();
    // The trained tensors, whose gradients each shard's backward pass collects.
    let tracked: Vec<Tensor> = optimizer
        .vars
        .iter()
        .map(|(_, v)| v.as_tensor().clone())
        .collect();
    let captures = loss_fn.captures();
    let started = Instant::now();
    let mut final_loss = f64::NAN;
    let steps_per_epoch = n.div_ceil(config.batch_size);
    let total_steps = config.epochs * steps_per_epoch;
    let mut order: Vec<u32> = (0..n as u32).collect();
    // The epoch training ends after: the last, unless the gate stops it earlier.
    let mut last_epoch = config.epochs;
    for epoch in start_epoch..config.epochs {
        let epoch_start = Instant::now();
        order.sort_unstable();
        order.shuffle(&mut StdRng::seed_from_u64(stream_seed(
            config.seed,
            epoch as u64,
            u64::MAX,
        )));
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0u64, 0usize);
        for (batch_index, chunk) in order.chunks(config.batch_size).enumerate() {
            let seed = stream_seed(config.seed, epoch as u64, batch_index as u64);
            let threads = rayon::current_num_threads();
            let shards = if sharded {
                shard_count(chunk.len(), threads)
            } else {
                1
            };
            let size = chunk.len().div_ceil(shards);
            // The buffers as they were before this step, read by every shard.
            let frozen = buffers.borrow();
            let before: &BTreeMap<String, Tensor> = &frozen;
            let shard = |i: usize, rows: &[u32]| -> Result<ShardResult> {
                let param = |name: &str| param_in(before, name);
                let index = Tensor::from_slice(rows, rows.len(), &device)?;
                let batch = Batch {
                    x: data.x.index_select(&index, 0)?,
                    y: data.y.index_select(&index, 0)?,
                    rows: index,
                };
                // The whole batch keeps the step's seed; each shard of a split one has
                // its own stream.
                let seed = if shards == 1 {
                    seed
                } else {
                    stream_seed(seed, u64::MAX, i as u64)
                };
                let mut ctx = ForwardContext::train(seed).capturing(captures.iter().cloned());
                let logits = graph.forward_ctx(&batch.x, &param, &mut ctx)?;
                let features = std::mem::take(&mut ctx.captured);
                let loss = loss_fn.loss(&LossInput {
                    logits: &logits,
                    batch: &batch,
                    features: &features,
                    param: &param,
                })?;
                let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                let grads = if !value.is_finite() {
                    Vec::new()
                } else if shards == 1 {
                    gradients(&tracked, &loss)?
                } else {
                    gradients(
                        &tracked,
                        &(loss * (rows.len() as f64 / chunk.len() as f64))?,
                    )?
                };
                Ok(ShardResult {
                    loss: value as f64,
                    len: rows.len(),
                    correct: count_correct(&logits, &batch.y)?,
                    grads,
                    buffer_updates: ctx.buffer_updates,
                })
            };
            let rate = config.rate_at(epoch, step, total_steps);
            let vars = optimizer.vars.len();
            // The whole step: the shards side by side, then their gradients summed and
            // applied. The step's loss comes back non-finite, and nothing is applied, when
            // training diverged.
            let whole_step = |optimizer: &mut Optimizer| -> Result<(f64, u64, Vec<_>)> {
                let results: Vec<ShardResult> = if shards == 1 {
                    vec![shard(0, chunk)?]
                } else {
                    chunk
                        .par_chunks(size)
                        .enumerate()
                        .map(|(i, rows)| shard(i, rows))
                        .collect::<Result<_>>()?
                };
                let value =
                    results.iter().map(|r| r.loss * r.len as f64).sum::<f64>() / chunk.len() as f64;
                if !value.is_finite() {
                    return Ok((value, 0, Vec::new()));
                }
                // The shards' gradients summed in shard order, so the sum does not depend
                // on which thread finished first.
                let mut per_var: Vec<Vec<Tensor>> = vec![Vec::new(); vars];
                let mut updates = Vec::new();
                let mut correct_now = 0;
                for r in results {
                    for (all, g) in per_var.iter_mut().zip(r.grads) {
                        all.extend(g);
                    }
                    updates.extend(r.buffer_updates);
                    correct_now += r.correct;
                }
                let grads = per_var
                    .into_iter()
                    .map(|all| match all.len() {
                        0 => Ok(None),
                        1 => Ok(all.into_iter().next()),
                        _ => sum_in_order(&all).map(Some),
                    })
                    .collect::<Result<Vec<_>>>()?;
                optimizer.apply(&grads, rate)?;
                Ok((value, correct_now, updates))
            };
            // On several threads the step runs on a thread of the pool, so that its
            // parallel parts start without waking a pool from outside (one hand-over per
            // step instead of one per parallel op).
            let (value, correct_now, updates) = if threads > 1 {
                let optimizer = &mut optimizer;
                rayon::scope(|_| whole_step(optimizer))?
            } else {
                whole_step(&mut optimizer)?
            };
            drop(frozen);
            if !value.is_finite() {
                return Err(NnError::NonFiniteLoss {
                    epoch: epoch + 1,
                    step: batch_index + 1,
                    value: value as f32,
                });
            }
            let mut b = buffers.borrow_mut();
            for (name, t) in updates {
                b.insert(name, t);
            }
            drop(b);
            loss_sum += value * chunk.len() as f64;
            correct += correct_now;
            seen += chunk.len();
            step += 1;
        }
        final_loss = loss_sum / seen as f64;
        let epoch_seconds = epoch_start.elapsed().as_secs_f64();
        // The checkpoint is written before observers hear of the epoch, so an epoch they
        // have seen is always on disk.
        if let Some(ck) = checkpoint {
            let mut tensors: HashMap<String, Tensor> = HashMap::new();
            for (i, (name, var)) in optimizer.vars.iter().enumerate() {
                tensors.insert(name.clone(), var.as_detached_tensor());
                tensors.insert(
                    format!("__optimizer.first.{name}"),
                    optimizer.first[i].clone(),
                );
                tensors.insert(
                    format!("__optimizer.second.{name}"),
                    optimizer.second[i].clone(),
                );
            }
            for (name, t) in buffers.borrow().iter() {
                tensors.insert(name.clone(), t.clone());
            }
            tensors.insert(
                PROGRESS_TENSOR.to_string(),
                Tensor::new(&[(epoch + 1) as u32, step as u32], &device)?,
            );
            std::fs::create_dir_all(ck.dir).map_err(|e| NnError::io(ck.dir, e))?;
            let meta = CheckpointMeta {
                config: config.clone(),
                spec_name: graph.spec.name.clone(),
            };
            let text =
                serde_json::to_string_pretty(&meta).map_err(|e| NnError::Config(e.to_string()))?;
            crate::io::write_atomic(&ck.dir.join(CHECKPOINT_META), text.as_bytes())?;
            let tmp = ck.dir.join(format!("{CHECKPOINT_FILE}.tmp"));
            crate::io::save_tensors(&tensors, &tmp)?;
            std::fs::rename(&tmp, ck.dir.join(CHECKPOINT_FILE))
                .map_err(|e| NnError::io(ck.dir, e))?;
        }
        on_epoch(&EpochStats {
            epoch: epoch + 1,
            epochs: config.epochs,
            loss: final_loss,
            train_accuracy: correct as f64 / seen as f64,
            samples_per_second: seen as f64 / epoch_seconds,
        });
        if let Some(stop) = checkpoint.and_then(|c| c.stop) {
            if stop.load(std::sync::atomic::Ordering::SeqCst) && epoch + 1 < config.epochs {
                return Err(NnError::Interrupted {
                    epoch: epoch + 1,
                    epochs: config.epochs,
                });
            }
        }
        if let Some(gate) = gate.as_mut().filter(|_| epoch + 1 < config.epochs) {
            let mut snapshot = Graph {
                spec: graph.spec.clone(),
                params: graph.params.clone(),
            };
            for (name, var) in &optimizer.vars {
                snapshot
                    .params
                    .insert(name.clone(), var.as_detached_tensor());
            }
            for (name, t) in buffers.borrow().iter() {
                snapshot.params.insert(name.clone(), t.clone());
            }
            if !gate(epoch + 1, &snapshot)? {
                last_epoch = epoch + 1;
                break;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    for (name, var) in &optimizer.vars {
        graph.params.insert(name.clone(), var.as_detached_tensor());
    }
    for (name, t) in buffers.into_inner() {
        graph.params.insert(name, t);
    }
    let epochs_run = last_epoch - start_epoch;
    Ok(TrainReport {
        epochs: config.epochs,
        epochs_run,
        seconds,
        seconds_per_epoch: seconds / epochs_run.max(1) as f64,
        samples_per_second: (n * epochs_run) as f64 / seconds.max(1e-9),
        final_loss,
    })
}

/// Removes a finished run's checkpoint.
pub fn remove_checkpoint(dir: &Path) {
    // The settings file first: without it a leftover tensor file is never resumed from.
    let _ = std::fs::remove_file(dir.join(CHECKPOINT_META));
    let _ = std::fs::remove_file(dir.join(CHECKPOINT_FILE));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded digits, every sample as training data, pixels scaled to [0, 1]. (The
    /// data loaders live in sculpt-data, which depends on this crate.)
    fn digits() -> Dataset {
        let raw = smartcore::dataset::digits::load_dataset();
        let n = raw.num_samples;
        let x: Vec<f32> = raw.data.iter().map(|v| v / 16.0).collect();
        let y: Vec<u32> = raw.target.iter().map(|&t| t as u32).collect();
        Dataset {
            x: Tensor::from_vec(x, (n, raw.num_features), &crate::device()).unwrap(),
            y: Tensor::from_vec(y, n, &crate::device()).unwrap(),
            num_classes: 10,
        }
    }

    fn digits_run(
        config: &TrainConfig,
        dir: &Path,
        resume: bool,
        stop_after: Option<usize>,
    ) -> Graph {
        let train_set = digits();
        let spec = crate::graph::GraphSpec {
            nodes: crate::zoo::mlp_spec("small", &[64], &[32], 10).nodes,
            ..crate::zoo::mlp_spec("small", &[64], &[32], 10)
        };
        let mut graph = crate::zoo::init(spec, 5).unwrap();
        let mut on_epoch = |s: &EpochStats| {
            if Some(s.epoch) == stop_after {
                panic!("killed after epoch {}", s.epoch);
            }
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            train(
                &mut graph,
                &train_set,
                config,
                &cross_entropy,
                &|_, w| Ok(w.clone()),
                &mut on_epoch,
                Some(&Checkpointing {
                    dir,
                    resume,
                    stop: None,
                }),
            )
        }));
        if stop_after.is_none() {
            result.unwrap().unwrap();
        }
        graph
    }

    fn weights(g: &Graph) -> Vec<f32> {
        g.params
            .values()
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    }

    /// A raised stop flag ends training at the end of the epoch, with its checkpoint
    /// written, and a rerun resumes from it to the same weights as a straight run.
    #[test]
    fn a_stop_request_ends_training_after_the_epoch_and_keeps_the_checkpoint() {
        let config = TrainConfig {
            epochs: 3,
            batch_size: 64,
            learning_rate: 0.01,
            ..TrainConfig::default()
        };
        let straight = tempfile::tempdir().unwrap();
        let whole = digits_run(&config, straight.path(), false, None);
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::zoo::mlp_spec("small", &[64], &[32], 10);
        let mut graph = crate::zoo::init(spec, 5).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(true);
        let err = train(
            &mut graph,
            &digits(),
            &config,
            &cross_entropy,
            &|_, w| Ok(w.clone()),
            &mut |_| {},
            Some(&Checkpointing {
                dir: dir.path(),
                resume: false,
                stop: Some(&stop),
            }),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                NnError::Interrupted {
                    epoch: 1,
                    epochs: 3
                }
            ),
            "{err}"
        );
        assert!(dir.path().join(CHECKPOINT_FILE).is_file());
        let resumed = digits_run(&config, dir.path(), true, None);
        assert_eq!(weights(&resumed), weights(&whole));
    }

    #[test]
    fn resumed_training_equals_uninterrupted_training() {
        for optimizer in [OptimizerKind::AdamW, OptimizerKind::Sgd { momentum: 0.9 }] {
            let config = TrainConfig {
                epochs: 4,
                batch_size: 32,
                learning_rate: 0.01,
                optimizer,
                schedule: Schedule::Step {
                    every: 2,
                    gamma: 0.5,
                },
                ..TrainConfig::default()
            };
            let straight = tempfile::tempdir().unwrap();
            let whole = digits_run(&config, straight.path(), false, None);
            let killed = tempfile::tempdir().unwrap();
            digits_run(&config, killed.path(), false, Some(2));
            let resumed = digits_run(&config, killed.path(), true, None);
            assert_eq!(weights(&whole), weights(&resumed), "{optimizer:?}");
            // Other settings do not resume silently from a foreign checkpoint.
            let other = TrainConfig {
                learning_rate: 0.02,
                ..config.clone()
            };
            digits_run(&config, killed.path(), false, Some(2));
            let train_set = digits();
            let mut g =
                crate::zoo::init(crate::zoo::mlp_spec("small", &[64], &[32], 10), 5).unwrap();
            let err = train(
                &mut g,
                &train_set,
                &other,
                &cross_entropy,
                &|_, w| Ok(w.clone()),
                &mut |_| {},
                Some(&Checkpointing {
                    dir: killed.path(),
                    resume: true,
                    stop: None,
                }),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("other training settings"), "{err}");
        }
    }

    /// On two threads a batch is trained as two shards whose gradients are summed: the
    /// same step as the whole batch up to rounding (with SGD, whose step is proportional to
    /// the gradient, so a mis-scaled sum would show), and the same weights on every run.
    #[test]
    fn sharded_batches_train_as_the_whole_batch_and_repeat_exactly() {
        assert_eq!(shard_count(128, 2), 2);
        assert_eq!(shard_count(128, 1), 1);
        assert_eq!(shard_count(12, 2), 1, "no shard under {MIN_SHARD} samples");
        assert_eq!(shard_count(1024, 64), MAX_SHARDS);
        let config = TrainConfig {
            epochs: 1,
            batch_size: 64,
            learning_rate: 0.05,
            optimizer: OptimizerKind::Sgd { momentum: 0.0 },
            ..TrainConfig::default()
        };
        let on = |threads: usize| -> Vec<f32> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            pool.install(|| weights(&digits_run(&config, dir.path(), false, None)))
        };
        let (one, two) = (on(1), on(2));
        let start =
            weights(&crate::zoo::init(crate::zoo::mlp_spec("small", &[64], &[32], 10), 5).unwrap());
        let moved: f32 = one.iter().zip(&start).map(|(a, b)| (a - b).abs()).sum();
        let apart: f32 = one.iter().zip(&two).map(|(a, b)| (a - b).abs()).sum();
        assert!(moved > 1.0, "training moved the weights by {moved}");
        assert!(
            apart < 1e-4 * moved,
            "two shards moved the weights {apart} away from one ({moved} in all)"
        );
        assert_eq!(on(2), two, "two shards are not deterministic");
    }

    #[test]
    fn schedules() {
        let mut c = TrainConfig {
            learning_rate: 1.0,
            ..TrainConfig::default()
        };
        assert_eq!(c.rate_at(0, 0, 100), 1.0);
        assert!((c.rate_at(0, 50, 100) - 0.5).abs() < 1e-12);
        c.schedule = Schedule::Step {
            every: 3,
            gamma: 0.1,
        };
        assert_eq!(c.rate_at(2, 0, 100), 1.0);
        assert!((c.rate_at(3, 0, 100) - 0.1).abs() < 1e-12);
        c.schedule = Schedule::Constant;
        assert_eq!(c.rate_at(9, 99, 100), 1.0);
        c.optimizer = OptimizerKind::Sgd { momentum: 1.5 };
        assert!(c.validate().unwrap_err().to_string().contains("momentum"));
    }
}
