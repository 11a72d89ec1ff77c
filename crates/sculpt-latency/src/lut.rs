//! The lookup-table predictor, as nn-Meter and APQ build theirs: every kind of step the
//! runtime executes is timed on this host over a grid of shapes and precisions, once;
//! a graph's latency is then the sum of its steps' interpolated entries plus a per-graph
//! overhead fitted on whole-graph measurements.
//!
//! The grids, per (kind, precision):
//! - `linear`: output features `n` × input features `k`, factor-2 steps from 8 to 2048;
//! - `conv1`, `conv3`, `conv5` (by kernel width, no padding): output positions (up to
//!   256, and 1024 at batches up to 4; the cost is affine in them, so larger maps
//!   extrapolate) ×
//!   output channels per group × reduction length per group (`k = width²·c`); `conv7`
//!   and other widths use the nearest profiled width; `conv_grouped` (depthwise 3×3
//!   probes): output positions × groups, its entry covering every group;
//! - element-wise steps (`input`, pooling, `batch_norm`, `relu`, `add`): elements read.
//!
//! A graph's prediction is `Σ_g scale_g · Σ entries of group g + overhead`, over the
//! [`SCALE_GROUPS`], calibrated on random plans of the zoo's networks (or of one model):
//! each group's scale is the median ratio of its steps' times inside those graphs to their
//! entries, and one common factor and the overhead are then fitted (least squares on
//! relative error, both non-negative) to the whole graphs' times.
//!
//! Shared hosts change speed for minutes at a time, so two fixed reference networks (see
//! [`HostSpeed`]: LeNet-5 for convolutions and element-wise steps, LeNet-300-100 for Linear
//! steps) are timed every few probes and around every calibration graph, and each time is
//! scaled to the median of its reference over the profile (stored as the `reference`
//! rows): the table predicts the host at its typical speed. [`Lut::predict_at`] predicts
//! it at the speed its references show now.
//!
//! An entry is looked up by multilinear interpolation of time in shape (exact for a cost
//! affine in each dimension, as a matrix product's is), extrapolated the same way above the
//! grid and clamped to its edge below it. A table holds one batch
//! size and one thread count; it is stored as parquet with the columns
//! `kind, precision, positions, n, k, ms, batch, threads, host, isa`. Rows of kind
//! `overhead`, `scale` and `error_pct` hold the fit and its largest relative error on the
//! calibration graphs, and `reference` the host's reference times (precision `linear` for the
//! Linear one).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rand::SeedableRng;
use sculpt_nn::graph::INPUT;
use sculpt_nn::{Graph, GraphSpec, Node, Op, WeightQuant};
use sculpt_runtime::{Options, Runtime, StepShape};

use crate::error::{LatencyError, Result};
use crate::measure::{host_speed, HostSpeed};
use crate::model::LatencyModel;

/// One timed step.
#[derive(Debug, Clone, PartialEq)]
pub struct LutEntry {
    pub kind: String,
    pub precision: String,
    pub positions: f64,
    pub n: f64,
    pub k: f64,
    pub ms: f64,
}

/// A profiled table for one batch size and thread count on one host.
#[derive(Debug, Clone)]
pub struct Lut {
    pub batch: usize,
    pub threads: usize,
    pub host: String,
    pub isa: String,
    /// A graph's prediction is `Σ_g scales[g] · Σ entries of group g + overhead_ms`, the
    /// scales (one per [`SCALE_GROUPS`]) and the overhead fitted on whole-graph
    /// measurements of random plans.
    pub scales: [f64; SCALE_GROUPS.len()],
    pub overhead_ms: f64,
    /// The largest relative error (in percent) of the table on its calibration graphs.
    pub error_pct: f64,
    /// The host's reference time ([`crate::measure::reference_ms`]) that every entry is
    /// normalised to: probes timed while the host ran slower are scaled back to this speed.
    /// 0 in tables from before it was recorded. Linear steps have their own reference,
    /// `linear_reference_ms` (see [`HostSpeed`]).
    pub reference_ms: f64,
    /// The Linear reference (the zoo's LeNet-300-100) that Linear entries are normalised
    /// to; 0 in tables from before it was recorded, whose Linear steps follow
    /// `reference_ms`.
    pub linear_reference_ms: f64,
    pub entries: Vec<LutEntry>,
    /// What the scales were fitted on: [`CALIBRATED_ON_ZOO`], or the model named to
    /// [`recalibrate`].
    pub calibrated_on: String,
    /// The file it was read from, for messages.
    pub path: Option<PathBuf>,
    grids: BTreeMap<(String, String), Grid>,
}

/// The entries of one (kind, precision) as a full grid over the features.
#[derive(Debug, Clone)]
struct Grid {
    axes: [Vec<f64>; 3],
    /// Milliseconds by grid index, row-major over the axes.
    values: Vec<f64>,
}

impl Grid {
    fn build(entries: &[&LutEntry]) -> std::result::Result<Grid, String> {
        let feature = |e: &LutEntry, a: usize| match a {
            0 => e.positions,
            1 => e.n,
            _ => e.k,
        };
        let mut axes: [Vec<f64>; 3] = Default::default();
        for (a, axis) in axes.iter_mut().enumerate() {
            let mut v: Vec<f64> = entries.iter().map(|e| feature(e, a)).collect();
            v.sort_by(f64::total_cmp);
            v.dedup_by(|x, y| (*x - *y).abs() < 1e-9);
            *axis = v;
        }
        let len = axes.iter().map(Vec::len).product();
        let mut values = vec![f64::NAN; len];
        for e in entries {
            if !(e.ms > 0.0 && e.ms.is_finite()) {
                return Err(format!(
                    "entry {} {} ({}, {}, {}) has time {} ms; times must be positive",
                    e.kind, e.precision, e.positions, e.n, e.k, e.ms
                ));
            }
            let mut at = 0;
            for (a, axis) in axes.iter().enumerate() {
                let x = feature(e, a);
                let i = axis.iter().position(|&v| (v - x).abs() < 1e-9).unwrap_or(0);
                at = at * axis.len() + i;
            }
            values[at] = e.ms;
        }
        if values.iter().any(|v| v.is_nan()) {
            return Err(format!(
                "the entries of {} {} do not fill a grid ({} of {} points)",
                entries[0].kind,
                entries[0].precision,
                entries.len(),
                len
            ));
        }
        Ok(Grid { axes, values })
    }

    /// Interpolated (or extrapolated) milliseconds at the given features.
    fn at(&self, features: [f64; 3]) -> f64 {
        // Per axis: the cell's lower index and the position within it (outside [0, 1]
        // past the edges, which extrapolates).
        let mut cells = [(0usize, 0f64); 3];
        for (a, axis) in self.axes.iter().enumerate() {
            if axis.len() == 1 {
                continue;
            }
            // Below the grid a step costs what its smallest entry does (kernels work in
            // whole panels and groups); above it, the cell's linear trend extrapolates.
            let x = features[a].max(axis[0]);
            let i = axis
                .windows(2)
                .position(|w| x < w[1])
                .unwrap_or(axis.len() - 2)
                .min(axis.len() - 2);
            cells[a] = (i, (x - axis[i]) / (axis[i + 1] - axis[i]));
        }
        let mut sum = 0.0;
        for corner in 0..8usize {
            let mut weight = 1.0;
            let mut at = 0;
            let mut valid = true;
            for (a, axis) in self.axes.iter().enumerate() {
                let up = (corner >> a) & 1 == 1;
                if axis.len() == 1 {
                    if up {
                        valid = false;
                    }
                    at *= 1;
                    continue;
                }
                let (i, t) = cells[a];
                weight *= if up { t } else { 1.0 - t };
                at = at * axis.len() + i + up as usize;
            }
            if valid {
                sum += weight * self.values[at];
            }
        }
        // Linear extrapolation can undershoot far past the grid; a step never costs less
        // than the grid's cheapest entry.
        sum.max(self.values.iter().copied().fold(f64::INFINITY, f64::min))
    }
}

/// What to profile.
#[derive(Debug, Clone, Copy)]
pub struct ProfileSettings {
    pub batch: usize,
    pub threads: usize,
    /// Milliseconds of timing per grid point (at least 5 runs).
    pub budget_ms: f64,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        ProfileSettings {
            batch: 1,
            threads: 1,
            budget_ms: 60.0,
        }
    }
}

const PRECISIONS: [(&str, u32); 3] = [("f32", 32), ("int8", 8), ("int4", 4)];
const ELEMENTWISE: [&str; 8] = [
    "input",
    "input_copy",
    "max_pool",
    "avg_pool",
    "global_avg_pool",
    "batch_norm",
    "relu",
    "add",
];

fn node(name: &str, op: Op, inputs: &[&str]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
    }
}

fn spec(input_shape: Vec<usize>, mut nodes: Vec<Node>, last: &str, features: usize) -> GraphSpec {
    nodes.push(node("flat", Op::Flatten, &[last]));
    nodes.push(node(
        "head",
        Op::Linear {
            in_features: features,
            out_features: 2,
            bias: true,
        },
        &["flat"],
    ));
    GraphSpec {
        name: "probe".into(),
        input_shape,
        num_classes: 2,
        nodes,
        output: "head".into(),
        weight_quant: Default::default(),
        sparse: Default::default(),
        act_quant: Default::default(),
        preprocessing: None,
    }
}

/// A graph whose second step is the one to time, with its weight quantized to `bits`.
pub fn probe(kind: &str, bits: u32, positions: usize, n: usize, k: usize) -> Result<Graph> {
    let side = (positions as f64).sqrt().round() as usize;
    let (c, hw) = (8usize, (positions / 8).max(4));
    let h = (hw as f64).sqrt().ceil() as usize;
    let s = match kind {
        "linear" => spec(
            vec![k],
            vec![node(
                "layer",
                Op::Linear {
                    in_features: k,
                    out_features: n,
                    bias: true,
                },
                &[INPUT],
            )],
            "layer",
            n,
        ),
        "conv1" | "conv3" | "conv5" => {
            let width: usize = kind[4..].parse().unwrap_or(3);
            let cin = k / (width * width);
            // No padding: every patch lies inside the image, as in most of a real layer.
            let input = side + width - 1;
            spec(
                vec![cin, input, input],
                vec![node(
                    "layer",
                    Op::Conv2d {
                        in_channels: cin,
                        out_channels: n,
                        kernel_size: width,
                        stride: 1,
                        padding: 0,
                        groups: 1,
                        bias: true,
                    },
                    &[INPUT],
                )],
                "layer",
                n * side * side,
            )
        }
        "conv_grouped" => spec(
            // Depthwise 3×3: `n` channels, each its own group.
            vec![n, side + 2, side + 2],
            vec![node(
                "layer",
                Op::Conv2d {
                    in_channels: n,
                    out_channels: n,
                    kernel_size: 3,
                    stride: 1,
                    padding: 0,
                    groups: n,
                    bias: true,
                },
                &[INPUT],
            )],
            "layer",
            n * side * side,
        ),
        "input_copy" => spec(
            vec![positions],
            vec![node("layer", Op::Relu, &[INPUT])],
            "layer",
            positions,
        ),
        "input" | "relu" => spec(
            vec![c, h, h],
            vec![node("layer", Op::Relu, &[INPUT])],
            "layer",
            c * h * h,
        ),
        "max_pool" | "avg_pool" => {
            let op = if kind == "max_pool" {
                Op::MaxPool2d {
                    kernel_size: 2,
                    stride: None,
                }
            } else {
                Op::AvgPool2d {
                    kernel_size: 2,
                    stride: None,
                }
            };
            spec(
                vec![c, h, h],
                vec![node("layer", op, &[INPUT])],
                "layer",
                c * (h / 2) * (h / 2),
            )
        }
        "global_avg_pool" => spec(
            vec![c, h, h],
            vec![node("layer", Op::GlobalAvgPool, &[INPUT])],
            "layer",
            c,
        ),
        "batch_norm" => spec(
            vec![c, h, h],
            vec![node(
                "layer",
                Op::BatchNorm2d {
                    num_features: c,
                    eps: 1e-5,
                    momentum: 0.1,
                },
                &[INPUT],
            )],
            "layer",
            c * h * h,
        ),
        "add" => spec(
            vec![c, h, h],
            vec![node("layer", Op::Add, &[INPUT, INPUT])],
            "layer",
            c * h * h,
        ),
        other => {
            return Err(LatencyError::Table {
                path: PathBuf::from("<profile>"),
                message: format!("no probe for step kind `{other}`"),
            })
        }
    };
    let graph = sculpt_nn::zoo::init(s, 1)?;
    if bits >= 32 {
        return Ok(graph);
    }
    let schemes = [(
        "layer.weight".to_string(),
        WeightQuant::symmetric_per_channel(bits),
    )]
    .into_iter()
    .collect();
    Ok(sculpt_compress::quantize(&graph, &schemes)?)
}

/// The grid of (positions, n, k) profiled for a kind.
/// The grid of a kind. At small batches a convolution's rows are its output positions,
/// and a first layer's 24×24 to 32×32 maps lie past 256, where the kernels' costs are not
/// yet affine in them: those batches also probe 1024 positions.
fn grid(kind: &str, batch: usize) -> Vec<(usize, usize, usize)> {
    let pow2 = |from: u32, to: u32| (from..=to).map(|e| 1usize << e).collect::<Vec<_>>();
    match kind {
        // Powers of two and the midpoints 3·2^i: a Linear layer's time bends where its
        // weights outgrow a cache level, and interpolation across a whole octave put
        // LeNet-300-100's pruned layers 10% off either way.
        "linear" => {
            let axis: Vec<usize> = pow2(3, 11)
                .into_iter()
                .flat_map(|p| [p, p * 3 / 2])
                .filter(|&v| v <= 2048)
                .collect();
            axis.iter()
                .flat_map(|&n| axis.iter().map(move |&k| (1, n, k)))
                .collect()
        }
        "conv1" | "conv3" | "conv5" => {
            let width: usize = kind[4..].parse().unwrap_or(3);
            let mut g = Vec::new();
            let positions: &[usize] = if batch <= 4 {
                &[1, 4, 16, 64, 256, 1024]
            } else {
                &[1, 4, 16, 64, 256]
            };
            for &p in positions {
                for n in [8usize, 16, 32, 64, 128] {
                    for c in [1usize, 3, 9, 27, 81] {
                        g.push((p, n, width * width * c));
                    }
                }
            }
            g
        }
        "conv_grouped" => {
            let mut g = Vec::new();
            for p in [1usize, 4, 16, 64, 256] {
                for groups in [4usize, 16, 64, 256] {
                    g.push((p, groups, 9));
                }
            }
            g
        }
        _ => pow2(6, 17).into_iter().map(|p| (p, 1, 1)).collect(),
    }
}

/// Times one step of a probe graph: the median over as many runs as fit the budget. Also
/// returns the step's shape and every step's time.
fn time_step(
    graph: &Graph,
    kind: &str,
    settings: &ProfileSettings,
) -> Result<(f64, Option<StepShape>, Vec<f64>)> {
    let mut rt = Runtime::compile(
        graph,
        &Options {
            max_batch: settings.batch,
            threads: settings.threads,
            isa: None,
            sparse: Default::default(),
        },
    )?;
    let shapes = rt.step_shapes();
    let index = shapes.iter().position(|s| s.kind == kind);
    let first = rt.step_times(settings.batch, 1)?;
    let total: f64 = first.iter().map(|t| t.1).sum::<f64>().max(1e-6);
    let runs = ((settings.budget_ms / total) as usize).clamp(3, 400);
    let times = rt.step_times(settings.batch, runs)?;
    let all = times.iter().map(|t| t.1).collect();
    let i = index.unwrap_or(0);
    Ok((times[i].1, index.map(|i| shapes[i].clone()), all))
}

/// Profiles every step kind and precision on this host, then fits the scales and the
/// per-graph overhead on random plans of the zoo's networks, or of `calibrate_on` (a name
/// and a model; see [`recalibrate`]). `progress(done, total)` reports each grid point and
/// each calibration graph.
pub fn profile(
    settings: &ProfileSettings,
    calibrate_on: Option<(&str, &Graph)>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Lut> {
    let (calibrated_on, models) = match calibrate_on {
        Some((name, model)) => (name.to_string(), vec![(name.to_string(), model.clone())]),
        None => (
            CALIBRATED_ON_ZOO.to_string(),
            CALIBRATION
                .iter()
                .map(|(model, shape)| {
                    Ok((
                        model.to_string(),
                        sculpt_nn::zoo::build(model, shape, 10, 1)?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    // (kind, precision, weight bits, (positions, n, k)).
    type Job = (String, &'static str, u32, (usize, usize, usize));
    let mut jobs: Vec<Job> = Vec::new();
    for kind in ["linear", "conv1", "conv3", "conv5", "conv_grouped"] {
        for (precision, bits) in PRECISIONS {
            for point in grid(kind, settings.batch) {
                jobs.push((kind.to_string(), precision, bits, point));
            }
        }
    }
    for kind in ELEMENTWISE {
        for point in grid(kind, settings.batch) {
            jobs.push((kind.to_string(), "f32", 32, point));
        }
    }
    let total = jobs.len() + models.len() * CALIBRATION_PLANS;
    let mut entries = Vec::with_capacity(jobs.len());
    // The host's speed, measured every few probes; each probe is later scaled by the
    // reference of its moment and kind (see `HostSpeed`).
    let mut references: Vec<HostSpeed> = Vec::new();
    let mut reference_of = Vec::with_capacity(jobs.len());
    for (i, (kind, precision, bits, (p, n, k))) in jobs.iter().enumerate() {
        if i % REFERENCE_EVERY == 0 {
            references.push(host_speed(settings.batch, settings.threads)?);
        }
        reference_of.push(references.len() - 1);
        let graph = probe(kind, *bits, *p, *n, *k)?;
        // The probe's actual shape (pooling and square images round the request).
        let (ms, shape, _) = time_step(&graph, kind, settings)?;
        let shape = shape.expect("the probe has its step");
        entries.push(LutEntry {
            kind: kind.clone(),
            precision: precision.to_string(),
            positions: shape.positions as f64,
            // A grouped convolution's entry covers all its groups, keyed by their count.
            n: if kind == "conv_grouped" {
                shape.groups as f64
            } else {
                shape.n as f64
            },
            k: shape.k as f64,
            ms: ms.max(1e-6),
        });
        progress(i + 1, total);
    }
    // Every probe at the host's typical speed: the median of the references taken while
    // profiling. (Its quickest moment, used before, put every prediction below what the
    // host usually measures: on a shared 2-vCPU VM by 5 to 10%.)
    let typical = median_speed(&references);
    for (e, r) in entries.iter_mut().zip(&reference_of) {
        let r = &references[*r];
        e.ms *= if e.kind == "linear" {
            typical.linear_ms / r.linear_ms
        } else {
            typical.conv_ms / r.conv_ms
        };
    }
    let isa = sculpt_runtime::Isa::detect().name().to_string();
    let mut lut = Lut::new(
        settings.batch,
        settings.threads,
        cpu_name(),
        isa,
        0.0,
        0.0,
        entries,
    )
    .map_err(|message| LatencyError::Table {
        path: PathBuf::from("<profile>"),
        message,
    })?;
    lut.reference_ms = typical.conv_ms;
    lut.linear_reference_ms = typical.linear_ms;
    let probes = jobs.len();
    calibrate(&mut lut, &models, &calibrated_on, &mut |done, _| {
        progress(probes + done, total)
    })?;
    Ok(lut)
}

/// What a table's scales were fitted on when `profile` made it.
pub const CALIBRATED_ON_ZOO: &str = "the zoo networks";

/// The same table with its scales and overhead fitted anew on random plans of one model
/// (the one a campaign will search): whole-graph measurements of `CALIBRATION_PLANS` plans,
/// the first the model itself, drawn from the calibration seed (`latency validate` draws
/// its plans from another). `name` is how the table will name what it was calibrated on.
/// The host's speed now is brought to the table's by its reference network.
pub fn recalibrate(
    lut: &Lut,
    name: &str,
    model: &Graph,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Lut> {
    let mut out = lut.clone();
    calibrate(
        &mut out,
        &[(name.to_string(), model.clone())],
        name,
        progress,
    )?;
    out.path = None;
    Ok(out)
}

/// Fits `lut`'s scales and overhead on random plans of `models`, in two stages. Each plan
/// is compiled once, then timed whole and step by step (each step in its place in the
/// graph, so with the caches as the graph leaves them) in `CALIBRATION_PASSES` blocks, as
/// `latency validate` times its plans:
/// 1. each group's scale is the median, over the plans that have the group, of its steps'
///    in-graph time against their entries: how the group's steps run inside real graphs
///    against their probes alone (weights evicted by other layers, inputs still warm);
/// 2. then `measured ≈ α · Σ_g scale_g · Σ entries_g + overhead`, fitted by least squares
///    on relative error with α, overhead ≥ 0: what a whole run adds to its steps.
///
/// Fitting every group's scale on whole-graph times alone (as before) was ill-posed: with
/// one network's plans, the Linear scale and the overhead traded off, and LeNet-5's table
/// came out with its Linear steps at 1.9× their in-graph times, over-predicting plans with
/// a large fc1 by 10 to 15%. And one block per plan, against the median reference of the
/// whole calibration, left the table off by ±5% from one calibration to the next on a
/// shared host. The table then names `calibrated_on` as what it was fitted on. Progress
/// counts blocks measured.
fn calibrate(
    lut: &mut Lut,
    models: &[(String, Graph)],
    calibrated_on: &str,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let (batch, threads) = (lut.batch, lut.threads);
    let mut calibration = Calibration::new(lut, models)?;
    // As `latency validate` measures: each plan in one block per pass over all the plans,
    // so that its blocks fall in different phases of a shared host, each block brought to
    // the table's typical speed by the references timed before and after it.
    let count = calibration.len();
    let total = count * CALIBRATION_PASSES;
    let mut before = host_speed(batch, threads)?;
    for pass in 0..CALIBRATION_PASSES {
        for i in 0..count {
            let block = calibration.time_block(i)?;
            let after = host_speed(batch, threads)?;
            calibration.add_block(lut, i, block, &before.mean(&after));
            before = after;
            progress(pass * count + i + 1, total);
        }
    }
    calibration.fit(lut, calibrated_on);
    Ok(())
}

/// A block of a calibration plan: its whole-graph median and its steps' in-graph medians
/// summed by [`SCALE_GROUPS`], as timed.
pub struct CalibrationBlock {
    pub whole_ms: f64,
    pub steps_ms: [f64; SCALE_GROUPS.len()],
}

/// Per group of [`SCALE_GROUPS`].
type Groups = [f64; SCALE_GROUPS.len()];

/// A calibration plan: its runtime, its table entries by group, and its blocks (whole
/// graph, steps by group) brought to the table's typical speed.
struct CalibrationPlan {
    runtime: Runtime,
    entries: Groups,
    blocks: Vec<(f64, Groups)>,
}

/// The random plans a table is calibrated on, compiled once, and their timed blocks. A
/// caller times each plan in blocks ([`Calibration::time_block`]), gives each with the
/// host's speed around it ([`Calibration::add_block`]), and then fits the table
/// ([`Calibration::fit`]). `latency validate --calibrate` interleaves these blocks with its
/// own plans' so that the calibration and the validation see the same phases of the host.
pub struct Calibration {
    batch: usize,
    plans: Vec<CalibrationPlan>,
}

impl Calibration {
    /// `CALIBRATION_PLANS` plans of each model (the model itself first), drawn from the
    /// calibration seed (`latency validate` draws its own plans from another), compiled
    /// for the table's batch and threads.
    pub fn new(lut: &Lut, models: &[(String, Graph)]) -> Result<Calibration> {
        if lut.reference_ms.is_nan() || lut.reference_ms <= 0.0 {
            return Err(LatencyError::Table {
                path: lut.path.clone().unwrap_or_else(|| PathBuf::from("<lut>")),
                message: "the table records no reference time (it predates them); profile \
                          again before calibrating it on a model"
                    .into(),
            });
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(CALIBRATION_SEED);
        let mut plans = Vec::new();
        for (_, teacher) in models {
            for i in 0..CALIBRATION_PLANS {
                let graph = if i == 0 {
                    teacher.clone()
                } else {
                    sculpt_compress::compress(teacher, &random_plan(teacher, &mut rng), None)?
                };
                let rt = Runtime::compile(
                    &graph,
                    &Options {
                        max_batch: lut.batch,
                        threads: lut.threads,
                        isa: None,
                        sparse: Default::default(),
                    },
                )?;
                let mut entries = [0.0; SCALE_GROUPS.len()];
                for shape in rt.step_shapes() {
                    entries[scale_group(shape.kind, shape.precision)] += lut
                        .step_ms(&shape)
                        .ok_or_else(|| missing_entry(lut, &shape))?;
                }
                plans.push(CalibrationPlan {
                    runtime: rt,
                    entries,
                    blocks: Vec::new(),
                });
            }
        }
        Ok(Calibration {
            batch: lut.batch,
            plans,
        })
    }

    /// The number of plans.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// Whether there are no plans (never, for at least one model).
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// Times plan `i` once: whole, then step by step, each over the same number of runs
    /// (200 at batches up to 8, else 20).
    pub fn time_block(&mut self, i: usize) -> Result<CalibrationBlock> {
        let batch = self.batch;
        let runs = if batch > 8 { 20 } else { 200 };
        let rt = &mut self.plans[i].runtime;
        let whole_ms = sculpt_runtime::measure(rt, batch, 10, runs)?.median_ms;
        let mut steps_ms = [0.0; SCALE_GROUPS.len()];
        let times = rt.step_times(batch, runs)?;
        for (shape, (_, ms)) in rt.step_shapes().iter().zip(&times) {
            steps_ms[scale_group(shape.kind, shape.precision)] += ms;
        }
        Ok(CalibrationBlock { whole_ms, steps_ms })
    }

    /// Records a block of plan `i`, timed with the host at `now` (its references around
    /// the block), brought to `lut`'s typical speed: each group by its reference's drift,
    /// the whole graph by its share of Linear steps.
    pub fn add_block(&mut self, lut: &Lut, i: usize, block: CalibrationBlock, now: &HostSpeed) {
        let [conv, linear] = lut
            .drift(now)
            .expect("Calibration::new checked the reference");
        let entries = &self.plans[i].entries;
        let sum: f64 = entries.iter().sum();
        let share = if sum > 0.0 {
            (entries[scale_group("linear", "f32")] + entries[scale_group("linear", "int8")]) / sum
        } else {
            0.0
        };
        let mut steps = block.steps_ms;
        for (g, t) in steps.iter_mut().enumerate() {
            *t /= if SCALE_GROUPS[g].starts_with("linear") {
                linear
            } else {
                conv
            };
        }
        let whole = block.whole_ms / (share * linear + (1.0 - share) * conv);
        self.plans[i].blocks.push((whole, steps));
    }

    /// Fits `lut`'s scales and overhead on the blocks recorded (see [`calibrate`]) and
    /// names `calibrated_on` as what they were fitted on. A plan's times are the medians
    /// over its blocks; plans without blocks are left out.
    pub fn fit(&self, lut: &mut Lut, calibrated_on: &str) {
        // (whole graph measured, its steps measured by group, its entries by group).
        let samples: Vec<(f64, [f64; SCALE_GROUPS.len()], [f64; SCALE_GROUPS.len()])> = self
            .plans
            .iter()
            .filter(|p| !p.blocks.is_empty())
            .map(
                |CalibrationPlan {
                     entries, blocks: b, ..
                 }| {
                    let steps = std::array::from_fn(|g| median(b.iter().map(|x| x.1[g]).collect()));
                    (median(b.iter().map(|x| x.0).collect()), steps, *entries)
                },
            )
            .collect();
        // 1. Each group's steps in graphs against their entries: the median over the plans
        //    that have the group of their ratios (one plan's cache interplay, or a noisy
        //    moment, does not set the group's scale); a group no plan has keeps 1.
        let mut scales = [1.0; SCALE_GROUPS.len()];
        for (g, scale) in scales.iter_mut().enumerate() {
            let ratios: Vec<f64> = samples
                .iter()
                .filter(|s| s.2[g] > 0.0 && s.1[g] > 0.0)
                .map(|s| s.1[g] / s.2[g])
                .collect();
            if !ratios.is_empty() {
                *scale = median(ratios);
            }
        }
        // 2. The whole runs against their scaled steps.
        let pairs: Vec<(f64, f64)> = samples
            .iter()
            .map(|(m, _, entries)| (*m, combine(&scales, entries)))
            .collect();
        let (alpha, overhead) = fit_affine(&pairs);
        scales.iter_mut().for_each(|s| *s *= alpha);
        lut.scales = scales;
        lut.overhead_ms = overhead;
        lut.error_pct = samples
            .iter()
            .map(|(m, _, g)| ((combine(&scales, g) + overhead - m) / m).abs() * 100.0)
            .fold(0.0, f64::max);
        lut.calibrated_on = calibrated_on.to_string();
    }
}

fn missing_entry(lut: &Lut, s: &StepShape) -> LatencyError {
    LatencyError::Table {
        path: lut.path.clone().unwrap_or_else(|| PathBuf::from("<lut>")),
        message: format!(
            "the table has no entries for {} steps in {}; profile again with this version of sculpt",
            s.kind, s.precision
        ),
    }
}

/// `(α, b)` minimising `Σ ((α·p + b) / m − 1)²` over (measured, predicted) pairs with
/// `α, b ≥ 0`: least squares on relative error, solved in closed form (both free, else
/// the better of each alone).
fn fit_affine(pairs: &[(f64, f64)]) -> (f64, f64) {
    // Rows (p/m, 1/m), target 1.
    let (mut xx, mut xy, mut yy, mut x1, mut y1) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (m, p) in pairs {
        let (x, y) = (p / m, 1.0 / m);
        xx += x * x;
        xy += x * y;
        yy += y * y;
        x1 += x;
        y1 += y;
    }
    let objective = |a: f64, b: f64| -> f64 {
        pairs
            .iter()
            .map(|(m, p)| ((a * p + b) / m - 1.0).powi(2))
            .sum()
    };
    let det = xx * yy - xy * xy;
    if det.abs() > 1e-12 * (xx * yy).max(f64::MIN_POSITIVE) {
        let (a, b) = ((x1 * yy - y1 * xy) / det, (y1 * xx - x1 * xy) / det);
        if a >= 0.0 && b >= 0.0 {
            return (a, b);
        }
    }
    let only_scale = (if xx > 0.0 { x1 / xx } else { 1.0 }, 0.0);
    let only_overhead = (0.0, if yy > 0.0 { y1 / yy } else { 0.0 });
    if pairs.is_empty() || objective(only_scale.0, 0.0) <= objective(0.0, only_overhead.1) {
        only_scale
    } else {
        only_overhead
    }
}

/// The upper median (`v[n / 2]` sorted), as the runtime's measurements take it.
/// Each reference's median over a phase of timings.
fn median_speed(speeds: &[HostSpeed]) -> HostSpeed {
    HostSpeed {
        conv_ms: median(speeds.iter().map(|r| r.conv_ms).collect()),
        linear_ms: median(speeds.iter().map(|r| r.linear_ms).collect()),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The step kinds that share one fitted scale: what single-step probes miss (weights
/// evicted from the caches by other layers, a step's inputs still warm from the last) differs
/// between matrix steps in f32 and in integers, Linear and each kind of convolution (by
/// kernel width, whose im2col differs, and grouped), and element-wise steps.
pub const SCALE_GROUPS: [&str; 11] = [
    "linear_f32",
    "linear_int",
    "conv1_f32",
    "conv1_int",
    "conv3_f32",
    "conv3_int",
    "conv5_f32",
    "conv5_int",
    "conv_grouped_f32",
    "conv_grouped_int",
    "elementwise",
];

/// The index of the element-wise group in [`SCALE_GROUPS`].
pub const ELEMENTWISE_GROUP: usize = SCALE_GROUPS.len() - 1;

/// The scale group of a step. Convolutions wider than 5 share the group of width 5.
fn scale_group(kind: &str, precision: &str) -> usize {
    let int = usize::from(precision.starts_with("int"));
    match kind {
        "linear" => int,
        "conv1" => 2 + int,
        "conv3" => 4 + int,
        "conv_grouped" => 8 + int,
        k if k.starts_with("conv") => 6 + int,
        _ => ELEMENTWISE_GROUP,
    }
}

/// The groups a scale row of a table names: one of [`SCALE_GROUPS`], or (in tables from
/// before convolutions were grouped by kind) `conv_f32` or `conv_int` for every kind.
fn named_groups(name: &str) -> Option<Vec<usize>> {
    if let Some(g) = SCALE_GROUPS.iter().position(|g| *g == name) {
        return Some(vec![g]);
    }
    match name {
        "conv_f32" => Some(vec![2, 4, 6, 8]),
        "conv_int" => Some(vec![3, 5, 7, 9]),
        _ => None,
    }
}

fn combine(scales: &[f64; SCALE_GROUPS.len()], groups: &[f64; SCALE_GROUPS.len()]) -> f64 {
    scales.iter().zip(groups).map(|(a, g)| a * g).sum()
}

/// A random plan: each prunable layer loses a random share of its channels (or none), and
/// each weight layer gets f32, 8-bit or 4-bit weights. Calibration and validation draw
/// their plans this way (from different seeds).
pub fn random_plan(graph: &Graph, rng: &mut impl rand::Rng) -> sculpt_compress::CompressionPlan {
    let prunable = sculpt_compress::prunable_layers(graph);
    let mut plan = sculpt_compress::CompressionPlan::default();
    for layer in graph.spec.weight_layers() {
        let prune = if prunable.contains(&layer) && rng.random_bool(0.7) {
            (rng.random_range(0.0..0.75f64) * 100.0).round() / 100.0
        } else {
            0.0
        };
        let bits = [32u32, 8, 4][rng.random_range(0..3)];
        plan.layers.insert(
            layer,
            sculpt_compress::LayerPlan {
                prune,
                bits,
                ..Default::default()
            },
        );
    }
    plan
}

/// Plans per calibration network (the first is the network itself), and their seed;
/// `sculpt latency validate` draws its plans from other seeds.
const CALIBRATION_PLANS: usize = 24;
/// Probes between two measurements of the host's reference speed.
const REFERENCE_EVERY: usize = 8;
const CALIBRATION_SEED: u64 = 0xCA11B;
/// Blocks per calibration plan, one per pass over the plans (as `latency validate`'s
/// `--passes`).
const CALIBRATION_PASSES: usize = 3;

/// The networks the per-graph overhead is fitted on.
const CALIBRATION: [(&str, &[usize]); 4] = [
    ("lenet-300-100", &[784]),
    ("lenet-5", &[1, 28, 28]),
    ("resnet-8", &[3, 32, 32]),
    ("mobilenet-s", &[3, 32, 32]),
];

/// This machine's CPU model, as `/proc/cpuinfo` names it (the architecture elsewhere):
/// what tables, benchmarks and run records say they were measured on.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

impl Lut {
    /// A table from its entries; fails when a kind's entries do not fill a grid.
    pub fn new(
        batch: usize,
        threads: usize,
        host: String,
        isa: String,
        overhead_ms: f64,
        error_pct: f64,
        entries: Vec<LutEntry>,
    ) -> std::result::Result<Lut, String> {
        let mut groups: BTreeMap<(String, String), Vec<&LutEntry>> = BTreeMap::new();
        for e in &entries {
            groups
                .entry((e.kind.clone(), e.precision.clone()))
                .or_default()
                .push(e);
        }
        let grids = groups
            .into_iter()
            .map(|(key, es)| Ok((key, Grid::build(&es)?)))
            .collect::<std::result::Result<_, String>>()?;
        Ok(Lut {
            batch,
            threads,
            host,
            isa,
            scales: [1.0; SCALE_GROUPS.len()],
            overhead_ms,
            error_pct,
            reference_ms: 0.0,
            linear_reference_ms: 0.0,
            entries,
            calibrated_on: CALIBRATED_ON_ZOO.to_string(),
            path: None,
            grids,
        })
    }

    /// How much slower than the table's references the host ran at `now`: for
    /// convolutional and element-wise steps, and for Linear steps (by the convolutional
    /// reference in tables without a Linear one). `None` for a table without references.
    pub fn drift(&self, now: &HostSpeed) -> Option<[f64; 2]> {
        if self.reference_ms.is_nan() || self.reference_ms <= 0.0 {
            return None;
        }
        let conv = now.conv_ms / self.reference_ms;
        let linear = if self.linear_reference_ms > 0.0 {
            now.linear_ms / self.linear_reference_ms
        } else {
            conv
        };
        Some([conv, linear])
    }

    /// The prediction for the host at the speed `now` (its references timed now) instead
    /// of its typical speed when profiled: each group scaled by its reference's drift, the
    /// overhead by the convolutional one. As [`LatencyModel::predict_ms`] for a table
    /// without references.
    pub fn predict_at(&self, graph: &Graph, now: &HostSpeed) -> Result<f64> {
        let groups = self.group_ms(graph)?;
        let Some([conv, linear]) = self.drift(now) else {
            return Ok(combine(&self.scales, &groups) + self.overhead_ms);
        };
        let mut total = self.overhead_ms * conv;
        for (g, (scale, ms)) in self.scales.iter().zip(groups).enumerate() {
            total += scale
                * ms
                * if SCALE_GROUPS[g].starts_with("linear") {
                    linear
                } else {
                    conv
                };
        }
        Ok(total)
    }

    /// The interpolated time of one step kind at a shape.
    pub fn lookup(
        &self,
        kind: &str,
        precision: &str,
        positions: f64,
        n: f64,
        k: f64,
    ) -> Option<f64> {
        self.grids
            .get(&(kind.to_string(), precision.to_string()))
            .map(|g| g.at([positions, n, k]))
    }

    /// The sum of a graph's steps' entries, unscaled and without the per-graph overhead.
    pub fn steps_ms(&self, graph: &Graph) -> Result<f64> {
        Ok(self.group_ms(graph)?.iter().sum())
    }

    /// The sums of a graph's steps' entries by [`SCALE_GROUPS`], unscaled.
    pub fn group_ms(&self, graph: &Graph) -> Result<[f64; SCALE_GROUPS.len()]> {
        // Shapes only: no kernel is timed to choose a sparse one (CSR steps are priced as
        // dense anyway).
        let rt = Runtime::compile(
            graph,
            &Options {
                max_batch: 1,
                threads: 1,
                isa: None,
                sparse: sculpt_runtime::SparsePolicy::Never,
            },
        )?;
        let mut total = [0.0; SCALE_GROUPS.len()];
        for s in rt.step_shapes() {
            total[scale_group(s.kind, s.precision)] +=
                self.step_ms(&s).ok_or_else(|| missing_entry(self, &s))?;
        }
        Ok(total)
    }

    /// The table's time for one step of a plan, all its groups included: matrix steps are
    /// looked up with their channels rounded up to whole panels, and a grouped convolution
    /// by its group count.
    pub fn step_ms(&self, s: &StepShape) -> Option<f64> {
        let n = match s.kind {
            "conv_grouped" => s.groups,
            "linear" | "conv1" | "conv3" | "conv5" | "conv7" | "conv" => s.n.div_ceil(16) * 16,
            _ => s.n,
        };
        let ms = self.lookup(
            s.kind,
            s.precision,
            s.positions as f64,
            n as f64,
            s.k as f64,
        )?;
        Some(if s.kind == "conv_grouped" {
            ms
        } else {
            ms * s.groups as f64
        })
    }

    /// Writes the table as parquet, through a temporary file and a rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |e: std::io::Error| LatencyError::Io {
            path: path.to_path_buf(),
            cause: e,
        };
        let table = |e: PolarsError| LatencyError::Table {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut rows: Vec<LutEntry> = self.entries.clone();
        let fitted = [
            ("overhead", "", self.overhead_ms),
            ("error_pct", "", self.error_pct),
            ("reference", "", self.reference_ms),
            ("reference", "linear", self.linear_reference_ms),
            ("calibration", self.calibrated_on.as_str(), 0.0),
        ];
        let scales = SCALE_GROUPS
            .iter()
            .zip(self.scales)
            .map(|(g, a)| ("scale", *g, a));
        for (kind, group, ms) in fitted.into_iter().chain(scales) {
            rows.push(LutEntry {
                kind: kind.into(),
                precision: group.into(),
                positions: 0.0,
                n: 0.0,
                k: 0.0,
                ms,
            });
        }
        let text =
            |f: fn(&LutEntry) -> &str| rows.iter().map(|r| f(r).to_string()).collect::<Vec<_>>();
        let num = |f: fn(&LutEntry) -> f64| rows.iter().map(f).collect::<Vec<_>>();
        let len = rows.len();
        let mut frame = DataFrame::new(
            len,
            vec![
                Column::new("kind".into(), text(|r| &r.kind)),
                Column::new("precision".into(), text(|r| &r.precision)),
                Column::new("positions".into(), num(|r| r.positions)),
                Column::new("n".into(), num(|r| r.n)),
                Column::new("k".into(), num(|r| r.k)),
                Column::new("ms".into(), num(|r| r.ms)),
                Column::new("batch".into(), vec![self.batch as u64; len]),
                Column::new("threads".into(), vec![self.threads as u64; len]),
                Column::new("host".into(), vec![self.host.clone(); len]),
                Column::new("isa".into(), vec![self.isa.clone(); len]),
            ],
        )
        .map_err(table)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(io)?;
        ParquetWriter::new(file).finish(&mut frame).map_err(table)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a table written by [`Lut::save`]. A missing file, a file that is not
    /// parquet, a missing or mistyped column, or entries that do not fill a grid are
    /// reported with the path and the column.
    pub fn load(path: &Path) -> Result<Lut> {
        let bad = |message: String| LatencyError::Table {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|e| LatencyError::Io {
            path: path.to_path_buf(),
            cause: e,
        })?;
        let frame = ParquetReader::new(file)
            .finish()
            .map_err(|e| bad(format!("not a readable parquet table: {e}")))?;
        let column = |name: &str| -> Result<&Column> {
            let c = frame.column(name).map_err(|_| {
                bad(format!(
                    "no column `{name}`; a latency table has the columns kind, precision, positions, n, k, ms, batch, threads, host, isa"
                ))
            })?;
            if c.null_count() > 0 {
                return Err(bad(format!(
                    "column `{name}` has {} empty values",
                    c.null_count()
                )));
            }
            Ok(c)
        };
        let texts = |name: &str| -> Result<Vec<String>> {
            let c = column(name)?;
            let v = c
                .str()
                .map_err(|_| bad(format!("column `{name}` holds {}, not text", c.dtype())))?;
            Ok(v.iter()
                .map(|s| s.unwrap_or_default().to_string())
                .collect())
        };
        let floats = |name: &str| -> Result<Vec<f64>> {
            let c = column(name)?;
            if !c.dtype().is_primitive_numeric() {
                return Err(bad(format!(
                    "column `{name}` holds {}, not numbers",
                    c.dtype()
                )));
            }
            let c = c
                .cast(&DataType::Float64)
                .map_err(|e| bad(format!("column `{name}`: {e}")))?;
            let v = c.f64().map_err(|e| bad(format!("column `{name}`: {e}")))?;
            Ok(v.into_no_null_iter().collect())
        };
        let (kind, precision) = (texts("kind")?, texts("precision")?);
        let (positions, n, k, ms) = (
            floats("positions")?,
            floats("n")?,
            floats("k")?,
            floats("ms")?,
        );
        let (batch, threads) = (floats("batch")?, floats("threads")?);
        let (host, isa) = (texts("host")?, texts("isa")?);
        if kind.is_empty() {
            return Err(bad("the table is empty".into()));
        }
        let mut overhead = None;
        let mut error = 0.0;
        let mut scales = [1.0; SCALE_GROUPS.len()];
        let mut reference = 0.0;
        let mut linear_reference = 0.0;
        let mut calibrated_on = None;
        let mut entries = Vec::new();
        for i in 0..kind.len() {
            match kind[i].as_str() {
                "overhead" => overhead = Some(ms[i]),
                "error_pct" => error = ms[i],
                "scale" => {
                    if !(ms[i] >= 0.0 && ms[i].is_finite()) {
                        return Err(bad(format!(
                            "row {i}: column `ms` of a `scale` row is {}; it must be 0 or more",
                            ms[i]
                        )));
                    }
                    // An empty group is one scale for every step (older tables).
                    match named_groups(&precision[i]) {
                        Some(groups) => groups.into_iter().for_each(|g| scales[g] = ms[i]),
                        None if precision[i].is_empty() => scales = [ms[i]; SCALE_GROUPS.len()],
                        None => {
                            return Err(bad(format!(
                                "row {i}: a `scale` row of unknown group `{}` in column `precision` (known: {})",
                                precision[i],
                                SCALE_GROUPS.join(", ")
                            )))
                        }
                    }
                }
                "reference" if precision[i] == "linear" => linear_reference = ms[i],
                "reference" => reference = ms[i],
                "calibration" => calibrated_on = Some(precision[i].clone()),
                _ => {
                    for (name, v) in [("positions", positions[i]), ("n", n[i]), ("k", k[i])] {
                        if !(v >= 1.0 && v.is_finite()) {
                            return Err(bad(format!(
                                "row {i} ({} {}): column `{name}` is {v}; shapes must be at least 1",
                                kind[i], precision[i]
                            )));
                        }
                    }
                    entries.push(LutEntry {
                        kind: kind[i].clone(),
                        precision: precision[i].clone(),
                        positions: positions[i],
                        n: n[i],
                        k: k[i],
                        ms: ms[i],
                    })
                }
            }
        }
        let overhead = overhead.ok_or_else(|| bad("no `overhead` row".into()))?;
        if !(overhead >= 0.0 && overhead.is_finite()) {
            return Err(bad(format!(
                "column `ms` of the `overhead` row is {overhead}"
            )));
        }
        let mut lut = Lut::new(
            batch[0] as usize,
            threads[0] as usize,
            host[0].clone(),
            isa[0].clone(),
            overhead,
            error,
            entries,
        )
        .map_err(bad)?;
        for (row, v) in [
            ("reference", reference),
            ("linear reference", linear_reference),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(bad(format!(
                    "column `ms` of the `{row}` row is {v}; it must be 0 or more"
                )));
            }
        }
        lut.scales = scales;
        lut.reference_ms = reference;
        lut.linear_reference_ms = linear_reference;
        lut.calibrated_on = calibrated_on.unwrap_or_else(|| CALIBRATED_ON_ZOO.to_string());
        lut.path = Some(path.to_path_buf());
        Ok(lut)
    }
}

impl LatencyModel for Lut {
    fn describe(&self) -> String {
        format!(
            "lookup table ({} on {}, batch {}, {} thread{}; calibrated on {}, largest error {:.1}%)",
            self.isa,
            self.host,
            self.batch,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.calibrated_on,
            self.error_pct
        )
    }

    fn predict_ms(&self, graph: &Graph) -> Result<f64> {
        Ok(combine(&self.scales, &self.group_ms(graph)?) + self.overhead_ms)
    }

    fn error_margin(&self) -> Option<f64> {
        (self.error_pct > 0.0).then_some(self.error_pct / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, positions: f64, n: f64, k: f64, ms: f64) -> LutEntry {
        LutEntry {
            kind: kind.into(),
            precision: "f32".into(),
            positions,
            n,
            k,
            ms,
        }
    }

    /// A synthetic table whose times follow `ms = 1e-6 · n · k` exactly (bilinear), so
    /// interpolation and extrapolation must reproduce it.
    fn power_law() -> Lut {
        let mut entries = Vec::new();
        for n in [8.0, 16.0, 32.0] {
            for k in [8.0, 64.0] {
                entries.push(entry("linear", 1.0, n, k, 1e-6 * n * k));
            }
        }
        for p in [64.0, 256.0] {
            entries.push(entry("relu", p, 1.0, 1.0, 1e-5 * p));
            entries.push(entry("input_copy", p, 1.0, 1.0, 1e-6 * p));
        }
        Lut::new(1, 1, "test".into(), "scalar".into(), 0.002, 5.0, entries).unwrap()
    }

    #[test]
    fn lookup_interpolates_and_extrapolates_a_bilinear_cost_exactly_and_clamps_below_the_grid() {
        let lut = power_law();
        for (n, k) in [(8.0, 8.0), (12.0, 20.0), (32.0, 64.0), (100.0, 500.0)] {
            let got = lut.lookup("linear", "f32", 1.0, n, k).unwrap();
            let want = 1e-6 * n * k;
            assert!(
                (got / want - 1.0).abs() < 1e-9,
                "({n}, {k}): {got} vs {want}"
            );
        }
        // Below the grid: the edge's entry.
        let below = lut.lookup("linear", "f32", 1.0, 4.0, 2.0).unwrap();
        assert!((below / (1e-6 * 64.0) - 1.0).abs() < 1e-9, "{below}");
        let relu = lut.lookup("relu", "f32", 128.0, 1.0, 1.0).unwrap();
        assert!((relu / 1.28e-3 - 1.0).abs() < 1e-9, "{relu}");
        assert!(lut.lookup("conv", "int8", 1.0, 1.0, 1.0).is_none());
    }

    #[test]
    fn the_affine_fit_recovers_a_scale_and_an_overhead_and_never_goes_negative() {
        // Graphs of different sizes: measured = 1.3 · predicted + 0.004.
        let pairs: Vec<(f64, f64)> = (0..16)
            .map(|i| {
                let p = 0.01 + 0.003 * i as f64 * (1.0 + (i as f64 * 0.7).sin().abs());
                (1.3 * p + 0.004, p)
            })
            .collect();
        let (a, b) = fit_affine(&pairs);
        assert!(
            (a - 1.3).abs() < 1e-9 && (b - 0.004).abs() < 1e-9,
            "{a} {b}"
        );
        // Times that shrink as the prediction grows ask for a negative scale: the overhead
        // alone is kept; times growing faster than the prediction, a negative overhead: the
        // scale alone.
        let (a, b) = fit_affine(&[(2.0, 1.0), (1.0, 2.0)]);
        assert!(a == 0.0 && b > 0.0, "{a} {b}");
        let (a, b) = fit_affine(&[(1.0, 1.0), (3.0, 2.0)]);
        assert!(a > 0.0 && b == 0.0, "{a} {b}");
        assert!(
            [(1.0, 1.0), (3.0, 2.0)]
                .iter()
                .all(|(m, p)| ((a * p - m) / m).abs() < 0.5),
            "{a}"
        );
    }

    #[test]
    fn lookup_between_points_lies_between_their_times() {
        let entries = vec![
            entry("relu", 64.0, 1.0, 1.0, 0.001),
            entry("relu", 256.0, 1.0, 1.0, 0.010),
        ];
        let lut = Lut::new(1, 1, "t".into(), "scalar".into(), 0.0, 0.0, entries).unwrap();
        let mid = lut.lookup("relu", "f32", 128.0, 1.0, 1.0).unwrap();
        assert!(mid > 0.001 && mid < 0.010, "{mid}");
        // A third of the way from 64 to 256.
        assert!((mid - (0.001 + 0.009 / 3.0)).abs() < 1e-12, "{mid}");
    }

    #[test]
    fn a_table_round_trips_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lut.parquet");
        let mut lut = power_law();
        lut.scales = [1.25; SCALE_GROUPS.len()];
        lut.scales[ELEMENTWISE_GROUP] = 0.5;
        lut.reference_ms = 0.031;
        lut.save(&path).unwrap();
        let back = Lut::load(&path).unwrap();
        assert_eq!(back.entries, lut.entries);
        assert_eq!(back.scales, lut.scales);
        assert_eq!(back.reference_ms, 0.031);
        // Screening allows the table's own calibration error.
        assert_eq!(back.error_margin(), Some(0.05));
        let g = sculpt_nn::zoo::build("mlp", &[8], 16, 0).unwrap();
        let groups = back.group_ms(&g).unwrap();
        let e = ELEMENTWISE_GROUP;
        assert!(groups[0] > 0.0 && groups[e] > 0.0, "{groups:?}");
        assert!((groups.iter().sum::<f64>() - back.steps_ms(&g).unwrap()).abs() < 1e-15);
        let want = 1.25 * groups[..e].iter().sum::<f64>() + 0.5 * groups[e] + 0.002;
        assert!((back.predict_ms(&g).unwrap() - want).abs() < 1e-12);
        assert_eq!((back.batch, back.threads, back.overhead_ms), (1, 1, 0.002));
        assert_eq!(back.error_pct, 5.0);
        // Without a Linear reference (older tables), the host's drift scales every step
        // and the overhead by the convolutional reference.
        assert_eq!(back.linear_reference_ms, 0.0);
        let now = HostSpeed {
            conv_ms: 0.062,
            linear_ms: 123.0,
        };
        assert_eq!(back.drift(&now), Some([2.0, 2.0]));
        assert!((back.predict_at(&g, &now).unwrap() - 2.0 * want).abs() < 1e-12);
        // With one, Linear steps follow it and the rest follow the convolutional one.
        lut.linear_reference_ms = 0.01;
        lut.save(&path).unwrap();
        let back = Lut::load(&path).unwrap();
        assert_eq!(back.linear_reference_ms, 0.01);
        let now = HostSpeed {
            conv_ms: 0.031,
            linear_ms: 0.013,
        };
        let [conv, linear] = back.drift(&now).unwrap();
        assert!((conv - 1.0).abs() < 1e-12 && (linear - 1.3).abs() < 1e-12);
        let linear_ms = 1.25 * (groups[0] + groups[1]);
        let want_now = want + 0.3 * linear_ms;
        assert!((back.predict_at(&g, &now).unwrap() - want_now).abs() < 1e-12);
        // A table without references predicts the same at any speed.
        let mut bare = back.clone();
        bare.reference_ms = 0.0;
        assert_eq!(bare.drift(&now), None);
        assert_eq!(
            bare.predict_at(&g, &now).unwrap(),
            bare.predict_ms(&g).unwrap()
        );
    }

    #[test]
    fn a_table_calibrated_on_a_model_is_fitted_on_its_plans_and_names_it() {
        // Linear entries in every precision a random plan can give, and the element-wise
        // steps of an MLP; the times are synthetic, the calibration measures for real.
        let mut entries = Vec::new();
        for precision in ["f32", "int8", "int4"] {
            for n in [8.0, 64.0, 512.0] {
                for k in [8.0, 64.0, 512.0] {
                    let mut e = entry("linear", 1.0, n, k, 1e-7 * n * k + 1e-4);
                    e.precision = precision.into();
                    entries.push(e);
                }
            }
        }
        for p in [64.0, 4096.0] {
            entries.push(entry("relu", p, 1.0, 1.0, 1e-6 * p));
            entries.push(entry("input_copy", p, 1.0, 1.0, 1e-7 * p));
        }
        let mut lut = Lut::new(1, 1, "test".into(), "scalar".into(), 0.0, 0.0, entries).unwrap();
        let model = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        // A table with no reference time cannot be brought to the host's speed now.
        let e = recalibrate(&lut, "mlp", &model, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("no reference time"), "{e}");
        lut.reference_ms = 0.05;
        let mut calls = 0;
        let fitted = recalibrate(&lut, "mlp (a test)", &model, &mut |done, total| {
            calls += 1;
            assert!(done <= total && total == CALIBRATION_PLANS * CALIBRATION_PASSES);
        })
        .unwrap();
        assert_eq!(calls, CALIBRATION_PLANS * CALIBRATION_PASSES);
        assert_eq!(fitted.calibrated_on, "mlp (a test)");
        assert_eq!(lut.calibrated_on, CALIBRATED_ON_ZOO);
        assert!(
            fitted.scales.iter().all(|a| a.is_finite() && *a >= 0.0),
            "{:?}",
            fitted.scales
        );
        assert!(fitted.scales != lut.scales, "nothing was fitted");
        assert!(fitted.error_pct.is_finite());
        assert_eq!((fitted.reference_ms, fitted.batch), (0.05, 1));
        assert_eq!(
            fitted.linear_reference_ms, 0.0,
            "calibration keeps the references"
        );
        // The name survives the file, and says what the predictions rest on.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mlp.parquet");
        fitted.save(&path).unwrap();
        let back = Lut::load(&path).unwrap();
        assert_eq!(back.calibrated_on, "mlp (a test)");
        assert!(
            back.describe().contains("calibrated on mlp (a test)"),
            "{}",
            back.describe()
        );
        assert!(back.predict_ms(&model).unwrap() > 0.0);
    }

    #[test]
    fn steps_scale_by_their_kind_and_older_tables_scale_every_convolution() {
        for (kind, precision, group) in [
            ("linear", "f32", "linear_f32"),
            ("linear", "int4", "linear_int"),
            ("conv1", "int8", "conv1_int"),
            ("conv3", "f32", "conv3_f32"),
            ("conv5", "int8", "conv5_int"),
            ("conv7", "f32", "conv5_f32"),
            ("conv_grouped", "int4", "conv_grouped_int"),
            ("max_pool", "f32", "elementwise"),
        ] {
            assert_eq!(
                SCALE_GROUPS[scale_group(kind, precision)],
                group,
                "{kind} {precision}"
            );
        }
        assert_eq!(named_groups("conv5_int"), Some(vec![7]));
        // Tables profiled before convolutions were grouped by kind name one group for all.
        for (old, suffix) in [("conv_f32", "_f32"), ("conv_int", "_int")] {
            let groups = named_groups(old).unwrap();
            assert_eq!(groups.len(), 4);
            for g in groups {
                let name = SCALE_GROUPS[g];
                assert!(
                    name.starts_with("conv") && name.ends_with(suffix),
                    "{old}: {name}"
                );
            }
        }
        assert_eq!(named_groups("conv_f16"), None);
    }

    #[test]
    fn bad_tables_are_rejected_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        // Not parquet.
        let path = dir.path().join("junk.parquet");
        std::fs::write(&path, "kind,ms\nlinear,1\n").unwrap();
        let e = Lut::load(&path).unwrap_err().to_string();
        assert!(e.contains("junk.parquet") && e.contains("parquet"), "{e}");
        // Missing file.
        let e = Lut::load(&dir.path().join("none.parquet"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.parquet"), "{e}");
        // A missing column.
        let mut frame = df!("kind" => ["linear"], "ms" => [1.0]).unwrap();
        let path = dir.path().join("cols.parquet");
        ParquetWriter::new(File::create(&path).unwrap())
            .finish(&mut frame)
            .unwrap();
        let e = Lut::load(&path).unwrap_err().to_string();
        assert!(e.contains("no column `precision`"), "{e}");
        // Entries that do not fill a grid.
        let mut lut = power_law();
        lut.entries.remove(0);
        let path = dir.path().join("holes.parquet");
        lut.save(&path).unwrap();
        let e = Lut::load(&path).unwrap_err().to_string();
        assert!(e.contains("do not fill a grid"), "{e}");
        // A negative time.
        let mut lut = power_law();
        lut.entries[0].ms = -1.0;
        let path = dir.path().join("neg.parquet");
        lut.save(&path).unwrap();
        let e = Lut::load(&path).unwrap_err().to_string();
        assert!(e.contains("must be positive"), "{e}");
    }
}
