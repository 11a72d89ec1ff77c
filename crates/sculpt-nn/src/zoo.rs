//! The model zoo: architectures built as graphs, with PyTorch's default initialisation
//! (uniform in ±1/sqrt(fan_in) for Linear weights and biases), drawn from a seeded RNG.

use std::collections::BTreeMap;

use candle_core::Tensor;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::error::{NnError, Result};
use crate::graph::{Graph, GraphSpec, Node, Op, INPUT};

/// Names of the models `build` knows.
pub const MODELS: &[&str] = &["mlp", "lenet-300-100"];

/// Builds the spec of a zoo model for inputs of `input_shape` and `num_classes` classes.
pub fn spec(name: &str, input_shape: &[usize], num_classes: usize) -> Result<GraphSpec> {
    let hidden: &[usize] = match name {
        "mlp" => &[256, 128],
        "lenet-300-100" => &[300, 100],
        other => return Err(NnError::UnknownModel(other.to_string())),
    };
    Ok(mlp_spec(name, input_shape, hidden, num_classes))
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
        weight_bits: BTreeMap::new(),
    }
}

/// Initialises the parameters of `spec` with PyTorch's defaults.
pub fn init(spec: GraphSpec, seed: u64) -> Result<Graph> {
    let mut rng = StdRng::seed_from_u64(seed);
    let device = crate::device();
    let mut params = BTreeMap::new();
    for (name, shape) in spec.param_shapes() {
        let fan_in = if shape.len() == 2 {
            shape[1]
        } else {
            // A bias shares its layer's fan-in.
            let weight = name.replace(".bias", ".weight");
            spec.param_shapes()
                .into_iter()
                .find(|(n, _)| *n == weight)
                .map(|(_, s)| s[1])
                .unwrap_or(1)
        };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        params.insert(name, Tensor::from_vec(values, shape, &device)?);
    }
    Graph::new(spec, params)
}

/// Builds and initialises a zoo model.
pub fn build(name: &str, input_shape: &[usize], num_classes: usize, seed: u64) -> Result<Graph> {
    init(spec(name, input_shape, num_classes)?, seed)
}
