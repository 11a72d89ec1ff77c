//! Views of a sensitivity table (one layer at a time pruned, sparsified or quantized):
//! `sensitivity.svg`, one panel per knob with one line per layer showing the accuracy drop
//! against the knob's value, and a plain-text matrix of the same numbers for the terminal.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use sculpt_store::SensitivityRow;

use crate::error::{ReportError, Result};

/// The knobs a table can hold, in the order they are drawn and printed.
const KNOB_ORDER: &[&str] = &["prune", "sparsity", "bits"];

fn x_label(knob: &str) -> &str {
    match knob {
        "prune" => "structured prune ratio (neurons / channels removed)",
        "sparsity" => "unstructured sparsity (weights zeroed by magnitude)",
        "bits" => "weight bit width",
        other => other,
    }
}

/// The knobs present in `rows`: the known ones in their order, then any others by name.
fn knobs(rows: &[SensitivityRow]) -> Vec<String> {
    let mut found: Vec<String> = KNOB_ORDER
        .iter()
        .filter(|k| rows.iter().any(|r| r.knob == **k))
        .map(|k| k.to_string())
        .collect();
    for r in rows {
        if !found.contains(&r.knob) {
            found.push(r.knob.clone());
        }
    }
    found
}

/// Layers in the order they first appear (the model's order, as the sweep writes them).
fn layers<'a>(rows: impl Iterator<Item = &'a SensitivityRow>) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for r in rows {
        if !found.contains(&r.layer) {
            found.push(r.layer.clone());
        }
    }
    found
}

/// A colour per layer that stays readable for the first ten and cycles after.
fn colour(i: usize) -> RGBColor {
    const COLOURS: &[RGBColor] = &[
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    COLOURS[i % COLOURS.len()]
}

/// Draws `sensitivity.svg`: one panel per knob in `rows`, side by side, each with one line
/// per layer of accuracy drop (percentage points of validation accuracy) against the
/// knob's value. A dashed line at `max_drop` (a fraction) is drawn when given.
pub fn plot_sensitivity(
    path: &Path,
    title: &str,
    rows: &[SensitivityRow],
    max_drop: Option<f64>,
) -> Result<()> {
    crate::figures::ensure_font();
    let root = SVGBackend::new(path, sensitivity_size(rows)).into_drawing_area();
    draw_sensitivity(&root, title, rows, max_drop).map_err(|message| ReportError::Plot {
        path: path.to_path_buf(),
        message,
    })?;
    root.present().map_err(|e| ReportError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The pixel size of a sensitivity figure: one panel per knob.
pub fn sensitivity_size(rows: &[SensitivityRow]) -> (u32, u32) {
    (520 * knobs(rows).len().max(1) as u32, 560)
}

/// Draws the sensitivity panels on any plotters backend.
pub fn draw_sensitivity<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    rows: &[SensitivityRow],
    max_drop: Option<f64>,
) -> std::result::Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let knobs = knobs(rows);
    let panels = knobs.len().max(1);
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    let areas = root.split_evenly((1, panels));
    // One y scale for every panel, so a steep line in one panel reads as steep in all.
    let drops = rows
        .iter()
        .map(|r| r.accuracy_drop * 100.0)
        .chain(max_drop.map(|d| d * 100.0));
    let (y_low, y_high) = drops.fold((0.0f64, 1.0f64), |(lo, hi), d| (lo.min(d), hi.max(d)));
    let y_range = (y_low - 0.05 * (y_high - y_low))..(y_high + 0.05 * (y_high - y_low));
    // Every layer keeps its colour across panels.
    let all_layers = layers(rows.iter());
    for (knob, area) in knobs.iter().zip(areas.iter()) {
        let of_knob: Vec<&SensitivityRow> = rows.iter().filter(|r| &r.knob == knob).collect();
        let (x_low, x_high) = of_knob.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| {
            (lo.min(r.value), hi.max(r.value))
        });
        let pad = ((x_high - x_low) * 0.05).max(0.05);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{knob}, one layer at a time"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((x_low - pad)..(x_high + pad), y_range.clone())
            .map_err(|e| err(&e))?;
        let whole = |x: &f64| format!("{x:.0}");
        let decimal = |x: &f64| format!("{x:.1}");
        // Whole points unless the drops are all small.
        let points = |y: &f64| format!("{y:.*}", if y_high - y_low < 5.0 { 1 } else { 0 });
        chart
            .configure_mesh()
            .x_desc(x_label(knob))
            .x_label_formatter(if knob == "bits" { &whole } else { &decimal })
            .y_label_formatter(&points)
            .y_desc("validation accuracy drop (points)")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| err(&e))?;
        if let Some(limit) = max_drop {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x_low - pad, limit * 100.0), (x_high + pad, limit * 100.0)],
                    8,
                    5,
                    BLACK.stroke_width(1),
                ))
                .map_err(|e| err(&e))?
                .label(format!("max drop ({:.2} points)", limit * 100.0))
                .legend(|(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], BLACK));
        }
        for layer in layers(of_knob.iter().copied()) {
            let c = colour(all_layers.iter().position(|l| *l == layer).unwrap_or(0));
            let mut points: Vec<(f64, f64)> = of_knob
                .iter()
                .filter(|r| r.layer == layer)
                .map(|r| (r.value, r.accuracy_drop * 100.0))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(layer)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x - 10, y), (x + 10, y)], c.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            // Drops grow to the right for pruning and to the left for bits; the upper
            // middle is where the lines are least likely to be.
            .position(if knob == "bits" {
                SeriesLabelPosition::UpperRight
            } else {
                SeriesLabelPosition::UpperLeft
            })
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

fn format_value(knob: &str, value: f64) -> String {
    if knob == "bits" || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        // Enough digits for 0.95 and 0.125, no trailing noise.
        let text = format!("{value:.3}");
        text.trim_end_matches('0').to_string()
    }
}

/// The table as text: for each knob, one line per layer with the accuracy drop in
/// percentage points at each value. A cell is empty where the layer was not swept at
/// that value (the output layer is never pruned, for example).
pub fn sensitivity_text(rows: &[SensitivityRow]) -> String {
    let mut out = String::new();
    for knob in knobs(rows) {
        let of_knob: Vec<&SensitivityRow> = rows.iter().filter(|r| r.knob == knob).collect();
        let mut values: Vec<f64> = of_knob.iter().map(|r| r.value).collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        let layer_names = layers(of_knob.iter().copied());
        let width = layer_names
            .iter()
            .map(String::len)
            .chain([knob.len()])
            .max()
            .unwrap_or(0);
        let mut cells: BTreeMap<(String, u64), f64> = BTreeMap::new();
        for r in &of_knob {
            cells.insert((r.layer.clone(), r.value.to_bits()), r.accuracy_drop);
        }
        out.push_str(&format!("{knob:<width$}"));
        for v in &values {
            out.push_str(&format!(" {:>7}", format_value(&knob, *v)));
        }
        out.push('\n');
        for layer in &layer_names {
            out.push_str(&format!("{layer:<width$}"));
            for v in &values {
                match cells.get(&(layer.clone(), v.to_bits())) {
                    Some(d) => out.push_str(&format!(" {:>7.2}", d * 100.0)),
                    None => out.push_str(&format!(" {:>7}", "")),
                }
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<SensitivityRow> {
        let mut rows = Vec::new();
        for (i, layer) in ["fc1", "fc2", "fc3"].iter().enumerate() {
            for bits in 2..=8 {
                rows.push(SensitivityRow {
                    layer: layer.to_string(),
                    knob: "bits".into(),
                    value: bits as f64,
                    accuracy: 0.9,
                    accuracy_drop: 0.5 / (bits * bits) as f64 * (i + 1) as f64,
                    size_bytes: 100,
                    params: 10,
                });
            }
            if i < 2 {
                for ratio in [0.1, 0.5, 0.9] {
                    rows.push(SensitivityRow {
                        layer: layer.to_string(),
                        knob: "prune".into(),
                        value: ratio,
                        accuracy: 0.9,
                        accuracy_drop: ratio * ratio - 0.02,
                        size_bytes: 100,
                        params: 10,
                    });
                }
            }
        }
        rows
    }

    #[test]
    fn figure_has_a_panel_per_knob_and_a_line_per_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sensitivity.svg");
        plot_sensitivity(&path, "mlp", &rows(), Some(0.01)).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let texts: Vec<&str> = svg
            .split("</text>")
            .filter_map(|t| t.rsplit_once('>').map(|(_, text)| text.trim()))
            .collect();
        let count = |text: &str| texts.iter().filter(|t| **t == text).count();
        assert_eq!(count("prune, one layer at a time"), 1);
        assert_eq!(count("bits, one layer at a time"), 1);
        assert_eq!(count("sparsity, one layer at a time"), 0);
        // A legend entry per layer and panel: fc3 (the output layer) is not pruned.
        assert_eq!((count("fc1"), count("fc2"), count("fc3")), (2, 2, 1));
        assert_eq!(count("max drop (1.00 points)"), 2);
        // Bit widths are labelled as integers.
        assert_eq!((count("4"), count("4.0")), (1, 0));
    }

    #[test]
    fn text_is_a_matrix_of_drops_in_points() {
        let text = sensitivity_text(&rows());
        let lines: Vec<&str> = text.lines().collect();
        // prune first, with an empty cell nowhere (fc3 was not pruned: no line at all).
        assert!(lines[0].starts_with("prune") && lines[0].contains("0.5"));
        assert!(lines[1].starts_with("fc1") && lines[1].contains("-1.00"));
        assert!(!lines[1..3].iter().any(|l| l.starts_with("fc3")));
        let bits = lines.iter().position(|l| l.starts_with("bits")).unwrap();
        assert!(lines[bits].ends_with("      8"), "{}", lines[bits]);
        // fc3 at 2 bits: 0.5 / 4 * 3 = 0.375 = 37.50 points.
        assert!(lines[bits + 3].starts_with("fc3") && lines[bits + 3].contains("37.50"));
    }
}
