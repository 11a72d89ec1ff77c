//! End-to-end tests of the `sculpt` binary on the embedded digits data: a whole (small)
//! campaign, resuming it, reproducibility, failed trials, and input errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SMALL: &str = r#"
name = "small"
seed = 7

[data]
source = "digits"

[teacher]
model = "mlp"
epochs = 15

[finetune]
epochs = 2

[search]
strategy = "nsga2"
trials = 6
population = 4
workers = 1          # in process: the tests compare runs trial for trial

[search.temperature]
low = 1.0
high = 8.0
log = true

[search.alpha]
low = 0.1
high = 0.9

[search.prune]
layers = "fc*"
low = 0.0
high = 0.8

[search.bits]
layers = "*"
choices = [2, 3, 4, 5, 6, 8]

[latency]
profile = "epyc-zen4-1core"
budget_ms = 0.012
"#;

fn sculpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sculpt"))
        .args(args)
        .output()
        .expect("the sculpt binary runs")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(campaign: &Path, out: &Path) -> Output {
    let output = sculpt(&[
        "run",
        campaign.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "sculpt run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Journal lines without the wall-clock duration, which legitimately differs.
fn trials_without_time(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("trials.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("duration_s");
            v
        })
        .collect()
}

#[test]
fn campaign_runs_resumes_and_reproduces() {
    let tmp = tempfile::tempdir().unwrap();
    let campaign = write(tmp.path(), "small.toml", SMALL);
    let out = tmp.path().join("out");
    let first = run(&campaign, &out);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("Pareto front"), "{stdout}");
    assert!(
        stdout.contains("best under the 0.012 ms budget"),
        "{stdout}"
    );
    for file in [
        "trials.parquet",
        "trials.jsonl",
        "pareto.svg",
        "summary.md",
        "teacher.json",
        "teacher/model.safetensors",
        "runs.jsonl",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    // The run is recorded: what ran, from which build, where and when.
    let runs = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = runs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{runs}");
    assert_eq!(lines[0]["event"], "start");
    // The log has the run's start and end and one line per trial.
    let log = std::fs::read_to_string(out.join("campaign.log")).unwrap();
    assert!(
        log.contains("run started") && log.contains("run ended"),
        "{log}"
    );
    assert_eq!(log.matches("trial stored").count(), 6, "{log}");
    let record = lines[1].clone();
    assert_eq!(record["event"], "end");
    for key in [
        "campaign",
        "fingerprint",
        "sculpt_version",
        "git_commit",
        "host",
        "seed",
        "started",
        "ended",
    ] {
        assert!(!record[key].is_null(), "{key} missing: {record}");
    }
    assert_eq!(record["seed"], 7);
    assert_eq!(record["trials_after"], 6);
    assert!(record["ended"].as_f64().unwrap() >= record["started"].as_f64().unwrap());

    // The frame on disk has the documented columns and one row per trial.
    let file = std::fs::File::open(out.join("trials.parquet")).unwrap();
    use polars::prelude::SerReader;
    let frame = polars::prelude::ParquetReader::new(file).finish().unwrap();
    let names: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "trial_id",
            "state",
            "strategy",
            "generation",
            "temperature",
            "alpha",
            "prune_fc1",
            "prune_fc2",
            "bits_fc1",
            "bits_fc2",
            "bits_fc3",
            "accuracy",
            "latency_ms",
            "size_bytes",
            "params",
            "nonzeros",
            "flops",
            "bops",
            "duration_s",
            "error",
            "fidelity",
            "rungs"
        ]
    );
    assert_eq!(frame.height(), 6);
    let accuracy = frame.column("accuracy").unwrap().f64().unwrap();
    assert_eq!(accuracy.null_count(), 0);
    let values: Vec<f64> = accuracy.into_no_null_iter().collect();
    assert!(values.iter().all(|a| (0.0..=1.0).contains(a)), "{values:?}");

    let teacher: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("teacher.json")).unwrap()).unwrap();
    for field in ["accuracy", "latency_ms", "size_bytes", "params", "flops"] {
        assert!(teacher[field].is_number(), "teacher.json lacks {field}");
    }
    assert_eq!(teacher["size_bytes"], 4 * 50_826);

    // Extending the campaign resumes it: the teacher is reused, the stored trials are
    // untouched, and the result equals an uninterrupted run of the longer campaign, so the
    // strategy rebuilt from history proposed the same points.
    let before = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    let longer = write(
        tmp.path(),
        "small.toml",
        &SMALL.replace("trials = 6", "trials = 10"),
    );
    let second = run(&longer, &out);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("reusing the teacher"), "{stderr}");
    let after = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    assert!(after.starts_with(&before));
    assert_eq!(after.lines().count(), 10);

    let fresh = tmp.path().join("fresh");
    run(&longer, &fresh);
    assert_eq!(trials_without_time(&out), trials_without_time(&fresh));

    // A different campaign may not write into this directory.
    let other = write(
        tmp.path(),
        "other.toml",
        &SMALL.replace("seed = 7", "seed = 8"),
    );
    let refused = sculpt(&[
        "run",
        other.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("holds trials of campaign"), "{message}");
    // The refusal says what changed, and how to go on anyway.
    assert!(
        message.contains("what changed: ") && message.contains(", seed,"),
        "{message}"
    );
    assert!(message.contains("--force"), "{message}");
    assert_eq!(
        std::fs::read_to_string(out.join("trials.jsonl")).unwrap(),
        after
    );

    // Selection under a budget, as JSON.
    let selected = sculpt(&[
        "select",
        out.to_str().unwrap(),
        "--budget-ms",
        "0.012",
        "--json",
    ]);
    assert!(
        selected.status.success(),
        "{}",
        String::from_utf8_lossy(&selected.stderr)
    );
    let best: serde_json::Value = serde_json::from_slice(&selected.stdout).unwrap();
    assert!(best["chosen"]["latency_ms"].as_f64().unwrap() <= 0.012);
    let none = sculpt(&["select", out.to_str().unwrap(), "--budget-ms", "0.0000001"]);
    assert_eq!(none.status.code(), Some(1));

    // A trial's plan, printed as a plan file, holds the trial's stored configuration and
    // rebuilds it with `sculpt compress`.
    let trial = &trials_without_time(&out)[3];
    let plan_file = tmp.path().join("trial3.toml");
    let printed = sculpt(&[
        "plan",
        longer.to_str().unwrap(),
        "--trial",
        "3",
        "--dir",
        out.to_str().unwrap(),
        "--out",
        plan_file.to_str().unwrap(),
    ]);
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let plan: toml::Table = std::fs::read_to_string(&plan_file)
        .unwrap()
        .parse()
        .unwrap();
    for layer in ["fc1", "fc2", "fc3"] {
        assert_eq!(
            plan["layers"][layer]["bits"].as_integer().unwrap(),
            trial["params"][format!("bits_{layer}")].as_i64().unwrap()
        );
    }
    assert_eq!(
        plan["layers"]["fc1"]["prune"].as_float().unwrap(),
        trial["params"]["prune_fc1"].as_f64().unwrap()
    );
    assert_eq!(
        plan["distill"]["temperature"].as_float().unwrap(),
        trial["params"]["temperature"].as_f64().unwrap()
    );
    assert_eq!(plan["finetune"]["epochs"].as_integer(), Some(2));
    let rebuilt = sculpt(&[
        "compress",
        "--model",
        out.join("teacher").to_str().unwrap(),
        "--data",
        "digits",
        "--seed",
        "7",
        "--plan",
        plan_file.to_str().unwrap(),
        "--out",
        tmp.path().join("rebuilt").to_str().unwrap(),
        "--json",
    ]);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let metrics: serde_json::Value = serde_json::from_slice(&rebuilt.stdout).unwrap();
    assert_eq!(metrics["params"], trial["num_params"]);
    let missing = sculpt(&[
        "plan",
        longer.to_str().unwrap(),
        "--trial",
        "99",
        "--dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no trial 99"));
    // A changed campaign file would rebuild other plans than its trials ran: refused.
    let changed = sculpt(&[
        "plan",
        other.to_str().unwrap(),
        "--trial",
        "3",
        "--dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(changed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&changed.stderr).contains("holds trials of campaign"),
        "{}",
        String::from_utf8_lossy(&changed.stderr)
    );
}

/// A fine-tuning rate of 1e6 wrecks every student without a NaN: the trials are stored as
/// diverged, with the reason, never as complete, and the campaign goes on.
#[test]
fn diverged_trials_are_recorded_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let text = SMALL
        .replace(
            "[finetune]\nepochs = 2",
            "[finetune]\nepochs = 2\nlearning_rate = 1e6",
        )
        .replace("trials = 6", "trials = 3")
        .replace("strategy = \"nsga2\"", "strategy = \"random\"");
    assert!(text.contains("learning_rate = 1e6"));
    let campaign = write(tmp.path(), "wild.toml", &text);
    let out = tmp.path().join("out");
    let output = run(&campaign, &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let trials = trials_without_time(&out);
    assert_eq!(trials.len(), 3);
    assert!(
        trials.iter().all(|t| t["state"] != "complete"),
        "{trials:?}"
    );
    let diverged: Vec<_> = trials.iter().filter(|t| t["state"] == "diverged").collect();
    assert!(!diverged.is_empty(), "{trials:?}");
    for t in diverged {
        assert!(t["error"].as_str().unwrap().starts_with("diverged:"), "{t}");
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("diverged in fine-tuning"), "{summary}");
}

/// Ctrl-C (SIGINT) after the first trial: the trial in flight is finished and stored, the
/// report is written, and the status says the campaign was interrupted (130), not finished.
#[test]
fn an_interrupted_campaign_keeps_its_trials_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let text = SMALL.replace("trials = 6", "trials = 400");
    let campaign = write(tmp.path(), "long.toml", &text);
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sculpt"))
        .args([
            "run",
            campaign.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let journal = out.join("trials.jsonl");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&journal).map_or(0, |t| t.lines().count()) < 1 {
        assert!(
            started.elapsed().as_secs() < 120,
            "no trial after two minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    let trials = trials_without_time(&out);
    assert!(!trials.is_empty() && trials.len() < 400, "{}", trials.len());
    assert!(out.join("summary.md").is_file());
}

/// `--trials` overrides the file; a `STOP` file in the output folder ends the campaign
/// cleanly (status 0) after the trial in flight, and is cleared by the next run.
#[test]
fn trials_flag_and_stop_file() {
    let tmp = tempfile::tempdir().unwrap();
    let text = SMALL.replace("trials = 6", "trials = 400");
    let campaign = write(tmp.path(), "long.toml", &text);
    let out = tmp.path().join("out");
    let short = sculpt(&[
        "run",
        campaign.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--trials",
        "2",
        "--time-budget",
        "1h30m",
    ]);
    assert!(
        short.status.success(),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    assert_eq!(trials_without_time(&out).len(), 2);
    // Status after the run: what is stored, against this run's budget; nothing running.
    let status = sculpt(&["status", out.to_str().unwrap(), "--json"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["stored"], 2);
    assert_eq!(v["budget"], 2);
    assert_eq!(v["running"], 0);
    let states = ["complete", "failed", "infeasible", "diverged"];
    assert_eq!(
        states.iter().map(|k| v[k].as_u64().unwrap()).sum::<u64>(),
        2
    );
    assert!(v["hypervolume"].as_f64().is_some());
    let bad = sculpt(&["run", campaign.to_str().unwrap(), "--time-budget", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("8h"));
    // A stale STOP is cleared; one that appears during the run stops it.
    std::fs::write(out.join("STOP"), "").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sculpt"))
        .args([
            "run",
            campaign.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let journal = out.join("trials.jsonl");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&journal).map_or(0, |t| t.lines().count()) < 3 {
        assert!(
            started.elapsed().as_secs() < 120,
            "no new trial after two minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // While it runs, status says so.
    let during = sculpt(&["status", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&during.stdout).unwrap();
    assert_eq!(v["running"], 1, "{v}");
    assert_eq!(v["budget"], 400);
    std::fs::write(out.join("STOP"), "").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let n = trials_without_time(&out).len();
    assert!((3..400).contains(&n), "{n}");
}

/// An output path that is a file is refused with a message that says so.
#[test]
fn an_output_path_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let campaign = write(tmp.path(), "small.toml", SMALL);
    let file = tmp.path().join("taken");
    std::fs::write(&file, "x").unwrap();
    let out = sculpt(&[
        "run",
        campaign.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("is a file, not a folder"), "{message}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn failed_trials_are_recorded_and_the_campaign_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    // A teacher whose logits are NaN: every distillation loss is NaN.
    let mut graph = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
    // (In the output layer: a ReLU would turn a NaN hidden unit into 0.)
    let nan = candle_core::Tensor::from_vec(vec![f32::NAN; 10], 10, &sculpt_nn::device()).unwrap();
    graph.params.insert("fc3.bias".into(), nan);
    sculpt_nn::io::save(&graph, &tmp.path().join("teacher")).unwrap();
    let text = SMALL
        .replace("model = \"mlp\"", "weights = \"teacher\"")
        .replace("trials = 6", "trials = 3")
        .replace("strategy = \"nsga2\"", "strategy = \"random\"");
    let campaign = write(tmp.path(), "nan.toml", &text);
    let out = tmp.path().join("out");
    let output = run(&campaign, &out);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("3 trials (3 new, 3 failed)"), "{stdout}");
    let trials = trials_without_time(&out);
    assert_eq!(trials.len(), 3);
    for t in &trials {
        assert_eq!(t["state"], "failed");
        assert!(
            t["error"].as_str().unwrap().contains("loss became NaN"),
            "{t}"
        );
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("## Failed trials"), "{summary}");
}

#[test]
fn malformed_campaign_names_line_and_field_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = SMALL.replace("trials = 6", "trials = \"six\"");
    let line = bad.lines().position(|l| l.contains("\"six\"")).unwrap() + 1;
    let path = write(tmp.path(), "bad.toml", &bad);
    let output = sculpt(&[
        "run",
        path.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("bad.toml:{line}:")), "{stderr}");
    assert!(stderr.contains("search.trials"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{stderr}"
    );
    assert!(
        !tmp.path().join("o").exists(),
        "nothing is written for a bad campaign"
    );

    let bad = SMALL.replace("low = 0.1", "low = 0.95");
    let line = bad.lines().position(|l| l.contains("high = 0.9")).unwrap() + 1;
    let path = write(tmp.path(), "range.toml", &bad);
    let output = sculpt(&["run", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("range.toml:{line}:")) && stderr.contains("search.alpha.high"),
        "{stderr}"
    );

    // A missing file is not a malformed one: status 1, and the path is named.
    let output = sculpt(&["run", "no/such/campaign.toml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no/such/campaign.toml"));
}

#[test]
fn train_writes_a_loadable_model_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mlp");
    let output = sculpt(&[
        "train",
        "--model",
        "mlp",
        "--data",
        "digits",
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "20",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let accuracy = metrics["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9 && accuracy <= 1.0, "{accuracy}");
    assert_eq!(metrics["params"], 50_826);
    let graph = sculpt_nn::io::load(&out).unwrap();
    let splits = sculpt_data::load("digits", 42).unwrap();
    let again = sculpt_nn::accuracy(&graph, &splits.test).unwrap();
    assert!((again - accuracy).abs() < 1e-12);

    let output = sculpt(&[
        "train",
        "--model",
        "resnet-1000",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown model `resnet-1000`"));
}

/// A tiny MNIST-shaped IDX folder: `n` training and `n / 4` test images of 28x28, whose
/// class is written into the pixels so that a network can learn it.
fn synthetic_idx(dir: &Path, n: usize) {
    let write = |images: &str, labels: &str, count: usize| {
        let mut pixels = Vec::with_capacity(count * 784);
        let mut ys = Vec::with_capacity(count);
        for i in 0..count {
            let class = (i % 10) as u8;
            ys.push(class);
            for p in 0..784 {
                let row = p / 28;
                pixels.push(if row / 3 == class as usize {
                    200
                } else {
                    ((i * 31 + p * 7) % 40) as u8
                });
            }
        }
        std::fs::write(
            dir.join(images),
            sculpt_data::idx::encode(&[count, 28, 28], &pixels),
        )
        .unwrap();
        std::fs::write(dir.join(labels), sculpt_data::idx::encode(&[count], &ys)).unwrap();
    };
    write("train-images-idx3-ubyte", "train-labels-idx1-ubyte", n);
    write("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", n / 4);
}

#[test]
fn lenet5_trains_on_idx_data_and_inspect_and_eval_report_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("idx");
    std::fs::create_dir(&data).unwrap();
    synthetic_idx(&data, 400);
    let spec = format!("idx:{}", data.display());
    let out = tmp.path().join("lenet5");
    let output = sculpt(&[
        "train",
        "--model",
        "lenet-5",
        "--data",
        &spec,
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "3",
        "--optimizer",
        "sgd",
        "--learning-rate",
        "0.05",
        "--schedule",
        "step",
        "--step-every",
        "2",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    for field in [
        "test_accuracy",
        "epochs",
        "seconds_per_epoch",
        "samples_per_second",
        "params",
        "size_bytes",
    ] {
        assert!(metrics[field].is_number(), "metrics.json lacks {field}");
    }
    assert_eq!(metrics["params"], 431_080);
    assert!(
        metrics["test_accuracy"].as_f64().unwrap() > 0.5,
        "{metrics}"
    );
    assert!(
        !out.join("checkpoint.safetensors").exists(),
        "a finished run leaves no checkpoint"
    );

    let table = sculpt(&["inspect", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("conv1") && text.contains("Conv2d") && text.contains("[20, 24, 24]"),
        "{text}"
    );
    let json = sculpt(&["inspect", out.to_str().unwrap(), "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let conv2 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "conv2")
        .unwrap();
    assert_eq!(conv2["params"], 25_050);
    assert_eq!(conv2["flops"], 2 * 50 * 500 * 64 + 50 * 64);

    let eval = sculpt(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--data",
        &spec,
        "--json",
    ]);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(
        (report["accuracy"].as_f64().unwrap() - metrics["test_accuracy"].as_f64().unwrap()).abs()
            < 1e-12,
        "the runtime scores the f32 model as candle did: {report}"
    );
    assert!(report["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(report["latency_p90_ms"].as_f64().unwrap() >= report["latency_ms"].as_f64().unwrap());
}

#[test]
fn bad_data_fails_with_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("idx");
    std::fs::create_dir(&data).unwrap();
    synthetic_idx(&data, 40);
    let spec = format!("idx:{}", data.display());
    let out = tmp.path().join("m");
    let train = |spec: &str| {
        sculpt(&[
            "train",
            "--model",
            "lenet-300-100",
            "--data",
            spec,
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "1",
        ])
    };

    let labels = data.join("train-labels-idx1-ubyte");
    let good = std::fs::read(&labels).unwrap();
    let mut bad = good.clone();
    bad[2] = 0x0d;
    bad[0] = 0x42;
    std::fs::write(&labels, &bad).unwrap();
    let output = train(&spec);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("train-labels-idx1-ubyte") && stderr.contains("wrong magic number"),
        "{stderr}"
    );

    std::fs::write(&labels, &good[..good.len() - 5]).unwrap();
    let stderr = String::from_utf8_lossy(&train(&spec).stderr).to_string();
    assert!(stderr.contains("truncated"), "{stderr}");

    std::fs::write(&labels, sculpt_data::idx::encode(&[39], &good[8..47])).unwrap();
    let stderr = String::from_utf8_lossy(&train(&spec).stderr).to_string();
    assert!(
        stderr.contains("39 labels") && stderr.contains("40 images"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{stderr}"
    );
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn weights_that_disagree_with_the_spec_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let graph = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
    sculpt_nn::io::save(&graph, &dir).unwrap();
    let spec = std::fs::read_to_string(dir.join("model.toml")).unwrap();
    std::fs::write(
        dir.join("model.toml"),
        spec.replacen("out_features = 128", "out_features = 100", 1)
            .replacen("in_features = 128", "in_features = 100", 1),
    )
    .unwrap();
    for args in [
        vec!["inspect", dir.to_str().unwrap()],
        vec!["eval", "--model", dir.to_str().unwrap(), "--data", "digits"],
    ] {
        let output = sculpt(&args);
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("fc2.weight")
                && stderr.contains("[100, 256]")
                && stderr.contains("[128, 256]"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn compress_applies_a_plan_and_names_bad_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("mlp");
    let output = sculpt(&[
        "train",
        "--model",
        "mlp",
        "--data",
        "digits",
        "--out",
        model.to_str().unwrap(),
        "--epochs",
        "15",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan = write(
        tmp.path(),
        "plan.toml",
        r#"
[distill]
temperature = 3.0
alpha = 0.5

[finetune]
epochs = 3

[layers."fc*"]
sparsity = 0.8
bits = 4

[layers.fc1]
prune = 0.25
"#,
    );
    let out = tmp.path().join("small");
    let output = sculpt(&[
        "compress",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "digits",
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metrics: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics, on_disk);
    for key in [
        "accuracy",
        "val_accuracy",
        "size_bytes",
        "params",
        "nonzeros",
        "flops",
        "bops",
        "teacher_accuracy",
        "teacher_size_bytes",
    ] {
        assert!(metrics[key].is_number(), "{key} missing: {metrics}");
    }
    let accuracy = metrics["accuracy"].as_f64().unwrap();
    assert!((0.8..=1.0).contains(&accuracy), "{metrics}");
    // fc1 lost a quarter of its 256 neurons: 192 * 64 + 128 * 192 + 10 * 128 weights.
    let params = metrics["params"].as_u64().unwrap();
    assert_eq!(params, 192 * 64 + 192 + 128 * 192 + 128 + 10 * 128 + 10);
    assert!(
        metrics["nonzeros"].as_u64().unwrap() < params / 4,
        "{metrics}"
    );
    assert!(
        metrics["size_bytes"].as_u64().unwrap() * 10
            < metrics["teacher_size_bytes"].as_u64().unwrap(),
        "{metrics}"
    );
    // The written model is the one scored: same test accuracy, zeros and grid intact.
    let graph = sculpt_nn::io::load(&out).unwrap();
    let splits = sculpt_data::load("digits", 42).unwrap();
    assert!((sculpt_nn::accuracy(&graph, &splits.test).unwrap() - accuracy).abs() < 1e-12);
    assert_eq!(graph.weight_bits("fc1.weight"), 4);
    assert!(graph.spec.sparse.contains("fc2.weight"));
    assert!(out.join("plan.toml").is_file());

    for (bad, needle) in [
        (
            "[layers.fc9]\nbits = 4\n",
            "layers.\"fc9\" matches no layer",
        ),
        (
            "[layers.\"conv*\"]\nbits = 4\n",
            "layers.\"conv*\" matches no layer",
        ),
        (
            "[layers.fc1]\nprune = 1.2\n",
            "layers.\"fc1\".prune: must lie in [0, 1)",
        ),
        (
            "[layers.fc1]\nbits = 9\n",
            "layers.\"fc1\".bits: 9 is not allowed",
        ),
    ] {
        let plan = write(tmp.path(), "bad.toml", bad);
        let output = sculpt(&[
            "compress",
            "--model",
            model.to_str().unwrap(),
            "--data",
            "digits",
            "--plan",
            plan.to_str().unwrap(),
            "--out",
            tmp.path().join("bad").to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(needle) && stderr.contains("bad.toml"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // The model's own seed is the default; another one is allowed but warned about.
    assert_eq!(metrics["seed"], 42);
    let other_seed = sculpt(&[
        "compress",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "digits",
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        tmp.path().join("seed3").to_str().unwrap(),
        "--seed",
        "3",
        "--epochs",
        "0",
    ]);
    assert!(other_seed.status.success());
    let stderr = String::from_utf8_lossy(&other_seed.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains("seed 42") && stderr.contains("seed 3"),
        "{stderr}"
    );
    // A missing model is named once, with its cause said once.
    let output = sculpt(&[
        "compress",
        "--model",
        "/no/such/model",
        "--data",
        "digits",
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("model directory not found").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn sensitivity_sweeps_each_layer_and_writes_table_and_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("mlp");
    let output = sculpt(&[
        "train",
        "--model",
        "mlp",
        "--data",
        "digits",
        "--out",
        model.to_str().unwrap(),
        "--epochs",
        "15",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out = tmp.path().join("sens");
    let output = sculpt(&[
        "sensitivity",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "digits",
        "--out",
        out.to_str().unwrap(),
        "--prune-ratios",
        "0.2,0.5,0.9",
        "--bits",
        "2,4,8",
        "--sparsity",
        "0.9",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The printed table: a header per knob, then a line per layer.
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines.iter().position(|l| l.starts_with("prune")).unwrap();
    assert!(lines[header + 1].starts_with("fc1") && lines[header + 2].starts_with("fc2"));
    assert!(stdout.contains("validation accuracy"), "{stdout}");
    assert!(stdout.contains("sensitivity.parquet"), "{stdout}");

    // The parquet frame: 2 prunable layers x 3 ratios + 3 layers x (3 widths + 1 sparsity).
    let file = std::fs::File::open(out.join("sensitivity.parquet")).unwrap();
    use polars::prelude::SerReader;
    let frame = polars::prelude::ParquetReader::new(file).finish().unwrap();
    assert_eq!(frame.height(), 2 * 3 + 3 * 4);
    let names: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "layer",
            "knob",
            "value",
            "accuracy",
            "accuracy_drop",
            "size_bytes",
            "params"
        ]
    );
    let drops = frame.column("accuracy_drop").unwrap().f64().unwrap();
    let values = frame.column("value").unwrap().f64().unwrap();
    let knobs = frame.column("knob").unwrap().str().unwrap();
    // 8 bits in one layer costs at most a point.
    for i in 0..frame.height() {
        if knobs.get(i) == Some("bits") && values.get(i) == Some(8.0) {
            assert!(drops.get(i).unwrap().abs() <= 0.01, "{frame}");
        }
    }
    let svg = std::fs::read_to_string(out.join("sensitivity.svg")).unwrap();
    assert!(svg.contains("prune, one layer at a time"));

    // --json prints the same rows.
    let output = sculpt(&[
        "sensitivity",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "digits",
        "--out",
        out.to_str().unwrap(),
        "--prune-ratios",
        "0.5",
        "--bits",
        "4",
        "--sparsity",
        "0.9",
        "--json",
    ]);
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 2 + 3 + 3);
    assert!(json["accuracy"].as_f64().unwrap() > 0.9);

    // Bad lists are refused by name before anything runs (status 2, like other argument
    // mistakes); a missing model directory is named (status 1).
    for (flag, value, needle) in [
        ("--prune-ratios", "0.5,1.2", "must lie in [0, 1), got 1.2"),
        ("--bits", "4,9", "9 is not allowed"),
        ("--sparsity", "lots", "`lots` is not a number"),
    ] {
        let output = sculpt(&[
            "sensitivity",
            "--model",
            model.to_str().unwrap(),
            "--data",
            "digits",
            "--out",
            out.to_str().unwrap(),
            flag,
            value,
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle) && stderr.contains(flag), "{stderr}");
    }
    let output = sculpt(&[
        "sensitivity",
        "--model",
        "no/such/model",
        "--data",
        "digits",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no/such/model"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn candidates_predicted_over_the_budget_are_screened_out_before_fine_tuning() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |budget: f64, name: &str| -> Vec<serde_json::Value> {
        let text = SMALL
            .replace("budget_ms = 0.012", &format!("budget_ms = {budget}"))
            .replace("name = \"small\"", &format!("name = \"{name}\""));
        let campaign = write(tmp.path(), &format!("{name}.toml"), &text);
        let out = tmp.path().join(name);
        run(&campaign, &out);
        let trials = trials_without_time(&out);
        for t in &trials {
            let latency = t["latency_ms"].as_f64().unwrap();
            if t["state"] == "infeasible" {
                assert!(latency > budget * 1.1, "{t}");
                assert!(t["accuracy"].is_null(), "{t}");
                assert!(t["size_bytes"].as_u64().unwrap() > 0, "{t}");
                assert!(t["error"].as_str().unwrap().contains("screened out"), "{t}");
            } else {
                assert_eq!(t["state"], "complete", "{t}");
                assert!(latency <= budget * 1.1, "{t}");
            }
        }
        trials
    };
    // Nothing fits a budget of a nanosecond: every candidate is screened, none fine-tuned.
    let none = check(1e-6, "tight");
    assert!(none.iter().all(|t| t["state"] == "infeasible"));
    let summary = std::fs::read_to_string(tmp.path().join("tight/summary.md")).unwrap();
    assert!(summary.contains("6 screened out"), "{summary}");
    // A loose budget screens nothing.
    let all = check(1e3, "loose");
    assert!(all.iter().all(|t| t["state"] == "complete"));
    // In between, the invariant holds trial by trial.
    check(0.006, "middle");
}

#[test]
fn latency_model_mistakes_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    for (extra, expect) in [
        ("model = \"lut\"\n", "latency.lut"),
        ("model = \"guess\"\n", "unknown latency model `guess`"),
        (
            "model = \"lut\"\nlut = \"missing.parquet\"\n",
            "missing.parquet",
        ),
        ("screen_margin = -0.5\n", "latency.screen_margin"),
    ] {
        let text = SMALL.replace(
            "profile = \"epyc-zen4-1core\"\n",
            &format!("profile = \"epyc-zen4-1core\"\n{extra}"),
        );
        let campaign = write(tmp.path(), "bad.toml", &text);
        let output = sculpt(&[
            "run",
            campaign.to_str().unwrap(),
            "--out",
            tmp.path().join("out").to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra}: {stderr}");
        assert!(stderr.contains(expect), "{extra}: {stderr}");
        assert!(stderr.contains("bad.toml"), "{extra}: {stderr}");
    }
}

/// The search benchmark end to end: a table of a freshly trained teacher, strategies run
/// against it, and their trace and figure; bad output paths are refused before any work.
#[test]
fn bench_table_and_bench_search_run_and_refuse_bad_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = tmp.path().join("teacher");
    let t = teacher.to_str().unwrap();
    let out = sculpt(&["train", "--model", "mlp", "--out", t, "--epochs", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = tmp.path().join("table.parquet");
    let tb = table.to_str().unwrap();
    let out = sculpt(&[
        "bench-table",
        "--model",
        t,
        "--data",
        "digits",
        "--out",
        tb,
        "--prune",
        "0,0.5",
        "--bits",
        "4,32",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("32 configurations"));
    let trace = tmp.path().join("trace.parquet");
    let figure = tmp.path().join("hv.svg");
    let out = sculpt(&[
        "bench-search",
        "--table",
        tb,
        "--strategy",
        "random,gp",
        "--budget",
        "12",
        "--seeds",
        "1",
        "--json",
        "--trace",
        trace.to_str().unwrap(),
        "--figure",
        figure.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for r in &lines {
        let f = r["hv_fraction_at"]["12"].as_f64().unwrap();
        assert!(f > 0.0 && f <= 1.0, "{r}");
    }
    assert!(figure.is_file());
    use polars::prelude::SerReader;
    let frame = polars::prelude::ParquetReader::new(std::fs::File::open(&trace).unwrap())
        .finish()
        .unwrap();
    assert_eq!(frame.height(), 24);
    // A figure that is not SVG, and a trace into a missing folder: refused, nothing run.
    let out = sculpt(&[
        "bench-search",
        "--table",
        tb,
        "--budget",
        "5",
        "--seeds",
        "1",
        "--figure",
        tmp.path().join("hv.png").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(".svg"));
    let out = sculpt(&[
        "bench-search",
        "--table",
        tb,
        "--budget",
        "5",
        "--seeds",
        "1",
        "--trace",
        tmp.path().join("missing/trace.parquet").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// Successive halving: every trial records the rungs it reached; the ones not promoted
/// are stored as `stopped` with their last rung's score and stay off the front; complete
/// trials ran the whole schedule; and the same seed gives the same trials.
#[test]
fn successive_halving_records_rungs_and_keeps_the_front_at_full_fidelity() {
    let tmp = tempfile::tempdir().unwrap();
    let text = SMALL
        .replace("[finetune]\nepochs = 2", "[finetune]\nepochs = 4")
        .replace("trials = 6", "trials = 10")
        .replace("strategy = \"nsga2\"", "strategy = \"random\"")
        + "\n[halving]\nmin_epochs = 1\nreduction_factor = 2\n";
    let campaign = write(tmp.path(), "asha.toml", &text);
    let out = tmp.path().join("out");
    run(&campaign, &out);
    let trials = trials_without_time(&out);
    assert_eq!(trials.len(), 10);
    let fine_tuned: Vec<_> = trials
        .iter()
        .filter(|t| t["state"] == "complete" || t["state"] == "stopped")
        .collect();
    assert!(!fine_tuned.is_empty());
    let mut stopped = 0;
    for t in &fine_tuned {
        let rungs = t["rungs"].as_array().expect("rungs recorded");
        assert!(!rungs.is_empty() && rungs.len() <= 2, "{t}");
        // Rungs at 1 and 2 epochs of the 4-epoch schedule.
        for (r, epochs) in rungs.iter().zip([1, 2]) {
            assert_eq!(r["epochs"], epochs, "{t}");
        }
        if t["state"] == "stopped" {
            stopped += 1;
            let last = rungs.last().unwrap();
            assert_eq!(last["promoted"], false, "{t}");
            assert_eq!(t["accuracy"], last["accuracy"], "{t}");
            assert_eq!(t["fidelity"], last["epochs"], "{t}");
        } else {
            assert!(rungs.iter().all(|r| r["promoted"] == true), "{t}");
            assert_eq!(t["fidelity"], 4, "{t}");
        }
    }
    assert!(stopped > 0, "nothing was stopped: {trials:?}");
    let status = sculpt(&["status", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["stopped"], stopped, "{v}");
    for member in v["front"].as_array().unwrap() {
        let t = trials
            .iter()
            .find(|t| t["trial_id"] == member["trial_id"])
            .unwrap();
        assert_eq!(t["state"], "complete", "{t}");
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("stopped early by successive halving"),
        "{summary}"
    );
    let again = tmp.path().join("again");
    run(&campaign, &again);
    assert_eq!(trials_without_time(&again), trials);
}

/// The pids of the `sculpt worker` processes serving `out`.
fn worker_pids(out: &Path) -> Vec<u32> {
    let want = out.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (args.len() >= 3 && args[1] == b"worker" && args[2] == want.as_bytes()).then_some(pid)
        })
        .collect()
}

fn journal_lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("trials.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Parallel workers: a campaign with `--workers 2` runs its trials in two `sculpt worker`
/// processes and stores exactly its trial count; a worker pointed at a folder without a
/// parallel campaign says so.
#[test]
fn two_workers_run_the_campaign() {
    let tmp = tempfile::tempdir().unwrap();
    let campaign = write(
        tmp.path(),
        "small.toml",
        &SMALL.replace("trials = 6", "trials = 8"),
    );
    let out = tmp.path().join("out");
    let output = sculpt(&[
        "run",
        campaign.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--workers",
        "2",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let trials = trials_without_time(&out);
    let mut ids: Vec<u64> = trials
        .iter()
        .map(|t| t["trial_id"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    // Both workers took part, and all of them left.
    let logs: Vec<String> = (0..2)
        .map(|k| std::fs::read_to_string(out.join(format!("work/worker-{k}.log"))).unwrap())
        .collect();
    assert!(
        logs.iter().all(|l| l.contains("trial finished")),
        "{logs:?}"
    );
    assert!(worker_pids(&out).is_empty());
    let lonely = tmp.path().join("lonely");
    std::fs::create_dir(&lonely).unwrap();
    let bad = sculpt(&["worker", lonely.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("holds no parallel campaign"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// Crash safety end to end: the runner and its workers are SIGKILLed at several moments
/// of a parallel campaign, and it is resumed each time. No stored trial is lost or
/// changed, none is stored twice, and the final count equals the budget.
#[test]
fn sigkilled_runner_and_workers_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let budget = 24;
    let text = SMALL
        .replace("trials = 6", &format!("trials = {budget}"))
        .replace("strategy = \"nsga2\"", "strategy = \"random\"");
    let campaign = write(tmp.path(), "crash.toml", &text);
    let out = tmp.path().join("out");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_sculpt"))
            .args([
                "run",
                campaign.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--workers",
                "2",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut kept: Vec<String> = Vec::new();
    // Kill after this many more stored trials; even rounds kill the runner, odd rounds the
    // workers first and then the runner.
    for (round, more) in [1usize, 3, 2, 4, 3].into_iter().enumerate() {
        let mut runner = spawn();
        let target = (journal_lines(&out).len() + more).min(budget - 4);
        let started = std::time::Instant::now();
        let starts = || {
            std::fs::read_to_string(out.join("runs.jsonl"))
                .unwrap_or_default()
                .matches("\"event\":\"start\"")
                .count()
        };
        // This run has begun (its start is recorded) and stored its share of trials.
        while starts() < round + 1 || journal_lines(&out).len() < target {
            assert!(started.elapsed().as_secs() < 120, "round {round}: stuck");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if round % 2 == 1 {
            // Every worker (some may be adopted from a runner killed earlier).
            for pid in worker_pids(&out) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            std::thread::sleep(std::time::Duration::from_millis(400));
        }
        runner.kill().unwrap();
        runner.wait().unwrap();
        let now = journal_lines(&out);
        assert!(now.len() >= kept.len(), "round {round}: trials lost");
        assert_eq!(
            now[..kept.len()],
            kept[..],
            "round {round}: stored trials changed"
        );
        kept = now;
    }
    let mut runner = spawn();
    assert!(runner.wait().unwrap().success());
    let lines = journal_lines(&out);
    assert_eq!(lines[..kept.len()], kept[..]);
    let trials = trials_without_time(&out);
    let mut ids: Vec<u64> = trials
        .iter()
        .map(|t| t["trial_id"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), trials.len(), "a trial was stored twice");
    assert_eq!(trials.len(), budget);
    // Every kill landed mid-run: six starts, one end. A killed worker was replaced.
    let runs = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    assert_eq!(runs.matches("\"event\":\"start\"").count(), 6, "{runs}");
    assert_eq!(runs.matches("\"event\":\"end\"").count(), 1, "{runs}");
    let log = std::fs::read_to_string(out.join("campaign.log")).unwrap();
    assert!(log.contains("exited (signal: 9"), "{log}");
    // The frame agrees with the journal.
    let status = sculpt(&["status", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["stored"], budget as u64, "{v}");
}

/// The morning after: `report` writes a self-contained HTML report with held-out test
/// scores and the stored budget, `select` picks the most accurate feasible trial (and
/// fails with the nearest ones when nothing fits), `export` rebuilds it as packed integers
/// and `eval` reproduces its stored figures.
#[test]
fn report_select_export_and_eval_reproduce_the_chosen_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let campaign = write(tmp.path(), "small.toml", SMALL);
    let out = tmp.path().join("out");
    let ran = run(&campaign, &out);
    // The teacher's accuracy names its split.
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        stdout.contains("teacher mlp: validation accuracy"),
        "{stdout}"
    );
    assert!(out.join("campaign.toml").is_file());

    // No --budget-ms: the report takes the campaign's own budget.
    let report = sculpt(&["report", out.to_str().unwrap()]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("Best under the latency budget of 0.012 ms"),
        "budget dropped"
    );
    assert!(html.matches("<svg").count() >= 4, "figures are inline");
    for external in ["<script", "<link", "src=\"http", "url(http", "<img"] {
        assert!(!html.contains(external), "external asset {external}");
    }
    for axis in [
        "validation accuracy (%)",
        "latency (ms)",
        "model size (bytes",
        "trials evaluated",
    ] {
        assert!(html.contains(axis), "axis label {axis} missing");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("figures/front-latency.png"), "{md}");
    for stem in [
        "front-latency",
        "front-size",
        "hypervolume",
        "heatmap-bits",
        "heatmap-prune",
    ] {
        let png = std::fs::read(out.join("figures").join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png");
        assert!(out.join("figures").join(format!("{stem}.svg")).is_file());
    }
    // Held-out truth: every Pareto configuration rebuilt, its validation score as stored.
    let heldout: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("heldout.json")).unwrap()).unwrap();
    let scored = heldout["trials"].as_object().unwrap();
    assert!(!scored.is_empty());
    for h in scored.values() {
        let (stored, val) = (
            h["stored_val_accuracy"].as_f64().unwrap(),
            h["val_accuracy"].as_f64().unwrap(),
        );
        assert!(
            (stored - val).abs() <= 0.002,
            "rebuilt {val} against stored {stored}"
        );
        assert!(html.contains(&format!(
            "{:.2}%",
            h["test_accuracy"].as_f64().unwrap() * 100.0
        )));
    }

    // Select: the most accurate complete trial within the limits, checked by a scan.
    let selected = sculpt(&[
        "select",
        out.to_str().unwrap(),
        "--max-latency-ms",
        "0.012",
        "--json",
    ]);
    assert!(
        selected.status.success(),
        "{}",
        String::from_utf8_lossy(&selected.stderr)
    );
    let choice: serde_json::Value = serde_json::from_slice(&selected.stdout).unwrap();
    let trials = trials_without_time(&out);
    let best = trials
        .iter()
        .filter(|t| t["state"] == "complete" && t["latency_ms"].as_f64().unwrap() <= 0.012)
        .map(|t| t["accuracy"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(choice["chosen"]["accuracy"].as_f64().unwrap(), best);
    assert!(choice["chosen"]["test_accuracy"].as_f64().is_some());
    let chosen_id = choice["chosen"]["trial_id"].as_u64().unwrap();
    let toml_text = std::fs::read_to_string(out.join("selected.toml")).unwrap();
    assert!(
        toml_text.contains(&format!("trial_id = {chosen_id}")),
        "{toml_text}"
    );
    let none = sculpt(&[
        "select",
        out.to_str().unwrap(),
        "--max-latency-ms",
        "0.0000001",
    ]);
    assert_eq!(none.status.code(), Some(1));
    let message = String::from_utf8_lossy(&none.stderr);
    assert!(
        message.contains("no complete trial") && message.contains("Nearest:"),
        "{message}"
    );

    // Export the selection, then eval reproduces accuracy, size and latency.
    let exported = tmp.path().join("exported");
    let export = sculpt(&[
        "export",
        out.to_str().unwrap(),
        "--selected",
        "--out",
        exported.to_str().unwrap(),
        "--format",
        "onnx",
        "--json",
    ]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let metrics: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(metrics["trial_id"].as_u64(), Some(chosen_id));
    for file in [
        "model.toml",
        "model.safetensors",
        "plan.toml",
        "metrics.json",
        "model.onnx",
    ] {
        assert!(exported.join(file).is_file(), "{file}");
    }
    assert!(metrics["onnx_bytes"].as_u64().unwrap() > 0);
    // Quantized weights are stored as packed integer codes.
    let weights = std::fs::read(exported.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&weights[8..8 + header_len]);
    assert!(
        header.contains("fc1.weight.qweight") && header.contains("\"U8\""),
        "{header}"
    );
    let eval = sculpt(&[
        "eval",
        "--model",
        exported.to_str().unwrap(),
        "--data",
        "digits",
        "--split",
        "val",
        "--json",
    ]);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let scored: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let stored = choice["chosen"]["accuracy"].as_f64().unwrap();
    assert!((scored["accuracy"].as_f64().unwrap() - stored).abs() <= 0.002);
    assert_eq!(scored["size_bytes"], choice["chosen"]["size_bytes"]);
    let (a, b) = (
        scored["latency_ms"].as_f64().unwrap(),
        metrics["latency_ms"].as_f64().unwrap(),
    );
    assert!(
        a > 0.0 && b > 0.0 && a / b < 10.0 && b / a < 10.0,
        "{a} against {b}"
    );

    // Bad limits are usage errors (status 2), never a silent "no limit" or a hang.
    for args in [
        vec![
            "report",
            out.to_str().unwrap(),
            "--budget-ms",
            "inf",
            "--no-test",
        ],
        vec!["select", out.to_str().unwrap(), "--max-latency-ms", "NaN"],
        vec!["select", out.to_str().unwrap(), "--max-latency-ms", "-1"],
        vec!["select", out.to_str().unwrap(), "--min-accuracy", "150"],
        vec!["select", out.to_str().unwrap(), "--prefer", "bogus"],
    ] {
        let refused = sculpt(&args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
    }
    // Export never writes over the campaign, its teacher, or a folder of other files.
    let journal = std::fs::read(out.join("trials.jsonl")).unwrap();
    let occupied = tmp.path().join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("notes.txt"), "mine").unwrap();
    for target in [out.clone(), out.join("teacher"), occupied.clone()] {
        let refused = sculpt(&[
            "export",
            out.to_str().unwrap(),
            "--selected",
            "--out",
            target.to_str().unwrap(),
        ]);
        assert_eq!(refused.status.code(), Some(1), "{}", target.display());
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(message.contains("--out"), "{message}");
    }
    assert_eq!(std::fs::read(occupied.join("notes.txt")).unwrap(), b"mine");
    // A changed teacher is caught before anything is rebuilt or cached.
    let other = tmp.path().join("other-teacher");
    let trained = sculpt(&[
        "train",
        "--model",
        "mlp",
        "--out",
        other.to_str().unwrap(),
        "--epochs",
        "1",
        "--seed",
        "7",
    ]);
    assert!(trained.status.success());
    for file in ["model.toml", "model.safetensors"] {
        std::fs::copy(other.join(file), out.join("teacher").join(file)).unwrap();
    }
    let heldout_before = std::fs::read(out.join("heldout.json")).unwrap();
    let refused = sculpt(&[
        "export",
        out.to_str().unwrap(),
        "--selected",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("the teacher") && message.contains("changed"),
        "{message}"
    );
    std::fs::remove_file(out.join("heldout.json")).unwrap();
    let refused = sculpt(&["report", out.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        !out.join("heldout.json").exists()
            || std::fs::read(out.join("heldout.json")).unwrap() != heldout_before
    );
    assert_eq!(std::fs::read(out.join("trials.jsonl")).unwrap(), journal);

    // A campaign folder where a model directory belongs points at its teacher.
    let inspect = sculpt(&["inspect", out.to_str().unwrap()]);
    assert_eq!(inspect.status.code(), Some(1));
    let message = String::from_utf8_lossy(&inspect.stderr);
    assert!(
        message.contains("campaign folder") && message.contains("teacher"),
        "{message}"
    );
}

#[test]
fn eval_refuses_a_model_that_does_not_fit_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("digits-mlp");
    let trained = sculpt(&[
        "train",
        "--model",
        "mlp",
        "--out",
        model.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    assert!(trained.status.success());
    let idx = tmp.path().join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    synthetic_idx(&idx, 200);
    let eval = sculpt(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &format!("idx:{}", idx.display()),
    ]);
    assert_eq!(eval.status.code(), Some(1));
    let message = String::from_utf8_lossy(&eval.stderr);
    assert!(message.contains("the model takes inputs"), "{message}");
    assert!(
        !message.contains("shape mismatch") && !message.contains("backtrace"),
        "{message}"
    );
}

#[test]
fn train_help_names_every_data_source_and_spec_paths() {
    let help = sculpt(&["train", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout).replace('\n', " ");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for source in sculpt_data::SOURCES {
        assert!(
            text.contains(source),
            "{source} missing from train --help:\n{text}"
        );
    }
    assert!(text.contains("model spec"), "{text}");
}

/// The README names the binary where its commands, the justfile and .ci/run build it.
#[test]
fn the_readme_names_both_build_folders() {
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let justfile = std::fs::read_to_string(root.join("justfile")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(justfile.contains("/.cache/sculpt-target") && ci.contains("/.cache/sculpt-target"));
    assert!(readme.contains("~/.cache/sculpt-target/release/sculpt"));
    assert!(readme.contains("target/release/sculpt"));
}

/// The preprocessing defect: a model trained elsewhere on other inputs must not be fed
/// sculpt's standardisation silently. A digits MLP trained by sculpt records its
/// preprocessing; the same network with that standardisation folded into fc1 takes raw
/// inputs, declares so, and scores the same; stripped of its declaration it is warned
/// about (and scores worse, fed the wrong inputs).
#[test]
fn a_model_is_fed_the_preprocessing_it_declares() {
    use candle_core::{Device, Tensor};
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("mlp");
    let trained = sculpt(&[
        "train",
        "--model",
        "mlp",
        "--out",
        model.to_str().unwrap(),
        "--epochs",
        "8",
    ]);
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let spec_text = std::fs::read_to_string(model.join("model.toml")).unwrap();
    let spec: toml::Table = spec_text.parse().unwrap();
    let pre = spec["preprocessing"]
        .as_table()
        .expect("train records [preprocessing]");
    let floats = |k: &str| -> Vec<f32> {
        pre[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_float().unwrap() as f32)
            .collect()
    };
    let (mean, std) = (floats("mean"), floats("std"));
    assert_eq!(mean.len(), 64, "digits are standardised per feature");
    let eval = |dir: &Path| -> (f64, String) {
        let out = sculpt(&[
            "eval",
            "--model",
            dir.to_str().unwrap(),
            "--data",
            "digits",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["accuracy"].as_f64().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (original, warned) = eval(&model);
    assert!(
        !warned.contains("declares no input preprocessing"),
        "{warned}"
    );

    // Fold the standardisation into fc1: W' = W / std, b' = b - W' · mean.
    let weights =
        candle_core::safetensors::load(model.join("model.safetensors"), &Device::Cpu).unwrap();
    let w: Vec<Vec<f32>> = weights["fc1.weight"].to_vec2().unwrap();
    let b: Vec<f32> = weights["fc1.bias"].to_vec1().unwrap();
    let folded: Vec<Vec<f32>> = w
        .iter()
        .map(|row| row.iter().zip(&std).map(|(x, s)| x / s).collect())
        .collect();
    let bias: Vec<f32> = folded
        .iter()
        .zip(&b)
        .map(|(row, b)| b - row.iter().zip(&mean).map(|(x, m)| x * m).sum::<f32>())
        .collect();
    let mut raw_weights = weights.clone();
    let rows = folded.len();
    raw_weights.insert(
        "fc1.weight".into(),
        Tensor::from_vec(folded.concat(), (rows, 64), &Device::Cpu).unwrap(),
    );
    raw_weights.insert(
        "fc1.bias".into(),
        Tensor::from_vec(bias, rows, &Device::Cpu).unwrap(),
    );
    let raw = tmp.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    candle_core::safetensors::save(&raw_weights, raw.join("model.safetensors")).unwrap();
    let mut raw_spec = spec.clone();
    raw_spec.insert(
        "preprocessing".into(),
        toml::Value::Table(toml::Table::new()),
    );
    std::fs::write(raw.join("model.toml"), toml::to_string(&raw_spec).unwrap()).unwrap();
    let (declared, warned) = eval(&raw);
    assert!(
        (declared - original).abs() < 0.003,
        "{declared} against {original}"
    );
    assert!(
        !warned.contains("declares no input preprocessing"),
        "{warned}"
    );

    // Without the declaration it is fed sculpt's standardisation: a loud warning, and a
    // worse score.
    let bare = tmp.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(
        raw.join("model.safetensors"),
        bare.join("model.safetensors"),
    )
    .unwrap();
    raw_spec.remove("preprocessing");
    std::fs::write(bare.join("model.toml"), toml::to_string(&raw_spec).unwrap()).unwrap();
    let (undeclared, warned) = eval(&bare);
    assert!(
        warned.contains("declares no input preprocessing"),
        "{warned}"
    );
    assert!(
        undeclared < original - 0.02,
        "{undeclared} against {original}"
    );
}

/// A campaign distils from an ONNX teacher named directly in `[teacher] weights`, fed the
/// preprocessing the campaign declares for it; without that declaration the campaign file
/// is refused, naming the field.
#[test]
fn a_campaign_runs_on_an_onnx_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("tests/fixtures/onnx/digits-mlp.onnx");
    let campaign = format!(
        r#"
name = "onnx-teacher"
seed = 7

[data]
source = "digits"

[teacher]
weights = "{}"
preprocessing = {{ scale = 0.0625, mean = [0.0], std = [1.0] }}

[finetune]
epochs = 2

[search]
strategy = "nsga2"
trials = 4
population = 4
workers = 1

[search.prune]
layers = "*"
low = 0.0
high = 0.5

[search.bits]
layers = "*"
choices = [4, 8]

[latency]
profile = "epyc-zen4-1core"
"#,
        onnx.display()
    );
    let path = write(tmp.path(), "onnx.toml", &campaign);
    let out = tmp.path().join("out");
    let ran = run(&path, &out);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(
        !stderr.contains("declares no input preprocessing"),
        "{stderr}"
    );
    let teacher: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("teacher.json")).unwrap()).unwrap();
    assert!(teacher["accuracy"].as_f64().unwrap() > 0.9, "{teacher}");
    let trials = trials_without_time(&out);
    assert_eq!(trials.len(), 4);
    assert!(
        trials.iter().any(|t| t["state"] == "complete"),
        "{trials:?}"
    );

    let bare = campaign.replace(
        "preprocessing = { scale = 0.0625, mean = [0.0], std = [1.0] }\n",
        "",
    );
    let path = write(tmp.path(), "bare.toml", &bare);
    let refused = sculpt(&[
        "run",
        path.to_str().unwrap(),
        "--out",
        tmp.path().join("bare").to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("teacher.preprocessing"), "{message}");
}

#[test]
fn profile_refuses_bad_calibration_arguments_before_any_timing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lut.parquet");
    let out = out.to_str().unwrap();
    let missing = tmp.path().join("no-model");
    let missing = missing.to_str().unwrap();
    let fails = |args: &[&str], needle: &str| {
        let o = sculpt(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    // --from only recalibrates, so it needs a model to calibrate on.
    fails(
        &["profile", "--out", out, "--from", "t.parquet"],
        "--calibrate-on",
    );
    // A recalibrated table keeps its batch and threads.
    fails(
        &[
            "profile",
            "--out",
            out,
            "--from",
            "t.parquet",
            "--calibrate-on",
            missing,
            "--batch",
            "4",
        ],
        "do not apply",
    );
    // A model that is not there fails at once, not after minutes of probing.
    let started = std::time::Instant::now();
    fails(
        &["profile", "--out", out, "--calibrate-on", missing],
        "reading the model to calibrate on",
    );
    assert!(started.elapsed().as_secs() < 20, "it profiled first");
    // A file is not a model directory, and the message says so, naming the path once.
    let file = tmp.path().join("model.toml");
    std::fs::write(&file, "x").unwrap();
    let file = file.to_str().unwrap();
    let o = sculpt(&["profile", "--out", out, "--calibrate-on", file]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("is a file, not a model directory"), "{err}");
    assert_eq!(err.matches(file).count(), 1, "{err}");
    // So does a table that is not there.
    let model = tmp.path().join("m");
    let o = sculpt(&[
        "train",
        "--model",
        "mlp",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fails(
        &[
            "profile",
            "--out",
            out,
            "--from",
            "none.parquet",
            "--calibrate-on",
            model.to_str().unwrap(),
        ],
        "none.parquet",
    );
    // An output that is a folder, or the table being recalibrated, is refused up front.
    let model = model.to_str().unwrap();
    let dir = tmp.path().to_str().unwrap();
    fails(
        &[
            "profile",
            "--out",
            dir,
            "--from",
            out,
            "--calibrate-on",
            model,
        ],
        "is a directory",
    );
    let table = tmp.path().join("t.parquet");
    std::fs::write(&table, "not yet a table").unwrap();
    let table = table.to_str().unwrap();
    fails(
        &[
            "profile",
            "--out",
            table,
            "--from",
            table,
            "--calibrate-on",
            model,
        ],
        "is the table given to --from",
    );
    assert_eq!(std::fs::read_to_string(table).unwrap(), "not yet a table");
    // Validation refuses impossible sizes and an unwritable figure before measuring.
    let huge = usize::MAX.to_string();
    fails(
        &[
            "latency", "validate", "--model", model, "--plans", "2", "--passes", &huge,
        ],
        "measured blocks",
    );
    fails(
        &["latency", "validate", "--model", model, "--runs", "0"],
        "--runs must be at least 1",
    );
    let figure = tmp.path().join("no-folder/f.svg");
    fails(
        &[
            "latency",
            "validate",
            "--model",
            model,
            "--figure",
            figure.to_str().unwrap(),
        ],
        "is not a directory",
    );
    // A small validation records its settings and a finite time for every plan.
    let o = sculpt(&[
        "latency", "validate", "--model", model, "--plans", "2", "--runs", "5", "--passes", "2",
        "--seed", "7", "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["runs"].as_u64(), v["passes"].as_u64(), v["seed"].as_u64()),
        (Some(5), Some(2), Some(7))
    );
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        for key in [
            "measured_ms",
            "reference_ms",
            "linear_reference_ms",
            "roofline_ms",
        ] {
            let t = r[key].as_f64().unwrap();
            assert!(t.is_finite() && t > 0.0, "{key}: {r}");
        }
    }
    assert!(!Path::new(out).exists());
}
