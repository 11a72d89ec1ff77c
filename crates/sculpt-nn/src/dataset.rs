//! The data a model trains and is scored on: samples and labels as tensors, and the
//! train, validation and test splits of one source. Loading and splitting sources is
//! `sculpt-data`'s job; this is only the shape they arrive in.

use candle_core::Tensor;

/// Samples as a `[n, features...]` f32 tensor and labels as a `[n]` u32 tensor.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub x: Tensor,
    pub y: Tensor,
    pub num_classes: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.x.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape of one sample.
    pub fn sample_shape(&self) -> Vec<usize> {
        self.x.dims()[1..].to_vec()
    }
}

/// The three splits of one data source, normalised.
#[derive(Debug, Clone)]
pub struct Splits {
    pub source: String,
    pub train: Dataset,
    pub val: Dataset,
    pub test: Dataset,
    /// How the raw values were turned into these samples (statistics of the training
    /// split): what `sculpt train` records in the model it writes.
    pub preprocessing: crate::Preprocessing,
}
