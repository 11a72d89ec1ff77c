//! Asynchronous successive halving (ASHA, Li et al. 2020) over fine-tuning epochs, with
//! Hyperband brackets as an option, for two objectives.
//!
//! A trial fine-tunes on the campaign's full schedule, and at each rung (`min_epochs`,
//! then `min_epochs·η`, `min_epochs·η²`, … below the full epochs) it is scored on the
//! validation split. It goes on only if it ranks in the best `1/η` of the trials that
//! reached that rung before it (at least the best one), as Optuna's
//! `SuccessiveHalvingPruner` decides; otherwise it stops there and is stored as
//! `stopped`, with the score of its last rung. Promotion continues the same student, with
//! its optimizer state and learning-rate schedule, rather than starting again.
//!
//! Two objectives are ranked as MO-ASHA (Schmucker et al. 2021) does: by non-dominated
//! sorting of (error, latency or size) at the rung, then by accuracy within a front. The
//! decision is asynchronous: it compares with the trials stored so far, so no trial waits
//! for a rung to fill.
//!
//! With `brackets = B` (Hyperband), trial `t` belongs to bracket `t mod B`; bracket `s`
//! starts halving at `min_epochs·η^s`, so bracket 0 is the most aggressive and the last
//! bracket the least. Trials compete only within their bracket.

use sculpt_store::{Rung, TrialRecord};
use serde::Serialize;

/// `[halving]` in a campaign file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Halving {
    /// The first rung, in epochs.
    pub min_epochs: usize,
    /// η: the best `1/η` of each rung is promoted, and rungs are `η` times apart.
    pub reduction_factor: usize,
    /// Hyperband brackets (1: plain successive halving).
    pub brackets: usize,
}

impl Default for Halving {
    fn default() -> Self {
        Halving {
            min_epochs: 1,
            reduction_factor: 3,
            brackets: 1,
        }
    }
}

impl Halving {
    /// The bracket of a trial.
    pub fn bracket(&self, trial_id: u64) -> usize {
        (trial_id % self.brackets.max(1) as u64) as usize
    }

    /// The rungs (in epochs) of `bracket` for a schedule of `epochs`: every rung is below
    /// the full schedule, whose end is the final score.
    pub fn rungs(&self, bracket: usize, epochs: usize) -> Vec<usize> {
        let eta = self.reduction_factor.max(2);
        let mut rung = self.min_epochs.max(1) * eta.pow(bracket as u32);
        let mut out = Vec::new();
        while rung < epochs {
            out.push(rung);
            rung *= eta;
        }
        out
    }

    /// Whether a trial scoring `accuracy` (and `second`, latency or size, lower better) at
    /// the rung of `epochs` epochs in `bracket` is promoted, against the trials of that
    /// bracket stored so far that reached the same rung.
    pub fn promote(
        &self,
        bracket: usize,
        epochs: usize,
        accuracy: f64,
        second: f64,
        stored: &[TrialRecord],
        second_of: &dyn Fn(&TrialRecord) -> Option<f64>,
    ) -> bool {
        let mut points: Vec<(f64, f64)> = stored
            .iter()
            .filter(|t| self.bracket(t.trial_id) == bracket)
            .filter_map(|t| {
                let rung = t.rungs.iter().find(|r| r.epochs as usize == epochs)?;
                Some((rung.accuracy, second_of(t)?))
            })
            .collect();
        points.push((accuracy, second));
        let me = points.len() - 1;
        let rank = front_ranks(&points);
        let position = (0..points.len())
            .filter(|&i| i != me)
            .filter(|&i| rank[i] < rank[me] || (rank[i] == rank[me] && points[i].0 > points[me].0))
            .count();
        let keep = (points.len() / self.reduction_factor.max(2)).max(1);
        position < keep
    }
}

/// The non-dominated front index of each (accuracy ↑, second ↓) point: 0 for the points
/// no other dominates, 1 for those only front 0 dominates, and so on.
fn front_ranks(points: &[(f64, f64)]) -> Vec<usize> {
    let dominates =
        |a: (f64, f64), b: (f64, f64)| a.0 >= b.0 && a.1 <= b.1 && (a.0 > b.0 || a.1 < b.1);
    let mut rank = vec![usize::MAX; points.len()];
    let mut level = 0;
    while rank.contains(&usize::MAX) {
        let current: Vec<usize> = (0..points.len())
            .filter(|&i| rank[i] == usize::MAX)
            .filter(|&i| {
                !(0..points.len())
                    .any(|j| rank[j] == usize::MAX && j != i && dominates(points[j], points[i]))
            })
            .collect();
        for i in current {
            rank[i] = level;
        }
        level += 1;
    }
    rank
}

/// The rungs a trial reached, as the record stores them.
pub fn rung(epochs: usize, accuracy: f64, promoted: bool) -> Rung {
    Rung {
        epochs: epochs as u32,
        accuracy,
        promoted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sculpt_store::TrialState;

    fn trial(id: u64, rungs: &[(u32, f64)], latency: f64) -> TrialRecord {
        TrialRecord {
            trial_id: id,
            state: TrialState::Complete,
            strategy: "random".into(),
            generation: None,
            params: Default::default(),
            accuracy: None,
            latency_ms: Some(latency),
            size_bytes: None,
            num_params: None,
            nonzeros: None,
            flops: None,
            bops: None,
            duration_s: 0.0,
            error: None,
            fidelity: None,
            rungs: rungs
                .iter()
                .map(|&(epochs, accuracy)| rung(epochs as usize, accuracy, true))
                .collect(),
        }
    }

    #[test]
    fn rungs_grow_by_eta_below_the_full_schedule() {
        let h = Halving {
            min_epochs: 1,
            reduction_factor: 3,
            brackets: 3,
        };
        assert_eq!(h.rungs(0, 10), vec![1, 3, 9]);
        assert_eq!(h.rungs(1, 10), vec![3, 9]);
        assert_eq!(h.rungs(2, 10), vec![9]);
        assert_eq!(h.rungs(0, 9), vec![1, 3]);
        assert_eq!(h.rungs(0, 1), Vec::<usize>::new());
        assert_eq!(h.bracket(7), 1);
    }

    #[test]
    fn promotes_the_best_third_by_front_then_accuracy() {
        let h = Halving::default();
        let latency = |t: &TrialRecord| t.latency_ms;
        // The first trial at a rung always goes on.
        assert!(h.promote(0, 1, 0.5, 1.0, &[], &latency));
        // Six stored trials at rung 1, all at the same latency: with the newcomer, seven
        // compete and the best two (7 / 3) go on.
        let stored: Vec<_> = (0..6)
            .map(|i| trial(i, &[(1, 0.90 + 0.01 * i as f64)], 1.0))
            .collect();
        assert!(h.promote(0, 1, 0.99, 1.0, &stored, &latency));
        assert!(h.promote(0, 1, 0.945, 1.0, &stored, &latency));
        assert!(!h.promote(0, 1, 0.935, 1.0, &stored, &latency));
        // Less accurate but faster than every one: on the first front, so it goes on.
        assert!(h.promote(0, 1, 0.5, 0.1, &stored, &latency));
        // Trials at other rungs, or of another bracket, do not compete.
        let h3 = Halving {
            brackets: 2,
            ..Halving::default()
        };
        let odd: Vec<_> = (0..6)
            .map(|i| trial(2 * i + 1, &[(1, 0.99)], 1.0))
            .collect();
        assert!(h3.promote(0, 1, 0.5, 1.0, &odd, &latency));
        assert!(h.promote(0, 3, 0.5, 1.0, &stored, &latency));
    }
}
