//! The report's figures, each drawn once on any plotters backend and written as SVG (for
//! the HTML, inline) and PNG (for slides and documents): the fronts of accuracy against
//! latency and against size, hypervolume against trials, heatmaps of the Pareto
//! configurations, and sensitivity curves.
//!
//! Every figure must survive printing in grey: campaigns differ by marker shape and line
//! dash as well as by colour, the heatmaps use one hue from light to dark with each cell's
//! value written in it, and dominated trials are light grey dots.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use sculpt_store::{TeacherRecord, TrialRecord};

use crate::error::{ReportError, Result};

/// DejaVu Sans, cut down to Latin-1 and the symbols the report uses (53 kB; its licence
/// is in `assets/DejaVu-LICENSE.txt`). Text is measured with it for both backends and
/// rendered with it in the PNGs, so figures look the same on a machine without fonts.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");

/// Registers the embedded font under the family name plotters asks for.
pub fn ensure_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            let _ = plotters::style::register_font("sans-serif", style, FONT);
        }
    });
}

/// A written figure: its SVG text (for inlining) and the two files.
#[derive(Debug, Clone)]
pub struct Figure {
    pub title: String,
    pub svg: String,
    pub svg_path: PathBuf,
    pub png_path: PathBuf,
}

type Draw<'a> = dyn Fn(&DrawingArea<SVGBackend, Shift>) -> std::result::Result<(), String> + 'a;
type DrawPng<'a> =
    dyn Fn(&DrawingArea<BitMapBackend, Shift>) -> std::result::Result<(), String> + 'a;

/// Draws a figure with `svg` and `png` (the same drawing code, instantiated for each
/// backend: see [`figure!`]) into `dir/stem.svg` and `dir/stem.png`.
pub fn render(
    dir: &Path,
    stem: &str,
    title: &str,
    size: (u32, u32),
    svg: &Draw,
    png: &DrawPng,
) -> Result<Figure> {
    ensure_font();
    let svg_path = dir.join(format!("{stem}.svg"));
    let png_path = dir.join(format!("{stem}.png"));
    let plot_err = |path: &Path, message: String| ReportError::Plot {
        path: path.to_path_buf(),
        message,
    };
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        svg(&root).map_err(|m| plot_err(&svg_path, m))?;
        root.present()
            .map_err(|e| plot_err(&svg_path, e.to_string()))?;
    }
    write(&svg_path, text.as_bytes())?;
    let (w, h) = size;
    let mut pixels = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        png(&root).map_err(|m| plot_err(&png_path, m))?;
        root.present()
            .map_err(|e| plot_err(&png_path, e.to_string()))?;
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Best);
        let mut writer = encoder
            .write_header()
            .map_err(|e| plot_err(&png_path, e.to_string()))?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| plot_err(&png_path, e.to_string()))?;
    }
    write(&png_path, &bytes)?;
    Ok(Figure {
        title: title.to_string(),
        svg: text,
        svg_path,
        png_path,
    })
}

/// `figure!(dir, stem, title, size, |root| draw(root, …))`: renders one drawing function
/// on both backends.
#[macro_export]
macro_rules! figure {
    ($dir:expr, $stem:expr, $title:expr, $size:expr, |$root:ident| $body:expr) => {
        $crate::figures::render($dir, $stem, $title, $size, &|$root| $body, &|$root| $body)
    };
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| ReportError::Io {
        path: path.to_path_buf(),
        cause: e,
    })
}

/// Which cost a front is drawn against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    Latency,
    Size,
}

impl Cost {
    pub fn of(&self, t: &TrialRecord) -> Option<f64> {
        match self {
            Cost::Latency => t.latency_ms,
            Cost::Size => t.size_bytes.map(|b| b as f64),
        }
        .filter(|v| v.is_finite() && *v > 0.0)
    }

    pub fn of_teacher(&self, t: &TeacherRecord) -> f64 {
        match self {
            Cost::Latency => t.latency_ms,
            Cost::Size => t.size_bytes as f64,
        }
    }
}

/// One campaign on a figure.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub name: &'a str,
    pub trials: &'a [TrialRecord],
    pub teacher: &'a TeacherRecord,
    pub budget_ms: Option<f64>,
}

/// Print-safe styles: colours of distinct lightness, and a marker and dash per campaign.
pub const COLOURS: [RGBColor; 4] = [
    RGBColor(0, 84, 166),
    RGBColor(204, 51, 17),
    RGBColor(0, 128, 64),
    RGBColor(120, 60, 150),
];

/// Bytes in decimal units, to three significant digits: `1.07 MB`, `25.5 kB`, `900 B`.
pub fn format_bytes(bytes: f64) -> String {
    let (value, unit) = if bytes >= 1e9 {
        (bytes / 1e9, "GB")
    } else if bytes >= 1e6 {
        (bytes / 1e6, "MB")
    } else if bytes >= 1e3 {
        (bytes / 1e3, "kB")
    } else {
        return format!("{bytes:.0} B");
    };
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{} {unit}", trim_number(&format!("{value:.digits$}")))
}

/// Tick values of a log axis of bytes between `lo` and `hi`: 1, 2 and 5 times powers of
/// ten, thinned to 1 and 10 when the axis spans more than four decades.
fn byte_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let steps: &[f64] = if hi / lo > 1e4 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for s in steps {
            let v = decade * s;
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// `0.0060` → `0.006`, `0.0000` → `0`, `12.5000` → `12.5`.
fn trim_number(text: &str) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text.to_string()
    }
}

/// The complete trials of `trials` as (cost, accuracy %) with their indices, and the
/// indices of the Pareto front in cost order.
fn points(trials: &[TrialRecord], cost: Cost) -> (Vec<(usize, f64, f64)>, Vec<usize>) {
    let all: Vec<(usize, f64, f64)> = trials
        .iter()
        .enumerate()
        .filter(|(_, t)| t.is_complete())
        .filter_map(|(i, t)| {
            Some((
                i,
                cost.of(t)?,
                t.accuracy.filter(|a| a.is_finite())? * 100.0,
            ))
        })
        .collect();
    let front = crate::select::pareto_by(trials, |t| cost.of(t));
    (all, front)
}

/// Accuracy against latency or size for every campaign in `series`: dominated trials as
/// light grey dots, each campaign's front as a line with markers, the teacher as a black
/// triangle, the latency budget as a dashed line, and each front's knee labelled.
pub fn draw_front<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[Series],
    cost: Cost,
) -> std::result::Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let data: Vec<_> = series.iter().map(|s| points(s.trials, cost)).collect();
    let xs = data
        .iter()
        .flat_map(|(all, _)| all.iter().map(|p| p.1))
        .chain(series.iter().map(|s| cost.of_teacher(s.teacher)))
        .chain(
            series
                .iter()
                .filter_map(|s| (cost == Cost::Latency).then_some(s.budget_ms).flatten()),
        )
        .filter(|v| *v > 0.0);
    let (x_min, x_max) = xs.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !x_min.is_finite() {
        return Err("no complete trial to draw".into());
    }
    // Sizes spanning more than a decade are drawn on a log axis (log10 on a linear one,
    // labelled in bytes).
    let log = cost == Cost::Size && x_max / x_min > 10.0;
    let tx = |v: f64| if log { v.log10() } else { v };
    let (x_lo, x_hi) = if log {
        (x_min.log10() - 0.1, x_max.log10() + 0.1)
    } else {
        (0.0, x_max * 1.08)
    };
    let teacher_best = series
        .iter()
        .map(|s| s.teacher.accuracy * 100.0)
        .fold(0f64, f64::max);
    let accs = data.iter().flat_map(|(all, _)| all.iter().map(|p| p.2));
    let (a_min, a_max) = accs
        .chain([teacher_best])
        .fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // At most 15 points below the teacher: trials below are counted in the caption.
    let y_lo = (teacher_best - 15.0).max(a_min - 1.0).max(0.0).floor();
    let y_hi = (a_max + 0.5).min(100.5);
    let hidden: usize = data
        .iter()
        .map(|(all, _)| all.iter().filter(|p| p.2 < y_lo).count())
        .sum();
    let caption = if hidden > 0 {
        format!("{title} ({hidden} trials below {y_lo:.0}% not shown)")
    } else {
        title.to_string()
    };
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(70)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
        .map_err(|x| e(&x))?;
    let x_desc = match cost {
        Cost::Latency => series
            .first()
            .and_then(|s| s.teacher.latency_model.as_deref())
            .map(|m| {
                // "roofline (epyc-zen4-1core, batch 1; an analytic estimate)" → the part
                // before the `;`, its bracket closed.
                let head = m.split(';').next().unwrap_or(m).trim();
                let closed = if head.matches('(').count() > head.matches(')').count() {
                    format!("{head})")
                } else {
                    head.to_string()
                };
                format!("latency (ms), {closed}")
            })
            .unwrap_or_else(|| "latency (ms)".into()),
        Cost::Size if log => "model size (bytes, log scale)".into(),
        Cost::Size => "model size (bytes)".into(),
    };
    let x_fmt = move |v: &f64| match cost {
        Cost::Latency => trim_number(&format!("{v:.4}")),
        Cost::Size => format_bytes(if log { 10f64.powf(*v) } else { *v }),
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("validation accuracy (%)")
        .x_label_formatter(&x_fmt)
        // A log axis gets its own ticks at round byte counts, drawn below.
        .x_labels(if log { 0 } else { 10 })
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(RGBColor(230, 230, 230))
        .draw()
        .map_err(|x| e(&x))?;
    if log {
        let rule = RGBColor(230, 230, 230);
        for v in byte_ticks(10f64.powf(x_lo), 10f64.powf(x_hi)) {
            let x = v.log10();
            chart
                .draw_series(LineSeries::new(vec![(x, y_lo), (x, y_hi)], rule))
                .map_err(|x| e(&x))?;
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((x, y_lo))
                        + PathElement::new(vec![(0, 0), (0, 5)], BLACK)
                        + Text::new(
                            format_bytes(v),
                            (0, 9),
                            ("sans-serif", 14).into_font().color(&BLACK).pos(
                                plotters::style::text_anchor::Pos::new(
                                    plotters::style::text_anchor::HPos::Center,
                                    plotters::style::text_anchor::VPos::Top,
                                ),
                            ),
                        ),
                ))
                .map_err(|x| e(&x))?;
        }
    }
    let grey = RGBColor(185, 185, 185);
    for (all, front) in &data {
        chart
            .draw_series(
                all.iter()
                    .filter(|p| p.2 >= y_lo && !front.contains(&p.0))
                    .map(|p| Circle::new((tx(p.1), p.2), 2, grey.filled())),
            )
            .map_err(|x| e(&x))?;
    }
    if data.len() == 1 {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(|x| e(&x))?
            .label(format!(
                "{} dominated trials",
                data[0].0.len() - data[0].1.len()
            ))
            .legend(move |(x, y)| Circle::new((x, y), 3, grey.filled()));
    }
    for (k, (s, (all, front))) in series.iter().zip(&data).enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let line: Vec<(f64, f64)> = front
            .iter()
            .filter_map(|i| all.iter().find(|p| p.0 == *i))
            .map(|p| (tx(p.1), p.2))
            .filter(|p| p.1 >= y_lo)
            .collect();
        let label = if series.len() == 1 {
            format!("Pareto front: {} trials", front.len())
        } else {
            format!("{} front: {} trials", s.name, front.len())
        };
        let style = colour.stroke_width(2);
        let anno = match k % 3 {
            0 => chart.draw_series(LineSeries::new(line.clone(), style)),
            1 => chart.draw_series(DashedLineSeries::new(line.clone(), 10, 5, style)),
            _ => chart.draw_series(DashedLineSeries::new(line.clone(), 3, 4, style)),
        }
        .map_err(|x| e(&x))?;
        anno.label(label).legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(-12, 0), (12, 0)], colour.stroke_width(2))
                + marker::<DB>(k, colour, (0, 0))
        });
        chart
            .draw_series(
                line.iter()
                    .map(|&p| EmptyElement::at(p) + marker::<DB>(k, colour, (0, 0))),
            )
            .map_err(|x| e(&x))?;
        // The knee: where the front bends most, the usual compromise.
        if let Some(knee) = crate::select::knee(&line) {
            let p = line[knee];
            let id = s.trials[front[knee]].trial_id;
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at(p)
                        + Circle::new((0, 0), 9, colour.stroke_width(2))
                        + Text::new(
                            format!("knee: trial {id}"),
                            (10, 10 + 16 * k as i32),
                            ("sans-serif", 14).into_font().color(&BLACK),
                        ),
                ))
                .map_err(|x| e(&x))?;
        }
    }
    let mut teachers: Vec<(f64, f64)> = Vec::new();
    for s in series {
        let p = (tx(cost.of_teacher(s.teacher)), s.teacher.accuracy * 100.0);
        if !teachers.contains(&p) {
            teachers.push(p);
        }
    }
    let t0 = series[0].teacher;
    chart
        .draw_series(
            teachers
                .iter()
                .map(|&p| TriangleMarker::new(p, 8, BLACK.filled())),
        )
        .map_err(|x| e(&x))?
        .label(match cost {
            Cost::Latency => format!(
                "teacher ({:.2}%, {:.4} ms)",
                t0.accuracy * 100.0,
                t0.latency_ms
            ),
            Cost::Size => format!(
                "teacher ({:.2}%, {})",
                t0.accuracy * 100.0,
                format_bytes(t0.size_bytes as f64)
            ),
        })
        .legend(|(x, y)| TriangleMarker::new((x, y), 6, BLACK.filled()));
    if cost == Cost::Latency {
        if let Some(budget) = series.iter().find_map(|s| s.budget_ms) {
            let ink = RGBColor(40, 40, 40);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(budget, y_lo), (budget, y_hi)],
                    8,
                    5,
                    ink.stroke_width(2),
                ))
                .map_err(|x| e(&x))?
                .label(format!("latency budget ({budget} ms)"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x - 12, y), (x + 12, y)], ink.stroke_width(2))
                });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.92))
        .border_style(RGBColor(120, 120, 120))
        .draw()
        .map_err(|x| e(&x))?;
    Ok(())
}

/// The marker of campaign `k`: circle, triangle, square, cross, so campaigns stay
/// apart in grey.
fn marker<DB: DrawingBackend>(
    k: usize,
    colour: RGBColor,
    at: (i32, i32),
) -> DynElement<'static, DB, (i32, i32)> {
    match k % 4 {
        0 => Circle::new(at, 4, colour.filled()).into_dyn(),
        1 => TriangleMarker::new(at, 6, colour.filled()).into_dyn(),
        2 => Rectangle::new(
            [(at.0 - 4, at.1 - 4), (at.0 + 4, at.1 + 4)],
            colour.filled(),
        )
        .into_dyn(),
        _ => Cross::new(at, 5, colour.stroke_width(2)).into_dyn(),
    }
}

/// Hypervolume after each trial, one line per campaign: (name, [(trials so far, hv)]).
pub fn draw_hypervolume<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    curves: &[(String, Vec<(f64, f64)>)],
) -> std::result::Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let x_max = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(1f64, f64::max);
    let (y_min, y_max) = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let y_min = if y_min.is_finite() { y_min } else { 0.0 };
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max * 1.02, (y_min - pad).max(0.0)..(y_max + pad))
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("trials evaluated")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.3}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(RGBColor(230, 230, 230))
        .draw()
        .map_err(|x| e(&x))?;
    for (k, (name, points)) in curves.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let style = colour.stroke_width(2);
        let steps: Vec<(f64, f64)> = points
            .windows(2)
            .flat_map(|w| [w[0], (w[1].0, w[0].1)])
            .chain(points.last().copied())
            .collect();
        let anno = match k % 3 {
            0 => chart.draw_series(LineSeries::new(steps, style)),
            1 => chart.draw_series(DashedLineSeries::new(steps, 10, 5, style)),
            _ => chart.draw_series(DashedLineSeries::new(steps, 3, 4, style)),
        }
        .map_err(|x| e(&x))?;
        let last = points.last().map_or(0.0, |p| p.1);
        anno.label(format!("{name} (final {last:.4})"))
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(-12, 0), (12, 0)], colour.stroke_width(2))
                    + marker::<DB>(k, colour, (0, 0))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.92))
        .border_style(RGBColor(120, 120, 120))
        .draw()
        .map_err(|x| e(&x))?;
    Ok(())
}

/// A heatmap of one knob over the Pareto configurations: a row per trial, a column per
/// layer, each cell shaded from light (`low`) to dark (`high`) in one hue and labelled
/// with its value, so it reads in grey. `None` cells (the knob does not apply) are blank.
#[allow(clippy::too_many_arguments)]
pub fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    rows: &[String],
    columns: &[String],
    values: &[Vec<Option<f64>>],
    range: (f64, f64),
    format: &dyn Fn(f64) -> String,
    column_desc: &str,
) -> std::result::Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (nr, nc) = (rows.len().max(1), columns.len().max(1));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..nc as f64, 0.0..nr as f64)
        .map_err(|x| e(&x))?;
    let cols = columns.to_vec();
    let rws = rows.to_vec();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(nc * 2 + 1)
        .y_labels(nr * 2 + 1)
        .x_label_formatter(&|v| {
            let i = v.floor() as usize;
            if (v - i as f64 - 0.5).abs() < 0.01 {
                cols.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| {
            let i = v.floor() as usize;
            if (v - i as f64 - 0.5).abs() < 0.01 {
                // Row 0 at the top.
                rws.get(nr - 1 - i.min(nr - 1)).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc(column_desc)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(|x| e(&x))?;
    let (lo, hi) = range;
    let shade = |v: f64| {
        let t = if hi > lo {
            ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.5
        };
        // From pale blue-grey to deep blue: lightness carries the value.
        let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
        (
            RGBColor(mix(235.0, 8.0), mix(241.0, 48.0), mix(248.0, 107.0)),
            t,
        )
    };
    for (r, row) in values.iter().enumerate() {
        let y = (nr - 1 - r) as f64;
        for (c, v) in row.iter().enumerate() {
            let x = c as f64;
            let Some(v) = v else {
                // The knob does not apply to this layer (the output layer is never pruned).
                chart
                    .draw_series(std::iter::once(Text::new(
                        "–",
                        (x + 0.5, y + 0.5),
                        ("sans-serif", 14)
                            .into_font()
                            .color(&RGBColor(150, 150, 150))
                            .pos(plotters::style::text_anchor::Pos::new(
                                plotters::style::text_anchor::HPos::Center,
                                plotters::style::text_anchor::VPos::Center,
                            )),
                    )))
                    .map_err(|x| e(&x))?;
                continue;
            };
            let (fill, t) = shade(*v);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.02, y + 0.04), (x + 0.98, y + 0.96)],
                    fill.filled(),
                )))
                .map_err(|x| e(&x))?;
            let ink = if t > 0.5 { WHITE } else { BLACK };
            chart
                .draw_series(std::iter::once(Text::new(
                    format(*v),
                    (x + 0.5, y + 0.5),
                    ("sans-serif", 14).into_font().color(&ink).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Center,
                        ),
                    ),
                )))
                .map_err(|x| e(&x))?;
        }
    }
    Ok(())
}
