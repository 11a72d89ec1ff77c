//! Validation of the latency predictors: draw random plans, build each (without
//! fine-tuning), measure it with the runtime and predict it with the lookup table and the
//! roofline, then report each predictor's mean absolute percentage error and its share of
//! plans within ±10% of the measured median.

use std::path::Path;

use rand::SeedableRng;
use sculpt_latency::{LatencyModel, Lut, MeasureSettings, Roofline};
use serde::Serialize;

use crate::error::Result;

/// What `sculpt latency validate` runs.
pub struct ValidateRun<'a> {
    pub model: &'a Path,
    pub lut: Option<&'a Path>,
    pub profile: &'a str,
    pub plans: usize,
    pub seed: u64,
    /// Each plan is timed in this many blocks of `settings.runs` runs, one block per pass
    /// over all the plans, so that its blocks fall in different phases of the host.
    pub passes: usize,
    pub settings: MeasureSettings,
    /// Where the predicted-against-measured figure goes.
    pub figure: Option<&'a Path>,
    /// Calibrate the table anew on the model's calibration plans, timed in the same passes
    /// as the validation's own plans (interleaved with them), and validate that table; it
    /// is written to `calibrated_out` when given.
    pub calibrate: bool,
    pub calibrated_out: Option<&'a Path>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidationRow {
    pub plan: usize,
    /// The plan, one `layer: prune p, bits b` per layer.
    pub description: String,
    /// The median of the plan's blocks' medians (one block per pass).
    pub measured_ms: f64,
    /// The host's reference time around this plan's blocks (see
    /// `sculpt_latency::reference_ms`): the median of one per block, each the mean of the
    /// reference timed before and after it.
    pub reference_ms: f64,
    /// The same for the Linear reference (LeNet-300-100).
    pub linear_reference_ms: f64,
    pub lut_ms: Option<f64>,
    /// The table's prediction at the host's speed shown by the references around the
    /// plan's blocks (`Lut::predict_at`).
    pub lut_now_ms: Option<f64>,
    pub roofline_ms: f64,
}

/// How well one predictor did.
#[derive(Debug, Clone, Serialize)]
pub struct PredictorScore {
    pub model: String,
    pub mape: f64,
    pub within_10pct: f64,
    pub plans: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub model: String,
    pub batch: usize,
    pub threads: usize,
    /// Timed runs per block, blocks (passes) per plan, and the seed of the plans.
    pub runs: usize,
    pub passes: usize,
    pub seed: u64,
    /// Whether the table was calibrated anew on the model's calibration plans, timed
    /// alongside the validation's (`--calibrate`).
    pub calibrated: bool,
    pub lut: Option<PredictorScore>,
    /// The lookup table with each prediction scaled by the host's speed at the moment of
    /// the plan's measurement (its reference time against the table's): what the table
    /// scores once the host's drift is taken out. Absent for tables without a reference.
    pub lut_drift_adjusted: Option<PredictorScore>,
    /// How the host's speed moved during the validation, against the table's reference.
    pub host_drift: Option<HostDrift>,
    pub roofline: PredictorScore,
    /// The top-level figures: the lookup table's against measurements taken at the
    /// host's speed when the table was profiled, that is `lut_drift_adjusted` (the table
    /// predicts the host at the typical speed its probes were normalised to, and a
    /// measurement is brought to that speed by the same reference networks); `lut` for a
    /// table without references, and the roofline's when there is no table. `headline`
    /// names which.
    pub headline: String,
    pub mape: f64,
    pub within_10pct: f64,
    pub rows: Vec<ValidationRow>,
}

/// The host's reference time during the validation against the table's.
#[derive(Debug, Clone, Serialize)]
pub struct HostDrift {
    pub table_reference_ms: f64,
    /// Median, smallest and largest of (reference now / the table's reference).
    pub median_ratio: f64,
    pub min_ratio: f64,
    pub max_ratio: f64,
    /// The Linear reference's table time and its median ratio (absent for tables without
    /// one).
    pub table_linear_reference_ms: Option<f64>,
    pub linear_median_ratio: Option<f64>,
}

fn score(model: String, pairs: &[(f64, f64)]) -> PredictorScore {
    let errors: Vec<f64> = pairs.iter().map(|(m, p)| (p - m).abs() / m).collect();
    let n = errors.len().max(1) as f64;
    PredictorScore {
        model,
        mape: errors.iter().sum::<f64>() / n * 100.0,
        within_10pct: errors.iter().filter(|e| **e <= 0.10).count() as f64 / n,
        plans: errors.len(),
    }
}

/// Runs the validation; `progress(done, total)` reports each plan.
pub fn validate(run: &ValidateRun, progress: &mut dyn FnMut(usize, usize)) -> Result<Validation> {
    let invalid = |m: String| Err(crate::error::CampaignError::Invalid(m));
    for (flag, v) in [
        ("--plans", run.plans),
        ("--passes", run.passes),
        ("--runs", run.settings.runs),
        ("--threads", run.settings.threads),
        ("--batch", run.settings.batch),
    ] {
        if v == 0 {
            return invalid(format!("{flag} must be at least 1"));
        }
    }
    // Each block is at least a millisecond of reference timing: a million is weeks.
    const MAX_BLOCKS: usize = 1_000_000;
    if run.plans.saturating_mul(run.passes) > MAX_BLOCKS {
        return invalid(format!(
            "--plans {} × --passes {} is more than {MAX_BLOCKS} measured blocks",
            run.plans, run.passes
        ));
    }
    let teacher = sculpt_nn::io::load(run.model)?;
    let mut lut = run.lut.map(Lut::load).transpose()?;
    if run.calibrate && lut.is_none() {
        return invalid("--calibrate calibrates a table: pass it with --lut".into());
    }
    if let Some(l) = &lut {
        if l.batch != run.settings.batch || l.threads != run.settings.threads {
            return Err(crate::error::CampaignError::Invalid(format!(
                "the table was profiled at batch {} on {} thread(s), the validation runs batch {} on {}; \
                 pass --batch {} --threads {} or profile again",
                l.batch, l.threads, run.settings.batch, run.settings.threads, l.batch, l.threads
            )));
        }
    }
    let roofline = Roofline {
        profile: sculpt_latency::DeviceProfile::load(run.profile)?,
        batch: run.settings.batch,
    };
    // Never the calibration's seed: the table is validated on plans it was not fitted on.
    let mut rng = rand::rngs::StdRng::seed_from_u64(run.seed.wrapping_add(0x5EED_0000));
    let mut rows = Vec::with_capacity(run.plans);
    let mut graphs = Vec::with_capacity(run.plans);
    for i in 0..run.plans {
        let plan = sculpt_latency::lut::random_plan(&teacher, &mut rng);
        let graph = sculpt_compress::compress(&teacher, &plan, None)?;
        // The bits as built: a model that is already quantized keeps its codes where the
        // plan leaves a layer in f32.
        let description = plan
            .layers
            .iter()
            .map(|(l, p)| {
                format!(
                    "{l}: prune {:.2}, {} bits",
                    p.prune,
                    graph.weight_bits(&format!("{l}.weight"))
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        rows.push(ValidationRow {
            plan: i,
            description,
            measured_ms: f64::NAN,
            reference_ms: f64::NAN,
            linear_reference_ms: f64::NAN,
            lut_now_ms: None,
            lut_ms: None,
            roofline_ms: roofline.predict_ms(&graph)?,
        });
        graphs.push(graph);
    }
    // Shared hosts change speed for seconds to minutes at a time. A plan timed in one
    // block lands wholly in one phase; its blocks, one per pass over all the plans, land in
    // several, and the median of their medians is the plan's time at the host's usual speed.
    // With --calibrate, the calibration's plans are timed in the same passes, spread evenly
    // among the validation's, so that both see the same phases of the host.
    let calibrated_on = format!(
        "{} ({}, alongside the validation)",
        teacher.spec.name,
        run.model.display()
    );
    let mut calibration = match (&lut, run.calibrate) {
        (Some(l), true) => Some(sculpt_latency::lut::Calibration::new(
            l,
            &[(calibrated_on.clone(), teacher.clone())],
        )?),
        _ => None,
    };
    let extra = calibration.as_ref().map_or(0, |c| c.len());
    let per_pass = run.plans + extra;
    let (batch, threads) = (run.settings.batch, run.settings.threads);
    let mut blocks = vec![Vec::with_capacity(run.passes); run.plans];
    let mut references = vec![Vec::with_capacity(run.passes); run.plans];
    let mut linear_references = vec![Vec::with_capacity(run.passes); run.plans];
    for pass in 0..run.passes {
        // Slot `k` of the pass is validation plan `k - j` or calibration plan `j`, the
        // calibration plans at every `per_pass / extra`-th slot.
        let mut j = 0;
        for k in 0..per_pass {
            let before = sculpt_latency::host_speed(batch, threads)?;
            let i = k - j;
            let calibrating = j < extra && (i >= run.plans || k * extra >= j * per_pass);
            if calibrating {
                let c = calibration
                    .as_mut()
                    .expect("extra > 0 only with a calibration");
                let block = c.time_block(j)?;
                let now = before.mean(&sculpt_latency::host_speed(batch, threads)?);
                let table = lut.as_ref().expect("a calibration has a table");
                c.add_block(table, j, block, &now);
                j += 1;
            } else {
                blocks[i].push(sculpt_latency::measure(&graphs[i], &run.settings)?.median_ms);
                let now = before.mean(&sculpt_latency::host_speed(batch, threads)?);
                references[i].push(now.conv_ms);
                linear_references[i].push(now.linear_ms);
            }
            progress(pass * per_pass + k + 1, run.passes * per_pass);
        }
    }
    if let (Some(c), Some(l)) = (&calibration, lut.as_mut()) {
        c.fit(l, &calibrated_on);
        l.path = None;
        if let Some(out) = run.calibrated_out {
            l.save(out)?;
        }
    }
    for (row, graph) in rows.iter_mut().zip(&graphs) {
        row.lut_ms = lut.as_ref().map(|l| l.predict_ms(graph)).transpose()?;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        }
    };
    for (i, row) in rows.iter_mut().enumerate() {
        row.measured_ms = median(&mut blocks[i]);
        row.reference_ms = median(&mut references[i]);
        row.linear_reference_ms = median(&mut linear_references[i]);
        if let Some(l) = lut.as_ref().filter(|l| l.reference_ms > 0.0) {
            let now = sculpt_latency::HostSpeed {
                conv_ms: row.reference_ms,
                linear_ms: row.linear_reference_ms,
            };
            row.lut_now_ms = Some(l.predict_at(&graphs[i], &now)?);
        }
    }
    let pairs = |f: &dyn Fn(&ValidationRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| f(r).map(|p| (r.measured_ms, p)))
            .collect()
    };
    let roof = score(roofline.describe(), &pairs(&|r| Some(r.roofline_ms)));
    let lut_score = lut
        .as_ref()
        .map(|l| score(l.describe(), &pairs(&|r| r.lut_ms)));
    let table_reference = lut.as_ref().map(|l| l.reference_ms).filter(|r| *r > 0.0);
    let lut_drift_adjusted = match (&lut, table_reference) {
        (Some(l), Some(_)) => Some(score(
            format!("{} (adjusted for the host's drift)", l.describe()),
            &pairs(&|r| r.lut_now_ms),
        )),
        _ => None,
    };
    let linear_reference = lut
        .as_ref()
        .map(|l| l.linear_reference_ms)
        .filter(|r| *r > 0.0);
    // Each plan's reference against the table's, sorted.
    let sorted_ratios = |now: fn(&ValidationRow) -> f64, table: f64| -> Vec<f64> {
        let mut ratios: Vec<f64> = rows.iter().map(|r| now(r) / table).collect();
        ratios.sort_by(f64::total_cmp);
        ratios
    };
    let host_drift = table_reference.map(|r0| {
        let ratios = sorted_ratios(|r| r.reference_ms, r0);
        HostDrift {
            table_reference_ms: r0,
            median_ratio: ratios[ratios.len() / 2],
            min_ratio: ratios[0],
            max_ratio: ratios[ratios.len() - 1],
            table_linear_reference_ms: linear_reference,
            linear_median_ratio: linear_reference.map(|l0| {
                let ratios = sorted_ratios(|r| r.linear_reference_ms, l0);
                ratios[ratios.len() / 2]
            }),
        }
    });
    if let Some(path) = run.figure {
        let mut series = Vec::new();
        if let Some(s) = &lut_score {
            series.push((
                format!(
                    "lookup table: MAPE {:.1}%, {:.0}% within ±10%",
                    s.mape,
                    s.within_10pct * 100.0
                ),
                pairs(&|r| r.lut_ms),
            ));
        }
        if let Some(s) = &lut_drift_adjusted {
            series.push((
                format!(
                    "lookup table, adjusted for the host's drift: MAPE {:.1}%, {:.0}% within ±10%",
                    s.mape,
                    s.within_10pct * 100.0
                ),
                pairs(&|r| r.lut_now_ms),
            ));
        }
        series.push((
            format!(
                "roofline: MAPE {:.1}%, {:.0}% within ±10%",
                roof.mape,
                roof.within_10pct * 100.0
            ),
            pairs(&|r| Some(r.roofline_ms)),
        ));
        sculpt_report::plot_validation(
            path,
            &format!(
                "{}: {} random plans, batch {}, {} thread(s)",
                teacher.spec.name, run.plans, run.settings.batch, run.settings.threads
            ),
            &series,
        )?;
    }
    let headline = lut_drift_adjusted
        .as_ref()
        .or(lut_score.as_ref())
        .unwrap_or(&roof);
    Ok(Validation {
        model: teacher.spec.name.clone(),
        batch: run.settings.batch,
        threads: run.settings.threads,
        runs: run.settings.runs,
        passes: run.passes,
        seed: run.seed,
        calibrated: calibration.is_some(),
        headline: headline.model.clone(),
        mape: headline.mape,
        within_10pct: headline.within_10pct,
        lut: lut_score,
        lut_drift_adjusted,
        host_drift,
        roofline: roof,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sculpt_latency::LutEntry;

    /// A synthetic table covering an MLP's steps in every precision a random plan gives.
    fn table(reference_ms: f64, linear_reference_ms: f64) -> Lut {
        let mut entries = Vec::new();
        for precision in ["f32", "int8", "int4"] {
            for n in [8.0, 64.0, 512.0] {
                for k in [8.0, 64.0, 512.0] {
                    entries.push(LutEntry {
                        kind: "linear".into(),
                        precision: precision.into(),
                        positions: 1.0,
                        n,
                        k,
                        ms: 1e-7 * n * k + 1e-4,
                    });
                }
            }
        }
        for kind in ["relu", "input_copy"] {
            for p in [64.0, 4096.0] {
                entries.push(LutEntry {
                    kind: kind.into(),
                    precision: "f32".into(),
                    positions: p,
                    n: 1.0,
                    k: 1.0,
                    // Next to nothing, so the Linear steps decide every prediction.
                    ms: 1e-15 * p,
                });
            }
        }
        let mut lut = Lut::new(1, 1, "test".into(), "scalar".into(), 0.0, 0.0, entries).unwrap();
        lut.reference_ms = reference_ms;
        lut.linear_reference_ms = linear_reference_ms;
        lut
    }

    #[test]
    fn validation_brings_linear_steps_to_the_table_speed_by_the_linear_reference() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("mlp");
        let graph = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        sculpt_nn::io::save(&graph, &model).unwrap();
        // The convolutional reference is far quicker in the table than on any host (a
        // microsecond against LeNet-5's tens): were Linear steps scaled by it, the adjusted
        // predictions would be tens of times the raw ones.
        let lut_path = dir.path().join("lut.parquet");
        let linear_reference = sculpt_latency::host_speed(1, 1).unwrap().linear_ms;
        table(1e-3, linear_reference).save(&lut_path).unwrap();
        let run = ValidateRun {
            model: &model,
            lut: Some(&lut_path),
            profile: "epyc-zen4-1core",
            plans: 3,
            seed: 1,
            passes: 1,
            settings: MeasureSettings {
                batch: 1,
                threads: 1,
                warmup: 2,
                runs: 5,
            },
            figure: None,
            calibrate: false,
            calibrated_out: None,
        };
        let v = validate(&run, &mut |_, _| {}).unwrap();
        assert!(!v.calibrated);
        let adjusted = v.lut_drift_adjusted.as_ref().unwrap();
        assert_eq!(v.headline, adjusted.model);
        assert_eq!(v.within_10pct, adjusted.within_10pct);
        assert!(
            v.headline.contains("adjusted for the host's drift"),
            "{}",
            v.headline
        );
        for r in &v.rows {
            let (raw, now) = (r.lut_ms.unwrap(), r.lut_now_ms.unwrap());
            // The Linear reference now against the table's: a shared host moves, but not
            // by 3×, and not by the convolutional reference's factor.
            let ratio = now / raw;
            let expected = r.linear_reference_ms / linear_reference;
            assert!(
                (ratio / expected - 1.0).abs() < 0.01,
                "adjusted/raw {ratio}, Linear reference ratio {expected}: {r:?}"
            );
            assert!((0.33..3.0).contains(&ratio), "{ratio}");
        }
        let drift = v.host_drift.unwrap();
        assert_eq!(drift.table_linear_reference_ms, Some(linear_reference));
        assert!(drift.median_ratio > 10.0, "{drift:?}");
    }

    #[test]
    fn calibrating_alongside_the_validation_fits_the_table_to_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("mlp");
        let graph = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        sculpt_nn::io::save(&graph, &model).unwrap();
        // Every entry a hundred times too slow for any host: only a calibration on measured
        // plans brings the predictions near the measurements.
        let now = sculpt_latency::host_speed(1, 1).unwrap();
        let mut entries = table(0.0, 0.0).entries;
        entries.iter_mut().for_each(|e| e.ms *= 100.0);
        let mut slow = Lut::new(1, 1, "test".into(), "scalar".into(), 0.0, 0.0, entries).unwrap();
        (slow.reference_ms, slow.linear_reference_ms) = (now.conv_ms, now.linear_ms);
        let lut_path = dir.path().join("lut.parquet");
        slow.save(&lut_path).unwrap();
        let out = dir.path().join("calibrated.parquet");
        let mut run = ValidateRun {
            model: &model,
            lut: Some(&lut_path),
            profile: "epyc-zen4-1core",
            plans: 4,
            seed: 3,
            passes: 2,
            settings: MeasureSettings {
                batch: 1,
                threads: 1,
                warmup: 2,
                runs: 50,
            },
            figure: None,
            calibrate: false,
            calibrated_out: None,
        };
        let before = validate(&run, &mut |_, _| {}).unwrap();
        assert!(before.mape > 300.0, "{}", before.mape);
        run.calibrate = true;
        run.calibrated_out = Some(&out);
        let mut last = (0, 0);
        let v = validate(&run, &mut |done, total| last = (done, total)).unwrap();
        // Every block counted: the validation's 4 plans and the calibration's 24, twice.
        assert_eq!(last, (2 * 28, 2 * 28));
        assert!(v.calibrated);
        let name = &v.lut.as_ref().unwrap().model;
        assert!(name.contains("alongside the validation"), "{name}");
        assert!(
            v.mape < 50.0,
            "calibrated: {} (before {})",
            v.mape,
            before.mape
        );
        let written = Lut::load(&out).unwrap();
        assert!(written.calibrated_on.contains("alongside the validation"));
        // The Linear steps run in a hundredth of their entries, or less.
        assert!(
            written.scales[..2].iter().all(|a| *a < 0.2),
            "{:?}",
            written.scales
        );
        // A calibration needs a table.
        run.lut = None;
        let e = validate(&run, &mut |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("--lut"), "{e}");
    }
}
