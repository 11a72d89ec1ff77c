//! Datasets: a data source named by a spec string (`digits` for now), split into train,
//! validation and test with a seeded, stratified shuffle, and normalised with statistics
//! of the training split only, so nothing leaks from validation or test.

use candle_core::Tensor;
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use sculpt_nn::Preprocessing;

use sculpt_nn::{Dataset, Splits};

use crate::error::{DataError, Result};

/// Fractions of each class that go to validation and test; the rest is training data.
pub const VAL_FRACTION: f64 = 0.2;
pub const TEST_FRACTION: f64 = 0.2;

/// The data sources `load` knows: `digits`, or `mnist:DIR` / `idx:DIR` for a folder with
/// the four MNIST-named IDX files (Fashion-MNIST uses the same names), gzipped or not.
pub const SOURCES: &[&str] = &[
    "digits",
    "mnist:DIR",
    "idx:DIR",
    "cifar10:DIR",
    "csv:PATH[#LABEL]",
    "parquet:PATH[#LABEL]",
];

/// Checks the form of a data spec and anchors a relative path at `base` (the folder of the
/// file that names it). The error says what is wrong, for the caller to place.
pub fn resolve_spec(spec: &str, base: &std::path::Path) -> std::result::Result<String, String> {
    let spec = spec.trim();
    if spec == "digits" {
        return Ok(spec.to_string());
    }
    let kinds = [
        ("mnist:", true),
        ("idx:", true),
        ("cifar10:", true),
        ("csv:", false),
        ("parquet:", false),
    ];
    for (prefix, folder) in kinds {
        if let Some(rest) = spec.strip_prefix(prefix) {
            let (path, label) = match rest.rsplit_once('#') {
                Some((p, l)) if !folder => (p, format!("#{l}")),
                _ => (rest, String::new()),
            };
            let what = if folder { "folder" } else { "file" };
            if path.is_empty() {
                return Err(format!("`{spec}` names no {what}"));
            }
            let path = std::path::Path::new(path);
            let full = if path.is_absolute() {
                path.to_path_buf()
            } else {
                base.join(path)
            };
            if (folder && !full.is_dir()) || (!folder && !full.is_file()) {
                return Err(format!("`{spec}`: {} is not a {what}", full.display()));
            }
            // Canonical, so a campaign's identity does not depend on how the path was
            // spelled (`data/x.csv` against `./data/x.csv`, or the campaign file's folder).
            let full = std::fs::canonicalize(&full).unwrap_or(full);
            return Ok(format!("{prefix}{}{label}", full.display()));
        }
    }
    Err(format!(
        "unknown data source `{spec}` (known: {})",
        SOURCES.join(", ")
    ))
}

/// How features are standardised with training-split statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalisation {
    /// Each feature by its own mean and deviation (tabular data, the digits vectors).
    PerFeature,
    /// All pixels by one mean and deviation (images, so convolutions see one scale).
    Global,
}

/// Raw samples of a source before splitting: row-major features, one row per sample.
#[derive(Debug, Clone)]
pub struct RawData {
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub sample_shape: Vec<usize>,
    pub num_classes: usize,
    /// The factor from the values in the file to `features` (1/255 for 8-bit images read
    /// as fractions, 1 otherwise).
    pub raw_scale: f32,
}

/// Loads the data source named by `spec` and splits it with `seed`.
pub fn load(spec: &str, seed: u64) -> Result<Splits> {
    let spec = spec.trim();
    if spec == "digits" {
        let raw = smartcore::dataset::digits::load_dataset();
        let data = RawData {
            labels: raw.target.iter().map(|&t| t as u32).collect(),
            features: raw.data,
            sample_shape: vec![raw.num_features],
            num_classes: 10,
            raw_scale: 1.0,
        };
        return split(spec, data, None, seed, Normalisation::PerFeature);
    }
    if let Some(dir) = spec
        .strip_prefix("mnist:")
        .or_else(|| spec.strip_prefix("idx:"))
    {
        let dir = std::path::Path::new(dir);
        let read = |images: &str, labels: &str| -> Result<RawData> {
            let (pixels, shape, labels) = crate::idx::read_pair(
                &crate::idx::find(dir, images)?,
                &crate::idx::find(dir, labels)?,
            )?;
            let num_classes = labels.iter().max().map_or(0, |&m| m as usize + 1).max(10);
            Ok(RawData {
                features: pixels.into_iter().map(|p| p as f32 / 255.0).collect(),
                labels,
                sample_shape: shape,
                num_classes,
                raw_scale: 1.0 / 255.0,
            })
        };
        let train = read("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
        let test = read("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
        if test.sample_shape != train.sample_shape {
            return Err(DataError::Data {
                path: dir.to_path_buf(),
                message: format!(
                    "test images are {:?} but training images are {:?}",
                    test.sample_shape, train.sample_shape
                ),
            });
        }
        return split(spec, train, Some(test), seed, Normalisation::Global);
    }
    if let Some(dir) = spec.strip_prefix("cifar10:") {
        let (train, test) = crate::tabular::read_cifar10(std::path::Path::new(dir))?;
        return split(spec, train, Some(test), seed, Normalisation::Global);
    }
    for kind in ["csv", "parquet"] {
        if let Some(rest) = spec.strip_prefix(kind).and_then(|r| r.strip_prefix(':')) {
            let (path, label) = rest.rsplit_once('#').unwrap_or((rest, "label"));
            let data = crate::tabular::read_table(kind, std::path::Path::new(path), label)?;
            return split(spec, data, None, seed, Normalisation::PerFeature);
        }
    }
    Err(DataError::UnknownData(spec.to_string()))
}

/// Splits `data` by a seeded, stratified shuffle. Without a separate `test` set, each class
/// gives `VAL_FRACTION` to validation and `TEST_FRACTION` to test; with one (MNIST's
/// official test set), `VAL_FRACTION / 2` of each class goes to validation. Features are
/// then standardised with statistics of the training split only.
pub fn split(
    source: &str,
    data: RawData,
    test: Option<RawData>,
    seed: u64,
    normalisation: Normalisation,
) -> Result<Splits> {
    let width: usize = data.sample_shape.iter().product();
    for (part, d) in std::iter::once(("data", &data)).chain(test.as_ref().map(|t| ("test data", t)))
    {
        if width == 0 || d.features.len() != d.labels.len() * width {
            return Err(DataError::Config(format!(
                "{source}: {part}: {} feature values do not make {} samples of {width}",
                d.features.len(),
                d.labels.len()
            )));
        }
        if let Some(bad) = d.labels.iter().find(|&&l| l as usize >= data.num_classes) {
            return Err(DataError::Config(format!(
                "{source}: {part}: label {bad} is out of range for {} classes",
                data.num_classes
            )));
        }
    }
    let (val_fraction, test_fraction) = match test {
        Some(_) => (VAL_FRACTION / 2.0, 0.0),
        None => (VAL_FRACTION, TEST_FRACTION),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut val, mut held_out) = (Vec::new(), Vec::new(), Vec::new());
    for class in 0..data.num_classes as u32 {
        let mut members: Vec<usize> = (0..data.labels.len())
            .filter(|&i| data.labels[i] == class)
            .collect();
        members.shuffle(&mut rng);
        let n_val = (members.len() as f64 * val_fraction).round() as usize;
        let n_test = (members.len() as f64 * test_fraction).round() as usize;
        val.extend_from_slice(&members[..n_val]);
        held_out.extend_from_slice(&members[n_val..n_val + n_test]);
        train.extend_from_slice(&members[n_val + n_test..]);
    }
    // Interleave classes so that contiguous batches are mixed.
    train.shuffle(&mut rng);
    val.sort_unstable();
    held_out.sort_unstable();

    let (mean, scale) = standardisation(&data.features, width, &train, normalisation);
    // What a model trained on these samples expects of raw values, per feature, or as one
    // value for every feature when the statistics are global.
    let preprocessing = {
        let squeeze = |v: &[f32]| {
            if normalisation == Normalisation::Global {
                vec![v[0]]
            } else {
                v.to_vec()
            }
        };
        // features = raw * raw_scale, so (raw * raw_scale - mean) / std.
        Preprocessing {
            scale: data.raw_scale,
            mean: squeeze(&mean),
            std: squeeze(&scale),
        }
    };
    let make = |features: &[f32], labels: &[u32], rows: &[usize]| -> Result<Dataset> {
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
        shape.extend_from_slice(&data.sample_shape);
        let device = sculpt_nn::device();
        Ok(Dataset {
            x: Tensor::from_vec(x, shape, &device)?,
            y: Tensor::from_vec(y, rows.len(), &device)?,
            num_classes: data.num_classes,
        })
    };
    let test_set = match &test {
        Some(t) => make(
            &t.features,
            &t.labels,
            &(0..t.labels.len()).collect::<Vec<_>>(),
        )?,
        None => make(&data.features, &data.labels, &held_out)?,
    };
    Ok(Splits {
        source: source.to_string(),
        train: make(&data.features, &data.labels, &train)?,
        val: make(&data.features, &data.labels, &val)?,
        test: test_set,
        preprocessing,
    })
}

/// The splits as the model of `spec` (named `model` in messages) expects them: remapped
/// from sculpt's standardisation to the preprocessing the model declares. A model that
/// declares none gets sculpt's standardisation, and the warning says so, since a model
/// trained elsewhere on other inputs would score wrong without any error.
pub fn conform(
    mut splits: Splits,
    spec: &sculpt_nn::GraphSpec,
    model: &str,
) -> Result<(Splits, Option<String>)> {
    let Some(want) = &spec.preprocessing else {
        let warning = format!(
            "{model} declares no input preprocessing (its model.toml has no [preprocessing]), so it is fed {} standardised the way sculpt trains its own models ({}). A model trained elsewhere must declare the preprocessing it was trained with (see the README), or it scores wrong with no error.",
            splits.source,
            splits.preprocessing.describe()
        );
        return Ok((splits, Some(warning)));
    };
    let shape = splits.train.sample_shape();
    let (a_m, b_m) = want
        .affine(&shape)
        .map_err(|m| DataError::Config(format!("{model}: {m}")))?;
    let (a_l, b_l) = splits
        .preprocessing
        .affine(&shape)
        .map_err(|m| DataError::Config(format!("{}: {m}", splits.source)))?;
    // model = raw * a_m + b_m and ours = raw * a_l + b_l, so
    // model = ours * (a_m / a_l) + (b_m - b_l * a_m / a_l).
    let mul: Vec<f32> = a_m.iter().zip(&a_l).map(|(m, l)| m / l).collect();
    let add: Vec<f32> = b_m
        .iter()
        .zip(&b_l)
        .zip(&mul)
        .map(|((bm, bl), k)| bm - bl * k)
        .collect();
    let identity = mul.iter().all(|k| (k - 1.0).abs() < 1e-5) && add.iter().all(|b| b.abs() < 1e-5);
    if !identity {
        let device = sculpt_nn::device();
        let features = mul.len();
        let mul_t = Tensor::from_vec(mul, (1, features), &device)?;
        let add_t = Tensor::from_vec(add, (1, features), &device)?;
        for d in [&mut splits.train, &mut splits.val, &mut splits.test] {
            let dims = d.x.dims().to_vec();
            d.x =
                d.x.flatten_from(1)?
                    .broadcast_mul(&mul_t)?
                    .broadcast_add(&add_t)?
                    .reshape(dims)?;
        }
    }
    splits.preprocessing = want.clone();
    Ok((splits, None))
}

/// Per-feature mean and standard deviation over the given rows. Constant features (the
/// always-blank border pixels of digits) keep a scale of 1 rather than dividing by zero.
fn standardisation(
    features: &[f32],
    width: usize,
    rows: &[usize],
    normalisation: Normalisation,
) -> (Vec<f32>, Vec<f32>) {
    if normalisation == Normalisation::Global {
        let (mut sum, mut sum_sq) = (0f64, 0f64);
        for &r in rows {
            for &v in &features[r * width..(r + 1) * width] {
                sum += v as f64;
                sum_sq += (v as f64) * (v as f64);
            }
        }
        let n = (rows.len() * width).max(1) as f64;
        let mean = sum / n;
        let sd = (sum_sq / n - mean * mean).max(0.0).sqrt();
        let sd = if sd < 1e-6 { 1.0 } else { sd };
        return (vec![mean as f32; width], vec![sd as f32; width]);
    }
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
    fn idx_folder_loads_with_official_test_split() {
        let dir = tempfile::tempdir().unwrap();
        let n = 200;
        let pixels: Vec<u8> = (0..n * 16).map(|i| (i * 7 % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        for (images, labels_name, count) in [
            ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", n),
            ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 50),
        ] {
            std::fs::write(
                dir.path().join(images),
                crate::idx::encode(&[count, 4, 4], &pixels[..count * 16]),
            )
            .unwrap();
            std::fs::write(
                dir.path().join(labels_name),
                crate::idx::encode(&[count], &labels[..count]),
            )
            .unwrap();
        }
        let spec = format!("idx:{}", dir.path().display());
        let s = load(&spec, 1).unwrap();
        assert_eq!(s.train.sample_shape(), vec![1, 4, 4]);
        assert_eq!(s.test.len(), 50);
        assert_eq!(s.train.len() + s.val.len(), n);
        assert_eq!(s.val.len(), 20);
        let x: Vec<f32> = s.train.x.flatten_all().unwrap().to_vec1().unwrap();
        let mean = x.iter().sum::<f32>() / x.len() as f32;
        assert!(mean.abs() < 1e-3, "{mean}");

        std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
        let err = load(&spec, 1).unwrap_err().to_string();
        assert!(err.contains("t10k-labels-idx1-ubyte"), "{err}");
    }

    #[test]
    fn specs_resolve_against_the_naming_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.csv"), "a,label\n1,0\n").unwrap();
        let base = dir.path();
        assert_eq!(resolve_spec("digits", base).unwrap(), "digits");
        let csv = resolve_spec("csv:t.csv#label", base).unwrap();
        let canonical = std::fs::canonicalize(base.join("t.csv")).unwrap();
        assert_eq!(csv, format!("csv:{}#label", canonical.display()));
        // However the path is spelled, the same file resolves to the same spec.
        assert_eq!(resolve_spec("csv:./t.csv#label", base).unwrap(), csv);
        std::fs::create_dir(base.join("sub")).unwrap();
        assert_eq!(
            resolve_spec("csv:../t.csv#label", &base.join("sub")).unwrap(),
            csv
        );
        assert!(resolve_spec("parquet:t.csv", base)
            .unwrap()
            .starts_with("parquet:/"));
        assert!(resolve_spec("cifar10:.", base).is_ok());
        assert!(resolve_spec("mnist:nope", base)
            .unwrap_err()
            .contains("is not a folder"));
        assert!(resolve_spec("csv:missing.csv", base)
            .unwrap_err()
            .contains("is not a file"));
        assert!(resolve_spec("svhn:x", base)
            .unwrap_err()
            .contains("unknown data source"));
    }

    #[test]
    fn unknown_source_is_named() {
        let err = load("cifar", 0).unwrap_err().to_string();
        assert!(err.contains("cifar"), "{err}");
    }
}
