//! Pareto machinery over minimised objectives: (constrained) dominance, fast
//! non-dominated sorting, crowding distance, the first front, the exact 2-D and 3-D
//! hypervolume indicators used to compare search runs, reference points and the knee.
//!
//! NaN objectives compare as +infinity, so a broken measurement can never
//! dominate a real one.

use std::cmp::Ordering;

fn worst_if_nan(x: f64) -> f64 {
    if x.is_nan() {
        f64::INFINITY
    } else {
        x
    }
}

/// `a` dominates `b`: no worse in every objective and strictly better in one.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut strictly_better = false;
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (worst_if_nan(x), worst_if_nan(y));
        if x > y {
            return false;
        }
        if x < y {
            strictly_better = true;
        }
    }
    strictly_better
}

/// Violations at or below zero are feasible; NaN counts as infinitely infeasible.
fn violation_amount(v: f64) -> f64 {
    if v.is_nan() {
        f64::INFINITY
    } else {
        v.max(0.0)
    }
}

/// Deb's constraint domination: feasible beats infeasible; two infeasible:
/// smaller violation wins; two feasible: [`dominates`].
pub fn constrained_dominates(a: &[f64], va: f64, b: &[f64], vb: f64) -> bool {
    let (va, vb) = (violation_amount(va), violation_amount(vb));
    match (va == 0.0, vb == 0.0) {
        (true, true) => dominates(a, b),
        (true, false) => true,
        (false, true) => false,
        (false, false) => va < vb,
    }
}

/// Fast non-dominated sort (Deb et al. 2002). `violations` of `None` means all
/// feasible. Returns fronts of indices into `objectives`, best first, each
/// sorted ascending; every index appears exactly once.
pub fn non_dominated_sort(objectives: &[Vec<f64>], violations: Option<&[f64]>) -> Vec<Vec<usize>> {
    let n = objectives.len();
    let violation = |i: usize| violations.and_then(|v| v.get(i).copied()).unwrap_or(0.0);
    let mut dominated_by_me: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut domination_count = vec![0usize; n];
    for i in 0..n {
        for j in (i + 1)..n {
            let (oi, vi, oj, vj) = (&objectives[i], violation(i), &objectives[j], violation(j));
            if constrained_dominates(oi, vi, oj, vj) {
                dominated_by_me[i].push(j);
                domination_count[j] += 1;
            } else if constrained_dominates(oj, vj, oi, vi) {
                dominated_by_me[j].push(i);
                domination_count[i] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| domination_count[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominated_by_me[i] {
                domination_count[j] -= 1;
                if domination_count[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        fronts.push(current);
        current = next;
    }
    fronts
}

/// Objective `k` of each member of `front`, NaN read as +infinity.
fn objective_column(objectives: &[Vec<f64>], front: &[usize], k: usize) -> Vec<f64> {
    front
        .iter()
        .map(|&i| worst_if_nan(objectives[i][k]))
        .collect()
}

/// Crowding distance of each member of `front`, in `front` order. Boundary
/// points per objective get `f64::INFINITY`; gaps are normalised by the
/// objective's range within the front; fronts of two or fewer are all infinite.
pub fn crowding_distance(objectives: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let m = front.len();
    if m <= 2 {
        return vec![f64::INFINITY; m];
    }
    let n_objectives = front
        .iter()
        .map(|&i| objectives[i].len())
        .min()
        .unwrap_or(0);
    let mut distance = vec![0.0; m];
    let mut order: Vec<usize> = (0..m).collect();
    for k in 0..n_objectives {
        let column = objective_column(objectives, front, k);
        let value = |pos: usize| column[pos];
        // Ties broken by position keep the result independent of sort internals.
        order.sort_by(|&a, &b| value(a).total_cmp(&value(b)).then(a.cmp(&b)));
        let (lowest, highest) = (value(order[0]), value(order[m - 1]));
        distance[order[0]] = f64::INFINITY;
        distance[order[m - 1]] = f64::INFINITY;
        let range = highest - lowest;
        // A flat (or infinite) objective carries no spacing information.
        if !(range.is_finite() && range > 0.0) {
            continue;
        }
        for w in 1..(m - 1) {
            let gap = (value(order[w + 1]) - value(order[w - 1])) / range;
            distance[order[w]] += gap;
        }
    }
    distance
}

/// Indices of the non-dominated points (unconstrained first front), ascending.
pub fn pareto_front(objectives: &[Vec<f64>]) -> Vec<usize> {
    (0..objectives.len())
        .filter(|&i| {
            !objectives
                .iter()
                .enumerate()
                .any(|(j, o)| j != i && dominates(o, &objectives[i]))
        })
        .collect()
}

/// Exact 2-D hypervolume dominated by `points` (minimisation) and bounded by
/// `reference`. Points not strictly better than the reference in both
/// coordinates, or not finite, contribute nothing; duplicates and dominated
/// points are harmless.
pub fn hypervolume_2d(points: &[[f64; 2]], reference: [f64; 2]) -> f64 {
    let mut inside: Vec<[f64; 2]> = points
        .iter()
        .copied()
        .filter(|p| {
            p[0].is_finite() && p[1].is_finite() && p[0] < reference[0] && p[1] < reference[1]
        })
        .collect();
    inside.sort_by(|a, b| {
        a[0].partial_cmp(&b[0])
            .unwrap_or(Ordering::Equal)
            .then(a[1].partial_cmp(&b[1]).unwrap_or(Ordering::Equal))
    });
    // Sweep left to right; each point adds the slab between its y and the best y so far.
    let mut best_y = reference[1];
    let mut volume = 0.0;
    for p in inside {
        if p[1] < best_y {
            volume += (reference[0] - p[0]) * (best_y - p[1]);
            best_y = p[1];
        }
    }
    volume
}

/// Exact 3-D hypervolume dominated by `points` (minimisation) and bounded by
/// `reference`: a sweep over the third objective, adding each slab's 2-D hypervolume.
/// Points not strictly better than the reference in every coordinate, or not finite,
/// contribute nothing.
pub fn hypervolume_3d(points: &[[f64; 3]], reference: [f64; 3]) -> f64 {
    let mut inside: Vec<[f64; 3]> = points
        .iter()
        .copied()
        .filter(|p| (0..3).all(|k| p[k].is_finite() && p[k] < reference[k]))
        .collect();
    inside.sort_by(|a, b| a[2].total_cmp(&b[2]));
    let mut volume = 0.0;
    let mut slice: Vec<[f64; 2]> = Vec::with_capacity(inside.len());
    for (i, p) in inside.iter().enumerate() {
        slice.push([p[0], p[1]]);
        let top = inside.get(i + 1).map_or(reference[2], |q| q[2]);
        if top > p[2] {
            volume += hypervolume_2d(&slice, [reference[0], reference[1]]) * (top - p[2]);
        }
    }
    volume
}

/// The hypervolume of points of 2 or 3 objectives (exact); None for other counts.
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> Option<f64> {
    match reference.len() {
        2 => Some(hypervolume_2d(
            &points
                .iter()
                .filter(|p| p.len() == 2)
                .map(|p| [p[0], p[1]])
                .collect::<Vec<_>>(),
            [reference[0], reference[1]],
        )),
        3 => Some(hypervolume_3d(
            &points
                .iter()
                .filter(|p| p.len() == 3)
                .map(|p| [p[0], p[1], p[2]])
                .collect::<Vec<_>>(),
            [reference[0], reference[1], reference[2]],
        )),
        _ => None,
    }
}

/// A reference point for the hypervolume from the teacher and the constraints: for each
/// minimised objective, its cap when one is set (a latency budget: nothing over it counts),
/// else the teacher's value plus `slack` of its magnitude (a candidate worse than the
/// teacher by more than that adds nothing).
pub fn reference_point(teacher: &[f64], caps: &[Option<f64>], slack: f64) -> Vec<f64> {
    teacher
        .iter()
        .enumerate()
        .map(|(k, &t)| match caps.get(k).copied().flatten() {
            Some(cap) => cap,
            None => t + slack * t.abs().max(1e-12),
        })
        .collect()
}

/// The knee of a front (minimised objectives): the point that gives up least on every
/// objective at once. With two objectives, the front point farthest below the line through
/// the front's two extremes, in objectives scaled to the front's ranges (Das 1999); with
/// more, the point nearest the ideal point in those scaled units. None for an empty front.
pub fn knee_point(front: &[Vec<f64>]) -> Option<usize> {
    let m = front.first()?.len();
    let lo: Vec<f64> = (0..m)
        .map(|k| front.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min))
        .collect();
    let hi: Vec<f64> = (0..m)
        .map(|k| front.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max))
        .collect();
    let scaled: Vec<Vec<f64>> = front
        .iter()
        .map(|p| {
            (0..m)
                .map(|k| {
                    let r = hi[k] - lo[k];
                    if r > 0.0 && r.is_finite() {
                        (p[k] - lo[k]) / r
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    if front.len() <= 2 || m != 2 {
        return (0..front.len()).min_by(|&a, &b| {
            let d = |i: usize| scaled[i].iter().map(|v| v * v).sum::<f64>();
            d(a).total_cmp(&d(b)).then(a.cmp(&b))
        });
    }
    // Extremes: best in the first objective, best in the second; line x + y = 1 through
    // (0, 1) and (1, 0) in scaled units when the front spans both ranges.
    (0..front.len()).max_by(|&a, &b| {
        let below = |i: usize| 1.0 - scaled[i][0] - scaled[i][1];
        below(a).total_cmp(&below(b)).then(b.cmp(&a))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objs(raw: &[[f64; 2]]) -> Vec<Vec<f64>> {
        raw.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn hypervolume_3d_matches_hand_computed_fronts() {
        // One point: a box.
        let one = hypervolume_3d(&[[0.5, 0.5, 0.5]], [1.0, 1.0, 1.0]);
        assert!((one - 0.125).abs() < 1e-12, "{one}");
        // Two boxes overlapping in [0.5,1]x[0.5,1]x[0.5,1]: 0.5*0.5*1 + 1*0.5*0.5... by
        // inclusion-exclusion: (0.5*0.5*1) + (0.5*1*0.5)... with points (0.5,0.5,0) and
        // (0,0.5,0.5) against (1,1,1): boxes 0.5*0.5*1 = 0.25 and 1*0.5*0.5 = 0.25, overlap
        // [0.5,1]x[0.5,1]x[0.5,1] = 0.125, union 0.375.
        let two = hypervolume_3d(&[[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]], [1.0, 1.0, 1.0]);
        assert!((two - 0.375).abs() < 1e-12, "{two}");
        // Three mutually non-dominated corner points of the unit cube against (1,1,1):
        // each box has volume 0.5 (a half-slab), pairwise overlaps 0.25, the triple 0.125:
        // 3*0.5 - 3*0.25 + 0.125 = 0.875.
        let three = hypervolume_3d(
            &[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]],
            [1.0, 1.0, 1.0],
        );
        assert!((three - 0.875).abs() < 1e-12, "{three}");
        // Dominated and outside points add nothing.
        let same = hypervolume_3d(
            &[
                [0.5, 0.0, 0.0],
                [0.0, 0.5, 0.0],
                [0.0, 0.0, 0.5],
                [0.6, 0.6, 0.6],
                [2.0, 0.0, 0.0],
            ],
            [1.0, 1.0, 1.0],
        );
        assert!((same - 0.875).abs() < 1e-12, "{same}");
        // A flat third objective reduces to the 2-D hypervolume times the depth.
        let flat = hypervolume_3d(&[[0.2, 0.6, 0.0], [0.6, 0.2, 0.0]], [1.0, 1.0, 1.0]);
        let area = hypervolume_2d(&[[0.2, 0.6], [0.6, 0.2]], [1.0, 1.0]);
        assert!((flat - area).abs() < 1e-12, "{flat} {area}");
        assert_eq!(
            hypervolume(&[vec![0.5, 0.5, 0.5]], &[1.0, 1.0, 1.0]),
            Some(0.125)
        );
        assert_eq!(hypervolume(&[vec![0.5]], &[1.0]), None);
    }

    #[test]
    fn knee_and_reference_point() {
        // A convex front with a clear knee at (0.1, 0.1).
        let front = vec![
            vec![0.0, 1.0],
            vec![0.05, 0.4],
            vec![0.1, 0.1],
            vec![0.4, 0.05],
            vec![1.0, 0.0],
        ];
        assert_eq!(knee_point(&front), Some(2));
        assert_eq!(knee_point(&[]), None);
        assert_eq!(knee_point(&front[..1]), Some(0));
        // Caps win; otherwise the teacher plus slack.
        let r = reference_point(&[0.02, 10.0], &[None, Some(4.0)], 0.5);
        assert!((r[0] - 0.03).abs() < 1e-12 && r[1] == 4.0, "{r:?}");
    }

    #[test]
    fn dominance_basics() {
        assert!(dominates(&[1.0, 2.0], &[1.0, 3.0]));
        assert!(!dominates(&[1.0, 2.0], &[1.0, 2.0]));
        assert!(!dominates(&[1.0, 4.0], &[2.0, 3.0]));
        assert!(dominates(&[1.0, 2.0], &[f64::NAN, 2.0]));
        assert!(!dominates(&[f64::NAN, 2.0], &[1.0, 2.0]));
        // Feasible beats infeasible even when its objectives are worse.
        assert!(constrained_dominates(&[9.0, 9.0], 0.0, &[1.0, 1.0], 0.5));
        assert!(!constrained_dominates(&[1.0, 1.0], 0.5, &[9.0, 9.0], 0.0));
        assert!(constrained_dominates(&[9.0, 9.0], 0.1, &[1.0, 1.0], 0.5));
        assert!(!constrained_dominates(&[1.0, 1.0], 0.5, &[9.0, 9.0], 0.5));
        assert!(constrained_dominates(&[1.0, 1.0], -3.0, &[2.0, 2.0], 0.0));
    }

    #[test]
    fn non_dominated_sort_hand_checked() {
        let o = objs(&[[1., 5.], [2., 3.], [3., 1.], [2., 4.], [4., 4.], [5., 5.]]);
        assert_eq!(
            non_dominated_sort(&o, None),
            vec![vec![0, 1, 2], vec![3], vec![4], vec![5]]
        );
        assert!(non_dominated_sort(&[], None).is_empty());
    }

    #[test]
    fn non_dominated_sort_puts_infeasible_last_ordered_by_violation() {
        // 0 and 3 have the best objectives but violate the constraint.
        let o = objs(&[[0., 0.], [1., 5.], [3., 1.], [0., 1.], [4., 4.], [2., 2.]]);
        let v = [2.0, 0.0, 0.0, 0.5, 0.0, 0.0];
        assert_eq!(
            non_dominated_sort(&o, Some(&v)),
            vec![vec![1, 2, 5], vec![4], vec![3], vec![0]]
        );
        // Equal violations tie into one front.
        let v_tied = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        assert_eq!(
            non_dominated_sort(&o, Some(&v_tied)),
            vec![vec![1, 2, 5], vec![4], vec![0, 3]]
        );
        let v_none = [0.0; 6];
        assert_eq!(
            non_dominated_sort(&o, Some(&v_none)),
            non_dominated_sort(&o, None)
        );
    }

    #[test]
    fn crowding_distance_hand_checked() {
        // Objective 0 range 4: member 1 gap (4-1)/4 = 0.75, member 2 gap (5-2)/4 = 0.75.
        // Objective 1 range 4: member 1 gap (5-2)/4 = 0.75, member 2 gap (3-1)/4 = 0.5.
        let o = objs(&[[9., 9.], [1., 5.], [2., 3.], [4., 2.], [5., 1.]]);
        let d = crowding_distance(&o, &[1, 2, 3, 4]);
        assert_eq!(d[0], f64::INFINITY);
        assert!((d[1] - 1.5).abs() < 1e-12, "{d:?}");
        assert!((d[2] - 1.25).abs() < 1e-12, "{d:?}");
        assert_eq!(d[3], f64::INFINITY);
        // Front order is honoured.
        let d_rev = crowding_distance(&o, &[4, 3, 2, 1]);
        assert!((d_rev[1] - 1.25).abs() < 1e-12);
        assert!((d_rev[2] - 1.5).abs() < 1e-12);
        assert_eq!(crowding_distance(&o, &[1, 2]), vec![f64::INFINITY; 2]);
        assert!(crowding_distance(&o, &[]).is_empty());
    }

    #[test]
    fn crowding_distance_ignores_flat_objectives() {
        let o = objs(&[[1., 7.], [2., 7.], [4., 7.]]);
        let d = crowding_distance(&o, &[0, 1, 2]);
        // Only objective 0 counts: (4-1)/3 = 1.
        assert!((d[1] - 1.0).abs() < 1e-12, "{d:?}");
    }

    #[test]
    fn pareto_front_basic() {
        let o = objs(&[[1., 5.], [2., 3.], [3., 1.], [2., 4.], [4., 4.], [2., 3.]]);
        // Duplicates do not dominate each other, so both copies of [2,3] stay.
        assert_eq!(pareto_front(&o), vec![0, 1, 2, 5]);
        assert!(pareto_front(&[]).is_empty());
    }

    #[test]
    fn hypervolume_hand_checked() {
        let front = [[1., 3.], [2., 2.], [3., 1.]];
        assert_eq!(hypervolume_2d(&front, [4., 4.]), 6.0);
        let noisy = [
            [3., 1.],
            [2., 2.],
            [2.5, 2.5],
            [1., 3.],
            [2., 2.],
            [3.5, 3.5],
        ];
        assert_eq!(hypervolume_2d(&noisy, [4., 4.]), 6.0);
        let with_outside = [[1., 3.], [2., 2.], [3., 1.], [0., 4.], [5., 0.], [0.5, 9.]];
        assert_eq!(hypervolume_2d(&with_outside, [4., 4.]), 6.0);
        assert_eq!(hypervolume_2d(&[], [4., 4.]), 0.0);
        assert_eq!(hypervolume_2d(&[[0., 0.]], [2., 3.]), 6.0);
        assert_eq!(hypervolume_2d(&[[f64::NAN, 0.]], [2., 3.]), 0.0);
    }
}
