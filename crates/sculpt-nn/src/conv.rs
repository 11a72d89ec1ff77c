//! Convolution as im2col plus one GEMM. im2col is a candle custom op with a hand-written
//! kernel (rows of the input are copied whole, padding is skipped rather than
//! materialised) and its own backward, col2im, which accumulates patch gradients back into
//! the input. Patches are laid out `(batch·out_pixel, in_channel·k·k)`, so the whole batch
//! is one large, contiguous GEMM instead of one small GEMM per sample; candle's autograd
//! handles the GEMM. Both kernels split the batch across threads.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

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

/// The im2col custom op: `[b, c, h, w]` → `[b·ho·wo, c·k·k (+ 1)]`. With `ones`, each row
/// ends in a 1, so a bias folded into the weight matrix is added by the GEMM itself and its
/// gradient comes out of the weight-gradient GEMM, with no separate broadcast and reduction.
struct Im2Col {
    geometry: Geometry,
    ones: bool,
}

/// Its adjoint, col2im: `[b·ho·wo, c·k·k (+ 1)]` → `[b, c, h, w]`, summing overlapping
/// patches (and ignoring the ones column).
struct Col2Im {
    geometry: Geometry,
    ones: bool,
}

/// The f32 data of a contiguous tensor's storage; `op` names the custom op in errors.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{op}: only f32 tensors are supported"),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// Visits every (patch element, input element) pair of one sample: `f(col_index, input_index)`
/// for in-bounds positions, in the order of the patch matrix.
#[inline]
fn for_each_patch(g: &Geometry, row_width: usize, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = g.output();
    let (k, s, p) = (g.kernel, g.stride, g.padding as isize);
    for oh in 0..ho {
        for ow in 0..wo {
            let row = (oh * wo + ow) * row_width;
            for c in 0..g.channels {
                for ki in 0..k {
                    let r = (oh * s + ki) as isize - p;
                    if r < 0 || r >= g.height as isize {
                        continue;
                    }
                    let col0 = (ow * s) as isize - p;
                    let dst = row + (c * k + ki) * k;
                    let src = (c * g.height + r as usize) * g.width;
                    // The run of k columns, clipped to the input: (first kj, last kj + 1).
                    let lo = (-col0).max(0) as usize;
                    let hi = ((g.width as isize - col0).min(k as isize)).max(0) as usize;
                    if lo < hi {
                        f(dst + lo, src + (col0 + lo as isize) as usize, hi - lo);
                    }
                }
            }
        }
    }
}

/// Copies the patch run `src[s..s + n]` to `dst[d..]`. A run of 8 or fewer floats (a
/// 5-wide kernel's rows) is one fixed 8-float move, overrunning into the floats after the
/// run: with `overrun`, which holds only when nothing after the run must stay as it is (no
/// padding, runs visited in order, so the next run or row overwrites the excess). Called
/// for every 5-float run, `copy_from_slice` of a variable length was a `memmove` call (11%
/// of LeNet-5's training step when its dense convolutions used this layout too).
#[inline(always)]
fn copy_run(dst: &mut [f32], d: usize, src: &[f32], s: usize, n: usize, overrun: bool) {
    if overrun && n <= 8 && d + 8 <= dst.len() && s + 8 <= src.len() {
        let run: &[f32; 8] = src[s..s + 8].try_into().expect("8 floats");
        dst[d..d + 8].copy_from_slice(run);
    } else {
        dst[d..d + n].copy_from_slice(&src[s..s + n]);
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry;
        let x = contiguous_f32(storage, layout, "im2col")?;
        let sample = g.channels * g.height * g.width;
        let b = x.len() / sample;
        let (ho, wo) = g.output();
        let rows = ho * wo;
        let ckk = g.channels * g.kernel * g.kernel;
        let width = ckk + usize::from(self.ones);
        let mut out = vec![0f32; b * rows * width];
        out.par_chunks_mut(rows * width)
            .zip(x.par_chunks(sample))
            .for_each(|(dst, src)| {
                for_each_patch(&g, width, |d, s, n| {
                    copy_run(dst, d, src, s, n, g.padding == 0)
                });
                if self.ones {
                    dst.chunks_mut(width).for_each(|row| row[ckk] = 1.0);
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b * rows, width))))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let adjoint = Col2Im {
            geometry: self.geometry,
            ones: self.ones,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&adjoint)?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry;
        let cols = contiguous_f32(storage, layout, "col2im")?;
        let (ho, wo) = g.output();
        let width = g.channels * g.kernel * g.kernel + usize::from(self.ones);
        let per_sample = ho * wo * width;
        let b = cols.len() / per_sample;
        let sample = g.channels * g.height * g.width;
        let mut out = vec![0f32; b * sample];
        out.par_chunks_mut(sample)
            .zip(cols.par_chunks(per_sample))
            .for_each(|(dst, src)| {
                for_each_patch(&g, width, |d, s, n| {
                    for (o, v) in dst[s..s + n].iter_mut().zip(&src[d..d + n]) {
                        *o += v;
                    }
                });
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((b, g.channels, g.height, g.width)),
        ))
    }
}

/// A dense convolution as one op: per sample, im2col into a scratch matrix (channel-major,
/// `width × positions`, so that it is the GEMM's natural right operand and its runs are
/// whole output rows) and one GEMM straight into the `[b, o, ho, wo]` output, with its own
/// backward. Written through
/// candle's autograd as im2col, matmul and a transpose, the backward allocated the patch
/// matrix's gradient (k² times the input), zero-filled it and added into it before col2im
/// read it once: a fifth of LeNet-5's training step. Here the patch gradient of one sample
/// lives in a scratch buffer between its GEMM and col2im, and the weight gradient sums
/// fixed blocks of samples in order, so it is the same on any number of threads.
struct DenseConv {
    geometry: Geometry,
    /// The weight matrix's last column is the bias (the patches end in a 1).
    ones: bool,
}

/// Samples per block of the weight gradient's sum: fixed, so that the sum's order (and so
/// its rounding) does not depend on the thread count.
const GRAD_BLOCK: usize = 8;

impl DenseConv {
    fn width(&self) -> usize {
        let g = self.geometry;
        g.channels * g.kernel * g.kernel + usize::from(self.ones)
    }

    /// Visits one sample's patch matrix by runs: `f(dst, src, n)` for the `n` output
    /// positions of one patch row (an input channel and kernel offset) and output row
    /// whose input pixels are in bounds, starting at `dst` in the row-major
    /// `width × positions` patch matrix and at `src` in the `[c, h, w]` sample, a stride
    /// apart. With the patch matrix channel-major, a run is a whole output row (24 floats
    /// for LeNet-5's first layer) rather than a kernel row (5 floats), a fifth as many.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        let g = self.geometry;
        let (ho, wo) = g.output();
        let p = ho * wo;
        let (k, s, pad) = (g.kernel, g.stride, g.padding);
        for c in 0..g.channels {
            for ki in 0..k {
                for kj in 0..k {
                    let row = ((c * k + ki) * k + kj) * p;
                    // Output columns whose input column `ow·s + kj - pad` is in bounds.
                    let lo = if pad > kj { (pad - kj).div_ceil(s) } else { 0 };
                    let hi = if g.width + pad > kj {
                        ((g.width + pad - kj - 1) / s + 1).min(wo)
                    } else {
                        0
                    };
                    if lo >= hi {
                        continue;
                    }
                    for oh in 0..ho {
                        let ih = oh * s + ki;
                        if ih < pad || ih - pad >= g.height {
                            continue;
                        }
                        let src = (c * g.height + ih - pad) * g.width + lo * s + kj - pad;
                        f(row + oh * wo + lo, src, hi - lo);
                    }
                }
            }
        }
    }

    /// One sample's patch matrix (`width × positions`, a row per input channel and kernel
    /// offset, then a row of ones for the bias) into `cols`.
    fn patches(&self, src: &[f32], cols: &mut [f32]) {
        let g = self.geometry;
        if g.padding > 0 {
            cols.fill(0.0);
        }
        let s = g.stride;
        self.for_each_run(|d, at, n| {
            if s == 1 {
                cols[d..d + n].copy_from_slice(&src[at..at + n]);
            } else {
                for (t, v) in cols[d..d + n].iter_mut().zip(src[at..].iter().step_by(s)) {
                    *t = *v;
                }
            }
        });
        if self.ones {
            let (ho, wo) = g.output();
            let ckk = self.width() - 1;
            cols[ckk * ho * wo..(ckk + 1) * ho * wo].fill(1.0);
        }
    }

    /// Adds one sample's patch-matrix gradient (`width × positions`) into its input
    /// gradient (`[c, h, w]`): col2im.
    fn col2im(&self, dcols: &[f32], dx: &mut [f32]) {
        let s = self.geometry.stride;
        self.for_each_run(|d, at, n| {
            if s == 1 {
                for (t, v) in dx[at..at + n].iter_mut().zip(&dcols[d..d + n]) {
                    *t += v;
                }
            } else {
                for (t, v) in dx[at..].iter_mut().step_by(s).zip(&dcols[d..d + n]) {
                    *t += v;
                }
            }
        });
    }
}

/// `dst (m × n) = [dst +] lhs (m × k) · rhs (k × n)`, every operand given by its row and
/// column strides, on the calling thread.
#[allow(clippy::too_many_arguments)]
fn gemm_into(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    let last = |rs: usize, cs: usize, r: usize, c: usize| {
        (r.max(1) - 1) * rs + (c.max(1) - 1) * cs + usize::from(r > 0 && c > 0)
    };
    assert!(dst.len() >= last(dst_rs, dst_cs, m, n));
    assert!(lhs.len() >= last(lhs_rs, lhs_cs, m, k));
    assert!(rhs.len() >= last(rhs_rs, rhs_cs, k, n));
    // SAFETY: every index the strides reach is within the slices (asserted above), and
    // `dst` does not alias the operands (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

impl candle_core::CustomOp2 for DenseConv {
    fn name(&self) -> &'static str {
        "dense-conv"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry;
        let x = contiguous_f32(xs, xl, "dense-conv")?;
        let w = contiguous_f32(ws, wl, "dense-conv")?;
        let width = self.width();
        let o = w.len() / width;
        let (ho, wo) = g.output();
        let p = ho * wo;
        let sample = g.channels * g.height * g.width;
        let b = x.len() / sample;
        let mut out = vec![0f32; b * o * p];
        out.par_chunks_mut(o * p)
            .zip(x.par_chunks(sample))
            .for_each_init(
                || vec![0f32; p * width],
                |cols, (dst, src)| {
                    self.patches(src, cols);
                    // out_b (o × p) = W (o × width) · cols_b (width × p).
                    gemm_into(
                        (o, p, width),
                        dst,
                        (p, 1),
                        false,
                        w,
                        (width, 1),
                        cols,
                        (p, 1),
                    );
                },
            );
        Ok((CpuStorage::F32(out), Shape::from((b, o, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry;
        let width = self.width();
        let (o, _) = w.dims2()?;
        let (ho, wo) = g.output();
        let p = ho * wo;
        let sample = g.channels * g.height * g.width;
        // The first layer's input is data, which needs no gradient: its patch gradient and
        // col2im are skipped.
        let input_grad = x.track_op();
        let (x, w, dy) = (x.contiguous()?, w.contiguous()?, grad.contiguous()?);
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (dys, dyl) = dy.storage_and_layout();
        let (
            candle_core::Storage::Cpu(xs),
            candle_core::Storage::Cpu(ws),
            candle_core::Storage::Cpu(dys),
        ) = (&*xs, &*ws, &*dys)
        else {
            candle_core::bail!("dense-conv: only CPU tensors are supported");
        };
        let x = contiguous_f32(xs, xl, "dense-conv")?;
        let w = contiguous_f32(ws, wl, "dense-conv")?;
        let dy = contiguous_f32(dys, dyl, "dense-conv")?;
        let b = x.len() / sample;
        let mut dx = vec![0f32; b * sample];
        // Blocks of GRAD_BLOCK samples, each with its own weight-gradient partial.
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(sample * GRAD_BLOCK)
            .zip(x.par_chunks(sample * GRAD_BLOCK))
            .zip(dy.par_chunks(o * p * GRAD_BLOCK))
            .map(|((dx, x), dy)| {
                let mut dw = vec![0f32; o * width];
                let mut cols = vec![0f32; p * width];
                let mut dcols = vec![0f32; p * width];
                for ((dx, x), dy) in dx
                    .chunks_mut(sample)
                    .zip(x.chunks(sample))
                    .zip(dy.chunks(o * p))
                {
                    self.patches(x, &mut cols);
                    // dW (o × width) += dY_b (o × p) · cols_bᵀ (p × width).
                    gemm_into(
                        (o, width, p),
                        &mut dw,
                        (width, 1),
                        true,
                        dy,
                        (p, 1),
                        &cols,
                        (1, p),
                    );
                    if !input_grad {
                        continue;
                    }
                    // dcols_b (width × p) = Wᵀ (width × o) · dY_b (o × p), then col2im.
                    gemm_into(
                        (width, p, o),
                        &mut dcols,
                        (p, 1),
                        false,
                        w,
                        (1, width),
                        dy,
                        (p, 1),
                    );
                    self.col2im(&dcols, dx);
                }
                dw
            })
            .collect();
        let mut dw = vec![0f32; o * width];
        for part in &partials {
            for (a, v) in dw.iter_mut().zip(part) {
                *a += v;
            }
        }
        let dev = grad.device();
        let dx = if input_grad {
            Some(Tensor::from_vec(
                dx,
                (b, g.channels, g.height, g.width),
                dev,
            )?)
        } else {
            None
        };
        Ok((dx, Some(Tensor::from_vec(dw, (o, width), dev)?)))
    }
}

/// Max pooling with a hand-written kernel. candle's own max-pool backward builds an
/// equality mask through five whole-tensor passes; this one routes each window's gradient
/// straight to the window's (first) maximum.
struct MaxPool(Geometry);

/// The max-pool backward: `(input, output gradient)` → input gradient.
struct MaxPoolGrad(Geometry);

/// Index, within one `[c, h, w]` sample, of the maximum of each pooling window, in output
/// order `(c, oh, ow)`.
fn window_argmax(g: &Geometry, x: &[f32], mut f: impl FnMut(usize, usize)) {
    let (ho, wo) = g.output();
    if g.kernel == 2 && g.stride == 2 {
        // The common 2×2 window, unrolled: the first maximum in the order the general
        // loop visits, (0, 0), (0, 1), (1, 0), (1, 1), as it breaks ties. The general loop
        // was a third of LeNet-5's pooling time.
        let plane = g.height * g.width;
        for c in 0..g.channels {
            for oh in 0..ho {
                let r0 = c * plane + 2 * oh * g.width;
                let r1 = r0 + g.width;
                for ow in 0..wo {
                    let (i0, i1) = (r0 + 2 * ow, r1 + 2 * ow);
                    let (mut best, mut m) = (i0, x[i0]);
                    for i in [i0 + 1, i1, i1 + 1] {
                        if x[i] > m {
                            (best, m) = (i, x[i]);
                        }
                    }
                    f((c * ho + oh) * wo + ow, best);
                }
            }
        }
        return;
    }
    for c in 0..g.channels {
        for oh in 0..ho {
            for ow in 0..wo {
                let mut best = (oh * g.stride * g.width) + ow * g.stride + c * g.height * g.width;
                for ki in 0..g.kernel {
                    for kj in 0..g.kernel {
                        let i = c * g.height * g.width
                            + (oh * g.stride + ki) * g.width
                            + ow * g.stride
                            + kj;
                        if x[i] > x[best] {
                            best = i;
                        }
                    }
                }
                f((c * ho + oh) * wo + ow, best);
            }
        }
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max-pool"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous_f32(storage, layout, "max-pool")?;
        let sample = g.channels * g.height * g.width;
        let b = x.len() / sample;
        let (ho, wo) = g.output();
        let out_sample = g.channels * ho * wo;
        let mut out = vec![0f32; b * out_sample];
        out.par_chunks_mut(out_sample)
            .zip(x.par_chunks(sample))
            .for_each(|(dst, src)| window_argmax(&g, src, |o, i| dst[o] = src[i]));
        Ok((CpuStorage::F32(out), Shape::from((b, g.channels, ho, wo))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &MaxPoolGrad(self.0),
        )?))
    }
}

impl candle_core::CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "max-pool-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous_f32(s1, l1, "max-pool-grad")?;
        let grad = contiguous_f32(s2, l2, "max-pool-grad")?;
        let sample = g.channels * g.height * g.width;
        let (ho, wo) = g.output();
        let out_sample = g.channels * ho * wo;
        let b = x.len() / sample;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(sample)
            .zip(x.par_chunks(sample))
            .zip(grad.par_chunks(out_sample))
            .for_each(|((dst, src), gr)| window_argmax(&g, src, |o, i| dst[i] += gr[o]));
        Ok((
            CpuStorage::F32(dx),
            Shape::from((b, g.channels, g.height, g.width)),
        ))
    }
}

/// Max pooling of `[b, c, h, w]` with a square window.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let g = Geometry {
        channels: c,
        height: h,
        width: w,
        kernel,
        stride,
        padding: 0,
    };
    Ok(x.contiguous()?.apply_op1(MaxPool(g))?)
}

/// `x` is `[b, c, h, w]`, `weight` is `[o, c / groups, k, k]`; returns `[b, o, ho, wo]`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    groups: usize,
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
    let kk = k * k;
    let dense = groups == 1;
    // A dense convolution folds its bias into the GEMM (see `Im2Col`).
    let folded = dense && bias.is_some();
    if dense {
        let w = weight.reshape((o, c * kk))?;
        let w = match bias {
            Some(bias) => Tensor::cat(&[&w, &bias.reshape((o, 1))?], 1)?,
            None => w,
        };
        return Ok(x.contiguous()?.apply_op2(
            &w.contiguous()?,
            DenseConv {
                geometry: g,
                ones: folded,
            },
        )?);
    }
    let cols = x.contiguous()?.apply_op1(Im2Col {
        geometry: g,
        ones: folded,
    })?;
    let out = if c_per_group == 1 && o == c {
        // Depthwise: each output channel sees only its own input channel, so the layer is c
        // small GEMMs, one per channel, over a channel-major copy of the patches. Written as
        // a batched matmul, both gradients are GEMMs too (a broadcast multiply would need a
        // slow reduction over the batch for the weight gradient).
        let n = b * ho * wo;
        let per_channel = cols.reshape((n, c, kk))?.transpose(0, 1)?.contiguous()?;
        let out = per_channel.matmul(&weight.reshape((c, kk, 1))?)?;
        let out = out
            .reshape((c, b, ho * wo))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((b, o, ho, wo))?;
        return Ok(match bias {
            Some(bias) => out.broadcast_add(&bias.reshape((1, o, 1, 1))?)?,
            None => out,
        });
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
        Some(bias) if !folded => out.broadcast_add(&bias.reshape((1, o, 1, 1))?)?,
        _ => out,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Largest absolute difference between two tensors of one shape.
    pub(crate) fn close(a: &Tensor, b: &Tensor) -> f32 {
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
    fn max_pool_matches_candle_forward_and_backward() {
        let dev = crate::device();
        for (k, s, h) in [(2, 2, 8), (3, 2, 9), (2, 1, 5)] {
            let x = candle_core::Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (2, 3, h, h), &dev).unwrap(),
            )
            .unwrap();
            let ours = max_pool2d(x.as_tensor(), k, s).unwrap();
            let theirs = x.as_tensor().max_pool2d_with_stride(k, s).unwrap();
            assert!(close(&ours, &theirs) == 0.0);
            let g = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let dx = g.get(x.as_tensor()).unwrap();
            // Each window's gradient, 2·max, lands on its maximum only, so
            // Σ dx·x = Σ 2·max². (candle's own max-pool backward scales the gradient by the
            // share of maxima in the window, a quarter for 2x2, so it cannot be the reference.)
            let expected = ours
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                * 2.0;
            let got = (dx * x.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                (got - expected).abs() < 1e-3 * expected.abs().max(1.0),
                "{k} {s} {h}: {got} vs {expected}"
            );
        }
        let x = candle_core::Var::new(&[[[[1f32, 5., 0., 2.], [3., 2., 7., 1.]]]], &dev).unwrap();
        let y = max_pool2d(x.as_tensor(), 2, 2).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![5., 7.]
        );
        let g = y.sum_all().unwrap().backward().unwrap();
        let dx = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(dx, vec![0., 1., 0., 0., 0., 0., 1., 0.]);
    }

    /// The unrolled 2×2 window picks what the general loop picks, ties included.
    #[test]
    fn the_two_by_two_window_finds_the_first_maximum_as_the_general_loop_does() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let g = Geometry {
            channels: 3,
            height: 9,
            width: 8,
            kernel: 2,
            stride: 2,
            padding: 0,
        };
        // Few distinct values, so most windows hold ties.
        let x: Vec<f32> = (0..3 * 9 * 8)
            .map(|_| rng.random_range(0..3) as f32)
            .collect();
        let mut fast = Vec::new();
        window_argmax(&g, &x, |o, i| fast.push((o, i)));
        let (ho, wo) = g.output();
        let mut general = Vec::new();
        for c in 0..g.channels {
            for oh in 0..ho {
                for ow in 0..wo {
                    let at = |ki: usize, kj: usize| c * 72 + (2 * oh + ki) * 8 + 2 * ow + kj;
                    let mut best = at(0, 0);
                    for (ki, kj) in [(0, 1), (1, 0), (1, 1)] {
                        if x[at(ki, kj)] > x[best] {
                            best = at(ki, kj);
                        }
                    }
                    general.push(((c * ho + oh) * wo + ow, best));
                }
            }
        }
        assert_eq!(fast, general);
        assert_eq!(fast.len(), 3 * 4 * 4);
    }

    #[test]
    fn matches_candle_conv2d_forward_and_backward() {
        let dev = crate::device();
        for (c, o, k, stride, padding, groups) in [
            (3, 8, 3, 1, 1, 1),
            (4, 6, 5, 2, 0, 1),
            (6, 6, 3, 1, 1, 6),
            (4, 8, 3, 2, 1, 2),
            // A padded, strided downsampling layer (ResNet's), then LeNet-5's.
            (3, 4, 3, 2, 1, 1),
            (1, 6, 5, 1, 0, 1),
            (6, 16, 5, 1, 0, 1),
        ] {
            // 19 samples: two whole blocks of the weight gradient's sum and a part block.
            let x = candle_core::Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (19, c, 9, 9), &dev).unwrap(),
            )
            .unwrap();
            let w = candle_core::Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (o, c / groups, k, k), &dev).unwrap(),
            )
            .unwrap();
            let bias =
                candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, o, &dev).unwrap()).unwrap();
            let ours = conv2d(
                x.as_tensor(),
                w.as_tensor(),
                Some(bias.as_tensor()),
                stride,
                padding,
                groups,
            )
            .unwrap();
            let theirs = x
                .as_tensor()
                .conv2d(w.as_tensor(), padding, stride, 1, groups)
                .unwrap()
                .broadcast_add(&bias.as_tensor().reshape((1, o, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(
                close(&ours, &theirs) < 1e-4,
                "forward {c} {o} {k} {stride} {padding} {groups}"
            );
            let g_ours = ours
                .sqr()
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_theirs = theirs
                .sqr()
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &w, &bias] {
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
        // A data input (no variable behind it) gets no gradient, the weight the same one.
        let dev = crate::device();
        let x = Tensor::randn(0f32, 1.0, (3, 2, 7, 7), &dev).unwrap();
        let w =
            candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 2, 3, 3), &dev).unwrap())
                .unwrap();
        let loss = |y: Tensor| y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g_ours = loss(conv2d(&x, w.as_tensor(), None, 1, 0, 1).unwrap());
        let g_theirs = loss(x.conv2d(w.as_tensor(), 0, 1, 1, 1).unwrap());
        assert!(g_ours.get(&x).is_none());
        let (a, b) = (
            g_ours.get(w.as_tensor()).unwrap(),
            g_theirs.get(w.as_tensor()).unwrap(),
        );
        assert!(close(a, b) <= 1e-3, "{}", close(a, b));
    }
}
