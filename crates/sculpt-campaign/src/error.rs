//! The one error type of sculpt-campaign. Configuration errors carry the file, line,
//! column and field, so a user can go straight to the mistake.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// A mistake in a campaign file.
    #[error("{path}:{line}:{column}: {field}{message}")]
    Config {
        path: PathBuf,
        line: usize,
        column: usize,
        /// "field `search.trials`: " or empty when no field applies.
        field: String,
        message: String,
    },
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Nn(#[from] sculpt_nn::NnError),
    #[error(transparent)]
    Data(#[from] sculpt_data::DataError),
    #[error(transparent)]
    Compress(#[from] sculpt_compress::CompressError),
    #[error(transparent)]
    Latency(#[from] sculpt_latency::LatencyError),
    #[error(transparent)]
    Search(#[from] sculpt_search::SearchError),
    #[error(transparent)]
    Store(#[from] sculpt_store::StoreError),
    #[error(transparent)]
    Report(#[from] sculpt_report::ReportError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
}

impl CampaignError {
    /// True when the campaign stopped because it was asked to (Ctrl-C during the
    /// teacher's training); the CLI exits with the interrupted status.
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            CampaignError::Nn(sculpt_nn::NnError::Interrupted { .. })
        )
    }

    /// True for mistakes in the user's input files (the CLI exits with status 2).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            CampaignError::Config { .. }
                | CampaignError::Compress(sculpt_compress::CompressError::PlanFile(_))
        )
    }
}

pub type Result<T> = std::result::Result<T, CampaignError>;
