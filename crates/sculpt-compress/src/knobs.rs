//! The knob table: the one place that knows every compression knob. Each entry says
//! whether the knob is global or per layer, which values it takes, which layers of a graph
//! it can address, how it sets a [`CompressionPlan`] and how it reads one back. A trial's
//! parameters are a map from column name (`temperature`, `bits_fc1`) to [`ParamValue`],
//! as Optuna stores `params`; the search space, the record and the frame are all derived
//! from this table, so adding a knob is one entry here plus the pass that uses it.

use sculpt_nn::Graph;
use serde::{Deserialize, Serialize};

use crate::activations::Calibration;
use crate::plan::{CompressionPlan, DistillKind, Granularity, Importance, LayerPlan};

/// One parameter value: a number or a named choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Text(String),
}

impl ParamValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Float(f) => Some(*f),
            ParamValue::Text(_) => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            ParamValue::Text(t) => Some(t),
            _ => None,
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Text(t) => write!(f, "{t}"),
        }
    }
}

/// The values a knob takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KnobKind {
    /// A real number in `[low, high]`, or `[low, high)` when `high_open`, or `(low, high]`
    /// when `low_open`.
    Float {
        low: f64,
        high: f64,
        low_open: bool,
        high_open: bool,
    },
    /// An integer from a fixed set.
    Int(&'static [i64]),
    /// A named choice from a fixed set.
    Text(&'static [&'static str]),
}

/// One knob: its name, scope, values and codec.
pub struct Knob {
    pub name: &'static str,
    pub per_layer: bool,
    pub kind: KnobKind,
    pub help: &'static str,
    /// The layers of a graph this knob can address (empty for global knobs).
    pub layers: fn(&Graph) -> Vec<String>,
    /// Sets the knob in a plan; the value has passed [`Knob::check`]. `layer` is empty for
    /// global knobs.
    pub set: fn(&mut CompressionPlan, &str, &ParamValue),
    /// Reads the knob back from a plan.
    pub get: fn(&CompressionPlan, &str) -> ParamValue,
}

impl std::fmt::Debug for Knob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knob").field("name", &self.name).finish()
    }
}

/// The bit widths a weight can have: integer codes of 2 to 8 bits, half precision, float.
pub const BIT_WIDTHS: &[i64] = &[2, 3, 4, 5, 6, 7, 8, 16, 32];

/// The bit widths an activation can have: integer codes of 2 to 8 bits, or float.
pub const ACT_BIT_WIDTHS: &[i64] = &[2, 3, 4, 5, 6, 7, 8, 32];

impl Knob {
    /// The column (and search dimension) name of this knob at `layer`.
    pub fn column(&self, layer: &str) -> String {
        if self.per_layer {
            format!("{}_{layer}", self.name)
        } else {
            self.name.to_string()
        }
    }

    /// Checks a value against the knob's kind; the message says what is allowed.
    pub fn check(&self, value: &ParamValue) -> Result<ParamValue, String> {
        match (self.kind, value) {
            (
                KnobKind::Float {
                    low,
                    high,
                    low_open,
                    high_open,
                },
                v,
            ) => {
                let x = v
                    .as_f64()
                    .ok_or_else(|| format!("expected a number, got \"{v}\""))?;
                let above = if low_open { x > low } else { x >= low };
                let below = if high_open { x < high } else { x <= high };
                if !(x.is_finite() && above && below) {
                    return Err(format!(
                        "must lie in {}{low}, {high}{}, got {x}",
                        if low_open { "(" } else { "[" },
                        if high_open { ")" } else { "]" }
                    ));
                }
                Ok(ParamValue::Float(x))
            }
            (KnobKind::Int(allowed), v) => {
                let x = v
                    .as_f64()
                    .ok_or_else(|| format!("expected an integer, got \"{v}\""))?;
                if x.fract() != 0.0 || !allowed.contains(&(x as i64)) {
                    return Err(format!(
                        "{x} is not allowed (use one of {})",
                        allowed
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Ok(ParamValue::Int(x as i64))
            }
            (KnobKind::Text(allowed), v) => {
                let t = v
                    .as_text()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                if allowed.contains(&t.as_str()) {
                    return Ok(ParamValue::Text(t));
                }
                // N:M patterns are open-ended; the granularity knob checks them itself, and
                // writes them one way ("2 : 4" is "2:4").
                if self.name == "granularity" {
                    return Granularity::parse(&t).map(|g| ParamValue::Text(g.name()));
                }
                Err(format!(
                    "unknown choice \"{t}\" (use one of {})",
                    allowed.join(", ")
                ))
            }
        }
    }
}

fn no_layers(_: &Graph) -> Vec<String> {
    Vec::new()
}

fn weight_layers(g: &Graph) -> Vec<String> {
    g.spec.weight_layers()
}

/// Layers low rank can factorise: Linear, and convolutions without groups.
fn factorisable_layers(g: &Graph) -> Vec<String> {
    g.spec
        .nodes
        .iter()
        .filter(|n| match n.op {
            sculpt_nn::Op::Linear { .. } => true,
            sculpt_nn::Op::Conv2d { groups, .. } => groups == 1,
            _ => false,
        })
        .map(|n| n.name.clone())
        .collect()
}

fn float(v: &ParamValue) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn text(v: &ParamValue) -> String {
    v.as_text().unwrap_or_default().to_string()
}

fn layer<'a>(plan: &'a mut CompressionPlan, name: &str) -> &'a mut LayerPlan {
    plan.layers.entry(name.to_string()).or_default()
}

fn read(plan: &CompressionPlan, name: &str) -> LayerPlan {
    plan.layers.get(name).cloned().unwrap_or_default()
}

/// Every knob, in column order.
pub static KNOBS: &[Knob] = &[
    Knob {
        name: "temperature",
        per_layer: false,
        kind: KnobKind::Float {
            low: 0.0,
            high: 100.0,
            low_open: true,
            high_open: false,
        },
        help: "distillation temperature T",
        layers: no_layers,
        set: |p, _, v| p.distill.temperature = float(v),
        get: |p, _| ParamValue::Float(p.distill.temperature),
    },
    Knob {
        name: "alpha",
        per_layer: false,
        kind: KnobKind::Float {
            low: 0.0,
            high: 1.0,
            low_open: false,
            high_open: false,
        },
        help: "weight of the soft-target term (1 - alpha goes to the labels)",
        layers: no_layers,
        set: |p, _, v| p.distill.alpha = float(v),
        get: |p, _| ParamValue::Float(p.distill.alpha),
    },
    Knob {
        name: "distill",
        per_layer: false,
        kind: KnobKind::Text(DistillKind::NAMES),
        help: "what the student learns: response (logits), feature (intermediate layers) or both",
        layers: no_layers,
        set: |p, _, v| p.distill.kind = DistillKind::parse(&text(v)).unwrap_or_default(),
        get: |p, _| ParamValue::Text(p.distill.kind.name().to_string()),
    },
    Knob {
        name: "feature_weight",
        per_layer: false,
        kind: KnobKind::Float {
            low: 0.0,
            high: 100.0,
            low_open: false,
            high_open: false,
        },
        help: "weight of the feature-matching term of feature distillation",
        layers: no_layers,
        set: |p, _, v| p.distill.feature_weight = float(v),
        get: |p, _| ParamValue::Float(p.distill.feature_weight),
    },
    Knob {
        name: "importance",
        per_layer: false,
        kind: KnobKind::Text(Importance::NAMES),
        help: "how structured pruning ranks channels: l1, l2, bn_gamma or taylor",
        layers: no_layers,
        set: |p, _, v| p.prune.importance = Importance::parse(&text(v)).unwrap_or_default(),
        get: |p, _| ParamValue::Text(p.prune.importance.name().to_string()),
    },
    Knob {
        name: "calibration",
        per_layer: false,
        kind: KnobKind::Text(Calibration::NAMES),
        help: "how activation ranges are calibrated: minmax, percentile or entropy",
        layers: no_layers,
        set: |p, _, v| p.activations.calibration = Calibration::parse(&text(v)).unwrap_or_default(),
        get: |p, _| ParamValue::Text(p.activations.calibration.name().to_string()),
    },
    Knob {
        name: "prune",
        per_layer: true,
        kind: KnobKind::Float {
            low: 0.0,
            high: 1.0,
            low_open: false,
            high_open: true,
        },
        help: "fraction of the layer's output channels (neurons) removed",
        layers: crate::prune::prunable_layers,
        set: |p, l, v| layer(p, l).prune = float(v),
        get: |p, l| ParamValue::Float(read(p, l).prune),
    },
    Knob {
        name: "sparsity",
        per_layer: true,
        kind: KnobKind::Float {
            low: 0.0,
            high: 1.0,
            low_open: false,
            high_open: true,
        },
        help: "fraction of the layer's weights zeroed by magnitude (unstructured)",
        layers: weight_layers,
        set: |p, l, v| layer(p, l).sparsity = float(v),
        get: |p, l| ParamValue::Float(read(p, l).sparsity),
    },
    Knob {
        name: "granularity",
        per_layer: true,
        kind: KnobKind::Text(&["unstructured", "2:4", "1:4", "4:8"]),
        help: "sparsity pattern: unstructured, or N:M (N kept in every M weights)",
        layers: weight_layers,
        set: |p, l, v| layer(p, l).granularity = Granularity::parse(&text(v)).unwrap_or_default(),
        get: |p, l| ParamValue::Text(read(p, l).granularity.name()),
    },
    Knob {
        name: "rank",
        per_layer: true,
        kind: KnobKind::Float {
            low: 0.0,
            high: 1.0,
            low_open: true,
            high_open: false,
        },
        help: "low-rank (SVD) factorisation: kept rank as a fraction of the full rank (1 = off)",
        layers: factorisable_layers,
        set: |p, l, v| layer(p, l).rank = float(v),
        get: |p, l| ParamValue::Float(read(p, l).rank),
    },
    Knob {
        name: "bits",
        per_layer: true,
        kind: KnobKind::Int(BIT_WIDTHS),
        help: "weight bit width: 2 to 8 (integer codes), 16 (half precision) or 32 (float)",
        layers: weight_layers,
        set: |p, l, v| layer(p, l).bits = float(v) as u32,
        get: |p, l| ParamValue::Int(read(p, l).bits as i64),
    },
    Knob {
        name: "act_bits",
        per_layer: true,
        kind: KnobKind::Int(ACT_BIT_WIDTHS),
        help: "bit width of the layer's input activations: 2 to 8 (static, calibrated) or 32",
        layers: weight_layers,
        set: |p, l, v| layer(p, l).act_bits = float(v) as u32,
        get: |p, l| ParamValue::Int(read(p, l).act_bits as i64),
    },
    Knob {
        name: "quant_granularity",
        per_layer: true,
        kind: KnobKind::Text(&["channel", "tensor"]),
        help: "one quantization scale per output channel, or one per tensor",
        layers: weight_layers,
        set: |p, l, v| layer(p, l).per_channel = text(v) == "channel",
        get: |p, l| {
            ParamValue::Text(
                if read(p, l).per_channel {
                    "channel"
                } else {
                    "tensor"
                }
                .into(),
            )
        },
    },
    Knob {
        name: "scheme",
        per_layer: true,
        kind: KnobKind::Text(&["symmetric", "asymmetric"]),
        help: "symmetric codes, or asymmetric codes with a zero point",
        layers: weight_layers,
        set: |p, l, v| layer(p, l).symmetric = text(v) == "symmetric",
        get: |p, l| {
            ParamValue::Text(
                if read(p, l).symmetric {
                    "symmetric"
                } else {
                    "asymmetric"
                }
                .into(),
            )
        },
    },
];

/// The knob named `name`.
pub fn knob(name: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| k.name == name)
}

/// Names of every knob, in table order.
pub fn knob_names() -> Vec<&'static str> {
    KNOBS.iter().map(|k| k.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_knob_round_trips_through_a_plan() {
        let graph = sculpt_nn::zoo::build("mlp", &[64], 10, 0).unwrap();
        for knob in KNOBS {
            let layers = if knob.per_layer {
                (knob.layers)(&graph)
            } else {
                vec![String::new()]
            };
            assert!(!layers.is_empty(), "{} addresses no layer", knob.name);
            let values: Vec<ParamValue> = match knob.kind {
                KnobKind::Float { low, high, .. } => {
                    vec![ParamValue::Float(low + 0.37 * (high - low))]
                }
                KnobKind::Int(allowed) => allowed.iter().map(|&a| ParamValue::Int(a)).collect(),
                KnobKind::Text(allowed) => allowed
                    .iter()
                    .map(|a| ParamValue::Text(a.to_string()))
                    .collect(),
            };
            for layer in &layers {
                for value in &values {
                    let checked = knob.check(value).unwrap();
                    let mut plan = CompressionPlan::default();
                    (knob.set)(&mut plan, layer, &checked);
                    assert_eq!((knob.get)(&plan, layer), checked, "knob {}", knob.name);
                }
            }
        }
    }

    #[test]
    fn check_names_what_is_allowed() {
        let bits = knob("bits").unwrap();
        assert!(bits
            .check(&ParamValue::Int(9))
            .unwrap_err()
            .contains("2, 3"));
        assert_eq!(bits.check(&ParamValue::Float(4.0)), Ok(ParamValue::Int(4)));
        let prune = knob("prune").unwrap();
        assert!(prune
            .check(&ParamValue::Float(1.2))
            .unwrap_err()
            .contains("[0, 1)"));
        assert!(prune.check(&ParamValue::Float(1.0)).is_err());
        let imp = knob("importance").unwrap();
        assert!(imp.check(&ParamValue::Text("l3".into())).is_err());
        let gran = knob("granularity").unwrap();
        assert!(gran.check(&ParamValue::Text("2:8".into())).is_ok());
        assert!(gran.check(&ParamValue::Text("5:4".into())).is_err());
        assert_eq!(knob("bits").unwrap().column("fc1"), "bits_fc1");
        assert_eq!(knob("alpha").unwrap().column(""), "alpha");
    }
}
