//! The model zoo: architectures built as graphs, with PyTorch's default initialisation
//! (uniform in ±1/sqrt(fan_in) for Linear weights and biases), drawn from a seeded RNG.

use std::collections::BTreeMap;

use candle_core::Tensor;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::error::{NnError, Result};
use crate::graph::{Graph, GraphSpec, Node, Op, INPUT};
use crate::ops::Init;

/// Names of the models `build` knows.
pub const MODELS: &[&str] = &["mlp", "lenet-300-100", "lenet-5", "resnet-8", "mobilenet-s"];

/// Builds the spec of a zoo model for inputs of `input_shape` and `num_classes` classes.
pub fn spec(name: &str, input_shape: &[usize], num_classes: usize) -> Result<GraphSpec> {
    let image = || -> Result<usize> {
        match input_shape {
            [c, h, w] if *h >= 16 && *w >= 16 => Ok(*c),
            other => Err(NnError::Graph(format!(
                "model `{name}` needs [channels, height, width] images of at least 16x16, the data has samples {other:?}"
            ))),
        }
    };
    let spec = match name {
        "mlp" => mlp_spec(name, input_shape, &[256, 128], num_classes),
        "lenet-300-100" => mlp_spec(name, input_shape, &[300, 100], num_classes),
        "lenet-5" => lenet5(input_shape, image()?, num_classes),
        "resnet-8" => resnet8(input_shape, image()?, num_classes),
        "mobilenet-s" => mobilenet_s(input_shape, image()?, num_classes),
        other => return Err(NnError::UnknownModel(other.to_string())),
    };
    spec.summarize()?;
    Ok(spec)
}

/// Appends nodes in sequence, keeping track of the last node and its channel count.
struct Builder {
    nodes: Vec<Node>,
    last: String,
    channels: usize,
}

impl Builder {
    fn new(channels: usize) -> Self {
        Builder {
            nodes: Vec::new(),
            last: INPUT.to_string(),
            channels,
        }
    }

    fn push(&mut self, name: &str, op: Op, inputs: Vec<String>) -> String {
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs,
        });
        self.last = name.to_string();
        self.last.clone()
    }

    fn then(&mut self, name: &str, op: Op) -> String {
        let input = self.last.clone();
        self.push(name, op, vec![input])
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        bias: bool,
    ) -> String {
        let op = Op::Conv2d {
            in_channels: self.channels,
            out_channels: out,
            kernel_size: k,
            stride,
            padding,
            groups,
            bias,
        };
        self.channels = out;
        self.then(name, op)
    }

    fn bn(&mut self, name: &str) -> String {
        let op = Op::BatchNorm2d {
            num_features: self.channels,
            eps: 1e-5,
            momentum: 0.1,
        };
        self.then(name, op)
    }

    fn finish(self, name: &str, input_shape: &[usize], num_classes: usize) -> GraphSpec {
        GraphSpec {
            name: name.to_string(),
            input_shape: input_shape.to_vec(),
            num_classes,
            output: self.last,
            nodes: self.nodes,
            weight_quant: BTreeMap::new(),
            sparse: Default::default(),
            act_quant: BTreeMap::new(),
            preprocessing: None,
        }
    }
}

/// LeNet-5 as Deep Compression used it (Caffe's LeNet): conv 20@5x5, max-pool, conv
/// 50@5x5, max-pool, fc 500, fc 10; about 431K weights on 28x28 inputs. A ReLU follows
/// each pooling, which adds no weights.
fn lenet5(input_shape: &[usize], channels: usize, num_classes: usize) -> GraphSpec {
    let mut b = Builder::new(channels);
    b.conv("conv1", 20, 5, 1, 0, 1, true);
    b.then(
        "pool1",
        Op::MaxPool2d {
            kernel_size: 2,
            stride: None,
        },
    );
    b.then("relu1", Op::Relu);
    b.conv("conv2", 50, 5, 1, 0, 1, true);
    b.then(
        "pool2",
        Op::MaxPool2d {
            kernel_size: 2,
            stride: None,
        },
    );
    b.then("relu2", Op::Relu);
    b.then("flatten", Op::Flatten);
    let (h, w) = (input_shape[1], input_shape[2]);
    let features = 50 * ((h - 4) / 2 - 4) / 2 * (((w - 4) / 2 - 4) / 2);
    b.then(
        "fc1",
        Op::Linear {
            in_features: features,
            out_features: 500,
            bias: true,
        },
    );
    b.then("relu3", Op::Relu);
    b.then(
        "fc2",
        Op::Linear {
            in_features: 500,
            out_features: num_classes,
            bias: true,
        },
    );
    b.finish("lenet-5", input_shape, num_classes)
}

/// A ResNet-8 for small images: a 16-channel stem, three basic residual blocks (16, 32,
/// 64 channels; the last two halve the resolution, with 1x1 projection shortcuts), global
/// average pooling and a linear classifier. Convolutions before batch norm have no bias.
fn resnet8(input_shape: &[usize], channels: usize, num_classes: usize) -> GraphSpec {
    let mut b = Builder::new(channels);
    b.conv("conv1", 16, 3, 1, 1, 1, false);
    b.bn("bn1");
    b.then("relu1", Op::Relu);
    for (i, (width, stride)) in [(16, 1), (32, 2), (64, 2)].into_iter().enumerate() {
        let block = format!("layer{}", i + 1);
        let (input, in_channels) = (b.last.clone(), b.channels);
        b.conv(&format!("{block}.conv1"), width, 3, stride, 1, 1, false);
        b.bn(&format!("{block}.bn1"));
        b.then(&format!("{block}.relu1"), Op::Relu);
        b.conv(&format!("{block}.conv2"), width, 3, 1, 1, 1, false);
        let main = b.bn(&format!("{block}.bn2"));
        let shortcut = if stride != 1 || in_channels != width {
            b.last = input;
            b.channels = in_channels;
            b.conv(
                &format!("{block}.shortcut.0"),
                width,
                1,
                stride,
                0,
                1,
                false,
            );
            b.bn(&format!("{block}.shortcut.1"))
        } else {
            input
        };
        b.push(&format!("{block}.add"), Op::Add, vec![main, shortcut]);
        b.then(&format!("{block}.relu2"), Op::Relu);
    }
    b.then("pool", Op::GlobalAvgPool);
    b.then(
        "fc",
        Op::Linear {
            in_features: 64,
            out_features: num_classes,
            bias: true,
        },
    );
    b.finish("resnet-8", input_shape, num_classes)
}

/// A small MobileNet-style network: a 16-channel stem, then depthwise-separable blocks
/// (3x3 depthwise with stride, 1x1 pointwise) to 32, 64 and 128 channels, global average
/// pooling and a linear classifier.
fn mobilenet_s(input_shape: &[usize], channels: usize, num_classes: usize) -> GraphSpec {
    let mut b = Builder::new(channels);
    b.conv("conv1", 16, 3, 1, 1, 1, false);
    b.bn("bn1");
    b.then("relu1", Op::Relu);
    for (i, width) in [32, 64, 128].into_iter().enumerate() {
        let block = format!("block{}", i + 1);
        let c = b.channels;
        b.conv(&format!("{block}.dw"), c, 3, 2, 1, c, false);
        b.bn(&format!("{block}.dw_bn"));
        b.then(&format!("{block}.dw_relu"), Op::Relu);
        b.conv(&format!("{block}.pw"), width, 1, 1, 0, 1, false);
        b.bn(&format!("{block}.pw_bn"));
        b.then(&format!("{block}.pw_relu"), Op::Relu);
    }
    b.then("pool", Op::GlobalAvgPool);
    b.then("dropout", Op::Dropout { p: 0.1 });
    b.then(
        "fc",
        Op::Linear {
            in_features: 128,
            out_features: num_classes,
            bias: true,
        },
    );
    b.finish("mobilenet-s", input_shape, num_classes)
}

/// A multilayer perceptron `flatten → (fc, relu)* → fc` with layers `fc1..fcN`.
pub fn mlp_spec(
    name: &str,
    input_shape: &[usize],
    hidden: &[usize],
    num_classes: usize,
) -> GraphSpec {
    let mut nodes = vec![Node {
        name: "flatten".into(),
        op: Op::Flatten,
        inputs: vec![INPUT.into()],
    }];
    let mut prev = "flatten".to_string();
    let mut in_features: usize = input_shape.iter().product();
    for (i, &width) in hidden
        .iter()
        .chain(std::iter::once(&num_classes))
        .enumerate()
    {
        let fc = format!("fc{}", i + 1);
        nodes.push(Node {
            name: fc.clone(),
            op: Op::Linear {
                in_features,
                out_features: width,
                bias: true,
            },
            inputs: vec![prev.clone()],
        });
        prev = fc;
        if i < hidden.len() {
            let relu = format!("relu{}", i + 1);
            nodes.push(Node {
                name: relu.clone(),
                op: Op::Relu,
                inputs: vec![prev.clone()],
            });
            prev = relu;
        }
        in_features = width;
    }
    GraphSpec {
        name: name.to_string(),
        input_shape: input_shape.to_vec(),
        num_classes,
        nodes,
        output: prev,
        weight_quant: BTreeMap::new(),
        sparse: Default::default(),
        act_quant: BTreeMap::new(),
        preprocessing: None,
    }
}

/// Initialises the parameters of `spec` with PyTorch's defaults, as each op declares them
/// (`ops::Init`): weights and biases uniform in ±1/sqrt(fan_in); batch norm with weight 1,
/// bias 0 and unit running statistics.
pub fn init(spec: GraphSpec, seed: u64) -> Result<Graph> {
    let mut rng = StdRng::seed_from_u64(seed);
    let device = crate::device();
    let defs = spec.param_defs();
    let mut params = BTreeMap::new();
    for (name, def) in &defs {
        let count: usize = def.shape.iter().product();
        let values: Vec<f32> = match def.init {
            Init::Ones => vec![1.0; count],
            Init::Zeros => vec![0.0; count],
            Init::FanIn => {
                // A bias shares its layer's fan-in.
                let owner = &name[..name.rfind('.').unwrap_or(0)];
                let weight = format!("{owner}.weight");
                let fan_in: usize = defs
                    .iter()
                    .find(|(n, _)| *n == weight)
                    .map_or(1, |(_, w)| w.shape[1..].iter().product());
                let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                (0..count)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect()
            }
        };
        params.insert(
            name.clone(),
            Tensor::from_vec(values, def.shape.clone(), &device)?,
        );
    }
    Graph::new(spec, params)
}

/// Builds and initialises a zoo model.
pub fn build(name: &str, input_shape: &[usize], num_classes: usize, seed: u64) -> Result<Graph> {
    init(spec(name, input_shape, num_classes)?, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoo_models_have_the_documented_sizes_and_run() {
        let lenet5 = build("lenet-5", &[1, 28, 28], 10, 0).unwrap();
        assert_eq!(lenet5.num_params(), 431_080);
        let lenet = build("lenet-300-100", &[1, 28, 28], 10, 0).unwrap();
        assert_eq!(lenet.num_params(), 266_610);
        for name in ["resnet-8", "mobilenet-s"] {
            for shape in [[1usize, 28, 28], [3, 32, 32]] {
                let g = build(name, &shape, 10, 0).unwrap();
                let mut dims = vec![2];
                dims.extend_from_slice(&shape);
                let x = Tensor::randn(0f32, 1.0, dims, &crate::device()).unwrap();
                assert_eq!(g.forward(&x).unwrap().dims(), &[2, 10], "{name} {shape:?}");
                let mut ctx = crate::ForwardContext::train(1);
                let y = g
                    .forward_ctx(&x, &|n| Ok(g.param(n)?.clone()), &mut ctx)
                    .unwrap();
                assert_eq!(y.dims(), &[2, 10]);
                let bns = g
                    .spec
                    .nodes
                    .iter()
                    .filter(|n| matches!(n.op, Op::BatchNorm2d { .. }))
                    .count();
                assert_eq!(ctx.buffer_updates.len(), 2 * bns);
            }
        }
        let err = build("lenet-5", &[64], 10, 0).unwrap_err().to_string();
        assert!(err.contains("lenet-5") && err.contains("[64]"), "{err}");
    }
}
