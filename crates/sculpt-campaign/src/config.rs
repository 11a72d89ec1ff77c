//! The campaign file. It is read into raw structs that mirror the TOML (unknown fields are
//! errors, so typos do not pass silently), then resolved into a checked `Campaign`. Every
//! error names the file, the line and column, and the field.

use std::ops::Range;
use std::path::{Path, PathBuf};

use sculpt_compress::{ParamValue, KNOBS};
use sculpt_latency::DeviceProfile;
use sculpt_nn::TrainConfig;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{CampaignError, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    name: Spanned<String>,
    #[serde(default)]
    seed: u64,
    data: RawData,
    teacher: RawTeacher,
    #[serde(default)]
    finetune: RawTrain,
    search: RawSearch,
    latency: RawLatency,
    /// The base plan the knobs override, in the plan-file format.
    plan: Option<Spanned<toml::Table>>,
    halving: Option<Spanned<RawHalving>>,
}

/// `[halving]`: asynchronous successive halving over fine-tuning epochs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHalving {
    min_epochs: Option<Spanned<i64>>,
    reduction_factor: Option<Spanned<i64>>,
    brackets: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    source: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeacher {
    model: Option<Spanned<String>>,
    weights: Option<Spanned<String>>,
    /// The input preprocessing of a teacher given as weights (an ONNX file, or a model
    /// directory that declares none): `{ scale = …, mean = […], std = […] }`.
    preprocessing: Option<Spanned<sculpt_nn::Preprocessing>>,
    // Listed here rather than flattened from RawTrain: serde's flatten loses the spans.
    epochs: Option<Spanned<i64>>,
    batch_size: Option<Spanned<i64>>,
    learning_rate: Option<Spanned<f64>>,
    weight_decay: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrain {
    epochs: Option<Spanned<i64>>,
    batch_size: Option<Spanned<i64>>,
    learning_rate: Option<Spanned<f64>>,
    weight_decay: Option<Spanned<f64>>,
}

// The other keys of `[search]` are knob tables, read one by one from the spanned document
// (see `knob_searches`), so that a knob needs no field here and errors keep their spans.
#[derive(Debug, Deserialize)]
struct RawSearch {
    strategy: Option<Spanned<String>>,
    trials: Spanned<i64>,
    population: Option<Spanned<i64>>,
    min_accuracy: Option<Spanned<f64>>,
    max_minutes: Option<Spanned<f64>>,
    objective: Option<Spanned<String>>,
    sensitivity: Option<Spanned<RawSensitivity>>,
    workers: Option<Spanned<i64>>,
}

const SEARCH_FIELDS: &[&str] = &[
    "strategy",
    "trials",
    "population",
    "min_accuracy",
    "max_minutes",
    "objective",
    "sensitivity",
    "workers",
];

fn is_latency(o: &Objective) -> bool {
    *o == Objective::Latency
}

/// What the search trades accuracy against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Predicted latency (the default): for a deployment under a latency budget.
    #[default]
    Latency,
    /// Size in bytes: for a deployment where storage or download size is what counts.
    Size,
}

/// `[search] sensitivity = { table = "…/sensitivity.parquet", max_drop = 0.01 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensitivity {
    table: Spanned<String>,
    max_drop: Spanned<f64>,
}

/// One `[search.<knob>]` table: a range, a list of choices, or one fixed value, for the
/// layers its pattern matches (per-layer knobs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKnob {
    layers: Option<Spanned<String>>,
    low: Option<Spanned<f64>>,
    high: Option<Spanned<f64>>,
    #[serde(default)]
    log: bool,
    /// A range that may also be off (the knob at its default): searched as an on/off
    /// switch and a value that exists only while the switch is on.
    optional: Option<Spanned<bool>>,
    choices: Option<Spanned<Vec<toml::Value>>>,
    value: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    profile: Spanned<String>,
    /// roofline (default), lut or measured.
    model: Option<Spanned<String>>,
    /// The lookup table of `model = "lut"`.
    lut: Option<Spanned<String>>,
    /// Threads of `model = "measured"`.
    threads: Option<Spanned<i64>>,
    /// How far over the budget a prediction may be before the trial is screened out.
    screen_margin: Option<Spanned<f64>>,
    #[serde(default)]
    batch_size: Option<Spanned<i64>>,
    budget_ms: Option<Spanned<f64>>,
}

/// NSGA-II's population when a campaign does not set one (also under `auto`): Optuna's
/// default.
pub const DEFAULT_POPULATION: usize = 50;

/// Which latency model scores a campaign's trials.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyChoice {
    /// The analytic roofline on the device profile (deterministic).
    Roofline,
    /// A lookup table from `sculpt profile` (deterministic for a given table).
    Lut(PathBuf),
    /// The median of runs of sculpt's runtime on this machine (noisy: a resumed or repeated
    /// campaign may see slightly different latencies).
    Measured { threads: usize },
}

fn is_roofline(c: &LatencyChoice) -> bool {
    *c == LatencyChoice::Roofline
}

/// The screening margin when neither the campaign nor its latency model states one: a
/// candidate predicted more than 10% over the budget is not fine-tuned.
pub const DEFAULT_SCREEN_MARGIN: f64 = 0.10;

/// Where the teacher comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum TeacherSource {
    /// Train this zoo model (or reuse the copy a previous run trained).
    Zoo { model: String, train: TrainConfig },
    /// A model directory with `model.toml` and `model.safetensors`.
    Weights(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum StrategyKind {
    Random,
    Nsga2 {
        population: usize,
    },
    /// The Gaussian process.
    Gp,
    /// The GP while it pays, then NSGA-II with this population (the default).
    Auto {
        population: usize,
    },
}

/// The strategies by name, for messages.
pub const STRATEGY_NAMES: &str = "auto, gp, nsga2, random";

impl StrategyKind {
    /// The strategy named `name`; NSGA-II (alone or under `auto`) with `population`.
    pub fn parse(name: &str, population: usize) -> Option<StrategyKind> {
        Some(match name {
            "random" => StrategyKind::Random,
            "nsga2" => StrategyKind::Nsga2 { population },
            "gp" => StrategyKind::Gp,
            "auto" => StrategyKind::Auto { population },
            _ => return None,
        })
    }

    /// The strategy itself, seeded: the one place a kind becomes a strategy. `gp` holds
    /// the GP's settings (alone or under `auto`), `auto` when `auto` hands over.
    pub fn build(
        &self,
        seed: u64,
        gp: sculpt_search::GpSettings,
        auto: sculpt_search::AutoSettings,
    ) -> Result<Box<dyn sculpt_search::Strategy>> {
        use sculpt_search::{AutoSearch, GpSearch, Nsga2, Nsga2Settings, RandomSearch};
        Ok(match *self {
            StrategyKind::Random => Box::new(RandomSearch::new(seed)),
            StrategyKind::Nsga2 { population } => Box::new(Nsga2::new(
                Nsga2Settings::default().with_population_size(population)?,
                seed,
            )),
            StrategyKind::Gp => Box::new(GpSearch::new(gp, seed)),
            StrategyKind::Auto { population } => Box::new(AutoSearch::new(
                auto,
                gp,
                Nsga2Settings::default().with_population_size(population)?,
                seed,
            )),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            StrategyKind::Random => "random",
            StrategyKind::Nsga2 { .. } => "nsga2",
            StrategyKind::Gp => "gp",
            StrategyKind::Auto { .. } => "auto",
        }
    }
}

/// The values a campaign searches for one knob.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum KnobDomain {
    /// A float range, uniform or log-uniform.
    Range { low: f64, high: f64, log: bool },
    /// A list of values (numbers or names).
    Choices(Vec<ParamValue>),
    /// One value for every trial: not searched, but applied and recorded.
    Fixed(ParamValue),
    /// The on/off switch of an optional range (0 off, 1 on); sets nothing itself.
    Switch,
}

/// A campaign's `[plan]` table, as plan-file text, and where it starts in the file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BasePlan {
    pub text: String,
    #[serde(skip)]
    pub at: (usize, usize),
}

/// What a campaign searches for one knob, and on which layers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnobSearch {
    /// The knob's name in the knob table.
    pub knob: String,
    /// Layer-name pattern (`*` matches any run of characters); `*` for global knobs.
    pub layers: String,
    pub domain: KnobDomain,
    /// Whether the knob may also be off: a switch dimension `<column>_on`, and the range
    /// searched only while it is on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// Where the knob's table starts in the campaign file (line, column), for errors
    /// found once the teacher is known.
    #[serde(skip)]
    pub at: (usize, usize),
}

/// A sensitivity table (written by `sculpt sensitivity`) that narrows the per-layer
/// ranges of `prune` and `sparsity` and the `bits` choices to what each layer tolerates
/// alone; see `crate::space::narrow`. The rows are read and checked when the campaign is,
/// and the table enters the fingerprint by its content digest, so a campaign whose table
/// changed is a different campaign and its trials never mix with the old ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SensitivityLimit {
    /// The table file, resolved against the campaign file's folder. Left out of the
    /// fingerprint: moving the file does not change what the trials mean.
    #[serde(skip)]
    pub table: PathBuf,
    /// The largest accuracy drop (a fraction: 0.01 is one point of validation accuracy) a
    /// layer may lose alone at the harshest value the space keeps.
    pub max_drop: f64,
    /// FNV-1a digest of the table file's bytes.
    pub digest: String,
    #[serde(skip)]
    pub rows: Vec<sculpt_store::SensitivityRow>,
    /// Where `sensitivity` is in the campaign file (line, column), for errors found once
    /// the teacher is known.
    #[serde(skip)]
    pub at: (usize, usize),
}

/// The knobs a sensitivity table may hold rows of: the ones `narrow` knows the
/// direction of.
pub const SENSITIVITY_KNOBS: &[&str] = &["prune", "sparsity", "bits"];

/// A checked campaign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Campaign {
    pub name: String,
    /// The file it was read from; relative paths in it are resolved against its folder.
    pub path: PathBuf,
    pub seed: u64,
    pub data: String,
    pub teacher: TeacherSource,
    /// The preprocessing `[teacher] preprocessing` declares for a weights teacher (an ONNX
    /// file must have it); it overrides the model's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher_preprocessing: Option<sculpt_nn::Preprocessing>,
    pub finetune: TrainConfig,
    pub strategy: StrategyKind,
    /// A minimum validation accuracy (a fraction): the GP models it as a constraint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_accuracy: Option<f64>,
    pub trials: usize,
    pub max_minutes: Option<f64>,
    /// The second objective, beside the error rate.
    // Left out when it is the default, so campaigns from before the field keep their
    // fingerprint.
    #[serde(skip_serializing_if = "is_latency")]
    pub objective: Objective,
    /// The knobs searched, in the knob table's order.
    pub knobs: Vec<KnobSearch>,
    /// A sensitivity table that narrows the per-layer knobs' domains, if one is given.
    // Absent, it is left out of the serialised campaign, so campaigns without a table keep
    // the fingerprint they had before the field existed and still resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<SensitivityLimit>,
    /// The base compression plan (plan-file TOML) that every trial starts from before its
    /// knobs are set: options that are not searched, such as a sparsity schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<BasePlan>,
    pub profile: DeviceProfile,
    pub latency_batch_size: usize,
    pub budget_ms: Option<f64>,
    /// Left out when it is the roofline, so older campaigns keep their fingerprint.
    #[serde(skip_serializing_if = "is_roofline")]
    pub latency_model: LatencyChoice,
    /// How far over the budget a prediction may be before its trial is screened out; when
    /// unset, the latency model's own measured error (a lookup table's largest calibration
    /// error), and at least [`DEFAULT_SCREEN_MARGIN`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen_margin: Option<f64>,
    /// Successive halving over fine-tuning epochs, when `[halving]` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halving: Option<crate::halving::Halving>,
    /// Evaluations run at once, each by a `sculpt worker` process; unset, the caller's
    /// default. Not part of the campaign's identity: it changes how fast trials come, not
    /// what they mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

/// Line and column (1-based) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The dotted name of the key at a byte offset: the nearest `[table]` header above it and
/// the key on its line.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let key = line.split('=').next()?.trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.trim_start().starts_with('[') {
        return Some(
            key.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    if key.is_empty() || !line.contains('=') {
        return table;
    }
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

/// The candidate closest to `word` by edit distance, when it is close enough to be a typo
/// (at most a third of the word's length, and at least 1).
fn did_you_mean<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let distance = |a: &str, b: &str| -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut previous = row[0];
            row[0] = i;
            for j in 1..=b.len() {
                let current = row[j];
                row[j] = (row[j] + 1)
                    .min(row[j - 1] + 1)
                    .min(previous + usize::from(a[i - 1] != b[j - 1]));
                previous = current;
            }
        }
        row[b.len()]
    };
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Appends a "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`" (or
/// "expected `a` or `b`").
fn with_suggestion(message: String) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message;
    };
    let Some((word, expected)) = rest.split_once('`') else {
        return message;
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match did_you_mean(word, candidates) {
        Some(c) => format!("{message}; did you mean `{c}`?"),
        None => message,
    }
}

impl Source<'_> {
    fn error(
        &self,
        span: Range<usize>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> CampaignError {
        let (line, column) = line_column(self.text, span.start);
        let field = field
            .map(str::to_string)
            .or_else(|| field_at(self.text, span.start))
            .map(|f| format!("field `{f}`: "))
            .unwrap_or_default();
        CampaignError::Config {
            path: self.path.to_path_buf(),
            line,
            column,
            field,
            message: with_suggestion(message.into()),
        }
    }

    fn positive(&self, value: &Spanned<i64>, field: &str) -> Result<usize> {
        if *value.get_ref() < 1 {
            return Err(self.error(
                value.span(),
                Some(field),
                format!("must be at least 1, got {}", value.get_ref()),
            ));
        }
        Ok(*value.get_ref() as usize)
    }

    fn bounds(
        &self,
        low: &Spanned<f64>,
        high: &Spanned<f64>,
        field: &str,
        min: f64,
        max: f64,
    ) -> Result<()> {
        for (value, which) in [(low, "low"), (high, "high")] {
            let v = *value.get_ref();
            if !(v.is_finite() && v >= min && v <= max) {
                return Err(self.error(
                    value.span(),
                    Some(&format!("{field}.{which}")),
                    format!("must lie in [{min}, {max}], got {v}"),
                ));
            }
        }
        if low.get_ref() >= high.get_ref() {
            return Err(self.error(
                high.span(),
                Some(&format!("{field}.high")),
                format!(
                    "must be greater than low ({} >= {})",
                    low.get_ref(),
                    high.get_ref()
                ),
            ));
        }
        Ok(())
    }

    /// Reads every `[search.<knob>]` table from the spanned document, in the knob table's
    /// order. Each is checked against its knob: a range must lie within the knob's values,
    /// choices must be legal values, and a per-layer knob may name a layer pattern.
    fn knob_searches(&self) -> Result<Vec<KnobSearch>> {
        use serde::de::IntoDeserializer;
        let doc = toml::de::DeTable::parse(self.text).map_err(|e| {
            self.error(
                e.span().unwrap_or(0..0),
                None,
                e.message().trim().to_string(),
            )
        })?;
        let Some(search) = doc
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == "search")
            .map(|(_, v)| v)
        else {
            return Ok(Vec::new());
        };
        let toml::de::DeValue::Table(table) = search.get_ref() else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref().as_ref();
            if SEARCH_FIELDS.contains(&name) {
                continue;
            }
            let field = format!("search.{name}");
            let Some(index) = KNOBS.iter().position(|k| k.name == name) else {
                return Err(self.error(
                    key.span(),
                    Some(&field),
                    format!(
                        "unknown field or knob `{name}` (fields: {}; knobs: {}){}",
                        SEARCH_FIELDS.join(", "),
                        sculpt_compress::knobs::knob_names().join(", "),
                        did_you_mean(
                            name,
                            SEARCH_FIELDS
                                .iter()
                                .copied()
                                .chain(KNOBS.iter().map(|k| k.name))
                        )
                        .map(|c| format!("; did you mean `{c}`?"))
                        .unwrap_or_default()
                    ),
                ));
            };
            let knob = &KNOBS[index];
            let raw = RawKnob::deserialize(value.clone().into_deserializer()).map_err(|e| {
                let message = e.message().trim().to_string();
                let span = e.span().unwrap_or(value.span());
                self.error(span, None, message)
            })?;
            let domain = self.knob_domain(knob, &raw, &field, value.span())?;
            let optional = match &raw.optional {
                Some(o) if *o.get_ref() && !matches!(domain, KnobDomain::Range { .. }) => {
                    return Err(self.error(
                        o.span(),
                        Some(&format!("{field}.optional")),
                        "only a range (low and high) can be optional",
                    ))
                }
                Some(o) => *o.get_ref(),
                None => false,
            };
            let layers = match &raw.layers {
                Some(l) if !knob.per_layer => {
                    return Err(self.error(
                        l.span(),
                        Some(&format!("{field}.layers")),
                        format!("`{name}` is a global knob; it takes no layer pattern"),
                    ))
                }
                Some(l) => l.get_ref().clone(),
                None => "*".to_string(),
            };
            found.push((
                index,
                KnobSearch {
                    knob: name.to_string(),
                    layers,
                    domain,
                    optional,
                    at: line_column(self.text, value.span().start),
                },
            ));
        }
        found.sort_by_key(|(i, _)| *i);
        Ok(found.into_iter().map(|(_, k)| k).collect())
    }

    fn knob_domain(
        &self,
        knob: &sculpt_compress::Knob,
        raw: &RawKnob,
        field: &str,
        span: Range<usize>,
    ) -> Result<KnobDomain> {
        let to_param = |v: &toml::Value| -> Option<ParamValue> {
            match v {
                toml::Value::Integer(i) => Some(ParamValue::Int(*i)),
                toml::Value::Float(f) => Some(ParamValue::Float(*f)),
                toml::Value::String(s) => Some(ParamValue::Text(s.clone())),
                _ => None,
            }
        };
        let check = |v: &toml::Value, span: Range<usize>, f: &str| -> Result<ParamValue> {
            let value = to_param(v).ok_or_else(|| {
                self.error(
                    span.clone(),
                    Some(f),
                    format!("expected a number or a string, got {v}"),
                )
            })?;
            knob.check(&value)
                .map_err(|m| self.error(span.clone(), Some(f), m))
        };
        match (&raw.low, &raw.high, &raw.choices, &raw.value) {
            (Some(low), Some(high), None, None) => {
                let sculpt_compress::KnobKind::Float { .. } = knob.kind else {
                    return Err(self.error(
                        low.span(),
                        Some(&format!("{field}.low")),
                        "this knob takes `choices` or `value`, not a range",
                    ));
                };
                for (v, which) in [(low, "low"), (high, "high")] {
                    check(
                        &toml::Value::Float(*v.get_ref()),
                        v.span(),
                        &format!("{field}.{which}"),
                    )?;
                }
                self.bounds(low, high, field, f64::MIN, f64::MAX)?;
                if raw.log && *low.get_ref() <= 0.0 {
                    return Err(self.error(
                        low.span(),
                        Some(&format!("{field}.low")),
                        "must be positive on a log scale",
                    ));
                }
                Ok(KnobDomain::Range {
                    low: *low.get_ref(),
                    high: *high.get_ref(),
                    log: raw.log,
                })
            }
            (None, None, Some(choices), None) => {
                if choices.get_ref().is_empty() {
                    return Err(self.error(
                        choices.span(),
                        Some(&format!("{field}.choices")),
                        "must list at least one value",
                    ));
                }
                let mut values: Vec<ParamValue> = Vec::new();
                for c in choices.get_ref() {
                    let v = check(c, choices.span(), &format!("{field}.choices"))?;
                    if !values.contains(&v) {
                        values.push(v);
                    }
                }
                Ok(KnobDomain::Choices(values))
            }
            (None, None, None, Some(value)) => Ok(KnobDomain::Fixed(check(
                value.get_ref(),
                value.span(),
                &format!("{field}.value"),
            )?)),
            _ => Err(self.error(
                span,
                Some(field),
                "give `low` and `high` (a range), `choices` (a list), or `value` (fixed)",
            )),
        }
    }

    /// Resolves `search.sensitivity`: the table must exist (relative to the campaign file),
    /// read as a sensitivity table, hold rows, and hold only knobs `narrow` understands.
    fn sensitivity(&self, raw: &Spanned<RawSensitivity>, base: &Path) -> Result<SensitivityLimit> {
        let field = "search.sensitivity";
        let max_drop = &raw.get_ref().max_drop;
        if !(max_drop.get_ref().is_finite() && (0.0..=1.0).contains(max_drop.get_ref())) {
            return Err(self.error(
                max_drop.span(),
                Some(&format!("{field}.max_drop")),
                format!(
                    "must lie in [0, 1] (a fraction of accuracy: 0.01 is one point), got {}",
                    max_drop.get_ref()
                ),
            ));
        }
        let table = &raw.get_ref().table;
        let bad =
            |message: String| self.error(table.span(), Some(&format!("{field}.table")), message);
        let path = base.join(table.get_ref());
        if !path.is_file() {
            return Err(bad(format!(
                "{} does not exist or is not a file (write one with `sculpt sensitivity --model DIR --data SPEC --out DIR`)",
                path.display()
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let rows = sculpt_store::read_sensitivity(&path).map_err(|e| bad(e.to_string()))?;
        if rows.is_empty() {
            return Err(bad(format!("{} has no rows", path.display())));
        }
        if let Some(row) = rows
            .iter()
            .find(|r| !SENSITIVITY_KNOBS.contains(&r.knob.as_str()))
        {
            return Err(bad(format!(
                "{} has rows of knob `{}`; a sensitivity table narrows only {}",
                path.display(),
                row.knob,
                SENSITIVITY_KNOBS.join(", ")
            )));
        }
        Ok(SensitivityLimit {
            table: path,
            max_drop: *max_drop.get_ref(),
            digest: format!("{:016x}", digest(&bytes)),
            rows,
            at: line_column(self.text, raw.span().start),
        })
    }

    fn train(&self, raw: &RawTrain, table: &str, defaults: TrainConfig) -> Result<TrainConfig> {
        let mut config = defaults;
        if let Some(v) = &raw.epochs {
            config.epochs = self.positive(v, &format!("{table}.epochs"))?;
        }
        if let Some(v) = &raw.batch_size {
            config.batch_size = self.positive(v, &format!("{table}.batch_size"))?;
        }
        if let Some(v) = &raw.learning_rate {
            if !(v.get_ref().is_finite() && *v.get_ref() > 0.0) {
                return Err(self.error(
                    v.span(),
                    Some(&format!("{table}.learning_rate")),
                    format!("must be positive, got {}", v.get_ref()),
                ));
            }
            config.learning_rate = *v.get_ref();
        }
        if let Some(v) = &raw.weight_decay {
            if !(v.get_ref().is_finite() && *v.get_ref() >= 0.0) {
                return Err(self.error(
                    v.span(),
                    Some(&format!("{table}.weight_decay")),
                    format!("must be zero or positive, got {}", v.get_ref()),
                ));
            }
            config.weight_decay = *v.get_ref();
        }
        Ok(config)
    }
}

impl Campaign {
    /// Reads and checks a campaign file.
    pub fn load(path: &Path) -> Result<Campaign> {
        let text = std::fs::read_to_string(path).map_err(|e| CampaignError::Io {
            path: path.to_path_buf(),
            cause: e,
        })?;
        Self::parse(&text, path)
    }

    /// Checks campaign text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Campaign> {
        let source = Source { path, text };
        // Knob tables first: an unknown key under [search] is reported there, by name,
        // before serde would call the real field it hides missing.
        let knobs = source.knob_searches()?;
        let raw: RawCampaign = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            source.error(span, None, e.message().trim().to_string())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));

        if raw.name.get_ref().trim().is_empty() {
            return Err(source.error(raw.name.span(), Some("name"), "must not be empty"));
        }
        let data =
            sculpt_data::resolve_spec(raw.data.source.get_ref(), base).map_err(|message| {
                source.error(raw.data.source.span(), Some("data.source"), message)
            })?;
        let raw_teacher_train = RawTrain {
            epochs: raw.teacher.epochs.clone(),
            batch_size: raw.teacher.batch_size.clone(),
            learning_rate: raw.teacher.learning_rate.clone(),
            weight_decay: raw.teacher.weight_decay.clone(),
        };
        let teacher_train = source.train(
            &raw_teacher_train,
            "teacher",
            TrainConfig {
                epochs: 60,
                batch_size: 64,
                learning_rate: 2e-3,
                weight_decay: 1e-4,
                seed: raw.seed,
                ..TrainConfig::default()
            },
        )?;
        let teacher = match (&raw.teacher.weights, &raw.teacher.model) {
            (Some(weights), _) if weights.get_ref().ends_with(".onnx") => {
                let file = base.join(weights.get_ref());
                if !file.is_file() {
                    return Err(source.error(
                        weights.span(),
                        Some("teacher.weights"),
                        format!("{} does not exist", file.display()),
                    ));
                }
                if raw.teacher.preprocessing.is_none() {
                    return Err(source.error(
                            weights.span(),
                            Some("teacher.preprocessing"),
                            "an ONNX teacher needs `preprocessing = { scale = …, mean = […], std = […] }` in [teacher]: the inputs it was trained on (a PyTorch model with ToTensor() and Normalize((0.1307,), (0.3081,)) on 8-bit images: scale = 0.00392156862745098, mean = [0.1307], std = [0.3081]; `preprocessing = {}` for raw inputs)",
                        ));
                }
                TeacherSource::Weights(std::fs::canonicalize(&file).unwrap_or(file))
            }
            (Some(weights), _) => {
                let dir = base.join(weights.get_ref());
                if !dir.join(sculpt_nn::io::SPEC_FILE).is_file() {
                    return Err(source.error(
                        weights.span(),
                        Some("teacher.weights"),
                        format!(
                            "{} is not a model directory (it has no {}) or an .onnx file",
                            dir.display(),
                            sculpt_nn::io::SPEC_FILE
                        ),
                    ));
                }
                // Canonical, so the campaign's identity does not depend on how the
                // path was spelled (`m/` against `./m`).
                TeacherSource::Weights(std::fs::canonicalize(&dir).unwrap_or(dir))
            }
            (None, Some(model)) => {
                if !sculpt_nn::zoo::MODELS.contains(&model.get_ref().as_str()) {
                    return Err(source.error(
                        model.span(),
                        Some("teacher.model"),
                        format!(
                            "unknown model `{}` (known: {})",
                            model.get_ref(),
                            sculpt_nn::zoo::MODELS.join(", ")
                        ),
                    ));
                }
                TeacherSource::Zoo {
                    model: model.get_ref().clone(),
                    train: teacher_train,
                }
            }
            (None, None) => {
                return Err(source.error(
                    raw.name.span(),
                    Some("teacher"),
                    "give either `model` (a zoo model to train) or `weights` (a model directory)",
                ))
            }
        };
        let finetune = source.train(
            &raw.finetune,
            "finetune",
            TrainConfig {
                epochs: 10,
                batch_size: 64,
                learning_rate: 1e-3,
                weight_decay: 0.0,
                seed: raw.seed,
                ..TrainConfig::default()
            },
        )?;

        let search = &raw.search;
        let trials = source.positive(&search.trials, "search.trials")?;
        let population = match &search.population {
            Some(p) => {
                let n = source.positive(p, "search.population")?;
                if n < 2 {
                    return Err(source.error(
                        p.span(),
                        Some("search.population"),
                        "must be at least 2",
                    ));
                }
                n
            }
            None => DEFAULT_POPULATION,
        };
        let name = search
            .strategy
            .as_ref()
            .map_or("auto", |s| s.get_ref().as_str());
        let Some(strategy) = StrategyKind::parse(name, population) else {
            return Err(source.error(
                search.strategy.as_ref().map_or(0..0, |s| s.span()),
                Some("search.strategy"),
                format!("unknown strategy `{name}` (known: {STRATEGY_NAMES})"),
            ));
        };
        let min_accuracy = match &search.min_accuracy {
            Some(m) if !(0.0..=1.0).contains(m.get_ref()) => {
                return Err(source.error(
                    m.span(),
                    Some("search.min_accuracy"),
                    format!("must be a fraction between 0 and 1, got {}", m.get_ref()),
                ))
            }
            Some(m) => Some(*m.get_ref()),
            None => None,
        };
        let max_minutes = match &search.max_minutes {
            Some(m) if !(m.get_ref().is_finite() && *m.get_ref() > 0.0) => {
                return Err(source.error(m.span(), Some("search.max_minutes"), "must be positive"))
            }
            Some(m) => Some(*m.get_ref()),
            None => None,
        };
        let objective = match &search.objective {
            None => Objective::Latency,
            Some(o) => match o.get_ref().as_str() {
                "latency" => Objective::Latency,
                "size" => Objective::Size,
                other => {
                    return Err(source.error(
                        o.span(),
                        Some("search.objective"),
                        format!("unknown objective `{other}` (known: latency, size)"),
                    ))
                }
            },
        };
        let sensitivity = match &search.sensitivity {
            Some(raw) => Some(source.sensitivity(raw, base)?),
            None => None,
        };
        let profile_name = raw.latency.profile.get_ref();
        let profile_path = base.join(profile_name);
        let profile = if profile_path.is_file() {
            DeviceProfile::load(&profile_path.to_string_lossy())
        } else {
            DeviceProfile::load(profile_name)
        }
        .map_err(|e| {
            source.error(
                raw.latency.profile.span(),
                Some("latency.profile"),
                e.to_string(),
            )
        })?;
        let latency_batch_size = match &raw.latency.batch_size {
            Some(b) => source.positive(b, "latency.batch_size")?,
            None => 1,
        };
        let budget_ms = match &raw.latency.budget_ms {
            Some(b) if !(b.get_ref().is_finite() && *b.get_ref() > 0.0) => {
                return Err(source.error(
                    b.span(),
                    Some("latency.budget_ms"),
                    format!("must be positive, got {}", b.get_ref()),
                ))
            }
            Some(b) => Some(*b.get_ref()),
            None => None,
        };

        let latency_model = match raw
            .latency
            .model
            .as_ref()
            .map(|m| (m, m.get_ref().as_str()))
        {
            None | Some((_, "roofline")) => LatencyChoice::Roofline,
            Some((m, "lut")) => {
                let lut = raw.latency.lut.as_ref().ok_or_else(|| {
                    source.error(
                        m.span(),
                        Some("latency.lut"),
                        "model = \"lut\" needs `lut = \"PATH\"`, a table written by `sculpt profile`",
                    )
                })?;
                let path = base.join(lut.get_ref());
                let table = sculpt_latency::Lut::load(&path)
                    .map_err(|e| source.error(lut.span(), Some("latency.lut"), e.to_string()))?;
                if table.batch != latency_batch_size {
                    return Err(source.error(
                        lut.span(),
                        Some("latency.lut"),
                        format!(
                            "the table was profiled at batch {}, the campaign measures batch {}",
                            table.batch, latency_batch_size
                        ),
                    ));
                }
                LatencyChoice::Lut(std::fs::canonicalize(&path).unwrap_or(path))
            }
            Some((_, "measured")) => LatencyChoice::Measured {
                threads: match &raw.latency.threads {
                    Some(t) => {
                        let n = source.positive(t, "latency.threads")?;
                        if n > sculpt_runtime::max_threads() {
                            return Err(source.error(
                                t.span(),
                                Some("latency.threads"),
                                format!(
                                    "{n} threads: use 1 to {} on this machine ({} cores)",
                                    sculpt_runtime::max_threads(),
                                    sculpt_runtime::cores()
                                ),
                            ));
                        }
                        n
                    }
                    None => 1,
                },
            },
            Some((m, other)) => {
                return Err(source.error(
                    m.span(),
                    Some("latency.model"),
                    format!("unknown latency model `{other}` (known: roofline, lut, measured)"),
                ))
            }
        };
        let screen_margin = match &raw.latency.screen_margin {
            Some(m) if !(m.get_ref().is_finite() && *m.get_ref() >= 0.0) => {
                return Err(source.error(
                    m.span(),
                    Some("latency.screen_margin"),
                    format!("must be 0 or more, got {}", m.get_ref()),
                ))
            }
            Some(m) => Some(*m.get_ref()),
            None => None,
        };

        let plan = match &raw.plan {
            Some(table) => {
                if table.get_ref().contains_key("finetune") {
                    return Err(source.error(
                        table.span(),
                        Some("plan.finetune"),
                        "a campaign fine-tunes by its own [finetune] table",
                    ));
                }
                Some(BasePlan {
                    text: toml::to_string(table.get_ref())
                        .map_err(|e| source.error(table.span(), Some("plan"), e.to_string()))?,
                    at: line_column(text, table.span().start),
                })
            }
            None => None,
        };
        let halving = match &raw.halving {
            None => None,
            Some(h) => {
                let h = h.get_ref();
                let defaults = crate::halving::Halving::default();
                let min_epochs = match &h.min_epochs {
                    Some(v) => source.positive(v, "halving.min_epochs")?,
                    None => defaults.min_epochs,
                };
                let reduction_factor = match &h.reduction_factor {
                    Some(v) if *v.get_ref() < 2 => {
                        return Err(source.error(
                            v.span(),
                            Some("halving.reduction_factor"),
                            format!("must be at least 2, got {}", v.get_ref()),
                        ))
                    }
                    Some(v) => *v.get_ref() as usize,
                    None => defaults.reduction_factor,
                };
                let brackets = match &h.brackets {
                    Some(v) => source.positive(v, "halving.brackets")?,
                    None => defaults.brackets,
                };
                if min_epochs >= finetune.epochs {
                    return Err(source.error(
                        h.min_epochs
                            .as_ref()
                            .map_or(raw.halving.as_ref().map_or(0..0, |t| t.span()), |v| {
                                v.span()
                            }),
                        Some("halving.min_epochs"),
                        format!(
                            "the first rung ({min_epochs} epochs) must come before the end of fine-tuning ({} epochs)",
                            finetune.epochs
                        ),
                    ));
                }
                Some(crate::halving::Halving {
                    min_epochs,
                    reduction_factor,
                    brackets,
                })
            }
        };
        let workers = match &search.workers {
            Some(w) => Some(source.positive(w, "search.workers")?),
            None => None,
        };
        Ok(Campaign {
            name: raw.name.get_ref().trim().to_string(),
            path: path.to_path_buf(),
            seed: raw.seed,
            data,
            teacher,
            teacher_preprocessing: raw
                .teacher
                .preprocessing
                .as_ref()
                .map(|p| p.get_ref().clone()),
            finetune,
            strategy,
            min_accuracy,
            trials,
            max_minutes,
            objective,
            knobs,
            sensitivity,
            plan,
            profile,
            latency_batch_size,
            budget_ms,
            latency_model,
            screen_margin,
            halving,
            workers,
        })
    }

    /// Sets the seed everywhere the file's `seed` goes: the data split, the teacher's
    /// training and the fine-tuning (`sculpt run --seed`).
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
        self.finetune.seed = seed;
        if let TeacherSource::Zoo { train, .. } = &mut self.teacher {
            train.seed = seed;
        }
    }

    /// A digest of everything that changes what a stored trial means. The trial count and
    /// the time limit are left out, so a finished campaign can be extended.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_string(&self.identity_campaign()).unwrap_or_default();
        format!("{:016x}", digest(text.as_bytes()))
    }

    /// What the fingerprint digests, as JSON: stored with the campaign so that a refusal
    /// can say which settings changed.
    pub fn identity(&self) -> serde_json::Value {
        serde_json::to_value(self.identity_campaign()).unwrap_or_default()
    }

    fn identity_campaign(&self) -> Campaign {
        let mut identity = self.clone();
        identity.trials = 0;
        identity.max_minutes = None;
        identity.workers = None;
        identity.path = PathBuf::new();
        identity
    }
}

/// FNV-1a of `bytes`: stable across Rust versions and machines, unlike the std hasher.
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

pub use sculpt_compress::matches_pattern;

#[cfg(test)]
mod tests {
    use super::*;

    pub const QUICKSTART: &str = include_str!("../../../experiments/quickstart.toml");

    fn parse(text: &str) -> Result<Campaign> {
        Campaign::parse(text, Path::new("experiments/x.toml"))
    }

    #[test]
    fn halving_and_workers_are_read_and_checked() {
        let text = format!(
            "{}\n[halving]\nmin_epochs = 2\nreduction_factor = 4\nbrackets = 2\n",
            QUICKSTART.replace("trials = 80", "trials = 80\nworkers = 2")
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.halving,
            Some(crate::halving::Halving {
                min_epochs: 2,
                reduction_factor: 4,
                brackets: 2
            })
        );
        assert_eq!(c.workers, Some(2));
        // Workers do not change what a trial means; halving does.
        let plain = parse(QUICKSTART).unwrap();
        let mut one = c.clone();
        one.workers = Some(1);
        assert_eq!(one.fingerprint(), c.fingerprint());
        assert_ne!(plain.fingerprint(), c.fingerprint());
        let cases = [
            (
                "reduction_factor = 4",
                "reduction_factor = 1",
                "halving.reduction_factor",
                "at least 2",
            ),
            (
                "min_epochs = 2",
                "min_epochs = 10",
                "halving.min_epochs",
                "before the end of fine-tuning",
            ),
            (
                "brackets = 2",
                "brackets = 0",
                "halving.brackets",
                "at least 1",
            ),
            (
                "min_epochs = 2",
                "min_epoch = 2",
                "min_epoch",
                "did you mean `min_epochs`?",
            ),
            ("workers = 2", "workers = 0", "search.workers", "at least 1"),
        ];
        for (from, to, field, says) in cases {
            let bad = text.replace(from, to);
            let err = parse(&bad).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains(says), "{to}: {err}");
            assert!(
                err.contains(&format!(":{}:", line_of(&bad, to))),
                "{to}: {err}"
            );
        }
    }

    #[test]
    fn quickstart_parses() {
        let c = parse(QUICKSTART).unwrap();
        assert_eq!(c.name, "quickstart");
        assert!(matches!(c.strategy, StrategyKind::Nsga2 { .. }));
        let bits = c.knobs.iter().find(|k| k.knob == "bits").unwrap();
        assert_eq!(
            bits.domain,
            KnobDomain::Choices([2, 3, 4, 5, 6, 8].map(ParamValue::Int).to_vec())
        );
        // Knobs come in table order, whatever their order in the file.
        let order: Vec<&str> = c.knobs.iter().map(|k| k.knob.as_str()).collect();
        assert_eq!(order, ["temperature", "alpha", "prune", "bits"]);
        assert_eq!(c.fingerprint(), parse(QUICKSTART).unwrap().fingerprint());
        let more = parse(&QUICKSTART.replace("trials = 80", "trials = 100")).unwrap();
        assert_eq!(c.fingerprint(), more.fingerprint());
        let other = parse(&QUICKSTART.replace("seed = 42", "seed = 43")).unwrap();
        assert_ne!(c.fingerprint(), other.fingerprint());
        assert_eq!(c.objective, Objective::Latency);
        let size =
            parse(&QUICKSTART.replace("trials = 80", "trials = 80\nobjective = \"size\"")).unwrap();
        assert_eq!(size.objective, Objective::Size);
        assert_ne!(c.fingerprint(), size.fingerprint());
        let bad = QUICKSTART.replace("trials = 80", "trials = 80\nobjective = \"speed\"");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("search.objective") && err.contains("unknown objective `speed`"),
            "{err}"
        );
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn errors_name_line_and_field() {
        let bad = QUICKSTART.replace("trials = 80", "trials = \"many\"");
        let err = parse(&bad).unwrap_err().to_string();
        let line = line_of(&bad, "trials = \"many\"");
        assert!(
            err.starts_with(&format!("experiments/x.toml:{line}:")),
            "{err}"
        );
        assert!(err.contains("search.trials"), "{err}");

        let bad = QUICKSTART.replace("trials = 80", "trails = 80");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.contains("trails"), "{err}");
        assert!(
            err.contains(&format!(":{}:", line_of(&bad, "trails"))),
            "{err}"
        );

        let bad = QUICKSTART.replace("high = 0.8", "high = 1.5");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.contains("search.prune.high"), "{err}");
        assert!(
            err.contains(&format!(":{}:", line_of(&bad, "high = 1.5"))),
            "{err}"
        );

        let bad = QUICKSTART.replace("choices = [2, 3, 4, 5, 6, 8]", "choices = [1, 4]");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("search.bits.choices") && err.contains("1 is not allowed"),
            "{err}"
        );
        let line = line_of(&bad, "choices = [1, 4]");
        assert!(err.contains(&format!(":{line}:")), "{err}");

        let bad = QUICKSTART.replace("[search.bits]", "[search.bitz]");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.contains("unknown field or knob `bitz`"), "{err}");
        assert!(err.contains("did you mean `bits`?"), "{err}");
        // serde's own unknown-field errors get a suggestion too.
        let typo = QUICKSTART.replace("trials = 80", "trails = 80");
        let typo_err = parse(&typo).unwrap_err().to_string();
        assert!(typo_err.contains("did you mean `trials`?"), "{typo_err}");
        assert_eq!(did_you_mean("xyzzy", ["trials", "seed"]), None);
        assert!(
            err.contains(&format!(":{}:", line_of(&bad, "[search.bitz]"))),
            "{err}"
        );

        let bad = QUICKSTART.replace("[search.alpha]", "[search.alpha]\nlayers = \"fc*\"");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.contains("global knob"), "{err}");

        let bad = QUICKSTART.replace("low = 0.1", "low = \"small\"");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains(&format!(":{}:", line_of(&bad, "low = \"small\""))),
            "{err}"
        );

        let bad = QUICKSTART.replace("budget_ms = ", "budget_ms = -");
        assert!(parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("latency.budget_ms"));

        let bad = QUICKSTART.replace("strategy = \"nsga2\"", "strategy = \"tpe\"");
        assert!(parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("unknown strategy `tpe`"));

        let bad = QUICKSTART.replace("[search.alpha]", "[search.alpha");
        let err = parse(&bad).unwrap_err();
        assert!(err.is_config());
        assert!(
            err.to_string()
                .contains(&format!(":{}:", line_of(&bad, "[search.alpha"))),
            "{err}"
        );
    }

    #[test]
    fn sensitivity_table_is_resolved_checked_and_fingerprinted() {
        let tmp = tempfile::tempdir().unwrap();
        let row = |layer: &str, knob: &str, drop: f64| sculpt_store::SensitivityRow {
            layer: layer.into(),
            knob: knob.into(),
            value: 4.0,
            accuracy: 0.9,
            accuracy_drop: drop,
            size_bytes: 1,
            params: 1,
        };
        std::fs::create_dir(tmp.path().join("tables")).unwrap();
        let table = tmp.path().join("tables/sens.parquet");
        std::fs::write(tmp.path().join("tables/notes.txt"), "layer,knob\n").unwrap();
        sculpt_store::write_sensitivity(&table, &[row("fc1", "bits", 0.0)]).unwrap();
        let path = tmp.path().join("x.toml");
        let with = |line: &str| {
            QUICKSTART.replace("population = 16\n", &format!("population = 16\n{line}\n"))
        };
        let text = with("sensitivity = { table = \"tables/sens.parquet\", max_drop = 0.01 }");
        let c = Campaign::parse(&text, &path).unwrap();
        let limit = c.sensitivity.as_ref().unwrap();
        assert_eq!(limit.table, table);
        assert_eq!(limit.max_drop, 0.01);
        assert_eq!(limit.rows, [row("fc1", "bits", 0.0)]);
        // The same table, as a [search.sensitivity] table, is the same campaign.
        let as_table = QUICKSTART.replace(
            "[search.temperature]",
            "[search.sensitivity]\ntable = \"tables/sens.parquet\"\nmax_drop = 0.01\n\n[search.temperature]",
        );
        assert_eq!(
            Campaign::parse(&as_table, &path).unwrap().fingerprint(),
            c.fingerprint()
        );
        // Without a table the fingerprint is what it was before the field existed.
        let plain = Campaign::parse(QUICKSTART, &path).unwrap();
        assert!(!serde_json::to_string(&plain)
            .unwrap()
            .contains("sensitivity"));
        assert_ne!(plain.fingerprint(), c.fingerprint());
        // Another max_drop, or other content in the table, is another campaign.
        let looser = with("sensitivity = { table = \"tables/sens.parquet\", max_drop = 0.02 }");
        assert_ne!(
            Campaign::parse(&looser, &path).unwrap().fingerprint(),
            c.fingerprint()
        );
        sculpt_store::write_sensitivity(&table, &[row("fc1", "bits", 0.5)]).unwrap();
        assert_ne!(
            Campaign::parse(&text, &path).unwrap().fingerprint(),
            c.fingerprint()
        );

        let line = line_of(&text, "sensitivity = {");
        for (line_text, field, needle) in [
            (
                "sensitivity = { table = \"tables/none.parquet\", max_drop = 0.01 }",
                "search.sensitivity.table",
                "none.parquet does not exist",
            ),
            (
                "sensitivity = { table = \"tables/sens.parquet\", max_drop = 5.0 }",
                "search.sensitivity.max_drop",
                "must lie in [0, 1]",
            ),
            (
                "sensitivity = { table = \"tables/sens.parquet\", max_drop = 0.01, drop = 1 }",
                "",
                "unknown field `drop`",
            ),
            (
                "sensitivity = { table = \"tables/sens.parquet\" }",
                "",
                "missing field `max_drop`",
            ),
            (
                "sensitivity = { table = \"tables/notes.txt\", max_drop = 0.01 }",
                "search.sensitivity.table",
                "not a readable parquet table",
            ),
        ] {
            let bad = with(line_text);
            let err = Campaign::parse(&bad, &path).unwrap_err();
            assert!(err.is_config(), "{err}");
            let err = err.to_string();
            assert!(
                err.contains(&format!("x.toml:{line}:"))
                    && err.contains(field)
                    && err.contains(needle),
                "{err}"
            );
        }
        sculpt_store::write_sensitivity(&table, &[row("fc1", "rank", 0.0)]).unwrap();
        let err = Campaign::parse(&text, &path).unwrap_err().to_string();
        assert!(err.contains("rows of knob `rank`"), "{err}");
    }

    #[test]
    fn patterns() {
        assert!(matches_pattern("fc*", "fc1"));
        assert!(matches_pattern("*", "conv2"));
        assert!(matches_pattern("conv*.b", "conv1.b"));
        assert!(!matches_pattern("conv*", "fc1"));
        assert!(matches_pattern("fc2", "fc2"));
        assert!(!matches_pattern("fc2", "fc21"));
    }
}
