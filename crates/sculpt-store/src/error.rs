//! The one error type of sculpt-store.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    /// A parquet table that is not what it should be (a missing or mistyped column).
    #[error("{path}: {message}")]
    Table { path: PathBuf, message: String },
    #[error("{0} is a file, not a folder; the output of a campaign is a folder")]
    NotAFolder(PathBuf),
    #[error("{dir} is in use by another sculpt process (lock {lock})")]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error("{}", .0)]
    OtherCampaign(Box<OtherCampaign>),
    /// The disk is full (or the quota reached) while storing a trial: nothing stored
    /// before is touched, and the trial being stored is not half-written.
    #[error(
        "the disk holding {path} is full ({cause}): trial {trial} could not be stored. The {stored} trials stored before it are intact; free some space and run the campaign again to resume"
    )]
    DiskFull {
        path: PathBuf,
        trial: u64,
        stored: usize,
        cause: std::io::Error,
    },
    #[error("trial {0} is already stored; finished trials are immutable")]
    DuplicateTrial(u64),
    // Not a `#[source]`: the message already holds polars' text, and an error chain
    // printed with `{:#}` would repeat it.
    #[error("polars: {0}")]
    Polars(polars::error::PolarsError),
}

impl From<polars::error::PolarsError> for StoreError {
    fn from(e: polars::error::PolarsError) -> Self {
        StoreError::Polars(e)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_polars_error_prints_its_message_once() {
        let e = super::StoreError::from(polars::error::PolarsError::NoData(
            "the folder /nowhere does not exist".into(),
        ));
        let printed = format!("{:#}", anyhow_like(&e));
        assert_eq!(printed.matches("/nowhere").count(), 1, "{printed}");
    }

    /// What `anyhow`'s `{:#}` prints: the error, then each source, joined by `: `.
    fn anyhow_like(e: &(dyn std::error::Error + 'static)) -> String {
        let mut text = e.to_string();
        let mut next = e.source();
        while let Some(s) = next {
            text.push_str(": ");
            text.push_str(&s.to_string());
            next = s.source();
        }
        text
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.into(),
        cause,
    }
}

/// A directory that holds another campaign's trials.
#[derive(Debug)]
pub struct OtherCampaign {
    pub dir: PathBuf,
    pub expected: String,
    pub expected_fingerprint: String,
    pub found: String,
    pub found_fingerprint: String,
    /// The settings that differ, when both campaigns recorded them.
    pub changed: Vec<String>,
}

impl std::fmt::Display for OtherCampaign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} holds trials of campaign `{}` ({}), not of `{}` ({})",
            self.dir.display(),
            self.found,
            self.found_fingerprint,
            self.expected,
            self.expected_fingerprint
        )?;
        if !self.changed.is_empty() {
            write!(f, "; what changed: {}", self.changed.join(", "))?;
        }
        write!(
            f,
            "; choose another --out, remove that directory, or pass --force to add the new trials to the old ones"
        )
    }
}
