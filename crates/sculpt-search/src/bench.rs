//! Benchmark problems and the harness that runs a strategy on them: how much of the true
//! front's hypervolume a strategy finds after 50, 100 and 200 evaluations.
//!
//! The synthetic problems are the classic ones, with known fronts: ZDT1, ZDT2 and ZDT3
//! (Zitzler, Deb and Thiele 2000; 30 variables, two objectives, reference point (1.1, 1.1))
//! and DTLZ2 (Deb et al. 2002; 12 variables, three objectives, reference (1.1, 1.1, 1.1)).
//! A tabular problem (every configuration of a small compression space, evaluated once)
//! implements [`Problem`] in the campaign crate, which reads the table.

use crate::error::Result;
use crate::pareto::hypervolume;
use crate::space::{Dimension, Point, SearchSpace};
use crate::strategy::{Strategy, TrialState, TrialView};

/// A minimisation problem with a known best hypervolume.
pub trait Problem {
    fn name(&self) -> String;
    fn space(&self) -> SearchSpace;
    /// The objectives of a point, all minimised.
    fn evaluate(&self, point: &[f64]) -> Vec<f64>;
    /// Objectives as the hypervolume sees them (a table normalises them by its ranges).
    fn normalise(&self, objectives: &[f64]) -> Vec<f64> {
        objectives.to_vec()
    }
    fn reference(&self) -> Vec<f64>;
    /// The hypervolume of the true front against [`Problem::reference`].
    fn true_hypervolume(&self) -> f64;
}

/// `n` float variables `x0`, `x1`, … in [0, 1], the space of the synthetic problems.
fn unit_cube(n: usize) -> SearchSpace {
    SearchSpace::new(
        (0..n)
            .map(|i| Dimension::float(format!("x{i}"), 0.0, 1.0, false))
            .collect(),
    )
    .expect("a valid space")
}

/// ZDT1, ZDT2 or ZDT3 on `n` variables in [0, 1].
pub struct Zdt {
    pub kind: u8,
    pub n: usize,
}

impl Zdt {
    fn front_f2(&self, f1: f64) -> f64 {
        match self.kind {
            1 => 1.0 - f1.sqrt(),
            2 => 1.0 - f1 * f1,
            _ => 1.0 - f1.sqrt() - f1 * (10.0 * std::f64::consts::PI * f1).sin(),
        }
    }
}

impl Problem for Zdt {
    fn name(&self) -> String {
        format!("zdt{}", self.kind)
    }

    fn space(&self) -> SearchSpace {
        unit_cube(self.n)
    }

    fn evaluate(&self, x: &[f64]) -> Vec<f64> {
        let f1 = x[0];
        let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
        let r = f1 / g;
        let h = match self.kind {
            1 => 1.0 - r.sqrt(),
            2 => 1.0 - r * r,
            _ => 1.0 - r.sqrt() - r * (10.0 * std::f64::consts::PI * f1).sin(),
        };
        vec![f1, g * h]
    }

    fn reference(&self) -> Vec<f64> {
        vec![1.1, 1.1]
    }

    fn true_hypervolume(&self) -> f64 {
        // The analytic front (g = 1), sampled densely; ZDT3's is cut to its non-dominated
        // pieces by the hypervolume itself.
        let n = 100_001;
        let front: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let f1 = i as f64 / (n - 1) as f64;
                vec![f1, self.front_f2(f1)]
            })
            .collect();
        hypervolume(&front, &self.reference()).unwrap_or(0.0)
    }
}

/// DTLZ2 with three objectives on `n` variables in [0, 1].
pub struct Dtlz2 {
    pub n: usize,
}

impl Problem for Dtlz2 {
    fn name(&self) -> String {
        "dtlz2".into()
    }

    fn space(&self) -> SearchSpace {
        unit_cube(self.n)
    }

    fn evaluate(&self, x: &[f64]) -> Vec<f64> {
        let g: f64 = x[2..].iter().map(|v| (v - 0.5).powi(2)).sum();
        let (a, b) = (
            x[0] * std::f64::consts::FRAC_PI_2,
            x[1] * std::f64::consts::FRAC_PI_2,
        );
        vec![
            (1.0 + g) * a.cos() * b.cos(),
            (1.0 + g) * a.cos() * b.sin(),
            (1.0 + g) * a.sin(),
        ]
    }

    fn reference(&self) -> Vec<f64> {
        vec![1.1, 1.1, 1.1]
    }

    fn true_hypervolume(&self) -> f64 {
        // The box minus the unit sphere's positive octant.
        1.1f64.powi(3) - std::f64::consts::PI / 6.0
    }
}

/// One evaluation of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub point: Point,
    pub objectives: Vec<f64>,
    /// The strategy that proposed it (`gp` or `nsga2` under `auto`).
    pub strategy: String,
}

/// Runs `strategy` on `problem` for `budget` sequential evaluations.
pub fn run(
    strategy: &mut dyn Strategy,
    problem: &dyn Problem,
    budget: usize,
) -> Result<Vec<Evaluation>> {
    let space = problem.space();
    let mut history: Vec<TrialView> = Vec::with_capacity(budget);
    let mut out = Vec::with_capacity(budget);
    for trial_id in 0..budget as u64 {
        let proposal = strategy.ask(&space, &history, trial_id)?;
        let objectives = problem.evaluate(&proposal.point);
        let view = TrialView {
            trial_id,
            point: proposal.point.clone(),
            generation: proposal.generation,
            state: TrialState::Complete,
            objectives: Some(objectives.clone()),
            constraint_violation: 0.0,
        };
        strategy.tell(&view);
        history.push(view);
        out.push(Evaluation {
            point: proposal.point,
            objectives,
            strategy: proposal.strategy.unwrap_or(strategy.name()).to_string(),
        });
    }
    Ok(out)
}

/// The fraction of the true hypervolume that the first `k` evaluations reach, for every
/// `k` from 1 to the run's length.
pub fn hypervolume_curve(problem: &dyn Problem, run: &[Evaluation]) -> Vec<f64> {
    let reference = problem.reference();
    let best = problem.true_hypervolume();
    let mut front: Vec<Vec<f64>> = Vec::new();
    let mut curve = Vec::with_capacity(run.len());
    for e in run {
        let o = problem.normalise(&e.objectives);
        if !front
            .iter()
            .any(|f| crate::pareto::dominates(f, &o) || *f == o)
        {
            front.retain(|f| !crate::pareto::dominates(&o, f));
            front.push(o);
        }
        curve.push(hypervolume(&front, &reference).unwrap_or(0.0) / best);
    }
    curve
}

/// The `q`-quantile of `values` with linear interpolation (numpy's default).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 < v.len() {
        v[i] + frac * (v[i + 1] - v[i])
    } else {
        v[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::RandomSearch;

    #[test]
    fn true_hypervolumes_match_the_closed_forms() {
        // ZDT1: ∫₀¹ (1.1 − (1 − √x)) dx + 0.1·1.1 = 0.1 + 2/3 + 0.11.
        let zdt1 = Zdt { kind: 1, n: 30 }.true_hypervolume();
        let want = 0.1 + 2.0 / 3.0 + 0.11;
        assert!((zdt1 - want).abs() < 1e-4, "{zdt1} vs {want}");
        // ZDT2: ∫₀¹ (1.1 − (1 − x²)) dx + 0.11 = 0.1 + 1/3 + 0.11.
        let zdt2 = Zdt { kind: 2, n: 30 }.true_hypervolume();
        let want = 0.1 + 1.0 / 3.0 + 0.11;
        assert!((zdt2 - want).abs() < 1e-4, "{zdt2} vs {want}");
        let zdt3 = Zdt { kind: 3, n: 30 }.true_hypervolume();
        // ZDT3's front dips below f2 = 0 (to −0.77), so it dominates more than the box
        // above 0; about 1.33 against (1.1, 1.1).
        assert!(zdt3 > 1.32 && zdt3 < 1.34, "{zdt3}");
        let d = Dtlz2 { n: 12 };
        assert!((d.true_hypervolume() - 0.807_401_224_4).abs() < 1e-9);
        // A point on DTLZ2's front lies on the unit sphere.
        let o = d.evaluate(&[0.3, 0.7, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
        assert!((o.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_curve_is_monotone_and_bounded() {
        let problem = Zdt { kind: 1, n: 2 };
        let run = run(&mut RandomSearch::new(1), &problem, 60).unwrap();
        let curve = hypervolume_curve(&problem, &run);
        assert_eq!(curve.len(), 60);
        assert!(curve.windows(2).all(|w| w[1] >= w[0]));
        assert!(*curve.last().unwrap() <= 1.0 && *curve.last().unwrap() > 0.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.25), 1.75);
    }
}
