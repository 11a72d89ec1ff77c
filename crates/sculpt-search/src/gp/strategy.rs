//! The Gaussian-process strategy behind the ask/tell trait. Each ask is a pure function of
//! the seed, the trial id and the history:
//!
//! 1. the first `n_startup` trials are the points of a Latin hypercube fixed by the seed;
//! 2. then every objective (scaled to [0, 1] by its observed range) gets its own GP, and
//!    the next point maximises the log expected hypervolume improvement over the feasible
//!    front (two objectives), or ParEGO's log expected improvement of a random augmented
//!    Chebyshev scalarisation (any number; the weights are drawn per trial);
//! 3. objectives bounded by the campaign (a minimum accuracy) multiply in their GP's
//!    probability of meeting the bound;
//! 4. the acquisition is evaluated on random points and on mutations of the front, the best
//!    few are polished by argmin's L-BFGS over the numeric coordinates and by local search
//!    over the categorical ones, and the best point that passes the exact feasibility check
//!    (a latency budget) and was not already evaluated is proposed;
//! 5. pending trials (asked, not yet told: running on other workers, or earlier in the same
//!    batch) enter the models at their predicted mean ("kriging believer"), so a batch
//!    spreads out.

use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp1};

use super::acquisition::{boxes_2d, chebyshev, log_ehvi_2d, log_ei, log_pof};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::model::{FitSettings, Gp, Hyper};
use super::optimize::{minimize, numeric_gradient};
use crate::design::latin_hypercube;
use crate::error::Result;
use crate::operators::mutate;
use crate::pareto::pareto_front;
use crate::space::{Domain, Point, SearchSpace};
use crate::strategy::{trial_rng, Proposal, Strategy, TrialState, TrialView};

/// Which multi-objective acquisition to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquisition {
    /// Exact log-EHVI for two objectives, ParEGO otherwise.
    Auto,
    Ehvi,
    Parego,
}

/// Tunables of the GP strategy.
#[derive(Debug, Clone)]
pub struct GpSettings {
    /// Trials drawn from the Latin hypercube before the first model.
    pub n_startup: usize,
    /// Random candidates the acquisition is evaluated on at every ask.
    pub candidates: usize,
    /// Mutations of each front point added to the candidates.
    pub mutations_per_front_point: usize,
    /// Candidates polished by L-BFGS and local search.
    pub local_starts: usize,
    pub acquisition: Acquisition,
    /// The hypervolume's reference point in objective units; None: the worst observed value
    /// of each objective plus a tenth of its range.
    pub reference: Option<Vec<f64>>,
    /// Bounds on objectives (objective k at most bounds[k]), modelled by their GPs'
    /// probability of feasibility: a minimum accuracy is a bound on the error.
    pub bounds: Vec<Option<f64>>,
    pub fit: FitSettings,
}

impl Default for GpSettings {
    fn default() -> Self {
        GpSettings {
            n_startup: 10,
            candidates: 512,
            mutations_per_front_point: 8,
            local_starts: 3,
            acquisition: Acquisition::Auto,
            reference: None,
            bounds: Vec::new(),
            fit: FitSettings::default(),
        }
    }
}

/// The Gaussian-process strategy; see the module docs.
#[derive(Debug, Clone)]
pub struct GpSearch {
    settings: GpSettings,
    seed: u64,
    /// Fitted hyperparameters by a digest of the data they were fitted on: a cache of a
    /// pure function (the fit's random starts are seeded from the same digest), so hits
    /// and misses propose the same points.
    memo: HashMap<u64, Hyper>,
}

/// How many of the first trials the hyperparameters are fitted on, given `n`: every trial
/// up to 30, then refits every 5 trials up to 100 and every 10 after; the posterior always
/// conditions on all of them. Between refits the fitted values are reused.
fn fit_size(n: usize) -> usize {
    match n {
        0..=30 => n,
        31..=100 => n - n % 5,
        _ => n - n % 10,
    }
}

fn digest(x: &[Vec<f64>], y: &[f64]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (p, v) in x.iter().zip(y) {
        for c in p {
            c.to_bits().hash(&mut h);
        }
        v.to_bits().hash(&mut h);
    }
    x.len().hash(&mut h);
    h.finish()
}

/// A point's encoding for the GP: numeric dimensions in their unit encoding, categorical
/// ones as the index of their choice, and inactive conditional dimensions as a constant 0
/// (so two points that differ only where a dimension does not exist are the same to the
/// kernel).
fn encode(space: &SearchSpace, point: &[f64]) -> Vec<f64> {
    let mut z: Vec<f64> = space
        .dims()
        .iter()
        .zip(point)
        .map(|(d, &v)| match &d.domain {
            Domain::Categorical { choices } => {
                choices.iter().position(|c| *c == v).unwrap_or(0) as f64
            }
            numeric => numeric.to_unit(v).unwrap_or(0.5),
        })
        .collect();
    mask(space, &mut z);
    z
}

/// Sets the inactive conditional coordinates of an encoded point to 0.
fn mask(space: &SearchSpace, z: &mut [f64]) {
    if space.dims().iter().all(|d| d.condition.is_none()) {
        return;
    }
    let point = decode(space, z);
    for (i, v) in z.iter_mut().enumerate() {
        if !space.is_active(&point, i) {
            *v = 0.0;
        }
    }
}

fn decode(space: &SearchSpace, z: &[f64]) -> Point {
    let p: Point = space
        .dims()
        .iter()
        .zip(z)
        .map(|(d, &v)| match &d.domain {
            Domain::Categorical { choices } => {
                choices[(v.round().max(0.0) as usize).min(choices.len() - 1)]
            }
            numeric => numeric.from_unit(v).unwrap_or(0.0),
        })
        .collect();
    space.nearest(&p)
}

/// The models of one ask and how they score a candidate.
struct Scorer {
    /// One GP per modelled output: the objectives (EHVI), or the scalarisation (ParEGO).
    models: Vec<Gp>,
    kind: Kind,
    /// (model index, bound in model units) for each probability-of-feasibility term.
    bounded: Vec<(usize, f64)>,
}

enum Kind {
    Ehvi { boxes: Vec<([f64; 2], [f64; 2])> },
    Ei { best: f64 },
}

impl Scorer {
    fn score_many(&self, zs: &[Vec<f64>]) -> Vec<f64> {
        let predictions: Vec<Vec<(f64, f64)>> =
            self.models.iter().map(|m| m.predict_many(zs)).collect();
        (0..zs.len())
            .map(|i| self.combine(&|k| predictions[k][i]))
            .collect()
    }

    fn score(&self, z: &[f64]) -> f64 {
        let predictions: Vec<(f64, f64)> = self.models.iter().map(|m| m.predict(z)).collect();
        self.combine(&|k| predictions[k])
    }

    fn combine(&self, prediction: &dyn Fn(usize) -> (f64, f64)) -> f64 {
        let mut value = match &self.kind {
            Kind::Ehvi { boxes } => {
                let (a, b) = (prediction(0), prediction(1));
                log_ehvi_2d([a.0, b.0], [a.1, b.1], boxes)
            }
            Kind::Ei { best } => {
                let (m, v) = prediction(0);
                log_ei(m, v, *best)
            }
        };
        for &(k, bound) in &self.bounded {
            let (m, v) = prediction(k);
            value += log_pof(m, v, bound);
        }
        if value.is_nan() {
            f64::NEG_INFINITY
        } else {
            value
        }
    }
}

impl GpSearch {
    pub fn new(settings: GpSettings, seed: u64) -> Self {
        GpSearch {
            settings,
            seed,
            memo: HashMap::new(),
        }
    }

    /// A GP on all the data with hyperparameters fitted on the first [`fit_size`] points.
    fn fitted(&mut self, x: &[Vec<f64>], y: &[f64], categorical: &[bool]) -> Option<Gp> {
        let m = fit_size(x.len()).max(2).min(x.len());
        let key = digest(&x[..m], &y[..m]);
        let hyper = match self.memo.get(&key) {
            Some(h) => h.clone(),
            None => {
                let mut rng = trial_rng(self.seed ^ 0x6B1D_F17E, key);
                let h = Gp::fit_hyper(&x[..m], &y[..m], categorical, &self.settings.fit, &mut rng)?;
                if self.memo.len() > 4096 {
                    self.memo.clear();
                }
                self.memo.insert(key, h.clone());
                h
            }
        };
        Gp::with_hyper(x, y, categorical, hyper)
    }

    pub fn settings(&self) -> &GpSettings {
        &self.settings
    }

    /// The first trials' design, or a random feasible point when the design's is not.
    fn startup(
        &self,
        space: &SearchSpace,
        trial_id: u64,
        feasible: &dyn Fn(&Point) -> bool,
        rng: &mut StdRng,
    ) -> Point {
        let n = self.settings.n_startup.max(1);
        let design = latin_hypercube(space, n, self.seed);
        let point = design[(trial_id as usize) % n].clone();
        if feasible(&point) {
            return point;
        }
        for _ in 0..256 {
            let p = space.sample(rng);
            if feasible(&p) {
                return p;
            }
        }
        point
    }

    /// Builds the models and the acquisition of this ask; None when nothing can be
    /// modelled yet (no complete trial).
    fn scorer(
        &mut self,
        space: &SearchSpace,
        complete: &[&TrialView],
        pending: &[&TrialView],
        rng: &mut StdRng,
    ) -> Option<Scorer> {
        let m = complete.first()?.objectives.as_ref()?.len();
        let categorical: Vec<bool> = space
            .dims()
            .iter()
            .map(|d| matches!(d.domain, Domain::Categorical { .. }))
            .collect();
        let x: Vec<Vec<f64>> = complete.iter().map(|t| encode(space, &t.point)).collect();
        let raw: Vec<Vec<f64>> = complete
            .iter()
            .map(|t| t.objectives.clone().unwrap_or_default())
            .collect();
        // Each objective scaled by its observed range, so that the reference point and
        // the scalarisations are in comparable units.
        let lo: Vec<f64> = (0..m)
            .map(|k| raw.iter().map(|o| o[k]).fold(f64::INFINITY, f64::min))
            .collect();
        let hi: Vec<f64> = (0..m)
            .map(|k| raw.iter().map(|o| o[k]).fold(f64::NEG_INFINITY, f64::max))
            .collect();
        let span: Vec<f64> = (0..m)
            .map(|k| {
                let r = hi[k] - lo[k];
                if r > 0.0 && r.is_finite() {
                    r
                } else {
                    1.0
                }
            })
            .collect();
        let scale = |k: usize, v: f64| (v - lo[k]) / span[k];
        let y: Vec<Vec<f64>> = raw
            .iter()
            .map(|o| (0..m).map(|k| scale(k, o[k])).collect())
            .collect();
        let feasible: Vec<bool> = complete
            .iter()
            .map(|t| t.constraint_violation <= 0.0)
            .collect();
        let use_ehvi = match self.settings.acquisition {
            Acquisition::Ehvi | Acquisition::Auto => m == 2,
            Acquisition::Parego => false,
        };
        // Outputs to model: the objectives, or the scalarisation plus bounded objectives.
        let weights: Vec<f64> = {
            let w: Vec<f64> = (0..m).map(|_| Exp1.sample(rng)).collect();
            let s: f64 = w.iter().sum();
            w.iter().map(|v| v / s).collect()
        };
        let bounded: Vec<usize> = (0..m)
            .filter(|&k| self.settings.bounds.get(k).copied().flatten().is_some())
            .collect();
        let mut outputs: Vec<Vec<f64>> = Vec::new();
        if use_ehvi {
            for k in 0..m {
                outputs.push(y.iter().map(|o| o[k]).collect());
            }
        } else {
            outputs.push(y.iter().map(|o| chebyshev(o, &weights)).collect());
            for &k in &bounded {
                outputs.push(y.iter().map(|o| o[k]).collect());
            }
        }
        let mut models = Vec::with_capacity(outputs.len());
        for out in &outputs {
            models.push(self.fitted(&x, out, &categorical)?);
        }
        // Kriging believer: pending points at their predicted means, same hyperparameters.
        let mut believed: Vec<Vec<f64>> = Vec::new();
        if !pending.is_empty() {
            let px: Vec<Vec<f64>> = pending.iter().map(|t| encode(space, &t.point)).collect();
            let mut all_x = x.clone();
            all_x.extend(px.iter().cloned());
            let mut refit = Vec::with_capacity(models.len());
            let mut beliefs: Vec<Vec<f64>> = Vec::new();
            for (model, out) in models.iter().zip(&outputs) {
                let means: Vec<f64> = model.predict_many(&px).iter().map(|p| p.0).collect();
                let mut all_y = out.clone();
                all_y.extend(means.iter().copied());
                refit.push(Gp::with_hyper(
                    &all_x,
                    &all_y,
                    &categorical,
                    model.hyper.clone(),
                )?);
                beliefs.push(means);
            }
            models = refit;
            if use_ehvi {
                believed = (0..pending.len())
                    .map(|i| (0..m).map(|k| beliefs[k][i]).collect())
                    .collect();
            }
        }
        let kind = if use_ehvi {
            let mut front_points: Vec<Vec<f64>> = y
                .iter()
                .zip(&feasible)
                .filter(|(_, f)| **f)
                .map(|(o, _)| o.clone())
                .collect();
            front_points.extend(believed);
            let front: Vec<[f64; 2]> = pareto_front(&front_points)
                .into_iter()
                .map(|i| [front_points[i][0], front_points[i][1]])
                .collect();
            let reference = match &self.settings.reference {
                Some(r) if r.len() == 2 => [scale(0, r[0]), scale(1, r[1])],
                _ => [1.1, 1.1],
            };
            Kind::Ehvi {
                boxes: boxes_2d(&front, reference),
            }
        } else {
            let best = y
                .iter()
                .zip(&feasible)
                .filter(|(_, f)| **f)
                .map(|(o, _)| chebyshev(o, &weights))
                .fold(f64::INFINITY, f64::min);
            Kind::Ei {
                best: if best.is_finite() { best } else { 1.0 },
            }
        };
        let bounded = bounded
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let model = if use_ehvi { k } else { 1 + i };
                let bound = self.settings.bounds[k].unwrap_or(f64::INFINITY);
                (model, scale(k, bound))
            })
            .collect();
        Some(Scorer {
            models,
            kind,
            bounded,
        })
    }

    /// Polishes an encoded point: L-BFGS over the float coordinates (the others fixed),
    /// then one pass of local search over each categorical coordinate's choices and each
    /// integer coordinate's neighbours.
    fn polish(&self, space: &SearchSpace, scorer: &Scorer, z0: &[f64]) -> (Vec<f64>, f64) {
        let numeric: Vec<usize> = space
            .dims()
            .iter()
            .enumerate()
            .filter(|(_, d)| matches!(d.domain, Domain::Float { .. }))
            .map(|(i, _)| i)
            .collect();
        let mut z = z0.to_vec();
        let mut best = scorer.score(&z);
        if !numeric.is_empty() {
            let lo = vec![0.0; numeric.len()];
            let hi = vec![1.0; numeric.len()];
            let at = |u: &[f64]| -> Vec<f64> {
                let mut full = z.clone();
                for (j, &i) in numeric.iter().enumerate() {
                    full[i] = u[j];
                }
                mask(space, &mut full);
                full
            };
            let value = |u: &[f64]| -> f64 {
                let s = scorer.score(&at(u));
                if s.is_finite() {
                    -s
                } else {
                    1e300
                }
            };
            let objective = |u: &[f64]| numeric_gradient(&value, u, &lo, &hi, 1e-6);
            let u0: Vec<f64> = numeric.iter().map(|&i| z[i]).collect();
            let (u, v) = minimize(&objective, &u0, &lo, &hi, 20);
            if -v > best {
                z = at(&u);
                best = -v;
            }
        }
        for (i, dim) in space.dims().iter().enumerate() {
            let alternatives: Vec<f64> = match &dim.domain {
                Domain::Categorical { choices } => (0..choices.len())
                    .map(|c| c as f64)
                    .filter(|c| *c != z[i])
                    .collect(),
                Domain::Int { low, high } => {
                    // One step either way in the unit encoding of the integers.
                    let step = 1.0 / (high - low + 1) as f64;
                    [z[i] - step, z[i] + step]
                        .into_iter()
                        .filter(|u| (0.0..=1.0).contains(u))
                        .collect()
                }
                Domain::Float { .. } => Vec::new(),
            };
            for a in alternatives {
                let mut t = z.clone();
                t[i] = a;
                mask(space, &mut t);
                let s = scorer.score(&t);
                if s > best {
                    best = s;
                    z = t;
                }
            }
        }
        (z, best)
    }
}

impl Strategy for GpSearch {
    fn name(&self) -> &'static str {
        "gp"
    }

    fn ask(
        &mut self,
        space: &SearchSpace,
        history: &[TrialView],
        trial_id: u64,
    ) -> Result<Proposal> {
        self.ask_feasible(space, history, trial_id, &|_| true)
    }

    fn ask_feasible(
        &mut self,
        space: &SearchSpace,
        history: &[TrialView],
        trial_id: u64,
        feasible: &dyn Fn(&Point) -> bool,
    ) -> Result<Proposal> {
        let mut rng = trial_rng(self.seed, trial_id);
        let mut trials: Vec<&TrialView> = history
            .iter()
            .filter(|t| t.point.len() == space.len())
            .collect();
        trials.sort_by_key(|t| t.trial_id);
        let complete: Vec<&TrialView> = trials
            .iter()
            .copied()
            .filter(|t| {
                t.state == TrialState::Complete
                    && t.objectives
                        .as_ref()
                        .is_some_and(|o| !o.is_empty() && o.iter().all(|v| v.is_finite()))
            })
            .collect();
        let pending: Vec<&TrialView> = trials
            .iter()
            .copied()
            .filter(|t| t.state == TrialState::Pending)
            .collect();
        let startup = (trial_id as usize) < self.settings.n_startup || complete.len() < 2;
        let scorer = if startup {
            None
        } else {
            self.scorer(space, &complete, &pending, &mut rng)
        };
        let Some(scorer) = scorer else {
            let point = self.startup(space, trial_id, feasible, &mut rng);
            return Ok(Proposal::new(point, None));
        };
        // Candidates: random points and mutations of the current front.
        let mut candidates: Vec<Point> = (0..self.settings.candidates)
            .map(|_| space.sample(&mut rng))
            .collect();
        let objectives: Vec<Vec<f64>> = complete
            .iter()
            .map(|t| t.objectives.clone().unwrap_or_default())
            .collect();
        let front = pareto_front(&objectives);
        let prob = (2.0 / space.len() as f64).min(1.0);
        for &i in front.iter().take(64) {
            for _ in 0..self.settings.mutations_per_front_point {
                let mut p = space.nearest(&complete[i].point);
                mutate(space, &mut p, prob, 20.0, &mut rng);
                candidates.push(p);
            }
        }
        let encoded: Vec<Vec<f64>> = candidates.iter().map(|p| encode(space, p)).collect();
        let scores = scorer.score_many(&encoded);
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let mut ranked: Vec<(Point, f64)> = Vec::new();
        let mut starts = 0;
        for &i in &order {
            if starts >= self.settings.local_starts {
                break;
            }
            if ranked.iter().any(|(p, _)| *p == candidates[i]) {
                continue;
            }
            let (z, s) = self.polish(space, &scorer, &encoded[i]);
            ranked.push((decode(space, &z), s));
            starts += 1;
        }
        ranked.extend(order.iter().map(|&i| (candidates[i].clone(), scores[i])));
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let seen = |p: &Point| trials.iter().any(|t| space.nearest(&t.point) == *p);
        for (p, _) in ranked.iter().take(256) {
            if !seen(p) && feasible(p) {
                return Ok(Proposal::new(p.clone(), None));
            }
        }
        // Everything the model likes is known or infeasible: a random feasible point.
        for _ in 0..256 {
            let p = space.sample(&mut rng);
            if !seen(&p) && feasible(&p) {
                return Ok(Proposal::new(p, None));
            }
        }
        Ok(Proposal::new(ranked[0].0.clone(), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pareto::hypervolume_2d;
    use crate::space::Dimension;

    fn space() -> SearchSpace {
        SearchSpace::new(vec![
            Dimension::float("x0", 0.0, 1.0, false),
            Dimension::float("x1", 0.0, 1.0, false),
            Dimension::categorical("bits", vec![2.0, 4.0, 8.0]),
        ])
        .unwrap()
    }

    /// A two-objective problem whose front needs x1 = 0 and bits = 4.
    fn problem(p: &[f64]) -> Vec<f64> {
        let g = 1.0 + 4.0 * p[1] + (p[2].log2() - 2.0).abs();
        vec![p[0], g * (1.0 - (p[0] / g).sqrt())]
    }

    fn run(
        strategy: &mut dyn Strategy,
        n: u64,
        feasible: &dyn Fn(&Point) -> bool,
    ) -> Vec<TrialView> {
        let space = space();
        let mut history = Vec::new();
        for trial_id in 0..n {
            let p = strategy
                .ask_feasible(&space, &history, trial_id, feasible)
                .unwrap();
            assert!(space.contains(&p.point));
            history.push(TrialView {
                trial_id,
                point: p.point.clone(),
                generation: p.generation,
                state: TrialState::Complete,
                objectives: Some(problem(&p.point)),
                constraint_violation: 0.0,
            });
        }
        history
    }

    fn hv(history: &[TrialView]) -> f64 {
        let pts: Vec<[f64; 2]> = history
            .iter()
            .map(|t| {
                let o = t.objectives.as_ref().unwrap();
                [o[0], o[1]]
            })
            .collect();
        hypervolume_2d(&pts, [1.1, 3.0])
    }

    #[test]
    fn the_gp_beats_random_search_and_is_reproducible() {
        let settings = GpSettings {
            candidates: 256,
            ..Default::default()
        };
        let mut gp = GpSearch::new(settings.clone(), 4);
        let gp_history = run(&mut gp, 30, &|_| true);
        let mut random = crate::random::RandomSearch::new(4);
        let random_history = run(&mut random, 30, &|_| true);
        assert!(
            hv(&gp_history) > hv(&random_history),
            "gp {} random {}",
            hv(&gp_history),
            hv(&random_history)
        );
        // The same seed and history give the same next point; a fresh strategy (a resumed
        // campaign) proposes what the original would have.
        let space = space();
        let next = gp.ask(&space, &gp_history, 30).unwrap();
        let mut resumed = GpSearch::new(settings, 4);
        assert_eq!(resumed.ask(&space, &gp_history, 30).unwrap(), next);
        // Shuffled history: the same.
        let mut shuffled = gp_history.clone();
        shuffled.reverse();
        assert_eq!(resumed.ask(&space, &shuffled, 30).unwrap(), next);
    }

    #[test]
    fn infeasible_points_are_never_proposed_and_a_batch_spreads_out() {
        let feasible = |p: &Point| p[0] >= 0.3;
        let mut gp = GpSearch::new(
            GpSettings {
                candidates: 128,
                n_startup: 6,
                ..Default::default()
            },
            9,
        );
        let history = run(&mut gp, 14, &feasible);
        assert!(history.iter().all(|t| t.point[0] >= 0.3));
        let batch = gp.ask_batch(&space(), &history, 14, 3, &feasible).unwrap();
        assert_eq!(batch.len(), 3);
        assert!(batch[0].point != batch[1].point && batch[1].point != batch[2].point);
        assert!(batch.iter().all(|p| feasible(&p.point)));
    }

    /// A conditional dimension that only matters when its switch is on: the GP runs, and
    /// its encoding ignores the inactive value.
    #[test]
    fn conditional_dimensions_are_masked() {
        let space = SearchSpace::new(vec![
            Dimension::categorical("lowrank", vec![0.0, 1.0]),
            Dimension::float("rank", 0.1, 0.9, false).when("lowrank", vec![1.0]),
            Dimension::float("x", 0.0, 1.0, false),
        ])
        .unwrap();
        assert_eq!(
            encode(&space, &[0.0, 0.3, 0.5]),
            encode(&space, &[0.0, 0.8, 0.5])
        );
        assert_ne!(
            encode(&space, &[1.0, 0.3, 0.5]),
            encode(&space, &[1.0, 0.8, 0.5])
        );
        let mut gp = GpSearch::new(
            GpSettings {
                candidates: 64,
                n_startup: 5,
                ..Default::default()
            },
            2,
        );
        let mut history = Vec::new();
        for trial_id in 0..10 {
            let p = gp.ask(&space, &history, trial_id).unwrap();
            assert!(space.contains(&p.point));
            let rank = if p.point[0] == 1.0 { p.point[1] } else { 1.0 };
            let o = vec![(p.point[2] - 0.3).powi(2) + 0.1 * (1.0 - rank), rank];
            history.push(TrialView {
                trial_id,
                point: p.point,
                generation: None,
                state: TrialState::Complete,
                objectives: Some(o),
                constraint_violation: 0.0,
            });
        }
    }

    #[test]
    fn parego_handles_three_objectives() {
        let space = SearchSpace::new(vec![
            Dimension::float("a", 0.0, 1.0, false),
            Dimension::float("b", 0.0, 1.0, false),
        ])
        .unwrap();
        let mut gp = GpSearch::new(
            GpSettings {
                candidates: 128,
                n_startup: 5,
                ..Default::default()
            },
            1,
        );
        let mut history = Vec::new();
        for trial_id in 0..12 {
            let p = gp.ask(&space, &history, trial_id).unwrap();
            let o = vec![p.point[0], p.point[1], 2.0 - p.point[0] - p.point[1]];
            history.push(TrialView {
                trial_id,
                point: p.point,
                generation: None,
                state: TrialState::Complete,
                objectives: Some(o),
                constraint_violation: 0.0,
            });
        }
        assert_eq!(history.len(), 12);
    }
}
