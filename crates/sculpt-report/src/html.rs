//! The stakeholder report: `report.html` (self-contained: inline SVG and CSS, no external
//! asset, opens offline), `report.md` (the same content, figures as PNG links) and every
//! figure as SVG and PNG under `figures/`. One campaign or several, whose fronts and
//! hypervolume curves are overlaid for comparison.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sculpt_store::{SensitivityRow, TeacherRecord, TrialRecord, TrialState};

use crate::error::{ReportError, Result};
use crate::figures::{format_bytes, Cost, Figure, Series};
use crate::select::{pareto_by, select, Constraints, Prefer, Selection};

/// One campaign as the report sees it.
#[derive(Debug, Clone)]
pub struct CampaignReport<'a> {
    pub name: String,
    pub dir: PathBuf,
    pub columns: &'a [String],
    pub layers: &'a [String],
    pub trials: &'a [TrialRecord],
    pub teacher: &'a TeacherRecord,
    pub budget_ms: Option<f64>,
    /// What the campaign traded accuracy against.
    pub objective: Cost,
    /// Summary rows: model, data, device and latency model, objectives and constraints,
    /// strategy, budget, duration.
    pub facts: Vec<(String, String)>,
    /// Test-split scores of rebuilt trials: trial → (validation, test) accuracy.
    pub heldout: BTreeMap<u64, (f64, f64)>,
    pub teacher_test: Option<f64>,
    /// A sensitivity table and its accuracy-drop limit, when the campaign has one.
    pub sensitivity: Option<(Vec<SensitivityRow>, Option<f64>)>,
}

impl CampaignReport<'_> {
    fn count(&self, state: TrialState) -> usize {
        self.trials.iter().filter(|t| t.state == state).count()
    }

    /// The trials that failed or diverged, for the list with their reasons.
    fn failed(&self) -> Vec<&TrialRecord> {
        self.trials
            .iter()
            .filter(|t| matches!(t.state, TrialState::Failed | TrialState::Diverged))
            .collect()
    }

    /// The Pareto configurations of the campaign's own objective, by latency.
    pub fn pareto(&self) -> Vec<usize> {
        let mut front = pareto_by(self.trials, |t| self.objective.of(t));
        front.sort_by(|&a, &b| {
            let l = |i: usize| self.trials[i].latency_ms.unwrap_or(f64::INFINITY);
            l(a).total_cmp(&l(b)).then(a.cmp(&b))
        });
        front
    }
}

/// The files a report wrote.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub html: PathBuf,
    pub markdown: PathBuf,
    pub figures: Vec<Figure>,
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct(a: f64) -> String {
    format!("{:.2}%", a * 100.0)
}

/// Hypervolume after each trial (in trial order), in (error, cost / teacher's cost) with
/// reference (1, 1).
pub fn hypervolume_curve(c: &CampaignReport) -> Vec<(f64, f64)> {
    let mut order: Vec<&TrialRecord> = c.trials.iter().collect();
    order.sort_by_key(|t| t.trial_id);
    let reference = c.objective.of_teacher(c.teacher);
    let mut points: Vec<[f64; 2]> = Vec::new();
    let mut curve = Vec::with_capacity(order.len());
    for (k, t) in order.iter().enumerate() {
        if let (true, Some(a), Some(x)) = (t.is_complete(), t.accuracy, c.objective.of(t)) {
            if a.is_finite() {
                points.push([1.0 - a, x / reference]);
            }
        }
        curve.push((
            (k + 1) as f64,
            sculpt_search::hypervolume_2d(&points, [1.0, 1.0]),
        ));
    }
    curve
}

/// A knob's per-layer values over the Pareto configurations, for a heatmap.
fn knob_matrix(c: &CampaignReport, front: &[usize], knob: &str) -> Vec<Vec<Option<f64>>> {
    front
        .iter()
        .map(|&i| {
            c.layers
                .iter()
                .map(|l| c.trials[i].param_f64(&format!("{knob}_{l}")))
                .collect()
        })
        .collect()
}

/// Writes the report of `campaigns` into `out`: `report.html`, `report.md` and
/// `figures/`.
pub fn write_html_report(out: &Path, campaigns: &[CampaignReport]) -> Result<ReportFiles> {
    if campaigns.is_empty() {
        return Err(ReportError::Plot {
            path: out.to_path_buf(),
            message: "no campaign to report".into(),
        });
    }
    let fig_dir = out.join("figures");
    std::fs::create_dir_all(&fig_dir).map_err(|e| ReportError::Io {
        path: fig_dir.clone(),
        cause: e,
    })?;
    let names: Vec<&str> = campaigns.iter().map(|c| c.name.as_str()).collect();
    let title = names.join(" vs ");
    let series: Vec<Series> = campaigns
        .iter()
        .map(|c| Series {
            name: &c.name,
            trials: c.trials,
            teacher: c.teacher,
            budget_ms: c.budget_ms,
        })
        .collect();
    let mut figures: Vec<(String, Figure)> = Vec::new();
    let any_complete = campaigns
        .iter()
        .any(|c| c.trials.iter().any(|t| t.is_complete()));
    if any_complete {
        for (stem, cost, what) in [
            ("front-latency", Cost::Latency, "Accuracy against latency"),
            ("front-size", Cost::Size, "Accuracy against model size"),
        ] {
            let f = crate::figure!(&fig_dir, stem, what, (960, 600), |root| {
                crate::figures::draw_front(root, what, &series, cost)
            })?;
            figures.push(("fronts".into(), f));
        }
    }
    let curves: Vec<(String, Vec<(f64, f64)>)> = campaigns
        .iter()
        .map(|c| (c.name.clone(), hypervolume_curve(c)))
        .collect();
    let objective_word = match campaigns[0].objective {
        Cost::Latency => "latency",
        Cost::Size => "size",
    };
    let hv_desc = format!("hypervolume (error × {objective_word} / teacher's)");
    let hv_title = "Hypervolume of the trials so far";
    let f = crate::figure!(&fig_dir, "hypervolume", hv_title, (960, 480), |root| {
        crate::figures::draw_hypervolume(root, hv_title, &hv_desc, &curves)
    })?;
    figures.push(("hypervolume".into(), f));
    for (k, c) in campaigns.iter().enumerate() {
        let front = c.pareto();
        if front.is_empty() {
            continue;
        }
        let rows: Vec<String> = front
            .iter()
            .map(|&i| format!("trial {}", c.trials[i].trial_id))
            .collect();
        let suffix = if campaigns.len() > 1 {
            format!("-{}", k + 1)
        } else {
            String::new()
        };
        let height = (140 + 34 * front.len()).min(1400) as u32;
        let width = (260 + 110 * c.layers.len()).clamp(640, 1200) as u32;
        for (knob, what, range, fmt) in [
            (
                "bits",
                "Weight bits",
                (2.0, 8.0),
                &(|v: f64| format!("{v:.0}")) as &dyn Fn(f64) -> String,
            ),
            (
                "prune",
                "Neurons or channels pruned (fraction)",
                (0.0, 0.9),
                &(|v: f64| format!("{v:.2}")) as &dyn Fn(f64) -> String,
            ),
            (
                "sparsity",
                "Weights zeroed (fraction)",
                (0.0, 0.95),
                &(|v: f64| format!("{v:.2}")) as &dyn Fn(f64) -> String,
            ),
        ] {
            let values = knob_matrix(c, &front, knob);
            if values.iter().all(|r| r.iter().all(Option::is_none)) {
                continue;
            }
            let title = format!("{what} per layer");
            let stem = format!("heatmap-{knob}{suffix}");
            let f = crate::figure!(&fig_dir, &stem, &title, (width, height), |root| {
                crate::figures::draw_heatmap(
                    root, &title, &rows, c.layers, &values, range, fmt, "layer",
                )
            })?;
            figures.push((format!("heatmaps{suffix}"), f));
        }
        if let Some((rows, max_drop)) = &c.sensitivity {
            let title = format!("Sensitivity of each layer alone ({})", c.name);
            let stem = format!("sensitivity{suffix}");
            let size = crate::sensitivity::sensitivity_size(rows);
            let f = crate::figure!(&fig_dir, &stem, &title, size, |root| {
                crate::sensitivity::draw_sensitivity(root, &title, rows, *max_drop)
            })?;
            figures.push((format!("sensitivity{suffix}"), f));
        }
    }

    let html = render_html(&title, campaigns, &figures, out);
    let md = render_markdown(&title, campaigns, &figures, out);
    let html_path = out.join("report.html");
    let md_path = out.join("report.md");
    for (path, text) in [(&html_path, &html), (&md_path, &md)] {
        std::fs::write(path, text).map_err(|e| ReportError::Io {
            path: path.clone(),
            cause: e,
        })?;
    }
    Ok(ReportFiles {
        html: html_path,
        markdown: md_path,
        figures: figures.into_iter().map(|(_, f)| f).collect(),
    })
}

/// One row of the Pareto table.
struct Row {
    trial: u64,
    val: f64,
    test: Option<f64>,
    delta: f64,
    latency: f64,
    speedup: f64,
    size: u64,
    ratio: f64,
    config: String,
}

fn rows(c: &CampaignReport) -> Vec<Row> {
    c.pareto()
        .into_iter()
        .map(|i| {
            let t = &c.trials[i];
            let val = t.accuracy.unwrap_or(f64::NAN);
            let latency = t.latency_ms.unwrap_or(f64::NAN);
            let size = t.size_bytes.unwrap_or(0);
            Row {
                trial: t.trial_id,
                val,
                test: c.heldout.get(&t.trial_id).map(|h| h.1),
                delta: (val - c.teacher.accuracy) * 100.0,
                latency,
                speedup: c.teacher.latency_ms / latency,
                size,
                ratio: c.teacher.size_bytes as f64 / size.max(1) as f64,
                config: crate::summary::configuration(c.columns, t),
            }
        })
        .collect()
}

fn counts(c: &CampaignReport) -> String {
    format!(
        "{} trials: {} complete, {} failed, {} infeasible (screened out before fine-tuning), {} diverged, {} stopped early by successive halving",
        c.trials.len(),
        c.count(TrialState::Complete),
        c.count(TrialState::Failed),
        c.count(TrialState::Infeasible),
        c.count(TrialState::Diverged),
        c.count(TrialState::Stopped),
    )
}

/// The pick under the campaign's budget (most accurate on validation within it).
fn best_under_budget<'a>(c: &CampaignReport<'a>) -> Option<(f64, Option<&'a TrialRecord>)> {
    let budget = c.budget_ms?;
    let limits = Constraints {
        max_latency_ms: Some(budget),
        ..Default::default()
    };
    Some(match select(c.trials, &limits, Prefer::Accuracy, 0) {
        Selection::Chosen { chosen, .. } => (budget, Some(chosen)),
        Selection::Infeasible { .. } => (budget, None),
    })
}

const CSS: &str = "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;color:#111;max-width:1040px;margin:2em auto;padding:0 1em;line-height:1.45}\
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #999;padding-bottom:.2em}\
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}th,td{border:1px solid #bbb;padding:.3em .55em;text-align:right;vertical-align:top}\
th{background:#eee}td.l,th.l{text-align:left}td.cfg{text-align:left;font-size:.85em;color:#333;max-width:360px}\
figure{margin:1.2em 0}figure svg{max-width:100%;height:auto;border:1px solid #ddd}figcaption{font-size:.9em;color:#444}\
.note{color:#444;font-size:.92em}.pick{background:#f3f6fb;border-left:4px solid #0054a6;padding:.6em 1em}\
@media print{body{max-width:none}figure{break-inside:avoid}h2{break-after:avoid}}";

fn figure_html(f: &Figure, out: &Path) -> String {
    // plotters writes width and height; a viewBox lets the figure scale to the page.
    let svg = match (attr(&f.svg, "width"), attr(&f.svg, "height")) {
        (Some(w), Some(h)) if !f.svg.contains("viewBox") => {
            f.svg
                .replacen("<svg ", &format!("<svg viewBox=\"0 0 {w} {h}\" "), 1)
        }
        _ => f.svg.clone(),
    };
    let svg = svg
        .lines()
        .filter(|l| !l.starts_with("<?xml"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "<figure>{svg}<figcaption>{} (<a href=\"{}\">SVG</a>, <a href=\"{}\">PNG</a>)</figcaption></figure>\n",
        esc(&f.title),
        esc(&relative(&f.svg_path, out)),
        esc(&relative(&f.png_path, out))
    )
}

fn attr(svg: &str, name: &str) -> Option<String> {
    let head = &svg[svg.find("<svg")?..];
    let at = head.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = head[at..].find('"')?;
    Some(head[at..at + end].to_string())
}

fn relative(path: &Path, out: &Path) -> String {
    path.strip_prefix(out)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn render_html(
    title: &str,
    campaigns: &[CampaignReport],
    figures: &[(String, Figure)],
    out: &Path,
) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>sculpt report: {}</title><style>{CSS}</style></head><body>\n",
        esc(title)
    );
    let _ = writeln!(h, "<h1>Compression search: {}</h1>", esc(title));
    let _ = writeln!(
        h,
        "<p class=\"note\">Written by sculpt {}. Accuracy is top-1 on the validation split (what the search saw) and, where shown, on the test split (held out: each Pareto configuration rebuilt from its plan and seed and scored once). Latency is the campaign's latency model at batch 1; size counts each weight at its bit width with its scales, zero points and sparse index.</p>",
        env!("CARGO_PKG_VERSION")
    );
    for c in campaigns {
        let _ = writeln!(h, "<h2>Summary: {}</h2>\n<table>", esc(&c.name));
        for (k, v) in &c.facts {
            let _ = writeln!(
                h,
                "<tr><th class=\"l\">{}</th><td class=\"l\">{}</td></tr>",
                esc(k),
                esc(v)
            );
        }
        let _ = writeln!(
            h,
            "<tr><th class=\"l\">trials</th><td class=\"l\">{}</td></tr>",
            esc(&counts(c))
        );
        let t = c.teacher;
        let _ = writeln!(
            h,
            "<tr><th class=\"l\">teacher</th><td class=\"l\">{}: validation {}{}, {:.4} ms, {} ({} parameters)</td></tr></table>",
            esc(&t.model),
            pct(t.accuracy),
            c.teacher_test.map(|a| format!(", test {}", pct(a))).unwrap_or_default(),
            t.latency_ms,
            format_bytes(t.size_bytes as f64),
            t.params
        );
        if let Some((budget, pick)) = best_under_budget(c) {
            let _ = writeln!(
                h,
                "<div class=\"pick\"><b>Best under the latency budget of {budget} ms:</b> "
            );
            match pick {
                Some(p) => {
                    let _ = writeln!(
                        h,
                        "trial {}: validation {} ({:+.2} points against the teacher's){}, {:.4} ms ({:.1}× faster), {} ({:.1}× smaller). {}",
                        p.trial_id,
                        pct(p.accuracy.unwrap_or(0.0)),
                        (p.accuracy.unwrap_or(0.0) - t.accuracy) * 100.0,
                        c.heldout.get(&p.trial_id).map(|x| format!(", test {}", pct(x.1))).unwrap_or_default(),
                        p.latency_ms.unwrap_or(0.0),
                        t.latency_ms / p.latency_ms.unwrap_or(f64::NAN),
                        format_bytes(p.size_bytes.unwrap_or(0) as f64),
                        t.size_bytes as f64 / p.size_bytes.unwrap_or(1).max(1) as f64,
                        esc(&crate::summary::configuration(c.columns, p))
                    );
                }
                None => {
                    let _ = writeln!(h, "no complete trial meets it.");
                }
            }
            let _ = writeln!(h, "</div>");
        }
    }
    let section = |h: &mut String, group: &str, heading: &str, note: &str| {
        let group_figures: Vec<&Figure> = figures
            .iter()
            .filter(|(g, _)| g == group)
            .map(|(_, f)| f)
            .collect();
        if group_figures.is_empty() {
            return;
        }
        let _ = writeln!(h, "<h2>{heading}</h2>");
        if !note.is_empty() {
            let _ = writeln!(h, "<p class=\"note\">{note}</p>");
        }
        for f in group_figures {
            h.push_str(&figure_html(f, out));
        }
    };
    section(
        &mut h,
        "fronts",
        "Pareto fronts",
        "Each dot is a fine-tuned candidate; the line joins the ones no other candidate beats on both axes. Dominated trials are light grey, the teacher is the black triangle, the dashed line is the latency budget, and the circled point is the knee (where the front bends most).",
    );
    section(
        &mut h,
        "hypervolume",
        "Search progress",
        "The area the trials so far dominate, in (error rate, cost relative to the teacher) against the reference (1, 1): it rises when a trial extends the front.",
    );
    for (k, c) in campaigns.iter().enumerate() {
        let table = rows(c);
        let _ = writeln!(h, "<h2>Pareto configurations: {}</h2>", esc(&c.name));
        let _ = writeln!(h, "<p class=\"note\">Sorted by latency. Δ is the validation accuracy change against the teacher, in points; speed-up and compression are against the teacher.{}</p>",
            if c.heldout.is_empty() && !table.is_empty() { " The test column is empty: run <code>sculpt report</code> without <code>--no-test</code> to rebuild and score these on the test split." } else { "" });
        let _ = writeln!(h, "<table><tr><th>trial</th><th>validation</th><th>test</th><th>Δ (points)</th><th>latency (ms)</th><th>speed-up</th><th>size</th><th>compression</th><th class=\"l\">configuration</th></tr>");
        for r in &table {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:+.2}</td><td>{:.4}</td><td>{:.2}×</td><td>{}</td><td>{:.1}×</td><td class=\"cfg\">{}</td></tr>",
                r.trial,
                pct(r.val),
                r.test.map(pct).unwrap_or_else(|| "–".into()),
                r.delta,
                r.latency,
                r.speedup,
                format_bytes(r.size as f64),
                r.ratio,
                esc(&r.config)
            );
        }
        let _ = writeln!(h, "</table>");
        let suffix = if campaigns.len() > 1 {
            format!("-{}", k + 1)
        } else {
            String::new()
        };
        section(
            &mut h,
            &format!("heatmaps{suffix}"),
            &format!("What the Pareto configurations chose: {}", esc(&c.name)),
            "One row per Pareto configuration (fastest at the top), one column per layer; darker means harsher compression for pruning and sparsity, and more bits for bit widths.",
        );
        section(
            &mut h,
            &format!("sensitivity{suffix}"),
            &format!("Layer sensitivity: {}", esc(&c.name)),
            "Accuracy lost when one layer alone is compressed, without fine-tuning.",
        );
        let failed = c.failed();
        if !failed.is_empty() {
            let _ = writeln!(
                h,
                "<details><summary>{} failed or diverged trials, with their reasons</summary><ul>",
                failed.len()
            );
            for t in failed {
                let _ = writeln!(
                    h,
                    "<li>trial {} ({}): {}</li>",
                    t.trial_id,
                    t.state.as_str(),
                    esc(t.error.as_deref().unwrap_or("no reason recorded"))
                );
            }
            let _ = writeln!(h, "</ul></details>");
        }
    }
    h.push_str("</body></html>\n");
    h
}

fn render_markdown(
    title: &str,
    campaigns: &[CampaignReport],
    figures: &[(String, Figure)],
    out: &Path,
) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Compression search: {title}\n");
    let _ = writeln!(
        m,
        "Accuracy is top-1 on the validation split and, where shown, on the held-out test split (each Pareto configuration rebuilt from its plan and seed). Latency is the campaign's latency model at batch 1. `report.html` has the same content with the figures inline.\n"
    );
    for c in campaigns {
        let _ = writeln!(m, "## Summary: {}\n", c.name);
        let _ = writeln!(m, "| | |\n|---|---|");
        for (k, v) in &c.facts {
            let _ = writeln!(m, "| {k} | {} |", v.replace('|', "\\|"));
        }
        let _ = writeln!(m, "| trials | {} |", counts(c));
        let t = c.teacher;
        let _ = writeln!(
            m,
            "| teacher | {}: validation {}{}, {:.4} ms, {} |\n",
            t.model,
            pct(t.accuracy),
            c.teacher_test
                .map(|a| format!(", test {}", pct(a)))
                .unwrap_or_default(),
            t.latency_ms,
            format_bytes(t.size_bytes as f64)
        );
        if let Some((budget, pick)) = best_under_budget(c) {
            match pick {
                Some(p) => {
                    let _ = writeln!(
                        m,
                        "**Best under the latency budget of {budget} ms:** trial {}, validation {}{}, {:.4} ms, {}.\n",
                        p.trial_id,
                        pct(p.accuracy.unwrap_or(0.0)),
                        c.heldout.get(&p.trial_id).map(|x| format!(", test {}", pct(x.1))).unwrap_or_default(),
                        p.latency_ms.unwrap_or(0.0),
                        format_bytes(p.size_bytes.unwrap_or(0) as f64)
                    );
                }
                None => {
                    let _ = writeln!(
                        m,
                        "**Latency budget {budget} ms:** no complete trial meets it.\n"
                    );
                }
            }
        }
    }
    let _ = writeln!(m, "## Figures\n");
    for (_, f) in figures {
        let _ = writeln!(m, "![{}]({})\n", f.title, relative(&f.png_path, out));
    }
    for c in campaigns {
        let _ = writeln!(m, "## Pareto configurations: {}\n", c.name);
        let _ = writeln!(
            m,
            "| trial | validation | test | Δ (points) | latency (ms) | speed-up | size | compression | configuration |\n|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for r in rows(c) {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {:+.2} | {:.4} | {:.2}× | {} | {:.1}× | {} |",
                r.trial,
                pct(r.val),
                r.test.map(pct).unwrap_or_else(|| "–".into()),
                r.delta,
                r.latency,
                r.speedup,
                format_bytes(r.size as f64),
                r.ratio,
                r.config
            );
        }
        let _ = writeln!(m);
        let failed = c.failed();
        if !failed.is_empty() {
            let _ = writeln!(m, "### Failed or diverged trials of {}\n", c.name);
            for t in failed {
                let _ = writeln!(
                    m,
                    "- trial {} ({}): {}",
                    t.trial_id,
                    t.state.as_str(),
                    t.error.as_deref().unwrap_or("no reason recorded")
                );
            }
            let _ = writeln!(m);
        }
    }
    m
}
