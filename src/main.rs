//! The `sculpt` command line: parse arguments, resolve paths, call a library, print.
//! It holds no logic of its own. Mistakes in input files exit with status 2, other
//! failures with status 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sculpt_campaign::{Campaign, CampaignError, ProgressBar};
use sculpt_store::{Store, TrialRecord};

#[derive(Parser)]
#[command(
    name = "sculpt",
    version,
    about = "Automated model-compression search: distillation, pruning and mixed precision, searched jointly"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a zoo model, or a custom architecture from a model spec, and write model.toml,
    /// model.safetensors and metrics.json.
    Train {
        /// Zoo model (mlp, lenet-300-100, lenet-5, resnet-8, mobilenet-s), or the path of a
        /// model spec (a model.toml of your own architecture, e.g. specs/my-net.toml).
        #[arg(long)]
        model: String,
        /// Data source: digits (embedded), mnist:DIR, idx:DIR, cifar10:DIR,
        /// csv:PATH[#LABEL] or parquet:PATH[#LABEL]. DIR and PATH are paths on disk
        /// (relative to the current folder); #LABEL names the label column of a table
        /// [default column: label].
        #[arg(long, default_value = "digits")]
        data: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 60)]
        epochs: usize,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[arg(long, default_value_t = 2e-3)]
        learning_rate: f64,
        #[arg(long, default_value_t = 1e-4)]
        weight_decay: f64,
        /// adamw or sgd.
        #[arg(long, default_value = "adamw")]
        optimizer: String,
        /// SGD momentum.
        #[arg(long, default_value_t = 0.9)]
        momentum: f64,
        /// cosine, step or constant.
        #[arg(long, default_value = "cosine")]
        schedule: String,
        /// Step schedule: multiply the rate by --step-gamma every --step-every epochs.
        #[arg(long, default_value_t = 10)]
        step_every: usize,
        #[arg(long, default_value_t = 0.1)]
        step_gamma: f64,
        /// Seed for the data split, the initialisation and the batch order.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Continue from the checkpoint a killed run left in --out.
        #[arg(long)]
        resume: bool,
    },
    /// Import an ONNX classifier (exported by PyTorch, Keras, scikit-learn…) as a model
    /// directory: model.toml and model.safetensors, with PyTorch's parameter names. Declare
    /// the input preprocessing it was trained with: it sees (x · S − M) / D of the raw
    /// values x in the data file (0 to 255 for images).
    Import {
        /// The .onnx file.
        onnx: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// S: the factor applied to raw values first (ToTensor() on 8-bit images: 1/255 =
        /// 0.00392156862745098).
        #[arg(long)]
        input_scale: Option<f32>,
        /// M: the mean subtracted after scaling, one value or one per channel
        /// (Normalize((0.1307,), …): 0.1307).
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
        mean: Option<Vec<f32>>,
        /// D: the deviation divided by, one value or one per channel (…, (0.3081,)): 0.3081.
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
        std: Option<Vec<f32>>,
        /// The model takes the raw values as they are (no scaling, no normalisation).
        #[arg(long, conflicts_with_all = ["input_scale", "mean", "std"])]
        raw: bool,
    },
    /// Print a model directory's layer table: name, op, output shape, params, FLOPs.
    Inspect {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a model directory with sculpt's inference runtime: accuracy, size, and
    /// latency measured on this machine (and modelled by the roofline).
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: String,
        /// Which split to score: val or test.
        #[arg(long, default_value = "test")]
        split: String,
        /// Seed of the data split [default: the one in the model's metrics.json, else 42].
        #[arg(long)]
        seed: Option<u64>,
        /// Device profile for the modelled latency.
        #[arg(long, default_value = "epyc-zen4-1core")]
        profile: String,
        /// Batch size of the latency measurement.
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
        /// Threads of the latency measurement.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Benchmark every step kind of sculpt's runtime over a grid of shapes and precisions
    /// on this host, and write the lookup table latency predictions use. Its scales are
    /// fitted on random plans of the zoo's networks, or of the model given to
    /// `--calibrate-on`; with `--from`, an existing table is only calibrated anew.
    Profile {
        /// The table to write (parquet).
        #[arg(long)]
        out: PathBuf,
        /// Batch size [default: 1]. Not with `--from`, which keeps the table's.
        #[arg(long)]
        batch: Option<usize>,
        /// Threads [default: 1]. Not with `--from`, which keeps the table's.
        #[arg(long)]
        threads: Option<usize>,
        /// Fit the table's scales on random plans of this model directory (the model a
        /// campaign will search) instead of the zoo's networks.
        #[arg(long, value_name = "MODEL_DIR")]
        calibrate_on: Option<PathBuf>,
        /// Keep this table's entries and only calibrate it anew (needs --calibrate-on).
        #[arg(long, value_name = "LUT", requires = "calibrate_on")]
        from: Option<PathBuf>,
        /// Milliseconds of timing per grid point [default: 60]. Not with `--from`.
        #[arg(long)]
        budget_ms: Option<f64>,
        /// Also calibrate the roofline on this host by microbenchmarks and write the
        /// device profile here (TOML; a campaign names it as `latency.profile`).
        #[arg(long)]
        host_profile: Option<PathBuf>,
    },
    /// Latency: measure a model with sculpt's runtime, or validate the predictors.
    Latency {
        #[command(subcommand)]
        command: LatencyCommand,
    },
    /// Apply a compression plan (prune, sparsify, factorise, fold, quantize, then fine-tune
    /// by distillation) to a trained model and write the compressed model and metrics.json.
    Compress {
        /// Model directory (model.toml + model.safetensors): the model to compress and the
        /// teacher it distils from.
        #[arg(long)]
        model: PathBuf,
        /// Data source: digits, mnist:DIR, idx:DIR, cifar10:DIR, csv:PATH, parquet:PATH.
        #[arg(long)]
        data: String,
        /// The plan file (TOML); see the README for its format.
        #[arg(long)]
        plan: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the data split and of fine-tuning [default: the one in the model's
        /// metrics.json, else 42].
        #[arg(long)]
        seed: Option<u64>,
        /// Fine-tuning epochs, overriding the plan's [finetune] (0: none).
        #[arg(long)]
        epochs: Option<usize>,
        /// Print metrics.json to standard output.
        #[arg(long)]
        json: bool,
    },
    /// Sweep each layer alone over prune ratios, sparsities and bit widths (post-training,
    /// no fine-tuning) and write sensitivity.parquet and sensitivity.svg.
    Sensitivity {
        /// Model directory (model.toml + model.safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Data source: digits, mnist:DIR, idx:DIR, cifar10:DIR, csv:PATH, parquet:PATH.
        #[arg(long)]
        data: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the data split [default: the one in the model's metrics.json, else 42].
        #[arg(long)]
        seed: Option<u64>,
        /// Structured prune ratios, comma-separated, each in [0, 1).
        #[arg(long, value_delimiter = ',', value_parser = prune_ratio,
              default_values_t = sculpt_campaign::sensitivity::DEFAULT_PRUNE_RATIOS.to_vec())]
        prune_ratios: Vec<f64>,
        /// Weight bit widths, comma-separated: 2 to 8, 16 or 32.
        #[arg(long, value_delimiter = ',', value_parser = bit_width,
              default_values_t = sculpt_campaign::sensitivity::DEFAULT_BITS.to_vec())]
        bits: Vec<u32>,
        /// Unstructured (magnitude) sparsities, comma-separated, each in [0, 1).
        #[arg(long, value_delimiter = ',', value_parser = sparsity,
              default_values_t = sculpt_campaign::sensitivity::DEFAULT_SPARSITY.to_vec())]
        sparsity: Vec<f64>,
        /// Print the table as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a campaign trial's compression plan as a plan file, for `sculpt compress`.
    Plan {
        /// The campaign file (TOML).
        campaign: PathBuf,
        #[arg(long)]
        trial: u64,
        /// Campaign directory [default: reports/<campaign name>].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Write the plan here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run (or resume) a compression search campaign.
    Run {
        /// The campaign file (TOML).
        campaign: PathBuf,
        /// Output directory [default: reports/<campaign name>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue in a directory whose trials belong to a changed campaign: the old
        /// trials are kept and the new ones added (the refusal says what changed).
        #[arg(long)]
        force: bool,
        /// Stop cleanly after this long (`8h`, `90m`, `1h30m`, `45s`); overrides the
        /// file's `max_minutes`.
        #[arg(long, value_parser = parse_duration_minutes)]
        time_budget: Option<f64>,
        /// The number of trials; overrides the file's `trials`.
        #[arg(long)]
        trials: Option<usize>,
        /// Evaluations at once, each in a `sculpt worker` process on its share of the
        /// cores; overrides the file's `workers` [default: one per core]. 1 evaluates in
        /// this process, reproducible trial for trial.
        #[arg(long)]
        workers: Option<usize>,
        /// The seed; overrides the file's `seed` (it is part of the campaign's identity).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Evaluate trials of a running parallel campaign: claim the next queued candidate
    /// from DIR, compress, fine-tune and score it, report it, and go on until the
    /// campaign's runner closes the folder. `sculpt run --workers N` starts these itself.
    Worker { dir: PathBuf },
    /// Write the stakeholder report of one or more campaign folders: report.html
    /// (self-contained), report.md, and every figure as SVG and PNG under figures/. The
    /// Pareto configurations are rebuilt from their plans and seeds and scored on the test
    /// split (cached in DIR/heldout.json). Several folders overlay their fronts. It also
    /// rewrites each folder's summary.md and pareto.svg.
    Report {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Latency budget to mark and select under, in ms [default: the campaign's].
        #[arg(long, value_parser = positive_ms)]
        budget_ms: Option<f64>,
        /// Where to write the report [default: the first DIR].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Skip the held-out test scores (no rebuilding; cached scores are still shown).
        #[arg(long)]
        no_test: bool,
        /// The campaign file, for folders written before runs kept a copy of it.
        #[arg(long)]
        campaign: Option<PathBuf>,
    },
    /// Choose the configuration to deploy: the best complete trial (by validation
    /// accuracy, size or latency) within the limits. Prints why, with the runners-up and
    /// their test accuracy, and writes DIR/selected.toml for `sculpt export --selected`.
    Select {
        dir: PathBuf,
        /// Latency limit in ms [default: the campaign's budget].
        #[arg(long, alias = "budget-ms", value_parser = positive_ms)]
        max_latency_ms: Option<f64>,
        /// Minimum validation accuracy: a fraction (0.985) or a percentage (98.5).
        #[arg(long, value_parser = accuracy_limit)]
        min_accuracy: Option<f64>,
        #[arg(long)]
        max_size_bytes: Option<u64>,
        /// What to optimise among the feasible trials: accuracy, size or latency.
        #[arg(long, default_value = "accuracy", value_parser = ["accuracy", "size", "latency"])]
        prefer: String,
        /// Skip rebuilding the chosen trials to show their test accuracy.
        #[arg(long)]
        no_test: bool,
        /// The campaign file, for folders written before runs kept a copy of it.
        #[arg(long)]
        campaign: Option<PathBuf>,
        /// Print the choice as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a trial (its plan applied to the teacher again, fine-tuned with its stored
    /// seed) and write it as a model directory: model.toml, model.safetensors with the
    /// quantized weights as packed integers plus scales and zero points, plan.toml and
    /// metrics.json. `sculpt eval --model OUT --data …` then reproduces its figures.
    Export {
        dir: PathBuf,
        /// The trial to export.
        #[arg(
            long,
            conflicts_with = "selected",
            required_unless_present = "selected"
        )]
        trial: Option<u64>,
        /// Export the trial `sculpt select` wrote to DIR/selected.toml.
        #[arg(long)]
        selected: bool,
        /// Also write model.onnx (opset 13; quantized weights in QDQ form): `onnx`, or
        /// `safetensors` (the default) for the model directory alone.
        #[arg(long, default_value = "safetensors", value_parser = ["safetensors", "onnx"])]
        format: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// The campaign file, for folders written before runs kept a copy of it.
        #[arg(long)]
        campaign: Option<PathBuf>,
        /// Print metrics.json to standard output.
        #[arg(long)]
        json: bool,
    },
    /// How a campaign stands, while it runs or after: trials by state, the trial budget,
    /// elapsed time and ETA, the best hypervolume and the current front.
    Status {
        dir: PathBuf,
        /// Print one JSON object (`complete`, `failed`, `infeasible`, `diverged`,
        /// `stopped`, `running`, `abandoned`, `queued`, `active`, `budget`, `elapsed_s`,
        /// `eta_s`, `hypervolume`, `front`).
        #[arg(long)]
        json: bool,
    },
    /// Evaluate every configuration of a small compression space of a trained model (a
    /// prune ratio per prunable layer, a bit width per weight layer) by post-training
    /// compression, without fine-tuning, into a parquet table that strategy benchmarks
    /// look values up in.
    BenchTable {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: String,
        #[arg(long)]
        out: PathBuf,
        /// Prune ratios of each prunable layer.
        #[arg(long, value_delimiter = ',', default_value = "0,0.25,0.5,0.75")]
        prune: Vec<f64>,
        /// Bit widths of each weight layer.
        #[arg(long, value_delimiter = ',', default_value = "2,4,8,32")]
        bits: Vec<u32>,
        /// Device profile of the roofline latency model.
        #[arg(long, default_value = "epyc-zen4-1core")]
        profile: String,
        /// A lookup table from `sculpt profile`, instead of the roofline.
        #[arg(long)]
        lut: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Run search strategies on a benchmark table or on ZDT1-3 / DTLZ2 for several seeds,
    /// and report the share of the true front's hypervolume they find after 50, 100 and
    /// 200 evaluations (median and quartiles over seeds).
    BenchSearch {
        /// table (with --table), zdt1, zdt2, zdt3 or dtlz2.
        #[arg(long, default_value = "table")]
        problem: String,
        #[arg(long)]
        table: Option<PathBuf>,
        /// The table's second objective beside the error: latency or size.
        #[arg(long, default_value = "latency")]
        objective: String,
        /// Strategies, comma-separated: random, nsga2, gp, auto.
        #[arg(long, value_delimiter = ',', default_value = "random,nsga2,gp,auto")]
        strategy: Vec<String>,
        #[arg(long, default_value_t = 200)]
        budget: usize,
        #[arg(long, default_value_t = 10)]
        seeds: usize,
        /// NSGA-II's population (also under auto).
        #[arg(long, default_value_t = 50)]
        population: usize,
        /// Trials `auto` gives the GP before NSGA-II (default: auto's own).
        #[arg(long)]
        gp_trials: Option<u64>,
        /// Print one JSON object per strategy (`hv_fraction_at`: checkpoint → median).
        #[arg(long)]
        json: bool,
        /// Write every evaluated point as parquet.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Draw hypervolume against evaluations, one line per strategy (SVG).
        #[arg(long)]
        figure: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum LatencyCommand {
    /// Measure a model directory's inference latency on this machine: warm-up, then the
    /// median and 90th percentile of repeated runs of the compiled plan.
    Measure {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 100)]
        warmup: usize,
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Draw random plans of a model, build each without fine-tuning, measure it and
    /// predict it with the lookup table and the roofline; report each predictor's mean
    /// absolute percentage error (`mape`) and share within ±10% (`within_10pct`).
    Validate {
        /// The trained model directory whose random plans are built and measured.
        #[arg(long)]
        model: PathBuf,
        /// The lookup table from `sculpt profile` (without it, only the roofline).
        #[arg(long)]
        lut: Option<PathBuf>,
        /// Device profile of the roofline.
        #[arg(long, default_value = "epyc-zen4-1core")]
        profile: String,
        /// Random plans to draw (random channel pruning per layer; f32, 8- or 4-bit weights).
        #[arg(long, default_value_t = 100)]
        plans: usize,
        /// Batch size of the measurements (a table must have been profiled at it).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Threads of the measurements (a table must have been profiled with them).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Timed runs per block (after 20 warm-up runs).
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Blocks per plan, one per pass over all the plans: a plan's measured time is the
        /// median of its blocks' medians, taken in different phases of a shared host.
        #[arg(long, default_value_t = 5)]
        passes: usize,
        /// Seed of the plans drawn (never the calibration's plans).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write the predicted-against-measured figure here (SVG).
        #[arg(long)]
        figure: Option<PathBuf>,
        /// Calibrate the table anew on the model (its 24 calibration plans, as
        /// `profile --calibrate-on` does), timing those plans in the same passes as the
        /// validation's, interleaved with them, and validate the table so calibrated.
        #[arg(long, requires = "lut")]
        calibrate: bool,
        /// Write the table calibrated by --calibrate here.
        #[arg(long, value_name = "LUT", requires = "calibrate")]
        calibrated_out: Option<PathBuf>,
        /// Print the scores, the settings and every plan's row as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`sculpt status DIR | head`)
    // would panic; a command-line tool should end quietly instead, as `cat` does.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // candle splits element-wise ops on large tensors across a pool of its own threads,
    // beside rayon's. Training splits each batch into one shard per rayon thread
    // (sculpt_nn::train), and two shards contending for that pool ran at two thirds of
    // the speed of shards that do their element-wise work themselves. A zero-worker pool
    // runs every op on the calling thread. A value the user set is kept.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: no other thread exists yet to read the environment.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            let is = |f: fn(&CampaignError) -> bool| {
                error
                    .chain()
                    .any(|e| e.downcast_ref::<CampaignError>().is_some_and(f))
            };
            if is(CampaignError::is_interrupted) {
                return ExitCode::from(INTERRUPTED as u8);
            }
            ExitCode::from(if is(CampaignError::is_config) { 2 } else { 1 })
        }
    }
}

/// Adds `context` to a library error, except to a mistake in an input file, whose message
/// already names the file, line and field.
fn in_context(error: CampaignError, context: impl FnOnce() -> String) -> anyhow::Error {
    if error.is_config() {
        anyhow::Error::new(error)
    } else {
        anyhow::Error::new(error).context(context())
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Train {
            model,
            data,
            out,
            epochs,
            batch_size,
            learning_rate,
            weight_decay,
            optimizer,
            momentum,
            schedule,
            step_every,
            step_gamma,
            seed,
            resume,
        } => {
            let optimizer = match optimizer.as_str() {
                "adamw" => sculpt_nn::train::OptimizerKind::AdamW,
                "sgd" => sculpt_nn::train::OptimizerKind::Sgd { momentum },
                other => anyhow::bail!("unknown optimizer `{other}` (known: adamw, sgd)"),
            };
            let schedule = match schedule.as_str() {
                "cosine" => sculpt_nn::train::Schedule::Cosine,
                "constant" => sculpt_nn::train::Schedule::Constant,
                "step" => sculpt_nn::train::Schedule::Step {
                    every: step_every,
                    gamma: step_gamma,
                },
                other => {
                    anyhow::bail!("unknown schedule `{other}` (known: cosine, step, constant)")
                }
            };
            let config = sculpt_nn::TrainConfig {
                epochs,
                batch_size,
                learning_rate,
                weight_decay,
                seed,
                optimizer,
                schedule,
            };
            train(&model, &data, &out, config, resume)
        }
        Command::Inspect { dir, json } => inspect(&dir, json),
        Command::Import {
            onnx,
            out,
            input_scale,
            mean,
            std,
            raw,
        } => import(&onnx, &out, input_scale, mean, std, raw),
        Command::Eval {
            model,
            data,
            split,
            seed,
            profile,
            batch_size,
            threads,
            json,
        } => eval(
            &model,
            &data,
            &split,
            sculpt_campaign::model_seed(&model, seed),
            &profile,
            sculpt_latency::MeasureSettings {
                batch: batch_size,
                threads,
                ..Default::default()
            },
            json,
        ),
        Command::Profile {
            out,
            batch,
            threads,
            calibrate_on,
            from,
            budget_ms,
            host_profile,
        } => match from {
            Some(table) => {
                if batch.is_some()
                    || threads.is_some()
                    || host_profile.is_some()
                    || budget_ms.is_some()
                {
                    anyhow::bail!(
                        "--from keeps the table's batch and threads and times no probes: \
                         --batch, --threads, --budget-ms and --host-profile do not apply"
                    );
                }
                let model = calibrate_on.expect("clap requires --calibrate-on with --from");
                recalibrate(&table, &model, &out)
            }
            None => profile(
                &out,
                &sculpt_latency::ProfileSettings {
                    batch: batch.unwrap_or(1),
                    threads: threads.unwrap_or(1),
                    budget_ms: budget_ms.unwrap_or(60.0),
                },
                host_profile.as_deref(),
                calibrate_on.as_deref(),
            ),
        },
        Command::Latency { command } => match command {
            LatencyCommand::Validate {
                model,
                lut,
                profile,
                plans,
                batch,
                threads,
                runs,
                passes,
                seed,
                figure,
                calibrate,
                calibrated_out,
                json,
            } => latency_validate(
                &sculpt_campaign::latency_check::ValidateRun {
                    model: &model,
                    lut: lut.as_deref(),
                    profile: &profile,
                    plans,
                    seed,
                    passes,
                    settings: sculpt_latency::MeasureSettings {
                        batch,
                        threads,
                        warmup: 20,
                        runs,
                    },
                    figure: figure.as_deref(),
                    calibrate,
                    calibrated_out: calibrated_out.as_deref(),
                },
                json,
            ),
            LatencyCommand::Measure {
                model,
                batch,
                threads,
                warmup,
                runs,
                json,
            } => latency_measure(
                &model,
                &sculpt_latency::MeasureSettings {
                    batch,
                    threads,
                    warmup,
                    runs,
                },
                json,
            ),
        },
        Command::Compress {
            model,
            data,
            plan,
            out,
            seed,
            epochs,
            json,
        } => compress(
            &sculpt_campaign::CompressRun {
                model: &model,
                data: &data,
                plan: &plan,
                out: &out,
                seed,
                epochs,
            },
            json,
        ),
        Command::Sensitivity {
            model,
            data,
            out,
            seed,
            prune_ratios,
            bits,
            sparsity,
            json,
        } => sensitivity(
            &sculpt_campaign::sensitivity::SensitivityRun {
                model: &model,
                data: &data,
                out: &out,
                seed: sculpt_campaign::model_seed(&model, seed),
                prune_ratios,
                bits,
                sparsity,
            },
            json,
        ),
        Command::Plan {
            campaign,
            trial,
            dir,
            out,
        } => plan(&campaign, trial, dir, out),
        Command::Run {
            campaign,
            out,
            force,
            time_budget,
            trials,
            workers,
            seed,
        } => run(
            &campaign,
            out,
            &RunFlags {
                force,
                time_budget,
                trials,
                workers,
                seed,
            },
        ),
        Command::Worker { dir } => worker(&dir),
        Command::Report {
            dirs,
            budget_ms,
            out,
            no_test,
            campaign,
        } => report(&dirs, budget_ms, out, !no_test, campaign.as_deref()),
        Command::Select {
            dir,
            max_latency_ms,
            min_accuracy,
            max_size_bytes,
            prefer,
            no_test,
            campaign,
            json,
        } => select(
            &dir,
            max_latency_ms,
            min_accuracy,
            max_size_bytes,
            &prefer,
            !no_test,
            campaign.as_deref(),
            json,
        ),
        Command::Export {
            dir,
            trial,
            selected: _,
            format,
            out,
            campaign,
            json,
        } => export(
            &dir,
            trial,
            &out,
            campaign.as_deref(),
            format == "onnx",
            json,
        ),
        Command::Status { dir, json } => status(&dir, json),
        Command::BenchTable {
            model,
            data,
            out,
            prune,
            bits,
            profile,
            lut,
            json,
        } => bench_table(
            &model,
            &data,
            &out,
            &sculpt_campaign::bench::TableSettings {
                prune,
                bits,
                profile,
                lut,
                batch: 1,
            },
            json,
        ),
        Command::BenchSearch {
            problem,
            table,
            objective,
            strategy,
            budget,
            seeds,
            population,
            gp_trials,
            json,
            trace,
            figure,
        } => bench_search(
            &problem,
            table.as_deref(),
            &objective,
            &strategy,
            budget,
            seeds,
            population,
            gp_trials,
            json,
            trace.as_deref(),
            figure.as_deref(),
        ),
    }
}

fn bench_table(
    model: &Path,
    data: &str,
    out: &Path,
    settings: &sculpt_campaign::bench::TableSettings,
    json: bool,
) -> anyhow::Result<()> {
    let total: usize = 1;
    let bar = counter(total, "configurations");
    let summary =
        sculpt_campaign::bench::bench_table(model, data, settings, out, &mut follow(&bar))?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "wrote {}: {} configuration{} of {} in {:.1} s; latency from {}",
            out.display(),
            summary.rows,
            if summary.rows == 1 { "" } else { "s" },
            summary.dimensions.join(", "),
            summary.seconds,
            summary.latency_model
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bench_search(
    problem: &str,
    table: Option<&Path>,
    objective: &str,
    strategies: &[String],
    budget: usize,
    seeds: usize,
    population: usize,
    gp_trials: Option<u64>,
    json: bool,
    trace: Option<&Path>,
    figure: Option<&Path>,
) -> anyhow::Result<()> {
    use sculpt_campaign::bench;
    let objective = match objective {
        "latency" => bench::TableObjective::Latency,
        "size" => bench::TableObjective::Size,
        other => anyhow::bail!("unknown --objective `{other}` (known: latency, size)"),
    };
    // Refuse bad names and paths before any run starts.
    for s in strategies {
        bench::strategy(s, 0, population, gp_trials)?;
    }
    for path in trace.iter().chain(figure.iter()) {
        bench::check_output(path)?;
    }
    if let Some(f) = figure {
        if f.extension().and_then(|e| e.to_str()) != Some("svg") {
            anyhow::bail!(
                "--figure {}: the figure is drawn as SVG; give a path ending in .svg",
                f.display()
            );
        }
        if Some(f) == trace {
            anyhow::bail!("--figure and --trace name the same file");
        }
    }
    let table_problem = match (problem, table) {
        ("table", Some(path)) => Some(bench::TableProblem::load(path, objective)?),
        _ => None,
    };
    let other;
    let problem: &dyn sculpt_search::bench::Problem = match &table_problem {
        Some(t) => t,
        None => {
            other = bench::problem(problem, table, objective)?;
            other.as_ref()
        }
    };
    let mut results = Vec::new();
    for name in strategies {
        let bar = counter(seeds, &format!("{name}: seeds"));
        let r = bench::bench_strategy(
            name,
            problem,
            budget,
            seeds,
            population,
            gp_trials,
            &mut |done, _| bar.set_position(done as u64),
        )?;
        bar.finish_and_clear();
        if json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            for (k, median) in &r.hv_fraction_at {
                let q = r.quartiles_at[k];
                println!(
                    "{} {}: after {k} evaluations, median {median:.3} of the true hypervolume (quartiles {:.3}-{:.3}), {} seeds",
                    r.problem, r.strategy, q[0], q[1], r.seeds
                );
            }
            println!(
                "{} {}: {:.2} s per run (median)",
                r.problem, r.strategy, r.seconds_median
            );
        }
        results.push(r);
    }
    if let Some(path) = trace {
        bench::write_trace(path, problem, table_problem.as_ref(), &results)?;
        if !json {
            println!("trace: {}", path.display());
        }
    }
    if let Some(path) = figure {
        bench::plot(path, problem, &results)?;
        if !json {
            println!("figure: {}", path.display());
        }
    }
    Ok(())
}

fn train(
    model: &str,
    data: &str,
    out: &Path,
    config: sculpt_nn::TrainConfig,
    resume: bool,
) -> anyhow::Result<()> {
    let splits = sculpt_data::load(data, config.seed)?;
    eprintln!(
        "training {model} on {data}: {} train, {} validation, {} test samples",
        splits.train.len(),
        splits.val.len(),
        splits.test.len()
    );
    if resume && !out.join(sculpt_nn::train::CHECKPOINT_FILE).is_file() {
        eprintln!(
            "no checkpoint in {}: training from the start",
            out.display()
        );
    }
    let bar = indicatif_bar(config.epochs);
    let (_, metrics) =
        sculpt_campaign::train_model(model, &splits, &config, out, resume, None, &mut |s| {
            bar.set_position(s.epoch as u64);
            bar.set_message(format!(
                "loss {:.4}, train accuracy {:.2}%, {:.0} samples/s",
                s.loss,
                s.train_accuracy * 100.0,
                s.samples_per_second
            ));
        })?;
    bar.finish();
    println!(
        "test accuracy {:.2}%, validation {:.2}%, {:.3} s/epoch, {:.0} samples/s, {} params, {} bytes",
        metrics.test_accuracy * 100.0,
        metrics.val_accuracy * 100.0,
        metrics.seconds_per_epoch,
        metrics.samples_per_second,
        metrics.params,
        metrics.size_bytes
    );
    println!("wrote {}", out.display());
    Ok(())
}

fn import(
    onnx: &Path,
    out: &Path,
    scale: Option<f32>,
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
    raw: bool,
) -> anyhow::Result<()> {
    // Reading errors name the file already; the graph's errors name the node, and get
    // the file here.
    let mut graph = sculpt_onnx::import_file(onnx).map_err(|e| match e {
        sculpt_onnx::OnnxError::Io { .. } | sculpt_onnx::OnnxError::Decode { .. } => {
            anyhow::anyhow!(e)
        }
        other => anyhow::anyhow!("{}: {other}", onnx.display()),
    })?;
    let declared = raw || scale.is_some() || mean.is_some() || std.is_some();
    if declared {
        let p = sculpt_nn::Preprocessing {
            scale: scale.unwrap_or(1.0),
            mean: mean.unwrap_or(vec![0.0]),
            std: std.unwrap_or(vec![1.0]),
        };
        p.affine(&graph.spec.input_shape)
            .map_err(|m| anyhow::anyhow!("--input-scale/--mean/--std: {m}"))?;
        graph.spec.preprocessing = Some(p);
    }
    // A new folder: an old metrics.json there would claim a training seed and data the
    // imported model never had.
    if out.is_file() {
        anyhow::bail!("--out {} is a file; import writes a folder", out.display());
    }
    if std::fs::read_dir(out).is_ok_and(|mut e| e.next().is_some()) {
        anyhow::bail!(
            "{} is not empty; import writes a new model directory (choose a new or empty folder)",
            out.display()
        );
    }
    sculpt_nn::io::save(&graph, out)?;
    let rows = graph.spec.summarize()?;
    println!(
        "imported {} as {}: input {:?}, {} classes, {} layers, {} parameters",
        onnx.display(),
        out.display(),
        graph.spec.input_shape,
        graph.spec.num_classes,
        rows.len(),
        graph.num_params()
    );
    match &graph.spec.preprocessing {
        Some(p) => println!("input preprocessing: {}", p.describe()),
        None => eprintln!(
            "warning: no input preprocessing declared. sculpt will feed this model its own standardisation of the data, which is almost certainly not what it was trained on. Import again with --input-scale/--mean/--std (a PyTorch model trained with ToTensor() and Normalize((0.1307,), (0.3081,)): --input-scale 0.00392156862745098 --mean 0.1307 --std 0.3081), or --raw."
        ),
    }
    Ok(())
}

fn inspect(dir: &Path, json: bool) -> anyhow::Result<()> {
    hint_campaign_folder(dir, "inspect")?;
    let graph = sculpt_nn::io::load(dir)?;
    let rows = graph.spec.summarize()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{} (input {:?}, {} classes)",
        graph.spec.name, graph.spec.input_shape, graph.spec.num_classes
    );
    match &graph.spec.preprocessing {
        Some(p) => println!("input preprocessing: {}", p.describe()),
        None => println!(
            "input preprocessing: not declared (sculpt feeds its own standardisation; declare [preprocessing] in model.toml for a model trained elsewhere)"
        ),
    }
    println!(
        "{:<14} {:<14} {:<16} {:>10} {:>14}",
        "name", "op", "output", "params", "FLOPs"
    );
    for r in &rows {
        println!(
            "{:<14} {:<14} {:<16} {:>10} {:>14}",
            r.name,
            r.op,
            format!("{:?}", r.output_shape),
            r.params,
            r.flops
        );
    }
    println!(
        "{:<14} {:<14} {:<16} {:>10} {:>14}",
        "total",
        "",
        "",
        rows.iter().map(|r| r.params).sum::<usize>(),
        rows.iter().map(|r| r.flops).sum::<u64>()
    );
    Ok(())
}

/// A folder given where a campaign folder is expected must be one.
fn require_campaign_folder(dir: &Path) -> anyhow::Result<()> {
    if !dir.join(sculpt_store::store::CAMPAIGN_FILE).is_file() {
        anyhow::bail!(
            "{} is not a campaign folder (it has no {}); `sculpt run CAMPAIGN.toml --out {}` makes one{}",
            dir.display(),
            sculpt_store::store::CAMPAIGN_FILE,
            dir.display(),
            if dir.join(sculpt_nn::io::SPEC_FILE).is_file() {
                ". It is a model directory: `sculpt eval --model` and `sculpt inspect` read those"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// A campaign folder given where a model directory is expected: point at its teacher.
fn hint_campaign_folder(dir: &Path, command: &str) -> anyhow::Result<()> {
    if !dir.join(sculpt_nn::io::SPEC_FILE).exists()
        && dir.join(sculpt_store::store::CAMPAIGN_FILE).is_file()
    {
        let teacher = dir.join("teacher");
        anyhow::bail!(
            "{} is a campaign folder, not a model directory (it has no {}). {}",
            dir.display(),
            sculpt_nn::io::SPEC_FILE,
            if teacher.join(sculpt_nn::io::SPEC_FILE).is_file() {
                format!(
                    "Its teacher is {}: `sculpt {command} {}`. A trial's model comes from `sculpt export {} --trial N --out DIR`.",
                    teacher.display(),
                    teacher.display(),
                    dir.display()
                )
            } else {
                format!(
                    "A trial's model comes from `sculpt export {} --trial N --out DIR`.",
                    dir.display()
                )
            }
        );
    }
    Ok(())
}

fn eval(
    model: &Path,
    data: &str,
    split: &str,
    seed: u64,
    profile: &str,
    settings: sculpt_latency::MeasureSettings,
    json: bool,
) -> anyhow::Result<()> {
    hint_campaign_folder(model, "eval --model")?;
    let graph = sculpt_nn::io::load(model)?;
    let splits = sculpt_data::load(data, seed)?;
    let (splits, data_warning) = sculpt_campaign::teacher::fit_data(model, &graph.spec, splits)
        .with_context(|| format!("{} does not fit {data}", model.display()))?;
    if let Some(w) = &data_warning {
        eprintln!("warning: {w}");
    }
    let dataset = match split {
        "test" => &splits.test,
        "val" => &splits.val,
        other => anyhow::bail!("unknown split `{other}` (use val or test)"),
    };
    let mut runtime = sculpt_runtime::Runtime::compile(
        &graph,
        &sculpt_runtime::Options {
            max_batch: 256,
            threads: settings.threads,
            isa: None,
            sparse: Default::default(),
        },
    )?;
    let accuracy = runtime.accuracy(dataset)?;
    let profile = sculpt_latency::DeviceProfile::load(profile)?;
    let modelled = sculpt_latency::estimate(&graph, &profile, settings.batch)?.total_ms();
    let measured = sculpt_latency::measure(&graph, &settings)?;
    let report = serde_json::json!({
        "model": graph.spec.name,
        "data": data,
        "split": split,
        "seed": seed,
        "accuracy": accuracy,
        "size_bytes": sculpt_compress::model_size_bytes(&graph)?,
        "latency_ms": measured.median_ms,
        "latency_p90_ms": measured.p90_ms,
        "batch_size": settings.batch,
        "threads": settings.threads,
        "isa": measured.isa,
        "latency_ms_roofline": modelled,
        "profile": profile.name,
        "params": graph.num_params(),
        "flops": graph.flops()?,
        "layers": runtime.layers(),
        "preprocessing": splits.preprocessing,
        "warnings": data_warning.iter().collect::<Vec<_>>(),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {split} accuracy {:.2}% on {data} (sculpt runtime, {}); {} bytes",
            graph.spec.name,
            accuracy * 100.0,
            measured.isa,
            report["size_bytes"]
        );
        println!(
            "latency at batch {} on {} thread{}: {:.4} ms median, {:.4} ms p90 (measured); {:.4} ms roofline ({})",
            settings.batch,
            settings.threads,
            if settings.threads == 1 { "" } else { "s" },
            measured.median_ms,
            measured.p90_ms,
            modelled,
            profile.name
        );
        for layer in runtime.layers() {
            println!(
                "  {:<12} {:<40} {:>9} B{}",
                layer.name,
                layer.kernel,
                layer.weight_bytes,
                if layer.fused.is_empty() {
                    String::new()
                } else {
                    format!("  + {}", layer.fused.join(", "))
                }
            );
        }
    }
    Ok(())
}

fn counter(total: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{what} {{pos}}/{{len}} [{{elapsed_precise}}, {{eta}} left] {{bar:30}}"
    )) {
        bar.set_style(style);
    }
    bar
}

/// A progress callback `(done, total)` that moves `bar`.
fn follow(bar: &indicatif::ProgressBar) -> impl FnMut(usize, usize) + '_ {
    |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}

/// Checks, before any work, that a file can be written at `path`: its folder exists, it is
/// not a folder, and a file can be created beside it (the temporary a save renames).
fn check_out_dir(path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir.filter(|d| !d.is_dir()) {
        anyhow::bail!(
            "cannot write {}: {} is not a directory",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        anyhow::bail!("cannot write {}: it is a directory", path.display());
    }
    let mut probe = path.as_os_str().to_owned();
    probe.push(".tmp");
    let probe = PathBuf::from(probe);
    let existed = probe.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&probe)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}

/// The model a table is calibrated on, and its name in the table.
fn calibration_model(dir: &Path) -> anyhow::Result<(String, sculpt_nn::Graph)> {
    let graph =
        sculpt_nn::io::load(dir).context("reading the model to calibrate on (--calibrate-on)")?;
    Ok((format!("{} ({})", graph.spec.name, dir.display()), graph))
}

fn print_table(out: &Path, lut: &sculpt_latency::Lut) {
    println!(
        "wrote {} ({} entries; {} on {}, batch {}, {} thread{}): per-graph overhead {:.4} ms, largest error on {} {:.1}%",
        out.display(),
        lut.entries.len(),
        lut.isa,
        lut.host,
        lut.batch,
        lut.threads,
        if lut.threads == 1 { "" } else { "s" },
        lut.overhead_ms,
        lut.calibrated_on,
        lut.error_pct
    );
}

fn recalibrate(table: &Path, model: &Path, out: &Path) -> anyhow::Result<()> {
    check_out_dir(out)?;
    // The table as profiled is the only copy of its zoo calibration: writing over it would
    // lose that for good.
    if let (Ok(a), Ok(b)) = (table.canonicalize(), out.canonicalize()) {
        if a == b {
            anyhow::bail!(
                "--out {} is the table given to --from; write the recalibrated table to another file",
                out.display()
            );
        }
    }
    let lut = sculpt_latency::Lut::load(table)?;
    let (name, graph) = calibration_model(model)?;
    let bar = counter(0, "calibrating");
    let lut = sculpt_latency::lut::recalibrate(&lut, &name, &graph, &mut follow(&bar))?;
    bar.finish_and_clear();
    lut.save(out)?;
    print_table(out, &lut);
    Ok(())
}

fn profile(
    out: &Path,
    settings: &sculpt_latency::ProfileSettings,
    host_profile: Option<&Path>,
    calibrate_on: Option<&Path>,
) -> anyhow::Result<()> {
    if !(settings.budget_ms.is_finite() && settings.budget_ms > 0.0) {
        anyhow::bail!("--budget-ms must be a positive number of milliseconds");
    }
    // The model is read before minutes of probing, so a wrong path fails at once.
    let model = calibrate_on.map(calibration_model).transpose()?;
    for path in std::iter::once(out).chain(host_profile) {
        check_out_dir(path)?;
    }
    if let Some(path) = host_profile {
        let host = sculpt_latency::calibrate_host(settings.threads)?;
        std::fs::write(path, toml::to_string(&host)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}: {}", path.display(), host.source);
    }
    let bar = counter(0, "profiling");
    let calibrate_on = model.as_ref().map(|(name, graph)| (name.as_str(), graph));
    let lut = sculpt_latency::profile(settings, calibrate_on, &mut follow(&bar))?;
    bar.finish_and_clear();
    lut.save(out)?;
    print_table(out, &lut);
    Ok(())
}

fn latency_validate(
    run: &sculpt_campaign::latency_check::ValidateRun,
    json: bool,
) -> anyhow::Result<()> {
    // The figure's folder is checked before minutes of measuring, not after.
    for out in [run.figure, run.calibrated_out].into_iter().flatten() {
        check_out_dir(out)?;
    }
    let bar = counter(run.plans.saturating_mul(run.passes), "plan blocks");
    let v = sculpt_campaign::latency_check::validate(run, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}: {} random plans at batch {} on {} thread(s)",
        v.model,
        v.rows.len(),
        v.batch,
        v.threads
    );
    for s in v
        .lut
        .iter()
        .chain(v.lut_drift_adjusted.iter())
        .chain(std::iter::once(&v.roofline))
    {
        println!(
            "  {}: MAPE {:.1}%, {:.0}% within ±10%",
            s.model,
            s.mape,
            s.within_10pct * 100.0
        );
    }
    if let Some(d) = &v.host_drift {
        println!(
            "  the host ran at {:.2}× the table's reference time (median; {:.2}× to {:.2}×){}",
            d.median_ratio,
            d.min_ratio,
            d.max_ratio,
            d.linear_median_ratio
                .map(|r| format!(", {r:.2}× its Linear reference time"))
                .unwrap_or_default()
        );
    }
    if let Some(f) = run.figure {
        println!("figure: {}", f.display());
    }
    Ok(())
}

fn latency_measure(
    model: &Path,
    settings: &sculpt_latency::MeasureSettings,
    json: bool,
) -> anyhow::Result<()> {
    let graph = sculpt_nn::io::load(model)?;
    let m = sculpt_latency::measure(&graph, settings)?;
    if json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        println!(
            "{}: batch {} on {} thread{} ({}): {:.4} ms median, {:.4} ms p90, {:.4} ms min over {} runs",
            graph.spec.name,
            m.batch,
            m.threads,
            if m.threads == 1 { "" } else { "s" },
            m.isa,
            m.median_ms,
            m.p90_ms,
            m.min_ms,
            m.runs
        );
    }
    Ok(())
}

fn compress(run: &sculpt_campaign::CompressRun, json: bool) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::hidden();
    let mut started = false;
    let metrics = sculpt_campaign::compress_model(run, &mut |s| {
        if !started {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(s.epochs as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "fine-tuning epoch {pos}/{len} [{elapsed_precise}] {bar:30} {msg}",
            ) {
                bar.set_style(style);
            }
            started = true;
        }
        bar.set_position(s.epoch as u64);
        bar.set_message(format!("loss {:.4}", s.loss));
    })
    .map_err(|e| in_context(e, || format!("compressing {}", run.model.display())))?;
    bar.finish_and_clear();
    for w in &metrics.warnings {
        eprintln!("warning: {w}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&metrics)?);
    } else {
        println!(
            "passes: {}; fine-tuned {} epoch{} in {:.1} s (seed {})",
            if metrics.passes.is_empty() {
                "none".to_string()
            } else {
                metrics.passes.join(" > ")
            },
            metrics.finetune_epochs,
            if metrics.finetune_epochs == 1 {
                ""
            } else {
                "s"
            },
            metrics.finetune_seconds,
            metrics.seed
        );
        println!(
            "test accuracy {:.2}% (teacher {:.2}%, {:+.2} points; {:.2}% before fine-tuning), validation {:.2}%",
            metrics.accuracy * 100.0,
            metrics.teacher_accuracy * 100.0,
            (metrics.accuracy - metrics.teacher_accuracy) * 100.0,
            metrics.accuracy_before_finetune * 100.0,
            metrics.val_accuracy * 100.0
        );
        println!(
            "{} bytes ({:.1}x smaller than {}), {} params, {} nonzeros, {} FLOPs, {} BOPs",
            metrics.size_bytes,
            metrics.compression_ratio,
            metrics.teacher_size_bytes,
            metrics.params,
            metrics.nonzeros,
            metrics.flops,
            metrics.bops
        );
        println!("wrote {}", run.out.display());
    }
    Ok(())
}

/// One value of a swept knob, checked as the knob table checks it.
fn swept_value(knob: &str, text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    sculpt_campaign::sensitivity::check_value(knob, value)
}

fn prune_ratio(text: &str) -> Result<f64, String> {
    swept_value("prune", text)
}

fn sparsity(text: &str) -> Result<f64, String> {
    swept_value("sparsity", text)
}

fn bit_width(text: &str) -> Result<u32, String> {
    swept_value("bits", text).map(|b| b as u32)
}

fn sensitivity(
    run: &sculpt_campaign::sensitivity::SensitivityRun,
    json: bool,
) -> anyhow::Result<()> {
    let context = || format!("sensitivity of {}", run.model.display());
    let sweep = sculpt_campaign::sensitivity::SensitivitySweep::new(run).with_context(context)?;
    let bar = indicatif::ProgressBar::new(sweep.len() as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{pos}/{len} [{elapsed_precise}] {bar:30} {msg}")
    {
        bar.set_style(style);
    }
    let table = sweep
        .run(&mut |row| {
            bar.inc(1);
            bar.set_message(format!(
                "{} {} {}: {:+.2} points",
                row.layer,
                row.knob,
                row.value,
                -row.accuracy_drop * 100.0
            ));
        })
        .with_context(context)?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&table)?);
        return Ok(());
    }
    println!(
        "{} on {} (seed {}): validation accuracy {:.2}%, {} params, {} bytes",
        table.model,
        table.data,
        table.seed,
        table.accuracy * 100.0,
        table.params,
        table.size_bytes
    );
    println!("accuracy drop in points when only that layer is compressed (no fine-tuning):\n");
    print!("{}", sculpt_report::sensitivity_text(&table.rows));
    println!(
        "wrote {} and {}",
        table.table.display(),
        table.figure.display()
    );
    Ok(())
}

fn plan(path: &Path, trial: u64, dir: Option<PathBuf>, out: Option<PathBuf>) -> anyhow::Result<()> {
    let campaign = Campaign::load(path)?;
    let dir = dir.unwrap_or_else(|| PathBuf::from("reports").join(&campaign.name));
    let (plan, finetune) = sculpt_campaign::trial_plan(&campaign, &dir, trial)?;
    // Top-level keys of the plan come first, so the [finetune] table goes last.
    let text = format!(
        "# Trial {trial} of campaign `{}` ({}).\n{}\n[finetune]\nepochs = {}\nbatch_size = {}\nlearning_rate = {}\nweight_decay = {}\n",
        campaign.name,
        path.display(),
        toml::to_string(&plan)?,
        finetune.epochs,
        finetune.batch_size,
        finetune.learning_rate,
        finetune.weight_decay
    );
    match out {
        Some(out) => {
            std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn indicatif_bar(epochs: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(epochs as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "epoch {pos}/{len} [{elapsed_precise}] {bar:30} {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// The campaign log: opened (for appending) at its first line, so a run refused before
/// it starts leaves no log in a folder that is not its own. Lines that cannot be written
/// are dropped: the journal, not the log, is the record.
struct LazyLog {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl std::io::Write for LazyLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() {
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
        }
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// A latency limit: a finite number of milliseconds above 0.
fn positive_ms(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "`{text}` is not a latency in ms above 0 (e.g. 0.5)"
        )),
    }
}

/// An accuracy limit: a fraction (0.985) or a percentage (98.5), returned as a fraction.
fn accuracy_limit(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) if v > 1.0 && v <= 100.0 => Ok(v / 100.0),
        _ => Err(format!(
            "`{text}` is not an accuracy: give a fraction (0.985) or a percentage (98.5)"
        )),
    }
}

/// Minutes in a duration such as `8h`, `90m`, `1h30m` or `45s`.
fn parse_duration_minutes(text: &str) -> Result<f64, String> {
    let mut minutes = 0.0;
    let mut number = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}`: expected a duration such as 8h, 90m, 1h30m or 45s"))?;
        minutes += match c {
            'h' => value * 60.0,
            'm' => value,
            's' => value / 60.0,
            _ => return Err(format!("`{text}`: unknown unit `{c}` (use h, m or s)")),
        };
        number.clear();
        any = true;
    }
    if !number.is_empty() || !any || minutes <= 0.0 {
        return Err(format!(
            "`{text}`: expected a positive duration with units, such as 8h, 90m, 1h30m or 45s"
        ));
    }
    Ok(minutes)
}

/// The flags of `sculpt run` that override the campaign file.
struct RunFlags {
    force: bool,
    time_budget: Option<f64>,
    trials: Option<usize>,
    workers: Option<usize>,
    seed: Option<u64>,
}

/// The default number of workers: one per core, each on one thread. Measured on 2 cores,
/// 2 workers of 1 thread ran 1.5x (quickstart) and 1.9x (mnist-lenet300) the trials per
/// minute of 1 worker of 2 threads (benches/issue9_acceptance.sh, step 1).
fn default_workers() -> usize {
    sculpt_runtime::cores().max(1)
}

/// Starts `sculpt worker DIR` as a child, on its share of the cores, logging into
/// DIR/work/worker-K.log.
fn launch_worker(dir: &Path, k: usize, threads: usize) -> std::io::Result<std::process::Child> {
    let exe = std::env::current_exe()?;
    let log_path = dir.join("work").join(format!("worker-{k}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    std::process::Command::new(exe)
        .arg("worker")
        .arg(dir)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

fn worker(dir: &Path) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(INTERRUPTED);
        }
    })
    .context("installing the Ctrl-C handler")?;
    let outcome = sculpt_campaign::work(dir, &stop)
        .map_err(|e| in_context(e, || format!("worker in {}", dir.display())))?;
    eprintln!("worker {}: {} trials", outcome.id, outcome.trials);
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::process::exit(INTERRUPTED);
    }
    Ok(())
}

fn run(path: &Path, out: Option<PathBuf>, flags: &RunFlags) -> anyhow::Result<()> {
    let mut campaign = Campaign::load(path)?;
    // Command-line flags override the file; only the seed changes the campaign's
    // identity.
    if let Some(minutes) = flags.time_budget {
        campaign.max_minutes = Some(minutes);
    }
    if let Some(n) = flags.trials {
        anyhow::ensure!(n >= 1, "--trials must be at least 1");
        campaign.trials = n;
    }
    if let Some(seed) = flags.seed {
        campaign.set_seed(seed);
    }
    let workers = flags
        .workers
        .or(campaign.workers)
        .unwrap_or_else(default_workers);
    anyhow::ensure!(workers >= 1, "--workers must be at least 1");
    let threads = (sculpt_runtime::cores() / workers).max(1);
    let out = out.unwrap_or_else(|| PathBuf::from("reports").join(&campaign.name));
    // The executor's events (run start and end, every trial, warnings) go to
    // DIR/campaign.log.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(LazyLog {
            path: out.join("campaign.log"),
            file: None,
        }))
        .with_ansi(false)
        .with_target(false)
        .try_init();
    let mut progress = ProgressBar::new();
    // First Ctrl-C: finish and store the trial in flight, write the report, stop.
    // Second: stop at once (stored trials are safe either way).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(INTERRUPTED);
        }
        eprintln!(
            "\ninterrupted: finishing the current trial, or the teacher's current epoch (Ctrl-C again to stop now)"
        );
    })
    .context("installing the Ctrl-C handler")?;
    let launch = move |dir: &Path, k: usize| launch_worker(dir, k, threads);
    let outcome = sculpt_campaign::run_opts(
        &campaign,
        &out,
        &mut [&mut progress],
        &stop,
        &sculpt_campaign::RunOptions {
            force: flags.force,
            workers,
            launch: Some(&launch),
        },
    )
    .map_err(|e| in_context(e, || format!("campaign {}", path.display())))?;
    if let Some(reason) = &outcome.stopped_early {
        println!("stopped early: {reason}");
    }
    let t = &outcome.teacher;
    println!(
        "\nteacher {}: validation accuracy {:.2}%, latency {:.4} ms, {} bytes",
        t.model,
        t.accuracy * 100.0,
        t.latency_ms,
        t.size_bytes
    );
    let count = |state: sculpt_store::TrialState| {
        outcome.trials.iter().filter(|t| t.state == state).count()
    };
    let screened = count(sculpt_store::TrialState::Infeasible);
    let diverged = count(sculpt_store::TrialState::Diverged);
    let stopped = count(sculpt_store::TrialState::Stopped);
    println!(
        "{} trials ({} new, {} failed){}{}{}",
        outcome.trials.len(),
        outcome.new_trials,
        count(sculpt_store::TrialState::Failed),
        if screened > 0 {
            format!("; {screened} screened out before fine-tuning as over the latency budget")
        } else {
            String::new()
        },
        if diverged > 0 {
            format!("; {diverged} diverged in fine-tuning")
        } else {
            String::new()
        },
        if stopped > 0 {
            format!("; {stopped} stopped early by successive halving")
        } else {
            String::new()
        }
    );
    print_front(&outcome.trials, &outcome.columns, t);
    if let Some(budget) = outcome.budget_ms {
        print_best(&outcome.trials, &outcome.columns, t, budget);
    }
    println!(
        "\nwrote {} and {}",
        outcome.summary.display(),
        outcome.figure.display()
    );
    println!("trials: {}", out.join("trials.parquet").display());
    println!(
        "the stakeholder report, with the front re-scored on the test split: sculpt report {}",
        out.display()
    );
    // Interrupted (Ctrl-C or SIGTERM): the stored trials and the report are whole, but the
    // campaign is not finished; scripts can tell by the status.
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::process::exit(INTERRUPTED);
    }
    Ok(())
}

/// The exit status of a campaign stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells do).
const INTERRUPTED: i32 = 130;

fn describe(t: &TrialRecord, columns: &[String]) -> String {
    sculpt_report::configuration(columns, t)
}

fn print_front(trials: &[TrialRecord], columns: &[String], teacher: &sculpt_store::TeacherRecord) {
    print_front_by(trials, columns, teacher, false)
}

/// The front of accuracy against latency, or against size for a campaign that traded
/// accuracy for bytes.
fn print_front_by(
    trials: &[TrialRecord],
    columns: &[String],
    teacher: &sculpt_store::TeacherRecord,
    by_size: bool,
) {
    println!(
        "\nPareto front (accuracy against {}):",
        if by_size { "size" } else { "latency" }
    );
    println!(
        "{:>6} {:>9} {:>12} {:>10} {:>8}  configuration",
        "trial", "accuracy", "latency(ms)", "bytes", "smaller"
    );
    let front = if by_size {
        sculpt_report::select::pareto_by(trials, |t| t.size_bytes.map(|b| b as f64))
    } else {
        sculpt_report::pareto_indices(trials)
    };
    for i in front {
        let t = &trials[i];
        let size = t.size_bytes.unwrap_or(0);
        println!(
            "{:>6} {:>8.2}% {:>12.4} {:>10} {:>7.1}x  {}",
            t.trial_id,
            t.accuracy.unwrap_or(0.0) * 100.0,
            t.latency_ms.unwrap_or(f64::NAN),
            size,
            teacher.size_bytes as f64 / size.max(1) as f64,
            describe(t, columns)
        );
    }
}

fn print_best(
    trials: &[TrialRecord],
    columns: &[String],
    teacher: &sculpt_store::TeacherRecord,
    budget: f64,
) {
    match sculpt_report::best_under_budget(trials, budget) {
        Some(t) => println!(
            "\nbest under the {budget} ms budget: trial {}: accuracy {:.2}% ({:+.2} points), latency {:.4} ms, {} bytes, {}",
            t.trial_id,
            t.accuracy.unwrap_or(0.0) * 100.0,
            (t.accuracy.unwrap_or(0.0) - teacher.accuracy) * 100.0,
            t.latency_ms.unwrap_or(f64::NAN),
            t.size_bytes.unwrap_or(0),
            describe(t, columns)
        ),
        None => println!("\nno completed trial meets the {budget} ms budget"),
    }
}

fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let s = sculpt_campaign::status::status(dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "{}: {} of {} trials stored ({} complete, {} failed, {} infeasible, {} diverged, {} stopped by halving); {}",
        s.campaign,
        s.stored,
        s.budget.map_or("?".to_string(), |b| b.to_string()),
        s.complete,
        s.failed,
        s.infeasible,
        s.diverged,
        s.stopped,
        if s.active {
            format!(
                "running for {:.0} s ({} in flight, {} queued), about {:.0} s left",
                s.elapsed_s.unwrap_or(0.0),
                s.running,
                s.queued,
                s.eta_s.unwrap_or(0.0)
            )
        } else {
            "not running".to_string()
        }
    );
    if s.abandoned > 0 {
        println!(
            "{} trials abandoned by workers that stopped; they are queued again{}",
            s.abandoned,
            if s.active {
                ""
            } else {
                " when the campaign resumes"
            }
        );
    }
    if let Some(h) = s.hypervolume {
        println!("best hypervolume: {h:.4}");
    }
    if let Some(t) = &s.teacher {
        print_front(&s.trials, &s.columns, t);
    }
    Ok(())
}

fn report(
    dirs: &[PathBuf],
    budget_ms: Option<f64>,
    out: Option<PathBuf>,
    test: bool,
    campaign: Option<&Path>,
) -> anyhow::Result<()> {
    let mut loaded = Vec::new();
    for dir in dirs {
        require_campaign_folder(dir)?;
        let mut c = sculpt_campaign::report::load_campaign(dir, budget_ms)?;
        if test {
            let bar = counter(0, "rebuilt on the test split");
            let warnings = c.score_held_out(campaign, &mut |done, total, id| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                if id != u64::MAX {
                    bar.set_message(format!("trial {id}"));
                }
            })
            .with_context(|| {
                format!(
                    "scoring the Pareto configurations of {} on the test split (--no-test skips this)",
                    dir.display()
                )
            })?;
            bar.finish_and_clear();
            for w in warnings {
                eprintln!("warning: {w}");
            }
        }
        // The folder's own summary.md and pareto.svg, as `run` writes them.
        sculpt_report::write_report(
            dir,
            &sculpt_report::Report {
                campaign: &c.meta.name,
                columns: &c.meta.columns,
                trials: &c.trials,
                teacher: &c.teacher,
                budget_ms: c.budget_ms,
            },
        )?;
        loaded.push(c);
    }
    let out = out.unwrap_or_else(|| dirs[0].clone());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let views: Vec<_> = loaded.iter().map(|c| c.view()).collect();
    let files = sculpt_report::write_html_report(&out, &views)?;
    if let Some(c) = loaded.first() {
        print_front_by(
            &c.trials,
            &c.meta.columns,
            &c.teacher,
            c.objective == sculpt_report::figures::Cost::Size,
        );
        if !c.heldout.is_empty() {
            println!("\nheld-out test accuracy of the Pareto configurations:");
            for (id, (val, test)) in &c.heldout {
                println!(
                    "  trial {id:>4}: validation {:.2}%, test {:.2}% (test − validation: {:+.2} points)",
                    val * 100.0,
                    test * 100.0,
                    (test - val) * 100.0
                );
            }
        }
    }
    println!(
        "\nwrote {}, {} and {} figure{} (SVG and PNG) in {}",
        files.html.display(),
        files.markdown.display(),
        files.figures.len(),
        if files.figures.len() == 1 { "" } else { "s" },
        out.join("figures").display()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn select(
    dir: &Path,
    max_latency_ms: Option<f64>,
    min_accuracy: Option<f64>,
    max_size_bytes: Option<u64>,
    prefer: &str,
    test: bool,
    campaign: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    use sculpt_report::{Constraints, Prefer, Selection};
    require_campaign_folder(dir)?;
    let prefer = Prefer::parse(prefer)
        .with_context(|| format!("--prefer `{prefer}`: use accuracy, size or latency"))?;
    let (meta, trials) = Store::read(dir)?;
    let teacher = Store::read_teacher(dir)?;
    let limits = Constraints {
        max_latency_ms: max_latency_ms
            .or_else(|| sculpt_campaign::report::stored_budget(&meta, dir)),
        min_accuracy,
        max_size_bytes,
    };
    let describe_limits = || {
        let mut parts = Vec::new();
        if let Some(l) = limits.max_latency_ms {
            parts.push(format!("latency ≤ {l} ms"));
        }
        if let Some(a) = limits.min_accuracy {
            parts.push(format!("validation accuracy ≥ {:.2}%", a * 100.0));
        }
        if let Some(s) = limits.max_size_bytes {
            parts.push(format!("size ≤ {s} B"));
        }
        if parts.is_empty() {
            "no limit".to_string()
        } else {
            parts.join(", ")
        }
    };
    match sculpt_report::select(&trials, &limits, prefer, 3) {
        Selection::Infeasible { nearest } => {
            let complete = trials.iter().filter(|t| t.is_complete()).count();
            let mut message = format!(
                "no complete trial of {} meets {} ({complete} complete trials){}",
                dir.display(),
                describe_limits(),
                if complete > 0 { ". Nearest:" } else { "" }
            );
            for t in nearest {
                message.push_str(&format!(
                    "
  trial {}: {:.2}%, {:.4} ms, {} B; {}",
                    t.trial_id,
                    t.accuracy.unwrap_or(0.0) * 100.0,
                    t.latency_ms.unwrap_or(f64::NAN),
                    t.size_bytes.unwrap_or(0),
                    limits.violations(t).join(", ")
                ));
            }
            anyhow::bail!(message)
        }
        Selection::Chosen {
            chosen,
            runners_up,
            feasible,
        } => {
            let mut ids: Vec<u64> = vec![chosen.trial_id];
            ids.extend(runners_up.iter().map(|t| t.trial_id));
            let heldout: std::collections::BTreeMap<u64, f64> = if test {
                let cache = sculpt_campaign::rebuild::held_out(dir, campaign, &ids, &mut |_, _, _| {})
                    .with_context(|| {
                        format!(
                            "rebuilding the chosen trials of {} to score them on the test split (--no-test skips this)",
                            dir.display()
                        )
                    })?;
                for w in &cache.warnings {
                    eprintln!("warning: {w}");
                }
                cache
                    .trials
                    .iter()
                    .map(|(k, h)| (*k, h.test_accuracy))
                    .collect()
            } else {
                sculpt_campaign::rebuild::HeldOutCache::read(dir, &meta.fingerprint)
                    .trials
                    .iter()
                    .map(|(k, h)| (*k, h.test_accuracy))
                    .collect()
            };
            let why = format!(
                "the {} of the {feasible} complete trials that meet {}",
                match prefer {
                    Prefer::Accuracy => "most accurate on validation",
                    Prefer::Size => "smallest",
                    Prefer::Latency => "fastest",
                },
                describe_limits()
            );
            let entry = |t: &TrialRecord| {
                serde_json::json!({
                    "trial_id": t.trial_id,
                    "accuracy": t.accuracy,
                    "test_accuracy": heldout.get(&t.trial_id),
                    "latency_ms": t.latency_ms,
                    "size_bytes": t.size_bytes,
                    "params": t.params,
                })
            };
            let mut toml_text = format!(
                "# Written by `sculpt select`: {why}.\n# `sculpt export {} --selected --out DIR` writes this trial's model.\ntrial_id = {}\ncampaign = {:?}\nprefer = {:?}\n",
                dir.display(),
                chosen.trial_id,
                meta.name,
                prefer.as_str()
            );
            if let Some(l) = limits.max_latency_ms {
                toml_text.push_str(&format!("max_latency_ms = {l:?}\n"));
            }
            if let Some(a) = limits.min_accuracy {
                toml_text.push_str(&format!("min_accuracy = {a:?}\n"));
            }
            if let Some(b) = limits.max_size_bytes {
                toml_text.push_str(&format!("max_size_bytes = {b}\n"));
            }
            toml_text.push_str(&format!(
                "accuracy = {:?}\nlatency_ms = {:?}\nsize_bytes = {}\n",
                chosen.accuracy.unwrap_or(f64::NAN),
                chosen.latency_ms.unwrap_or(f64::NAN),
                chosen.size_bytes.unwrap_or(0)
            ));
            if let Some(t) = heldout.get(&chosen.trial_id) {
                toml_text.push_str(&format!("test_accuracy = {t:?}\n"));
            }
            toml_text.push_str("\n[params]\n");
            for (k, v) in &chosen.params {
                toml_text.push_str(&format!("{k} = {v}\n"));
            }
            let path = dir.join(sculpt_campaign::rebuild::SELECTED_FILE);
            sculpt_nn::io::write_atomic(&path, toml_text.as_bytes())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "chosen": entry(chosen),
                        "why": why,
                        "feasible": feasible,
                        "runners_up": runners_up.iter().map(|t| entry(t)).collect::<Vec<_>>(),
                        "selected_file": path,
                    }))?
                );
                return Ok(());
            }
            let line = |t: &TrialRecord| {
                format!(
                    "trial {}: validation {:.2}% ({:+.2} points against the teacher's){}, {:.4} ms ({:.1}× faster), {} B ({:.1}× smaller)",
                    t.trial_id,
                    t.accuracy.unwrap_or(0.0) * 100.0,
                    (t.accuracy.unwrap_or(0.0) - teacher.accuracy) * 100.0,
                    heldout
                        .get(&t.trial_id)
                        .map(|a| format!(", test {:.2}%", a * 100.0))
                        .unwrap_or_default(),
                    t.latency_ms.unwrap_or(f64::NAN),
                    teacher.latency_ms / t.latency_ms.unwrap_or(f64::NAN),
                    t.size_bytes.unwrap_or(0),
                    teacher.size_bytes as f64 / t.size_bytes.unwrap_or(1).max(1) as f64
                )
            };
            println!("chose {}", line(chosen));
            println!("  why: {why}");
            println!("  configuration: {}", describe(chosen, &meta.columns));
            if !runners_up.is_empty() {
                println!("runners-up:");
                for t in &runners_up {
                    println!("  {}", line(t));
                }
            }
            println!("wrote {}", path.display());
            Ok(())
        }
    }
}

fn export(
    dir: &Path,
    trial: Option<u64>,
    out: &Path,
    campaign: Option<&Path>,
    onnx: bool,
    json: bool,
) -> anyhow::Result<()> {
    require_campaign_folder(dir)?;
    let trial = match trial {
        Some(t) => t,
        None => sculpt_campaign::rebuild::selected_trial(dir)?,
    };
    sculpt_campaign::rebuild::check_export_out(dir, out)?;
    eprintln!("rebuilding trial {trial} of {}", dir.display());
    let bar = indicatif::ProgressBar::new_spinner();
    let metrics = sculpt_campaign::rebuild::export(dir, campaign, trial, out, onnx, &mut |s| {
        bar.set_message(format!("fine-tuning epoch {}, loss {:.4}", s.epoch, s.loss));
        bar.tick();
    })?;
    bar.finish_and_clear();
    for w in &metrics.warnings {
        eprintln!("warning: {w}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&metrics)?);
        return Ok(());
    }
    println!(
        "trial {trial}: validation {:.2}% (stored {:.2}%), test {:.2}% (teacher {:.2}%)",
        metrics.val_accuracy * 100.0,
        metrics.stored_accuracy * 100.0,
        metrics.test_accuracy * 100.0,
        metrics.teacher_test_accuracy * 100.0
    );
    println!(
        "size {} B as counted ({} B stored by the trial), model.safetensors {} B; latency {:.4} ms measured (batch 1, 1 thread), {:.4} ms by the campaign's {}",
        metrics.size_bytes,
        metrics.stored_size_bytes.unwrap_or(0),
        metrics.file_bytes,
        metrics.latency_ms,
        metrics.stored_latency_ms.unwrap_or(f64::NAN),
        metrics.latency_model
    );
    if let Some(b) = metrics.onnx_bytes {
        println!(
            "model.onnx: {b} B (opset 13; quantized weights as QDQ, widths under 8 bits in 8-bit containers); it takes the inputs {}",
            metrics
                .preprocessing
                .as_ref()
                .map(|p| p.describe())
                .unwrap_or_else(|| "sculpt standardises the data with".into())
        );
    }
    println!(
        "wrote {}; check it with: sculpt eval --model {} --data {} --split val",
        out.display(),
        out.display(),
        metrics.data
    );
    Ok(())
}
