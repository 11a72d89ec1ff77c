//! Search machinery for sculpt: a typed search space, pure ask/tell strategies
//! (random search and NSGA-II), Pareto sorting and the 2-D hypervolume indicator.
//! Nothing here does I/O; the campaign executor owns storage and evaluation.

pub mod error;
pub mod nsga2;
pub mod pareto;
pub mod random;
pub mod space;
pub mod strategy;

pub use error::{Result, SearchError};
pub use nsga2::{Nsga2, Nsga2Settings};
pub use pareto::{
    constrained_dominates, crowding_distance, dominates, hypervolume_2d, non_dominated_sort,
    pareto_front,
};
pub use random::RandomSearch;
pub use space::{Dimension, Domain, Point, SearchSpace};
pub use strategy::{trial_rng, Proposal, Strategy, TrialState, TrialView};
