//! The ops of the graph IR, each defined in one place: its `model.toml` form (a variant of
//! [`Op`]), the parameters and buffers it reads, its shape inference, validation and FLOPs,
//! its forward pass in evaluation and training mode, and its cost class for latency
//! models. The graph's parameter table, layer summary and forward pass, zoo initialisation
//! and the roofline model only loop over nodes and ask the op's [`OpDef`].
//!
//! A new op is one new entry here:
//! 1. a variant of [`Op`] with its `model.toml` fields (serde defaults for optional ones);
//! 2. a struct with the same fields that implements [`OpDef`]: `kind` (PyTorch's class
//!    name), `arity` if it is not 1, `params` (every parameter and buffer by local name,
//!    with shape and initialisation; buffer names must satisfy [`GraphSpec::is_buffer`]),
//!    `infer` (validation, output shape and FLOPs per sample), `forward` (both modes),
//!    `cost`, and `channels` if the op does not simply keep its input's channels;
//! 3. one arm in [`Op::def`] that builds the struct from the variant, and, if the op has
//!    channel-count fields, an arm in [`Op::resize_channels`].
//!
//! Structured pruning asks only `channels`, `params` and `resize_channels`. Passes that
//! rewrite particular ops (folding, low-rank factorisation) still match on the variants
//! they know; a new op is simply left alone by them.
//!
//! [`GraphSpec::is_buffer`]: crate::GraphSpec::is_buffer

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::graph::ForwardContext;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// `y = x W^T + b`, with `W` of shape `[out_features, in_features]`.
    Linear {
        in_features: usize,
        out_features: usize,
        #[serde(default = "default_true")]
        bias: bool,
    },
    /// 2-D convolution over `[channels, height, width]`, weight `[out, in / groups, k, k]`.
    /// `groups = in_channels = out_channels` is a depthwise convolution.
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        #[serde(default = "default_one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "default_one")]
        groups: usize,
        #[serde(default = "default_true")]
        bias: bool,
    },
    /// Batch normalisation over channels: batch statistics when training, running
    /// statistics (`running_mean`, `running_var`) when evaluating.
    BatchNorm2d {
        num_features: usize,
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default = "default_momentum")]
        momentum: f64,
    },
    MaxPool2d {
        kernel_size: usize,
        #[serde(default)]
        stride: Option<usize>,
    },
    AvgPool2d {
        kernel_size: usize,
        #[serde(default)]
        stride: Option<usize>,
    },
    /// Mean over the spatial dimensions: `[c, h, w]` → `[c]`.
    GlobalAvgPool,
    Relu,
    /// Flattens every dimension after the batch dimension.
    Flatten,
    /// Element-wise sum of two inputs of the same shape (residual connections).
    Add,
    /// Zeroes each value with probability `p` when training (scaling the rest by 1/(1-p)).
    Dropout {
        p: f64,
    },
}

pub(crate) fn default_true() -> bool {
    true
}

fn default_one() -> usize {
    1
}

fn default_eps() -> f64 {
    1e-5
}

fn default_momentum() -> f64 {
    0.1
}

impl Op {
    /// The op's definition. This match is the only place that turns a variant into its
    /// behaviour; everything else asks the returned [`OpDef`].
    /// Sets the op's channel counts after structured pruning: `input` for the channels it
    /// reads through its weight (a producer), `output` for the channels it makes or keeps.
    /// Ops without such fields are unchanged.
    pub fn resize_channels(&mut self, input: Option<usize>, output: Option<usize>) {
        match self {
            Op::Linear {
                in_features,
                out_features,
                ..
            } => {
                if let Some(n) = input {
                    *in_features = n;
                }
                if let Some(n) = output {
                    *out_features = n;
                }
            }
            Op::Conv2d {
                in_channels,
                out_channels,
                groups,
                ..
            } => {
                let depthwise =
                    *groups > 1 && *groups == *in_channels && *in_channels == *out_channels;
                if depthwise {
                    if let Some(n) = output.or(input) {
                        (*in_channels, *out_channels, *groups) = (n, n, n);
                    }
                } else {
                    if let Some(n) = input {
                        *in_channels = n;
                    }
                    if let Some(n) = output {
                        *out_channels = n;
                    }
                }
            }
            Op::BatchNorm2d { num_features, .. } => {
                if let Some(n) = output {
                    *num_features = n;
                }
            }
            _ => {}
        }
    }

    pub fn def(&self) -> Box<dyn OpDef> {
        match *self {
            Op::Linear {
                in_features,
                out_features,
                bias,
            } => Box::new(Linear {
                in_features,
                out_features,
                bias,
            }),
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                groups,
                bias,
            } => Box::new(Conv2d {
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                groups,
                bias,
            }),
            Op::BatchNorm2d {
                num_features,
                eps,
                momentum,
            } => Box::new(BatchNorm2d {
                num_features,
                eps,
                momentum,
            }),
            Op::MaxPool2d {
                kernel_size,
                stride,
            } => Box::new(MaxPool2d {
                kernel_size,
                stride,
            }),
            Op::AvgPool2d {
                kernel_size,
                stride,
            } => Box::new(AvgPool2d {
                kernel_size,
                stride,
            }),
            Op::GlobalAvgPool => Box::new(GlobalAvgPool),
            Op::Relu => Box::new(Relu),
            Op::Flatten => Box::new(Flatten),
            Op::Add => Box::new(Add),
            Op::Dropout { p } => Box::new(Dropout { p }),
        }
    }

    /// The op's name in layer tables (PyTorch's class names).
    pub fn kind(&self) -> &'static str {
        self.def().kind()
    }

    /// Number of inputs the op takes.
    pub fn arity(&self) -> usize {
        self.def().arity()
    }
}

/// What an op is: everything the graph, the zoo and the latency models need to know about
/// one kind of node.
pub trait OpDef {
    /// The op's name in layer tables: PyTorch's class name.
    fn kind(&self) -> &'static str;

    /// Number of inputs.
    fn arity(&self) -> usize {
        1
    }

    /// The tensors the op reads, by local name (`weight`; the graph stores it as
    /// `fc1.weight`), in PyTorch's order.
    fn params(&self) -> Vec<ParamDef> {
        Vec::new()
    }

    /// Checks the op against the shapes of its inputs (one sample, no batch dimension;
    /// as many as `arity`) and returns its output shape and FLOPs per sample. The error is
    /// a message about the op that the graph prefixes with the node's name.
    fn infer(&self, inputs: &[&[usize]]) -> std::result::Result<Inferred, String>;

    /// Computes the op on batched inputs (activation quantization, if any, already applied
    /// to the first), reading parameters and the pass's mode through `env`.
    fn forward(&self, inputs: &[&Tensor], env: &mut OpEnv) -> Result<Tensor>;

    /// How latency models charge the op.
    fn cost(&self) -> CostClass;

    /// How the op's channels relate to its inputs', for structured pruning.
    fn channels(&self) -> ChannelRule {
        ChannelRule::Follow
    }
}

/// How an op's output channels relate to its inputs', which is all structured pruning
/// needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRule {
    /// Starts a new channel space: its output channels (dimension 0 of each of its
    /// parameters) can be chosen freely, and it reads its input's channels through
    /// dimension 1 of its weight (Linear, an ungrouped convolution).
    Produce,
    /// Keeps channel `c` of its input at index `c` (element-wise ops, pooling, flatten);
    /// any parameters it has are per channel along dimension 0 (batch norm).
    Follow,
    /// A depthwise convolution: it follows its input's channels, with per-channel
    /// parameters along dimension 0, and its groups equal its channels.
    Depthwise,
    /// Puts all its inputs and its output in one channel space (a residual sum).
    Join,
    /// Ties channels in blocks, so that none can be removed through it; the reason.
    Blocked(String),
}

/// One parameter or buffer of an op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamDef {
    /// Local name: the graph stores it as `{node}.{name}`.
    pub name: &'static str,
    pub shape: Vec<usize>,
    /// Updated by the forward pass (running statistics), not by gradient, and not counted
    /// as a parameter.
    pub buffer: bool,
    /// How a freshly built model fills it.
    pub init: Init,
}

impl ParamDef {
    fn trained(name: &'static str, shape: Vec<usize>, init: Init) -> Self {
        ParamDef {
            name,
            shape,
            buffer: false,
            init,
        }
    }

    fn buffer(name: &'static str, shape: Vec<usize>, init: Init) -> Self {
        ParamDef {
            name,
            shape,
            buffer: true,
            init,
        }
    }
}

/// PyTorch's default initialisation of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Uniform in ±1/sqrt(fan_in), where fan_in is the product of the node's `weight`
    /// dimensions after the first (a bias shares its layer's fan-in).
    FanIn,
    Zeros,
    Ones,
}

/// What shape inference learns about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inferred {
    /// Output shape of one sample.
    pub output: Vec<usize>,
    /// FLOPs for one sample (a multiply-add is two).
    pub flops: u64,
}

/// How a latency model charges an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostClass {
    /// A layer with a `weight` (and optionally an f32 `bias`) that compression shrinks:
    /// its arithmetic runs at the rate of the weight's stored bit width and it reads the
    /// weight as stored.
    Weighted,
    /// f32 arithmetic over activations (normalisation, pooling, residual sums) that reads
    /// its parameters and buffers as f32.
    Elementwise,
    /// Applied in the epilogue of the layer before it (a ReLU after a layer), so free.
    Fused,
    /// Moves no data at inference (a reshape, or dropout, the identity), so free.
    View,
}

/// What an op's forward pass reaches besides its inputs: its node's parameters by local
/// name and the pass's mode, dropout RNG and running-statistics updates.
pub struct OpEnv<'a> {
    node: &'a str,
    param: &'a dyn Fn(&str) -> Result<Tensor>,
    ctx: &'a mut ForwardContext,
}

impl<'a> OpEnv<'a> {
    /// The environment of node `node`, looking its parameters up by full name in `param`.
    pub fn new(
        node: &'a str,
        param: &'a dyn Fn(&str) -> Result<Tensor>,
        ctx: &'a mut ForwardContext,
    ) -> Self {
        OpEnv { node, param, ctx }
    }

    pub fn node(&self) -> &str {
        self.node
    }

    /// The node's parameter or buffer `name` (a local name such as `weight`).
    pub fn param(&self, name: &str) -> Result<Tensor> {
        (self.param)(&format!("{}.{name}", self.node))
    }

    /// Whether this is a training pass.
    pub fn training(&self) -> bool {
        self.ctx.train
    }

    /// The pass's RNG, if it has one (training passes do).
    pub fn rng(&mut self) -> Option<&mut rand::rngs::StdRng> {
        self.ctx.rng.as_mut()
    }

    /// Records a new value for the node's buffer `name`, for the caller to store.
    pub fn update_buffer(&mut self, name: &str, value: Tensor) {
        self.ctx
            .buffer_updates
            .push((format!("{}.{name}", self.node), value));
    }
}

/// The one input of a single-input op.
fn single<'a>(inputs: &[&'a [usize]]) -> &'a [usize] {
    inputs[0]
}

fn chw(input: &[usize]) -> std::result::Result<(usize, usize, usize), String> {
    match input {
        [c, h, w] => Ok((*c, *h, *w)),
        other => Err(format!(
            "expects a [channels, height, width] input, receives {other:?}"
        )),
    }
}

fn numel(shape: &[usize]) -> u64 {
    shape.iter().product::<usize>() as u64
}

/// `y = x W^T + b`.
#[derive(Debug, Clone, Copy)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
}

impl OpDef for Linear {
    fn kind(&self) -> &'static str {
        "Linear"
    }

    fn params(&self) -> Vec<ParamDef> {
        let mut params = vec![ParamDef::trained(
            "weight",
            vec![self.out_features, self.in_features],
            Init::FanIn,
        )];
        if self.bias {
            params.push(ParamDef::trained(
                "bias",
                vec![self.out_features],
                Init::FanIn,
            ));
        }
        params
    }

    fn infer(&self, inputs: &[&[usize]]) -> std::result::Result<Inferred, String> {
        let (input, n_in, n_out) = (single(inputs), self.in_features, self.out_features);
        if input != [n_in] {
            return Err(format!(
                "expects {n_in} input features but receives shape {input:?}"
            ));
        }
        let bias = if self.bias { n_out as u64 } else { 0 };
        Ok(Inferred {
            output: vec![n_out],
            flops: 2 * (n_in as u64) * (n_out as u64) + bias,
        })
    }

    fn forward(&self, inputs: &[&Tensor], env: &mut OpEnv) -> Result<Tensor> {
        let y = crate::matmul::linear(inputs[0], &env.param("weight")?)?;
        Ok(if self.bias {
            y.broadcast_add(&env.param("bias")?)?
        } else {
            y
        })
    }

    fn cost(&self) -> CostClass {
        CostClass::Weighted
    }

    fn channels(&self) -> ChannelRule {
        ChannelRule::Produce
    }
}

/// 2-D convolution, grouped or depthwise.
#[derive(Debug, Clone, Copy)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_size: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub bias: bool,
}

impl OpDef for Conv2d {
    fn kind(&self) -> &'static str {
        "Conv2d"
    }

    fn params(&self) -> Vec<ParamDef> {
        let k = self.kernel_size;
        // `max(1)` so a spec with groups = 0 still lists its tensors; `infer` rejects it.
        let per_group = self.in_channels / self.groups.max(1);
        let mut params = vec![ParamDef::trained(
            "weight",
            vec![self.out_channels, per_group, k, k],
            Init::FanIn,
        )];
        if self.bias {
            params.push(ParamDef::trained(
                "bias",
                vec![self.out_channels],
                Init::FanIn,
            ));
        }
        params
    }

    fn infer(&self, inputs: &[&[usize]]) -> std::result::Result<Inferred, String> {
        let Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            groups,
            bias,
        } = *self;
        let (c, h, w) = chw(single(inputs))?;
        if c != in_channels {
            return Err(format!("expects {in_channels} channels, receives {c}"));
        }
        if groups == 0 || c % groups != 0 || out_channels % groups != 0 {
            return Err(format!(
                "groups = {groups} must divide in_channels ({c}) and out_channels ({out_channels})"
            ));
        }
        if stride == 0 || h + 2 * padding < kernel_size || w + 2 * padding < kernel_size {
            return Err(format!(
                "a {kernel_size}x{kernel_size} kernel with padding {padding} and stride {stride} does not fit a {h}x{w} input"
            ));
        }
        let ho = (h + 2 * padding - kernel_size) / stride + 1;
        let wo = (w + 2 * padding - kernel_size) / stride + 1;
        let per_output = (c / groups * kernel_size * kernel_size) as u64;
        let outputs = (out_channels * ho * wo) as u64;
        Ok(Inferred {
            output: vec![out_channels, ho, wo],
            flops: 2 * per_output * outputs + if bias { outputs } else { 0 },
        })
    }

    fn forward(&self, inputs: &[&Tensor], env: &mut OpEnv) -> Result<Tensor> {
        let bias = if self.bias {
            Some(env.param("bias")?)
        } else {
            None
        };
        crate::conv::conv2d(
            inputs[0],
            &env.param("weight")?,
            bias.as_ref(),
            self.stride,
            self.padding,
            self.groups,
        )
    }

    fn cost(&self) -> CostClass {
        CostClass::Weighted
    }

    fn channels(&self) -> ChannelRule {
        if self.groups == 1 {
            ChannelRule::Produce
        } else if self.groups == self.in_channels && self.in_channels == self.out_channels {
            ChannelRule::Depthwise
        } else {
            ChannelRule::Blocked(format!("{} groups tie its channels in blocks", self.groups))
        }
    }
}

/// Batch normalisation over the channels of `[c, h, w]`.
#[derive(Debug, Clone, Copy)]
pub struct BatchNorm2d {
    pub num_features: usize,
    pub eps: f64,
    pub momentum: f64,
}

impl OpDef for BatchNorm2d {
    fn kind(&self) -> &'static str {
        "BatchNorm2d"
    }

    fn params(&self) -> Vec<ParamDef> {
        let c = vec![self.num_features];
        vec![
            ParamDef::trained("weight", c.clone(), Init::Ones),
            ParamDef::trained("bias", c.clone(), Init::Zeros),
            ParamDef::buffer("running_mean", c.clone(), Init::Zeros),
            ParamDef::buffer("running_var", c, Init::Ones),
        ]
    }

    fn infer(&self, inputs: &[&[usize]]) -> std::result::Result<Inferred, String> {
        let BatchNorm2d {
            num_features,
            eps,
            momentum,
        } = *self;
        if !(eps > 0.0 && eps.is_finite() && (0.0..=1.0).contains(&momentum)) {
            return Err(format!(
                "batch norm needs eps > 0 and momentum in [0, 1], got eps = {eps}, momentum = {momentum}"
            ));
        }
        let input = single(inputs);
        let (c, _, _) = chw(input)?;
        if c != num_features {
            return Err(format!("expects {num_features} channels, receives {c}"));
        }
        Ok(Inferred {
            output: input.to_vec(),
            flops: 2 * numel(input),
        })
    }

    fn forward(&self, inputs: &[&Tensor], env: &mut OpEnv) -> Result<Tensor> {
        let input = inputs[0];
        let (b, c, h, w) = input.dims4()?;
        if env.training() {
            // One fused kernel (see `batchnorm`); it also returns the batch statistics for
            // the running averages.
            let (y, mean, var) = crate::batchnorm::batch_norm_train(
                input,
                &env.param("weight")?,
                &env.param("bias")?,
                self.eps,
            )?;
            // PyTorch keeps the unbiased variance in `running_var`.
            let n = (b * h * w) as f64;
            let unbiased: Vec<f32> = var
                .iter()
                .map(|v| (*v as f64 * n / (n - 1.0).max(1.0)) as f32)
                .collect();
            for (name, batch) in [("running_mean", mean), ("running_var", unbiased)] {
                let batch = Tensor::from_vec(batch, c, input.device())?;
                let running = env.param(name)?;
                let updated = ((running * (1.0 - self.momentum))? + (batch * self.momentum)?)?;
                env.update_buffer(name, updated);
            }
            Ok(y)
        } else {
            // Running statistics fold into one scale and one shift per channel.
            let scale = (env.param("weight")? / (env.param("running_var")? + self.eps)?.sqrt()?)?;
            let shift = (env.param("bias")? - (env.param("running_mean")? * &scale)?)?;
            Ok(input
                .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
                .broadcast_add(&shift.reshape((1, c, 1, 1))?)?)
        }
    }

    fn cost(&self) -> CostClass {
        CostClass::Elementwise
    }
}

/// Shape and FLOPs of a `kernel_size` window sliding by `stride` (default: the kernel)
/// over each channel: one operation per window element.
fn infer_window(
    inputs: &[&[usize]],
    kernel_size: usize,
    stride: Option<usize>,
) -> std::result::Result<Inferred, String> {
    let (c, h, w) = chw(single(inputs))?;
    let s = stride.unwrap_or(kernel_size);
    if kernel_size == 0 || s == 0 || h < kernel_size || w < kernel_size {
        return Err(format!(
            "a {kernel_size}x{kernel_size} window does not fit a {h}x{w} input"
        ));
    }
    let (ho, wo) = ((h - kernel_size) / s + 1, (w - kernel_size) / s + 1);
    Ok(Inferred {
        output: vec![c, ho, wo],
        flops: (c * ho * wo * kernel_size * kernel_size) as u64,
    })
}

/// Maximum over each window.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d {
    pub kernel_size: usize,
    pub stride: Option<usize>,
}

impl OpDef for MaxPool2d {
    fn kind(&self) -> &'static str {
        "MaxPool2d"
    }

    fn infer(&self, inputs: &[&[usize]]) -> std::result::Result<Inferred, String> {
        infer_window(inputs, self.kernel_size, self.stride)
    }

    fn forward(&self, inputs: &[&Tensor], _env: &mut OpEnv) -> Result<Tensor> {
        let stride = self.stride.unwrap_or(self.kernel_size);
        crate::conv::max_pool2d(inputs[0], self.kernel_size, stride)
    }

    fn cost(&self) -> CostClass {
        CostClass::Elementwise
    }
}

/// Mean over each window.
#[derive(Debug, Clone, Copy)]
pub struct AvgPool2d {
    pub kernel_size: usize,
    pub stride: Option<usize>,
}

impl OpDef for AvgPool2d {
    fn kind(&self) -> &'static str {
        "AvgPool2d"
    }

    fn infer(&self, inputs: &[&[usize]]) -> std::result::Result<Inferred, String> {
        infer_window(inputs, self.kernel_size, self.stride)
    }

    fn forward(&self, inputs: &[&Tensor], _env: &mut OpEnv) -> Result<Tensor> {
        let stride = self.stride.unwrap_or(self.kernel_size);
        Ok(inputs[0].avg_pool2d_with_stride(self.kernel_size, stride)?)
    }

    fn cost(&self) -> CostClass {
        CostClass::Elementwise
    }
}

/// Mean over the spatial dimensions.
#[derive(Debug, Clone, Copy)]
pub struct GlobalAvgPool;

impl OpDef for GlobalAvgPool {
    fn kind(&self) -> &'static str {
        "GlobalAvgPool"
    }

    fn infer(&self, inputs: &[&[usize]]) -> std::result::Result<Inferred, String> {
        let input = single(inputs);
        let (c, _, _) = chw(input)?;
        Ok(Inferred {
            output: vec![c],
            flops: numel(input),
        })
    }

    fn forward(&self, inputs: &[&Tensor], _env: &mut OpEnv) -> Result<Tensor> {
        Ok(inputs[0].flatten_from(2)?.mean(2)?)
    }

    fn cost(&self) -> CostClass {
        CostClass::Elementwise
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Relu;

impl OpDef for Relu {
    fn kind(&self) -> &'static str {
        "ReLU"
    }

    fn infer(&self, inputs: &[&[usize]]) -> std::result::Result<Inferred, String> {
        let input = single(inputs);
        Ok(Inferred {
            output: input.to_vec(),
            flops: numel(input),
        })
    }

    fn forward(&self, inputs: &[&Tensor], _env: &mut OpEnv) -> Result<Tensor> {
        Ok(inputs[0].relu()?)
    }

    fn cost(&self) -> CostClass {
        CostClass::Fused
    }
}

/// Flattens every dimension after the batch dimension.
#[derive(Debug, Clone, Copy)]
pub struct Flatten;

impl OpDef for Flatten {
    fn kind(&self) -> &'static str {
        "Flatten"
    }

    fn infer(&self, inputs: &[&[usize]]) -> std::result::Result<Inferred, String> {
        Ok(Inferred {
            output: vec![single(inputs).iter().product()],
            flops: 0,
        })
    }

    fn forward(&self, inputs: &[&Tensor], _env: &mut OpEnv) -> Result<Tensor> {
        Ok(inputs[0].flatten_from(1)?)
    }

    fn cost(&self) -> CostClass {
        CostClass::View
    }
}

/// Element-wise sum of two inputs of the same shape.
#[derive(Debug, Clone, Copy)]
pub struct Add;

impl OpDef for Add {
    fn kind(&self) -> &'static str {
        "Add"
    }

    fn arity(&self) -> usize {
        2
    }

    fn infer(&self, inputs: &[&[usize]]) -> std::result::Result<Inferred, String> {
        let (a, b) = (inputs[0], inputs[1]);
        if a != b {
            return Err(format!("adds shapes {a:?} and {b:?}"));
        }
        Ok(Inferred {
            output: a.to_vec(),
            flops: numel(a),
        })
    }

    fn forward(&self, inputs: &[&Tensor], _env: &mut OpEnv) -> Result<Tensor> {
        Ok((inputs[0] + inputs[1])?)
    }

    fn cost(&self) -> CostClass {
        CostClass::Elementwise
    }

    fn channels(&self) -> ChannelRule {
        ChannelRule::Join
    }
}

/// Inverted dropout: identity when evaluating.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    pub p: f64,
}

impl OpDef for Dropout {
    fn kind(&self) -> &'static str {
        "Dropout"
    }

    fn infer(&self, inputs: &[&[usize]]) -> std::result::Result<Inferred, String> {
        let p = self.p;
        if !(0.0..1.0).contains(&p) {
            return Err(format!("dropout probability {p} is not in [0, 1)"));
        }
        Ok(Inferred {
            output: single(inputs).to_vec(),
            flops: 0,
        })
    }

    fn forward(&self, inputs: &[&Tensor], env: &mut OpEnv) -> Result<Tensor> {
        let input = inputs[0];
        let active = env.training() && self.p > 0.0;
        match env.rng() {
            Some(rng) if active => {
                use rand::Rng;
                let keep = 1.0 - self.p;
                let mask: Vec<f32> = (0..input.elem_count())
                    .map(|_| {
                        if rng.random::<f64>() < keep {
                            (1.0 / keep) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect();
                Ok((input * Tensor::from_vec(mask, input.dims(), input.device())?)?)
            }
            _ => Ok(input.clone()),
        }
    }

    fn cost(&self) -> CostClass {
        CostClass::View
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::graph::{Graph, GraphSpec, Node, INPUT};

    /// A graph with the ops the zoo does not use (average pooling).
    fn avg_pool_graph() -> Graph {
        let node = |name: &str, op: Op, input: &str| Node {
            name: name.into(),
            op,
            inputs: vec![input.into()],
        };
        let spec = GraphSpec {
            name: "avg".into(),
            input_shape: vec![2, 8, 8],
            num_classes: 3,
            nodes: vec![
                node(
                    "pool",
                    Op::AvgPool2d {
                        kernel_size: 3,
                        stride: Some(2),
                    },
                    INPUT,
                ),
                node("flatten", Op::Flatten, "pool"),
                node(
                    "fc",
                    Op::Linear {
                        in_features: 18,
                        out_features: 3,
                        bias: false,
                    },
                    "flatten",
                ),
            ],
            output: "fc".into(),
            weight_quant: BTreeMap::new(),
            sparse: Default::default(),
            act_quant: BTreeMap::new(),
            preprocessing: None,
        };
        crate::zoo::init(spec, 0).unwrap()
    }

    #[test]
    fn params_infer_and_forward_agree_for_every_op_kind() {
        let graphs = vec![
            crate::zoo::build("mlp", &[64], 10, 0).unwrap(),
            crate::zoo::build("lenet-5", &[1, 28, 28], 10, 0).unwrap(),
            crate::zoo::build("resnet-8", &[3, 16, 16], 10, 0).unwrap(),
            crate::zoo::build("mobilenet-s", &[3, 16, 16], 10, 0).unwrap(),
            avg_pool_graph(),
        ];
        let mut kinds = BTreeSet::new();
        for g in &graphs {
            let spec = &g.spec;
            let rows = spec.summarize().unwrap();
            let defs = spec.param_defs();
            for (name, def) in &defs {
                assert_eq!(def.buffer, GraphSpec::is_buffer(name), "{name}");
            }
            let declared: BTreeSet<String> = defs.iter().map(|(n, _)| n.clone()).collect();
            let buffers: BTreeSet<String> = defs
                .iter()
                .filter(|(_, d)| d.buffer)
                .map(|(n, _)| n.clone())
                .collect();
            let mut dims = vec![2];
            dims.extend_from_slice(&spec.input_shape);
            let x = Tensor::randn(0f32, 1.0, dims, &crate::device()).unwrap();
            for train in [false, true] {
                let ctx = if train {
                    ForwardContext::train(3)
                } else {
                    ForwardContext::eval()
                };
                let mut ctx = ctx.capturing(spec.nodes.iter().map(|n| n.name.clone()));
                let read = RefCell::new(BTreeSet::new());
                let param = |name: &str| {
                    read.borrow_mut().insert(name.to_string());
                    Ok(g.param(name)?.clone())
                };
                g.forward_ctx(&x, &param, &mut ctx).unwrap();
                let what = format!("{} (train = {train})", spec.name);
                // The forward pass reads exactly the tensors the ops declare...
                assert_eq!(read.into_inner(), declared, "{what}");
                // ...updates exactly the declared buffers, and only when training...
                let updated: BTreeSet<String> =
                    ctx.buffer_updates.iter().map(|(n, _)| n.clone()).collect();
                let expected = if train {
                    buffers.clone()
                } else {
                    BTreeSet::new()
                };
                assert_eq!(updated, expected, "{what}");
                // ...and gives every node the shape that inference gives it.
                for (node, row) in spec.nodes.iter().zip(&rows) {
                    let mut inferred = vec![2];
                    inferred.extend_from_slice(&row.output_shape);
                    assert_eq!(
                        ctx.captured[&node.name].dims(),
                        inferred.as_slice(),
                        "{what}: node `{}` ({})",
                        node.name,
                        row.op
                    );
                    let params: usize = node
                        .op
                        .def()
                        .params()
                        .iter()
                        .filter(|p| !p.buffer)
                        .map(|p| p.shape.iter().product::<usize>())
                        .sum();
                    assert_eq!(row.params, params, "{what}: node `{}`", node.name);
                    kinds.insert(row.op.clone());
                }
            }
        }
        let all: BTreeSet<String> = [
            "Linear",
            "Conv2d",
            "BatchNorm2d",
            "MaxPool2d",
            "AvgPool2d",
            "GlobalAvgPool",
            "ReLU",
            "Flatten",
            "Add",
            "Dropout",
        ]
        .map(String::from)
        .into();
        assert_eq!(kinds, all);
    }

    #[test]
    fn shape_errors_name_the_node_and_both_shapes() {
        let mut spec = crate::zoo::spec("lenet-5", &[1, 28, 28], 10).unwrap();
        let fc1 = spec.nodes.iter_mut().find(|n| n.name == "fc1").unwrap();
        fc1.op = Op::Linear {
            in_features: 700,
            out_features: 500,
            bias: true,
        };
        let err = spec.summarize().unwrap_err().to_string();
        assert!(
            err.contains("node `fc1`") && err.contains("700") && err.contains("[800]"),
            "{err}"
        );
        let mut spec = crate::zoo::spec("resnet-8", &[3, 16, 16], 10).unwrap();
        let add = spec
            .nodes
            .iter_mut()
            .find(|n| n.name == "layer2.add")
            .unwrap();
        add.inputs = vec!["layer2.bn2".into(), "layer1.relu2".into()];
        let err = spec.summarize().unwrap_err().to_string();
        assert!(
            err.contains("node `layer2.add`")
                && err.contains("[32, 8, 8]")
                && err.contains("[16, 16, 16]"),
            "{err}"
        );
    }

    #[test]
    fn model_toml_form_is_unchanged() {
        let ops: Vec<Op> = toml::from_str::<BTreeMap<String, Vec<Op>>>(
            r#"
            ops = [
                { op = "linear", in_features = 4, out_features = 2 },
                { op = "conv2d", in_channels = 1, out_channels = 2, kernel_size = 3 },
                { op = "batch_norm2d", num_features = 2 },
                { op = "max_pool2d", kernel_size = 2 },
                { op = "avg_pool2d", kernel_size = 2, stride = 1 },
                { op = "global_avg_pool" },
                { op = "relu" },
                { op = "flatten" },
                { op = "add" },
                { op = "dropout", p = 0.5 },
            ]
            "#,
        )
        .unwrap()
        .remove("ops")
        .unwrap();
        assert_eq!(
            ops[1],
            Op::Conv2d {
                in_channels: 1,
                out_channels: 2,
                kernel_size: 3,
                stride: 1,
                padding: 0,
                groups: 1,
                bias: true,
            }
        );
        assert_eq!(
            ops[2],
            Op::BatchNorm2d {
                num_features: 2,
                eps: 1e-5,
                momentum: 0.1,
            }
        );
        let kinds: Vec<&str> = ops.iter().map(Op::kind).collect();
        assert_eq!(
            kinds,
            [
                "Linear",
                "Conv2d",
                "BatchNorm2d",
                "MaxPool2d",
                "AvgPool2d",
                "GlobalAvgPool",
                "ReLU",
                "Flatten",
                "Add",
                "Dropout"
            ]
        );
        let unknown = toml::from_str::<BTreeMap<String, Vec<Op>>>(
            r#"ops = [{ op = "linear", in_features = 4, out_features = 2, inplace = true }]"#,
        );
        assert!(unknown.is_err());
    }
}
