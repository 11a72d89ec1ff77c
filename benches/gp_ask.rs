//! The cost of one ask of the `gp` strategy after 500 trials, on a space shaped like the
//! quickstart's (distillation temperature on a log scale and alpha, a prune ratio for two
//! layers, a bit width for three), with two objectives. The history is 500 random points
//! scored by a smooth formula; the first ask fits the hyperparameters (cold), later asks
//! with the same data reuse them (warm, as between refits in a campaign).
//!
//! Run with `cargo bench --bench gp_ask` on a quiet machine.

use rand::{Rng, SeedableRng};
use sculpt_search::{
    Dimension, GpSearch, GpSettings, SearchSpace, Strategy, TrialState, TrialView,
};

fn main() {
    let space = SearchSpace::new(vec![
        Dimension::float("temperature", 1.0, 8.0, true),
        Dimension::float("alpha", 0.1, 0.95, false),
        Dimension::float("prune_fc1", 0.0, 0.8, false),
        Dimension::float("prune_fc2", 0.0, 0.8, false),
        Dimension::categorical("bits_fc1", vec![2.0, 3.0, 4.0, 5.0, 6.0, 8.0]),
        Dimension::categorical("bits_fc2", vec![2.0, 3.0, 4.0, 5.0, 6.0, 8.0]),
        Dimension::categorical("bits_fc3", vec![2.0, 3.0, 4.0, 5.0, 6.0, 8.0]),
    ])
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let n = std::env::var("TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500u64);
    let history: Vec<TrialView> = (0..n)
        .map(|trial_id| {
            let p = space.sample(&mut rng);
            let error = 0.02
                + 0.1 * (p[2] * p[2] + p[3] * p[3])
                + p[4..].iter().map(|b| 0.3 / (b * b)).sum::<f64>()
                + 0.01 * (p[0].ln() - 1.0).powi(2)
                + 0.002 * rng.random::<f64>();
            let latency = 1.0 - 0.4 * p[2] - 0.3 * p[3] + 0.01 * p[4..].iter().sum::<f64>();
            TrialView {
                trial_id,
                point: p,
                generation: None,
                state: TrialState::Complete,
                objectives: Some(vec![error, latency]),
                constraint_violation: 0.0,
            }
        })
        .collect();
    let mut gp = GpSearch::new(GpSettings::default(), 7);
    let cpu = sculpt_latency::cpu_name();
    println!("# gp ask after {n} trials ({cpu}, 1 thread)\n");
    let mut times = Vec::new();
    for i in 0..6 {
        let started = std::time::Instant::now();
        let p = gp.ask(&space, &history, n + i).unwrap();
        let s = started.elapsed().as_secs_f64();
        assert!(space.contains(&p.point));
        println!(
            "ask {}: {:.3} s{}",
            i,
            s,
            if i == 0 {
                " (cold: fits the hyperparameters)"
            } else {
                ""
            }
        );
        times.push(s);
    }
    let mut warm = times[1..].to_vec();
    warm.sort_by(f64::total_cmp);
    println!(
        "\ncold ask {:.3} s; warm asks median {:.3} s",
        times[0],
        warm[warm.len() / 2]
    );
}
