//! Gaussian-process regression on encoded points: a Matérn-5/2 kernel with automatic
//! relevance determination (one lengthscale per dimension), standardised outputs, and a
//! fitted noise variance. Numeric dimensions enter in their unit encoding; a categorical
//! dimension enters as its choice index and contributes a Hamming distance (0 when the
//! choices agree, 1 otherwise), a categorical kernel as Optuna's GP uses.
//!
//! The hyperparameters (log lengthscales, log signal variance, log noise variance) are
//! fitted by maximising the log marginal likelihood plus weak log-normal priors (a MAP
//! estimate, which keeps a lengthscale from running off to infinity on a handful of
//! points) with argmin's L-BFGS from several starts, using the analytic gradient. The
//! Cholesky factorisation is nalgebra's.

use nalgebra::{Cholesky, DMatrix, DVector, Dyn};
use rand::Rng;

use super::optimize::minimize;

const SQRT5: f64 = 2.236_067_977_499_79;
/// Added to the diagonal for numerical stability, on standardised outputs.
const JITTER: f64 = 1e-8;

/// Bounds of the log hyperparameters: lengthscales on the unit cube, signal variance of
/// standardised outputs, noise variance.
const LOG_LENGTHSCALE: (f64, f64) = (-4.6, 4.6); // 0.01 to 100
const LOG_SIGNAL: (f64, f64) = (-4.6, 4.6);
const LOG_NOISE: (f64, f64) = (-13.8, 0.0); // 1e-6 to 1

/// Prior means and standard deviations of the log hyperparameters.
const PRIOR_LENGTHSCALE: (f64, f64) = (-0.69, 1.5); // ln 0.5
const PRIOR_SIGNAL: (f64, f64) = (0.0, 1.5);
const PRIOR_NOISE: (f64, f64) = (-6.9, 2.5); // ln 1e-3

/// The kernel's hyperparameters, in log space.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyper {
    pub log_lengthscales: Vec<f64>,
    pub log_signal: f64,
    pub log_noise: f64,
}

impl Hyper {
    /// The starting point of every fit: lengthscale 0.5, unit signal, noise 1e-3.
    pub fn default_for(dims: usize) -> Hyper {
        Hyper {
            log_lengthscales: vec![PRIOR_LENGTHSCALE.0; dims],
            log_signal: PRIOR_SIGNAL.0,
            log_noise: PRIOR_NOISE.0,
        }
    }

    fn to_vec(&self) -> Vec<f64> {
        let mut v = self.log_lengthscales.clone();
        v.push(self.log_signal);
        v.push(self.log_noise);
        v
    }

    fn from_slice(v: &[f64]) -> Hyper {
        let d = v.len() - 2;
        Hyper {
            log_lengthscales: v[..d].to_vec(),
            log_signal: v[d],
            log_noise: v[d + 1],
        }
    }

    fn bounds(dims: usize) -> (Vec<f64>, Vec<f64>) {
        let mut lo = vec![LOG_LENGTHSCALE.0; dims];
        let mut hi = vec![LOG_LENGTHSCALE.1; dims];
        lo.extend([LOG_SIGNAL.0, LOG_NOISE.0]);
        hi.extend([LOG_SIGNAL.1, LOG_NOISE.1]);
        (lo, hi)
    }

    /// The log prior density (up to a constant) and its gradient.
    fn log_prior(&self) -> (f64, Vec<f64>) {
        let term = |x: f64, (m, s): (f64, f64)| (-0.5 * ((x - m) / s).powi(2), -(x - m) / (s * s));
        let mut value = 0.0;
        let mut grad = Vec::with_capacity(self.log_lengthscales.len() + 2);
        for &l in &self.log_lengthscales {
            let (v, g) = term(l, PRIOR_LENGTHSCALE);
            value += v;
            grad.push(g);
        }
        for (x, p) in [
            (self.log_signal, PRIOR_SIGNAL),
            (self.log_noise, PRIOR_NOISE),
        ] {
            let (v, g) = term(x, p);
            value += v;
            grad.push(g);
        }
        (value, grad)
    }
}

/// Per-dimension squared distance: the unit-encoding difference squared, or the Hamming
/// distance of two categorical choices.
#[inline]
fn sq(a: f64, b: f64, categorical: bool) -> f64 {
    if categorical {
        if a == b {
            0.0
        } else {
            1.0
        }
    } else {
        (a - b) * (a - b)
    }
}

/// The Matérn-5/2 correlation at scaled distance `r`.
#[inline]
fn matern52(r: f64) -> f64 {
    (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * (-SQRT5 * r).exp()
}

/// The training data, standardised.
#[derive(Debug, Clone)]
struct Data {
    x: Vec<Vec<f64>>,
    y: DVector<f64>,
    categorical: Vec<bool>,
}

impl Data {
    fn scaled_r(&self, a: &[f64], b: &[f64], inv_l2: &[f64]) -> f64 {
        let mut s = 0.0;
        for d in 0..a.len() {
            s += sq(a[d], b[d], self.categorical[d]) * inv_l2[d];
        }
        s.sqrt()
    }

    /// The covariance matrix (signal plus noise and jitter on the diagonal).
    fn covariance(&self, h: &Hyper) -> DMatrix<f64> {
        let n = self.x.len();
        let inv_l2: Vec<f64> = h
            .log_lengthscales
            .iter()
            .map(|l| (-2.0 * l).exp())
            .collect();
        let signal = h.log_signal.exp();
        let mut k = DMatrix::zeros(n, n);
        for i in 0..n {
            k[(i, i)] = signal + h.log_noise.exp() + JITTER;
            for j in 0..i {
                let v = signal * matern52(self.scaled_r(&self.x[i], &self.x[j], &inv_l2));
                k[(i, j)] = v;
                k[(j, i)] = v;
            }
        }
        k
    }

    /// The log marginal likelihood and its gradient in the log hyperparameters; None when
    /// the covariance is not positive definite.
    fn log_marginal_likelihood(&self, h: &Hyper) -> Option<(f64, Vec<f64>)> {
        let n = self.x.len();
        let dims = h.log_lengthscales.len();
        let k = self.covariance(h);
        let chol = Cholesky::new(k)?;
        let alpha = chol.solve(&self.y);
        let log_det: f64 = chol
            .l_dirty()
            .diagonal()
            .iter()
            .map(|v| v.ln())
            .sum::<f64>()
            * 2.0;
        let value = -0.5 * self.y.dot(&alpha)
            - 0.5 * log_det
            - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        // W = α αᵀ − K⁻¹; ∂L/∂θ = ½ tr(W ∂K/∂θ).
        let inverse = chol.inverse();
        let inv_l2: Vec<f64> = h
            .log_lengthscales
            .iter()
            .map(|l| (-2.0 * l).exp())
            .collect();
        let signal = h.log_signal.exp();
        let noise = h.log_noise.exp();
        let mut grad = vec![0.0; dims + 2];
        for i in 0..n {
            // Diagonal: ∂K_ii/∂log σ² = σ², ∂K_ii/∂log σn² = σn²; lengthscales do not move it.
            let w = alpha[i] * alpha[i] - inverse[(i, i)];
            grad[dims] += 0.5 * w * signal;
            grad[dims + 1] += 0.5 * w * noise;
            for j in 0..i {
                let w = 2.0 * (alpha[i] * alpha[j] - inverse[(i, j)]); // both triangles
                let (a, b) = (&self.x[i], &self.x[j]);
                let mut s = 0.0;
                for d in 0..dims {
                    s += sq(a[d], b[d], self.categorical[d]) * inv_l2[d];
                }
                let r = s.sqrt();
                let e = (-SQRT5 * r).exp();
                grad[dims] += 0.5 * w * signal * (1.0 + SQRT5 * r + 5.0 / 3.0 * s) * e;
                // ∂k/∂log ℓ_d = (5/3) σ² (1 + √5 r) e^{−√5 r} s_d.
                let common = 0.5 * w * 5.0 / 3.0 * signal * (1.0 + SQRT5 * r) * e;
                for d in 0..dims {
                    grad[d] += common * sq(a[d], b[d], self.categorical[d]) * inv_l2[d];
                }
            }
        }
        Some((value, grad))
    }
}

/// A fitted Gaussian process: hyperparameters, the Cholesky factor of the training
/// covariance and the weights of the posterior mean, on standardised outputs.
#[derive(Debug, Clone)]
pub struct Gp {
    data: Data,
    pub hyper: Hyper,
    y_mean: f64,
    y_std: f64,
    chol: Cholesky<f64, Dyn>,
    alpha: DVector<f64>,
    inv_l2: Vec<f64>,
}

/// How a fit runs.
#[derive(Debug, Clone)]
pub struct FitSettings {
    /// L-BFGS starts: the default hyperparameters, then random draws from the priors.
    pub starts: usize,
    pub max_iters: u64,
    /// The hyperparameters are fitted on at most this many points (the last ones given);
    /// the posterior always uses all of them.
    pub max_fit_points: usize,
}

impl Default for FitSettings {
    fn default() -> Self {
        FitSettings {
            starts: 2,
            max_iters: 40,
            max_fit_points: 120,
        }
    }
}

fn standardise(y: &[f64]) -> (f64, f64) {
    let n = y.len().max(1) as f64;
    let mean = y.iter().sum::<f64>() / n;
    let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    (
        mean,
        if std > 1e-12 && std.is_finite() {
            std
        } else {
            1.0
        },
    )
}

impl Gp {
    /// The log marginal likelihood of `y` at `x` under `hyper` (outputs standardised as
    /// a fit standardises them); None when the covariance is singular.
    pub fn log_marginal_likelihood(
        x: &[Vec<f64>],
        y: &[f64],
        categorical: &[bool],
        hyper: &Hyper,
    ) -> Option<f64> {
        let (mean, std) = standardise(y);
        let data = Data {
            x: x.to_vec(),
            y: DVector::from_iterator(y.len(), y.iter().map(|v| (v - mean) / std)),
            categorical: categorical.to_vec(),
        };
        data.log_marginal_likelihood(hyper).map(|(v, _)| v)
    }

    /// Fits the hyperparameters (MAP, several L-BFGS starts) and conditions on the data.
    /// `x` holds encoded points (see the module docs), `y` the raw outputs.
    pub fn fit(
        x: &[Vec<f64>],
        y: &[f64],
        categorical: &[bool],
        settings: &FitSettings,
        rng: &mut impl Rng,
    ) -> Option<Gp> {
        let hyper = Gp::fit_hyper(x, y, categorical, settings, rng)?;
        Gp::with_hyper(x, y, categorical, hyper)
    }

    /// The MAP hyperparameters for the data, without conditioning on it.
    pub fn fit_hyper(
        x: &[Vec<f64>],
        y: &[f64],
        categorical: &[bool],
        settings: &FitSettings,
        rng: &mut impl Rng,
    ) -> Option<Hyper> {
        if x.is_empty() || x.len() != y.len() {
            return None;
        }
        let dims = categorical.len();
        let from = x.len().saturating_sub(settings.max_fit_points);
        let (mean, std) = standardise(&y[from..]);
        let data = Data {
            x: x[from..].to_vec(),
            y: DVector::from_iterator(y.len() - from, y[from..].iter().map(|v| (v - mean) / std)),
            categorical: categorical.to_vec(),
        };
        let objective = |v: &[f64]| -> (f64, Vec<f64>) {
            let h = Hyper::from_slice(v);
            match data.log_marginal_likelihood(&h) {
                Some((value, grad)) => {
                    let (pv, pg) = h.log_prior();
                    (
                        -(value + pv),
                        grad.iter().zip(&pg).map(|(g, p)| -(g + p)).collect(),
                    )
                }
                None => (f64::INFINITY, vec![0.0; v.len()]),
            }
        };
        let (lo, hi) = Hyper::bounds(dims);
        let mut best: Option<(Vec<f64>, f64)> = None;
        for s in 0..settings.starts.max(1) {
            let start = if s == 0 {
                Hyper::default_for(dims).to_vec()
            } else {
                let draw = |(m, sd): (f64, f64), rng: &mut dyn rand::RngCore| {
                    m + sd
                        * rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, rng)
                };
                let mut v: Vec<f64> = (0..dims).map(|_| draw(PRIOR_LENGTHSCALE, rng)).collect();
                v.push(draw(PRIOR_SIGNAL, rng));
                v.push(draw(PRIOR_NOISE, rng));
                v
            };
            let (x_best, value) = minimize(&objective, &start, &lo, &hi, settings.max_iters);
            if value.is_finite() && best.as_ref().is_none_or(|(_, b)| value < *b) {
                best = Some((x_best, value));
            }
        }
        Some(best.map_or_else(|| Hyper::default_for(dims), |(v, _)| Hyper::from_slice(&v)))
    }

    /// Conditions on the data with fixed hyperparameters; None when the covariance is not
    /// positive definite even with jitter.
    pub fn with_hyper(x: &[Vec<f64>], y: &[f64], categorical: &[bool], hyper: Hyper) -> Option<Gp> {
        let (y_mean, y_std) = standardise(y);
        let data = Data {
            x: x.to_vec(),
            y: DVector::from_iterator(y.len(), y.iter().map(|v| (v - y_mean) / y_std)),
            categorical: categorical.to_vec(),
        };
        let chol = Cholesky::new(data.covariance(&hyper))?;
        let alpha = chol.solve(&data.y);
        let inv_l2 = hyper
            .log_lengthscales
            .iter()
            .map(|l| (-2.0 * l).exp())
            .collect();
        Some(Gp {
            data,
            hyper,
            y_mean,
            y_std,
            chol,
            alpha,
            inv_l2,
        })
    }

    /// The number of points conditioned on.
    pub fn len(&self) -> usize {
        self.data.x.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.x.is_empty()
    }

    fn cross(&self, x: &[f64]) -> DVector<f64> {
        let signal = self.hyper.log_signal.exp();
        DVector::from_iterator(
            self.data.x.len(),
            self.data
                .x
                .iter()
                .map(|xi| signal * matern52(self.data.scaled_r(x, xi, &self.inv_l2))),
        )
    }

    /// The posterior mean and variance of the latent function at `x`, in output units
    /// (the noise is not included in the variance).
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let k = self.cross(x);
        let mean = k.dot(&self.alpha);
        let v = self
            .chol
            .l_dirty()
            .solve_lower_triangular(&k)
            .unwrap_or_else(|| DVector::zeros(k.len()));
        let var = (self.hyper.log_signal.exp() - v.norm_squared()).max(1e-12);
        (
            self.y_mean + self.y_std * mean,
            var * self.y_std * self.y_std,
        )
    }

    /// [`Gp::predict`] at many points, solving their triangular systems together.
    pub fn predict_many(&self, xs: &[Vec<f64>]) -> Vec<(f64, f64)> {
        if xs.is_empty() {
            return Vec::new();
        }
        let n = self.data.x.len();
        let mut k = DMatrix::zeros(n, xs.len());
        for (c, x) in xs.iter().enumerate() {
            k.set_column(c, &self.cross(x));
        }
        let means = k.tr_mul(&self.alpha);
        let v = self
            .chol
            .l_dirty()
            .solve_lower_triangular(&k)
            .unwrap_or_else(|| DMatrix::zeros(n, xs.len()));
        let signal = self.hyper.log_signal.exp();
        (0..xs.len())
            .map(|c| {
                let var = (signal - v.column(c).norm_squared()).max(1e-12);
                (
                    self.y_mean + self.y_std * means[c],
                    var * self.y_std * self.y_std,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// With one training point the posterior has a closed form: mean k(x,x1)/(σ²+σn²)·y1
    /// (standardised), variance σ² − k(x,x1)²/(σ²+σn²).
    #[test]
    fn posterior_matches_the_closed_form() {
        let hyper = Hyper {
            log_lengthscales: vec![(0.4f64).ln()],
            log_signal: (1.5f64).ln(),
            log_noise: (0.1f64).ln(),
        };
        // Two points so that standardisation is not degenerate: y = (1, 3) → (−1, 1).
        let x = vec![vec![0.2], vec![0.7]];
        let gp = Gp::with_hyper(&x, &[1.0, 3.0], &[false], hyper).unwrap();
        let (s2, n2) = (1.5, 0.1 + JITTER);
        let k12 = s2 * matern52(0.5 / 0.4);
        let kmat = nalgebra::Matrix2::new(s2 + n2, k12, k12, s2 + n2);
        let inv = kmat.try_inverse().unwrap();
        let at = 0.45;
        let ks = nalgebra::Vector2::new(
            s2 * matern52((at - 0.2f64).abs() / 0.4),
            s2 * matern52((0.7 - at) / 0.4),
        );
        let ys = nalgebra::Vector2::new(-1.0, 1.0);
        let mean = 2.0 + 1.0 * (ks.transpose() * inv * ys)[0];
        let var = 1.0 * (s2 - (ks.transpose() * inv * ks)[0]);
        let (m, v) = gp.predict(&[at]);
        assert!((m - mean).abs() < 1e-10, "{m} vs {mean}");
        assert!((v - var).abs() < 1e-10, "{v} vs {var}");
        let many = gp.predict_many(&[vec![at], vec![0.2]]);
        assert!((many[0].0 - m).abs() < 1e-12 && (many[0].1 - v).abs() < 1e-12);
        // Near a training point with little noise, the mean is near its value.
        assert!((many[1].0 - 1.0).abs() < 0.2, "{:?}", many[1]);
    }

    #[test]
    fn the_analytic_gradient_matches_finite_differences() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let x: Vec<Vec<f64>> = (0..12)
            .map(|_| {
                vec![
                    rng.random::<f64>(),
                    rng.random::<f64>(),
                    (rng.random_range(0..3)) as f64,
                ]
            })
            .collect();
        let y: Vec<f64> = x.iter().map(|p| (3.0 * p[0]).sin() + p[1] * p[2]).collect();
        let (mean, std) = standardise(&y);
        let data = Data {
            x: x.clone(),
            y: DVector::from_iterator(y.len(), y.iter().map(|v| (v - mean) / std)),
            categorical: vec![false, false, true],
        };
        let h = Hyper {
            log_lengthscales: vec![-0.5, 0.3, 0.1],
            log_signal: 0.2,
            log_noise: -3.0,
        };
        let (_, grad) = data.log_marginal_likelihood(&h).unwrap();
        let v = h.to_vec();
        for i in 0..v.len() {
            let mut up = v.clone();
            let mut down = v.clone();
            up[i] += 1e-5;
            down[i] -= 1e-5;
            let f = |w: &[f64]| {
                data.log_marginal_likelihood(&Hyper::from_slice(w))
                    .unwrap()
                    .0
            };
            let numeric = (f(&up) - f(&down)) / 2e-5;
            assert!(
                (numeric - grad[i]).abs() < 1e-4 * (1.0 + numeric.abs()),
                "parameter {i}: analytic {} numeric {numeric}",
                grad[i]
            );
        }
    }

    #[test]
    fn fitting_improves_the_marginal_likelihood_and_predicts_held_out_points() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let f = |p: &[f64]| (6.0 * p[0]).sin() + 0.1 * p[1];
        let x: Vec<Vec<f64>> = (0..30)
            .map(|_| vec![rng.random::<f64>(), rng.random::<f64>()])
            .collect();
        let y: Vec<f64> = x.iter().map(|p| f(p)).collect();
        let cat = [false, false];
        let start = Gp::log_marginal_likelihood(&x, &y, &cat, &Hyper::default_for(2)).unwrap();
        let gp = Gp::fit(&x, &y, &cat, &FitSettings::default(), &mut rng).unwrap();
        let fitted = Gp::log_marginal_likelihood(&x, &y, &cat, &gp.hyper).unwrap();
        assert!(fitted > start + 1.0, "fitted {fitted} vs start {start}");
        // The irrelevant second input gets the longer lengthscale.
        assert!(
            gp.hyper.log_lengthscales[1] > gp.hyper.log_lengthscales[0],
            "{:?}",
            gp.hyper
        );
        let mut err = 0.0;
        for i in 0..20 {
            let p = [i as f64 / 19.0, 0.5];
            err += (gp.predict(&p).0 - f(&p)).abs();
        }
        assert!(err / 20.0 < 0.1, "mean abs error {}", err / 20.0);
    }
}
