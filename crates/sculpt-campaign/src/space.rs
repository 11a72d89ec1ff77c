//! The search space of a campaign and its decoding. A point holds `temperature`, `alpha`,
//! one `prune_<layer>` per prunable layer matched by the prune pattern and one
//! `bits_<layer>` per layer matched by the bits pattern. A compression plan is decoded from
//! a point; nothing samples plans directly.

use std::collections::BTreeMap;

use sculpt_compress::{CompressionPlan, LayerPlan};
use sculpt_nn::Graph;
use sculpt_search::{Dimension, Point, SearchSpace, TrialState, TrialView};
use sculpt_store::{TrialRecord, TrialState as StoredState};

use crate::config::{matches_pattern, Campaign};
use crate::error::{CampaignError, Result};

/// Builds the search space of `campaign` over the layers of `teacher`.
pub fn search_space(campaign: &Campaign, teacher: &Graph) -> Result<SearchSpace> {
    let float =
        |name: &str, r: &crate::config::FloatRange| Dimension::float(name, r.low, r.high, r.log);
    let mut dims = vec![
        float("temperature", &campaign.temperature),
        float("alpha", &campaign.alpha),
    ];
    let prunable: Vec<String> = sculpt_compress::prunable_layers(teacher)
        .into_iter()
        .filter(|l| matches_pattern(&campaign.prune_layers, l))
        .collect();
    if prunable.is_empty() {
        return Err(CampaignError::Invalid(format!(
            "{}: search.prune.layers = \"{}\" matches no prunable layer of `{}` (prunable: {})",
            campaign.path.display(),
            campaign.prune_layers,
            teacher.spec.name,
            sculpt_compress::prunable_layers(teacher).join(", ")
        )));
    }
    for layer in &prunable {
        dims.push(Dimension::float(
            format!("prune_{layer}"),
            campaign.prune.low,
            campaign.prune.high,
            false,
        ));
    }
    let quantizable: Vec<String> = teacher
        .spec
        .weight_layers()
        .into_iter()
        .filter(|l| matches_pattern(&campaign.bits_layers, l))
        .collect();
    if quantizable.is_empty() {
        return Err(CampaignError::Invalid(format!(
            "{}: search.bits.layers = \"{}\" matches no layer of `{}` (layers: {})",
            campaign.path.display(),
            campaign.bits_layers,
            teacher.spec.name,
            teacher.spec.weight_layers().join(", ")
        )));
    }
    let choices: Vec<f64> = campaign.bits_choices.iter().map(|&b| b as f64).collect();
    for layer in &quantizable {
        dims.push(Dimension::categorical(
            format!("bits_{layer}"),
            choices.clone(),
        ));
    }
    Ok(SearchSpace::new(dims)?)
}

/// Decodes a point into the plan for every Linear layer of `teacher`: layers outside the
/// space keep all their neurons and stay in f32.
pub fn decode(space: &SearchSpace, point: &Point, teacher: &Graph) -> Result<CompressionPlan> {
    let value = |name: &str| space.value(point, name);
    let mut layers = BTreeMap::new();
    for layer in teacher.spec.weight_layers() {
        layers.insert(
            layer.clone(),
            LayerPlan {
                prune_ratio: value(&format!("prune_{layer}")).unwrap_or(0.0),
                bits: value(&format!("bits_{layer}")).map_or(32, |b| b.round() as u32),
            },
        );
    }
    Ok(CompressionPlan {
        temperature: value("temperature")
            .ok_or_else(|| CampaignError::Invalid("the space has no temperature".into()))?,
        alpha: value("alpha")
            .ok_or_else(|| CampaignError::Invalid("the space has no alpha".into()))?,
        layers,
    })
}

/// The objectives a strategy minimises: error rate and latency.
pub fn objectives(record: &TrialRecord) -> Option<Vec<f64>> {
    match (record.state, record.accuracy, record.latency_ms) {
        (StoredState::Complete, Some(a), Some(l)) => Some(vec![1.0 - a, l]),
        _ => None,
    }
}

/// A stored trial as a strategy sees it. The point is rebuilt from the stored columns,
/// so strategies are rebuilt from history alone.
pub fn trial_view(record: &TrialRecord, space: &SearchSpace, budget_ms: Option<f64>) -> TrialView {
    let point: Point = space
        .dims()
        .iter()
        .map(|d| match d.name.as_str() {
            "temperature" => record.temperature,
            "alpha" => record.alpha,
            name => {
                if let Some(layer) = name.strip_prefix("prune_") {
                    record.prune.get(layer).copied().unwrap_or(0.0)
                } else if let Some(layer) = name.strip_prefix("bits_") {
                    record.bits.get(layer).copied().unwrap_or(32) as f64
                } else {
                    f64::NAN
                }
            }
        })
        .collect();
    let objectives = objectives(record);
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
