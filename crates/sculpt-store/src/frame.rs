//! The polars frame of a campaign's trials, in the documented column order:
//! `trial_id, state, strategy, generation`, then one column per configuration parameter
//! in the campaign's column order (`temperature, alpha, …, prune_<layer>…, bits_<layer>…`),
//! then `accuracy, latency_ms, size_bytes, params, nonzeros, flops, bops, duration_s, error`,
//! then `fidelity` (epochs of fine-tuning behind the scores) and `rungs` (successive halving).

use polars::prelude::*;

use crate::error::Result;
use crate::record::TrialRecord;

/// One parameter column, typed by its values: integers when every value is an integer,
/// floats when every value is a number, text otherwise. Missing values are null.
fn param_column(name: &str, trials: &[TrialRecord]) -> Column {
    let values: Vec<Option<&serde_json::Value>> =
        trials.iter().map(|t| t.params.get(name)).collect();
    let present = || values.iter().flatten();
    if present().all(|v| v.is_i64()) {
        Column::new(
            name.into(),
            values
                .iter()
                .map(|v| v.and_then(|v| v.as_i64()))
                .collect::<Vec<_>>(),
        )
    } else if present().all(|v| v.is_number()) {
        Column::new(
            name.into(),
            values
                .iter()
                .map(|v| v.and_then(|v| v.as_f64()))
                .collect::<Vec<_>>(),
        )
    } else {
        Column::new(
            name.into(),
            values
                .iter()
                .map(|v| {
                    v.map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                })
                .collect::<Vec<_>>(),
        )
    }
}

pub fn trials_frame(param_columns: &[String], trials: &[TrialRecord]) -> Result<DataFrame> {
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
    ];
    for column in param_columns {
        columns.push(param_column(column, trials));
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
            trials.iter().map(|t| t.num_params).collect::<Vec<_>>(),
        ),
        Column::new(
            "nonzeros".into(),
            trials.iter().map(|t| t.nonzeros).collect::<Vec<_>>(),
        ),
        Column::new(
            "flops".into(),
            trials.iter().map(|t| t.flops).collect::<Vec<_>>(),
        ),
        Column::new(
            "bops".into(),
            trials.iter().map(|t| t.bops).collect::<Vec<_>>(),
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
        Column::new(
            "fidelity".into(),
            trials
                .iter()
                .map(|t| t.fidelity)
                .collect::<Vec<Option<u32>>>(),
        ),
        // `epochs:accuracy` per rung reached, in order (`1:0.9123,3:0.9480`).
        Column::new(
            "rungs".into(),
            trials
                .iter()
                .map(|t| {
                    (!t.rungs.is_empty()).then(|| {
                        t.rungs
                            .iter()
                            .map(|r| format!("{}:{:.4}", r.epochs, r.accuracy))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                })
                .collect::<Vec<Option<String>>>(),
        ),
    ]);
    Ok(DataFrame::new(trials.len(), columns)?)
}
