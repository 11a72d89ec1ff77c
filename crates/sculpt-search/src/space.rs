//! The typed search space: named dimensions (float, log-float, int, categorical),
//! validation at construction, uniform sampling, membership checks, and the
//! [0,1] normalisation that variation operators such as NSGA-II work in.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};

/// One value per dimension, in space order. A categorical holds the chosen
/// value itself (e.g. `4.0` bits), an int holds an integral `f64`.
pub type Point = Vec<f64>;

/// The set of values one dimension may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Domain {
    /// `[low, high]`; with `log`, sampled uniformly in `ln` space.
    Float { low: f64, high: f64, log: bool },
    /// Integers in `[low, high]`, both inclusive.
    Int { low: i64, high: i64 },
    /// One of a finite list of numeric values.
    Categorical { choices: Vec<f64> },
}

impl Domain {
    fn validate(&self, name: &str) -> Result<()> {
        let invalid = |reason: String| SearchError::InvalidDimension {
            name: name.to_string(),
            reason,
        };
        match self {
            Domain::Float { low, high, log } => {
                if !low.is_finite() || !high.is_finite() {
                    return Err(invalid(format!(
                        "float bounds must be finite, got [{low}, {high}]"
                    )));
                }
                if low >= high {
                    return Err(invalid(format!(
                        "float bounds need low < high, got [{low}, {high}]"
                    )));
                }
                if *log && *low <= 0.0 {
                    return Err(invalid(format!(
                        "log-scaled float needs low > 0, got low = {low}"
                    )));
                }
            }
            Domain::Int { low, high } => {
                if low > high {
                    return Err(invalid(format!(
                        "int bounds need low <= high, got [{low}, {high}]"
                    )));
                }
            }
            Domain::Categorical { choices } => {
                if choices.is_empty() {
                    return Err(invalid("categorical has no choices".to_string()));
                }
                if let Some(bad) = choices.iter().find(|c| !c.is_finite()) {
                    return Err(invalid(format!(
                        "categorical choices must be finite, got {bad}"
                    )));
                }
                for (i, a) in choices.iter().enumerate() {
                    if choices[..i].contains(a) {
                        return Err(invalid(format!("categorical choice {a} is listed twice")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Draws one value: uniform, log-uniform for log floats, uniform choice for categoricals.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match self {
            Domain::Float { low, high, log } => {
                let u: f64 = rng.random();
                let v = if *log {
                    (low.ln() + u * (high.ln() - low.ln())).exp()
                } else {
                    low + u * (high - low)
                };
                // exp/ln round-off can step just outside the bounds.
                v.clamp(*low, *high)
            }
            Domain::Int { low, high } => rng.random_range(*low..=*high) as f64,
            Domain::Categorical { choices } => choices[rng.random_range(0..choices.len())],
        }
    }

    /// Whether `value` is a legal value of this domain.
    pub fn contains(&self, value: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        match self {
            Domain::Float { low, high, .. } => value >= *low && value <= *high,
            Domain::Int { low, high } => {
                value.fract() == 0.0 && value >= *low as f64 && value <= *high as f64
            }
            Domain::Categorical { choices } => choices.contains(&value),
        }
    }

    /// Maps a float or int value to `[0, 1]` (in `ln` space for log floats), clamped.
    /// Ints map from `[low - 0.5, high + 0.5]` so every integer owns an equal share
    /// of the unit interval after rounding back. `None` for categoricals.
    pub fn to_unit(&self, value: f64) -> Option<f64> {
        let unit = match self {
            Domain::Float { low, high, log } => {
                if *log {
                    let v = value.max(*low);
                    (v.ln() - low.ln()) / (high.ln() - low.ln())
                } else {
                    (value - low) / (high - low)
                }
            }
            Domain::Int { low, high } => {
                let lo = *low as f64 - 0.5;
                let hi = *high as f64 + 0.5;
                (value - lo) / (hi - lo)
            }
            Domain::Categorical { .. } => return None,
        };
        Some(if unit.is_nan() {
            0.5
        } else {
            unit.clamp(0.0, 1.0)
        })
    }

    /// Inverse of [`Domain::to_unit`]: clamps `unit` to `[0, 1]`, rounds ints.
    /// `None` for categoricals.
    pub fn from_unit(&self, unit: f64) -> Option<f64> {
        let unit = if unit.is_nan() {
            0.5
        } else {
            unit.clamp(0.0, 1.0)
        };
        match self {
            Domain::Float { low, high, log } => {
                let v = if *log {
                    (low.ln() + unit * (high.ln() - low.ln())).exp()
                } else {
                    low + unit * (high - low)
                };
                Some(v.clamp(*low, *high))
            }
            Domain::Int { low, high } => {
                let lo = *low as f64 - 0.5;
                let hi = *high as f64 + 0.5;
                Some(
                    (lo + unit * (hi - lo))
                        .round()
                        .clamp(*low as f64, *high as f64),
                )
            }
            Domain::Categorical { .. } => None,
        }
    }

    /// The nearest legal value to `value`: clamped floats, rounded and clamped
    /// ints, the closest choice for categoricals. NaN maps to the lower bound or
    /// first choice. Used to repair points stored under an older space.
    pub fn nearest(&self, value: f64) -> f64 {
        match self {
            Domain::Float { low, high, .. } => {
                if value.is_nan() {
                    *low
                } else {
                    value.clamp(*low, *high)
                }
            }
            Domain::Int { low, high } => {
                if value.is_nan() {
                    *low as f64
                } else {
                    value.round().clamp(*low as f64, *high as f64)
                }
            }
            Domain::Categorical { choices } => {
                if value.is_nan() {
                    return choices[0];
                }
                choices
                    .iter()
                    .copied()
                    .min_by(|a, b| (a - value).abs().total_cmp(&(b - value).abs()))
                    .unwrap_or(value)
            }
        }
    }
}

/// When a dimension exists: only while an earlier (parent) dimension takes one of
/// `values`, as a low-rank fraction exists only while low rank is on. An inactive
/// dimension keeps a value in the point, but nothing reads it: the codec ignores it, and
/// the GP sees a constant in its place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub parent: String,
    pub values: Vec<f64>,
}

/// A named axis of the search space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dimension {
    pub name: String,
    pub domain: Domain,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

impl Dimension {
    pub fn float(name: impl Into<String>, low: f64, high: f64, log: bool) -> Self {
        Self {
            name: name.into(),
            domain: Domain::Float { low, high, log },
            condition: None,
        }
    }

    pub fn int(name: impl Into<String>, low: i64, high: i64) -> Self {
        Self {
            name: name.into(),
            domain: Domain::Int { low, high },
            condition: None,
        }
    }

    pub fn categorical(name: impl Into<String>, choices: Vec<f64>) -> Self {
        Self {
            name: name.into(),
            domain: Domain::Categorical { choices },
            condition: None,
        }
    }

    /// This dimension, existing only while `parent` takes one of `values`.
    pub fn when(mut self, parent: impl Into<String>, values: Vec<f64>) -> Self {
        self.condition = Some(Condition {
            parent: parent.into(),
            values,
        });
        self
    }
}

/// A validated, ordered list of dimensions. Deserialisation re-runs the
/// validation of [`SearchSpace::new`], so a stored space cannot smuggle in
/// an invalid dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedSearchSpace")]
pub struct SearchSpace {
    dims: Vec<Dimension>,
}

/// Same wire shape as [`SearchSpace`], before validation.
#[derive(Deserialize)]
struct UncheckedSearchSpace {
    dims: Vec<Dimension>,
}

impl TryFrom<UncheckedSearchSpace> for SearchSpace {
    type Error = SearchError;

    fn try_from(raw: UncheckedSearchSpace) -> Result<Self> {
        SearchSpace::new(raw.dims)
    }
}

impl SearchSpace {
    /// Validates every dimension; errors name the offending dimension.
    pub fn new(dims: Vec<Dimension>) -> Result<Self> {
        if dims.is_empty() {
            return Err(SearchError::EmptySpace);
        }
        for (i, dim) in dims.iter().enumerate() {
            if dim.name.is_empty() {
                return Err(SearchError::InvalidDimension {
                    name: format!("#{i}"),
                    reason: "dimension name is empty".to_string(),
                });
            }
            if dims[..i].iter().any(|d| d.name == dim.name) {
                return Err(SearchError::DuplicateDimension(dim.name.clone()));
            }
            dim.domain.validate(&dim.name)?;
            if let Some(c) = &dim.condition {
                let invalid = |reason: String| SearchError::InvalidDimension {
                    name: dim.name.clone(),
                    reason,
                };
                let Some(parent) = dims[..i].iter().find(|d| d.name == c.parent) else {
                    return Err(invalid(format!(
                        "its condition names `{}`, which is not an earlier dimension",
                        c.parent
                    )));
                };
                if c.values.is_empty() {
                    return Err(invalid("its condition lists no values".into()));
                }
                if let Some(v) = c.values.iter().find(|v| !parent.domain.contains(**v)) {
                    return Err(invalid(format!(
                        "its condition value {v} is not a value of `{}`",
                        c.parent
                    )));
                }
            }
        }
        Ok(Self { dims })
    }

    pub fn dims(&self) -> &[Dimension] {
        &self.dims
    }

    pub fn len(&self) -> usize {
        self.dims.len()
    }

    /// Always false for a validated space; present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.dims.iter().position(|d| d.name == name)
    }

    /// Draws one point, each dimension independently (see [`Domain::sample`]).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Point {
        self.dims.iter().map(|d| d.domain.sample(rng)).collect()
    }

    /// Whether `point` has one legal value per dimension.
    pub fn contains(&self, point: &[f64]) -> bool {
        point.len() == self.dims.len()
            && self
                .dims
                .iter()
                .zip(point)
                .all(|(d, &v)| d.domain.contains(v))
    }

    /// The value of dimension `name` in `point`, if both exist.
    pub fn value(&self, point: &[f64], name: &str) -> Option<f64> {
        self.index_of(name).and_then(|i| point.get(i).copied())
    }

    /// Whether dimension `i` exists at `point`: it has no condition, or its parent exists
    /// and takes one of the condition's values.
    pub fn is_active(&self, point: &[f64], i: usize) -> bool {
        match &self.dims[i].condition {
            None => true,
            Some(c) => match self.index_of(&c.parent) {
                Some(p) => {
                    self.is_active(point, p) && point.get(p).is_some_and(|v| c.values.contains(v))
                }
                None => true,
            },
        }
    }

    /// Repairs `point` dimension by dimension with [`Domain::nearest`].
    /// The point must already have one value per dimension.
    pub fn nearest(&self, point: &[f64]) -> Point {
        self.dims
            .iter()
            .zip(point)
            .map(|(d, &v)| d.domain.nearest(v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn err_of(dims: Vec<Dimension>) -> SearchError {
        SearchSpace::new(dims).expect_err("space should be rejected")
    }

    fn invalid_names(err: &SearchError, expected: &str) {
        match err {
            SearchError::InvalidDimension { name, .. } => assert_eq!(name, expected),
            other => panic!("expected InvalidDimension for {expected}, got {other:?}"),
        }
        assert!(err.to_string().contains(expected));
    }

    #[test]
    fn new_rejects_each_bad_dimension() {
        assert_eq!(err_of(vec![]), SearchError::EmptySpace);
        assert_eq!(
            err_of(vec![
                Dimension::float("lr", 0.1, 1.0, false),
                Dimension::int("lr", 1, 2)
            ]),
            SearchError::DuplicateDimension("lr".into())
        );
        invalid_names(&err_of(vec![Dimension::float("a", 1.0, 1.0, false)]), "a");
        invalid_names(&err_of(vec![Dimension::float("b", 2.0, 1.0, false)]), "b");
        invalid_names(&err_of(vec![Dimension::int("c", 3, 2)]), "c");
        invalid_names(&err_of(vec![Dimension::float("d", 0.0, 1.0, true)]), "d");
        invalid_names(&err_of(vec![Dimension::float("e", -1.0, 1.0, true)]), "e");
        invalid_names(&err_of(vec![Dimension::categorical("f", vec![])]), "f");
        invalid_names(
            &err_of(vec![Dimension::float("g", 0.0, f64::INFINITY, false)]),
            "g",
        );
        invalid_names(
            &err_of(vec![Dimension::float("h", f64::NAN, 1.0, false)]),
            "h",
        );
        invalid_names(
            &err_of(vec![Dimension::categorical("i", vec![1.0, f64::NAN])]),
            "i",
        );
        invalid_names(
            &err_of(vec![Dimension::categorical("j", vec![2.0, 2.0])]),
            "j",
        );
        // A single-valued int range is legal: it pins a knob.
        assert!(SearchSpace::new(vec![Dimension::int("k", 5, 5)]).is_ok());
    }

    fn mixed_space() -> SearchSpace {
        SearchSpace::new(vec![
            Dimension::float("x", -2.0, 3.0, false),
            Dimension::float("lr", 1e-5, 1e-1, true),
            Dimension::int("layers", 1, 6),
            Dimension::categorical("bits", vec![2.0, 4.0, 8.0]),
        ])
        .unwrap()
    }

    #[test]
    fn sample_stays_in_bounds_and_covers_domains() {
        let space = mixed_space();
        let mut rng = StdRng::seed_from_u64(7);
        let mut decades = [false; 4];
        let mut ints_seen = [false; 6];
        let mut bits_seen = [false; 3];
        for _ in 0..5000 {
            let p = space.sample(&mut rng);
            assert!(space.contains(&p), "{p:?}");
            assert!((-2.0..=3.0).contains(&p[0]));
            assert!((1e-5..=1e-1).contains(&p[1]));
            let decade = (-p[1].log10()).floor() as usize; // 1..=4 (5 only at the exact bound)
            decades[(decade - 1).min(3)] = true;
            ints_seen[(p[2] as usize) - 1] = true;
            assert_eq!(p[2].fract(), 0.0);
            let b = [2.0, 4.0, 8.0].iter().position(|&c| c == p[3]).unwrap();
            bits_seen[b] = true;
        }
        assert!(decades.iter().all(|&d| d), "log dim misses a decade");
        assert!(ints_seen.iter().all(|&d| d));
        assert!(bits_seen.iter().all(|&d| d));
    }

    #[test]
    fn log_sampling_is_uniform_in_log_space() {
        let space = SearchSpace::new(vec![Dimension::float("lr", 1e-6, 1.0, true)]).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let n = 6000;
        let below_1e3 = (0..n).filter(|_| space.sample(&mut rng)[0] < 1e-3).count();
        // Half the log range lies below 1e-3; a linear sampler would put ~0.1% there.
        let share = below_1e3 as f64 / n as f64;
        assert!((0.45..0.55).contains(&share), "share {share}");
    }

    #[test]
    fn contains_value_and_index_of() {
        let space = mixed_space();
        assert!(space.contains(&[0.0, 1e-3, 3.0, 4.0]));
        assert!(!space.contains(&[0.0, 1e-3, 3.0]));
        assert!(!space.contains(&[0.0, 1e-3, 3.5, 4.0]));
        assert!(!space.contains(&[0.0, 1e-3, 3.0, 3.0]));
        assert!(!space.contains(&[4.0, 1e-3, 3.0, 4.0]));
        assert!(!space.contains(&[f64::NAN, 1e-3, 3.0, 4.0]));
        assert_eq!(space.index_of("layers"), Some(2));
        assert_eq!(space.index_of("nope"), None);
        assert_eq!(space.value(&[0.0, 1e-3, 3.0, 4.0], "bits"), Some(4.0));
        assert_eq!(space.value(&[0.0, 1e-3, 3.0, 4.0], "nope"), None);
        assert_eq!(space.len(), 4);
        assert!(!space.is_empty());
    }

    #[test]
    fn unit_mapping_round_trips_and_clamps() {
        let lin = Domain::Float {
            low: -2.0,
            high: 3.0,
            log: false,
        };
        assert_eq!(lin.to_unit(0.5), Some(0.5));
        assert_eq!(lin.from_unit(0.5), Some(0.5));
        assert_eq!(lin.to_unit(10.0), Some(1.0));
        assert_eq!(lin.from_unit(-0.3), Some(-2.0));
        let log = Domain::Float {
            low: 1e-4,
            high: 1.0,
            log: true,
        };
        assert!((log.to_unit(1e-2).unwrap() - 0.5).abs() < 1e-12);
        assert!((log.from_unit(0.75).unwrap() - 1e-1).abs() < 1e-12);
        let int = Domain::Int { low: 0, high: 3 };
        // [-0.5, 3.5] spans 4 units: 1 sits at 1.5 / 4.
        assert_eq!(int.to_unit(1.0), Some(0.375));
        assert_eq!(int.from_unit(0.375), Some(1.0));
        assert_eq!(int.from_unit(0.99), Some(3.0));
        assert_eq!(int.from_unit(0.0), Some(0.0));
        let cat = Domain::Categorical {
            choices: vec![2.0, 4.0],
        };
        assert_eq!(cat.to_unit(2.0), None);
        assert_eq!(cat.from_unit(0.5), None);
        assert_eq!(cat.nearest(3.5), 4.0);
        assert_eq!(int.nearest(7.2), 3.0);
    }

    #[test]
    fn conditional_dimensions_are_checked_and_follow_their_parent() {
        let space = SearchSpace::new(vec![
            Dimension::categorical("lowrank", vec![0.0, 1.0]),
            Dimension::float("rank", 0.1, 0.9, false).when("lowrank", vec![1.0]),
            Dimension::float("x", 0.0, 1.0, false),
        ])
        .unwrap();
        assert!(space.is_active(&[1.0, 0.5, 0.2], 1));
        assert!(!space.is_active(&[0.0, 0.5, 0.2], 1));
        assert!(space.is_active(&[0.0, 0.5, 0.2], 2));
        let later = SearchSpace::new(vec![
            Dimension::float("rank", 0.1, 0.9, false).when("lowrank", vec![1.0]),
            Dimension::categorical("lowrank", vec![0.0, 1.0]),
        ]);
        assert!(later
            .unwrap_err()
            .to_string()
            .contains("not an earlier dimension"));
        let bad_value = SearchSpace::new(vec![
            Dimension::categorical("lowrank", vec![0.0, 1.0]),
            Dimension::float("rank", 0.1, 0.9, false).when("lowrank", vec![2.0]),
        ]);
        assert!(bad_value.unwrap_err().to_string().contains("value 2"));
    }

    #[test]
    fn serde_round_trip_revalidates() {
        let space = mixed_space();
        // No JSON crate is available here, so exercise the TryFrom path directly.
        let raw = UncheckedSearchSpace {
            dims: space.dims().to_vec(),
        };
        assert_eq!(SearchSpace::try_from(raw).unwrap(), space);
        let bad = UncheckedSearchSpace {
            dims: vec![Dimension::int("n", 3, 1)],
        };
        assert!(SearchSpace::try_from(bad).is_err());
    }
}
