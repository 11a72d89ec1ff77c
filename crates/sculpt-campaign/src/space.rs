//! The search space of a campaign and its codec, built from the knob table. Each searched
//! knob becomes one dimension per layer it addresses, named by the knob's column
//! (`temperature`, `prune_fc1`, `bits_conv2`). A point decodes into a compression plan
//! through the knobs' setters; the plan's values, read back through the knobs' getters,
//! are the trial's record; and a record encodes back into the point. Nothing else knows
//! the knobs: a plan is never sampled directly, and no code parses column names.
//!
//! A campaign with a sensitivity table narrows each layer's `prune`, `sparsity` and `bits`
//! domains to what that layer tolerates alone ([`narrow`]) before the dimensions are made,
//! so the strategies never see the narrowed-away values. The narrowing depends only on the
//! campaign (which holds the table's rows) and the teacher's layer names, so a resumed run
//! rebuilds the same space.

use std::collections::BTreeMap;
use std::path::Path;

use sculpt_compress::{CompressionPlan, Knob, ParamValue, KNOBS};
use sculpt_nn::Graph;
use sculpt_search::{Dimension, Point, SearchSpace, TrialState, TrialView};
use sculpt_store::{SensitivityRow, TrialRecord, TrialState as StoredState};

use crate::config::{matches_pattern, Campaign, KnobDomain, Objective, SensitivityLimit};
use crate::error::{CampaignError, Result};

/// One coordinate of a campaign's space: a knob at a layer, and how its point value maps
/// to the knob's value.
#[derive(Debug, Clone)]
pub struct Coordinate {
    pub knob: &'static Knob,
    /// The layer (empty for global knobs).
    pub layer: String,
    pub column: String,
    pub domain: KnobDomain,
    /// The switch column this coordinate exists under (an optional range), if any.
    pub switch: Option<String>,
}

impl Coordinate {
    /// The knob value of a point's coordinate. Named choices are searched as their index.
    pub fn decode(&self, x: f64) -> ParamValue {
        match &self.domain {
            KnobDomain::Range { .. } => ParamValue::Float(x),
            KnobDomain::Choices(values) => match values.first() {
                Some(ParamValue::Text(_)) => {
                    values[(x.round().max(0.0) as usize).min(values.len() - 1)].clone()
                }
                Some(ParamValue::Int(_)) => ParamValue::Int(x.round() as i64),
                _ => ParamValue::Float(x),
            },
            KnobDomain::Fixed(v) => v.clone(),
            KnobDomain::Switch => ParamValue::Int(x.round() as i64),
        }
    }

    /// The point coordinate of a knob value; None when the value is outside the domain.
    pub fn encode(&self, value: &ParamValue) -> Option<f64> {
        match &self.domain {
            KnobDomain::Choices(values) if matches!(values.first(), Some(ParamValue::Text(_))) => {
                values.iter().position(|v| v == value).map(|i| i as f64)
            }
            _ => value.as_f64(),
        }
    }

    fn dimension(&self) -> Option<Dimension> {
        let dimension = self.unconditional_dimension()?;
        Some(match &self.switch {
            Some(switch) => dimension.when(switch, vec![1.0]),
            None => dimension,
        })
    }

    fn unconditional_dimension(&self) -> Option<Dimension> {
        match &self.domain {
            KnobDomain::Switch => Some(Dimension::categorical(&self.column, vec![0.0, 1.0])),
            KnobDomain::Range { low, high, log } => {
                Some(Dimension::float(&self.column, *low, *high, *log))
            }
            KnobDomain::Choices(values) => {
                let choices = if matches!(values.first(), Some(ParamValue::Text(_))) {
                    (0..values.len()).map(|i| i as f64).collect()
                } else {
                    values.iter().filter_map(ParamValue::as_f64).collect()
                };
                Some(Dimension::categorical(&self.column, choices))
            }
            KnobDomain::Fixed(_) => None,
        }
    }
}

/// A campaign's space: the searched coordinates (one per dimension, in order) and the
/// fixed ones.
#[derive(Debug, Clone)]
pub struct CampaignSpace {
    pub space: SearchSpace,
    pub searched: Vec<Coordinate>,
    pub fixed: Vec<Coordinate>,
    /// What the sensitivity table changed, one line per coordinate
    /// (`prune_fc1: [0, 0.8] -> [0, 0.4]`); empty without a table.
    pub narrowed: Vec<String>,
    /// The plan every decoded point starts from: the campaign's `[plan]`, or the defaults.
    pub base: CompressionPlan,
}

impl CampaignSpace {
    /// Every parameter column of a trial, in frame order.
    pub fn columns(&self) -> Vec<String> {
        let mut all: Vec<&Coordinate> = self.searched.iter().chain(&self.fixed).collect();
        let rank = |c: &Coordinate| KNOBS.iter().position(|k| k.name == c.knob.name);
        all.sort_by_key(|c| rank(c));
        all.iter().map(|c| c.column.clone()).collect()
    }

    /// Decodes a point into the plan: knobs outside the space keep the plan's defaults.
    pub fn decode(&self, point: &Point) -> Result<CompressionPlan> {
        if point.len() != self.searched.len() {
            return Err(CampaignError::Invalid(format!(
                "a point of {} values does not fit a space of {} dimensions",
                point.len(),
                self.searched.len()
            )));
        }
        let mut plan = self.base.clone();
        for c in &self.fixed {
            (c.knob.set)(&mut plan, &c.layer, &c.decode(0.0));
        }
        for (i, (c, &x)) in self.searched.iter().zip(point).enumerate() {
            // A switch sets nothing; a value whose switch is off leaves the knob as the
            // plan has it (its default: off).
            if c.domain == KnobDomain::Switch || !self.space.is_active(point, i) {
                continue;
            }
            let value = c
                .knob
                .check(&c.decode(x))
                .map_err(|m| CampaignError::Invalid(format!("{}: {m}", c.column)))?;
            (c.knob.set)(&mut plan, &c.layer, &value);
        }
        Ok(plan)
    }

    /// The record of a trial: [`CampaignSpace::params`] of its plan, with each switch as
    /// the point set it (a range may hold the knob's default, so the plan cannot tell).
    pub fn params_at(
        &self,
        point: &Point,
        plan: &CompressionPlan,
    ) -> BTreeMap<String, serde_json::Value> {
        let mut params = self.params(plan);
        for (c, &x) in self.searched.iter().zip(point) {
            if c.domain == KnobDomain::Switch {
                params.insert(c.column.clone(), serde_json::json!(x.round() as i64));
            }
        }
        params
    }

    /// The record of a plan: the value of every coordinate, read back from the plan. A
    /// switch, which the plan does not hold, reads 1 when its knob's value lies in the
    /// switched range, else 0; trials record the switch as proposed
    /// ([`CampaignSpace::params_at`]).
    pub fn params(&self, plan: &CompressionPlan) -> BTreeMap<String, serde_json::Value> {
        self.searched
            .iter()
            .chain(&self.fixed)
            .map(|c| {
                if c.domain == KnobDomain::Switch {
                    let on = self
                        .searched
                        .iter()
                        .find(|v| v.switch.as_deref() == Some(c.column.as_str()))
                        .is_some_and(|v| {
                            let value = (v.knob.get)(plan, &v.layer).as_f64();
                            matches!((&v.domain, value), (KnobDomain::Range { low, high, .. }, Some(x)) if x >= *low && x <= *high)
                        });
                    return (c.column.clone(), serde_json::json!(i64::from(on)));
                }
                let value = (c.knob.get)(plan, &c.layer);
                (
                    c.column.clone(),
                    serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect()
    }

    /// The point of a stored trial; None when a value is missing or outside the space.
    pub fn encode(&self, params: &BTreeMap<String, serde_json::Value>) -> Option<Point> {
        self.searched
            .iter()
            .map(|c| {
                let value: ParamValue =
                    serde_json::from_value(params.get(&c.column)?.clone()).ok()?;
                c.encode(&value)
            })
            .collect()
    }
}

/// Builds the space of `campaign` over the layers of `teacher`. A per-layer knob whose
/// pattern matches none of the layers it can address is an error naming the field.
pub fn search_space(campaign: &Campaign, teacher: &Graph) -> Result<CampaignSpace> {
    let mut searched = Vec::new();
    let mut fixed = Vec::new();
    let mut narrowed = Vec::new();
    if let Some(limit) = &campaign.sensitivity {
        check_table_layers(campaign, limit, teacher)?;
    }
    for k in &campaign.knobs {
        let knob = sculpt_compress::knob(&k.knob)
            .ok_or_else(|| CampaignError::Invalid(format!("unknown knob `{}`", k.knob)))?;
        let layers: Vec<String> = if knob.per_layer {
            let eligible = (knob.layers)(teacher);
            let matched: Vec<String> = eligible
                .iter()
                .filter(|l| matches_pattern(&k.layers, l))
                .cloned()
                .collect();
            if matched.is_empty() {
                return Err(CampaignError::Config {
                    path: campaign.path.clone(),
                    line: k.at.0,
                    column: k.at.1,
                    field: format!("field `search.{}.layers`: ", k.knob),
                    message: format!(
                        "\"{}\" matches no layer of `{}` that takes `{}` (those are: {})",
                        k.layers,
                        teacher.spec.name,
                        k.knob,
                        eligible.join(", ")
                    ),
                });
            }
            matched
        } else {
            vec![String::new()]
        };
        for layer in layers {
            let domain = match &campaign.sensitivity {
                Some(limit) if knob.per_layer => {
                    let domain = narrow(&k.domain, knob.name, &layer, &limit.rows, limit.max_drop);
                    if domain != k.domain {
                        narrowed.push(format!(
                            "{}: {} -> {}",
                            knob.column(&layer),
                            describe(&k.domain),
                            describe(&domain)
                        ));
                    }
                    domain
                }
                _ => k.domain.clone(),
            };
            let switch = (k.optional && matches!(domain, KnobDomain::Range { .. }))
                .then(|| format!("{}_on", knob.column(&layer)));
            if let Some(column) = &switch {
                searched.push(Coordinate {
                    knob,
                    column: column.clone(),
                    layer: layer.clone(),
                    domain: KnobDomain::Switch,
                    switch: None,
                });
            }
            let coordinate = Coordinate {
                knob,
                column: knob.column(&layer),
                layer,
                domain,
                switch,
            };
            match coordinate.dimension() {
                Some(_) => searched.push(coordinate),
                None => fixed.push(coordinate),
            }
        }
    }
    if searched.is_empty() {
        let why = match &campaign.sensitivity {
            Some(limit) if !narrowed.is_empty() => format!(
                "after the sensitivity table {} (max_drop {}) pinned every searched layer, ",
                limit.table.display(),
                limit.max_drop
            ),
            _ => String::new(),
        };
        return Err(CampaignError::Config {
            path: campaign.path.clone(),
            line: 1,
            column: 1,
            field: "field `search`: ".into(),
            message: format!(
                "{why}the campaign searches nothing: give at least one [search.<knob>] with a range or choices (knobs: {})",
                sculpt_compress::knobs::knob_names().join(", ")
            ),
        });
    }
    let dims = searched.iter().filter_map(Coordinate::dimension).collect();
    let base = match &campaign.plan {
        Some(base) => {
            // The plan is read as its own text, so positions inside it mean nothing in
            // the campaign file: the error points at the [plan] table and names the field.
            let (plan, _) = sculpt_compress::read_plan(&base.text, Path::new("plan"), teacher)
                .map_err(|e| {
                    let text = e.to_string();
                    let message = text.strip_prefix("plan:").unwrap_or(&text).trim_start();
                    // Drop a "line:column: " prefix of the plan's own text.
                    let message = match message.split_once(": ") {
                        Some((pos, rest))
                            if pos
                                .split(':')
                                .all(|p| p.chars().all(|c| c.is_ascii_digit())) =>
                        {
                            rest
                        }
                        _ => message,
                    };
                    CampaignError::Config {
                        path: campaign.path.clone(),
                        line: base.at.0,
                        column: base.at.1,
                        field: "in [plan]: ".into(),
                        message: message.to_string(),
                    }
                })?;
            plan
        }
        None => CompressionPlan::default(),
    };
    Ok(CampaignSpace {
        space: SearchSpace::new(dims)?,
        searched,
        fixed,
        narrowed,
        base,
    })
}

/// A table measured on another model would narrow the wrong layers: every layer it names
/// must be a weight layer of the teacher.
fn check_table_layers(
    campaign: &Campaign,
    limit: &SensitivityLimit,
    teacher: &Graph,
) -> Result<()> {
    let layers = teacher.spec.weight_layers();
    match limit.rows.iter().find(|r| !layers.contains(&r.layer)) {
        Some(row) => Err(CampaignError::Invalid(format!(
            "{}:{}:{}: field `search.sensitivity.table`: {} names layer `{}`, which model `{}` does not have (its layers: {}); was it measured on another model?",
            campaign.path.display(),
            limit.at.0,
            limit.at.1,
            limit.table.display(),
            row.layer,
            teacher.spec.name,
            layers.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Whether a larger value of a knob compresses harder (prune and sparsity ratios) or
/// less hard (bit widths); None for knobs a sensitivity table does not narrow.
fn larger_is_harsher(knob: &str) -> Option<bool> {
    match knob {
        "prune" | "sparsity" => Some(true),
        "bits" => Some(false),
        _ => None,
    }
}

/// The domain of `knob` at `layer` narrowed by a sensitivity table.
///
/// The accuracy a layer loses is taken to grow with how hard it is compressed (a higher
/// ratio, fewer bits). The layer's measured values are walked from the mildest to the
/// harshest, and the last one before the first that loses more than `max_drop` is the
/// layer's limit. Values no harsher than the limit stay in the domain: a range's `high`
/// becomes the limit (or stays, if lower), and choices harsher than the limit go. Walking
/// in order rather than keeping every value that passed makes the result an interval, and
/// keeps a noisy pass beyond a failure (one lucky validation sample) from reopening it;
/// values between the limit and the first failure were not measured and are left out.
///
/// When even the mildest measured value loses too much, or the limit is below a range's
/// `low`, the layer keeps only its mildest configured value: the range is pinned to its
/// `low` (the user's floor is kept), and choices to the widest bit width or the smallest
/// ratio. A domain of one value becomes `Fixed`, so it is applied and recorded but not
/// searched. Layers and knobs without rows, fixed domains and other knobs are unchanged.
pub fn narrow(
    domain: &KnobDomain,
    knob: &str,
    layer: &str,
    rows: &[SensitivityRow],
    max_drop: f64,
) -> KnobDomain {
    let Some(larger_harsher) = larger_is_harsher(knob) else {
        return domain.clone();
    };
    // Harshness as one number that grows with compression, for both directions.
    let harshness = |v: f64| if larger_harsher { v } else { -v };
    let mut measured: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.knob == knob && r.layer == layer)
        .map(|r| (harshness(r.value), r.accuracy_drop))
        .collect();
    if measured.is_empty() {
        return domain.clone();
    }
    measured.sort_by(|a, b| a.0.total_cmp(&b.0));
    let limit = measured
        .iter()
        .take_while(|(_, drop)| *drop <= max_drop)
        .last()
        .map(|(h, _)| *h);
    let within = |v: f64| limit.is_some_and(|l| harshness(v) <= l);
    match domain {
        KnobDomain::Range { low, high, log } => {
            // Only prune and sparsity have ranges; their harshness is the value itself.
            let high_kept = limit.map_or(f64::NEG_INFINITY, |l| l.min(*high));
            if high_kept > *low {
                KnobDomain::Range {
                    low: *low,
                    high: high_kept,
                    log: *log,
                }
            } else {
                KnobDomain::Fixed(ParamValue::Float(*low))
            }
        }
        KnobDomain::Choices(values) => {
            let mut kept: Vec<ParamValue> = values
                .iter()
                .filter(|v| v.as_f64().is_some_and(within))
                .cloned()
                .collect();
            if kept.is_empty() {
                let mildest = values.iter().min_by(|a, b| {
                    let h = |v: &ParamValue| v.as_f64().map_or(f64::INFINITY, harshness);
                    h(a).total_cmp(&h(b))
                });
                kept.extend(mildest.cloned());
            }
            match kept.as_slice() {
                [one] => KnobDomain::Fixed(one.clone()),
                _ => KnobDomain::Choices(kept),
            }
        }
        KnobDomain::Fixed(_) | KnobDomain::Switch => domain.clone(),
    }
}

/// A domain as the campaign file would say it, for the narrowing notes.
fn describe(domain: &KnobDomain) -> String {
    match domain {
        KnobDomain::Range { low, high, .. } => format!("[{low}, {high}]"),
        KnobDomain::Choices(values) => values
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        KnobDomain::Fixed(v) => format!("fixed at {v}"),
        KnobDomain::Switch => "on or off".into(),
    }
}

/// The objectives a strategy minimises: the error rate, and latency or size.
pub fn objectives(record: &TrialRecord, objective: Objective) -> Option<Vec<f64>> {
    let second = match objective {
        Objective::Latency => record.latency_ms,
        Objective::Size => record.size_bytes.map(|b| b as f64),
    };
    match (record.state, record.accuracy, second) {
        // A trial stopped by successive halving shows its low-fidelity score: strategies
        // learn from it, while fronts take complete trials only.
        (StoredState::Complete | StoredState::Stopped, Some(a), Some(x)) => Some(vec![1.0 - a, x]),
        _ => None,
    }
}

/// A stored trial as a strategy sees it. The point is encoded from the stored parameters,
/// so strategies are rebuilt from history alone. A trial whose parameters no longer fit
/// the space (it cannot happen within one campaign fingerprint) is shown as failed at the
/// nearest point.
pub fn trial_view(
    record: &TrialRecord,
    space: &CampaignSpace,
    objective: Objective,
    budget_ms: Option<f64>,
) -> TrialView {
    let encoded = space.encode(&record.params);
    let point = match &encoded {
        Some(p) => space.space.nearest(p),
        None => space.space.nearest(&vec![f64::NAN; space.space.len()]),
    };
    // A screened-out trial teaches the strategy through its violation: it is shown as
    // complete with the worst accuracy, and constrained domination ranks it by how far it
    // is over the budget.
    let objectives = match record.state {
        StoredState::Infeasible => encoded.and_then(|_| {
            let second = match objective {
                Objective::Latency => record.latency_ms,
                Objective::Size => record.size_bytes.map(|b| b as f64),
            }?;
            Some(vec![1.0, second])
        }),
        _ => encoded.and(objectives(record, objective)),
    };
    let violation = match (budget_ms, record.latency_ms) {
        (Some(b), Some(l)) => (l - b).max(0.0),
        _ => 0.0,
    };
    TrialView {
        trial_id: record.trial_id,
        point,
        generation: record.generation,
        state: if objectives.is_some() {
            TrialState::Complete
        } else {
            TrialState::Failed
        },
        objectives,
        constraint_violation: violation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A campaign that searches every knob, each over all the values it can take.
    fn every_knob() -> String {
        let mut text = String::from(
            "name = \"all\"\n[data]\nsource = \"digits\"\n[teacher]\nmodel = \"mlp\"\n\
             [search]\nstrategy = \"random\"\ntrials = 3\n\
             [latency]\nprofile = \"epyc-zen4-1core\"\n",
        );
        for knob in KNOBS {
            text.push_str(&format!("[search.{}]\n", knob.name));
            match knob.kind {
                sculpt_compress::KnobKind::Float { low, high, .. } => {
                    let (lo, hi) = (low + 0.01 * (high - low), high - 0.01 * (high - low));
                    text.push_str(&format!("low = {lo}\nhigh = {hi}\n"));
                }
                sculpt_compress::KnobKind::Int(values) => {
                    text.push_str(&format!("choices = {values:?}\n"));
                }
                sculpt_compress::KnobKind::Text(values) => {
                    text.push_str(&format!("choices = {values:?}\n"));
                }
            }
        }
        text
    }

    #[test]
    fn codec_round_trips_every_knob() {
        let campaign = Campaign::parse(&every_knob(), Path::new("all.toml")).unwrap();
        assert_eq!(campaign.knobs.len(), KNOBS.len());
        let teacher = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        let space = search_space(&campaign, &teacher).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..50 {
            // point → plan → record → point
            let point = space.space.sample(&mut rng);
            let plan = space.decode(&point).unwrap();
            plan.validate(&teacher).unwrap();
            let params = space.params(&plan);
            let json = serde_json::to_string(&params).unwrap();
            let stored: BTreeMap<String, serde_json::Value> = serde_json::from_str(&json).unwrap();
            let back = space.encode(&stored).unwrap();
            assert_eq!(back, point);
            assert_eq!(space.decode(&back).unwrap(), plan);
        }
        // Every knob's column is in the record, in table order.
        let columns = space.columns();
        assert_eq!(columns[0], "temperature");
        for knob in KNOBS {
            assert!(
                columns.iter().any(|c| c.starts_with(knob.name)),
                "{}",
                knob.name
            );
        }
    }

    #[test]
    fn a_base_plan_sets_what_the_knobs_do_not() {
        let text = format!(
            "{}\n[plan.sparsify]\nschedule = \"agp\"\ncycles = 3\n[plan.layers.\"fc*\"]\nsparsity = 0.5\nact_bits = 8\n",
            every_knob()
                .lines()
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        );
        // Only the knobs searched override the base: drop sparsity and act_bits from the
        // search so the base's values show.
        let text = text
            .replace("[search.sparsity]\nlow = 0.01\nhigh = 0.99\n", "")
            .replace(
                "[search.act_bits]\nchoices = [2, 3, 4, 5, 6, 7, 8, 32]\n",
                "",
            );
        let campaign = Campaign::parse(&text, Path::new("all.toml")).unwrap();
        let teacher = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        let space = search_space(&campaign, &teacher).unwrap();
        let point = space
            .space
            .sample(&mut rand::rngs::StdRng::seed_from_u64(4));
        let plan = space.decode(&point).unwrap();
        assert_eq!(
            plan.sparsify.schedule,
            sculpt_compress::SparsitySchedule::Agp
        );
        assert_eq!(plan.sparsify.cycles, 3);
        assert_eq!(plan.layer("fc2").sparsity, 0.5);
        assert_eq!(plan.layer("fc3").act_bits, 8);
        // A base plan is part of what a trial means.
        let plain = Campaign::parse(&every_knob(), Path::new("all.toml")).unwrap();
        assert_ne!(campaign.fingerprint(), plain.fingerprint());
        // Its mistakes name the [plan] table and the field.
        let bad = text.replace("cycles = 3", "cycles = 3\nrewinnd = true");
        let err = Campaign::parse(&bad, Path::new("all.toml"))
            .and_then(|c| search_space(&c, &teacher).map(|_| ()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[plan]") && err.contains("rewinnd"), "{err}");
        let bad = text.replace("[plan.layers.\"fc*\"]", "[plan.layers.\"conv*\"]");
        let err = Campaign::parse(&bad, Path::new("all.toml"))
            .and_then(|c| search_space(&c, &teacher).map(|_| ()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("conv*") && err.contains("matches no layer"),
            "{err}"
        );
    }

    /// `optional = true` on a range: a switch dimension, and the value only while it is on.
    #[test]
    fn an_optional_range_is_a_switch_and_a_conditional_value() {
        let text = "name = \"o\"\nseed = 1\n[data]\nsource = \"digits\"\n[teacher]\nmodel = \"mlp\"\n[search]\nstrategy = \"gp\"\ntrials = 4\n[search.rank]\nlayers = \"fc1\"\nlow = 0.2\nhigh = 0.8\noptional = true\n[latency]\nprofile = \"epyc-zen4-1core\"\n";
        let campaign = Campaign::parse(text, Path::new("o.toml")).unwrap();
        let teacher = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        let space = search_space(&campaign, &teacher).unwrap();
        let names: Vec<&str> = space.space.dims().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["rank_fc1_on", "rank_fc1"]);
        let off = space.decode(&vec![0.0, 0.5]).unwrap();
        let on = space.decode(&vec![1.0, 0.5]).unwrap();
        let default_rank = CompressionPlan::default();
        let rank = |p: &CompressionPlan| p.layers.get("fc1").map_or(1.0, |l| l.rank);
        assert_eq!(
            rank(&off),
            default_rank.layers.get("fc1").map_or(1.0, |l| l.rank)
        );
        assert_eq!(rank(&on), 0.5);
        // The record says which, and encodes back.
        let p_off = space.params_at(&vec![0.0, 0.5], &off);
        let p_on = space.params_at(&vec![1.0, 0.5], &on);
        assert_eq!(p_off["rank_fc1_on"], serde_json::json!(0));
        assert_eq!(p_on["rank_fc1_on"], serde_json::json!(1));
        assert_eq!(space.encode(&p_on).unwrap(), vec![1.0, 0.5]);
        assert_eq!(space.space.nearest(&space.encode(&p_off).unwrap())[0], 0.0);
        // A range holding the knob's default: the record keeps the switch as proposed.
        let wide = text.replace("high = 0.8", "high = 1.0");
        let campaign = Campaign::parse(&wide, Path::new("o.toml")).unwrap();
        let space = search_space(&campaign, &teacher).unwrap();
        let on_at_default = space.decode(&vec![1.0, 1.0]).unwrap();
        assert_eq!(
            space.params_at(&vec![1.0, 1.0], &on_at_default)["rank_fc1_on"],
            serde_json::json!(1)
        );
        let off = space.decode(&vec![0.0, 0.4]).unwrap();
        assert_eq!(
            space.params_at(&vec![0.0, 0.4], &off)["rank_fc1_on"],
            serde_json::json!(0)
        );
        // Only a range may be optional.
        let bad = text.replace("low = 0.2\nhigh = 0.8\n", "value = 0.5\n");
        let e = Campaign::parse(&bad, Path::new("o.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("search.rank.optional"), "{e}");
    }

    #[test]
    fn fixed_values_are_applied_and_recorded() {
        let text = every_knob().replace(
            "[search.importance]\nchoices = [\"l1\", \"l2\", \"bn_gamma\", \"taylor\"]",
            "[search.importance]\nvalue = \"l2\"",
        );
        let campaign = Campaign::parse(&text, Path::new("all.toml")).unwrap();
        let teacher = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        let space = search_space(&campaign, &teacher).unwrap();
        assert!(space.space.index_of("importance").is_none());
        let point = space
            .space
            .sample(&mut rand::rngs::StdRng::seed_from_u64(2));
        let plan = space.decode(&point).unwrap();
        assert_eq!(plan.prune.importance, sculpt_compress::Importance::L2);
        assert_eq!(space.params(&plan)["importance"], serde_json::json!("l2"));
    }

    fn row(layer: &str, knob: &str, value: f64, drop: f64) -> SensitivityRow {
        SensitivityRow {
            layer: layer.into(),
            knob: knob.into(),
            value,
            accuracy: 0.97 - drop,
            accuracy_drop: drop,
            size_bytes: 0,
            params: 0,
        }
    }

    /// A crafted table for the digits MLP, read with max_drop 0.01: fc1 tolerates pruning
    /// to 0.4 (0.6 passes again by luck, after 0.5 failed) and 4 bits or more; fc2 fails
    /// at the mildest prune ratio and tolerates only 8 bits; fc3 fails at every width and
    /// tolerates sparsity to 0.7.
    fn crafted() -> Vec<SensitivityRow> {
        let mut rows = Vec::new();
        for (ratio, drop) in [
            (0.1, 0.0),
            (0.2, 0.002),
            (0.3, 0.004),
            (0.4, 0.01),
            (0.5, 0.03),
            (0.6, 0.005),
            (0.7, 0.2),
        ] {
            rows.push(row("fc1", "prune", ratio, drop));
        }
        for (ratio, drop) in [(0.1, 0.02), (0.5, 0.3)] {
            rows.push(row("fc2", "prune", ratio, drop));
        }
        for (bits, drop) in [
            (2, 0.5),
            (3, 0.05),
            (4, 0.008),
            (5, 0.0),
            (6, 0.0),
            (8, -0.003),
        ] {
            rows.push(row("fc1", "bits", bits as f64, drop));
        }
        for (bits, drop) in [(2, 0.6), (4, 0.2), (6, 0.0101), (8, 0.0)] {
            rows.push(row("fc2", "bits", bits as f64, drop));
        }
        for bits in [2, 4, 6, 8] {
            rows.push(row("fc3", "bits", bits as f64, 0.05));
        }
        for (sparsity, drop) in [(0.5, 0.0), (0.7, 0.001), (0.9, 0.02)] {
            rows.push(row("fc3", "sparsity", sparsity, drop));
        }
        rows
    }

    fn ints(values: &[i64]) -> KnobDomain {
        KnobDomain::Choices(values.iter().map(|&v| ParamValue::Int(v)).collect())
    }

    #[test]
    fn narrowing_cuts_each_layer_at_its_first_failure() {
        let rows = crafted();
        let range = |low: f64, high: f64| KnobDomain::Range {
            low,
            high,
            log: false,
        };
        let narrow = |d: &KnobDomain, knob: &str, layer: &str| narrow(d, knob, layer, &rows, 0.01);
        // fc1: 0.4 is the last ratio before the first failure (0.5); 0.6 passing later
        // does not reopen the range. A drop equal to max_drop passes.
        assert_eq!(narrow(&range(0.0, 0.8), "prune", "fc1"), range(0.0, 0.4));
        assert_eq!(narrow(&range(0.05, 0.3), "prune", "fc1"), range(0.05, 0.3));
        // Below the user's floor, or failing at the mildest ratio: pinned to low.
        assert_eq!(
            narrow(&range(0.5, 0.8), "prune", "fc1"),
            KnobDomain::Fixed(ParamValue::Float(0.5))
        );
        assert_eq!(
            narrow(&range(0.0, 0.8), "prune", "fc2"),
            KnobDomain::Fixed(ParamValue::Float(0.0))
        );
        // Float choices keep those within the limit.
        let choices =
            KnobDomain::Choices([0.0, 0.25, 0.4, 0.45, 0.6].map(ParamValue::Float).to_vec());
        assert_eq!(
            narrow(&choices, "prune", "fc1"),
            KnobDomain::Choices([0.0, 0.25, 0.4].map(ParamValue::Float).to_vec())
        );
        // Bits: widths narrower than the limit go, untested wider ones (16) stay.
        let bits = ints(&[2, 3, 4, 5, 6, 8, 16]);
        assert_eq!(narrow(&bits, "bits", "fc1"), ints(&[4, 5, 6, 8, 16]));
        // fc2 fails at 6 bits (by a hair), so 8 and 16 are left.
        assert_eq!(narrow(&bits, "bits", "fc2"), ints(&[8, 16]));
        // fc3 fails at every measured width: the widest choice is kept, alone, so fixed.
        assert_eq!(
            narrow(&ints(&[2, 4, 6, 8]), "bits", "fc3"),
            KnobDomain::Fixed(ParamValue::Int(8))
        );
        assert_eq!(
            narrow(&bits, "bits", "fc3"),
            KnobDomain::Fixed(ParamValue::Int(16))
        );
        assert_eq!(
            narrow(&range(0.0, 0.95), "sparsity", "fc3"),
            range(0.0, 0.7)
        );
        // No rows for the layer or knob, a fixed domain, a knob a table does not narrow:
        // unchanged.
        assert_eq!(narrow(&range(0.0, 0.9), "sparsity", "fc1"), range(0.0, 0.9));
        let fixed = KnobDomain::Fixed(ParamValue::Int(2));
        assert_eq!(narrow(&fixed, "bits", "fc1"), fixed);
        assert_eq!(narrow(&range(0.1, 1.0), "rank", "fc1"), range(0.1, 1.0));
    }

    #[test]
    fn a_campaign_with_a_table_searches_the_narrowed_bounds() {
        let tmp = tempfile::tempdir().unwrap();
        sculpt_store::write_sensitivity(&tmp.path().join("sens.parquet"), &crafted()).unwrap();
        let text = "name = \"narrow\"\n[data]\nsource = \"digits\"\n[teacher]\nmodel = \"mlp\"\n\
             [search]\nstrategy = \"random\"\ntrials = 3\n\
             sensitivity = { table = \"sens.parquet\", max_drop = 0.01 }\n\
             [search.temperature]\nlow = 1.0\nhigh = 8.0\n\
             [search.prune]\nlow = 0.0\nhigh = 0.8\n\
             [search.sparsity]\nlayers = \"fc3\"\nlow = 0.0\nhigh = 0.95\n\
             [search.bits]\nchoices = [2, 3, 4, 5, 6, 8]\n\
             [latency]\nprofile = \"epyc-zen4-1core\"\n";
        let path = tmp.path().join("narrow.toml");
        std::fs::write(&path, text).unwrap();
        let campaign = Campaign::load(&path).unwrap();
        let teacher = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        let space = search_space(&campaign, &teacher).unwrap();
        let dim = |name: &str| {
            let i = space.space.index_of(name)?;
            Some(space.space.dims()[i].clone())
        };
        assert_eq!(
            dim("prune_fc1"),
            Some(Dimension::float("prune_fc1", 0.0, 0.4, false))
        );
        assert_eq!(
            dim("sparsity_fc3"),
            Some(Dimension::float("sparsity_fc3", 0.0, 0.7, false))
        );
        assert_eq!(
            dim("bits_fc1"),
            Some(Dimension::categorical("bits_fc1", vec![4.0, 5.0, 6.0, 8.0]))
        );
        // Pinned layers are no dimension, but are applied and recorded.
        assert_eq!(dim("prune_fc2"), None);
        assert_eq!(dim("bits_fc2"), None);
        assert_eq!(dim("bits_fc3"), None);
        assert_eq!(
            dim("temperature"),
            Some(Dimension::float("temperature", 1.0, 8.0, false))
        );
        assert_eq!(space.columns().len(), 1 + 2 + 1 + 3);
        let point = space
            .space
            .sample(&mut rand::rngs::StdRng::seed_from_u64(3));
        let plan = space.decode(&point).unwrap();
        assert_eq!(plan.layer("fc2").prune, 0.0);
        assert_eq!(plan.layer("fc2").bits, 8);
        assert_eq!(plan.layer("fc3").bits, 8);
        assert!(plan.layer("fc1").prune <= 0.4);
        assert!(space
            .narrowed
            .contains(&"prune_fc1: [0, 0.8] -> [0, 0.4]".to_string()));
        assert!(space
            .narrowed
            .contains(&"bits_fc3: 2, 3, 4, 5, 6, 8 -> fixed at 8".to_string()));
        // The same campaign and table give the same space (a resumed run rebuilds it).
        let again = search_space(&Campaign::load(&path).unwrap(), &teacher).unwrap();
        assert_eq!(again.space, space.space);

        // A table measured on another model is refused, naming the layer and the field.
        let mut other = crafted();
        other.push(row("conv1", "bits", 4.0, 0.0));
        sculpt_store::write_sensitivity(&tmp.path().join("sens.parquet"), &other).unwrap();
        let campaign = Campaign::load(&path).unwrap();
        let err = search_space(&campaign, &teacher).unwrap_err().to_string();
        assert!(
            err.contains("search.sensitivity.table")
                && err.contains("`conv1`")
                && err.contains("narrow.toml:9:"),
            "{err}"
        );
    }

    #[test]
    fn a_pattern_that_matches_nothing_names_the_field() {
        let text = every_knob().replace("[search.prune]\n", "[search.prune]\nlayers = \"conv*\"\n");
        let campaign = Campaign::parse(&text, Path::new("all.toml")).unwrap();
        let teacher = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        let err = search_space(&campaign, &teacher).unwrap_err().to_string();
        assert!(
            err.contains("search.prune.layers") && err.contains("fc1, fc2"),
            "{err}"
        );
    }
}
