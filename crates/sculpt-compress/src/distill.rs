//! Fine-tuning by knowledge distillation (Hinton et al. 2015): the student matches the
//! teacher's soft targets at temperature T, with that term scaled by T² so its gradients
//! keep their size as T changes, mixed with cross-entropy on the labels by weight alpha.
//! Quantized layers train through a straight-through estimator and are re-quantized at
//! the end, so the result lies exactly on its grids.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, D};
use candle_nn::ops::log_softmax;
use sculpt_nn::{train::Batch, Dataset, EpochStats, Graph, TrainConfig, TrainReport};

use crate::error::Result;
use crate::plan::DistillPlan;

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

/// Fine-tunes a copy of `student` on `train`, distilling from `teacher_logits` (one row
/// per training sample, in the dataset's order), and returns it with the training report.
/// Quantized weights train through a straight-through estimator and end on their grids;
/// the zeros of sparse weights are a mask that holds throughout. `on_epoch` sees each
/// epoch's statistics, so a caller can show progress or stop a poor candidate early.
pub fn finetune(
    student: &Graph,
    train: &Dataset,
    teacher_logits: &Tensor,
    distill: &DistillPlan,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<(Graph, TrainReport)> {
    let (temperature, alpha) = (distill.temperature, distill.alpha);
    if teacher_logits.dims().first() != Some(&train.len()) {
        return Err(crate::CompressError::Plan(format!(
            "the teacher's logits cover {:?} samples, the training set has {}",
            teacher_logits.dims().first(),
            train.len()
        )));
    }
    let loss = |logits: &Tensor, batch: &Batch| -> sculpt_nn::Result<Tensor> {
        let targets = teacher_logits.index_select(&batch.rows, 0)?;
        distillation_loss(logits, &targets, &batch.y, temperature, alpha).map_err(to_nn)
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
    let mut tuned = student.clone();
    let report = sculpt_nn::train(&mut tuned, train, config, &loss, &view, on_epoch, None)?;
    for (name, mask) in &masks {
        let w = (tuned.param(name)? * mask)?;
        tuned.params.insert(name.clone(), w);
    }
    Ok((crate::quantize::requantize(&tuned)?, report))
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
