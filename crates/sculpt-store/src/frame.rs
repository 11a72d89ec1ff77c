//! The polars frame of a campaign's trials, in the documented column order:
//! `trial_id, state, strategy, generation, temperature, alpha, prune_<layer>…,
//! bits_<layer>…, accuracy, latency_ms, size_bytes, params, flops, duration_s, error`.

use polars::prelude::*;

use crate::error::Result;
use crate::record::TrialRecord;

pub fn trials_frame(layers: &[String], trials: &[TrialRecord]) -> Result<DataFrame> {
    let mut columns: Vec<Column> = vec![
        Column::new(
            "trial_id".into(),
            trials.iter().map(|t| t.trial_id).collect::<Vec<u64>>(),
        ),
        Column::new(
            "state".into(),
            trials
                .iter()
                .map(|t| t.state.as_str())
                .collect::<Vec<&str>>(),
        ),
        Column::new(
            "strategy".into(),
            trials
                .iter()
                .map(|t| t.strategy.as_str())
                .collect::<Vec<&str>>(),
        ),
        Column::new(
            "generation".into(),
            trials
                .iter()
                .map(|t| t.generation)
                .collect::<Vec<Option<u32>>>(),
        ),
        Column::new(
            "temperature".into(),
            trials.iter().map(|t| t.temperature).collect::<Vec<f64>>(),
        ),
        Column::new(
            "alpha".into(),
            trials.iter().map(|t| t.alpha).collect::<Vec<f64>>(),
        ),
    ];
    for layer in layers {
        columns.push(Column::new(
            format!("prune_{layer}").into(),
            trials
                .iter()
                .map(|t| t.prune.get(layer).copied().unwrap_or(0.0))
                .collect::<Vec<f64>>(),
        ));
    }
    for layer in layers {
        columns.push(Column::new(
            format!("bits_{layer}").into(),
            trials
                .iter()
                .map(|t| t.bits.get(layer).copied().unwrap_or(32))
                .collect::<Vec<u32>>(),
        ));
    }
    columns.extend([
        Column::new(
            "accuracy".into(),
            trials.iter().map(|t| t.accuracy).collect::<Vec<_>>(),
        ),
        Column::new(
            "latency_ms".into(),
            trials.iter().map(|t| t.latency_ms).collect::<Vec<_>>(),
        ),
        Column::new(
            "size_bytes".into(),
            trials.iter().map(|t| t.size_bytes).collect::<Vec<_>>(),
        ),
        Column::new(
            "params".into(),
            trials.iter().map(|t| t.params).collect::<Vec<_>>(),
        ),
        Column::new(
            "flops".into(),
            trials.iter().map(|t| t.flops).collect::<Vec<_>>(),
        ),
        Column::new(
            "duration_s".into(),
            trials.iter().map(|t| t.duration_s).collect::<Vec<f64>>(),
        ),
        Column::new(
            "error".into(),
            trials
                .iter()
                .map(|t| t.error.as_deref())
                .collect::<Vec<Option<&str>>>(),
        ),
    ]);
    Ok(DataFrame::new(trials.len(), columns)?)
}
