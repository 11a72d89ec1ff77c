//! Compiling a graph into an execution plan, and running it.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use sculpt_nn::graph::INPUT;
use sculpt_nn::{ActQuant, Dataset, Graph, Op, WeightQuant};

use crate::kernel::{self, Isa, PackedF32, PackedInt, MR, MR_F32, NR, PANEL};
use crate::{Result, RuntimeError};

/// The largest batch a plan runs at once (larger sizes overflow the buffer arithmetic
/// long before they fit in memory).
const MAX_BATCH: usize = 1 << 16;

/// The most memory a plan's buffers may take.
const MAX_PLAN_BYTES: u128 = 4_000_000_000;

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The most threads a plan may use: four per core. More only contend for the cores (a
/// worker waits for its next job by spinning).
pub fn max_threads() -> usize {
    4 * cores()
}

/// How a plan is compiled.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The largest batch one call may run; buffers are sized for it.
    pub max_batch: usize,
    /// Threads the kernels use (1 runs on the calling thread).
    pub threads: usize,
    /// The instruction set; `None` detects the best this CPU has.
    pub isa: Option<Isa>,
    /// When an unstructured-sparse Linear layer runs with the sparse kernel.
    pub sparse: SparsePolicy,
}

/// When an unstructured-sparse f32 Linear layer (one the graph lists as `sparse`) runs with
/// the compressed-sparse-row kernel instead of the dense one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SparsePolicy {
    /// Where it is measured, at compile time, to be faster at batch 1 (plans of batch 4 or
    /// less only).
    #[default]
    Measure,
    Always,
    Never,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_batch: 64,
            threads: 1,
            isa: None,
            sparse: SparsePolicy::Measure,
        }
    }
}

/// What one step of a plan computes, in the terms a latency table is keyed by.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepShape {
    /// `input` (a transpose to channels-last), `input_copy`, `linear`, `conv1`, `conv3`,
    /// `conv5`, `conv7` (by kernel width), `conv` (other widths), `conv_grouped` (any
    /// grouped or depthwise convolution), `max_pool`, `avg_pool`, `global_avg_pool`, `batch_norm`,
    /// `relu` or `add`.
    pub kind: &'static str,
    /// `f32`, `int8` or `int4` for linear and conv steps; `f32` otherwise.
    pub precision: &'static str,
    /// Output positions per sample (1 for linear; `oh·ow` for conv), or, for element-wise
    /// steps, the elements each sample reads.
    pub positions: usize,
    /// Output channels (per group) and reduction length (per group) of a matrix step.
    pub n: usize,
    pub k: usize,
    pub groups: usize,
}

/// One row of [`Runtime::layers`]: how a weighted layer runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerInfo {
    pub name: String,
    /// `f32`, `int8` or `int4` (packed), with the activations' quantization.
    pub kernel: String,
    pub fused: Vec<String>,
    /// Bytes of the packed weight as the kernel reads it.
    pub weight_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Flat(usize),
    /// Height, width, channels (stored channels-last).
    Image(usize, usize, usize),
}

impl Shape {
    fn elems(&self) -> usize {
        match *self {
            Shape::Flat(n) => n,
            Shape::Image(h, w, c) => h * w * c,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Value {
    buf: usize,
    shape: Shape,
    /// A flat value that holds an image flattened channels-last; PyTorch's Flatten order is
    /// channels-first, so a Linear layer reading it permutes its weight columns.
    nhwc: Option<(usize, usize, usize)>,
}

/// An f32 weight in compressed sparse rows, for layers whose zeros make it faster than
/// the dense kernel.
#[derive(Debug)]
struct Csr {
    rows: Vec<u32>,
    cols: Vec<u32>,
    vals: Vec<f32>,
}

impl Csr {
    fn from_dense(w: &[f32], n: usize, k: usize) -> Csr {
        let mut rows = Vec::with_capacity(n + 1);
        let (mut cols, mut vals) = (Vec::new(), Vec::new());
        rows.push(0);
        for r in 0..n {
            for (c, &v) in w[r * k..(r + 1) * k].iter().enumerate() {
                if v != 0.0 {
                    cols.push(c as u32);
                    vals.push(v);
                }
            }
            rows.push(vals.len() as u32);
        }
        Csr { rows, cols, vals }
    }

    /// `out[r] = Σ_j W[r][j] · x[j]` for one input row.
    fn dots(&self, x: &[f32], out: &mut [f32]) {
        for (r, o) in out.iter_mut().enumerate() {
            let (a, b) = (self.rows[r] as usize, self.rows[r + 1] as usize);
            let (cols, vals) = (&self.cols[a..b], &self.vals[a..b]);
            let mut acc = [0f32; 4];
            let mut chunks = cols.chunks_exact(4).zip(vals.chunks_exact(4));
            for (c, v) in &mut chunks {
                for i in 0..4 {
                    acc[i] += v[i] * x[c[i] as usize];
                }
            }
            let tail = cols.len() / 4 * 4;
            for i in tail..cols.len() {
                acc[0] += vals[i] * x[cols[i] as usize];
            }
            *o = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        }
    }

    fn bytes(&self) -> usize {
        self.rows.len() * 4 + self.cols.len() * 4 + self.vals.len() * 4
    }
}

#[derive(Debug)]
enum Weights {
    F32(PackedF32),
    Sparse(Csr),
    /// Stored values `v` with `W = (v + off[n]) · scale[n]`; `vsum[n] = Σ_k v`.
    Int {
        packed: PackedInt,
        vsum: Vec<i32>,
        off: Vec<i32>,
        scale: Vec<f32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ActIn {
    Float,
    /// f32 weights reading statically quantized activations: quantize, dequantize, f32.
    Fake(ActQuant),
    /// Integer weights, activations quantized per sample on the fly.
    Dynamic,
    /// Integer weights, activations quantized with the calibrated range.
    Static(ActQuant),
}

/// One matrix product with its epilogue: `y = Σ + bias`, then `y · post_scale +
/// post_shift` (a fused batch norm), then ReLU. Writes columns `col0..col0 + n` of rows of
/// width `ldc`.
#[derive(Debug)]
struct Gemm {
    weights: Weights,
    n: usize,
    k: usize,
    bias: Vec<f32>,
    post: Option<(Vec<f32>, Vec<f32>)>,
    relu: bool,
    act: ActIn,
    col0: usize,
    ldc: usize,
}

#[derive(Debug, Clone, Copy)]
struct ConvGeom {
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    cg: usize,
}

#[derive(Debug)]
enum Step {
    /// The caller's channels-first input into channels-last.
    Input {
        dst: usize,
        shape: Shape,
    },
    Linear {
        src: usize,
        dst: usize,
        gemm: Gemm,
    },
    Conv {
        src: usize,
        dst: usize,
        geom: ConvGeom,
        gemms: Vec<Gemm>,
    },
    Pool {
        src: usize,
        dst: usize,
        h: usize,
        w: usize,
        c: usize,
        k: usize,
        stride: usize,
        max: bool,
        relu: bool,
    },
    GlobalAvg {
        src: usize,
        dst: usize,
        hw: usize,
        c: usize,
        relu: bool,
    },
    Affine {
        src: usize,
        dst: usize,
        c: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
        relu: bool,
    },
    Relu {
        src: usize,
        dst: usize,
        len: usize,
    },
    Add {
        a: usize,
        b: usize,
        dst: usize,
        len: usize,
        relu: bool,
    },
}

impl Step {
    fn kind(&self) -> &'static str {
        match self {
            Step::Input { .. } => "input",
            Step::Linear { .. } => "linear",
            Step::Conv { .. } => "conv",
            Step::Pool { max: true, .. } => "max_pool",
            Step::Pool { .. } => "avg_pool",
            Step::GlobalAvg { .. } => "global_avg_pool",
            Step::Affine { .. } => "batch_norm",
            Step::Relu { .. } => "relu",
            Step::Add { .. } => "add",
        }
    }

    fn set_relu(&mut self) -> bool {
        match self {
            Step::Linear { gemm, .. } => gemm.relu = true,
            Step::Conv { gemms, .. } => gemms.iter_mut().for_each(|g| g.relu = true),
            Step::Pool { relu, .. }
            | Step::GlobalAvg { relu, .. }
            | Step::Affine { relu, .. }
            | Step::Add { relu, .. } => *relu = true,
            _ => return false,
        }
        true
    }

    fn has_relu(&self) -> bool {
        match self {
            Step::Linear { gemm, .. } => gemm.relu,
            Step::Conv { gemms, .. } => gemms.iter().any(|g| g.relu),
            Step::Pool { relu, .. }
            | Step::GlobalAvg { relu, .. }
            | Step::Affine { relu, .. }
            | Step::Add { relu, .. } => *relu,
            _ => false,
        }
    }
}

/// A compiled graph, ready to run.
pub struct Runtime {
    steps: Vec<Step>,
    /// Per-sample length of each buffer; buffer 0 is the input.
    buf_elems: Vec<usize>,
    bufs: Vec<Vec<f32>>,
    output: Value,
    input_elems: usize,
    input_shape: Vec<usize>,
    num_classes: usize,
    max_batch: usize,
    isa: Isa,
    threads: usize,
    pool: Option<crate::pool::SpinPool>,
    layers: Vec<LayerInfo>,
    // Scratch, sized at compile time.
    qa: Vec<u8>,
    qimg: Vec<u8>,
    fcol: Vec<f32>,
    fq: Vec<f32>,
    rows: Vec<RowQuant>,
    samples: Vec<(f32, i64)>,
    out: Vec<f32>,
}

/// The quantization of one input row of an integer layer.
#[derive(Debug, Clone, Copy, Default)]
struct RowQuant {
    scale: f32,
    zero: i64,
    sum: i64,
}

fn unsupported(node: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Unsupported {
        node: node.to_string(),
        message: message.into(),
    }
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

impl Runtime {
    /// Compiles `graph` into a plan.
    pub fn compile(graph: &Graph, options: &Options) -> Result<Self> {
        let spec = &graph.spec;
        spec.summarize()?;
        let isa = options.isa.unwrap_or_else(Isa::detect);
        if options.max_batch == 0 || options.max_batch > MAX_BATCH {
            return Err(RuntimeError::Input(format!(
                "a plan's batch must be 1 to {MAX_BATCH}, got {}",
                options.max_batch
            )));
        }
        let max_batch = options.max_batch;
        let threads = options.threads;
        if threads == 0 || threads > max_threads() {
            return Err(RuntimeError::Input(format!(
                "{threads} threads: use 1 to {} on this machine ({} cores)",
                max_threads(),
                cores()
            )));
        }

        // How many nodes read each node (the output counts as a reader).
        let mut readers: BTreeMap<&str, usize> = BTreeMap::new();
        for node in &spec.nodes {
            for input in &node.inputs {
                *readers.entry(input.as_str()).or_default() += 1;
            }
        }
        *readers.entry(spec.output.as_str()).or_default() += 1;
        let sole = |name: &str| readers.get(name).copied().unwrap_or(0) == 1;

        let input_shape = match spec.input_shape.as_slice() {
            [n] => Shape::Flat(*n),
            [c, h, w] => Shape::Image(*h, *w, *c),
            other => {
                return Err(unsupported(
                    INPUT,
                    format!(
                        "input shape {other:?} (expected [features] or [channels, height, width])"
                    ),
                ))
            }
        };
        let mut buf_elems = vec![input_shape.elems(), input_shape.elems()];
        let mut steps = vec![Step::Input {
            dst: 1,
            shape: input_shape,
        }];
        let mut vals: BTreeMap<String, Value> = BTreeMap::new();
        vals.insert(
            INPUT.to_string(),
            Value {
                buf: 1,
                shape: input_shape,
                nhwc: None,
            },
        );
        // The step that produced each node's value, and the names fused into it.
        let mut producer: BTreeMap<String, usize> = BTreeMap::new();
        let mut fused: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut layer_steps: Vec<(String, usize)> = Vec::new();
        let mut scratch = Scratch::default();

        for node in &spec.nodes {
            let name = node.name.as_str();
            let input = |i: usize| -> Result<Value> {
                vals.get(&node.inputs[i]).copied().ok_or_else(|| {
                    unsupported(name, format!("input `{}` has no value", node.inputs[i]))
                })
            };
            let act = spec.act_quant.get(name).copied();
            if act.is_some() && !matches!(node.op, Op::Linear { .. } | Op::Conv2d { .. }) {
                return Err(unsupported(
                    name,
                    "static activation quantization is supported on Linear and Conv2d layers only",
                ));
            }
            // A node that can merge into the step that made its input.
            let fusable_into = |vals: &BTreeMap<String, Value>| -> Option<usize> {
                let from = &node.inputs[0];
                let step = *producer.get(from)?;
                (sole(from) && from != &spec.output && vals.contains_key(from)).then_some(step)
            };
            let new_buf = |shape: Shape, buf_elems: &mut Vec<usize>| {
                buf_elems.push(shape.elems());
                buf_elems.len() - 1
            };
            match &node.op {
                Op::Linear {
                    in_features,
                    out_features,
                    bias,
                } => {
                    let x = input(0)?;
                    if x.shape != Shape::Flat(*in_features) {
                        return Err(unsupported(
                            name,
                            format!("Linear reads a value of shape {:?}", x.shape),
                        ));
                    }
                    let mut w = values(graph.param(&format!("{name}.weight"))?)?;
                    if let Some((h, wd, c)) = x.nhwc {
                        w = permute_columns_to_nhwc(&w, *out_features, h, wd, c);
                    }
                    let b = if *bias {
                        values(graph.param(&format!("{name}.bias"))?)?
                    } else {
                        vec![0.0; *out_features]
                    };
                    let scheme = spec.weight_quant.get(&format!("{name}.weight")).copied();
                    let gemm = build_gemm(
                        name,
                        &w,
                        *out_features,
                        *in_features,
                        scheme,
                        act,
                        b,
                        0,
                        *out_features,
                    )?;
                    let mut gemm = gemm;
                    if spec.sparse.contains(&format!("{name}.weight")) {
                        if let Weights::F32(packed) = &gemm.weights {
                            let csr = Csr::from_dense(&w, *out_features, *in_features);
                            let use_it = match options.sparse {
                                SparsePolicy::Always => true,
                                SparsePolicy::Never => false,
                                SparsePolicy::Measure => {
                                    max_batch <= SPARSE_MAX_BATCH
                                        && sparse_is_faster(&csr, packed, isa)
                                }
                            };
                            if use_it {
                                gemm.weights = Weights::Sparse(csr);
                            }
                        }
                    }
                    scratch.gemm(&gemm, max_batch, None);
                    let shape = Shape::Flat(*out_features);
                    let dst = new_buf(shape, &mut buf_elems);
                    steps.push(Step::Linear {
                        src: x.buf,
                        dst,
                        gemm,
                    });
                    producer.insert(name.to_string(), steps.len() - 1);
                    layer_steps.push((name.to_string(), steps.len() - 1));
                    vals.insert(
                        name.to_string(),
                        Value {
                            buf: dst,
                            shape,
                            nhwc: None,
                        },
                    );
                }
                Op::Conv2d {
                    in_channels,
                    out_channels,
                    kernel_size,
                    stride,
                    padding,
                    groups,
                    bias,
                } => {
                    let x = input(0)?;
                    let Shape::Image(h, w, c) = x.shape else {
                        return Err(unsupported(name, "Conv2d reads a flat value"));
                    };
                    if c != *in_channels {
                        return Err(unsupported(name, "channel count differs from its input"));
                    }
                    let k = *kernel_size;
                    let oh = (h + 2 * padding - k) / stride + 1;
                    let ow = (w + 2 * padding - k) / stride + 1;
                    let cg = in_channels / groups;
                    let og = out_channels / groups;
                    let geom = ConvGeom {
                        h,
                        w,
                        c,
                        k,
                        stride: *stride,
                        pad: *padding,
                        oh,
                        ow,
                        cg,
                    };
                    let weight = values(graph.param(&format!("{name}.weight"))?)?;
                    let bias_all = if *bias {
                        values(graph.param(&format!("{name}.bias"))?)?
                    } else {
                        vec![0.0; *out_channels]
                    };
                    let scheme = spec.weight_quant.get(&format!("{name}.weight")).copied();
                    let kk = k * k * cg;
                    // PyTorch's [out, in/groups, k, k] as rows of (ky, kx, channel).
                    let mut rows = vec![0f32; out_channels * kk];
                    for o in 0..*out_channels {
                        for ci in 0..cg {
                            for ky in 0..k {
                                for kx in 0..k {
                                    rows[o * kk + (ky * k + kx) * cg + ci] =
                                        weight[((o * cg + ci) * k + ky) * k + kx];
                                }
                            }
                        }
                    }
                    // Per-tensor schemes keep one scale over every group: quantize whole.
                    let mut gemms = Vec::with_capacity(*groups);
                    let whole = match scheme {
                        Some(s) if s.bits <= 8 && !s.per_channel && *groups > 1 => {
                            Some(int_weights(name, &rows, *out_channels, kk, &s)?)
                        }
                        _ => None,
                    };
                    for g in 0..*groups {
                        let range = g * og..(g + 1) * og;
                        let part = &rows[range.start * kk..range.end * kk];
                        let b = bias_all[range.clone()].to_vec();
                        let gemm = match &whole {
                            Some((v, off, scale, nibbles)) => Gemm {
                                weights: int_packed(
                                    &v[range.start * kk..range.end * kk],
                                    og,
                                    kk,
                                    *nibbles,
                                    off[range.clone()].to_vec(),
                                    scale[range.clone()].to_vec(),
                                ),
                                n: og,
                                k: kk,
                                bias: b,
                                post: None,
                                relu: false,
                                act: match act {
                                    Some(a) => ActIn::Static(a),
                                    None => ActIn::Dynamic,
                                },
                                col0: range.start,
                                ldc: *out_channels,
                            },
                            None => build_gemm(
                                name,
                                part,
                                og,
                                kk,
                                scheme,
                                act,
                                b,
                                range.start,
                                *out_channels,
                            )?,
                        };
                        scratch.gemm(&gemm, max_batch * oh * ow, Some((h * w * c, kk)));
                        gemms.push(gemm);
                    }
                    let shape = Shape::Image(oh, ow, *out_channels);
                    let dst = new_buf(shape, &mut buf_elems);
                    steps.push(Step::Conv {
                        src: x.buf,
                        dst,
                        geom,
                        gemms,
                    });
                    producer.insert(name.to_string(), steps.len() - 1);
                    layer_steps.push((name.to_string(), steps.len() - 1));
                    vals.insert(
                        name.to_string(),
                        Value {
                            buf: dst,
                            shape,
                            nhwc: None,
                        },
                    );
                }
                Op::BatchNorm2d {
                    num_features, eps, ..
                } => {
                    let x = input(0)?;
                    let c = match x.shape {
                        Shape::Image(_, _, c) => c,
                        Shape::Flat(n) => n,
                    };
                    if c != *num_features {
                        return Err(unsupported(name, "feature count differs from its input"));
                    }
                    let p = |s: &str| values(graph.param(&format!("{name}.{s}"))?);
                    let (gamma, beta, mean, var) = (
                        p("weight")?,
                        p("bias")?,
                        p("running_mean")?,
                        p("running_var")?,
                    );
                    let scale: Vec<f32> = (0..c)
                        .map(|i| gamma[i] / (var[i] + *eps as f32).sqrt())
                        .collect();
                    let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
                    let target = fusable_into(&vals).filter(|&s| {
                        matches!(steps[s], Step::Linear { .. } | Step::Conv { .. })
                            && !steps[s].has_relu()
                    });
                    if let Some(s) = target {
                        let gemms: Vec<&mut Gemm> = match &mut steps[s] {
                            Step::Linear { gemm, .. } => vec![gemm],
                            Step::Conv { gemms, .. } => gemms.iter_mut().collect(),
                            _ => unreachable!(),
                        };
                        for g in gemms {
                            let r = g.col0..g.col0 + g.n;
                            g.post = Some((scale[r.clone()].to_vec(), shift[r].to_vec()));
                        }
                        let v = vals[&node.inputs[0]];
                        vals.insert(name.to_string(), v);
                        producer.insert(name.to_string(), s);
                        fused.entry(s).or_default().push(name.to_string());
                    } else {
                        let dst = new_buf(x.shape, &mut buf_elems);
                        steps.push(Step::Affine {
                            src: x.buf,
                            dst,
                            c,
                            scale,
                            shift,
                            relu: false,
                        });
                        producer.insert(name.to_string(), steps.len() - 1);
                        vals.insert(name.to_string(), Value { buf: dst, ..x });
                    }
                }
                Op::Relu => {
                    let x = input(0)?;
                    let target = fusable_into(&vals).filter(|&s| !steps[s].has_relu());
                    if let Some(s) = target.filter(|&s| steps[s].set_relu()) {
                        vals.insert(name.to_string(), x);
                        producer.insert(name.to_string(), s);
                        fused.entry(s).or_default().push(name.to_string());
                    } else {
                        let dst = new_buf(x.shape, &mut buf_elems);
                        steps.push(Step::Relu {
                            src: x.buf,
                            dst,
                            len: x.shape.elems(),
                        });
                        producer.insert(name.to_string(), steps.len() - 1);
                        vals.insert(name.to_string(), Value { buf: dst, ..x });
                    }
                }
                Op::MaxPool2d {
                    kernel_size,
                    stride,
                }
                | Op::AvgPool2d {
                    kernel_size,
                    stride,
                } => {
                    let x = input(0)?;
                    let Shape::Image(h, w, c) = x.shape else {
                        return Err(unsupported(name, "pooling reads a flat value"));
                    };
                    let s = stride.unwrap_or(*kernel_size);
                    let shape =
                        Shape::Image((h - kernel_size) / s + 1, (w - kernel_size) / s + 1, c);
                    let dst = new_buf(shape, &mut buf_elems);
                    steps.push(Step::Pool {
                        src: x.buf,
                        dst,
                        h,
                        w,
                        c,
                        k: *kernel_size,
                        stride: s,
                        max: matches!(node.op, Op::MaxPool2d { .. }),
                        relu: false,
                    });
                    producer.insert(name.to_string(), steps.len() - 1);
                    vals.insert(
                        name.to_string(),
                        Value {
                            buf: dst,
                            shape,
                            nhwc: None,
                        },
                    );
                }
                Op::GlobalAvgPool => {
                    let x = input(0)?;
                    let Shape::Image(h, w, c) = x.shape else {
                        return Err(unsupported(name, "global pooling reads a flat value"));
                    };
                    let shape = Shape::Flat(c);
                    let dst = new_buf(shape, &mut buf_elems);
                    steps.push(Step::GlobalAvg {
                        src: x.buf,
                        dst,
                        hw: h * w,
                        c,
                        relu: false,
                    });
                    producer.insert(name.to_string(), steps.len() - 1);
                    vals.insert(
                        name.to_string(),
                        Value {
                            buf: dst,
                            shape,
                            nhwc: None,
                        },
                    );
                }
                Op::Flatten => {
                    let x = input(0)?;
                    let v = match x.shape {
                        Shape::Flat(_) => x,
                        Shape::Image(h, w, c) => Value {
                            buf: x.buf,
                            shape: Shape::Flat(h * w * c),
                            // With one channel or one pixel both orders agree.
                            nhwc: (c > 1 && h * w > 1).then_some((h, w, c)),
                        },
                    };
                    vals.insert(name.to_string(), v);
                }
                Op::Dropout { .. } => {
                    let x = input(0)?;
                    vals.insert(name.to_string(), x);
                }
                Op::Add => {
                    let (a, b) = (input(0)?, input(1)?);
                    if a.shape != b.shape || a.nhwc != b.nhwc {
                        return Err(unsupported(name, "Add of values in different shapes"));
                    }
                    let dst = new_buf(a.shape, &mut buf_elems);
                    steps.push(Step::Add {
                        a: a.buf,
                        b: b.buf,
                        dst,
                        len: a.shape.elems(),
                        relu: false,
                    });
                    producer.insert(name.to_string(), steps.len() - 1);
                    vals.insert(name.to_string(), Value { buf: dst, ..a });
                }
            }
        }
        let output = vals[&spec.output];
        let layers = layer_steps
            .into_iter()
            .map(|(name, s)| {
                let (kernel, bytes) = match &steps[s] {
                    Step::Linear { gemm, .. } => (gemm.describe(), gemm.weight_bytes()),
                    Step::Conv { gemms, .. } => (
                        gemms[0].describe(),
                        gemms.iter().map(Gemm::weight_bytes).sum(),
                    ),
                    _ => unreachable!(),
                };
                LayerInfo {
                    name,
                    kernel,
                    fused: fused.get(&s).cloned().unwrap_or_default(),
                    weight_bytes: bytes,
                }
            })
            .collect();
        // The buffers are sized for the largest batch before anything is allocated, so an
        // impossible batch is an error, not an aborted allocation.
        let floats = buf_elems
            .iter()
            .map(|&n| n as u128 * max_batch as u128)
            .sum::<u128>()
            + (scratch.fcol + scratch.fq * max_batch) as u128
            + (scratch.qa + scratch.qimg) as u128 / 4;
        let bytes = floats * 4;
        if bytes > MAX_PLAN_BYTES {
            return Err(RuntimeError::Input(format!(
                "a batch of {max_batch} needs {:.1} GB of activation buffers for this model; \
                 the runtime allows {} GB (use a smaller batch)",
                bytes as f64 / 1e9,
                MAX_PLAN_BYTES / 1_000_000_000
            )));
        }
        let bufs = buf_elems
            .iter()
            .map(|&n| vec![0f32; n * max_batch])
            .collect();
        let pool =
            if threads > 1 {
                Some(crate::pool::SpinPool::new(threads).map_err(|e| {
                    RuntimeError::Input(format!("cannot start {threads} threads: {e}"))
                })?)
            } else {
                None
            };
        Ok(Runtime {
            steps,
            buf_elems,
            bufs,
            output,
            input_elems: input_shape.elems(),
            input_shape: spec.input_shape.clone(),
            num_classes: spec.num_classes,
            max_batch,
            isa,
            threads,
            pool,
            layers,
            qa: vec![0; scratch.qa],
            qimg: vec![0; scratch.qimg],
            fcol: vec![0.0; scratch.fcol],
            fq: vec![0.0; scratch.fq * max_batch],
            rows: vec![RowQuant::default(); scratch.rows],
            samples: vec![(1.0, 0); max_batch],
            out: vec![0.0; spec.num_classes * max_batch],
        })
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// How each weighted layer runs.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    /// Elements of one input sample.
    pub fn input_len(&self) -> usize {
        self.input_elems
    }

    /// Runs `batch` samples (`input` holds them channels-first, as the dataset does) and
    /// returns their logits, `[batch, classes]` row-major.
    pub fn run(&mut self, input: &[f32], batch: usize) -> Result<&[f32]> {
        if batch == 0 || batch > self.max_batch {
            return Err(RuntimeError::Input(format!(
                "batch of {batch} samples; this plan runs 1 to {}",
                self.max_batch
            )));
        }
        if input.len() != batch * self.input_elems {
            return Err(RuntimeError::Input(format!(
                "input holds {} values, expected {batch} samples of {}",
                input.len(),
                self.input_elems
            )));
        }
        self.bufs[0][..input.len()].copy_from_slice(input);
        for i in 0..self.steps.len() {
            self.step(i, batch);
        }
        let out = self.output;
        let n = self.num_classes;
        let src = &self.bufs[out.buf];
        match out.nhwc {
            None => self.out[..batch * n].copy_from_slice(&src[..batch * n]),
            Some((h, w, c)) => {
                for b in 0..batch {
                    for ci in 0..c {
                        for p in 0..h * w {
                            self.out[b * n + ci * h * w + p] = src[b * n + p * c + ci];
                        }
                    }
                }
            }
        }
        Ok(&self.out[..batch * n])
    }

    /// The steps of the plan, in order.
    pub fn step_shapes(&self) -> Vec<StepShape> {
        self.steps
            .iter()
            .map(|step| {
                let elementwise = |positions: usize| StepShape {
                    kind: step.kind(),
                    precision: "f32",
                    positions,
                    n: 1,
                    k: 1,
                    groups: 1,
                };
                let precision = |g: &Gemm| match &g.weights {
                    Weights::F32(_) => "f32",
                    Weights::Sparse(_) => "f32_csr",
                    Weights::Int { packed, .. } if packed.nibbles => "int4",
                    Weights::Int { .. } => "int8",
                };
                match step {
                    Step::Input { shape, .. } => StepShape {
                        // Channels-first to channels-last is a transpose; otherwise a copy.
                        kind: match shape {
                            Shape::Image(_, _, c) if *c > 1 => "input",
                            _ => "input_copy",
                        },
                        ..elementwise(shape.elems())
                    },
                    Step::Linear { gemm, .. } => StepShape {
                        kind: "linear",
                        precision: precision(gemm),
                        positions: 1,
                        n: gemm.n,
                        k: gemm.k,
                        groups: 1,
                    },
                    Step::Conv { geom, gemms, .. } => StepShape {
                        // im2col's cost depends on the kernel's width, so each width has
                        // its own kind.
                        kind: match geom.k {
                            _ if gemms.len() > 1 => "conv_grouped",
                            1 => "conv1",
                            3 => "conv3",
                            5 => "conv5",
                            7 => "conv7",
                            _ => "conv",
                        },
                        precision: precision(&gemms[0]),
                        positions: geom.oh * geom.ow,
                        n: gemms[0].n,
                        k: gemms[0].k,
                        groups: gemms.len(),
                    },
                    Step::Pool { h, w, c, .. } => elementwise(h * w * c),
                    Step::GlobalAvg { hw, c, .. } => elementwise(hw * c),
                    Step::Affine { dst, .. } => elementwise(self.buf_elems[*dst]),
                    Step::Relu { len, .. } | Step::Add { len, .. } => elementwise(*len),
                }
            })
            .collect()
    }

    /// The median time of each step over `runs` runs of `batch` samples of zeros, with
    /// the step's kind: where a plan spends its time.
    pub fn step_times(&mut self, batch: usize, runs: usize) -> Result<Vec<(String, f64)>> {
        // The same pseudo-random input as `measure`, so a step's time here is its time there.
        let input = crate::measure::probe_input(batch * self.input_elems);
        self.run(&input, batch)?;
        let mut times = vec![Vec::with_capacity(runs); self.steps.len()];
        for _ in 0..runs.max(1) {
            for (i, t) in times.iter_mut().enumerate() {
                let start = std::time::Instant::now();
                self.step(i, batch);
                t.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(times
            .into_iter()
            .enumerate()
            .map(|(i, mut t)| {
                t.sort_by(f64::total_cmp);
                (self.steps[i].kind().to_string(), t[t.len() / 2])
            })
            .collect())
    }

    /// Logits of every sample of `x` (`[n, sample...]`), in batches of the plan's size.
    pub fn logits(&mut self, x: &Tensor) -> Result<Vec<f32>> {
        if x.dims().is_empty() || x.dims()[1..] != self.input_shape[..] {
            return Err(RuntimeError::Input(format!(
                "the data's samples have shape {:?}, but the model takes {:?}",
                x.dims().get(1..).unwrap_or(&[]),
                self.input_shape
            )));
        }
        let n = x.dims()[0];
        let data = values(x)?;
        let mut out = Vec::with_capacity(n * self.num_classes);
        let mut start = 0;
        while start < n {
            let len = self.max_batch.min(n - start);
            let chunk = &data[start * self.input_elems..(start + len) * self.input_elems];
            out.extend_from_slice(self.run(chunk, len)?);
            start += len;
        }
        Ok(out)
    }

    /// The share of `data` whose largest logit is its label.
    pub fn accuracy(&mut self, data: &Dataset) -> Result<f64> {
        if data.is_empty() {
            return Err(RuntimeError::Input("cannot score an empty dataset".into()));
        }
        let logits = self.logits(&data.x)?;
        let labels: Vec<u32> = data.y.to_dtype(DType::U32)?.to_vec1()?;
        let n = self.num_classes;
        let correct = labels
            .iter()
            .enumerate()
            .filter(|(i, &y)| {
                let row = &logits[i * n..(i + 1) * n];
                let best = (0..n).fold(0, |b, j| if row[j] > row[b] { j } else { b });
                best == y as usize
            })
            .count();
        Ok(correct as f64 / data.len() as f64)
    }

    fn step(&mut self, i: usize, batch: usize) {
        // Buffers are distinct per step (only Flatten and Dropout alias, and they are not
        // steps), so a step reads and writes through raw pointers into separate vectors.
        let ptr = |bufs: &mut Vec<Vec<f32>>, b: usize| bufs[b].as_mut_ptr();
        let bufs = &mut self.bufs;
        match &self.steps[i] {
            Step::Input { dst, shape } => {
                let (src, dst) = (ptr(bufs, 0), ptr(bufs, *dst));
                let n = shape.elems();
                unsafe {
                    match *shape {
                        Shape::Image(h, w, c) if c > 1 => {
                            for b in 0..batch {
                                for ci in 0..c {
                                    for p in 0..h * w {
                                        *dst.add(b * n + p * c + ci) =
                                            *src.add(b * n + ci * h * w + p);
                                    }
                                }
                            }
                        }
                        _ => std::ptr::copy_nonoverlapping(src, dst, batch * n),
                    }
                }
            }
            Step::Linear { src, dst, gemm } => {
                let src_len = batch * gemm.k;
                let x = unsafe { std::slice::from_raw_parts(ptr(bufs, *src), src_len) };
                let y = ptr(bufs, *dst);
                let mut ctx = Ctx {
                    isa: self.isa,
                    pool: self.pool.as_ref(),
                    qa: &mut self.qa,
                    fq: &mut self.fq,
                    rows: &mut self.rows,
                    samples: &mut self.samples,
                };
                ctx.linear(gemm, x, batch, y);
            }
            Step::Conv {
                src,
                dst,
                geom,
                gemms,
            } => {
                let x_len = batch * geom.h * geom.w * geom.c;
                let x = unsafe { std::slice::from_raw_parts(ptr(bufs, *src), x_len) };
                let y = ptr(bufs, *dst);
                let mut ctx = Ctx {
                    isa: self.isa,
                    pool: self.pool.as_ref(),
                    qa: &mut self.qa,
                    fq: &mut self.fq,
                    rows: &mut self.rows,
                    samples: &mut self.samples,
                };
                for (i, gemm) in gemms.iter().enumerate() {
                    // The groups of a step read the same image through the same quantizer:
                    // it is quantized once, for the first.
                    let quantized = i > 0 && gemm.act == gemms[0].act;
                    ctx.conv(
                        gemm,
                        geom,
                        x,
                        batch,
                        y,
                        &mut self.fcol,
                        &mut self.qimg,
                        quantized,
                    );
                }
            }
            Step::Pool {
                src,
                dst,
                h,
                w,
                c,
                k,
                stride,
                max,
                relu,
            } => {
                let (h, w, c, k, s) = (*h, *w, *c, *k, *stride);
                let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
                let (x, y) = (ptr(bufs, *src), ptr(bufs, *dst));
                let inv = 1.0 / (k * k) as f32;
                let floor = if *relu { 0.0 } else { f32::NEG_INFINITY };
                for b in 0..batch {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let out = unsafe {
                                std::slice::from_raw_parts_mut(
                                    y.add(((b * oh + oy) * ow + ox) * c),
                                    c,
                                )
                            };
                            if *max {
                                out.fill(floor);
                            } else {
                                out.fill(0.0);
                            }
                            for ky in 0..k {
                                for kx in 0..k {
                                    let at = ((b * h + oy * s + ky) * w + ox * s + kx) * c;
                                    let row = unsafe { std::slice::from_raw_parts(x.add(at), c) };
                                    if *max {
                                        for (o, v) in out.iter_mut().zip(row) {
                                            *o = o.max(*v);
                                        }
                                    } else {
                                        for (o, v) in out.iter_mut().zip(row) {
                                            *o += *v;
                                        }
                                    }
                                }
                            }
                            if !*max {
                                for o in out.iter_mut() {
                                    *o *= inv;
                                    if *relu {
                                        *o = o.max(0.0);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Step::GlobalAvg {
                src,
                dst,
                hw,
                c,
                relu,
            } => {
                let (x, y) = (ptr(bufs, *src), ptr(bufs, *dst));
                let inv = 1.0 / *hw as f32;
                for b in 0..batch {
                    let out = unsafe { std::slice::from_raw_parts_mut(y.add(b * c), *c) };
                    out.fill(0.0);
                    for p in 0..*hw {
                        let row =
                            unsafe { std::slice::from_raw_parts(x.add((b * hw + p) * c), *c) };
                        for (o, v) in out.iter_mut().zip(row) {
                            *o += *v;
                        }
                    }
                    for o in out.iter_mut() {
                        *o *= inv;
                        if *relu {
                            *o = o.max(0.0);
                        }
                    }
                }
            }
            Step::Affine {
                src,
                dst,
                c,
                scale,
                shift,
                relu,
            } => {
                let n = self.buf_elems[*dst] * batch;
                let (x, y) = (ptr(bufs, *src), ptr(bufs, *dst));
                let (x, y) = unsafe {
                    (
                        std::slice::from_raw_parts(x, n),
                        std::slice::from_raw_parts_mut(y, n),
                    )
                };
                for (xs, ys) in x.chunks_exact(*c).zip(y.chunks_exact_mut(*c)) {
                    for j in 0..*c {
                        let v = xs[j] * scale[j] + shift[j];
                        ys[j] = if *relu { v.max(0.0) } else { v };
                    }
                }
            }
            Step::Relu { src, dst, len } => {
                let n = len * batch;
                let (x, y) = (ptr(bufs, *src), ptr(bufs, *dst));
                for j in 0..n {
                    unsafe { *y.add(j) = (*x.add(j)).max(0.0) };
                }
            }
            Step::Add {
                a,
                b,
                dst,
                len,
                relu,
            } => {
                let n = len * batch;
                let (pa, pb, y) = (ptr(bufs, *a), ptr(bufs, *b), ptr(bufs, *dst));
                for j in 0..n {
                    unsafe {
                        let v = *pa.add(j) + *pb.add(j);
                        *y.add(j) = if *relu { v.max(0.0) } else { v };
                    }
                }
            }
        }
    }
}

/// Scratch needs, gathered while compiling.
#[derive(Default)]
struct Scratch {
    qa: usize,
    qimg: usize,
    fcol: usize,
    fq: usize,
    rows: usize,
}

impl Scratch {
    /// Records what a GEMM over `m` rows needs; `conv` is (input elements per sample, k).
    fn gemm(&mut self, gemm: &Gemm, m: usize, conv: Option<(usize, usize)>) {
        let batch_rows = m;
        match (&gemm.weights, conv) {
            (Weights::Int { packed, .. }, conv) => {
                self.qa = self.qa.max(batch_rows * packed.row_bytes());
                self.rows = self.rows.max(batch_rows);
                if let Some((per_sample, _)) = conv {
                    // The quantized image of every sample; sized by rows as an upper bound
                    // of the batch.
                    self.qimg = self.qimg.max(per_sample * batch_rows);
                }
            }
            (Weights::F32(_) | Weights::Sparse(_), Some((per_sample, k))) => {
                self.fcol = self.fcol.max(batch_rows * k);
                if matches!(gemm.act, ActIn::Fake(_)) {
                    self.fq = self.fq.max(per_sample);
                }
            }
            (Weights::F32(_) | Weights::Sparse(_), None) => {
                if matches!(gemm.act, ActIn::Fake(_)) {
                    self.fq = self.fq.max(gemm.k);
                }
            }
        }
    }
}

impl Gemm {
    fn describe(&self) -> String {
        let act = match self.act {
            ActIn::Float => "",
            ActIn::Fake(_) => " (activations fake-quantized)",
            ActIn::Dynamic => ", activations u8 per sample",
            ActIn::Static(_) => ", activations u8 calibrated",
        };
        match &self.weights {
            Weights::F32(_) => format!("f32{act}"),
            Weights::Sparse(c) => format!(
                "f32 sparse (CSR, {:.0}% nonzero){act}",
                c.vals.len() as f64 / (self.n * self.k).max(1) as f64 * 100.0
            ),
            Weights::Int { packed, .. } if packed.nibbles => format!("int4 packed{act}"),
            Weights::Int { .. } => format!("int8{act}"),
        }
    }

    fn post(&self, r: std::ops::Range<usize>) -> Option<(&[f32], &[f32])> {
        self.post.as_ref().map(|(s, t)| (&s[r.clone()], &t[r]))
    }

    fn weight_bytes(&self) -> usize {
        match &self.weights {
            Weights::F32(p) => p.bytes(),
            Weights::Sparse(c) => c.bytes(),
            Weights::Int { packed, .. } => packed.bytes(),
        }
    }
}

/// A row-major `[out, c·h·w]` weight with columns in channels-first order, rewritten for a
/// channels-last input.
fn permute_columns_to_nhwc(w: &[f32], out: usize, h: usize, wd: usize, c: usize) -> Vec<f32> {
    let k = h * wd * c;
    let mut p = vec![0f32; w.len()];
    for o in 0..out {
        for ci in 0..c {
            for s in 0..h * wd {
                p[o * k + s * c + ci] = w[o * k + ci * h * wd + s];
            }
        }
    }
    p
}

/// Stored integer values, offsets and scales of a weight `[n, k]` under `scheme`, and
/// whether they are nibbles. `W = (v + off) · scale`.
#[allow(clippy::type_complexity)]
fn int_weights(
    node: &str,
    w: &[f32],
    n: usize,
    k: usize,
    scheme: &WeightQuant,
) -> Result<(Vec<i32>, Vec<i32>, Vec<f32>, bool)> {
    let dev = sculpt_nn::device();
    let t = Tensor::from_vec(w.to_vec(), (n, k), &dev)?;
    let q = sculpt_compress::quantize::quantize_codes(&t, scheme)
        .map_err(|e| unsupported(node, e.to_string()))?;
    let nibbles = scheme.bits <= 4;
    let per_row = |v: &[f32]| -> Vec<f32> {
        if v.len() == 1 {
            vec![v[0]; n]
        } else {
            v.to_vec()
        }
    };
    let scale = per_row(&q.scales);
    let zeros: Vec<i32> = if q.zero_points.len() == 1 {
        vec![q.zero_points[0]; n]
    } else {
        q.zero_points.clone()
    };
    let (shift, off): (i32, Vec<i32>) = match (scheme.symmetric, nibbles, scheme.bits) {
        // Signed codes in [-7, 7] stored as 1..=15.
        (true, true, _) => (8, vec![-8; n]),
        (true, false, _) => (0, vec![0; n]),
        // Unsigned codes with a zero point: W = (c - z) s.
        (false, true, _) => (0, zeros.iter().map(|z| -z).collect()),
        (false, false, 8) => (-128, zeros.iter().map(|z| 128 - z).collect()),
        (false, false, _) => (0, zeros.iter().map(|z| -z).collect()),
    };
    let v = q.codes.iter().map(|&c| c + shift).collect();
    Ok((v, off, scale, nibbles))
}

fn int_packed(
    v: &[i32],
    n: usize,
    k: usize,
    nibbles: bool,
    off: Vec<i32>,
    scale: Vec<f32>,
) -> Weights {
    let vsum = (0..n).map(|r| v[r * k..(r + 1) * k].iter().sum()).collect();
    Weights::Int {
        packed: PackedInt::pack(v, n, k, nibbles),
        vsum,
        off,
        scale,
    }
}

#[allow(clippy::too_many_arguments)]
fn build_gemm(
    node: &str,
    w: &[f32],
    n: usize,
    k: usize,
    scheme: Option<WeightQuant>,
    act: Option<ActQuant>,
    bias: Vec<f32>,
    col0: usize,
    ldc: usize,
) -> Result<Gemm> {
    if let Some(a) = act {
        if a.bits > 8 {
            return Err(unsupported(node, format!("{}-bit activations", a.bits)));
        }
    }
    let (weights, act) = match scheme {
        Some(s) if s.bits <= 8 => {
            let (v, off, scale, nibbles) = int_weights(node, w, n, k, &s)?;
            (
                int_packed(&v, n, k, nibbles, off, scale),
                match act {
                    Some(a) => ActIn::Static(a),
                    None => ActIn::Dynamic,
                },
            )
        }
        other => {
            let values = if other.is_some_and(|s| s.bits == 16) {
                let t = Tensor::from_vec(w.to_vec(), w.len(), &sculpt_nn::device())?;
                values(&t.to_dtype(DType::F16)?)?
            } else {
                w.to_vec()
            };
            (
                Weights::F32(PackedF32::pack(&values, n, k)),
                match act {
                    Some(a) => ActIn::Fake(a),
                    None => ActIn::Float,
                },
            )
        }
    };
    Ok(Gemm {
        weights,
        n,
        k,
        bias,
        post: None,
        relu: false,
        act,
        col0,
        ldc,
    })
}

/// Multiply-adds below which a matrix product runs on the calling thread alone: handing
/// work to a spinning worker costs about a microsecond, as much as such a product saves.
/// At 2^17, LeNet-5's conv1 (288k) and fc1 (400k) split across 2 threads, which took it
/// from 0.084 to 0.071 ms on 2 threads (measured against onnxruntime at batch 1; see
/// `benches/ort_peer.py`).
const PARALLEL_MIN_MACS: usize = 1 << 17;

/// Sparse kernels are considered only for plans of small batches: at larger batches the
/// dense kernel reuses each weight across rows and always wins.
const SPARSE_MAX_BATCH: usize = 4;

/// Times one input row through the dense and the sparse kernel (medians of 25 runs) and
/// says whether the sparse one is faster: a sparse kernel is used only where it is
/// measured to be.
fn sparse_is_faster(csr: &Csr, packed: &PackedF32, isa: Isa) -> bool {
    let x = vec![0.5f32; packed.k];
    let mut out = vec![0f32; packed.n];
    let median = |f: &mut dyn FnMut()| {
        let mut t: Vec<f64> = (0..25)
            .map(|_| {
                let start = std::time::Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[12]
    };
    let sparse = median(&mut || csr.dots(&x, &mut out));
    let dense = median(&mut || {
        let mut tile = [[0f32; NR * PANEL]; MR_F32];
        let mut p = 0;
        while p < packed.panels {
            let nr = (packed.panels - p).min(NR);
            unsafe { kernel::tile_f32(isa, x.as_ptr(), packed.k, 1, packed, p, nr, &mut tile) };
            std::hint::black_box(&tile);
            p += nr;
        }
    });
    sparse < dense
}

/// A raw pointer that worker threads may share; every tile writes its own cells.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

struct Ctx<'a> {
    isa: Isa,
    pool: Option<&'a crate::pool::SpinPool>,
    qa: &'a mut Vec<u8>,
    fq: &'a mut Vec<f32>,
    rows: &'a mut Vec<RowQuant>,
    /// Each sample's activation scale and zero point in the current convolution.
    samples: &'a mut Vec<(f32, i64)>,
}

/// The code of `x` under a static activation quantization, as an unsigned byte, and the
/// byte that means zero. Signed codes are offset by 128.
#[inline]
fn static_code(x: f32, q: &ActQuant) -> u8 {
    let (low, high) = q.code_range();
    let c = ((x / q.scale).round() + q.zero_point as f32).clamp(low as f32, high as f32);
    if q.signed {
        (c as i32 + 128) as u8
    } else {
        c as u8
    }
}

fn static_zero(q: &ActQuant) -> i64 {
    if q.signed {
        128
    } else {
        q.zero_point as i64
    }
}

/// The smallest and largest of `x` and 0, NaN ignored, over 16 lanes so that it vectorises.
fn range(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    let (mut l, mut h) = (0f32, 0f32);
    for &v in chunks.remainder().iter().chain(&lo) {
        l = l.min(v);
    }
    for &v in chunks.remainder().iter().chain(&hi) {
        h = h.max(v);
    }
    (l, h)
}

/// Quantizes `x` into `out` as unsigned bytes; returns the scale and the zero's code.
fn quantize_row(x: &[f32], out: &mut [u8], act: ActIn) -> (f32, i64) {
    match act {
        ActIn::Static(q) => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = static_code(v, &q);
            }
            (q.scale, static_zero(&q))
        }
        _ => {
            let (lo, hi) = range(x);
            if hi - lo <= 0.0 || !(hi - lo).is_finite() {
                out[..x.len()].fill(0);
                return (1.0, 0);
            }
            let scale = (hi - lo) / 255.0;
            let inv = 1.0 / scale;
            let zero = (-lo * inv).round_ties_even().clamp(0.0, 255.0);
            // Clamped first, then rounded half to even by adding and removing 2²³ (exact
            // for 0 ≤ t < 2²³ in the default rounding mode): the same codes as
            // `round_ties_even().clamp()`, in a loop the compiler vectorises (rounding
            // itself is a library call on baseline x86-64). NaN becomes 0 either way.
            const SHIFT: f32 = 8_388_608.0;
            for (o, &v) in out.iter_mut().zip(x) {
                let t = (v * inv + zero).clamp(0.0, 255.0);
                *o = ((t + SHIFT) - SHIFT) as u8;
            }
            (scale, zero as i64)
        }
    }
}

impl Ctx<'_> {
    fn linear(&mut self, gemm: &Gemm, x: &[f32], batch: usize, y: *mut f32) {
        let k = gemm.k;
        match (&gemm.weights, gemm.act) {
            (Weights::F32(_), ActIn::Fake(q)) => {
                let fq = &mut self.fq[..batch * k];
                fake_quantize(x, fq, &q);
                let a = Shared(fq.as_mut_ptr());
                self.run_f32(gemm, a.0, k, batch, y, &|_| {});
            }
            (Weights::Sparse(csr), _) => {
                let src: &[f32] = if let ActIn::Fake(q) = gemm.act {
                    let fq = &mut self.fq[..batch * k];
                    fake_quantize(x, fq, &q);
                    fq
                } else {
                    x
                };
                for m in 0..batch {
                    let out = unsafe {
                        std::slice::from_raw_parts_mut(y.add(m * gemm.ldc + gemm.col0), gemm.n)
                    };
                    csr.dots(&src[m * k..(m + 1) * k], out);
                    for (j, v) in out.iter_mut().enumerate() {
                        let mut t = *v + gemm.bias[j];
                        if let Some((s, sh)) = &gemm.post {
                            t = t * s[j] + sh[j];
                        }
                        *v = if gemm.relu { t.max(0.0) } else { t };
                    }
                }
            }
            (Weights::F32(_), _) => {
                self.run_f32(gemm, x.as_ptr() as *mut f32, k, batch, y, &|_| {})
            }
            (Weights::Int { packed, .. }, act) => {
                let lda = packed.row_bytes();
                let qa = &mut self.qa[..batch * lda];
                qa.fill(0);
                for m in 0..batch {
                    let row = &mut qa[m * lda..m * lda + k];
                    let (scale, zero) = quantize_row(&x[m * k..(m + 1) * k], row, act);
                    let sum = row.iter().map(|&c| c as i64).sum();
                    self.rows[m] = RowQuant { scale, zero, sum };
                }
                self.run_int(gemm, batch, y, &|_| {});
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        gemm: &Gemm,
        g: &ConvGeom,
        x: &[f32],
        batch: usize,
        y: *mut f32,
        fcol: &mut [f32],
        qimg: &mut [u8],
        quantized: bool,
    ) {
        let per = g.h * g.w * g.c;
        let m = batch * g.oh * g.ow;
        let kk = gemm.k;
        let c0 = (gemm.col0 / (gemm.n.max(1))) * g.cg; // first input channel of this group
        match (&gemm.weights, gemm.act) {
            (Weights::Sparse(_), _) => unreachable!("sparse kernels serve Linear layers only"),
            (Weights::F32(_), act) => {
                let src: &[f32] = if let ActIn::Fake(q) = act {
                    fake_quantize(x, &mut self.fq[..batch * per], &q);
                    &self.fq[..batch * per]
                } else {
                    x
                };
                let col = Shared(fcol[..m * kk].as_mut_ptr());
                // Each chunk of rows gathers its own patches, on the thread that multiplies
                // them: in parallel, and while they are in that core's cache.
                let prep = |rows: std::ops::Range<usize>| unsafe {
                    let col = &col;
                    im2col_rows(src, col.0, kk, g, c0, 0.0f32, 0.0f32, rows);
                };
                self.run_f32(gemm, col.0, kk, m, y, &prep);
            }
            (Weights::Int { packed, .. }, act) => {
                let lda = packed.row_bytes();
                let img = &mut qimg[..batch * per];
                // Each sample's scale and zero point sit in `samples` until the next step.
                if !quantized {
                    for b in 0..batch {
                        self.samples[b] = quantize_row(
                            &x[b * per..(b + 1) * per],
                            &mut img[b * per..(b + 1) * per],
                            act,
                        );
                    }
                }
                let qa = Shared(self.qa[..m * lda].as_mut_ptr());
                let quants = Shared(self.rows[..m].as_mut_ptr());
                let per_out = g.oh * g.ow;
                let (img, samples) = (&*img, &self.samples[..batch]);
                // As for f32: each chunk gathers its rows' codes and their sums.
                let prep = |rows: std::ops::Range<usize>| unsafe {
                    let (qa, quants) = (qa, quants);
                    for r in rows {
                        let (scale, zero) = samples[r / per_out];
                        im2col_rows(img, qa.0, lda, g, c0, zero as u8, 0u8, r..r + 1);
                        let row = std::slice::from_raw_parts(qa.0.add(r * lda), kk);
                        *quants.0.add(r) = RowQuant {
                            scale,
                            zero,
                            sum: row.iter().map(|&c| c as i64).sum(),
                        };
                    }
                };
                self.run_int(gemm, m, y, &prep);
            }
        }
    }

    /// Runs `f(m0, mr, p0, nr)` over every tile; a product of `k`-long rows is split across
    /// the pool's threads only when it is large enough to repay waking them. `prep(rows)`
    /// fills rows of the left operand before any tile reads them: for a chunk of rows, on
    /// the thread that takes the chunk.
    fn tiles(
        &self,
        m: usize,
        panels: usize,
        k: usize,
        rows_per_tile: usize,
        prep: &(dyn Fn(std::ops::Range<usize>) + Sync),
        f: &(dyn Fn(usize, usize, usize, usize) + Sync),
    ) {
        let tr = rows_per_tile;
        let run = |ms: std::ops::Range<usize>, ps: std::ops::Range<usize>| {
            let mut p = ps.start;
            while p < ps.end {
                let nr = (ps.end - p).min(NR);
                let mut m0 = ms.start;
                while m0 < ms.end {
                    let mr = (ms.end - m0).min(tr);
                    f(m0, mr, p, nr);
                    m0 += mr;
                }
                p += nr;
            }
        };
        match self.pool {
            Some(pool) if m * panels * PANEL * k >= PARALLEL_MIN_MACS => {
                // Chunks of panel pairs when the rows are few (batch 1 reads each weight
                // once), otherwise of rows; whoever is free takes the next one.
                let by_panels = m < 8 * pool.threads();
                if by_panels {
                    prep(0..m);
                }
                let pairs = panels.div_ceil(NR);
                let chunks = if by_panels {
                    pairs.min(4 * pool.threads())
                } else {
                    m.div_ceil(tr).min(8 * pool.threads())
                };
                let next = std::sync::atomic::AtomicUsize::new(0);
                pool.run(&|_| loop {
                    let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if c >= chunks {
                        break;
                    }
                    if by_panels {
                        let per = pairs.div_ceil(chunks) * NR;
                        run(0..m, (c * per).min(panels)..((c + 1) * per).min(panels));
                    } else {
                        let per = m.div_ceil(tr).div_ceil(chunks) * tr;
                        let rows = (c * per).min(m)..((c + 1) * per).min(m);
                        prep(rows.clone());
                        run(rows, 0..panels);
                    }
                });
            }
            _ => {
                prep(0..m);
                run(0..m, 0..panels)
            }
        }
    }

    fn run_f32(
        &self,
        gemm: &Gemm,
        a: *mut f32,
        lda: usize,
        m: usize,
        y: *mut f32,
        prep: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        let Weights::F32(packed) = &gemm.weights else {
            unreachable!()
        };
        let (a, y) = (Shared(a), Shared(y));
        let isa = self.isa;
        self.tiles(
            m,
            packed.panels,
            packed.k,
            MR_F32,
            prep,
            &|m0, mr, p0, nr| {
                let mut tile = [[0f32; NR * PANEL]; MR_F32];
                let (a, y) = (a, y);
                unsafe {
                    kernel::tile_f32(isa, a.0.add(m0 * lda), lda, mr, packed, p0, nr, &mut tile)
                };
                let (n0, end) = (p0 * PANEL, ((p0 + nr) * PANEL).min(gemm.n));
                for (i, row) in tile.iter().enumerate().take(mr) {
                    let out = unsafe {
                        std::slice::from_raw_parts_mut(
                            y.0.add((m0 + i) * gemm.ldc + gemm.col0 + n0),
                            end - n0,
                        )
                    };
                    epilogue(
                        isa,
                        row,
                        &gemm.bias[n0..end],
                        gemm.post(n0..end),
                        gemm.relu,
                        out,
                    );
                }
            },
        );
    }

    fn run_int(
        &self,
        gemm: &Gemm,
        m: usize,
        y: *mut f32,
        prep: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        let Weights::Int {
            packed,
            vsum,
            off,
            scale,
        } = &gemm.weights
        else {
            unreachable!()
        };
        let lda = packed.row_bytes();
        let a = Shared(self.qa.as_ptr() as *mut u8);
        let y = Shared(y);
        let rows = &self.rows[..m];
        let isa = self.isa;
        let k = gemm.k as i64;
        self.tiles(m, packed.panels, packed.k, MR, prep, &|m0, mr, p0, nr| {
            let mut tile = [[0i32; NR * PANEL]; MR];
            let (a, y) = (a, y);
            unsafe { kernel::tile_int(isa, a.0.add(m0 * lda), lda, mr, packed, p0, nr, &mut tile) };
            let (n0, end) = (p0 * PANEL, ((p0 + nr) * PANEL).min(gemm.n));
            let w = end - n0;
            let mut sums = [0f32; NR * PANEL];
            for (i, row) in tile.iter().enumerate().take(mr) {
                let q = rows[m0 + i];
                // Σ (x - zx)(v + off) = acc - zx·V + off·(X - zx·K), exactly in i32.
                let zx = q.zero as i32;
                let rest = (q.sum - q.zero * k) as i32;
                let (vs, of, sc) = (&vsum[n0..end], &off[n0..end], &scale[n0..end]);
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512Vnni => unsafe {
                        kernel::dequantize_avx512(row, w, zx, rest, q.scale, vs, of, sc, &mut sums)
                    },
                    _ => {
                        for j in 0..w {
                            sums[j] =
                                (row[j] - zx * vs[j] + of[j] * rest) as f32 * (q.scale * sc[j]);
                        }
                    }
                }
                let out = unsafe {
                    std::slice::from_raw_parts_mut(y.0.add((m0 + i) * gemm.ldc + gemm.col0 + n0), w)
                };
                epilogue(
                    isa,
                    &sums,
                    &gemm.bias[n0..end],
                    gemm.post(n0..end),
                    gemm.relu,
                    out,
                );
            }
        });
    }
}

/// `out = relu?((acc + bias) · scale + shift)` over the first `out.len()` columns of a tile
/// row: with AVX-512, masked whole panels (see [`kernel::epilogue_avx512`]); otherwise over
/// equal-length slices so that it vectorises.
#[inline]
fn epilogue(
    isa: Isa,
    acc: &[f32; NR * PANEL],
    bias: &[f32],
    post: Option<(&[f32], &[f32])>,
    relu: bool,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni {
        // SAFETY: the plan was compiled for this ISA only where the CPU has it.
        return unsafe { kernel::epilogue_avx512(acc, bias, post, relu, out) };
    }
    let _ = isa;
    let n = out.len();
    let (acc, bias) = (&acc[..n], &bias[..n]);
    match post {
        Some((s, t)) => {
            let (s, t) = (&s[..n], &t[..n]);
            for j in 0..n {
                out[j] = (acc[j] + bias[j]) * s[j] + t[j];
            }
        }
        None => {
            for j in 0..n {
                out[j] = acc[j] + bias[j];
            }
        }
    }
    if relu {
        for v in out.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

/// Static quantization applied in f32: the value the graph's forward sees.
fn fake_quantize(x: &[f32], out: &mut [f32], q: &ActQuant) {
    let (low, high) = q.code_range();
    let zero = q.zero_point as f32;
    for (o, &v) in out.iter_mut().zip(x) {
        let c = ((v / q.scale).round() + zero).clamp(low as f32, high as f32);
        *o = (c - zero) * q.scale;
    }
}

/// Channels-last im2col of channels `c0..c0 + cg`, for the rows `rows` of the product over
/// every sample of `x` (row `(b, oy, ox)`, at stride `ld`): each holds its patch in
/// `(ky, kx, channel)` order, `pad` outside the image, and `tail` from `k·k·cg` to `ld`.
///
/// # Safety
/// `col` must hold `rows.end` rows of `ld >= k·k·cg` values, and `x` whole samples.
#[allow(clippy::too_many_arguments)]
unsafe fn im2col_rows<T: Copy>(
    x: &[T],
    col: *mut T,
    ld: usize,
    g: &ConvGeom,
    c0: usize,
    pad: T,
    tail: T,
    rows: std::ops::Range<usize>,
) {
    if rows.is_empty() {
        return;
    }
    let per = g.h * g.w * g.c;
    let per_out = g.oh * g.ow;
    let kk = g.k * g.k * g.cg;
    // The pixel of the first row, then counted on (no division per row).
    let (mut b, p) = (rows.start / per_out, rows.start % per_out);
    let (mut oy, mut ox) = (p / g.ow, p % g.ow);
    assert!(rows.end <= x.len() / per * per_out);
    for r in rows {
        let row = std::slice::from_raw_parts_mut(col.add(r * ld), ld);
        patch(&x[b * per..(b + 1) * per], row, g, c0, pad, oy, ox);
        row[kk..].fill(tail);
        ox += 1;
        if ox == g.ow {
            ox = 0;
            oy += 1;
            if oy == g.oh {
                oy = 0;
                b += 1;
            }
        }
    }
}

/// Copies a run of values. The short runs of im2col (a 5-wide kernel on one channel is 5
/// values) go as two overlapping unaligned moves of 4 to 16 bytes, the way `memcpy` copies
/// small sizes but without a call per run; long runs are a `memcpy`.
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len());
    let n = std::mem::size_of_val(src);
    let (d, s) = (dst.as_mut_ptr() as *mut u8, src.as_ptr() as *const u8);
    // SAFETY: both runs are `n` bytes long (asserted), and every move below lies within
    // them: a move of `w <= n` bytes at 0 and another at `n - w`.
    unsafe {
        macro_rules! two {
            ($t:ty) => {{
                let w = std::mem::size_of::<$t>();
                let (a, b) = (
                    (s as *const $t).read_unaligned(),
                    (s.add(n - w) as *const $t).read_unaligned(),
                );
                (d as *mut $t).write_unaligned(a);
                (d.add(n - w) as *mut $t).write_unaligned(b);
            }};
        }
        match n {
            0 => {}
            1..=3 => {
                for i in 0..n {
                    *d.add(i) = *s.add(i);
                }
            }
            4..=7 => two!(u32),
            8..=15 => two!(u64),
            16..=32 => two!(u128),
            _ => dst.copy_from_slice(src),
        }
    }
}

/// The patch of output pixel `(oy, ox)` of one sample into `row`. Where a patch row lies
/// inside the image and the convolution is not grouped, its `k` pixels are one contiguous
/// run of `k·c` values.
fn patch<T: Copy>(x: &[T], row: &mut [T], g: &ConvGeom, c0: usize, pad: T, oy: usize, ox: usize) {
    let cg = g.cg;
    let run = g.k * cg;
    let ix0 = (ox * g.stride) as isize - g.pad as isize;
    let inside_x = ix0 >= 0 && ix0 as usize + g.k <= g.w;
    for ky in 0..g.k {
        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
        let dst = &mut row[ky * run..(ky + 1) * run];
        if iy < 0 || iy >= g.h as isize {
            dst.fill(pad);
            continue;
        }
        let line = iy as usize * g.w;
        if inside_x && cg == g.c {
            let at = (line + ix0 as usize) * g.c;
            copy_run(dst, &x[at..at + run]);
            continue;
        }
        for kx in 0..g.k {
            let ix = ix0 + kx as isize;
            let d = &mut dst[kx * cg..(kx + 1) * cg];
            if ix < 0 || ix >= g.w as isize {
                d.fill(pad);
            } else {
                let at = (line + ix as usize) * g.c + c0;
                copy_run(d, &x[at..at + cg]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised dynamic quantization gives exactly the codes of the plain formula,
    /// ties and NaN included.
    #[test]
    fn dynamic_quantization_matches_the_plain_formula() {
        let mut x: Vec<f32> = (0..1000)
            .map(|i| ((i as f32 * 0.7371).sin() * 3.0) - 0.5)
            .collect();
        x[17] = f32::NAN;
        // Values that land exactly on .5 codes after scaling by 255 / 8.
        x.extend([-4.0, 4.0, 0.5 * 8.0 / 255.0, 2.5 * 8.0 / 255.0 - 4.0]);
        let mut out = vec![0u8; x.len()];
        let (scale, zero) = quantize_row(&x, &mut out, ActIn::Dynamic);
        let (lo, hi) = x
            .iter()
            .filter(|v| !v.is_nan())
            .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        assert_eq!(scale, (hi - lo) / 255.0);
        let inv = 1.0 / scale;
        let z = (-lo * inv).round_ties_even().clamp(0.0, 255.0);
        assert_eq!(zero, z as i64);
        for (i, (&v, &o)) in x.iter().zip(&out).enumerate() {
            let want = (v * inv + z).round_ties_even().clamp(0.0, 255.0) as u8;
            assert_eq!(o, want, "element {i}: {v}");
        }
        assert_eq!(out[17], 0);
    }
}
