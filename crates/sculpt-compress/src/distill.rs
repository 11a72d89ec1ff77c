//! Fine-tuning by knowledge distillation (Hinton et al. 2015): the student matches the
//! teacher's soft targets at temperature T, with that term scaled by T² so its gradients
//! keep their size as T changes, mixed with cross-entropy on the labels by weight alpha.
//! Feature distillation adds the mean squared error between chosen intermediate layers of
//! student and teacher, through a learned linear adapter. Quantized layers train through a
//! straight-through estimator and are re-quantized at the end, so the result lies exactly
//! on its grids; sparse layers keep their zeros. Unstructured sparsity can be reached in
//! one shot, iteratively, or on AGP's cubic schedule, with lottery-ticket rewinding.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, D};
use candle_nn::ops::log_softmax;
use sculpt_nn::{Dataset, EpochGate, EpochStats, Graph, TrainConfig, TrainReport};

use crate::error::Result;
use crate::plan::{CompressionPlan, DistillKind, DistillPlan, Granularity, SparsitySchedule};

/// `alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) · CE(s, y)`, batch mean.
pub fn distillation_loss(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    labels: &Tensor,
    temperature: f64,
    alpha: f64,
) -> Result<Tensor> {
    let log_p_student = log_softmax(&(student_logits / temperature)?, D::Minus1)?;
    let log_p_teacher = log_softmax(&(teacher_logits / temperature)?, D::Minus1)?;
    let p_teacher = log_p_teacher.exp()?;
    let batch = student_logits.dims()[0] as f64;
    let kl = ((&p_teacher * (log_p_teacher - log_p_student)?)?.sum_all()? / batch)?;
    let hard = candle_nn::loss::cross_entropy(student_logits, labels)?;
    let soft = (kl * (alpha * temperature * temperature))?;
    Ok((soft + (hard * (1.0 - alpha))?)?)
}

/// The feature layers a plan distils: the ones it names, or else the last two hidden
/// weight layers (the output layer's logits are the response term's).
pub fn feature_layers(plan: &DistillPlan, teacher: &Graph) -> Vec<String> {
    if !plan.feature_layers.is_empty() {
        return plan.feature_layers.clone();
    }
    let layers = teacher.spec.weight_layers();
    let hidden: Vec<String> = layers
        .iter()
        .filter(|l| **l != teacher.spec.output)
        .cloned()
        .collect();
    hidden[hidden.len().saturating_sub(2)..].to_vec()
}

const ADAPTER_PREFIX: &str = "__adapter.";

/// The distillation objective: Hinton's response loss (or plain cross-entropy), plus for
/// feature distillation the mean squared error between each chosen student layer's output,
/// mapped by a learned linear (1×1) adapter to the teacher's width, and the teacher's.
struct Distillation<'a> {
    teacher: &'a Graph,
    teacher_logits: &'a Tensor,
    plan: &'a DistillPlan,
    features: Vec<String>,
}

impl sculpt_nn::Objective for Distillation<'_> {
    fn captures(&self) -> Vec<String> {
        self.features.clone()
    }

    fn loss(&self, input: &sculpt_nn::LossInput) -> sculpt_nn::Result<Tensor> {
        let batch = input.batch;
        let response = if self.plan.kind == DistillKind::Feature {
            candle_nn::loss::cross_entropy(input.logits, &batch.y)?
        } else {
            let targets = self.teacher_logits.index_select(&batch.rows, 0)?;
            distillation_loss(
                input.logits,
                &targets,
                &batch.y,
                self.plan.temperature,
                self.plan.alpha,
            )
            .map_err(to_nn)?
        };
        if self.features.is_empty() {
            return Ok(response);
        }
        let mut ctx = sculpt_nn::ForwardContext::eval().capturing(self.features.iter().cloned());
        self.teacher
            .forward_ctx(&batch.x, &|n| Ok(self.teacher.param(n)?.clone()), &mut ctx)?;
        let mut total = response;
        for layer in &self.features {
            let (Some(student), Some(teacher)) =
                (input.features.get(layer), ctx.captured.get(layer))
            else {
                return Err(sculpt_nn::NnError::Graph(format!(
                    "feature layer `{layer}` was not computed"
                )));
            };
            let b = student.dims()[0];
            let s = student.reshape((b, student.dims()[1], ()))?;
            let t = teacher.reshape((b, teacher.dims()[1], ()))?.detach();
            let adapter = (input.param)(&format!("{ADAPTER_PREFIX}{layer}.weight"))?;
            let mapped = adapter.broadcast_matmul(&s)?;
            let mse = (mapped - t)?.sqr()?.mean_all()?;
            total = (total + (mse * (self.plan.feature_weight / self.features.len() as f64))?)?;
        }
        Ok(total)
    }
}

/// Fine-tunes a copy of `student` on `train`, distilling from `teacher` (whose logits on
/// the training set, one row per sample in the dataset's order, are `teacher_logits`), and
/// returns it with the training report. Quantized weights train through a straight-through
/// estimator and end on their grids; the zeros of sparse weights are a mask that holds
/// throughout. `on_epoch` sees each epoch's statistics, so a caller can show progress or
/// stop a poor candidate early.
pub fn finetune(
    student: &Graph,
    teacher: &Graph,
    train: &Dataset,
    teacher_logits: &Tensor,
    distill: &DistillPlan,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<(Graph, TrainReport)> {
    finetune_gated(
        student,
        teacher,
        train,
        teacher_logits,
        distill,
        config,
        on_epoch,
        None,
    )
}

/// [`finetune`], with a gate asked after every epoch but the last. The gate sees the
/// student as fine-tuning would return it at that point (sparsity masks applied, weights
/// on their quantization grids, no distillation adapters) and answers whether to go on;
/// when it says no, the student of that epoch is returned.
#[allow(clippy::too_many_arguments)]
pub fn finetune_gated(
    student: &Graph,
    teacher: &Graph,
    train: &Dataset,
    teacher_logits: &Tensor,
    distill: &DistillPlan,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(&EpochStats),
    gate: Option<&mut EpochGate>,
) -> Result<(Graph, TrainReport)> {
    if teacher_logits.dims().first() != Some(&train.len()) {
        return Err(crate::CompressError::Plan(format!(
            "the teacher's logits cover {:?} samples, the training set has {}",
            teacher_logits.dims().first(),
            train.len()
        )));
    }
    let features = if distill.kind == DistillKind::Response {
        Vec::new()
    } else {
        feature_layers(distill, teacher)
    };
    let mut tuned = student.clone();
    // One adapter per feature layer, trained with the student and dropped afterwards:
    // the identity when the widths agree, else PyTorch's default initialisation.
    let student_shapes: BTreeMap<String, Vec<usize>> = student
        .spec
        .summarize()?
        .into_iter()
        .map(|r| (r.name, r.output_shape))
        .collect();
    let teacher_shapes: BTreeMap<String, Vec<usize>> = teacher
        .spec
        .summarize()?
        .into_iter()
        .map(|r| (r.name, r.output_shape))
        .collect();
    for layer in &features {
        let (Some(s), Some(t)) = (student_shapes.get(layer), teacher_shapes.get(layer)) else {
            return Err(crate::error::layer_error(
                layer,
                "feature distillation needs a layer that both the student and the teacher have",
            ));
        };
        let (cs, ct) = (s[0], t[0]);
        if s[1..] != t[1..] {
            return Err(crate::error::layer_error(
                layer,
                format!("student output {s:?} and teacher output {t:?} differ beyond channels"),
            ));
        }
        let weight = if cs == ct {
            Tensor::eye(cs, DType::F32, &sculpt_nn::device())?
        } else {
            let bound = 1.0 / (cs as f64).sqrt();
            let mut rng =
                <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(config.seed ^ 0xada7);
            let values: Vec<f32> = (0..ct * cs)
                .map(|_| rand::Rng::random_range(&mut rng, -bound..bound) as f32)
                .collect();
            Tensor::from_vec(values, (ct, cs), &sculpt_nn::device())?
        };
        tuned
            .params
            .insert(format!("{ADAPTER_PREFIX}{layer}.weight"), weight);
    }
    let objective = Distillation {
        teacher,
        teacher_logits,
        plan: distill,
        features,
    };
    let schemes = student.spec.weight_quant.clone();
    let mut masks: BTreeMap<String, Tensor> = BTreeMap::new();
    for name in &student.spec.sparse {
        let w = student.param(name)?;
        masks.insert(name.clone(), w.ne(0f32)?.to_dtype(DType::F32)?);
    }
    let view = |name: &str, w: &Tensor| -> sculpt_nn::Result<Tensor> {
        let w = match masks.get(name) {
            Some(mask) => (w * mask)?,
            None => w.clone(),
        };
        match schemes.get(name) {
            Some(scheme) => crate::quantize::quantize_ste(&w, scheme).map_err(to_nn),
            None => Ok(w),
        }
    };
    // What fine-tuning returns, from the weights trained so far.
    let finish = |mut tuned: Graph| -> Result<Graph> {
        tuned
            .params
            .retain(|name, _| !name.starts_with(ADAPTER_PREFIX));
        for (name, mask) in &masks {
            let w = (tuned.param(name)? * mask)?;
            tuned.params.insert(name.clone(), w);
        }
        crate::quantize::requantize(&tuned)
    };
    let report = match gate {
        Some(outer) => {
            let mut inner = |epoch: usize, snapshot: &Graph| -> sculpt_nn::Result<bool> {
                let student = finish(snapshot.clone()).map_err(to_nn)?;
                outer(epoch, &student)
            };
            sculpt_nn::train_gated(
                &mut tuned,
                train,
                config,
                &objective,
                &view,
                on_epoch,
                None,
                Some(&mut inner),
            )?
        }
        None => sculpt_nn::train(&mut tuned, train, config, &objective, &view, on_epoch, None)?,
    };
    Ok((finish(tuned)?, report))
}

/// Compresses `teacher` by `plan` and fine-tunes the result, reaching unstructured
/// sparsity by the plan's schedule:
///
/// - one shot: every pass, then one fine-tuning run;
/// - iterative or AGP: `cycles` rounds of pruning further and fine-tuning, with the
///   sparsity of round k at k/n of the target (iterative) or at Zhu & Gupta's cubic
///   `1 - (1 - k/n)^3` (AGP); the epochs are split across the rounds, so the total number
///   of steps equals one shot's;
/// - with `rewind`, the final mask is then applied to the teacher's weights (structurally
///   pruned and quantized as the plan says) and fine-tuned once more for the full epochs,
///   as lottery-ticket rewinding does.
pub fn compress_and_finetune(
    teacher: &Graph,
    plan: &CompressionPlan,
    train: &Dataset,
    teacher_logits: &Tensor,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<(Graph, TrainReport)> {
    let compressed = crate::plan::compress(teacher, plan, Some(train))?;
    finetune_plan(
        teacher,
        &compressed,
        plan,
        train,
        teacher_logits,
        config,
        on_epoch,
        None,
    )
}

/// [`compress_and_finetune`] for a caller that already holds `compressed`, the result of
/// [`crate::plan::compress`] on `teacher` by `plan` (to account or screen it first), so
/// the passes do not run twice. The iterative and AGP schedules start from the teacher.
///
/// `gate` (see [`finetune_gated`]) is asked after the epochs of the last fine-tuning run:
/// the only one of a one-shot plan, the rewinding run when the plan rewinds, else the
/// last round of an iterative or AGP schedule. Its epochs count from that run's start.
#[allow(clippy::too_many_arguments)]
pub fn finetune_plan(
    teacher: &Graph,
    compressed: &Graph,
    plan: &CompressionPlan,
    train: &Dataset,
    teacher_logits: &Tensor,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(&EpochStats),
    mut gate: Option<&mut EpochGate>,
) -> Result<(Graph, TrainReport)> {
    let schedule = plan.sparsify.schedule;
    let unstructured = plan
        .layers
        .values()
        .any(|l| l.granularity == Granularity::Unstructured && l.sparsity > 0.0);
    if schedule == SparsitySchedule::OneShot || !unstructured {
        let tuned = finetune_gated(
            compressed,
            teacher,
            train,
            teacher_logits,
            &plan.distill,
            config,
            on_epoch,
            if plan.sparsify.rewind {
                None
            } else {
                gate.take()
            },
        )?;
        return if plan.sparsify.rewind {
            rewind(
                teacher,
                plan,
                &tuned.0,
                train,
                teacher_logits,
                config,
                on_epoch,
                tuned.1,
                gate,
            )
        } else {
            Ok(tuned)
        };
    }
    let cycles = plan.sparsify.cycles.max(1);
    let epochs = (config.epochs / cycles).max(1);
    let scaled = |fraction: f64| {
        let mut p = plan.clone();
        for l in p.layers.values_mut() {
            if l.granularity == Granularity::Unstructured {
                l.sparsity *= fraction;
            }
        }
        p
    };
    let mut student: Option<Graph> = None;
    let mut seconds = 0.0;
    let mut last = None;
    for k in 1..=cycles {
        let progress = k as f64 / cycles as f64;
        let fraction = match schedule {
            SparsitySchedule::Agp => 1.0 - (1.0 - progress).powi(3),
            _ => progress,
        };
        let round = scaled(fraction);
        let graph = match &student {
            None => crate::plan::compress(teacher, &round, Some(train))?,
            Some(current) => {
                crate::plan::run_pass(crate::plan::Pass::Sparsify, current, &round, Some(train))?
            }
        };
        let mut round_config = config.clone();
        round_config.epochs = epochs;
        round_config.seed = config.seed.wrapping_add(k as u64);
        let last_round = k == cycles && !plan.sparsify.rewind;
        let (tuned, report) = finetune_gated(
            &graph,
            teacher,
            train,
            teacher_logits,
            &plan.distill,
            &round_config,
            on_epoch,
            if last_round { gate.take() } else { None },
        )?;
        seconds += report.seconds;
        last = Some(report);
        student = Some(tuned);
    }
    let (Some(student), Some(mut report)) = (student, last) else {
        return Err(crate::CompressError::Plan(
            "no fine-tuning round ran".into(),
        ));
    };
    report.epochs = epochs * cycles;
    report.epochs_run = epochs * cycles;
    report.seconds = seconds;
    if plan.sparsify.rewind {
        return rewind(
            teacher,
            plan,
            &student,
            train,
            teacher_logits,
            config,
            on_epoch,
            report,
            gate,
        );
    }
    Ok((student, report))
}

/// Lottery-ticket rewinding: the mask of `found` on the teacher's own weights (after the
/// plan's structural passes and quantization), fine-tuned again for the full epochs.
#[allow(clippy::too_many_arguments)]
fn rewind(
    teacher: &Graph,
    plan: &CompressionPlan,
    found: &Graph,
    train: &Dataset,
    teacher_logits: &Tensor,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(&EpochStats),
    earlier: TrainReport,
    gate: Option<&mut EpochGate>,
) -> Result<(Graph, TrainReport)> {
    let mut dense = plan.clone();
    for l in dense.layers.values_mut() {
        l.sparsity = 0.0;
        l.granularity = Granularity::Unstructured;
    }
    let mut start = crate::plan::compress(teacher, &dense, Some(train))?;
    for name in &found.spec.sparse {
        let mask = found.param(name)?.ne(0f32)?.to_dtype(DType::F32)?;
        let w = (start.param(name)? * mask)?;
        start.params.insert(name.clone(), w);
        start.spec.sparse.insert(name.clone());
    }
    let (student, mut report) = finetune_gated(
        &start,
        teacher,
        train,
        teacher_logits,
        &plan.distill,
        config,
        on_epoch,
        gate,
    )?;
    report.seconds += earlier.seconds;
    report.epochs += earlier.epochs;
    report.epochs_run += earlier.epochs_run;
    Ok((student, report))
}

fn to_nn(e: crate::CompressError) -> sculpt_nn::NnError {
    match e {
        crate::CompressError::Candle(c) => sculpt_nn::NnError::Candle(c),
        crate::CompressError::Nn(n) => n,
        other => sculpt_nn::NnError::Config(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{CompressionPlan, DistillKind, SparsitySchedule};

    #[test]
    fn loss_is_zero_when_student_matches_teacher_and_alpha_is_one() {
        let dev = sculpt_nn::device();
        let logits = Tensor::new(&[[1f32, 2., 3.], [0.5, -1., 0.]], &dev).unwrap();
        let labels = Tensor::new(&[2u32, 0], &dev).unwrap();
        let loss = distillation_loss(&logits, &logits, &labels, 4.0, 1.0).unwrap();
        assert!(loss.to_scalar::<f32>().unwrap().abs() < 1e-6);
        // With alpha = 0 it is plain cross-entropy.
        let ce = candle_nn::loss::cross_entropy(&logits, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let other = Tensor::new(&[[0f32, 0., 0.], [0., 0., 0.]], &dev).unwrap();
        let loss = distillation_loss(&logits, &other, &labels, 4.0, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((loss - ce).abs() < 1e-6);
    }

    fn trained_mlp() -> (Graph, sculpt_nn::Splits, Tensor) {
        let splits = sculpt_data::load("digits", 5).unwrap();
        let mut g = sculpt_nn::zoo::build("mlp", &[64], 10, 5).unwrap();
        let config = TrainConfig {
            epochs: 8,
            seed: 5,
            ..TrainConfig::default()
        };
        sculpt_nn::train(
            &mut g,
            &splits.train,
            &config,
            &sculpt_nn::train::cross_entropy,
            &|_, w| Ok(w.clone()),
            &mut |_| {},
            None,
        )
        .unwrap();
        let logits = sculpt_nn::predict_logits(&g, &splits.train).unwrap();
        (g, splits, logits)
    }

    fn short() -> TrainConfig {
        TrainConfig {
            epochs: 3,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            seed: 9,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn feature_distillation_trains_adapters_and_drops_them() {
        let (teacher, splits, logits) = trained_mlp();
        let mut plan = CompressionPlan::default();
        plan.layers.insert(
            "fc1".into(),
            crate::plan::LayerPlan {
                prune: 0.5,
                ..Default::default()
            },
        );
        let student = crate::plan::compress(&teacher, &plan, None).unwrap();
        assert_eq!(feature_layers(&plan.distill, &teacher), ["fc1", "fc2"]);
        let run = |kind| {
            let distill = DistillPlan {
                kind,
                feature_weight: 5.0,
                ..DistillPlan::default()
            };
            finetune(
                &student,
                &teacher,
                &splits.train,
                &logits,
                &distill,
                &short(),
                &mut |_| {},
            )
            .unwrap()
            .0
        };
        let response = run(DistillKind::Response);
        let both = run(DistillKind::Both);
        // The adapters (fc1: 128 student channels to 256 teacher ones) are gone again.
        assert_eq!(
            both.params.keys().collect::<Vec<_>>(),
            student.params.keys().collect::<Vec<_>>()
        );
        // The feature term changed what was learned, and the student still works.
        let a: Vec<Vec<f32>> = response.params["fc2.weight"].to_vec2().unwrap();
        let b: Vec<Vec<f32>> = both.params["fc2.weight"].to_vec2().unwrap();
        assert_ne!(a, b);
        assert!(sculpt_nn::accuracy(&both, &splits.val).unwrap() > 0.85);
        // A feature layer the student lacks is an error that names it.
        let distill = DistillPlan {
            kind: DistillKind::Feature,
            feature_layers: vec!["relu9".into()],
            ..DistillPlan::default()
        };
        let err = finetune(
            &student,
            &teacher,
            &splits.train,
            &logits,
            &distill,
            &short(),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("relu9"), "{err}");
    }

    #[test]
    fn schedules_reach_the_target_sparsity_and_keep_their_masks() {
        let (teacher, splits, logits) = trained_mlp();
        let zeros = |g: &Graph, name: &str| {
            g.params[name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .filter(|v| **v == 0.0)
                .count()
        };
        let mut epochs_seen = Vec::new();
        for (schedule, rewind) in [
            (SparsitySchedule::OneShot, false),
            (SparsitySchedule::Iterative, false),
            (SparsitySchedule::Agp, false),
            (SparsitySchedule::Agp, true),
        ] {
            let mut plan = CompressionPlan::default();
            plan.sparsify.schedule = schedule;
            plan.sparsify.cycles = 3;
            plan.sparsify.rewind = rewind;
            plan.layers.insert(
                "fc1".into(),
                crate::plan::LayerPlan {
                    sparsity: 0.9,
                    bits: 6,
                    ..Default::default()
                },
            );
            let mut count = 0;
            let (student, report) = compress_and_finetune(
                &teacher,
                &plan,
                &splits.train,
                &logits,
                &short(),
                &mut |_| count += 1,
            )
            .unwrap();
            // 90% of fc1's 16384 weights are zero (quantization may zero a few more).
            let z = zeros(&student, "fc1.weight");
            assert!((14_746..14_900).contains(&z), "{schedule:?}: {z} zeros");
            assert!(student.spec.sparse.contains("fc1.weight"));
            assert!(sculpt_nn::accuracy(&student, &splits.val).unwrap() > 0.85);
            epochs_seen.push((count, report.epochs));
        }
        // One shot: 3 epochs; 3 cycles of 1 epoch; rewinding adds the full 3 again.
        assert_eq!(epochs_seen, vec![(3, 3), (3, 3), (3, 3), (6, 6)]);
    }

    #[test]
    fn soft_term_scales_with_t_squared() {
        let dev = sculpt_nn::device();
        let s = Tensor::new(&[[1f32, 0., 0.]], &dev).unwrap();
        let t = Tensor::new(&[[0f32, 1., 0.]], &dev).unwrap();
        let y = Tensor::new(&[0u32], &dev).unwrap();
        let at = |temp: f64| {
            distillation_loss(&(&s * temp).unwrap(), &(&t * temp).unwrap(), &y, temp, 1.0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        // Scaling logits by T and dividing by T inside leaves the KL unchanged, so the loss
        // grows exactly by T².
        assert!((at(4.0) / at(1.0) - 16.0).abs() < 1e-3);
    }
}
