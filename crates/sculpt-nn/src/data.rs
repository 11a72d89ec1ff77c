//! Datasets: a data source named by a spec string (`digits` for now), split into train,
//! validation and test with a seeded, stratified shuffle, and normalised with statistics
//! of the training split only, so nothing leaks from validation or test.

use candle_core::Tensor;
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use crate::error::{NnError, Result};

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
}

/// Fractions of each class that go to validation and test; the rest is training data.
pub const VAL_FRACTION: f64 = 0.2;
pub const TEST_FRACTION: f64 = 0.2;

/// The data sources `load` knows.
pub const SOURCES: &[&str] = &["digits"];

/// Loads the data source named by `spec` and splits it with `seed`.
pub fn load(spec: &str, seed: u64) -> Result<Splits> {
    match spec.trim() {
        "digits" => {
            let raw = smartcore::dataset::digits::load_dataset();
            let labels: Vec<u32> = raw.target.iter().map(|&t| t as u32).collect();
            split(spec, raw.data, vec![raw.num_features], labels, 10, seed)
        }
        other => Err(NnError::UnknownData(other.to_string())),
    }
}

/// Stratified split of row-major `features` (one row of `prod(sample_shape)` per sample),
/// then per-feature standardisation with the training split's mean and deviation.
pub fn split(
    source: &str,
    features: Vec<f32>,
    sample_shape: Vec<usize>,
    labels: Vec<u32>,
    num_classes: usize,
    seed: u64,
) -> Result<Splits> {
    let width: usize = sample_shape.iter().product();
    if width == 0 || features.len() != labels.len() * width {
        return Err(NnError::Config(format!(
            "{source}: {} feature values do not make {} samples of {width}",
            features.len(),
            labels.len()
        )));
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= num_classes) {
        return Err(NnError::Config(format!(
            "{source}: label {bad} is out of range for {num_classes} classes"
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for class in 0..num_classes as u32 {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        members.shuffle(&mut rng);
        let n_val = (members.len() as f64 * VAL_FRACTION).round() as usize;
        let n_test = (members.len() as f64 * TEST_FRACTION).round() as usize;
        val.extend_from_slice(&members[..n_val]);
        test.extend_from_slice(&members[n_val..n_val + n_test]);
        train.extend_from_slice(&members[n_val + n_test..]);
    }
    // Interleave classes so that contiguous batches are mixed.
    train.shuffle(&mut rng);
    val.sort_unstable();
    test.sort_unstable();

    let (mean, scale) = standardisation(&features, width, &train);
    let make = |rows: &[usize]| -> Result<Dataset> {
        let mut x = Vec::with_capacity(rows.len() * width);
        for &r in rows {
            let row = &features[r * width..(r + 1) * width];
            x.extend(
                row.iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((v, m), s)| (v - m) / s),
            );
        }
        let y: Vec<u32> = rows.iter().map(|&r| labels[r]).collect();
        let mut shape = vec![rows.len()];
        shape.extend_from_slice(&sample_shape);
        let device = crate::device();
        Ok(Dataset {
            x: Tensor::from_vec(x, shape, &device)?,
            y: Tensor::from_vec(y, rows.len(), &device)?,
            num_classes,
        })
    };
    Ok(Splits {
        source: source.to_string(),
        train: make(&train)?,
        val: make(&val)?,
        test: make(&test)?,
    })
}

/// Per-feature mean and standard deviation over the given rows. Constant features (the
/// always-blank border pixels of digits) keep a scale of 1 rather than dividing by zero.
fn standardisation(features: &[f32], width: usize, rows: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0f64; width];
    for &r in rows {
        for (m, v) in mean.iter_mut().zip(&features[r * width..(r + 1) * width]) {
            *m += *v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; width];
    for &r in rows {
        for ((s, v), m) in var
            .iter_mut()
            .zip(&features[r * width..(r + 1) * width])
            .zip(&mean)
        {
            *s += (*v as f64 - m).powi(2);
        }
    }
    let scale = var
        .iter()
        .map(|s| {
            let sd = (s / n).sqrt();
            if sd < 1e-6 {
                1.0
            } else {
                sd as f32
            }
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_split_is_stratified_disjoint_and_seeded() {
        let a = load("digits", 7).unwrap();
        assert_eq!(a.train.len() + a.val.len() + a.test.len(), 1797);
        assert_eq!(a.train.sample_shape(), vec![64]);
        // Every class is present in validation in proportion (about 36 each of ~180).
        let val: Vec<u32> = a.val.y.to_vec1().unwrap();
        for class in 0..10u32 {
            let count = val.iter().filter(|&&l| l == class).count();
            assert!((33..=39).contains(&count), "class {class}: {count}");
        }
        let b = load("digits", 7).unwrap();
        let xa: Vec<f32> = a.train.x.flatten_all().unwrap().to_vec1().unwrap();
        let xb: Vec<f32> = b.train.x.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(xa, xb);
        let c = load("digits", 8).unwrap();
        let xc: Vec<f32> = c.train.x.flatten_all().unwrap().to_vec1().unwrap();
        assert_ne!(xa, xc);
        // Training features are standardised.
        let mean = xa.iter().sum::<f32>() / xa.len() as f32;
        assert!(mean.abs() < 1e-3, "mean {mean}");
    }

    #[test]
    fn unknown_source_is_named() {
        let err = load("cifar", 0).unwrap_err().to_string();
        assert!(err.contains("cifar"), "{err}");
    }
}
