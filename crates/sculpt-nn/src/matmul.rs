//! The matrix product of Linear layers as a candle custom op with its own backward, so that
//! the product never nests parallelism: called from a thread of the pool (a shard of a
//! data-parallel batch, see `train::shard_count`), it runs on that thread alone; called from
//! outside the pool, it splits across the pool as candle's own product does. candle's
//! product always asks for every thread, and two shards each asking for both threads ran
//! half as fast as two shards on one thread each.

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use crate::conv::contiguous_f32;

/// `op(a) · op(b)` for 2-D f32 tensors, `op` transposing where its flag says.
#[derive(Debug, Clone, Copy)]
struct MatMul {
    /// Whether the left operand is transposed.
    ta: bool,
    /// Whether the right operand is transposed.
    tb: bool,
}

/// Rows and columns of `op(x)` for a `(r, c)` matrix, and its row and column strides in
/// the contiguous row-major `x`.
fn view(dims: (usize, usize), transposed: bool) -> ((usize, usize), (usize, usize)) {
    let (r, c) = dims;
    if transposed {
        ((c, r), (1, c))
    } else {
        ((r, c), (c, 1))
    }
}

impl candle_core::CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = contiguous_f32(sa, la, "matmul")?;
        let b = contiguous_f32(sb, lb, "matmul")?;
        let ((m, k), (a_rs, a_cs)) = view(la.shape().dims2()?, self.ta);
        let ((k2, n), (b_rs, b_cs)) = view(lb.shape().dims2()?, self.tb);
        if k != k2 {
            candle_core::bail!("matmul: inner dimensions {k} and {k2} differ");
        }
        let mut out = vec![0f32; m * n];
        if k > 0 {
            let threads = rayon::current_num_threads();
            let parallelism = if rayon::current_thread_index().is_some() || threads == 1 {
                gemm::Parallelism::None
            } else {
                gemm::Parallelism::Rayon(threads)
            };
            // SAFETY: `a` is `m × k` and `b` is `k × n` under their strides (both are the
            // whole contiguous tensors), `out` is `m × n` row-major and does not alias them.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    a_cs as isize,
                    a_rs as isize,
                    b.as_ptr(),
                    b_cs as isize,
                    b_rs as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                )
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    /// With `A = op(a)`, `B = op(b)` and `C = A·B`: `dA = dC·Bᵀ` and `dB = Aᵀ·dC`, each
    /// transposed back when its operand was.
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // An operand no variable depends on (a batch of data) needs no gradient: for a
        // network's first layer that skips a product as large as the forward one.
        let da = if !a.track_op() {
            None
        } else if self.ta {
            // dA = (dC·Bᵀ)ᵀ = B·dCᵀ.
            Some(product(b, &grad, self.tb, true)?)
        } else {
            Some(product(&grad, b, false, !self.tb)?)
        };
        let db = if !b.track_op() {
            None
        } else if self.tb {
            // dB = (Aᵀ·dC)ᵀ = dCᵀ·A.
            Some(product(&grad, a, true, self.ta)?)
        } else {
            Some(product(a, &grad, !self.ta, false)?)
        };
        Ok((da, db))
    }
}

fn product(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> candle_core::Result<Tensor> {
    a.apply_op2(b, MatMul { ta, tb })
}

/// `x · wᵀ` for a Linear layer's `(batch, in)` input and `(out, in)` weight, with its
/// backward; other shapes go through candle's product.
pub fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if x.rank() != 2 || w.rank() != 2 || x.dtype() != candle_core::DType::F32 {
        return x.matmul(&w.t()?);
    }
    product(&x.contiguous()?, &w.contiguous()?, false, true)
}

#[cfg(test)]
mod tests {
    use candle_core::{Tensor, Var};

    fn close(a: &Tensor, b: &Tensor) {
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} against {y}");
        }
    }

    #[test]
    fn the_product_and_its_gradients_equal_candles_in_every_transposition() {
        let dev = crate::device();
        let (m, k, n) = (5, 7, 3);
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let a_dims = if ta { (k, m) } else { (m, k) };
            let b_dims = if tb { (n, k) } else { (k, n) };
            let a = Var::randn(0f32, 1.0, a_dims, &dev).unwrap();
            let b = Var::randn(0f32, 1.0, b_dims, &dev).unwrap();
            // A weighting of the output, so each gradient entry differs.
            let r = Tensor::randn(0f32, 1.0, (m, n), &dev).unwrap();
            let op = |x: &Tensor, t: bool| if t { x.t().unwrap() } else { x.clone() };
            let want = op(a.as_tensor(), ta)
                .matmul(&op(b.as_tensor(), tb))
                .unwrap();
            let got = super::product(a.as_tensor(), b.as_tensor(), ta, tb).unwrap();
            close(&got, &want);
            let gw = (want * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gg = (got * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&a, &b] {
                close(
                    gg.get(v.as_tensor()).unwrap(),
                    gw.get(v.as_tensor()).unwrap(),
                );
            }
        }
        // Data (no variable behind it) gets no gradient; the weight gets the same one.
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let w = Var::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let ours = super::linear(&x, w.as_tensor()).unwrap();
        let theirs = x.matmul(&w.as_tensor().t().unwrap()).unwrap();
        let go = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let gt = theirs.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(go.get(&x).is_none());
        close(
            go.get(w.as_tensor()).unwrap(),
            gt.get(w.as_tensor()).unwrap(),
        );
        // Inside the pool the product runs on the calling thread, with the same result.
        let x = Tensor::randn(0f32, 1.0, (64, 300), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (100, 300), &dev).unwrap();
        let outside = super::linear(&x, &w).unwrap();
        let inside = rayon::scope(|_| super::linear(&x, &w).unwrap());
        close(&inside, &outside);
        close(&outside, &x.matmul(&w.t().unwrap()).unwrap());
    }
}
