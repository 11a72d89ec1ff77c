//! Variation operators on points of a [`SearchSpace`], shared by the strategies that breed
//! or perturb points (NSGA-II; the GP strategy's local search around the front): simulated
//! binary crossover and polynomial mutation for numeric dimensions in their unit encoding,
//! uniform crossover and random reset for categorical ones.

use rand::rngs::StdRng;
use rand::Rng;

use crate::space::{Domain, Point, SearchSpace};

/// Like pymoo's SBX, each numeric gene is crossed only with this probability;
/// otherwise the child keeps parent 1's gene.
pub const SBX_GENE_PROB: f64 = 0.5;

/// Below this normalised distance two parent genes are treated as equal and
/// SBX would divide by ~0.
const SBX_MIN_GAP: f64 = 1e-14;

pub fn unit_pair(domain: &Domain, a: f64, b: f64) -> (f64, f64) {
    (
        domain.to_unit(a).unwrap_or(0.5),
        domain.to_unit(b).unwrap_or(0.5),
    )
}

/// SBX spread factor for one side, given `alpha` from the distance to the bound.
fn sbx_beta_q(u: f64, alpha: f64, eta: f64) -> f64 {
    if u <= 1.0 / alpha {
        (u * alpha).powf(1.0 / (eta + 1.0))
    } else {
        (1.0 / (2.0 - u * alpha)).powf(1.0 / (eta + 1.0))
    }
}

/// Bounded simulated binary crossover on `[0, 1]` genes (Deb & Agrawal; the
/// bounded form used by pymoo). Returns one of the two children at random.
pub fn sbx(x1: f64, x2: f64, eta: f64, rng: &mut StdRng) -> f64 {
    if (x1 - x2).abs() <= SBX_MIN_GAP {
        return x1;
    }
    let (y1, y2) = if x1 < x2 { (x1, x2) } else { (x2, x1) };
    let gap = y2 - y1;
    let u: f64 = rng.random();

    let beta = 1.0 + 2.0 * y1 / gap;
    let alpha = 2.0 - beta.powf(-(eta + 1.0));
    let c1 = 0.5 * (y1 + y2 - sbx_beta_q(u, alpha, eta) * gap);

    let beta = 1.0 + 2.0 * (1.0 - y2) / gap;
    let alpha = 2.0 - beta.powf(-(eta + 1.0));
    let c2 = 0.5 * (y1 + y2 + sbx_beta_q(u, alpha, eta) * gap);

    let child = if rng.random_bool(0.5) { c1 } else { c2 };
    child.clamp(0.0, 1.0)
}

/// Bounded polynomial mutation (Deb & Goyal) of a `[0, 1]` gene.
pub fn polynomial_mutation(y: f64, eta: f64, rng: &mut StdRng) -> f64 {
    let power = 1.0 / (eta + 1.0);
    let r: f64 = rng.random();
    let delta_q = if r < 0.5 {
        let xy = 1.0 - y;
        let val = 2.0 * r + (1.0 - 2.0 * r) * xy.powf(eta + 1.0);
        val.powf(power) - 1.0
    } else {
        let xy = y;
        let val = 2.0 * (1.0 - r) + 2.0 * (r - 0.5) * xy.powf(eta + 1.0);
        1.0 - val.powf(power)
    };
    (y + delta_q).clamp(0.0, 1.0)
}

/// Uniform crossover of two parents: each categorical gene comes from `parent2` with
/// probability `swapping_prob`; each numeric gene, with probability [`SBX_GENE_PROB`], is
/// crossed by SBX (distribution index `eta`), otherwise kept from `parent1`.
pub fn crossover(
    space: &SearchSpace,
    parent1: &[f64],
    parent2: &[f64],
    swapping_prob: f64,
    eta: f64,
    rng: &mut StdRng,
) -> Point {
    let mut child = parent1.to_vec();
    for (i, dim) in space.dims().iter().enumerate() {
        match &dim.domain {
            Domain::Categorical { .. } => {
                if rng.random_bool(swapping_prob) {
                    child[i] = parent2[i];
                }
            }
            numeric => {
                if rng.random_bool(SBX_GENE_PROB) {
                    let (u1, u2) = unit_pair(numeric, parent1[i], parent2[i]);
                    let crossed = sbx(u1, u2, eta, rng);
                    child[i] = numeric.from_unit(crossed).unwrap_or(parent1[i]);
                }
            }
        }
    }
    child
}

/// Mutates each gene with probability `prob`: numeric genes by polynomial mutation
/// (distribution index `eta`) in their unit encoding, categorical genes by a random reset
/// to any choice. The result is repaired into the space.
pub fn mutate(space: &SearchSpace, point: &mut Point, prob: f64, eta: f64, rng: &mut StdRng) {
    for (i, dim) in space.dims().iter().enumerate() {
        if !rng.random_bool(prob) {
            continue;
        }
        match &dim.domain {
            Domain::Categorical { choices } => {
                point[i] = choices[rng.random_range(0..choices.len())];
            }
            numeric => {
                let unit = numeric.to_unit(point[i]).unwrap_or(0.5);
                let mutated = polynomial_mutation(unit, eta, rng);
                point[i] = numeric.from_unit(mutated).unwrap_or(point[i]);
            }
        }
    }
    *point = space.nearest(point);
}
