//! The ask/tell contract between the campaign executor and search strategies:
//! read-only views of past trials, proposals, and the per-trial deterministic
//! RNG that makes every strategy a pure function of its history.

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::space::{Point, SearchSpace};

/// How a past trial ended, or that it has not ended yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrialState {
    Complete,
    Failed,
    /// Asked but not yet told: running on a worker, or proposed earlier in the same batch.
    /// Strategies that model the objectives stand in a believed value for it, so a batch
    /// does not propose the same point twice.
    Pending,
}

/// A read-only view of one past trial, as the executor hands it to a strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialView {
    pub trial_id: u64,
    pub point: Point,
    pub generation: Option<u32>,
    pub state: TrialState,
    /// Objective values, all to be MINIMISED (the caller negates accuracy). None unless Complete.
    pub objectives: Option<Vec<f64>>,
    /// Total constraint violation, 0.0 when feasible (e.g. latency over budget in ms).
    pub constraint_violation: f64,
}

/// What a strategy asks the executor to evaluate next.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub point: Point,
    /// Strategy tag stored on the trial row (NSGA-II generation); None for random.
    pub generation: Option<u32>,
    /// The strategy that made the proposal when it is not the strategy asked (`auto`
    /// delegates to `gp` or `nsga2`); stored on the trial.
    pub strategy: Option<&'static str>,
}

impl Proposal {
    pub fn new(point: Point, generation: Option<u32>) -> Self {
        Proposal {
            point,
            generation,
            strategy: None,
        }
    }
}

/// Strategies are pure: ask takes a read-only view of past trials and returns a point. They never do I/O.
/// All state is rebuilt from `history`, so a strategy rebuilt from stored trials proposes the same next points.
pub trait Strategy: Send {
    fn name(&self) -> &'static str;
    /// `trial_id` is the id the next trial will get (0-based, = number of trials asked so far in a sequential campaign).
    fn ask(
        &mut self,
        space: &SearchSpace,
        history: &[TrialView],
        trial_id: u64,
    ) -> Result<Proposal>;
    /// Optional hook: a finished trial. Default: nothing (state is derived from history).
    fn tell(&mut self, _trial: &TrialView) {}

    /// Like [`Strategy::ask`], with an exact and cheap feasibility check (a latency budget
    /// that the latency model evaluates on the candidate's structure): strategies that
    /// choose among many candidates propose only feasible ones. Default: `ask`, unchecked.
    fn ask_feasible(
        &mut self,
        space: &SearchSpace,
        history: &[TrialView],
        trial_id: u64,
        _feasible: &dyn Fn(&Point) -> bool,
    ) -> Result<Proposal> {
        self.ask(space, history, trial_id)
    }

    /// `q` proposals at once, for parallel workers: each is asked with the earlier ones of
    /// the batch in the history as [`TrialState::Pending`].
    fn ask_batch(
        &mut self,
        space: &SearchSpace,
        history: &[TrialView],
        first_trial_id: u64,
        q: usize,
        feasible: &dyn Fn(&Point) -> bool,
    ) -> Result<Vec<Proposal>> {
        let mut seen = history.to_vec();
        let mut out = Vec::with_capacity(q);
        for i in 0..q as u64 {
            let p = self.ask_feasible(space, &seen, first_trial_id + i, feasible)?;
            seen.push(TrialView {
                trial_id: first_trial_id + i,
                point: p.point.clone(),
                generation: p.generation,
                state: TrialState::Pending,
                objectives: None,
                constraint_violation: 0.0,
            });
            out.push(p);
        }
        Ok(out)
    }
}

/// SplitMix64 finaliser: a bijective avalanche mix, so nearby (seed, trial)
/// pairs give unrelated streams.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic RNG for one ask: `StdRng` seeded from a SplitMix64 mix of
/// `(seed, trial_id)`. Depending on nothing else is what lets a resumed
/// campaign re-propose exactly the points an uninterrupted one would have.
pub fn trial_rng(seed: u64, trial_id: u64) -> StdRng {
    let mut state = splitmix64(splitmix64(seed) ^ trial_id);
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_exact_mut(8) {
        state = splitmix64(state);
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    StdRng::from_seed(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn trial_rng_is_deterministic_and_separates_streams() {
        let draw = |seed, trial| trial_rng(seed, trial).random::<u64>();
        assert_eq!(draw(1, 2), draw(1, 2));
        assert_ne!(draw(1, 2), draw(1, 3));
        assert_ne!(draw(1, 2), draw(2, 2));
        // A naive seed ^ trial mix would collide here.
        assert_ne!(draw(0, 1), draw(1, 0));
    }
}
