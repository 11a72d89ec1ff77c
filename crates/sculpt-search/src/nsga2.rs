//! NSGA-II (Deb et al. 2002, in the style of Optuna's `NSGAIISampler`) as a
//! pure ask/tell strategy. The parent population of generation `g` is a function of the
//! stored trials alone: generation 1's parents are selected from generation 0 by elitist
//! constrained non-dominated selection, and every later generation's from the previous
//! parents together with the previous generation's trials. Each child is bred with an RNG
//! derived from `(seed, trial_id)` alone, by the operators of [`crate::operators`]. The
//! populations are cached between asks, but only as a memo of that function: a strategy
//! rebuilt from stored trials proposes exactly what the original would have.

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::design::latin_hypercube;
use crate::error::{Result, SearchError};
use crate::operators::{crossover, mutate};
use crate::pareto::{crowding_distance, non_dominated_sort};
use crate::space::{Point, SearchSpace};
use crate::strategy::{trial_rng, Proposal, Strategy, TrialState, TrialView};

/// Tunables of NSGA-II. Fields are public for struct-literal use; [`Nsga2::ask`]
/// re-validates them, and the `with_*` setters validate eagerly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Nsga2Settings {
    /// Trials per generation, and the size of the elitist parent population.
    pub population_size: usize,
    /// Probability that a child is bred by crossover rather than copied from parent 1.
    pub crossover_prob: f64,
    /// Per categorical dimension, the probability of taking parent 2's choice.
    pub swapping_prob: f64,
    /// Per-dimension mutation probability; `None` means `1 / n_dimensions`.
    pub mutation_prob: Option<f64>,
    /// SBX distribution index: larger keeps children closer to their parents.
    pub sbx_eta: f64,
    /// Polynomial-mutation distribution index: larger means smaller steps.
    pub mutation_eta: f64,
}

impl Default for Nsga2Settings {
    fn default() -> Self {
        Self {
            population_size: 50,
            crossover_prob: 0.9,
            swapping_prob: 0.5,
            mutation_prob: None,
            sbx_eta: 15.0,
            mutation_eta: 20.0,
        }
    }
}

fn check_population_size(n: usize) -> Result<()> {
    if n < 2 {
        return Err(SearchError::InvalidSetting {
            setting: "population_size",
            value: n.to_string(),
            reason: "needs at least 2 members to select two parents",
        });
    }
    Ok(())
}

fn check_probability(setting: &'static str, p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(SearchError::InvalidSetting {
            setting,
            value: p.to_string(),
            reason: "must be a probability in [0, 1]",
        });
    }
    Ok(())
}

fn check_eta(setting: &'static str, eta: f64) -> Result<()> {
    if !(eta.is_finite() && eta > 0.0) {
        return Err(SearchError::InvalidSetting {
            setting,
            value: eta.to_string(),
            reason: "must be a finite distribution index > 0",
        });
    }
    Ok(())
}

impl Nsga2Settings {
    pub fn with_population_size(mut self, n: usize) -> Result<Self> {
        check_population_size(n)?;
        self.population_size = n;
        Ok(self)
    }

    pub fn with_crossover_prob(mut self, p: f64) -> Result<Self> {
        check_probability("crossover_prob", p)?;
        self.crossover_prob = p;
        Ok(self)
    }

    pub fn with_swapping_prob(mut self, p: f64) -> Result<Self> {
        check_probability("swapping_prob", p)?;
        self.swapping_prob = p;
        Ok(self)
    }

    pub fn with_mutation_prob(mut self, p: f64) -> Result<Self> {
        check_probability("mutation_prob", p)?;
        self.mutation_prob = Some(p);
        Ok(self)
    }

    pub fn with_sbx_eta(mut self, eta: f64) -> Result<Self> {
        check_eta("sbx_eta", eta)?;
        self.sbx_eta = eta;
        Ok(self)
    }

    pub fn with_mutation_eta(mut self, eta: f64) -> Result<Self> {
        check_eta("mutation_eta", eta)?;
        self.mutation_eta = eta;
        Ok(self)
    }

    /// Checks every field, for settings built as a struct literal or deserialised.
    pub fn validate(&self) -> Result<()> {
        check_population_size(self.population_size)?;
        check_probability("crossover_prob", self.crossover_prob)?;
        check_probability("swapping_prob", self.swapping_prob)?;
        if let Some(p) = self.mutation_prob {
            check_probability("mutation_prob", p)?;
        }
        check_eta("sbx_eta", self.sbx_eta)?;
        check_eta("mutation_eta", self.mutation_eta)
    }
}

/// NSGA-II search strategy; see the module docs for how state is rebuilt.
#[derive(Debug, Clone)]
pub struct Nsga2 {
    settings: Nsga2Settings,
    seed: u64,
    /// Parent populations already selected, by generation, with the number of complete
    /// trials of earlier generations they were selected from: a cache of a pure function of
    /// the history, valid while that count is unchanged (trials are only ever added).
    memo: BTreeMap<u64, (usize, Vec<Candidate>)>,
}

impl PartialEq for Nsga2 {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings && self.seed == other.seed
    }
}

/// A Complete trial eligible to be a parent, normalised for selection.
#[derive(Debug, Clone)]
struct Candidate {
    trial_id: u64,
    point: Point,
    objectives: Vec<f64>,
    violation: f64,
}

/// A member of the selected parent population: index into the candidates,
/// with the rank and crowding distance the tournaments compare.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Member {
    candidate: usize,
    rank: usize,
    crowding: f64,
}

impl Nsga2 {
    pub fn new(settings: Nsga2Settings, seed: u64) -> Self {
        Self {
            settings,
            seed,
            memo: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> &Nsga2Settings {
        &self.settings
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Complete trials of generations before `generation`, grouped by generation and
    /// sorted by trial id within each, so the result does not depend on the order of
    /// `history`.
    fn candidates_by_generation(
        &self,
        space: &SearchSpace,
        history: &[TrialView],
        from: u64,
        generation: u64,
    ) -> Result<BTreeMap<u64, Vec<Candidate>>> {
        let population_size = self.settings.population_size as u64;
        let mut by_generation: BTreeMap<u64, Vec<Candidate>> = BTreeMap::new();
        let mut n_objectives: Option<(u64, usize)> = None;
        for trial in history {
            // Trials without a tag (e.g. from random search, or the GP under `auto`) are
            // placed by their id, as a sequential NSGA-II campaign would have.
            let trial_generation = trial
                .generation
                .map(u64::from)
                .unwrap_or(trial.trial_id / population_size);
            if trial.state != TrialState::Complete
                || trial_generation >= generation
                || trial_generation < from
            {
                continue;
            }
            if trial.point.len() != space.len() {
                return Err(SearchError::PointLength {
                    trial_id: trial.trial_id,
                    expected: space.len(),
                    got: trial.point.len(),
                });
            }
            let objectives = match &trial.objectives {
                Some(o) if !o.is_empty() => o.clone(),
                _ => {
                    return Err(SearchError::InvalidTrial {
                        trial_id: trial.trial_id,
                        reason: "complete trial has no objective values".to_string(),
                    })
                }
            };
            match n_objectives {
                None => n_objectives = Some((trial.trial_id, objectives.len())),
                Some((first, n)) if n != objectives.len() => {
                    return Err(SearchError::InvalidTrial {
                        trial_id: trial.trial_id,
                        reason: format!(
                            "has {} objectives but trial {first} has {n}",
                            objectives.len()
                        ),
                    })
                }
                _ => {}
            }
            by_generation
                .entry(trial_generation)
                .or_default()
                .push(Candidate {
                    trial_id: trial.trial_id,
                    // Stored points may predate a narrowed space; repair rather than
                    // breed out-of-range children.
                    point: space.nearest(&trial.point),
                    objectives,
                    violation: trial.constraint_violation,
                });
        }
        let mut seen = std::collections::HashSet::new();
        for group in by_generation.values_mut() {
            group.sort_by_key(|c| c.trial_id);
            for c in group.iter() {
                if !seen.insert(c.trial_id) {
                    return Err(SearchError::InvalidTrial {
                        trial_id: c.trial_id,
                        reason: "trial id appears more than once in the history".to_string(),
                    });
                }
            }
        }
        Ok(by_generation)
    }

    /// The parent population of `generation`, as Optuna's NSGA-II builds it: generation
    /// 1's parents are selected from generation 0; every later generation's from the
    /// previous parents and the previous generation's trials together (elitism).
    fn parents(
        &mut self,
        space: &SearchSpace,
        history: &[TrialView],
        generation: u64,
    ) -> Result<Vec<Candidate>> {
        // Complete trials per generation: a cheap pass that decides which cached
        // population is still valid before any candidate is built.
        let population_size = self.settings.population_size as u64;
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for trial in history {
            let g = trial
                .generation
                .map(u64::from)
                .unwrap_or(trial.trial_id / population_size);
            if trial.state == TrialState::Complete && g < generation {
                *counts.entry(g).or_default() += 1;
            }
        }
        let before = |g: u64| -> usize { counts.range(..g).map(|(_, n)| n).sum() };
        // The latest still-valid cached population to continue from.
        let mut start = 1;
        let mut population: Vec<Candidate> = Vec::new();
        for g in (1..=generation).rev() {
            if let Some((count, cached)) = self.memo.get(&g) {
                if *count == before(g) {
                    if g == generation {
                        return Ok(cached.clone());
                    }
                    start = g + 1;
                    population = cached.clone();
                    break;
                }
            }
        }
        let by_generation =
            self.candidates_by_generation(space, history, start.saturating_sub(1), generation)?;
        for g in start..=generation {
            let mut pool = population;
            if let Some(group) = by_generation.get(&(g - 1)) {
                pool.extend(group.iter().cloned());
            }
            pool.sort_by_key(|c| c.trial_id);
            population = select_population(&pool, self.settings.population_size)
                .into_iter()
                .map(|m| pool[m.candidate].clone())
                .collect();
            population.sort_by_key(|c| c.trial_id);
            self.memo.insert(g, (before(g), population.clone()));
        }
        Ok(population)
    }

    fn breed(&self, space: &SearchSpace, parents: &[Candidate], rng: &mut StdRng) -> Point {
        // Ranks and crowding within the parent population, for the tournaments.
        let population = select_population(parents, parents.len());
        let everyone: Vec<usize> = (0..population.len()).collect();
        let first = tournament(&population, &everyone, rng);
        let others: Vec<usize> = everyone.into_iter().filter(|&m| m != first).collect();
        let second = tournament(&population, &others, rng);
        let parent1 = &parents[population[first].candidate].point;
        let parent2 = &parents[population[second].candidate].point;

        let mut child = if rng.random_bool(self.settings.crossover_prob) {
            crossover(
                space,
                parent1,
                parent2,
                self.settings.swapping_prob,
                self.settings.sbx_eta,
                rng,
            )
        } else {
            parent1.clone()
        };
        let mutation_prob = self
            .settings
            .mutation_prob
            .unwrap_or(1.0 / space.len() as f64);
        mutate(
            space,
            &mut child,
            mutation_prob,
            self.settings.mutation_eta,
            rng,
        );
        child
    }
}

/// Elitist selection of up to `population_size` members: constrained
/// non-dominated fronts in order, the last one truncated by crowding distance
/// (descending, ties to the lower trial id; candidates are sorted by id).
fn select_population(candidates: &[Candidate], population_size: usize) -> Vec<Member> {
    let objectives: Vec<Vec<f64>> = candidates.iter().map(|c| c.objectives.clone()).collect();
    let violations: Vec<f64> = candidates.iter().map(|c| c.violation).collect();
    let mut population = Vec::with_capacity(population_size.min(candidates.len()));
    for (rank, front) in non_dominated_sort(&objectives, Some(&violations))
        .iter()
        .enumerate()
    {
        let room = population_size - population.len();
        if room == 0 {
            break;
        }
        let crowding = crowding_distance(&objectives, front);
        let mut members: Vec<Member> = front
            .iter()
            .zip(crowding)
            .map(|(&candidate, crowding)| Member {
                candidate,
                rank,
                crowding,
            })
            .collect();
        if members.len() > room {
            members.sort_by(|a, b| {
                b.crowding
                    .total_cmp(&a.crowding)
                    .then(a.candidate.cmp(&b.candidate))
            });
            members.truncate(room);
        }
        population.extend(members);
    }
    population
}

/// Binary tournament among two distinct members of `pool` (indices into
/// `population`): lower rank wins, then larger crowding distance, then the
/// first drawn.
fn tournament(population: &[Member], pool: &[usize], rng: &mut StdRng) -> usize {
    if pool.len() == 1 {
        return pool[0];
    }
    let a = rng.random_range(0..pool.len());
    let mut b = rng.random_range(0..pool.len() - 1);
    if b >= a {
        b += 1;
    }
    let (a, b) = (pool[a], pool[b]);
    let (ma, mb) = (&population[a], &population[b]);
    if mb.rank < ma.rank || (mb.rank == ma.rank && mb.crowding > ma.crowding) {
        b
    } else {
        a
    }
}

impl Strategy for Nsga2 {
    fn name(&self) -> &'static str {
        "nsga2"
    }

    fn ask(
        &mut self,
        space: &SearchSpace,
        history: &[TrialView],
        trial_id: u64,
    ) -> Result<Proposal> {
        self.settings.validate()?;
        let generation = trial_id / self.settings.population_size as u64;
        let tag = Some(u32::try_from(generation).unwrap_or(u32::MAX));
        let mut rng = trial_rng(self.seed, trial_id);
        let parents = if generation == 0 {
            Vec::new()
        } else {
            self.parents(space, history, generation)?
        };
        let point = if generation == 0 {
            // The first generation is a Latin hypercube: every stratum of every dimension
            // covered once, where independent draws leave gaps and clumps.
            let n = self.settings.population_size;
            latin_hypercube(space, n, self.seed)[(trial_id as usize) % n].clone()
        } else if parents.len() < 2 {
            space.sample(&mut rng)
        } else {
            self.breed(space, &parents, &mut rng)
        };
        Ok(Proposal::new(point, tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::{polynomial_mutation, sbx};
    use crate::pareto::{hypervolume_2d, pareto_front};
    use crate::random::RandomSearch;
    use crate::space::Dimension;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    fn toy_space() -> SearchSpace {
        SearchSpace::new(vec![
            Dimension::float("x0", 0.0, 1.0, false),
            Dimension::float("x1", 0.0, 1.0, false),
            Dimension::float("x2", 0.0, 1.0, false),
            Dimension::categorical("bits", vec![2.0, 4.0, 8.0]),
        ])
        .unwrap()
    }

    /// ZDT1 on three variables, plus a penalty unless `bits` is 4.
    fn zdt1_like(point: &[f64]) -> Vec<f64> {
        let f1 = point[0];
        let bits_penalty = (point[3].log2() - 2.0).abs();
        let g = 1.0 + 9.0 * (point[1] + point[2]) / 2.0 + bits_penalty;
        vec![f1, g * (1.0 - (f1 / g).sqrt())]
    }

    /// Runs a sequential campaign. With `messy`, some trials fail and some
    /// violate a constraint, to exercise those paths of parent selection.
    fn run_campaign(strategy: &mut dyn Strategy, n_trials: u64, messy: bool) -> Vec<TrialView> {
        let space = toy_space();
        let mut history = Vec::new();
        for trial_id in 0..n_trials {
            let proposal = strategy.ask(&space, &history, trial_id).unwrap();
            assert!(space.contains(&proposal.point), "{proposal:?}");
            let failed = messy && trial_id % 7 == 3;
            let violation = if messy {
                (proposal.point[1] - 0.8).max(0.0)
            } else {
                0.0
            };
            let trial = TrialView {
                trial_id,
                point: proposal.point.clone(),
                generation: proposal.generation,
                state: if failed {
                    TrialState::Failed
                } else {
                    TrialState::Complete
                },
                objectives: (!failed).then(|| zdt1_like(&proposal.point)),
                constraint_violation: violation,
            };
            strategy.tell(&trial);
            history.push(trial);
        }
        history
    }

    fn small_settings(population_size: usize) -> Nsga2Settings {
        Nsga2Settings::default()
            .with_population_size(population_size)
            .unwrap()
    }

    #[test]
    fn default_settings_match_optuna_defaults() {
        let s = Nsga2Settings::default();
        assert_eq!(s.population_size, 50);
        assert_eq!(s.crossover_prob, 0.9);
        assert_eq!(s.swapping_prob, 0.5);
        assert_eq!(s.mutation_prob, None);
        assert_eq!(s.sbx_eta, 15.0);
        assert_eq!(s.mutation_eta, 20.0);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn setters_reject_bad_values_and_name_them() {
        let d = Nsga2Settings::default;
        let named = |r: Result<Nsga2Settings>, setting: &str, value: &str| {
            let err = r.expect_err("setting should be rejected");
            let msg = err.to_string();
            assert!(msg.contains(setting) && msg.contains(value), "{msg}");
        };
        named(d().with_population_size(1), "population_size", "1");
        named(d().with_population_size(0), "population_size", "0");
        named(d().with_crossover_prob(1.5), "crossover_prob", "1.5");
        named(d().with_crossover_prob(-0.1), "crossover_prob", "-0.1");
        named(d().with_crossover_prob(f64::NAN), "crossover_prob", "NaN");
        named(d().with_swapping_prob(2.0), "swapping_prob", "2");
        named(d().with_mutation_prob(-1.0), "mutation_prob", "-1");
        named(d().with_sbx_eta(0.0), "sbx_eta", "0");
        named(d().with_sbx_eta(f64::INFINITY), "sbx_eta", "inf");
        named(d().with_mutation_eta(-2.0), "mutation_eta", "-2");

        let good = d()
            .with_population_size(2)
            .and_then(|s| s.with_crossover_prob(1.0))
            .and_then(|s| s.with_swapping_prob(0.0))
            .and_then(|s| s.with_mutation_prob(0.25))
            .and_then(|s| s.with_sbx_eta(2.0))
            .and_then(|s| s.with_mutation_eta(5.0))
            .unwrap();
        assert_eq!(good.population_size, 2);
        assert_eq!(good.mutation_prob, Some(0.25));

        // Struct-literal settings are caught at ask time.
        let mut broken = Nsga2::new(
            Nsga2Settings {
                population_size: 1,
                ..Nsga2Settings::default()
            },
            0,
        );
        assert!(matches!(
            broken.ask(&toy_space(), &[], 0),
            Err(SearchError::InvalidSetting {
                setting: "population_size",
                ..
            })
        ));
    }

    #[test]
    fn rebuilt_strategy_proposes_the_same_points() {
        let settings = small_settings(10);
        let seed = 42;
        let mut original = Nsga2::new(settings.clone(), seed);
        let history = run_campaign(&mut original, 60, true);
        let space = toy_space();
        let mut shuffle_rng = StdRng::seed_from_u64(9);

        for trial in &history {
            assert_eq!(trial.generation, Some((trial.trial_id / 10) as u32));
        }
        for k in [0usize, 4, 10, 11, 19, 20, 27, 33, 40, 48, 55, 59] {
            let expected = &history[k].point;
            let mut rebuilt = Nsga2::new(settings.clone(), seed);
            let proposal = rebuilt.ask(&space, &history[..k], k as u64).unwrap();
            assert_eq!(&proposal.point, expected, "trial {k}");
            assert_eq!(proposal.generation, Some((k / 10) as u32));

            let mut shuffled = history[..k].to_vec();
            shuffled.shuffle(&mut shuffle_rng);
            let again = Nsga2::new(settings.clone(), seed)
                .ask(&space, &shuffled, k as u64)
                .unwrap();
            assert_eq!(&again.point, expected, "trial {k}, shuffled history");

            // Trials of the same or later generations are not parents, so a
            // history that already holds them changes nothing.
            let future = Nsga2::new(settings.clone(), seed)
                .ask(&space, &history, k as u64)
                .unwrap();
            assert_eq!(&future.point, expected, "trial {k}, full history");
        }

        // From generation 1 on, children are bred, not drawn afresh.
        for k in 10..60u64 {
            let fresh = space.sample(&mut trial_rng(seed, k));
            assert_ne!(history[k as usize].point, fresh, "trial {k}");
        }
        // A different seed gives a different campaign.
        let other = run_campaign(&mut Nsga2::new(settings, seed + 1), 20, true);
        assert_ne!(other[15].point, history[15].point);
    }

    #[test]
    fn falls_back_to_random_without_two_completed_parents() {
        let space = toy_space();
        let settings = small_settings(4);
        let seed = 5;
        let failed = |trial_id: u64| TrialView {
            trial_id,
            point: vec![0.5, 0.5, 0.5, 4.0],
            generation: Some(0),
            state: TrialState::Failed,
            objectives: None,
            constraint_violation: 0.0,
        };
        let mut history: Vec<TrialView> = (0..3).map(failed).collect();
        history.push(TrialView {
            trial_id: 3,
            point: vec![0.1, 0.1, 0.1, 2.0],
            generation: Some(0),
            state: TrialState::Complete,
            objectives: Some(vec![0.1, 0.9]),
            constraint_violation: 0.0,
        });
        let proposal = Nsga2::new(settings.clone(), seed)
            .ask(&space, &history, 4)
            .unwrap();
        assert_eq!(proposal.point, space.sample(&mut trial_rng(seed, 4)));
        assert_eq!(proposal.generation, Some(1));

        // One more completed parent and the child is bred instead.
        history[0] = TrialView {
            state: TrialState::Complete,
            objectives: Some(vec![0.5, 0.5]),
            ..history[0].clone()
        };
        let bred = Nsga2::new(settings, seed).ask(&space, &history, 4).unwrap();
        assert_ne!(bred.point, space.sample(&mut trial_rng(seed, 4)));
        assert!(space.contains(&bred.point));
    }

    #[test]
    fn malformed_history_is_an_error() {
        let space = toy_space();
        let mut strategy = Nsga2::new(small_settings(2), 0);
        let trial = |trial_id, point: Vec<f64>, objectives| TrialView {
            trial_id,
            point,
            generation: Some(0),
            state: TrialState::Complete,
            objectives,
            constraint_violation: 0.0,
        };
        let good = trial(
            0,
            vec![0.5; 3].into_iter().chain([4.0]).collect(),
            Some(vec![1.0, 2.0]),
        );
        let short = trial(1, vec![0.5], Some(vec![1.0, 2.0]));
        assert!(matches!(
            strategy.ask(&space, &[good.clone(), short], 2),
            Err(SearchError::PointLength { trial_id: 1, .. })
        ));
        let blind = trial(1, good.point.clone(), None);
        assert!(matches!(
            strategy.ask(&space, &[good.clone(), blind], 2),
            Err(SearchError::InvalidTrial { trial_id: 1, .. })
        ));
        let three = trial(1, good.point.clone(), Some(vec![1.0, 2.0, 3.0]));
        assert!(matches!(
            strategy.ask(&space, &[good.clone(), three], 2),
            Err(SearchError::InvalidTrial { trial_id: 1, .. })
        ));
        assert!(matches!(
            strategy.ask(&space, &[good.clone(), good], 2),
            Err(SearchError::InvalidTrial { trial_id: 0, .. })
        ));
    }

    fn candidate(trial_id: u64, objectives: [f64; 2], violation: f64) -> Candidate {
        Candidate {
            trial_id,
            point: vec![0.0; 4],
            objectives: objectives.to_vec(),
            violation,
        }
    }

    #[test]
    fn selection_is_elitist_constrained_and_crowding_truncated() {
        let candidates = vec![
            candidate(0, [0.0, 0.0], 3.0), // best objectives, infeasible
            candidate(1, [1.0, 5.0], 0.0),
            candidate(2, [2.0, 3.0], 0.0),
            candidate(3, [3.0, 2.0], 0.0),
            candidate(4, [5.0, 1.0], 0.0),
            candidate(5, [6.0, 6.0], 0.0),
            candidate(6, [0.5, 0.5], 1.0),
        ];
        // Front 0 is {1,2,3,4}; its boundaries 1 and 4 are infinitely crowded.
        // Interior: 2 has (3-1)/4 + (5-2)/4 = 1.25, 3 has (5-2)/4 + (3-1)/4 = 1.25:
        // a tie, broken towards the lower trial id.
        let picked: Vec<usize> = select_population(&candidates, 3)
            .iter()
            .map(|m| m.candidate)
            .collect();
        assert_eq!(picked, vec![1, 4, 2]);

        let all = select_population(&candidates, 7);
        let order: Vec<(usize, usize)> = all.iter().map(|m| (m.candidate, m.rank)).collect();
        assert_eq!(
            order,
            vec![(1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (6, 2), (0, 3)]
        );
    }

    #[test]
    fn tournament_prefers_rank_then_crowding() {
        let population = vec![
            Member {
                candidate: 0,
                rank: 1,
                crowding: f64::INFINITY,
            },
            Member {
                candidate: 1,
                rank: 0,
                crowding: 0.2,
            },
            Member {
                candidate: 2,
                rank: 0,
                crowding: 0.9,
            },
        ];
        let mut rng = trial_rng(1, 1);
        for _ in 0..50 {
            assert_eq!(tournament(&population, &[0, 1], &mut rng), 1);
            assert_eq!(tournament(&population, &[1, 2], &mut rng), 2);
            assert_eq!(tournament(&population, &[0], &mut rng), 0);
        }
    }

    #[test]
    fn operators_stay_in_unit_interval_and_centre_on_parents() {
        let mut rng = trial_rng(3, 3);
        let n = 4000;
        let mut near = 0;
        for _ in 0..n {
            let c = sbx(0.2, 0.3, 15.0, &mut rng);
            assert!((0.0..=1.0).contains(&c));
            if (0.1..=0.4).contains(&c) {
                near += 1;
            }
            let edge = sbx(0.0, 1.0, 15.0, &mut rng);
            assert!((0.0..=1.0).contains(&edge));
            let m = polynomial_mutation(0.95, 20.0, &mut rng);
            assert!((0.0..=1.0).contains(&m));
        }
        // eta = 15 keeps most children within one parent gap of the parents.
        assert!(near as f64 / n as f64 > 0.9, "{near}");
        assert_eq!(sbx(0.4, 0.4, 15.0, &mut rng), 0.4);
    }

    #[test]
    fn bred_children_respect_int_and_log_dimensions() {
        let space = SearchSpace::new(vec![
            Dimension::float("lr", 1e-5, 1.0, true),
            Dimension::int("layers", 1, 4),
            Dimension::categorical("bits", vec![2.0, 4.0, 8.0]),
        ])
        .unwrap();
        let settings = small_settings(6).with_mutation_prob(0.5).unwrap();
        let mut strategy = Nsga2::new(settings, 8);
        let mut history = Vec::new();
        for trial_id in 0..60u64 {
            let p = strategy.ask(&space, &history, trial_id).unwrap();
            assert!(space.contains(&p.point), "{p:?}");
            let objectives = vec![p.point[0].ln(), p.point[1] * p.point[2]];
            history.push(TrialView {
                trial_id,
                point: p.point,
                generation: p.generation,
                state: TrialState::Complete,
                objectives: Some(objectives),
                constraint_violation: 0.0,
            });
        }
    }

    fn front_hypervolume(trials: &[TrialView]) -> f64 {
        let objectives: Vec<Vec<f64>> =
            trials.iter().filter_map(|t| t.objectives.clone()).collect();
        let front: Vec<[f64; 2]> = pareto_front(&objectives)
            .into_iter()
            .map(|i| [objectives[i][0], objectives[i][1]])
            .collect();
        hypervolume_2d(&front, [1.1, 11.0])
    }

    #[test]
    fn nsga2_beats_random_search_on_zdt1() {
        let population_size = 20;
        let generations = 12;
        let budget = (population_size * generations) as u64;
        let seeds = [1u64, 2, 3, 4, 5];
        let mut nsga_last_generation = 0.0;
        let mut nsga_all = 0.0;
        let mut random_all = 0.0;
        for &seed in &seeds {
            let mut nsga = Nsga2::new(small_settings(population_size), seed);
            let trials = run_campaign(&mut nsga, budget, false);
            let last = &trials[(budget as usize - population_size)..];
            nsga_last_generation += front_hypervolume(last) / seeds.len() as f64;
            nsga_all += front_hypervolume(&trials) / seeds.len() as f64;
            let random = run_campaign(&mut RandomSearch::new(seed), budget, false);
            random_all += front_hypervolume(&random) / seeds.len() as f64;
        }
        // The ideal front (g = 1) has hypervolume 1.1 * 11 - 1/3 ≈ 11.77.
        eprintln!(
            "mean HV: nsga2 last generation {nsga_last_generation:.4}, \
             nsga2 all {nsga_all:.4}, random all {random_all:.4}"
        );
        assert!(
            nsga_last_generation > random_all,
            "nsga2 last generation {nsga_last_generation} vs random {random_all}"
        );
        assert!(nsga_all > random_all + 0.1, "{nsga_all} vs {random_all}");
    }
}
