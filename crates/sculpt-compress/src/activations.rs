//! Static activation quantization: the input of each chosen layer gets a fixed range from
//! calibration batches, so inference quantizes activations without computing statistics.
//! The range is the observed extreme (min-max), a percentile of the magnitudes, or the
//! threshold that minimises the KL divergence between the activation histogram and its
//! quantized version (TensorRT's entropy calibration, with 16 histogram bins per level). Activations that are never
//! negative (after a ReLU) get unsigned codes, which doubles their resolution.

use std::collections::BTreeMap;

use candle_core::Tensor;
use sculpt_nn::{ActQuant, Dataset, ForwardContext, Graph};
use serde::{Deserialize, Serialize};

use crate::error::{layer_error, CompressError, Result};

/// How a calibration range is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calibration {
    /// The largest magnitude seen.
    #[default]
    Minmax,
    /// A percentile of the magnitudes (see `ActivationOptions::percentile`); outliers clip.
    Percentile,
    /// The KL-optimal clipping threshold (entropy calibration).
    Entropy,
}

impl Calibration {
    pub const NAMES: &'static [&'static str] = &["minmax", "percentile", "entropy"];

    pub fn name(&self) -> &'static str {
        match self {
            Calibration::Minmax => "minmax",
            Calibration::Percentile => "percentile",
            Calibration::Entropy => "entropy",
        }
    }

    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "minmax" => Ok(Calibration::Minmax),
            "percentile" => Ok(Calibration::Percentile),
            "entropy" => Ok(Calibration::Entropy),
            other => Err(format!(
                "unknown calibration \"{other}\" (use one of {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Settings of activation calibration that apply to the whole network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivationOptions {
    pub calibration: Calibration,
    /// The percentile of |x| that `percentile` calibration keeps, in (0, 100].
    pub percentile: f64,
    /// Calibration batches of 64 training samples.
    pub batches: usize,
}

impl Default for ActivationOptions {
    fn default() -> Self {
        ActivationOptions {
            calibration: Calibration::Minmax,
            percentile: 99.99,
            batches: 8,
        }
    }
}

const CALIBRATION_BATCH: usize = 64;
/// At least this many histogram bins, and 16 per code level: the threshold can fall no
/// lower than `levels` bins, so finer bins let it clip harder.
const HISTOGRAM_BINS: usize = 2048;

/// The KL divergence `sum p log(p / q)` between two histograms, each normalised; bins
/// where `p` is zero contribute nothing, and `q` is floored at 1e-4, as MXNet smooths it,
/// so that clipping a tail of less than about 0.01% of the mass costs next to nothing.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if sp == 0.0 || sq == 0.0 {
        return f64::INFINITY;
    }
    p.iter()
        .zip(q)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| {
            let (a, b) = (a / sp, (b / sq).max(1e-4));
            a * (a / b).ln()
        })
        .sum()
}

/// The entropy-calibrated clipping threshold of `magnitudes` for `levels` positive code
/// steps: over a histogram of 2048 bins, each candidate threshold folds the clipped tail
/// into its last bin (P), merges the kept bins into `levels` groups spread back over their
/// nonzero bins (Q), and the threshold of least KL(P ‖ Q) wins.
pub fn entropy_threshold(magnitudes: &[f32], levels: usize) -> f64 {
    let max = magnitudes.iter().fold(0f32, |m, v| m.max(*v)) as f64;
    if max == 0.0 || levels == 0 {
        return max;
    }
    let bins = HISTOGRAM_BINS.max(16 * levels);
    let width = max / bins as f64;
    let mut hist = vec![0f64; bins];
    for &v in magnitudes {
        let bin = ((v as f64 / width) as usize).min(bins - 1);
        hist[bin] += 1.0;
    }
    let mut best = (f64::INFINITY, bins);
    for i in levels.max(1)..=bins {
        let mut p: Vec<f64> = hist[..i].to_vec();
        p[i - 1] += hist[i..].iter().sum::<f64>();
        let mut q = vec![0f64; i];
        for g in 0..levels {
            let start = g * i / levels;
            let end = ((g + 1) * i / levels).max(start + 1).min(i);
            let mass: f64 = hist[start..end].iter().sum();
            let nonzero = hist[start..end].iter().filter(|h| **h > 0.0).count();
            if nonzero > 0 {
                for j in start..end {
                    if hist[j] > 0.0 {
                        q[j] = mass / nonzero as f64;
                    }
                }
            }
        }
        let kl = kl_divergence(&p, &q);
        if kl < best.0 {
            best = (kl, i);
        }
    }
    (best.1 as f64) * width
}

/// The `percentile` (0..=100) of `values`, by nearest rank.
fn percentile(values: &mut [f32], percentile: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable_by(|a, b| a.total_cmp(b));
    let rank = ((percentile / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1] as f64
}

/// The quantizer of activations `values` at `bits` by `options`.
pub fn calibrate_values(values: &[f32], bits: u32, options: &ActivationOptions) -> ActQuant {
    let signed = values.iter().any(|v| *v < 0.0);
    let levels = if signed {
        (1usize << (bits - 1)) - 1
    } else {
        (1usize << bits) - 1
    };
    let mut magnitudes: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    let threshold = match options.calibration {
        Calibration::Minmax => magnitudes.iter().fold(0f32, |m, v| m.max(*v)) as f64,
        Calibration::Percentile => percentile(&mut magnitudes, options.percentile),
        Calibration::Entropy => entropy_threshold(&magnitudes, levels),
    };
    let scale = if threshold > 0.0 {
        threshold / levels as f64
    } else {
        1.0
    };
    ActQuant {
        bits,
        scale: scale as f32,
        zero_point: 0,
        signed,
    }
}

/// Returns a new graph whose named layers quantize their input activations to the given
/// bits, with ranges calibrated on the first batches of `data`. Earlier layers' activation
/// quantizers are in place while later ones calibrate, as they will be at inference.
pub fn quantize_activations(
    graph: &Graph,
    bits: &BTreeMap<String, u32>,
    data: &Dataset,
    options: &ActivationOptions,
) -> Result<Graph> {
    if !(options.percentile > 0.0 && options.percentile <= 100.0) {
        return Err(CompressError::Plan(format!(
            "activations.percentile must lie in (0, 100], got {}",
            options.percentile
        )));
    }
    if options.batches == 0 {
        return Err(CompressError::Plan(
            "activations.batches must be at least 1".into(),
        ));
    }
    let samples = (options.batches * CALIBRATION_BATCH).min(data.len());
    if samples == 0 {
        return Err(CompressError::Plan("no calibration data".into()));
    }
    let x = data.x.narrow(0, 0, samples)?;
    let mut out = graph.clone();
    for node in &graph.spec.nodes {
        let Some(&b) = bits.get(&node.name) else {
            continue;
        };
        if b >= 32 {
            continue;
        }
        if !(2..=8).contains(&b) {
            return Err(layer_error(
                &node.name,
                format!("activation bits must lie in 2..=8 (or 32 for float), got {b}"),
            ));
        }
        let source = node.inputs[0].clone();
        let mut ctx = ForwardContext::eval().capturing([source.clone()]);
        out.forward_ctx(&x, &|n| Ok(out.param(n)?.clone()), &mut ctx)?;
        let values: Vec<f32> = ctx
            .captured
            .get(&source)
            .ok_or_else(|| layer_error(&node.name, "its input was not computed"))?
            .flatten_all()?
            .to_vec1()?;
        out.spec
            .act_quant
            .insert(node.name.clone(), calibrate_values(&values, b, options));
    }
    for name in bits.keys() {
        if graph.spec.node(name).is_none() {
            return Err(layer_error(
                name,
                "no such layer to quantize activations of",
            ));
        }
    }
    Ok(out)
}

/// Mean squared error between a layer input and its fake-quantized value, for tests and
/// diagnostics.
pub fn quantization_mse(x: &Tensor, q: &ActQuant) -> Result<f64> {
    let y = q.apply(x)?;
    Ok((x - y)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_the_calibration_method() {
        // A bulk in [0, 1] and one outlier at 50: min-max keeps the outlier, percentile
        // and entropy clip it.
        let mut values: Vec<f32> = (0..10_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        values.push(50.0);
        let opts = |calibration| ActivationOptions {
            calibration,
            ..ActivationOptions::default()
        };
        let minmax = calibrate_values(&values, 8, &opts(Calibration::Minmax));
        assert!(!minmax.signed);
        assert!((minmax.scale as f64 - 50.0 / 255.0).abs() < 1e-6);
        let pct = calibrate_values(&values, 8, &opts(Calibration::Percentile));
        assert!(
            pct.scale < 1.01 / 255.0 && pct.scale > 0.99 / 255.0,
            "{pct:?}"
        );
        let entropy = calibrate_values(&values, 8, &opts(Calibration::Entropy));
        assert!(entropy.scale < minmax.scale / 10.0, "{entropy:?}");
        // Entropy clipping gives a smaller error on the bulk than min-max.
        let bulk =
            Tensor::from_vec(values[..10_000].to_vec(), 10_000, &sculpt_nn::device()).unwrap();
        assert!(
            quantization_mse(&bulk, &entropy).unwrap()
                < quantization_mse(&bulk, &minmax).unwrap() / 10.0
        );
        // Negative values make the codes signed.
        let signed = calibrate_values(&[-2.0, 1.0], 8, &opts(Calibration::Minmax));
        assert!(signed.signed && (signed.scale - 2.0 / 127.0).abs() < 1e-7);
    }

    #[test]
    fn fake_quantization_rounds_and_clips() {
        let q = ActQuant {
            bits: 2,
            scale: 0.5,
            zero_point: 0,
            signed: false,
        };
        let x = Tensor::new(&[-1f32, 0.2, 0.3, 1.4, 9.0], &sculpt_nn::device()).unwrap();
        let y: Vec<f32> = q.apply(&x).unwrap().to_vec1().unwrap();
        assert_eq!(y, vec![0.0, 0.0, 0.5, 1.5, 1.5]);
    }

    #[test]
    fn eight_bit_activations_barely_change_a_network() {
        let splits = sculpt_data::load("digits", 1).unwrap();
        let graph = sculpt_nn::zoo::build("mlp", &[64], 10, 1).unwrap();
        let bits: BTreeMap<String, u32> = graph
            .spec
            .weight_layers()
            .into_iter()
            .map(|l| (l, 8))
            .collect();
        let q = quantize_activations(&graph, &bits, &splits.train, &Default::default()).unwrap();
        assert_eq!(q.spec.act_quant.len(), 3);
        // The first layer reads standardised pixels (signed); the others read ReLUs.
        assert!(q.spec.act_quant["fc1"].signed && !q.spec.act_quant["fc2"].signed);
        let a: Vec<Vec<f32>> = graph.forward(&splits.val.x).unwrap().to_vec2().unwrap();
        let b: Vec<Vec<f32>> = q.forward(&splits.val.x).unwrap().to_vec2().unwrap();
        let diff = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let scale = a.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        assert!(diff > 0.0 && diff < 0.05 * scale, "{diff} of {scale}");
        // At 2 bits the change is large: the quantizers really are in the forward pass.
        let two: BTreeMap<String, u32> = bits.keys().map(|l| (l.clone(), 2)).collect();
        let q2 = quantize_activations(&graph, &two, &splits.train, &Default::default()).unwrap();
        let c: Vec<Vec<f32>> = q2.forward(&splits.val.x).unwrap().to_vec2().unwrap();
        let diff2 = a
            .iter()
            .flatten()
            .zip(c.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff2 > 4.0 * diff, "{diff2} vs {diff}");
    }
}
