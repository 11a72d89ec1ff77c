//! sculpt-data owns the data sources a model is trained and scored on: the embedded
//! digits, IDX folders (MNIST, Fashion-MNIST), CIFAR-10 binary batches, and CSV or
//! parquet tables through polars; each split into train, validation and test with a
//! seeded, stratified shuffle and normalised with training statistics only. It produces
//! `sculpt_nn::Splits` and knows nothing of models, search or storage.

pub mod error;
pub mod idx;
pub mod load;
pub mod tabular;

pub use error::{DataError, Result};
pub use load::{conform, load, resolve_spec, split, RawData, SOURCES, TEST_FRACTION, VAL_FRACTION};
pub use sculpt_nn::{Dataset, Splits};
