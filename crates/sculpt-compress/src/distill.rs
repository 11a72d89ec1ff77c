//! Fine-tuning by knowledge distillation (Hinton et al. 2015): the student matches the
//! teacher's soft targets at temperature T, with that term scaled by T² so its gradients
//! keep their size as T changes, mixed with cross-entropy on the labels by weight alpha.
//! Quantized layers train through a straight-through estimator and are re-quantized at
//! the end, so the result lies exactly on its grids.

use candle_core::{Tensor, D};
use candle_nn::ops::log_softmax;
use sculpt_nn::{train::Batch, Dataset, Graph, TrainConfig, TrainReport};

use crate::error::Result;
use crate::plan::CompressionPlan;

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

/// Fine-tunes `student` in place on `train`, distilling from `teacher_logits` (one row per
/// training sample, in the dataset's order).
pub fn distill(
    student: &mut Graph,
    train: &Dataset,
    teacher_logits: &Tensor,
    plan: &CompressionPlan,
    config: &TrainConfig,
) -> Result<TrainReport> {
    let (temperature, alpha) = (plan.temperature, plan.alpha);
    let loss = |logits: &Tensor, batch: &Batch| -> sculpt_nn::Result<Tensor> {
        let targets = teacher_logits.index_select(&batch.rows, 0)?;
        distillation_loss(logits, &targets, &batch.y, temperature, alpha).map_err(|e| match e {
            crate::CompressError::Candle(c) => sculpt_nn::NnError::Candle(c),
            crate::CompressError::Nn(n) => n,
            other => sculpt_nn::NnError::Config(other.to_string()),
        })
    };
    let bits = student.spec.weight_bits.clone();
    let view = |name: &str, w: &Tensor| -> sculpt_nn::Result<Tensor> {
        match bits.get(name) {
            Some(&b) => crate::quantize::quantize_ste(w, b).map_err(|e| match e {
                crate::CompressError::Candle(c) => sculpt_nn::NnError::Candle(c),
                other => sculpt_nn::NnError::Config(other.to_string()),
            }),
            None => Ok(w.clone()),
        }
    };
    let report = sculpt_nn::train(student, train, config, &loss, &view, &mut |_| {}, None)?;
    let requantized = crate::quantize::quantize(student, &bits)?;
    *student = requantized;
    Ok(report)
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
