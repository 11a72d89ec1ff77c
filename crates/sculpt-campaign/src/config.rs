//! The campaign file. It is read into raw structs that mirror the TOML (unknown fields are
//! errors, so typos do not pass silently), then resolved into a checked `Campaign`. Every
//! error names the file, the line and column, and the field.

use std::ops::Range;
use std::path::{Path, PathBuf};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSearch {
    strategy: Spanned<String>,
    trials: Spanned<i64>,
    population: Option<Spanned<i64>>,
    max_minutes: Option<Spanned<f64>>,
    temperature: RawRange,
    alpha: RawRange,
    prune: RawLayerRange,
    bits: RawLayerChoices,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    low: Spanned<f64>,
    high: Spanned<f64>,
    #[serde(default)]
    log: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayerRange {
    #[serde(default = "all_layers")]
    layers: Spanned<String>,
    low: Spanned<f64>,
    high: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayerChoices {
    #[serde(default = "all_layers")]
    layers: Spanned<String>,
    choices: Spanned<Vec<i64>>,
}

fn all_layers() -> Spanned<String> {
    Spanned::new(0..0, "*".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    profile: Spanned<String>,
    #[serde(default)]
    batch_size: Option<Spanned<i64>>,
    budget_ms: Option<Spanned<f64>>,
}

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
    Nsga2 { population: usize },
}

impl StrategyKind {
    pub fn name(&self) -> &'static str {
        match self {
            StrategyKind::Random => "random",
            StrategyKind::Nsga2 { .. } => "nsga2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FloatRange {
    pub low: f64,
    pub high: f64,
    pub log: bool,
}

/// A checked campaign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Campaign {
    pub name: String,
    /// The file it was read from; relative paths in it are resolved against its folder.
    pub path: PathBuf,
    pub seed: u64,
    pub data: String,
    pub teacher: TeacherSource,
    pub finetune: TrainConfig,
    pub strategy: StrategyKind,
    pub trials: usize,
    pub max_minutes: Option<f64>,
    pub temperature: FloatRange,
    pub alpha: FloatRange,
    /// Layer name pattern (`*` matches any run of characters) and prune-ratio range.
    pub prune_layers: String,
    pub prune: FloatRange,
    pub bits_layers: String,
    pub bits_choices: Vec<u32>,
    pub profile: DeviceProfile,
    pub latency_batch_size: usize,
    pub budget_ms: Option<f64>,
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
            message: message.into(),
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

    fn range(&self, raw: &RawRange, field: &str, min: f64, max: f64) -> Result<FloatRange> {
        self.bounds(&raw.low, &raw.high, field, min, max)?;
        if raw.log && *raw.low.get_ref() <= 0.0 {
            return Err(self.error(
                raw.low.span(),
                Some(&format!("{field}.low")),
                "must be positive on a log scale",
            ));
        }
        Ok(FloatRange {
            low: *raw.low.get_ref(),
            high: *raw.high.get_ref(),
            log: raw.log,
        })
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
            source: e,
        })?;
        Self::parse(&text, path)
    }

    /// Checks campaign text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Campaign> {
        let source = Source { path, text };
        let raw: RawCampaign = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            source.error(span, None, e.message().trim().to_string())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));

        if raw.name.get_ref().trim().is_empty() {
            return Err(source.error(raw.name.span(), Some("name"), "must not be empty"));
        }
        let data =
            sculpt_nn::data::resolve_spec(raw.data.source.get_ref(), base).map_err(|message| {
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
        let teacher =
            match (&raw.teacher.weights, &raw.teacher.model) {
                (Some(weights), _) => {
                    let dir = base.join(weights.get_ref());
                    if !dir.join(sculpt_nn::io::SPEC_FILE).is_file() {
                        return Err(source.error(
                            weights.span(),
                            Some("teacher.weights"),
                            format!(
                                "{} is not a model directory (it has no {})",
                                dir.display(),
                                sculpt_nn::io::SPEC_FILE
                            ),
                        ));
                    }
                    TeacherSource::Weights(dir)
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
                (None, None) => return Err(source.error(
                    raw.name.span(),
                    Some("teacher"),
                    "give either `model` (a zoo model to train) or `weights` (a model directory)",
                )),
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
        let strategy = match search.strategy.get_ref().as_str() {
            "random" => StrategyKind::Random,
            "nsga2" => {
                let population = match &search.population {
                    Some(p) => source.positive(p, "search.population")?,
                    None => 50,
                };
                if population < 2 {
                    return Err(source.error(
                        search.population.as_ref().unwrap().span(),
                        Some("search.population"),
                        "must be at least 2",
                    ));
                }
                StrategyKind::Nsga2 { population }
            }
            other => {
                return Err(source.error(
                    search.strategy.span(),
                    Some("search.strategy"),
                    format!("unknown strategy `{other}` (known: random, nsga2)"),
                ))
            }
        };
        let max_minutes = match &search.max_minutes {
            Some(m) if !(m.get_ref().is_finite() && *m.get_ref() > 0.0) => {
                return Err(source.error(m.span(), Some("search.max_minutes"), "must be positive"))
            }
            Some(m) => Some(*m.get_ref()),
            None => None,
        };
        let temperature = source.range(&search.temperature, "search.temperature", 1e-3, 100.0)?;
        let alpha = source.range(&search.alpha, "search.alpha", 0.0, 1.0)?;
        source.bounds(
            &search.prune.low,
            &search.prune.high,
            "search.prune",
            0.0,
            0.99,
        )?;
        let prune = FloatRange {
            low: *search.prune.low.get_ref(),
            high: *search.prune.high.get_ref(),
            log: false,
        };
        let choices = search.bits.choices.get_ref();
        if choices.is_empty() {
            return Err(source.error(
                search.bits.choices.span(),
                Some("search.bits.choices"),
                "must list at least one bit width",
            ));
        }
        if let Some(bad) = choices
            .iter()
            .find(|b| !(2..=8).contains(*b) && **b != 16 && **b != 32)
        {
            return Err(source.error(
                search.bits.choices.span(),
                Some("search.bits.choices"),
                format!("bit width {bad} is not supported (use 2 to 8, 16 or 32)"),
            ));
        }
        let mut bits_choices: Vec<u32> = choices.iter().map(|&b| b as u32).collect();
        bits_choices.sort_unstable();
        bits_choices.dedup();

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

        Ok(Campaign {
            name: raw.name.get_ref().trim().to_string(),
            path: path.to_path_buf(),
            seed: raw.seed,
            data,
            teacher,
            finetune,
            strategy,
            trials,
            max_minutes,
            temperature,
            alpha,
            prune_layers: search.prune.layers.get_ref().clone(),
            prune,
            bits_layers: search.bits.layers.get_ref().clone(),
            bits_choices,
            profile,
            latency_batch_size,
            budget_ms,
        })
    }

    /// A digest of everything that changes what a stored trial means. The trial count and
    /// the time limit are left out, so a finished campaign can be extended.
    pub fn fingerprint(&self) -> String {
        let mut identity = self.clone();
        identity.trials = 0;
        identity.max_minutes = None;
        identity.path = PathBuf::new();
        let text = serde_json::to_string(&identity).unwrap_or_default();
        format!("{:016x}", digest(text.as_bytes()))
    }
}

/// FNV-1a of `bytes`: stable across Rust versions and machines, unlike the std hasher.
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const QUICKSTART: &str = include_str!("../../../experiments/quickstart.toml");

    fn parse(text: &str) -> Result<Campaign> {
        Campaign::parse(text, Path::new("experiments/x.toml"))
    }

    #[test]
    fn quickstart_parses() {
        let c = parse(QUICKSTART).unwrap();
        assert_eq!(c.name, "quickstart");
        assert!(matches!(c.strategy, StrategyKind::Nsga2 { .. }));
        assert_eq!(c.bits_choices, vec![2, 3, 4, 5, 6, 8]);
        assert_eq!(c.fingerprint(), parse(QUICKSTART).unwrap().fingerprint());
        let more = parse(&QUICKSTART.replace("trials = 80", "trials = 100")).unwrap();
        assert_eq!(c.fingerprint(), more.fingerprint());
        let other = parse(&QUICKSTART.replace("seed = 42", "seed = 43")).unwrap();
        assert_ne!(c.fingerprint(), other.fingerprint());
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
            err.contains("search.bits.choices") && err.contains("bit width 1"),
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
    fn patterns() {
        assert!(matches_pattern("fc*", "fc1"));
        assert!(matches_pattern("*", "conv2"));
        assert!(matches_pattern("conv*.b", "conv1.b"));
        assert!(!matches_pattern("conv*", "fc1"));
        assert!(matches_pattern("fc2", "fc2"));
        assert!(!matches_pattern("fc2", "fc21"));
    }
}
