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
}
