//! Device profiles, read from TOML. Built-in profiles are compiled in from `profiles/`;
//! a user can point at their own file instead.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{LatencyError, Result};

/// Sustained arithmetic rate (operations per second, one multiply-add = 2 ops) for each
/// precision the device computes in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsPerSecond {
    pub f32: f64,
    pub int8: f64,
    /// Weights of 4 bits or fewer. Devices without native sub-byte arithmetic unpack to
    /// int8 and so have the int8 rate here.
    pub int4: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    pub name: String,
    pub description: String,
    /// Where the figures come from.
    pub source: String,
    pub ops_per_second: OpsPerSecond,
    /// Bytes per second between memory and the cores.
    pub memory_bandwidth_bytes_per_s: f64,
    /// Fixed cost of dispatching one layer, in seconds.
    pub layer_overhead_s: f64,
}

/// Built-in profiles: (name, TOML text).
const BUILTIN: &[(&str, &str)] = &[
    (
        "epyc-zen4-1core",
        include_str!("../../../profiles/epyc-zen4-1core.toml"),
    ),
    (
        "cortex-a76-1core",
        include_str!("../../../profiles/cortex-a76-1core.toml"),
    ),
    (
        "jetson-orin-cpu-1core",
        include_str!("../../../profiles/jetson-orin-cpu-1core.toml"),
    ),
    ("edge-tpu", include_str!("../../../profiles/int8-npu.toml")),
];

impl DeviceProfile {
    /// Parses a profile from TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let profile: DeviceProfile = toml::from_str(text).map_err(|e| LatencyError::Profile {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        profile.validate(origin)?;
        Ok(profile)
    }

    /// A built-in profile by name, or a profile file by path.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some((_, text)) = BUILTIN.iter().find(|(name, _)| *name == name_or_path) {
            return Self::from_toml(text, &PathBuf::from(format!("<builtin {name_or_path}>")));
        }
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") || path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| LatencyError::Io {
                path: path.to_path_buf(),
                cause: e,
            })?;
            return Self::from_toml(&text, path);
        }
        Err(LatencyError::UnknownProfile(
            name_or_path.to_string(),
            Self::builtin_names().join(", "),
        ))
    }

    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let fields = [
            ("ops_per_second.f32", self.ops_per_second.f32),
            ("ops_per_second.int8", self.ops_per_second.int8),
            ("ops_per_second.int4", self.ops_per_second.int4),
            (
                "memory_bandwidth_bytes_per_s",
                self.memory_bandwidth_bytes_per_s,
            ),
        ];
        for (field, value) in fields {
            if !(value.is_finite() && value > 0.0) {
                return Err(LatencyError::Profile {
                    path: origin.to_path_buf(),
                    message: format!("`{field}` must be a positive number, got {value}"),
                });
            }
        }
        if !(self.layer_overhead_s.is_finite() && self.layer_overhead_s >= 0.0) {
            return Err(LatencyError::Profile {
                path: origin.to_path_buf(),
                message: format!(
                    "`layer_overhead_s` must be zero or positive, got {}",
                    self.layer_overhead_s
                ),
            });
        }
        Ok(())
    }

    /// The arithmetic rate for weights of `bits` bits.
    pub fn rate_for_bits(&self, bits: u32) -> f64 {
        match bits {
            0..=4 => self.ops_per_second.int4,
            5..=8 => self.ops_per_second.int8,
            _ => self.ops_per_second.f32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profile_loads() {
        let p = DeviceProfile::load("epyc-zen4-1core").unwrap();
        assert!(p.ops_per_second.int8 > p.ops_per_second.f32);
        assert!(!p.source.is_empty());
    }

    #[test]
    fn every_builtin_profile_loads() {
        assert!(BUILTIN.len() >= 4);
        for name in DeviceProfile::builtin_names() {
            let p = DeviceProfile::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.name, name, "name field of builtin `{name}`");
            assert!(!p.source.trim().is_empty(), "{name} has no source");
            assert!(
                p.ops_per_second.int8 >= p.ops_per_second.f32,
                "{name}: int8 rate below f32 rate"
            );
        }
    }

    #[test]
    fn bad_profile_names_the_field() {
        let text = include_str!("../../../profiles/epyc-zen4-1core.toml").replace(
            "memory_bandwidth_bytes_per_s = ",
            "memory_bandwidth_bytes_per_s = -",
        );
        let err = DeviceProfile::from_toml(&text, Path::new("p.toml")).unwrap_err();
        assert!(
            err.to_string().contains("memory_bandwidth_bytes_per_s"),
            "{err}"
        );
        let err = DeviceProfile::load("no-such-device")
            .unwrap_err()
            .to_string();
        assert!(err.contains("epyc-zen4-1core"), "{err}");
    }
}
