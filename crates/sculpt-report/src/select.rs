//! Pareto front, hypervolume and selection under a latency budget, over completed trials.
//! Accuracy is maximised and latency minimised.

use sculpt_store::{TeacherRecord, TrialRecord};

fn scored(trial: &TrialRecord) -> Option<(f64, f64)> {
    match (trial.is_complete(), trial.accuracy, trial.latency_ms) {
        (true, Some(a), Some(l)) if a.is_finite() && l.is_finite() => Some((a, l)),
        _ => None,
    }
}

/// Indices into `trials` of the completed trials on the accuracy-latency Pareto front,
/// ordered by latency.
pub fn pareto_indices(trials: &[TrialRecord]) -> Vec<usize> {
    let candidates: Vec<(usize, (f64, f64))> = trials
        .iter()
        .enumerate()
        .filter_map(|(i, t)| scored(t).map(|s| (i, s)))
        .collect();
    let objectives: Vec<Vec<f64>> = candidates.iter().map(|(_, (a, l))| vec![-a, *l]).collect();
    let mut front: Vec<usize> = sculpt_search::pareto_front(&objectives)
        .into_iter()
        .map(|k| candidates[k].0)
        .collect();
    // Identical scores: keep the first trial that reached them.
    front.sort_by(|&a, &b| {
        let (sa, sb) = (scored(&trials[a]).unwrap(), scored(&trials[b]).unwrap());
        sa.1.total_cmp(&sb.1).then(a.cmp(&b))
    });
    front.dedup_by(|a, b| scored(&trials[*a]) == scored(&trials[*b]));
    front
}

/// Indices of the complete trials on the front of accuracy against `cost` (smaller is
/// better), in cost order; trials with identical scores keep the first.
pub fn pareto_by(trials: &[TrialRecord], cost: impl Fn(&TrialRecord) -> Option<f64>) -> Vec<usize> {
    let score = |t: &TrialRecord| -> Option<(f64, f64)> {
        let a = t.accuracy.filter(|a| a.is_finite())?;
        let c = cost(t).filter(|c| c.is_finite())?;
        t.is_complete().then_some((a, c))
    };
    let candidates: Vec<(usize, (f64, f64))> = trials
        .iter()
        .enumerate()
        .filter_map(|(i, t)| score(t).map(|s| (i, s)))
        .collect();
    let objectives: Vec<Vec<f64>> = candidates.iter().map(|(_, (a, c))| vec![-a, *c]).collect();
    let mut front: Vec<usize> = sculpt_search::pareto_front(&objectives)
        .into_iter()
        .map(|k| candidates[k].0)
        .collect();
    front.sort_by(|&a, &b| {
        let (sa, sb) = (score(&trials[a]).unwrap(), score(&trials[b]).unwrap());
        sa.1.total_cmp(&sb.1).then(a.cmp(&b))
    });
    front.dedup_by(|a, b| score(&trials[*a]) == score(&trials[*b]));
    front
}

/// The knee of a front given as (cost, accuracy) points in cost order: the point
/// farthest from the line through the two ends, with both axes scaled to [0, 1]. None
/// for fronts of fewer than 3 points.
pub fn knee(front: &[(f64, f64)]) -> Option<usize> {
    if front.len() < 3 {
        return None;
    }
    let (x0, x1) = (front[0].0, front[front.len() - 1].0);
    let (ylo, yhi) = front
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let (dx, dy) = ((x1 - x0).abs().max(1e-300), (yhi - ylo).max(1e-300));
    let n: Vec<(f64, f64)> = front
        .iter()
        .map(|p| ((p.0 - x0) / dx, (p.1 - ylo) / dy))
        .collect();
    let (a, b) = (n[0], n[n.len() - 1]);
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let len = (vx * vx + vy * vy).sqrt().max(1e-300);
    (1..n.len() - 1)
        .map(|i| (i, ((n[i].0 - a.0) * vy - (n[i].1 - a.1) * vx).abs() / len))
        .filter(|(_, d)| *d > 1e-9)
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(i, _)| i)
}

/// Hypervolume of the completed trials in (error, latency / teacher latency), with the
/// reference point (1, 1): the area of that square that the trials dominate. It grows as
/// the front gets more accurate and faster; a trial no faster than the teacher adds nothing.
pub fn hypervolume(trials: &[TrialRecord], teacher: &TeacherRecord) -> f64 {
    let points: Vec<[f64; 2]> = trials
        .iter()
        .filter_map(scored)
        .map(|(a, l)| [1.0 - a, l / teacher.latency_ms])
        .collect();
    sculpt_search::hypervolume_2d(&points, [1.0, 1.0])
}

/// The most accurate completed trial whose latency is within `budget_ms`; ties go to the
/// smaller model, then to the earlier trial.
pub fn best_under_budget(trials: &[TrialRecord], budget_ms: f64) -> Option<&TrialRecord> {
    trials
        .iter()
        .filter(|t| scored(t).is_some_and(|(_, l)| l <= budget_ms))
        .min_by(|a, b| {
            let (sa, sb) = (scored(a).unwrap(), scored(b).unwrap());
            sb.0.total_cmp(&sa.0)
                .then(a.size_bytes.cmp(&b.size_bytes))
                .then(a.trial_id.cmp(&b.trial_id))
        })
}

/// What `select` optimises among the feasible trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prefer {
    /// The most accurate (ties: smaller, then faster).
    Accuracy,
    /// The smallest (ties: more accurate, then faster).
    Size,
    /// The fastest (ties: more accurate, then smaller).
    Latency,
}

impl Prefer {
    pub fn parse(text: &str) -> Option<Prefer> {
        Some(match text {
            "accuracy" => Prefer::Accuracy,
            "size" => Prefer::Size,
            "latency" => Prefer::Latency,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Prefer::Accuracy => "accuracy",
            Prefer::Size => "size",
            Prefer::Latency => "latency",
        }
    }
}

/// Limits a deployable configuration must meet; unset limits do not bind.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Constraints {
    pub max_latency_ms: Option<f64>,
    /// Validation accuracy, a fraction.
    pub min_accuracy: Option<f64>,
    pub max_size_bytes: Option<u64>,
}

/// The scores of a complete trial: (accuracy, latency, size).
fn scores(t: &TrialRecord) -> Option<(f64, f64, u64)> {
    let (a, l) = scored(t)?;
    Some((a, l, t.size_bytes?))
}

impl Constraints {
    /// How a trial breaks the limits, one phrase per limit (empty: it meets them all).
    pub fn violations(&self, t: &TrialRecord) -> Vec<String> {
        let Some((a, l, s)) = scores(t) else {
            return vec![format!("is {}, not complete", t.state.as_str())];
        };
        let mut out = Vec::new();
        if let Some(max) = self.max_latency_ms.filter(|&m| l > m) {
            out.push(format!("latency {l:.4} ms > {max} ms"));
        }
        if let Some(min) = self.min_accuracy.filter(|&m| a < m) {
            out.push(format!("accuracy {:.2}% < {:.2}%", a * 100.0, min * 100.0));
        }
        if let Some(max) = self.max_size_bytes.filter(|&m| s > m) {
            out.push(format!("size {s} B > {max} B"));
        }
        out
    }

    /// How far a complete trial is from meeting the limits: the sum of its relative
    /// shortfalls (0 when it meets them).
    pub fn distance(&self, t: &TrialRecord) -> f64 {
        let Some((a, l, s)) = scores(t) else {
            return f64::INFINITY;
        };
        let over = |x: f64, limit: f64| ((x - limit) / limit.abs().max(1e-12)).max(0.0);
        self.max_latency_ms.map_or(0.0, |m| over(l, m))
            + self.min_accuracy.map_or(0.0, |m| over(m, a))
            + self
                .max_size_bytes
                .map_or(0.0, |m| over(s as f64, m as f64))
    }
}

/// The order `prefer` ranks feasible trials in: best first, ties to the earlier trial.
pub fn preference_order(prefer: Prefer, a: &TrialRecord, b: &TrialRecord) -> std::cmp::Ordering {
    let (sa, sb) = (scores(a).unwrap(), scores(b).unwrap());
    let accuracy = sb.0.total_cmp(&sa.0);
    let latency = sa.1.total_cmp(&sb.1);
    let size = sa.2.cmp(&sb.2);
    match prefer {
        Prefer::Accuracy => accuracy.then(size).then(latency),
        Prefer::Size => size.then(accuracy).then(latency),
        Prefer::Latency => latency.then(accuracy).then(size),
    }
    .then(a.trial_id.cmp(&b.trial_id))
}

/// The outcome of a selection.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection<'a> {
    /// The chosen trial and the next best feasible ones (at most `runners_up`), and how
    /// many complete trials were feasible.
    Chosen {
        chosen: &'a TrialRecord,
        runners_up: Vec<&'a TrialRecord>,
        feasible: usize,
    },
    /// Nothing met the limits: the complete trials nearest to meeting them.
    Infeasible { nearest: Vec<&'a TrialRecord> },
}

/// Chooses among the complete trials that meet `limits` by `prefer`.
pub fn select<'a>(
    trials: &'a [TrialRecord],
    limits: &Constraints,
    prefer: Prefer,
    runners_up: usize,
) -> Selection<'a> {
    let mut feasible: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| scores(t).is_some() && limits.violations(t).is_empty())
        .collect();
    if feasible.is_empty() {
        let mut nearest: Vec<&TrialRecord> =
            trials.iter().filter(|t| scores(t).is_some()).collect();
        nearest.sort_by(|a, b| {
            limits
                .distance(a)
                .total_cmp(&limits.distance(b))
                .then(a.trial_id.cmp(&b.trial_id))
        });
        nearest.truncate(runners_up.max(1));
        return Selection::Infeasible { nearest };
    }
    feasible.sort_by(|a, b| preference_order(prefer, a, b));
    let count = feasible.len();
    Selection::Chosen {
        chosen: feasible[0],
        runners_up: feasible.iter().skip(1).take(runners_up).copied().collect(),
        feasible: count,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sculpt_store::TrialState;

    pub fn trial(id: u64, accuracy: f64, latency_ms: f64, size: u64) -> TrialRecord {
        TrialRecord {
            trial_id: id,
            state: TrialState::Complete,
            strategy: "nsga2".into(),
            generation: Some(0),
            params: [
                ("temperature".to_string(), serde_json::json!(3.0)),
                ("bits_fc1".to_string(), serde_json::json!(4)),
            ]
            .into(),
            accuracy: Some(accuracy),
            latency_ms: Some(latency_ms),
            size_bytes: Some(size),
            num_params: Some(100),
            nonzeros: Some(90),
            flops: Some(200),
            bops: Some(200 * 32 * 32),
            duration_s: 1.0,
            error: None,
            fidelity: None,
            rungs: Vec::new(),
        }
    }

    pub fn teacher() -> TeacherRecord {
        TeacherRecord {
            model: "mlp".into(),
            accuracy: 0.97,
            latency_ms: 0.01,
            size_bytes: 200_000,
            params: 50_000,
            flops: 100_000,
            latency_model: None,
        }
    }

    #[test]
    fn front_budget_and_hypervolume() {
        let mut failed = trial(4, 0.99, 0.001, 1);
        failed.state = TrialState::Failed;
        let trials = vec![
            trial(0, 0.90, 0.004, 10),
            trial(1, 0.95, 0.006, 20),
            trial(2, 0.93, 0.007, 30), // dominated by 1
            trial(3, 0.97, 0.009, 40),
            failed,
            trial(5, 0.95, 0.006, 15), // same scores as 1
        ];
        assert_eq!(pareto_indices(&trials), vec![0, 1, 3]);
        assert_eq!(best_under_budget(&trials, 0.0065).unwrap().trial_id, 5);
        assert_eq!(best_under_budget(&trials, 0.1).unwrap().trial_id, 3);
        assert!(best_under_budget(&trials, 0.001).is_none());
        // Points (0.10, 0.4), (0.05, 0.6), (0.03, 0.9) against (1, 1):
        // 0.9*0.6 + (0.95-0.9)*0.4 + (0.97-0.95)*0.1 = 0.54 + 0.02 + 0.002.
        let hv = hypervolume(&trials, &teacher());
        assert!((hv - 0.562).abs() < 1e-9, "{hv}");
    }

    /// `select` against a brute-force scan of random trials, for every preference and
    /// random limits, including limits nothing meets.
    #[test]
    fn select_matches_a_brute_force_scan() {
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for round in 0..200 {
            let mut trials: Vec<TrialRecord> = (0..30)
                .map(|i| {
                    // Coarse values, so ties happen and the tie-breaks are exercised.
                    let a = 0.80 + (next() * 20.0).floor() / 100.0;
                    let l = 0.001 + (next() * 10.0).floor() / 1000.0;
                    let s = 1000 + (next() * 8.0).floor() as u64 * 500;
                    trial(i, a, l, s)
                })
                .collect();
            trials[3].state = TrialState::Failed;
            trials[7].state = TrialState::Infeasible;
            let limits = Constraints {
                max_latency_ms: (next() < 0.8).then(|| 0.001 + next() * 0.01),
                min_accuracy: (next() < 0.5).then(|| 0.8 + next() * 0.25),
                max_size_bytes: (next() < 0.5).then(|| 1000 + (next() * 4000.0) as u64),
            };
            for prefer in [Prefer::Accuracy, Prefer::Size, Prefer::Latency] {
                // Brute force: every complete trial that meets every limit, then the best
                // by the preference's key tuple.
                let ok = |t: &TrialRecord| {
                    t.state == TrialState::Complete
                        && limits
                            .max_latency_ms
                            .is_none_or(|m| t.latency_ms.unwrap() <= m)
                        && limits.min_accuracy.is_none_or(|m| t.accuracy.unwrap() >= m)
                        && limits
                            .max_size_bytes
                            .is_none_or(|m| t.size_bytes.unwrap() <= m)
                };
                let key = |t: &TrialRecord| {
                    let (a, l, s) = (
                        -t.accuracy.unwrap(),
                        t.latency_ms.unwrap(),
                        t.size_bytes.unwrap() as f64,
                    );
                    match prefer {
                        Prefer::Accuracy => (a, s, l, t.trial_id),
                        Prefer::Size => (s, a, l, t.trial_id),
                        Prefer::Latency => (l, a, s, t.trial_id),
                    }
                };
                let mut best: Option<&TrialRecord> = None;
                for t in trials.iter().filter(|t| ok(t)) {
                    if best.is_none_or(|b| {
                        key(t).partial_cmp(&key(b)) == Some(std::cmp::Ordering::Less)
                    }) {
                        best = Some(t);
                    }
                }
                let feasible = trials.iter().filter(|t| ok(t)).count();
                match (select(&trials, &limits, prefer, 3), best) {
                    (
                        Selection::Chosen {
                            chosen,
                            runners_up,
                            feasible: n,
                        },
                        Some(b),
                    ) => {
                        assert_eq!(
                            chosen.trial_id, b.trial_id,
                            "round {round} {prefer:?} {limits:?}"
                        );
                        assert_eq!(n, feasible);
                        assert_eq!(runners_up.len(), (feasible - 1).min(3));
                        for r in &runners_up {
                            assert!(ok(r) && key(r) > key(chosen));
                        }
                    }
                    (Selection::Infeasible { nearest }, None) => {
                        assert_eq!(feasible, 0);
                        assert!(!nearest.is_empty());
                        assert!(nearest
                            .iter()
                            .all(|t| t.is_complete() && !limits.violations(t).is_empty()));
                    }
                    (got, want) => {
                        panic!("round {round} {prefer:?} {limits:?}: {got:?} against {want:?}")
                    }
                }
            }
        }
    }
}
