//! The search space of a campaign and its codec, built from the knob table. Each searched
//! knob becomes one dimension per layer it addresses, named by the knob's column
//! (`temperature`, `prune_fc1`, `bits_conv2`). A point decodes into a compression plan
//! through the knobs' setters; the plan's values, read back through the knobs' getters,
//! are the trial's record; and a record encodes back into the point. Nothing else knows
//! the knobs: a plan is never sampled directly, and no code parses column names.

use std::collections::BTreeMap;

use sculpt_compress::{CompressionPlan, Knob, ParamValue, KNOBS};
use sculpt_nn::Graph;
use sculpt_search::{Dimension, Point, SearchSpace, TrialState, TrialView};
use sculpt_store::{TrialRecord, TrialState as StoredState};

use crate::config::{matches_pattern, Campaign, KnobDomain};
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
        match &self.domain {
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
        let mut plan = CompressionPlan::default();
        for c in &self.fixed {
            (c.knob.set)(&mut plan, &c.layer, &c.decode(0.0));
        }
        for (c, &x) in self.searched.iter().zip(point) {
            let value = c
                .knob
                .check(&c.decode(x))
                .map_err(|m| CampaignError::Invalid(format!("{}: {m}", c.column)))?;
            (c.knob.set)(&mut plan, &c.layer, &value);
        }
        Ok(plan)
    }

    /// The record of a plan: the value of every coordinate, read back from the plan.
    pub fn params(&self, plan: &CompressionPlan) -> BTreeMap<String, serde_json::Value> {
        self.searched
            .iter()
            .chain(&self.fixed)
            .map(|c| {
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
                return Err(CampaignError::Invalid(format!(
                    "{}:{}:{}: field `search.{}.layers`: \"{}\" matches no layer of `{}` that takes `{}` (those are: {})",
                    campaign.path.display(),
                    k.at.0,
                    k.at.1,
                    k.knob,
                    k.layers,
                    teacher.spec.name,
                    k.knob,
                    eligible.join(", ")
                )));
            }
            matched
        } else {
            vec![String::new()]
        };
        for layer in layers {
            let coordinate = Coordinate {
                knob,
                column: knob.column(&layer),
                layer,
                domain: k.domain.clone(),
            };
            match coordinate.dimension() {
                Some(_) => searched.push(coordinate),
                None => fixed.push(coordinate),
            }
        }
    }
    if searched.is_empty() {
        return Err(CampaignError::Invalid(format!(
            "{}: the campaign searches nothing: give at least one [search.<knob>] with a range or choices (knobs: {})",
            campaign.path.display(),
            sculpt_compress::knobs::knob_names().join(", ")
        )));
    }
    let dims = searched.iter().filter_map(Coordinate::dimension).collect();
    Ok(CampaignSpace {
        space: SearchSpace::new(dims)?,
        searched,
        fixed,
    })
}

/// The objectives a strategy minimises: error rate and latency.
pub fn objectives(record: &TrialRecord) -> Option<Vec<f64>> {
    match (record.state, record.accuracy, record.latency_ms) {
        (StoredState::Complete, Some(a), Some(l)) => Some(vec![1.0 - a, l]),
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
    budget_ms: Option<f64>,
) -> TrialView {
    let encoded = space.encode(&record.params);
    let point = match &encoded {
        Some(p) => space.space.nearest(p),
        None => space.space.nearest(&vec![f64::NAN; space.space.len()]),
    };
    let objectives = encoded.and(objectives(record));
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
    use std::path::Path;

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
