//! Batch normalisation in training mode as one candle custom op. The composite version
//! (a transpose to channel-major, four broadcast ops and a transpose back) makes about ten
//! passes over the activations forward and as many backward; this kernel makes two
//! forward (statistics, then output) and two backward, with the textbook gradient
//! `dx = w·inv_std/n · (n·dy − Σdy − x̂·Σ(dy·x̂))`.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use crate::conv::contiguous_f32;
use rayon::prelude::*;

use crate::error::Result;

/// Per-channel mean and biased variance of a contiguous `[b, c, h, w]` tensor.
pub fn channel_stats(x: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    let (b, c, h, w) = x.dims4()?;
    let plane = h * w;
    let data: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let n = (b * plane) as f64;
    let stats: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sum, mut sum_sq) = (0f64, 0f64);
            for bi in 0..b {
                let start = (bi * c + ch) * plane;
                for &v in &data[start..start + plane] {
                    sum += v as f64;
                    sum_sq += (v as f64) * (v as f64);
                }
            }
            let mean = sum / n;
            ((mean) as f32, (sum_sq / n - mean * mean).max(0.0) as f32)
        })
        .collect();
    Ok(stats.into_iter().unzip())
}

/// `y = (x − mean)·inv_std·weight + bias` per channel, with the batch's own statistics.
pub struct BatchNormTrain {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, weight, bias) = (
            contiguous_f32(s1, l1, "batch-norm")?,
            contiguous_f32(s2, l2, "batch-norm")?,
            contiguous_f32(s3, l3, "batch-norm")?,
        );
        let dims = l1.dims();
        let (c, plane) = (dims[1], dims[2] * dims[3]);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each(|(i, (out, inp))| {
                let ch = i % c;
                let scale = self.inv_std[ch] * weight[ch];
                let shift = bias[ch] - self.mean[ch] * scale;
                for (o, v) in out.iter_mut().zip(inp) {
                    *o = v * scale + shift;
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, c, h, w) = x.dims4()?;
        let plane = h * w;
        let n = (b * plane) as f32;
        let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let dy: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let wv: Vec<f32> = weight.to_vec1()?;
        // Σdy and Σ(dy·x̂) per channel.
        let sums: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut sum_dy, mut sum_dy_xhat) = (0f64, 0f64);
                for bi in 0..b {
                    let start = (bi * c + ch) * plane;
                    for k in start..start + plane {
                        let xhat = (xs[k] - self.mean[ch]) * self.inv_std[ch];
                        sum_dy += dy[k] as f64;
                        sum_dy_xhat += (dy[k] * xhat) as f64;
                    }
                }
                (sum_dy as f32, sum_dy_xhat as f32)
            })
            .collect();
        let mut dx = vec![0f32; xs.len()];
        dx.par_chunks_mut(plane).enumerate().for_each(|(i, out)| {
            let ch = i % c;
            let start = i * plane;
            let (sum_dy, sum_dy_xhat) = sums[ch];
            let k = wv[ch] * self.inv_std[ch] / n;
            for (j, o) in out.iter_mut().enumerate() {
                let xhat = (xs[start + j] - self.mean[ch]) * self.inv_std[ch];
                *o = k * (n * dy[start + j] - sum_dy - xhat * sum_dy_xhat);
            }
        });
        let device = x.device();
        let (db, dw): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
        Ok((
            Some(Tensor::from_vec(dx, (b, c, h, w), device)?),
            Some(Tensor::from_vec(dw, c, device)?),
            Some(Tensor::from_vec(db, c, device)?),
        ))
    }
}

/// Training-mode batch norm of `[b, c, h, w]`; returns the output and the batch's mean and
/// biased variance (for the running statistics).
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let x = x.contiguous()?;
    let (mean, var) = channel_stats(&x)?;
    let inv_std = var
        .iter()
        .map(|v| 1.0 / ((*v as f64 + eps).sqrt() as f32))
        .collect();
    let op = BatchNormTrain {
        mean: mean.clone(),
        inv_std,
    };
    let y = x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    Ok((y, mean, var))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// The textbook composite, differentiated by candle: the reference.
    fn composite(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let (_, c, _, _) = x.dims4().unwrap();
        let mean = x
            .mean_keepdim(0)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(3)
            .unwrap();
        let centred = x.broadcast_sub(&mean).unwrap();
        let var = centred
            .sqr()
            .unwrap()
            .mean_keepdim(0)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(3)
            .unwrap();
        centred
            .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&w.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
    }

    #[test]
    fn matches_the_composite_forward_and_backward() {
        let dev = crate::device();
        let x = Var::from_tensor(&Tensor::randn(1f32, 3.0, (4, 3, 5, 5), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.5, 3, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.5, 3, &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (4, 3, 5, 5), &dev).unwrap();
        let (ours, _, _) =
            batch_norm_train(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let theirs = composite(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5);
        let diff = crate::conv::tests::close;
        assert!(diff(&ours, &theirs) < 1e-4);
        let g1 = (ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (theirs * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w, &b] {
            let (a, c) = (
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(diff(a, c) < 1e-3, "{}", diff(a, c));
        }
    }
}
