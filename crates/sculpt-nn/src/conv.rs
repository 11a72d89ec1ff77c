//! Convolution as im2col plus one GEMM. The im2col step is an `index_select` with a
//! precomputed index over the padded input, so candle's autograd gives the backward pass
//! for free (the input gradient is an `index_add`, the weight gradient a GEMM). Patches are
//! laid out `(batch·out_pixel, in_channel·k·k)`, which makes the whole batch one large,
//! contiguous GEMM instead of one small GEMM per sample.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{Tensor, D};

use crate::error::Result;

/// Geometry of one convolution (or pooling window) over a `[c, h, w]` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Geometry {
    pub fn output(&self) -> (usize, usize) {
        (
            (self.height + 2 * self.padding - self.kernel) / self.stride + 1,
            (self.width + 2 * self.padding - self.kernel) / self.stride + 1,
        )
    }
}

/// Indices into the flattened padded input, ordered `(out_row, out_col, channel, ki, kj)`.
pub fn im2col_index(g: &Geometry) -> Vec<u32> {
    let (hp, wp) = (g.height + 2 * g.padding, g.width + 2 * g.padding);
    let (ho, wo) = g.output();
    let mut index = Vec::with_capacity(ho * wo * g.channels * g.kernel * g.kernel);
    for oh in 0..ho {
        for ow in 0..wo {
            for c in 0..g.channels {
                for ki in 0..g.kernel {
                    for kj in 0..g.kernel {
                        let (r, col) = (oh * g.stride + ki, ow * g.stride + kj);
                        index.push((c * hp * wp + r * wp + col) as u32);
                    }
                }
            }
        }
    }
    index
}

/// A cache of im2col index tensors, shared by the clones of a graph, so the index of each
/// geometry is built once rather than every step.
#[derive(Debug, Clone, Default)]
pub struct IndexCache(Arc<Mutex<HashMap<Geometry, Tensor>>>);

impl IndexCache {
    pub fn get(&self, g: &Geometry) -> Result<Tensor> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get(g) {
            return Ok(t.clone());
        }
        let index = im2col_index(g);
        let t = Tensor::from_vec(index.clone(), index.len(), &crate::device())?;
        map.insert(*g, t.clone());
        Ok(t)
    }
}

/// `x` is `[b, c, h, w]`, `weight` is `[o, c / groups, k, k]`; returns `[b, o, ho, wo]`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    groups: usize,
    cache: &IndexCache,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, c_per_group, k, _) = weight.dims4()?;
    let g = Geometry {
        channels: c,
        height: h,
        width: w,
        kernel: k,
        stride,
        padding,
    };
    let (ho, wo) = g.output();
    let padded = if padding > 0 {
        x.pad_with_zeros(2, padding, padding)?
            .pad_with_zeros(3, padding, padding)?
    } else {
        x.clone()
    };
    let flat = padded.reshape((b, ()))?;
    let kk = k * k;
    let cols = flat
        .index_select(&cache.get(&g)?, 1)?
        .reshape((b * ho * wo, c * kk))?;
    let out = if groups == 1 {
        cols.matmul(&weight.reshape((o, c * kk))?.t()?)?
    } else if c_per_group == 1 && o == c {
        // Depthwise: each output channel sees only its own input channel.
        cols.reshape((b * ho * wo, c, kk))?
            .broadcast_mul(&weight.reshape((1, c, kk))?)?
            .sum(D::Minus1)?
    } else {
        let o_per_group = o / groups;
        let parts = (0..groups)
            .map(|gi| {
                let cols_g = cols.narrow(1, gi * c_per_group * kk, c_per_group * kk)?;
                let w_g = weight
                    .narrow(0, gi * o_per_group, o_per_group)?
                    .reshape((o_per_group, c_per_group * kk))?;
                cols_g.matmul(&w_g.t()?)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&parts, 1)?
    };
    let out = out
        .reshape((b, ho * wo, o))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, o, ho, wo))?;
    Ok(match bias {
        Some(bias) => out.broadcast_add(&bias.reshape((1, o, 1, 1))?)?,
        None => out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn matches_candle_conv2d_forward_and_backward() {
        let dev = crate::device();
        let cache = IndexCache::default();
        for (c, o, k, stride, padding, groups) in [
            (3, 8, 3, 1, 1, 1),
            (4, 6, 5, 2, 0, 1),
            (6, 6, 3, 1, 1, 6),
            (4, 8, 3, 2, 1, 2),
        ] {
            let x = candle_core::Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (2, c, 9, 9), &dev).unwrap(),
            )
            .unwrap();
            let w = candle_core::Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (o, c / groups, k, k), &dev).unwrap(),
            )
            .unwrap();
            let bias = Tensor::randn(0f32, 1.0, o, &dev).unwrap();
            let ours = conv2d(
                x.as_tensor(),
                w.as_tensor(),
                Some(&bias),
                stride,
                padding,
                groups,
                &cache,
            )
            .unwrap();
            let theirs = x
                .as_tensor()
                .conv2d(w.as_tensor(), padding, stride, 1, groups)
                .unwrap()
                .broadcast_add(&bias.reshape((1, o, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(
                close(&ours, &theirs) < 1e-4,
                "forward {c} {o} {k} {stride} {padding} {groups}"
            );
            let g_ours = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let g_theirs = theirs.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &w] {
                let a = g_ours.get(v.as_tensor()).unwrap();
                let b = g_theirs.get(v.as_tensor()).unwrap();
                let scale = b
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    close(a, b) <= 1e-4 * scale.max(1.0),
                    "backward {c} {o} {k} {stride} {padding} {groups}"
                );
            }
        }
    }
}
