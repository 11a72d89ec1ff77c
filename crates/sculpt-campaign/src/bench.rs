//! The tabular compression benchmark and the strategy benchmark.
//!
//! `sculpt bench-table` evaluates every configuration of a small discrete compression
//! space of a trained model (a prune ratio for each prunable layer and a bit width for
//! each weight layer) with post-training compression only, no fine-tuning, and stores one
//! row per configuration: one column per dimension and the objectives `accuracy`
//! (validation split, scored by sculpt's runtime), `latency_ms` and `size_bytes`. A
//! strategy run against the table only looks values up, so every run is exact and quick,
//! and other tools (the Optuna peer in `benches/`) read the same file.
//!
//! `sculpt bench-search` runs strategies on the table or on ZDT1-3 and DTLZ2 for several
//! seeds and reports the fraction of the true front's hypervolume found after 50, 100 and
//! 200 evaluations. On the table, the objectives are the error (1 − accuracy) and the
//! latency (or the size), each scaled to [0, 1] by the table's own range, against the
//! reference point (1.1, 1.1).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use sculpt_compress::{CompressionPlan, LayerPlan};
use sculpt_latency::LatencyModel;
use sculpt_search::bench::{hypervolume_curve, quantile, run, Dtlz2, Evaluation, Problem, Zdt};
use sculpt_search::{AutoSettings, Dimension, GpSettings, Nsga2Settings, SearchSpace, Strategy};
use serde::Serialize;

use crate::error::{CampaignError, Result};

/// What `bench-table` enumerates.
#[derive(Debug, Clone)]
pub struct TableSettings {
    pub prune: Vec<f64>,
    pub bits: Vec<u32>,
    /// The latency model: a device profile's roofline, or a lookup table.
    pub profile: String,
    pub lut: Option<PathBuf>,
    pub batch: usize,
}

impl Default for TableSettings {
    fn default() -> Self {
        TableSettings {
            prune: vec![0.0, 0.25, 0.5, 0.75],
            bits: vec![2, 4, 8, 32],
            profile: "epyc-zen4-1core".into(),
            lut: None,
            batch: 1,
        }
    }
}

/// What a finished table holds.
#[derive(Debug, Clone, Serialize)]
pub struct TableSummary {
    pub rows: usize,
    pub dimensions: Vec<String>,
    pub latency_model: String,
    pub seconds: f64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CampaignError + '_ {
    move |e| CampaignError::Io {
        path: path.to_path_buf(),
        cause: e,
    }
}

/// Refuses an output path whose folder does not exist, before any work is done.
pub fn check_output(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => return Ok(()),
    };
    if !parent.is_dir() {
        return Err(CampaignError::Invalid(format!(
            "{}: the folder {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    if path.is_dir() {
        return Err(CampaignError::Invalid(format!(
            "{} is a folder, not a file",
            path.display()
        )));
    }
    Ok(())
}

fn table_error(path: &Path, message: impl std::fmt::Display) -> CampaignError {
    CampaignError::Invalid(format!("{}: {message}", path.display()))
}

/// Evaluates every configuration and writes the table as parquet (through a temporary
/// file and a rename, so a failed run leaves no partial table). `progress(done, total)`.
pub fn bench_table(
    model: &Path,
    data: &str,
    settings: &TableSettings,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<TableSummary> {
    let started = std::time::Instant::now();
    if settings.prune.is_empty() || settings.bits.is_empty() {
        return Err(CampaignError::Invalid(
            "--prune and --bits need at least one value each".into(),
        ));
    }
    if let Some(bad) = settings.prune.iter().find(|p| !(0.0..1.0).contains(*p)) {
        return Err(CampaignError::Invalid(format!(
            "prune ratio {bad} is outside [0, 1)"
        )));
    }
    for (list, what) in [
        (
            settings
                .prune
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            "--prune",
        ),
        (
            settings.bits.iter().map(|b| b.to_string()).collect(),
            "--bits",
        ),
    ] {
        if let Some(v) = list
            .iter()
            .enumerate()
            .find(|(i, v)| list[..*i].contains(v))
            .map(|(_, v)| v)
        {
            return Err(CampaignError::Invalid(format!(
                "{what} lists {v} twice; every configuration must appear once"
            )));
        }
    }
    check_output(out)?;
    let teacher = sculpt_nn::io::load(model)?;
    if !teacher.spec.weight_quant.is_empty() || !teacher.spec.sparse.is_empty() {
        return Err(CampaignError::Invalid(format!(
            "{} is already compressed (quantized or sparse weights); bench-table compresses a float teacher, so its rows would be mislabelled",
            model.display()
        )));
    }
    let seed = crate::standalone::model_seed(model, None);
    let splits = sculpt_data::load(data, seed)?;
    let (splits, data_warning) = crate::teacher::fit_data(model, &teacher.spec, splits)?;
    if let Some(w) = data_warning {
        tracing::warn!("{w}");
    }
    let latency: Box<dyn LatencyModel> = match &settings.lut {
        Some(path) => Box::new(sculpt_latency::Lut::load(path)?),
        None => Box::new(sculpt_latency::Roofline {
            profile: sculpt_latency::DeviceProfile::load(&settings.profile)?,
            batch: settings.batch,
        }),
    };
    let prunable = sculpt_compress::prunable_layers(&teacher);
    let weight_layers = teacher.spec.weight_layers();
    // Dimensions: prune of each prunable layer, then bits of each weight layer.
    let mut dims: Vec<(String, Vec<f64>)> = prunable
        .iter()
        .map(|l| (format!("prune_{l}"), settings.prune.clone()))
        .collect();
    dims.extend(weight_layers.iter().map(|l| {
        (
            format!("bits_{l}"),
            settings.bits.iter().map(|b| *b as f64).collect(),
        )
    }));
    let total: usize = dims.iter().map(|(_, v)| v.len()).product();
    if total > 1_000_000 {
        return Err(CampaignError::Invalid(format!(
            "the space has {total} configurations; the table is meant to be exhaustive and small (at most 1,000,000)"
        )));
    }
    let mut columns: Vec<Vec<f64>> = vec![Vec::with_capacity(total); dims.len()];
    let (mut accuracy, mut latency_ms, mut size_bytes) = (
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
    );
    let mut index = vec![0usize; dims.len()];
    for done in 0..total {
        let mut plan = CompressionPlan::default();
        for layer in &weight_layers {
            plan.layers.insert(layer.clone(), LayerPlan::default());
        }
        for (d, (name, values)) in dims.iter().enumerate() {
            let v = values[index[d]];
            columns[d].push(v);
            if let Some(layer) = name.strip_prefix("prune_") {
                plan.layers.entry(layer.to_string()).or_default().prune = v;
            } else if let Some(layer) = name.strip_prefix("bits_") {
                plan.layers.entry(layer.to_string()).or_default().bits = v as u32;
            }
        }
        let graph = sculpt_compress::compress(&teacher, &plan, Some(&splits.train))?;
        accuracy.push(crate::executor::runtime_accuracy(&graph, &splits.val)?);
        latency_ms.push(latency.predict_ms(&graph)?);
        size_bytes.push(sculpt_compress::account(&graph)?.size_bytes);
        progress(done + 1, total);
        // The next configuration, last dimension fastest.
        for d in (0..dims.len()).rev() {
            index[d] += 1;
            if index[d] < dims[d].1.len() {
                break;
            }
            index[d] = 0;
        }
    }
    let mut cols: Vec<Column> = dims
        .iter()
        .zip(columns)
        .map(|((name, _), v)| Column::new(name.as_str().into(), v))
        .collect();
    cols.push(Column::new("accuracy".into(), accuracy));
    cols.push(Column::new("latency_ms".into(), latency_ms));
    cols.push(Column::new("size_bytes".into(), size_bytes));
    let mut frame = DataFrame::new(total, cols).map_err(|e| table_error(out, e))?;
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = File::create(&tmp).map_err(io(&tmp))?;
    ParquetWriter::new(file)
        .finish(&mut frame)
        .map_err(|e| table_error(out, e))?;
    std::fs::rename(&tmp, out).map_err(io(out))?;
    Ok(TableSummary {
        rows: total,
        dimensions: dims.into_iter().map(|(n, _)| n).collect(),
        latency_model: latency.describe(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Which second objective a table benchmark minimises beside the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableObjective {
    Latency,
    Size,
}

/// A table as a benchmark problem. A dimension whose values are evenly spaced is ordinal
/// (searched as an integer index into its sorted values); any other is categorical.
pub struct TableProblem {
    dims: Vec<(String, Vec<f64>, bool)>,
    /// Objectives (error, second) by the configuration's value indices.
    rows: HashMap<Vec<usize>, [f64; 2]>,
    lo: [f64; 2],
    hi: [f64; 2],
    true_hv: f64,
    second: &'static str,
}

const OBJECTIVE_COLUMNS: [&str; 3] = ["accuracy", "latency_ms", "size_bytes"];

impl TableProblem {
    pub fn load(path: &Path, objective: TableObjective) -> Result<TableProblem> {
        let file = File::open(path).map_err(io(path))?;
        let frame = ParquetReader::new(file)
            .finish()
            .map_err(|e| table_error(path, format!("not a readable parquet table: {e}")))?;
        let floats = |name: &str| -> Result<Vec<f64>> {
            let c = frame.column(name).map_err(|_| {
                table_error(
                    path,
                    format!("no column `{name}`; a benchmark table has one column per dimension and accuracy, latency_ms, size_bytes"),
                )
            })?;
            let c = c
                .cast(&DataType::Float64)
                .map_err(|e| table_error(path, format!("column `{name}`: {e}")))?;
            let v: Vec<Option<f64>> = c
                .f64()
                .map_err(|e| table_error(path, format!("column `{name}`: {e}")))?
                .iter()
                .collect();
            v.into_iter()
                .enumerate()
                .map(|(i, x)| match x {
                    Some(x) if x.is_finite() => Ok(x),
                    _ => Err(table_error(
                        path,
                        format!("column `{name}` row {i} is empty or not finite"),
                    )),
                })
                .collect()
        };
        let accuracy = floats("accuracy")?;
        let second_name = match objective {
            TableObjective::Latency => "latency_ms",
            TableObjective::Size => "size_bytes",
        };
        let second = floats(second_name)?;
        let names: Vec<String> = frame
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            // pandas' index columns are not dimensions.
            .filter(|n| !OBJECTIVE_COLUMNS.contains(&n.as_str()) && !n.starts_with("__"))
            .collect();
        if accuracy.is_empty() {
            return Err(table_error(path, "the table has no rows"));
        }
        if names.is_empty() {
            return Err(table_error(path, "the table has no dimension columns"));
        }
        let mut dims = Vec::new();
        let mut values = Vec::new();
        for name in &names {
            let column = floats(name)?;
            let mut distinct = column.clone();
            distinct.sort_by(f64::total_cmp);
            distinct.dedup();
            let ordinal = distinct.len() < 3 || {
                let gap = distinct[1] - distinct[0];
                distinct
                    .windows(2)
                    .all(|w| ((w[1] - w[0]) - gap).abs() <= 1e-9 * gap.abs().max(1.0))
            };
            values.push(column);
            dims.push((name.clone(), distinct, ordinal));
        }
        let n = accuracy.len();
        let mut rows = HashMap::with_capacity(n);
        for i in 0..n {
            let key: Vec<usize> = dims
                .iter()
                .zip(&values)
                .map(|((_, distinct, _), col)| {
                    distinct
                        .iter()
                        .position(|v| *v == col[i])
                        .unwrap_or_default()
                })
                .collect();
            rows.insert(key, [1.0 - accuracy[i], second[i]]);
        }
        let expected: usize = dims.iter().map(|(_, d, _)| d.len()).product();
        if n != rows.len() {
            return Err(table_error(
                path,
                format!(
                    "the table has {n} rows but {} distinct configurations; every configuration must appear once",
                    rows.len()
                ),
            ));
        }
        if rows.len() != expected {
            return Err(table_error(
                path,
                format!(
                    "the table has {} distinct configurations but its dimensions span {expected}; it must hold every combination once",
                    rows.len()
                ),
            ));
        }
        let mut lo = [f64::INFINITY; 2];
        let mut hi = [f64::NEG_INFINITY; 2];
        for o in rows.values() {
            for k in 0..2 {
                lo[k] = lo[k].min(o[k]);
                hi[k] = hi[k].max(o[k]);
            }
        }
        let mut problem = TableProblem {
            dims,
            rows,
            lo,
            hi,
            true_hv: 1.0,
            second: second_name,
        };
        let all: Vec<Vec<f64>> = problem
            .rows
            .values()
            .map(|o| problem.normalise(o))
            .collect();
        problem.true_hv = sculpt_search::hypervolume(&all, &[1.1, 1.1]).unwrap_or(1.0);
        Ok(problem)
    }

    /// The column names of the dimensions and the objectives, for traces.
    pub fn dimension_names(&self) -> Vec<String> {
        self.dims.iter().map(|(n, _, _)| n.clone()).collect()
    }

    pub fn configurations(&self) -> usize {
        self.rows.len()
    }

    /// A point's dimension values (ordinal indices resolved).
    pub fn values(&self, point: &[f64]) -> Vec<f64> {
        self.dims
            .iter()
            .zip(point)
            .map(|((_, distinct, ordinal), &x)| {
                if *ordinal {
                    distinct[(x.round().max(0.0) as usize).min(distinct.len() - 1)]
                } else {
                    x
                }
            })
            .collect()
    }
}

impl Problem for TableProblem {
    fn name(&self) -> String {
        "table".into()
    }

    fn space(&self) -> SearchSpace {
        SearchSpace::new(
            self.dims
                .iter()
                .map(|(name, distinct, ordinal)| {
                    if *ordinal {
                        Dimension::int(name, 0, distinct.len() as i64 - 1)
                    } else {
                        Dimension::categorical(name, distinct.clone())
                    }
                })
                .collect(),
        )
        .expect("a table's dimensions are valid")
    }

    fn evaluate(&self, point: &[f64]) -> Vec<f64> {
        let key: Vec<usize> = self
            .dims
            .iter()
            .zip(point)
            .map(|((_, distinct, ordinal), &x)| {
                if *ordinal {
                    (x.round().max(0.0) as usize).min(distinct.len() - 1)
                } else {
                    distinct.iter().position(|v| *v == x).unwrap_or_default()
                }
            })
            .collect();
        self.rows
            .get(&key)
            .map(|o| o.to_vec())
            .unwrap_or_else(|| vec![f64::INFINITY; 2])
    }

    fn normalise(&self, o: &[f64]) -> Vec<f64> {
        (0..2)
            .map(|k| {
                let r = self.hi[k] - self.lo[k];
                if r > 0.0 {
                    (o[k] - self.lo[k]) / r
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn reference(&self) -> Vec<f64> {
        vec![1.1, 1.1]
    }

    fn true_hypervolume(&self) -> f64 {
        self.true_hv
    }
}

/// A strategy by name, for benchmarks: `random`, `nsga2`, `gp` or `auto`; `auto` hands
/// over to NSGA-II after `gp_trials` trials (None: its default).
pub fn strategy(
    name: &str,
    seed: u64,
    population: usize,
    gp_trials: Option<u64>,
) -> Result<Box<dyn Strategy>> {
    // The population is checked for every strategy, as the command line always passes one.
    Nsga2Settings::default().with_population_size(population)?;
    let auto = AutoSettings {
        gp_trials: gp_trials.unwrap_or(AutoSettings::default().gp_trials),
        ..AutoSettings::default()
    };
    let kind = crate::config::StrategyKind::parse(name, population).ok_or_else(|| {
        CampaignError::Invalid(format!(
            "unknown strategy `{name}` (known: {})",
            crate::config::STRATEGY_NAMES
        ))
    })?;
    kind.build(seed, GpSettings::default(), auto)
}

/// A benchmark problem by name: `table` (needs the table), `zdt1`, `zdt2`, `zdt3`,
/// `dtlz2`.
pub fn problem(
    name: &str,
    table: Option<&Path>,
    objective: TableObjective,
) -> Result<Box<dyn Problem>> {
    Ok(match name {
        "table" => match table {
            Some(path) => Box::new(TableProblem::load(path, objective)?),
            None => {
                return Err(CampaignError::Invalid(
                    "--problem table needs --table FILE (from `sculpt bench-table`)".into(),
                ))
            }
        },
        "zdt1" => Box::new(Zdt { kind: 1, n: 30 }),
        "zdt2" => Box::new(Zdt { kind: 2, n: 30 }),
        "zdt3" => Box::new(Zdt { kind: 3, n: 30 }),
        "dtlz2" => Box::new(Dtlz2 { n: 12 }),
        other => {
            return Err(CampaignError::Invalid(format!(
                "unknown problem `{other}` (known: table, zdt1, zdt2, zdt3, dtlz2)"
            )))
        }
    })
}

/// One strategy's results over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyResult {
    pub strategy: String,
    pub problem: String,
    pub budget: usize,
    pub seeds: usize,
    /// Checkpoint → median fraction of the true hypervolume.
    pub hv_fraction_at: std::collections::BTreeMap<usize, f64>,
    /// Checkpoint → [lower quartile, upper quartile].
    pub quartiles_at: std::collections::BTreeMap<usize, [f64; 2]>,
    /// Median wall time of one run, seconds.
    pub seconds_median: f64,
    /// The true front's hypervolume the fractions are of.
    pub true_hypervolume: f64,
    /// Trials `auto` gave the GP (auto only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gp_trials: Option<u64>,
    /// Per seed, the fraction after every evaluation.
    #[serde(skip)]
    pub curves: Vec<Vec<f64>>,
    #[serde(skip)]
    pub runs: Vec<Vec<Evaluation>>,
}

/// The checkpoints a budget reports: 50, 100, 200 and the budget itself, as far as it goes.
pub fn checkpoints(budget: usize) -> Vec<usize> {
    let mut c: Vec<usize> = [50, 100, 200]
        .into_iter()
        .filter(|&k| k <= budget)
        .collect();
    if !c.contains(&budget) {
        c.push(budget);
    }
    c
}

/// Runs one strategy for `seeds` seeds (0, 1, …) on a problem.
pub fn bench_strategy(
    name: &str,
    problem: &dyn Problem,
    budget: usize,
    seeds: usize,
    population: usize,
    gp_trials: Option<u64>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<StrategyResult> {
    if budget == 0 || seeds == 0 {
        return Err(CampaignError::Invalid(
            "--budget and --seeds must be at least 1".into(),
        ));
    }
    let mut curves = Vec::with_capacity(seeds);
    let mut runs = Vec::with_capacity(seeds);
    let mut seconds = Vec::with_capacity(seeds);
    for seed in 0..seeds {
        let mut s = strategy(name, seed as u64, population, gp_trials)?;
        let started = std::time::Instant::now();
        let evaluations = run(s.as_mut(), problem, budget)?;
        seconds.push(started.elapsed().as_secs_f64());
        curves.push(hypervolume_curve(problem, &evaluations));
        runs.push(evaluations);
        progress(seed + 1, seeds);
    }
    let mut hv_fraction_at = std::collections::BTreeMap::new();
    let mut quartiles_at = std::collections::BTreeMap::new();
    for k in checkpoints(budget) {
        let at: Vec<f64> = curves.iter().map(|c| c[k - 1]).collect();
        hv_fraction_at.insert(k, quantile(&at, 0.5));
        quartiles_at.insert(k, [quantile(&at, 0.25), quantile(&at, 0.75)]);
    }
    Ok(StrategyResult {
        strategy: name.to_string(),
        problem: problem.name(),
        budget,
        seeds,
        hv_fraction_at,
        quartiles_at,
        seconds_median: quantile(&seconds, 0.5),
        true_hypervolume: problem.true_hypervolume(),
        gp_trials: (name == "auto").then(|| gp_trials.unwrap_or(AutoSettings::default().gp_trials)),
        curves,
        runs,
    })
}

/// Writes every evaluated point of every strategy and seed as parquet: `strategy`,
/// `seed`, `eval_index`, `proposed_by`, one column per dimension (values), and the
/// objectives (`error` and `latency_ms` or `size_bytes` for a table; `f0`, `f1`[, `f2`]
/// otherwise).
pub fn write_trace(
    path: &Path,
    problem: &dyn Problem,
    table: Option<&TableProblem>,
    results: &[StrategyResult],
) -> Result<()> {
    let names: Vec<String> = match table {
        Some(t) => t.dimension_names(),
        None => problem
            .space()
            .dims()
            .iter()
            .map(|d| d.name.clone())
            .collect(),
    };
    let n_objectives = problem.reference().len();
    let objective_names: Vec<String> = match table {
        Some(t) => vec!["error".into(), t.second.into()],
        None => (0..n_objectives).map(|k| format!("f{k}")).collect(),
    };
    let (mut strategy, mut seed, mut index, mut by) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut dims: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut objs: Vec<Vec<f64>> = vec![Vec::new(); n_objectives];
    for r in results {
        for (s, run) in r.runs.iter().enumerate() {
            for (i, e) in run.iter().enumerate() {
                strategy.push(r.strategy.clone());
                seed.push(s as u64);
                index.push(i as u64);
                by.push(e.strategy.clone());
                let values = match table {
                    Some(t) => t.values(&e.point),
                    None => e.point.clone(),
                };
                for (d, v) in values.iter().enumerate() {
                    dims[d].push(*v);
                }
                for (k, column) in objs.iter_mut().enumerate() {
                    column.push(e.objectives.get(k).copied().unwrap_or(f64::NAN));
                }
            }
        }
    }
    let len = strategy.len();
    let mut cols = vec![
        Column::new("strategy".into(), strategy),
        Column::new("seed".into(), seed),
        Column::new("eval_index".into(), index),
        Column::new("proposed_by".into(), by),
    ];
    for (name, v) in names.iter().zip(dims) {
        cols.push(Column::new(name.as_str().into(), v));
    }
    for (name, v) in objective_names.iter().zip(objs) {
        cols.push(Column::new(name.as_str().into(), v));
    }
    let mut frame = DataFrame::new(len, cols).map_err(|e| table_error(path, e))?;
    let file = File::create(path).map_err(io(path))?;
    ParquetWriter::new(file)
        .finish(&mut frame)
        .map_err(|e| table_error(path, e))?;
    Ok(())
}

/// The figure of hypervolume fraction against evaluations, one line per strategy.
pub fn plot(path: &Path, problem: &dyn Problem, results: &[StrategyResult]) -> Result<()> {
    let series: Vec<(String, Vec<sculpt_report::plot::CurveRow>)> = results
        .iter()
        .map(|r| {
            let len = r.curves.first().map_or(0, Vec::len);
            let rows = (0..len)
                .map(|i| {
                    let at: Vec<f64> = r.curves.iter().map(|c| c[i]).collect();
                    (
                        (i + 1) as f64,
                        quantile(&at, 0.5),
                        quantile(&at, 0.25),
                        quantile(&at, 0.75),
                    )
                })
                .collect();
            (
                format!(
                    "{} (median of {} seeds, quartiles faint)",
                    r.strategy, r.seeds
                ),
                rows,
            )
        })
        .collect();
    sculpt_report::plot_hypervolume_curves(
        path,
        &format!("{}: hypervolume found against evaluations", problem.name()),
        &series,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_table(path: &Path) {
        // Two ordinal dimensions and one categorical, every combination, with objectives
        // from a formula.
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        let (mut acc, mut lat, mut size) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..4 {
            for j in 0..4 {
                for bits in [2.0, 4.0, 8.0, 32.0] {
                    let p1 = i as f64 * 0.25;
                    let p2 = j as f64 * 0.25;
                    a.push(p1);
                    b.push(p2);
                    c.push(bits);
                    let q: f64 = bits;
                    acc.push(0.98 - 0.2 * p1 * p1 - 0.1 * p2 - 0.3 / (q * q));
                    lat.push(1.0 - 0.4 * p1 - 0.3 * p2 + 0.01 * q);
                    size.push((1000.0 * (1.0 - p1) * q) as u64);
                }
            }
        }
        let mut frame = DataFrame::new(
            64,
            vec![
                Column::new("prune_fc1".into(), a),
                Column::new("prune_fc2".into(), b),
                Column::new("bits_fc1".into(), c),
                Column::new("accuracy".into(), acc),
                Column::new("latency_ms".into(), lat),
                Column::new("size_bytes".into(), size),
            ],
        )
        .unwrap();
        ParquetWriter::new(File::create(path).unwrap())
            .finish(&mut frame)
            .unwrap();
    }

    #[test]
    fn a_table_problem_reads_its_dimensions_and_exhaustion_finds_the_whole_front() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_table(&path);
        let problem = TableProblem::load(&path, TableObjective::Latency).unwrap();
        assert_eq!(problem.configurations(), 64);
        let space = problem.space();
        // Evenly spaced prune ratios are ordinal; bit widths categorical.
        assert!(matches!(
            space.dims()[0].domain,
            sculpt_search::Domain::Int { low: 0, high: 3 }
        ));
        assert!(matches!(
            space.dims()[2].domain,
            sculpt_search::Domain::Categorical { .. }
        ));
        assert_eq!(problem.values(&[2.0, 1.0, 8.0]), vec![0.5, 0.25, 8.0]);
        let o = problem.evaluate(&[2.0, 1.0, 8.0]);
        assert!((o[0] - (1.0 - (0.98 - 0.2 * 0.25 - 0.025 - 0.3 / 64.0))).abs() < 1e-12);
        // Every configuration evaluated: exactly the whole hypervolume.
        let mut all = Vec::new();
        for i in 0..4 {
            for j in 0..4 {
                for bits in [2.0, 4.0, 8.0, 32.0] {
                    let point = vec![i as f64, j as f64, bits];
                    let objectives = problem.evaluate(&point);
                    all.push(Evaluation {
                        point,
                        objectives,
                        strategy: "grid".into(),
                    });
                }
            }
        }
        let curve = hypervolume_curve(&problem, &all);
        assert!((curve.last().unwrap() - 1.0).abs() < 1e-12, "{curve:?}");
        // A short random run finds less.
        let r = bench_strategy("random", &problem, 10, 2, 50, None, &mut |_, _| {}).unwrap();
        assert!(r.hv_fraction_at[&10] < 1.0 && r.hv_fraction_at[&10] > 0.0);
        let trace = dir.path().join("trace.parquet");
        write_trace(&trace, &problem, Some(&problem), &[r]).unwrap();
        let back = ParquetReader::new(File::open(&trace).unwrap())
            .finish()
            .unwrap();
        assert_eq!(back.height(), 20);
        assert!(back.column("latency_ms").is_ok() && back.column("prune_fc1").is_ok());
    }

    #[test]
    fn bad_tables_and_names_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let e = TableProblem::load(&dir.path().join("none.parquet"), TableObjective::Latency)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("none.parquet"), "{e}");
        let path = dir.path().join("bad.parquet");
        let mut frame = DataFrame::new(
            2,
            vec![
                Column::new("x".into(), vec![0.0, 1.0]),
                Column::new("accuracy".into(), vec![0.5, 0.6]),
            ],
        )
        .unwrap();
        ParquetWriter::new(File::create(&path).unwrap())
            .finish(&mut frame)
            .unwrap();
        let e = TableProblem::load(&path, TableObjective::Latency)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("latency_ms"), "{e}");
        // A configuration twice (the later row would silently win) and no rows at all.
        let write = |path: &Path, x: Vec<f64>| {
            let n = x.len();
            let mut frame = DataFrame::new(
                n,
                vec![
                    Column::new("x".into(), x),
                    Column::new("accuracy".into(), vec![0.5; n]),
                    Column::new("latency_ms".into(), vec![1.0; n]),
                    Column::new("size_bytes".into(), vec![10u64; n]),
                ],
            )
            .unwrap();
            ParquetWriter::new(File::create(path).unwrap())
                .finish(&mut frame)
                .unwrap();
        };
        write(&path, vec![0.0, 1.0, 1.0]);
        let e = TableProblem::load(&path, TableObjective::Latency)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("3 rows but 2 distinct"), "{e}");
        write(&path, vec![]);
        let e = TableProblem::load(&path, TableObjective::Latency)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no rows"), "{e}");
        assert!(strategy("tpe", 0, 50, None)
            .err()
            .unwrap()
            .to_string()
            .contains("tpe"));
        assert!(problem("zdt9", None, TableObjective::Latency).is_err());
        assert!(problem("table", None, TableObjective::Latency)
            .err()
            .unwrap()
            .to_string()
            .contains("--table"));
    }
}
