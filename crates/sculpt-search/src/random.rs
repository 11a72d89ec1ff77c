//! Random search: every trial an independent draw from the search space, seeded
//! per trial so that history and order never matter.

use crate::error::Result;
use crate::space::SearchSpace;
use crate::strategy::{trial_rng, Proposal, Strategy, TrialView};

/// Uniform (log-uniform for log floats) random search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomSearch {
    seed: u64,
}

impl RandomSearch {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }
}

impl Strategy for RandomSearch {
    fn name(&self) -> &'static str {
        "random"
    }

    fn ask(
        &mut self,
        space: &SearchSpace,
        _history: &[TrialView],
        trial_id: u64,
    ) -> Result<Proposal> {
        Ok(Proposal::new(
            space.sample(&mut trial_rng(self.seed, trial_id)),
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Dimension;

    #[test]
    fn random_search_depends_only_on_seed_and_trial_id() {
        let space = SearchSpace::new(vec![
            Dimension::float("x", 0.0, 1.0, false),
            Dimension::categorical("bits", vec![2.0, 4.0, 8.0]),
        ])
        .unwrap();
        let mut a = RandomSearch::new(11);
        let mut b = RandomSearch::new(11);
        let p = a.ask(&space, &[], 5).unwrap();
        assert_eq!(p.generation, None);
        assert!(space.contains(&p.point));
        assert_eq!(b.ask(&space, &[], 5).unwrap(), p);
        assert_ne!(a.ask(&space, &[], 6).unwrap().point, p.point);
        assert_eq!(a.name(), "random");
    }
}
