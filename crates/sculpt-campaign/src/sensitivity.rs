//! Post-training sensitivity analysis (the `sensitivity` command): each layer alone is
//! pruned (structured), sparsified (unstructured, by magnitude) or quantized over a list of
//! values, with every other layer untouched and no fine-tuning, and the validation accuracy
//! it loses is measured. This is what NNI and Distiller call sensitivity analysis: it says
//! which layers tolerate compression, so a campaign can stop searching ratios and widths
//! that cost too much (see `[search] sensitivity` in the campaign file). The table goes to
//! `OUT/sensitivity.parquet`, the figure to `OUT/sensitivity.svg`.

use std::path::{Path, PathBuf};

use sculpt_compress::{CompressionPlan, Knob, ParamValue};
use sculpt_nn::{Graph, Splits};
use sculpt_store::SensitivityRow;
use serde::Serialize;

use crate::error::{CampaignError, Result};

/// Structured prune ratios swept by default: 0.1 to 0.9 in steps of 0.1.
pub const DEFAULT_PRUNE_RATIOS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
/// Weight bit widths swept by default: the integer codes.
pub const DEFAULT_BITS: &[u32] = &[2, 3, 4, 5, 6, 7, 8];
/// Unstructured sparsities swept by default.
pub const DEFAULT_SPARSITY: &[f64] = &[0.5, 0.7, 0.8, 0.9, 0.95];

/// The figure `sensitivity` draws beside the table.
pub const SENSITIVITY_FIGURE: &str = "sensitivity.svg";

/// Settings of one sensitivity sweep. An empty list skips that knob.
#[derive(Debug, Clone)]
pub struct SensitivityRun<'a> {
    /// Model directory (model.toml + model.safetensors).
    pub model: &'a Path,
    pub data: &'a str,
    pub out: &'a Path,
    /// Seed of the data split: the model's own, so validation is data it has not seen.
    pub seed: u64,
    pub prune_ratios: Vec<f64>,
    pub bits: Vec<u32>,
    pub sparsity: Vec<f64>,
}

impl<'a> SensitivityRun<'a> {
    /// A run with the default lists and seed 42.
    pub fn new(model: &'a Path, data: &'a str, out: &'a Path) -> Self {
        SensitivityRun {
            model,
            data,
            out,
            seed: 42,
            prune_ratios: DEFAULT_PRUNE_RATIOS.to_vec(),
            bits: DEFAULT_BITS.to_vec(),
            sparsity: DEFAULT_SPARSITY.to_vec(),
        }
    }
}

/// What a sweep measured and where it wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SensitivityTable {
    pub model: String,
    pub data: String,
    pub seed: u64,
    /// Validation accuracy of the unmodified model; every row's drop is against it.
    pub accuracy: f64,
    pub size_bytes: u64,
    pub params: u64,
    /// One row per (layer, knob, value), layers in model order, knobs in the order prune,
    /// sparsity, bits, values ascending.
    pub rows: Vec<SensitivityRow>,
    pub table: PathBuf,
    pub figure: PathBuf,
}

/// Checks one value of a swept knob (`prune`, `sparsity` or `bits`) against the knob
/// table; the message says what is allowed. The CLI parses its lists with this.
pub fn check_value(knob: &str, value: f64) -> std::result::Result<f64, String> {
    let k = sculpt_compress::knob(knob).ok_or_else(|| format!("unknown knob `{knob}`"))?;
    let checked = k.check(&ParamValue::Float(value))?;
    Ok(checked.as_f64().unwrap_or(value))
}

/// The values of one knob: checked, ascending, without repeats.
fn values(knob: &str, list: &[f64]) -> Result<Vec<f64>> {
    let mut checked = list
        .iter()
        .map(|&v| {
            check_value(knob, v)
                .map_err(|m| CampaignError::Invalid(format!("{knob} value {v}: {m}")))
        })
        .collect::<Result<Vec<f64>>>()?;
    checked.sort_by(f64::total_cmp);
    checked.dedup();
    Ok(checked)
}

/// A sweep, loaded and planned but not yet run: [`SensitivitySweep::len`] says how many
/// rows it will measure (for a progress bar) before [`SensitivitySweep::run`] measures them.
pub struct SensitivitySweep {
    model: Graph,
    splits: Splits,
    data: String,
    seed: u64,
    out: PathBuf,
    points: Vec<(String, &'static Knob, f64)>,
}

impl SensitivitySweep {
    /// Checks the lists, loads the model and the data, and lists every (layer, knob,
    /// value) to measure. Pruning is swept over the layers structured pruning can address
    /// (not the output layer); sparsity and bits over every weight layer.
    pub fn new(run: &SensitivityRun) -> Result<Self> {
        let lists = [
            ("prune", values("prune", &run.prune_ratios)?),
            ("sparsity", values("sparsity", &run.sparsity)?),
            (
                "bits",
                values(
                    "bits",
                    &run.bits.iter().map(|&b| b as f64).collect::<Vec<f64>>(),
                )?,
            ),
        ];
        if lists.iter().all(|(_, v)| v.is_empty()) {
            return Err(CampaignError::Invalid(
                "nothing to sweep: every list of values (prune ratios, sparsities, bits) is empty"
                    .into(),
            ));
        }
        let model = sculpt_nn::io::load(run.model)?;
        let splits = sculpt_data::load(run.data, run.seed)?;
        let (splits, data_warning) = crate::teacher::fit_data(run.model, &model.spec, splits)?;
        if let Some(w) = data_warning {
            tracing::warn!("{w}");
        }
        let mut points = Vec::new();
        // Layer by layer, so the table reads (and a progress bar advances) one layer at a
        // time; within a layer, knob by knob in the order above.
        let layers = model.spec.weight_layers();
        for layer in &layers {
            for (name, list) in &lists {
                let knob = sculpt_compress::knob(name)
                    .ok_or_else(|| CampaignError::Invalid(format!("unknown knob `{name}`")))?;
                if !(knob.layers)(&model).contains(layer) {
                    continue;
                }
                points.extend(list.iter().map(|&v| (layer.clone(), knob, v)));
            }
        }
        Ok(SensitivitySweep {
            model,
            splits,
            data: run.data.to_string(),
            seed: run.seed,
            out: run.out.to_path_buf(),
            points,
        })
    }

    /// How many rows the sweep measures.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Measures every row, reporting each to `on_row` as it is measured, then writes
    /// `sensitivity.parquet` and `sensitivity.svg` to the output directory.
    pub fn run(self, on_row: &mut dyn FnMut(&SensitivityRow)) -> Result<SensitivityTable> {
        let accuracy = sculpt_nn::accuracy(&self.model, &self.splits.val)?;
        let mut rows = Vec::with_capacity(self.points.len());
        for (layer, knob, value) in &self.points {
            let mut plan = CompressionPlan::default();
            let value_checked = knob
                .check(&ParamValue::Float(*value))
                .map_err(|m| CampaignError::Invalid(format!("{} value {value}: {m}", knob.name)))?;
            (knob.set)(&mut plan, layer, &value_checked);
            // Calibration data is only read by Taylor importance and activation
            // quantization, neither of which the default plan uses; it is passed so that a
            // plan default that does use it still works.
            let compressed =
                sculpt_compress::compress(&self.model, &plan, Some(&self.splits.train))?;
            let layer_accuracy = sculpt_nn::accuracy(&compressed, &self.splits.val)?;
            let accounting = sculpt_compress::account(&compressed)?;
            let row = SensitivityRow {
                layer: layer.clone(),
                knob: knob.name.to_string(),
                value: *value,
                accuracy: layer_accuracy,
                accuracy_drop: accuracy - layer_accuracy,
                size_bytes: accounting.size_bytes,
                params: accounting.params,
            };
            on_row(&row);
            rows.push(row);
        }
        std::fs::create_dir_all(&self.out).map_err(|e| CampaignError::Io {
            path: self.out.clone(),
            cause: e,
        })?;
        let table = self.out.join(sculpt_store::SENSITIVITY_FILE);
        sculpt_store::write_sensitivity(&table, &rows)?;
        let figure = self.out.join(SENSITIVITY_FIGURE);
        let name = self.model.spec.name.clone();
        sculpt_report::plot_sensitivity(
            &figure,
            &format!(
                "{name} on {}: validation accuracy {:.2}%, each layer alone, no fine-tuning",
                self.data,
                accuracy * 100.0
            ),
            &rows,
            None,
        )?;
        Ok(SensitivityTable {
            model: name,
            data: self.data,
            seed: self.seed,
            accuracy,
            size_bytes: sculpt_compress::model_size_bytes(&self.model)?,
            params: self.model.num_params() as u64,
            rows,
            table,
            figure,
        })
    }
}

/// Sweeps every layer of `run.model` alone over the run's prune ratios, sparsities and bit
/// widths and writes the table and the figure; see [`SensitivitySweep`].
pub fn sensitivity(
    run: &SensitivityRun,
    on_row: &mut dyn FnMut(&SensitivityRow),
) -> Result<SensitivityTable> {
    SensitivitySweep::new(run)?.run(on_row)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digits MLP (64-256-128-10) trained briefly into `dir`.
    fn trained_mlp(dir: &Path) {
        let splits = sculpt_data::load("digits", 42).unwrap();
        let config = sculpt_nn::TrainConfig {
            epochs: 15,
            batch_size: 64,
            learning_rate: 2e-3,
            weight_decay: 1e-4,
            seed: 42,
            ..sculpt_nn::TrainConfig::default()
        };
        crate::teacher::train_model("mlp", &splits, &config, dir, false, None, &mut |_| {})
            .unwrap();
    }

    #[test]
    fn sweep_measures_every_layer_alone_and_writes_table_and_figure() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("mlp");
        trained_mlp(&model);
        let out = tmp.path().join("sens");
        let run = SensitivityRun::new(&model, "digits", &out);
        let mut reported = Vec::new();
        let table = sensitivity(&run, &mut |r| reported.push(r.clone())).unwrap();
        assert_eq!(table.rows, reported);
        assert!(table.accuracy > 0.9, "{}", table.accuracy);

        // fc1 and fc2 are prunable (the output layer is not); all three take sparsity and
        // bits.
        let count = |knob: &str, layer: &str| {
            table
                .rows
                .iter()
                .filter(|r| r.knob == knob && r.layer == layer)
                .count()
        };
        assert_eq!(table.rows.len(), 2 * 9 + 3 * 5 + 3 * 7);
        for layer in ["fc1", "fc2", "fc3"] {
            let prunable = if layer == "fc3" { 0 } else { 9 };
            assert_eq!(count("prune", layer), prunable, "{layer}");
            assert_eq!(count("sparsity", layer), 5, "{layer}");
            assert_eq!(count("bits", layer), 7, "{layer}");
        }
        let at = |knob: &str, layer: &str, value: f64| {
            table
                .rows
                .iter()
                .find(|r| r.knob == knob && r.layer == layer && r.value == value)
                .unwrap()
        };
        // One validation sample of accuracy: this MLP tolerates ternary (2-bit) weights in
        // any one layer so well that a layer may gain a sample by chance.
        let sample = 1.0 / sculpt_data::load("digits", 42).unwrap().val.len() as f64;
        let mut total_two = 0.0;
        let mut total_eight = 0.0;
        for layer in ["fc1", "fc2", "fc3"] {
            let (two, eight) = (at("bits", layer, 2.0), at("bits", layer, 8.0));
            assert!(
                two.accuracy_drop >= eight.accuracy_drop - sample - 1e-12,
                "{layer}: 2 bits {two:?}, 8 bits {eight:?}"
            );
            total_two += two.accuracy_drop;
            total_eight += eight.accuracy_drop;
            assert!(
                eight.accuracy_drop.abs() <= 0.01,
                "{layer} at 8 bits: {eight:?}"
            );
            assert!((two.accuracy + two.accuracy_drop - table.accuracy).abs() < 1e-12);
            // Fewer bits, fewer bytes; pruning also removes parameters.
            assert!(two.size_bytes < eight.size_bytes && eight.size_bytes < table.size_bytes);
            assert_eq!(two.params, table.params);
        }
        assert!(total_two > total_eight, "{total_two} <= {total_eight}");
        // Pruning 90% of fc1's 256 neurons leaves 26 (the ratio rounds to whole neurons).
        let pruned = at("prune", "fc1", 0.9);
        assert!(pruned.params < table.params / 4, "{pruned:?}");
        // Keeping 4 bits of fc1 alone loses far less than pruning 90% of its neurons.
        assert!(at("bits", "fc1", 4.0).accuracy_drop < pruned.accuracy_drop);

        // The parquet table reads back as the rows, and the figure is drawn.
        assert_eq!(table.table, out.join(sculpt_store::SENSITIVITY_FILE));
        assert_eq!(
            sculpt_store::read_sensitivity(&table.table).unwrap(),
            table.rows
        );
        let svg = std::fs::read_to_string(out.join(SENSITIVITY_FIGURE)).unwrap();
        assert!(svg.contains("bits, one layer at a time"));

        // Deterministic: the same run measures the same table.
        let again = SensitivityRun {
            prune_ratios: vec![0.5],
            bits: vec![3],
            sparsity: vec![0.9],
            ..run.clone()
        };
        let second = sensitivity(&again, &mut |_| {}).unwrap();
        assert_eq!(second.rows.len(), 2 + 3 + 3);
        for row in &second.rows {
            assert_eq!(row, at(&row.knob, &row.layer, row.value));
        }
    }

    #[test]
    fn bad_values_are_named_before_anything_is_loaded() {
        let missing = Path::new("no/such/model");
        let out = Path::new("no/such/out");
        let base = SensitivityRun::new(missing, "digits", out);
        for (run, needle) in [
            (
                SensitivityRun {
                    prune_ratios: vec![0.5, 1.2],
                    ..base.clone()
                },
                "prune value 1.2: must lie in [0, 1)",
            ),
            (
                SensitivityRun {
                    bits: vec![4, 9],
                    ..base.clone()
                },
                "bits value 9: 9 is not allowed",
            ),
            (
                SensitivityRun {
                    sparsity: vec![-0.1],
                    ..base.clone()
                },
                "sparsity value -0.1",
            ),
            (
                SensitivityRun {
                    prune_ratios: vec![],
                    bits: vec![],
                    sparsity: vec![],
                    ..base.clone()
                },
                "nothing to sweep",
            ),
            (base.clone(), "no/such/model"),
        ] {
            let err = sensitivity(&run, &mut |_| {}).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert_eq!(check_value("bits", 4.0), Ok(4.0));
        assert!(check_value("prune", 1.0).is_err());
    }
}
