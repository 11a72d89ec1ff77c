//! The single error type of the search crate: invalid search spaces, invalid
//! strategy settings, and trial histories a strategy cannot interpret.

/// Everything that can go wrong while building a search space or asking a strategy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    #[error("search space has no dimensions")]
    EmptySpace,
    #[error("dimension name `{0}` appears more than once in the search space")]
    DuplicateDimension(String),
    #[error("dimension `{name}`: {reason}")]
    InvalidDimension { name: String, reason: String },
    #[error("setting `{setting}` = {value} is invalid: {reason}")]
    InvalidSetting {
        setting: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "trial {trial_id}: point has {got} values but the search space has {expected} dimensions"
    )]
    PointLength {
        trial_id: u64,
        expected: usize,
        got: usize,
    },
    #[error("trial {trial_id}: {reason}")]
    InvalidTrial { trial_id: u64, reason: String },
}

pub type Result<T> = std::result::Result<T, SearchError>;
