//! Space-filling designs for the first trials of a model-based strategy: a Latin hypercube
//! (McKay et al. 1979) over the unit encoding of the space, fixed by a seed, so that a
//! strategy can propose its `i`-th point from the seed alone.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::space::{Domain, Point, SearchSpace};

/// `n` points of a Latin hypercube: every dimension's unit interval is cut into `n` equal
/// strata and each stratum holds exactly one point, at a random place within it; the
/// strata are matched across dimensions by independent random permutations. A categorical
/// dimension takes the choice whose share of the unit interval holds the point, so its
/// choices are used as evenly as `n` allows.
pub fn latin_hypercube(space: &SearchSpace, n: usize, seed: u64) -> Vec<Point> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x1A71_C0DE);
    let mut points = vec![Vec::with_capacity(space.len()); n];
    for dim in space.dims() {
        let mut strata: Vec<usize> = (0..n).collect();
        strata.shuffle(&mut rng);
        for (point, &s) in points.iter_mut().zip(&strata) {
            let u = (s as f64 + rng.random::<f64>()) / n as f64;
            point.push(match &dim.domain {
                Domain::Categorical { choices } => {
                    choices[((u * choices.len() as f64) as usize).min(choices.len() - 1)]
                }
                numeric => numeric.from_unit(u).unwrap_or(0.0),
            });
        }
    }
    points.into_iter().map(|p| space.nearest(&p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Dimension;

    #[test]
    fn every_stratum_holds_one_point_and_the_seed_fixes_the_design() {
        let space = SearchSpace::new(vec![
            Dimension::float("x", 0.0, 1.0, false),
            Dimension::float("lr", 1e-4, 1.0, true),
            Dimension::categorical("bits", vec![2.0, 4.0, 8.0, 32.0]),
        ])
        .unwrap();
        let n = 16;
        let design = latin_hypercube(&space, n, 5);
        assert_eq!(design.len(), n);
        for d in 0..2 {
            let mut seen = vec![false; n];
            for p in &design {
                let u = space.dims()[d].domain.to_unit(p[d]).unwrap();
                seen[((u * n as f64) as usize).min(n - 1)] = true;
            }
            assert!(seen.iter().all(|s| *s), "dimension {d}: {seen:?}");
        }
        for c in [2.0, 4.0, 8.0, 32.0] {
            assert_eq!(design.iter().filter(|p| p[2] == c).count(), 4);
        }
        assert_eq!(latin_hypercube(&space, n, 5), design);
        assert_ne!(latin_hypercube(&space, n, 6), design);
    }
}
