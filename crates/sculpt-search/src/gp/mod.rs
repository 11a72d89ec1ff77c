//! Bayesian optimisation with Gaussian processes: the model ([`model`]), the acquisition
//! functions ([`acquisition`]), box-bounded L-BFGS through argmin, and the `gp` strategy
//! ([`GpSearch`]).

pub mod acquisition;
pub mod model;
mod optimize;
mod strategy;

pub use model::{FitSettings, Gp, Hyper};
pub use strategy::{Acquisition, GpSearch, GpSettings};
