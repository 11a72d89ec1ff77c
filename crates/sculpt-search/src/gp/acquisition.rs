//! Acquisition functions over independent Gaussian posteriors of minimised objectives, all
//! in log space so that they stay informative far from the front, where the plain values
//! underflow to zero (Ament et al. 2023, "Unexpected improvements to expected improvement";
//! Optuna's logEI and logEHVI):
//!
//! - [`log_ei`]: expected improvement of one objective (ParEGO's scalarisation);
//! - [`log_ehvi_2d`]: the exact expected hypervolume improvement of two objectives, as a
//!   sum over the boxes that tile the region the front does not dominate;
//! - [`log_pof`]: the probability that a modelled objective meets a bound.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// ln Φ(z), the standard normal CDF, accurate in the far lower tail.
pub fn log_cdf(z: f64) -> f64 {
    // erfc keeps full relative accuracy down to where its value underflows.
    if z > -35.0 {
        (0.5 * libm::erfc(-z * FRAC_1_SQRT_2)).ln()
    } else {
        // Φ(z) = φ(z)/|z| · (1 − 1/z² + 3/z⁴ − 15/z⁶ + …) for z → −∞.
        let z2 = z * z;
        log_pdf(z) - (-z).ln() + (1.0 - 1.0 / z2 + 3.0 / (z2 * z2) - 15.0 / (z2 * z2 * z2)).ln()
    }
}

/// ln φ(z), the standard normal density.
pub fn log_pdf(z: f64) -> f64 {
    -0.5 * z * z - 0.5 * (2.0 * PI).ln()
}

/// ln h(z) with h(z) = z Φ(z) + φ(z) = E[(z − Z)₊] for a standard normal Z (the expected
/// improvement at z standard deviations): direct down to z = −25, an asymptotic series
/// below.
pub fn log_h(z: f64) -> f64 {
    // Direct until φ(z) nears underflow: the cancellation of z Φ(z) against φ(z) costs
    // about log10(z²) digits, 3 at z = −25, where the series' truncation error is 1e-8.
    if z > -25.0 {
        let phi = (-0.5 * z * z).exp() / (2.0 * PI).sqrt();
        let cdf = 0.5 * libm::erfc(-z * FRAC_1_SQRT_2);
        (z * cdf + phi).max(f64::MIN_POSITIVE).ln()
    } else {
        // h(z) = φ(z)/z² · (1 − 3/z² + 15/z⁴ − 105/z⁶ + …).
        let z2 = z * z;
        log_pdf(z) - z2.ln() + (1.0 - 3.0 / z2 + 15.0 / (z2 * z2) - 105.0 / (z2 * z2 * z2)).ln()
    }
}

/// ln(e^a − e^b) for a ≥ b.
fn log_sub_exp(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    let d = b - a;
    if d >= 0.0 {
        return f64::NEG_INFINITY;
    }
    // ln(1 − e^d), stable on both sides of d = −ln 2.
    a + if d > -std::f64::consts::LN_2 {
        (-d.exp_m1()).ln()
    } else {
        (-d.exp()).ln_1p()
    }
}

/// ln Σ e^{v}.
pub fn log_sum_exp(values: &[f64]) -> f64 {
    let m = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + values.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// ln EI of minimising: ln E[(best − Y)₊] for Y ~ N(mean, var).
pub fn log_ei(mean: f64, var: f64, best: f64) -> f64 {
    let sd = var.max(1e-300).sqrt();
    sd.ln() + log_h((best - mean) / sd)
}

/// ln E[(u − max(l, Y))₊] for Y ~ N(mean, sd²) and l < u: the expected length of the
/// interval [l, u] above Y; `l` may be −∞.
fn log_psi(l: f64, u: f64, mean: f64, sd: f64) -> f64 {
    // E[(u − max(l, Y))₊] = sd · (h(b) − h(a)), a = (l − mean)/sd, b = (u − mean)/sd.
    let b = (u - mean) / sd;
    let log_hb = log_h(b);
    if l == f64::NEG_INFINITY {
        return sd.ln() + log_hb;
    }
    let a = (l - mean) / sd;
    sd.ln() + log_sub_exp(log_hb, log_h(a))
}

/// The boxes that tile the region of the reference box the front does not dominate
/// (minimisation, 2 objectives): with the front sorted by its first objective, slab j
/// spans [f1 of point j, f1 of point j+1) and lies below point j's second objective.
/// Returns (lower, upper) corners; a lower bound may be −∞.
pub fn boxes_2d(front: &[[f64; 2]], reference: [f64; 2]) -> Vec<([f64; 2], [f64; 2])> {
    let mut pts: Vec<[f64; 2]> = front
        .iter()
        .copied()
        .filter(|p| p[0] < reference[0] && p[1] < reference[1])
        .collect();
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    // Keep the non-dominated staircase: second objective strictly decreasing.
    let mut stair: Vec<[f64; 2]> = Vec::new();
    for p in pts {
        if stair.last().is_none_or(|q| p[1] < q[1]) {
            stair.push(p);
        }
    }
    let mut boxes = Vec::with_capacity(stair.len() + 1);
    let mut lower_x = f64::NEG_INFINITY;
    let mut upper_y = reference[1];
    for p in &stair {
        boxes.push(([lower_x, f64::NEG_INFINITY], [p[0], upper_y]));
        lower_x = p[0];
        upper_y = p[1];
    }
    boxes.push(([lower_x, f64::NEG_INFINITY], [reference[0], upper_y]));
    boxes.retain(|(l, u)| l[0] < u[0] && l[1] < u[1]);
    boxes
}

/// ln EHVI of two independent Gaussian objectives against a front: the sum over the
/// non-dominated boxes of the product of the per-objective expected lengths.
pub fn log_ehvi_2d(mean: [f64; 2], var: [f64; 2], boxes: &[([f64; 2], [f64; 2])]) -> f64 {
    let sd = [var[0].max(1e-300).sqrt(), var[1].max(1e-300).sqrt()];
    let terms: Vec<f64> = boxes
        .iter()
        .map(|(l, u)| log_psi(l[0], u[0], mean[0], sd[0]) + log_psi(l[1], u[1], mean[1], sd[1]))
        .collect();
    log_sum_exp(&terms)
}

/// ln P(Y ≤ bound) for Y ~ N(mean, var).
pub fn log_pof(mean: f64, var: f64, bound: f64) -> f64 {
    log_cdf((bound - mean) / var.max(1e-300).sqrt())
}

/// ParEGO's augmented Chebyshev scalarisation of objectives already scaled to [0, 1]:
/// max_k λ_k f_k + ρ Σ_k λ_k f_k, with ρ = 0.05 (Knowles 2006).
pub fn chebyshev(scaled: &[f64], weights: &[f64]) -> f64 {
    let weighted: Vec<f64> = scaled.iter().zip(weights).map(|(f, w)| f * w).collect();
    weighted.iter().copied().fold(f64::NEG_INFINITY, f64::max) + 0.05 * weighted.iter().sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pareto::hypervolume_2d;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, StandardNormal};

    #[test]
    fn log_h_is_continuous_and_matches_the_definition() {
        for z in [-30.0, -25.0001, -24.9999, -8.0, -2.0, 0.0, 1.5, 6.0] {
            let direct = {
                let phi = (-0.5f64 * z * z).exp() / (2.0 * PI).sqrt();
                z * 0.5 * libm::erfc(-z * FRAC_1_SQRT_2) + phi
            };
            if z > -25.0 {
                let rel = (log_h(z) - direct.ln()).abs();
                assert!(rel < 1e-9, "z = {z}: {} vs {}", log_h(z), direct.ln());
            }
            assert!(log_h(z).is_finite(), "z = {z}");
        }
        // Monotone increasing.
        assert!(log_h(-40.0) < log_h(-20.0) && log_h(-20.0) < log_h(-1.0));
        assert!((log_h(-25.000_001) - log_h(-24.999_999)).abs() < 1e-4);
        assert!((log_cdf(-35.000_001) - log_cdf(-34.999_999)).abs() < 1e-4);
        assert!((log_cdf(0.0) - 0.5f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn ei_matches_monte_carlo() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (mean, var, best): (f64, f64, f64) = (0.3, 0.04, 0.1);
        let n = 400_000;
        let mc: f64 = (0..n)
            .map(|_| {
                let y = mean
                    + var.sqrt() * {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        z
                    };
                (best - y).max(0.0)
            })
            .sum::<f64>()
            / n as f64;
        let exact = log_ei(mean, var, best).exp();
        assert!((exact - mc).abs() < 0.02 * mc, "{exact} vs {mc}");
    }

    /// EHVI against a Monte Carlo estimate of the expected hypervolume improvement.
    #[test]
    fn ehvi_matches_monte_carlo() {
        let front = [[0.2, 0.8], [0.5, 0.4], [0.8, 0.1]];
        let reference = [1.0, 1.0];
        let base = hypervolume_2d(&front, reference);
        let boxes = boxes_2d(&front, reference);
        // The boxes tile the non-dominated part of the reference box: their area plus
        // the front's hypervolume is the box's area (below −∞ cut at 0 for the check).
        let area: f64 = boxes
            .iter()
            .map(|(l, u)| (u[0] - l[0].max(0.0)) * (u[1] - l[1].max(0.0)))
            .sum();
        assert!((area + base - 1.0).abs() < 1e-12, "{area} + {base}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let cases: [([f64; 2], [f64; 2]); 4] = [
            ([0.4, 0.5], [0.01, 0.02]),
            ([0.9, 0.9], [0.05, 0.05]),
            ([0.1, 0.1], [0.001, 0.003]),
            ([-0.2, 0.6], [0.02, 0.01]),
        ];
        for (mean, var) in cases {
            let n = 200_000;
            let mut total = 0.0;
            for _ in 0..n {
                let y = [
                    mean[0]
                        + var[0].sqrt() * {
                            let z: f64 = StandardNormal.sample(&mut rng);
                            z
                        },
                    mean[1]
                        + var[1].sqrt() * {
                            let z: f64 = StandardNormal.sample(&mut rng);
                            z
                        },
                ];
                let mut with = front.to_vec();
                with.push(y);
                total += hypervolume_2d(&with, reference) - base;
            }
            let mc = total / n as f64;
            let exact = log_ehvi_2d(mean, var, &boxes).exp();
            assert!(
                (exact - mc).abs() < 0.02 * mc + 1e-5,
                "mean {mean:?}: exact {exact} vs Monte Carlo {mc}"
            );
        }
        // Far behind the front the log stays finite and ordered.
        let far = log_ehvi_2d([5.0, 5.0], [0.01, 0.01], &boxes);
        let farther = log_ehvi_2d([9.0, 9.0], [0.01, 0.01], &boxes);
        assert!(
            far.is_finite() && farther.is_finite() && farther < far,
            "{far} {farther}"
        );
        let _ = rng.random::<f64>();
    }

    #[test]
    fn pof_and_chebyshev() {
        assert!((log_pof(0.0, 1.0, 0.0) - 0.5f64.ln()).abs() < 1e-12);
        assert!(log_pof(0.0, 1.0, -40.0).is_finite());
        assert!((chebyshev(&[0.2, 0.6], &[0.5, 0.5]) - (0.3 + 0.05 * 0.4)).abs() < 1e-12);
    }
}
