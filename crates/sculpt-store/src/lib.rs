//! sculpt-store owns a campaign directory on disk.
//!
//! The contract:
//! - `trials.jsonl` is the append-only journal and the source of truth. A finished trial is
//!   one line; `append` returns only after the line is written and synced, so an
//!   acknowledged trial survives a crash. Finished trials are never rewritten.
//! - `trials.parquet` is the polars frame of all trials, rewritten through a temporary file
//!   and a rename after each append, so it is always a whole file.
//! - A store sees its own writes: `trials()` includes every acknowledged append.
//! - One process at a time: the directory is locked while a `Store` is open.
//! - `campaign.json` records which campaign the trials belong to, so trials of one campaign
//!   are never mixed with another's; `teacher.json` holds the teacher's scores.
//!
//! It also owns the other table sculpt writes, `sensitivity.parquet` (see [`sensitivity`]).

pub mod error;
pub mod frame;
pub mod record;
pub mod sensitivity;
pub mod store;

pub use error::{Result, StoreError};
pub use frame::trials_frame;
pub use record::{CampaignMeta, Rung, TeacherRecord, TrialRecord, TrialState};
pub use sensitivity::{read_sensitivity, write_sensitivity, SensitivityRow, SENSITIVITY_FILE};
pub use store::{Store, RUNS_FILE};
