//! Search machinery for sculpt: a typed search space, pure ask/tell strategies (random
//! search, NSGA-II, a Gaussian process, and `auto`, which moves from the GP to NSGA-II),
//! their shared variation operators, space-filling designs, Pareto tools (sorting, 2-D and
//! 3-D hypervolume, reference and knee points) and the benchmark problems.
//! Nothing here does I/O; the campaign executor owns storage and evaluation.

pub mod auto;
pub mod bench;
pub mod design;
pub mod error;
pub mod gp;
pub mod nsga2;
pub mod operators;
pub mod pareto;
pub mod random;
pub mod space;
pub mod strategy;

pub use auto::{AutoSearch, AutoSettings};
pub use error::{Result, SearchError};
pub use gp::{Acquisition, GpSearch, GpSettings};
pub use nsga2::{Nsga2, Nsga2Settings};
pub use pareto::{
    constrained_dominates, crowding_distance, dominates, hypervolume, hypervolume_2d,
    hypervolume_3d, knee_point, non_dominated_sort, pareto_front, reference_point,
};
pub use random::RandomSearch;
pub use space::{Condition, Dimension, Domain, Point, SearchSpace};
pub use strategy::{trial_rng, Proposal, Strategy, TrialState, TrialView};
