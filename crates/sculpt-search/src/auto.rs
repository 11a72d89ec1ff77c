//! `auto`, the default strategy: the Gaussian process while it pays, NSGA-II after. A GP
//! finds a front in few evaluations, but each of its asks costs O(n³) in the trials seen
//! and its advantage fades as trials accumulate; NSGA-II is cheap per ask and keeps
//! improving with many trials. The switch points come from `sculpt bench-search` (see
//! the README): the GP for the first [`AutoSettings::gp_trials`] trials of spaces of at
//! most [`AutoSettings::max_gp_dims`] dimensions, NSGA-II from there on, breeding from
//! every trial the GP made. The choice is a pure function of the trial id and the space,
//! and each proposal records which strategy made it, as Optuna's AutoSampler does.

use crate::error::Result;
use crate::gp::{GpSearch, GpSettings};
use crate::nsga2::{Nsga2, Nsga2Settings};
use crate::space::{Point, SearchSpace};
use crate::strategy::{Proposal, Strategy, TrialView};

/// When `auto` hands over from the GP to NSGA-II.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoSettings {
    pub gp_trials: u64,
    pub max_gp_dims: usize,
}

impl Default for AutoSettings {
    fn default() -> Self {
        AutoSettings {
            gp_trials: 200,
            max_gp_dims: 32,
        }
    }
}

/// The `auto` strategy; see the module docs.
#[derive(Debug, Clone)]
pub struct AutoSearch {
    settings: AutoSettings,
    gp: GpSearch,
    nsga2: Nsga2,
}

impl AutoSearch {
    pub fn new(settings: AutoSettings, gp: GpSettings, nsga2: Nsga2Settings, seed: u64) -> Self {
        AutoSearch {
            settings,
            gp: GpSearch::new(gp, seed),
            nsga2: Nsga2::new(nsga2, seed),
        }
    }

    /// Whether trial `trial_id` of `space` goes to the GP.
    pub fn uses_gp(&self, space: &SearchSpace, trial_id: u64) -> bool {
        trial_id < self.settings.gp_trials && space.len() <= self.settings.max_gp_dims
    }
}

impl Strategy for AutoSearch {
    fn name(&self) -> &'static str {
        "auto"
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
        let (mut proposal, by) = if self.uses_gp(space, trial_id) {
            (
                self.gp.ask_feasible(space, history, trial_id, feasible)?,
                "gp",
            )
        } else {
            (
                self.nsga2
                    .ask_feasible(space, history, trial_id, feasible)?,
                "nsga2",
            )
        };
        proposal.strategy = Some(by);
        Ok(proposal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{run, Zdt};

    #[test]
    fn auto_records_its_choice_and_hands_over() {
        let mut auto = AutoSearch::new(
            AutoSettings {
                gp_trials: 15,
                max_gp_dims: 32,
            },
            GpSettings {
                candidates: 64,
                n_startup: 5,
                ..Default::default()
            },
            Nsga2Settings::default().with_population_size(10).unwrap(),
            3,
        );
        let evaluations = run(&mut auto, &Zdt { kind: 1, n: 4 }, 40).unwrap();
        assert!(evaluations[..15].iter().all(|e| e.strategy == "gp"));
        assert!(evaluations[15..].iter().all(|e| e.strategy == "nsga2"));
        // Too many dimensions for the GP: NSGA-II from the start.
        let wide = crate::bench::Problem::space(&Zdt { kind: 1, n: 40 });
        assert!(!auto.uses_gp(&wide, 0));
    }
}
