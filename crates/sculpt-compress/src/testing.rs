//! Helpers shared by the tests of the passes: comparing outputs, and batch norms whose
//! parameters and statistics are random (so that a test of a pass through batch norm can
//! fail: fresh batch norms are the identity).

use candle_core::Tensor;
use rand::{rngs::StdRng, Rng, SeedableRng};
use sculpt_nn::{Graph, Op};

/// Largest absolute difference between two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Gives every batch norm of `g` seeded random γ (magnitude 0.5 to 1.5, either sign), β,
/// running mean and running variance.
pub fn randomise_batch_norms(g: &mut Graph, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let bns: Vec<(String, usize)> = g
        .spec
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::BatchNorm2d { num_features, .. } => Some((n.name.clone(), num_features)),
            _ => None,
        })
        .collect();
    for (bn, c) in bns {
        let mut draw =
            |lo: f32, hi: f32| -> Vec<f32> { (0..c).map(|_| rng.random_range(lo..hi)).collect() };
        let gamma: Vec<f32> = draw(0.5, 1.5)
            .into_iter()
            .zip(draw(-1.0, 1.0))
            .map(|(g, s)| if s < 0.0 { -g } else { g })
            .collect();
        let values = [
            ("weight", gamma),
            ("bias", draw(-0.5, 0.5)),
            ("running_mean", draw(-0.5, 0.5)),
            ("running_var", draw(0.2, 2.0)),
        ];
        for (t, v) in values {
            g.params.insert(
                format!("{bn}.{t}"),
                Tensor::from_vec(v, c, &sculpt_nn::device()).unwrap(),
            );
        }
    }
}
