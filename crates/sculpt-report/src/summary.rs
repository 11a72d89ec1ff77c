//! The Markdown summary and the whole report: `summary.md` and `pareto.svg` in a
//! campaign directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sculpt_store::{TeacherRecord, TrialRecord};

use crate::error::{ReportError, Result};
use crate::select::{best_under_budget, hypervolume, pareto_indices};

/// Everything a report is drawn from.
pub struct Report<'a> {
    pub campaign: &'a str,
    /// The parameter columns, in order.
    pub columns: &'a [String],
    pub trials: &'a [TrialRecord],
    pub teacher: &'a TeacherRecord,
    pub budget_ms: Option<f64>,
}

/// A trial's configuration as `column=value` pairs in column order, floats to two
/// decimals: `temperature=3.00, alpha=0.70, prune_fc1=0.50, bits_fc1=4`.
pub fn configuration(columns: &[String], t: &TrialRecord) -> String {
    columns
        .iter()
        .filter_map(|c| {
            let v = t.params.get(c)?;
            Some(match v {
                serde_json::Value::Number(n) if !n.is_i64() => {
                    format!("{c}={:.2}", n.as_f64().unwrap_or(f64::NAN))
                }
                serde_json::Value::String(s) => format!("{c}={s}"),
                other => format!("{c}={other}"),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn render_summary(report: &Report) -> String {
    let teacher = report.teacher;
    let trials = report.trials;
    let complete = trials.iter().filter(|t| t.is_complete()).count();
    let infeasible = trials
        .iter()
        .filter(|t| t.state == sculpt_store::TrialState::Infeasible)
        .count();
    let diverged = trials
        .iter()
        .filter(|t| t.state == sculpt_store::TrialState::Diverged)
        .count();
    let stopped = trials
        .iter()
        .filter(|t| t.state == sculpt_store::TrialState::Stopped)
        .count();
    let mut md = String::new();
    let _ = writeln!(md, "# {}: compression search summary\n", report.campaign);
    let _ = writeln!(
        md,
        "{} trials: {} complete, {} failed, {} screened out as over the latency budget before \
         fine-tuning{}{}. Accuracy is measured on the validation split with sculpt's runtime; \
         latency comes from the latency model; size counts every weight at its bit width plus \
         its scales and zero points, the index of sparse weights, and f32 biases.\n",
        trials.len(),
        complete,
        trials.len() - complete - infeasible - diverged - stopped,
        infeasible,
        if diverged > 0 {
            format!(
                ", {diverged} diverged in fine-tuning (the loss rose far above its start, or \
                 the student ended at chance accuracy; see their `error`)"
            )
        } else {
            String::new()
        },
        if stopped > 0 {
            format!(
                ", {stopped} stopped early by successive halving (their accuracy is a \
                 low-fidelity score, so they are left off the fronts)"
            )
        } else {
            String::new()
        }
    );
    if let Some(model) = &teacher.latency_model {
        let _ = writeln!(md, "Latency model: {model}.\n");
    }
    let _ = writeln!(md, "## Teacher\n");
    let _ = writeln!(
        md,
        "| model | accuracy | latency (ms) | size (bytes) | params | FLOPs |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| {} | {:.2}% | {:.4} | {} | {} | {} |\n",
        teacher.model,
        teacher.accuracy * 100.0,
        teacher.latency_ms,
        teacher.size_bytes,
        teacher.params,
        teacher.flops
    );
    let _ = writeln!(
        md,
        "Hypervolume (error × latency relative to the teacher, reference (1, 1)): {:.4}\n",
        hypervolume(trials, teacher)
    );
    if let Some(budget) = report.budget_ms {
        let _ = writeln!(md, "## Best under the latency budget of {budget} ms\n");
        match best_under_budget(trials, budget) {
            Some(t) => {
                let _ = writeln!(
                    md,
                    "Trial {}: accuracy {:.2}% ({:+.2} points against the teacher), latency {:.4} ms, \
                     {} bytes ({:.1}× smaller). Configuration: {}.\n",
                    t.trial_id,
                    t.accuracy.unwrap_or(0.0) * 100.0,
                    (t.accuracy.unwrap_or(0.0) - teacher.accuracy) * 100.0,
                    t.latency_ms.unwrap_or(0.0),
                    t.size_bytes.unwrap_or(0),
                    teacher.size_bytes as f64 / t.size_bytes.unwrap_or(1).max(1) as f64,
                    configuration(report.columns, t)
                );
            }
            None => {
                let _ = writeln!(md, "No completed trial meets the budget.\n");
            }
        }
    }
    let _ = writeln!(md, "## Pareto front (accuracy against latency)\n");
    let _ = writeln!(
        md,
        "`prune_<layer>` is the fraction of a layer's channels removed, `sparsity_<layer>` the \
         fraction of its weights zeroed, `bits_<layer>` its weight bit width.\n"
    );
    let _ = writeln!(
        md,
        "| trial | accuracy | Δ vs teacher | latency (ms) | speed-up | size (bytes) | smaller | configuration |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---|");
    for i in pareto_indices(trials) {
        let t = &trials[i];
        let accuracy = t.accuracy.unwrap_or(0.0);
        let latency = t.latency_ms.unwrap_or(f64::NAN);
        let size = t.size_bytes.unwrap_or(0);
        let _ = writeln!(
            md,
            "| {} | {:.2}% | {:+.2} | {:.4} | {:.1}× | {} | {:.1}× | {} |",
            t.trial_id,
            accuracy * 100.0,
            (accuracy - teacher.accuracy) * 100.0,
            latency,
            teacher.latency_ms / latency,
            size,
            teacher.size_bytes as f64 / size.max(1) as f64,
            configuration(report.columns, t)
        );
    }
    let failed: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| t.state == sculpt_store::TrialState::Failed)
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(md, "\n## Failed trials\n");
        for t in failed {
            let _ = writeln!(
                md,
                "- trial {}: {}",
                t.trial_id,
                t.error.as_deref().unwrap_or("no reason recorded")
            );
        }
    }
    md
}

/// Writes `summary.md` and `pareto.svg` into `dir`; returns their paths.
pub fn write_report(dir: &Path, report: &Report) -> Result<(PathBuf, PathBuf)> {
    let summary = dir.join("summary.md");
    std::fs::write(&summary, render_summary(report)).map_err(|e| ReportError::Io {
        path: summary.clone(),
        cause: e,
    })?;
    let figure = dir.join("pareto.svg");
    crate::plot::plot_pareto(
        &figure,
        &format!("{}: accuracy against latency", report.campaign),
        report.trials,
        report.teacher,
        report.budget_ms,
    )?;
    Ok((summary, figure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::tests::{teacher, trial};

    #[test]
    fn report_lists_the_front_and_draws_the_figure() {
        let trials = vec![
            trial(0, 0.90, 0.004, 10_000),
            trial(1, 0.96, 0.006, 20_000),
            trial(2, 0.93, 0.007, 30_000),
            trial(3, 0.20, 0.001, 5_000),
        ];
        let columns = vec!["temperature".to_string(), "bits_fc1".to_string()];
        let teacher = teacher();
        let report = Report {
            campaign: "demo",
            columns: &columns,
            trials: &trials,
            teacher: &teacher,
            budget_ms: Some(0.005),
        };
        let md = render_summary(&report);
        assert!(md.contains("| 1 | 96.00% | -1.00 |"), "{md}");
        assert!(!md.contains("| 2 | 93.00%"), "{md}");
        assert!(md.contains("Trial 0: accuracy 90.00%"), "{md}");
        assert!(md.contains("temperature=3.00, bits_fc1=4 |"), "{md}");
        let dir = tempfile::tempdir().unwrap();
        let (_, svg) = write_report(dir.path(), &report).unwrap();
        let text = std::fs::read_to_string(svg).unwrap();
        assert!(text.contains("<svg") && text.contains("Pareto front (3)"));
        assert!(text.contains("latency budget"));
        assert!(text.contains("1 trials below"));
    }
}
