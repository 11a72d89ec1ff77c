//! Box-bounded minimisation with argmin's L-BFGS (backtracking Armijo line search). argmin's
//! L-BFGS is unconstrained, so the bounds are kept by evaluating the objective at the
//! point clamped into the box and adding a steep quadratic penalty for the distance
//! outside it: the minimiser of the penalised problem lies in the box.
//!
//! argmin runs its line search without an iteration limit; every evaluation is therefore
//! counted, the run is stopped once it has spent its budget (five evaluations per allowed
//! iteration), and the best point evaluated is kept.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use argmin::core::{CostFunction, Error, Executor, Gradient};
use argmin::solver::linesearch::condition::ArmijoCondition;
use argmin::solver::linesearch::BacktrackingLineSearch;
use argmin::solver::quasinewton::LBFGS;

/// The objective and its gradient at a point.
pub type Objective<'a> = dyn Fn(&[f64]) -> (f64, Vec<f64>) + 'a;

const PENALTY: f64 = 1e4;

struct Boxed<'a> {
    f: &'a Objective<'a>,
    lo: &'a [f64],
    hi: &'a [f64],
    evals: Rc<Cell<u64>>,
    budget: u64,
    /// The best clamped point evaluated and its (unpenalised) value.
    best: Rc<RefCell<(Vec<f64>, f64)>>,
}

impl Boxed<'_> {
    fn eval(&self, x: &[f64]) -> Result<(f64, Vec<f64>), Error> {
        self.evals.set(self.evals.get() + 1);
        if self.evals.get() > self.budget {
            return Err(Error::msg("evaluation budget spent"));
        }
        let clamped: Vec<f64> = x
            .iter()
            .zip(self.lo.iter().zip(self.hi))
            .map(|(v, (l, h))| v.clamp(*l, *h))
            .collect();
        let (value, mut grad) = (self.f)(&clamped);
        if value < self.best.borrow().1 {
            *self.best.borrow_mut() = (clamped.clone(), value);
        }
        let mut penalised = if value.is_finite() { value } else { 1e300 };
        for i in 0..x.len() {
            let excess = x[i] - clamped[i];
            if excess != 0.0 {
                penalised += PENALTY * excess * excess;
                grad[i] = 2.0 * PENALTY * excess;
            } else if !grad[i].is_finite() {
                grad[i] = 0.0;
            }
        }
        Ok((penalised, grad))
    }
}

impl CostFunction for Boxed<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, x: &Vec<f64>) -> Result<f64, Error> {
        Ok(self.eval(x)?.0)
    }
}

impl Gradient for Boxed<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, x: &Vec<f64>) -> Result<Vec<f64>, Error> {
        Ok(self.eval(x)?.1)
    }
}

/// Minimises `f` over the box `[lo, hi]` from `x0` with at most `max_iters` L-BFGS
/// iterations. Returns the best point found (clamped into the box) and its value; when
/// the line search gives up early, the best point so far, never worse than `x0`.
pub fn minimize(
    f: &Objective<'_>,
    x0: &[f64],
    lo: &[f64],
    hi: &[f64],
    max_iters: u64,
) -> (Vec<f64>, f64) {
    let start: Vec<f64> = x0
        .iter()
        .zip(lo.iter().zip(hi))
        .map(|(v, (l, h))| v.clamp(*l, *h))
        .collect();
    let start_value = f(&start).0;
    let best = Rc::new(RefCell::new((start.clone(), start_value)));
    let problem_evals = Rc::new(Cell::new(0u64));
    let problem = Boxed {
        f,
        lo,
        hi,
        evals: Rc::clone(&problem_evals),
        budget: 5 * max_iters.max(1),
        best: Rc::clone(&best),
    };
    // A backtracking (Armijo) line search: one or two evaluations per iteration where
    // More-Thuente spends ten or more on these small, cheap-to-misjudge problems.
    let linesearch = ArmijoCondition::new(1e-4)
        .map(BacktrackingLineSearch::new)
        .and_then(|l| l.rho(0.5));
    let solver = linesearch.and_then(|l| LBFGS::new(l, 7).with_tolerance_grad(1e-8));
    if let Ok(solver) = solver {
        let executor = Executor::new(problem, solver)
            .configure(|state| state.param(start.clone()).max_iters(max_iters));
        // An error (the budget spent, a failed line search) still leaves the best point.
        let _ = executor.run();
    }
    let found = best.borrow().clone();
    found
}

/// A forward-difference gradient of `f` at `x` with step `h`, clamped into `[lo, hi]` by
/// stepping backwards at the upper edge.
pub fn numeric_gradient(
    f: &dyn Fn(&[f64]) -> f64,
    x: &[f64],
    lo: &[f64],
    hi: &[f64],
    h: f64,
) -> (f64, Vec<f64>) {
    let f0 = f(x);
    let mut grad = vec![0.0; x.len()];
    let mut probe = x.to_vec();
    for i in 0..x.len() {
        let step = if x[i] + h <= hi[i] { h } else { -h };
        if x[i] + step < lo[i] {
            continue;
        }
        probe[i] = x[i] + step;
        grad[i] = (f(&probe) - f0) / step;
        probe[i] = x[i];
    }
    (f0, grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_a_quadratic_inside_and_on_the_edge_of_its_box() {
        let f = |x: &[f64]| {
            let v = (x[0] - 0.3).powi(2) + 4.0 * (x[1] + 0.5).powi(2);
            (v, vec![2.0 * (x[0] - 0.3), 8.0 * (x[1] + 0.5)])
        };
        let (x, v) = minimize(&f, &[0.9, 0.9], &[0.0, 0.0], &[1.0, 1.0], 100);
        // The unconstrained minimum (0.3, -0.5) lies below the box: x[1] sits on 0.
        assert!((x[0] - 0.3).abs() < 1e-4 && x[1].abs() < 1e-6, "{x:?}");
        assert!((v - 1.0).abs() < 1e-6, "{v}");
        let g = numeric_gradient(&|x: &[f64]| f(x).0, &[0.5, 0.5], &[0.0; 2], &[1.0; 2], 1e-6).1;
        assert!(
            (g[0] - 0.4).abs() < 1e-4 && (g[1] - 8.0).abs() < 1e-4,
            "{g:?}"
        );
    }
}
