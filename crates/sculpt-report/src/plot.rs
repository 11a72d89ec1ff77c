//! The accuracy-latency figure: every completed trial, the Pareto front highlighted, the
//! teacher marked and the latency budget drawn as a vertical line.

use std::path::Path;

use plotters::prelude::*;
use sculpt_store::{TeacherRecord, TrialRecord};

use crate::error::{ReportError, Result};
use crate::select::pareto_indices;

/// How far below the teacher's accuracy the figure reaches; trials below are counted in
/// the caption rather than squashing the interesting region.
const ACCURACY_WINDOW: f64 = 0.15;

pub fn plot_pareto(
    path: &Path,
    title: &str,
    trials: &[TrialRecord],
    teacher: &TeacherRecord,
    budget_ms: Option<f64>,
) -> Result<()> {
    crate::figures::ensure_font();
    let err = |e: &dyn std::fmt::Display| ReportError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let complete: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| t.is_complete() && t.accuracy.is_some() && t.latency_ms.is_some())
        .collect();
    let front: Vec<&TrialRecord> = pareto_indices(trials)
        .into_iter()
        .map(|i| &trials[i])
        .collect();

    let lowest = complete
        .iter()
        .map(|t| t.accuracy.unwrap())
        .fold(teacher.accuracy, f64::min);
    let y_low = ((teacher.accuracy - ACCURACY_WINDOW)
        .max(lowest - 0.01)
        .max(0.0)
        * 100.0)
        .floor();
    let hidden = complete
        .iter()
        .filter(|t| t.accuracy.unwrap() * 100.0 < y_low)
        .count();
    let y_high = complete
        .iter()
        .map(|t| t.accuracy.unwrap())
        .fold(teacher.accuracy, f64::max)
        .min(1.0)
        * 100.0
        + 0.5;
    let x_high = complete
        .iter()
        .map(|t| t.latency_ms.unwrap())
        .chain([teacher.latency_ms, budget_ms.unwrap_or(0.0)])
        .fold(0.0, f64::max)
        * 1.08;

    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let caption = if hidden > 0 {
        format!("{title} ({hidden} trials below {y_low:.0}% not shown)")
    } else {
        title.to_string()
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_high, y_low..y_high)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, latency model)")
        .y_desc("validation accuracy (%)")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;

    let grey = RGBColor(140, 150, 170);
    chart
        .draw_series(
            complete
                .iter()
                .filter(|t| t.accuracy.unwrap() * 100.0 >= y_low)
                .map(|t| {
                    Circle::new(
                        (t.latency_ms.unwrap(), t.accuracy.unwrap() * 100.0),
                        3,
                        grey.filled(),
                    )
                }),
        )
        .map_err(|e| err(&e))?
        .label(format!("trial ({})", complete.len()))
        .legend(move |(x, y)| Circle::new((x, y), 3, grey.filled()));

    let front_points: Vec<(f64, f64)> = front
        .iter()
        .map(|t| (t.latency_ms.unwrap(), t.accuracy.unwrap() * 100.0))
        .filter(|(_, a)| *a >= y_low)
        .collect();
    chart
        .draw_series(LineSeries::new(front_points.clone(), RED.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label(format!("Pareto front ({})", front.len()))
        .legend(|(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], RED.stroke_width(2)));
    chart
        .draw_series(
            front_points
                .iter()
                .map(|&p| Circle::new(p, 5, RED.filled())),
        )
        .map_err(|e| err(&e))?;

    let teacher_point = (teacher.latency_ms, teacher.accuracy * 100.0);
    chart
        .draw_series(std::iter::once(TriangleMarker::new(
            teacher_point,
            9,
            BLACK.filled(),
        )))
        .map_err(|e| err(&e))?
        .label(format!(
            "teacher ({:.2}%, {:.4} ms)",
            teacher.accuracy * 100.0,
            teacher.latency_ms
        ))
        .legend(|(x, y)| TriangleMarker::new((x, y), 6, BLACK.filled()));

    if let Some(budget) = budget_ms {
        let blue = RGBColor(30, 100, 200);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(budget, y_low), (budget, y_high)],
                8,
                5,
                blue.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(format!("latency budget ({budget} ms)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x - 10, y), (x + 10, y)], blue.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Predicted against measured latency, one series per latency model, on log axes with the
/// diagonal and the ±10% band.
pub fn plot_validation(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    crate::figures::ensure_font();
    let err = |e: &dyn std::fmt::Display| ReportError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let all = series
        .iter()
        .flat_map(|(_, p)| p.iter().flat_map(|&(m, q)| [m, q]));
    let (lo, hi) = all
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !(lo.is_finite() && hi > 0.0) {
        return Err(ReportError::Plot {
            path: path.to_path_buf(),
            message: "no positive latencies to plot".into(),
        });
    }
    let (lo, hi) = (lo / 1.3, hi * 1.3);
    let root = SVGBackend::new(path, (800, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((lo..hi).log_scale(), (lo..hi).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("measured (ms, median)")
        .y_desc("predicted (ms)")
        .draw()
        .map_err(|e| err(&e))?;
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(
            vec![(lo, lo), (hi, hi)],
            grey.stroke_width(1),
        ))
        .map_err(|e| err(&e))?
        .label("predicted = measured")
        .legend(move |(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], grey));
    for f in [0.9, 1.1] {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(lo, lo * f), (hi, hi * f)],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
    }
    let colours = [
        RGBColor(200, 40, 40),
        RGBColor(30, 100, 200),
        RGBColor(40, 150, 60),
    ];
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// One row of a hypervolume curve: evaluations, median, lower and upper quartile.
pub type CurveRow = (f64, f64, f64, f64);

/// Curves of the hypervolume fraction against evaluations, one per strategy: the median
/// over seeds as a line, the quartiles as a band of thin lines.
pub fn plot_hypervolume_curves(
    path: &Path,
    title: &str,
    series: &[(String, Vec<CurveRow>)],
) -> Result<()> {
    crate::figures::ensure_font();
    let err = |e: &dyn std::fmt::Display| ReportError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let x_max = series
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|r| r.0))
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (880, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..1.02)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("evaluations")
        .y_desc("hypervolume / true front's")
        .draw()
        .map_err(|e| err(&e))?;
    let colours = [
        RGBColor(200, 40, 40),
        RGBColor(30, 100, 200),
        RGBColor(40, 150, 60),
        RGBColor(120, 120, 120),
        RGBColor(150, 60, 170),
    ];
    for (i, (name, rows)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        for band in [2usize, 3] {
            chart
                .draw_series(LineSeries::new(
                    rows.iter()
                        .map(|r| (r.0, if band == 2 { r.2 } else { r.3 })),
                    colour.mix(0.35).stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
        }
        chart
            .draw_series(LineSeries::new(
                rows.iter().map(|r| (r.0, r.1)),
                colour.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x - 10, y), (x + 10, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
