//! Layered configuration: the struct's defaults, then a TOML file, then `TLCV_*` environment variables,
//! then `--set key=value` overrides. Unknown keys and wrong types are errors that name the key and where
//! the value came from; nothing is written before the configuration is valid.
//!
//! Environment variables use `__` between levels: `TLCV_TRAIN__LR=0.01` sets `train.lr`. Only variables
//! whose first level is a section of the configuration are read, so `TLCV_HOME` and friends don't clash.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::{Serialize, de::DeserializeOwned};

/// Errors from reading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file does not exist.
    #[error("config file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    /// `--preset` names no preset of this task.
    #[error("unknown preset `{name}` (expected one of {expected})")]
    UnknownPreset { name: String, expected: String },
    /// A `--set` argument is not of the form `key=value`.
    #[error("--set `{0}`: expected key=value")]
    BadOverride(String),
    /// A key, a type or a value is wrong; the message names the key and its source.
    #[error("{source_name}: {message}")]
    Invalid { source_name: String, message: String },
}

/// A configuration struct that can be layered: serde both ways, with defaults.
pub trait Layered: Serialize + DeserializeOwned + Default {}
impl<T: Serialize + DeserializeOwned + Default> Layered for T {}

/// A task configuration with named presets (`--preset NAME`).
pub trait Preset: Layered {
    /// The preset names, `default` first.
    fn preset_names() -> &'static [&'static str];
    /// The named preset, if it exists.
    fn preset(name: &str) -> Option<Self>;
}

/// Like [`load`], starting from the preset `name` when given (an error listing the presets if unknown).
pub fn load_preset<T: Preset>(name: Option<&str>, file: Option<&Path>, overrides: &[String]) -> Result<T, ConfigError> {
    let base = match name {
        None => T::default(),
        Some(name) => T::preset(name).ok_or_else(|| ConfigError::UnknownPreset {
            name: name.to_string(),
            expected: T::preset_names().join(", "),
        })?,
    };
    load_with_base(&base, file, overrides)
}

/// Reads `T` from its defaults, `file` (if given), the environment and `overrides` (`key=value`).
pub fn load<T: Layered>(file: Option<&Path>, overrides: &[String]) -> Result<T, ConfigError> {
    load_with_base(&T::default(), file, overrides)
}

/// Like [`load`], starting from `base` (a named preset) instead of `T::default()`.
pub fn load_with_base<T: Layered>(base: &T, file: Option<&Path>, overrides: &[String]) -> Result<T, ConfigError> {
    let defaults = Config::try_from(base).map_err(|e| invalid("defaults", e))?;
    let sections = top_level_sections(&defaults);

    let mut builder = Config::builder().add_source(defaults);
    let source_name = match file {
        Some(path) => {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
            path.display().to_string()
        }
        None => "configuration".to_string(),
    };
    let env: config::Map<String, String> = std::env::vars()
        .filter_map(|(key, value)| {
            let rest = key.strip_prefix("TLCV_")?;
            let section = rest.split("__").next()?.to_lowercase();
            sections.contains(&section).then(|| (rest.to_string(), value))
        })
        .collect();
    if !env.is_empty() {
        builder = builder.add_source(Environment::default().separator("__").source(Some(env)).try_parsing(true));
    }
    for item in overrides {
        let (key, value) = item.split_once('=').ok_or_else(|| ConfigError::BadOverride(item.clone()))?;
        builder = builder.set_override(key.trim(), parse_override(value.trim())).map_err(|e| invalid("--set", e))?;
    }
    let merged = builder.build().map_err(|e| invalid(&source_name, e))?;
    check_unknown_keys::<T>(&merged, &source_name)?;
    merged.try_deserialize::<T>().map_err(|e| invalid(&source_name, e))
}

/// Serialises `value` as TOML, as saved beside a run's checkpoints.
pub fn to_toml<T: Serialize>(value: &T) -> Result<String, ConfigError> {
    toml::to_string_pretty(value)
        .map_err(|e| ConfigError::Invalid { source_name: "configuration".into(), message: e.to_string() })
}

fn invalid(source_name: &str, error: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { source_name: source_name.to_string(), message: error.to_string() }
}

fn top_level_sections(defaults: &Config) -> Vec<String> {
    defaults.cache.clone().into_table().map(|table| table.into_keys().collect()).unwrap_or_default()
}

/// `--set` values are typed like TOML (numbers, booleans, arrays); anything else is a string.
fn parse_override(value: &str) -> config::Value {
    let parsed: Option<toml::Value> =
        toml::from_str::<toml::Table>(&format!("v = {value}")).ok().and_then(|mut table| table.remove("v"));
    match parsed {
        Some(v) => toml_to_config(v),
        None => config::Value::from(value.to_string()),
    }
}

fn toml_to_config(value: toml::Value) -> config::Value {
    match value {
        toml::Value::String(s) => s.into(),
        toml::Value::Integer(i) => i.into(),
        toml::Value::Float(f) => f.into(),
        toml::Value::Boolean(b) => b.into(),
        toml::Value::Array(items) => items.into_iter().map(toml_to_config).collect::<Vec<_>>().into(),
        toml::Value::Table(table) => table
            .into_iter()
            .map(|(k, v)| (k, toml_to_config(v)))
            .collect::<config::Map<String, config::Value>>()
            .into(),
        toml::Value::Datetime(d) => d.to_string().into(),
    }
}

/// Compares the merged keys with the keys `T` serialises to, so that a typo is reported with its full path
/// (`train.lr2`) rather than serde's bare field name. The known keys come from serde_json, which keeps empty
/// lists and `None` fields that the config crate's own serialiser drops.
fn check_unknown_keys<T: Layered>(merged: &Config, source_name: &str) -> Result<(), ConfigError> {
    let known = serde_json::to_value(T::default()).map_err(|e| invalid("defaults", e))?;
    let mut unknown = Vec::new();
    collect_unknown(&merged.cache, &known, "", &mut unknown);
    match unknown.first() {
        None => Ok(()),
        Some(first) => Err(ConfigError::Invalid {
            source_name: source_name.to_string(),
            message: format!("unknown key `{first}`"),
        }),
    }
}

fn collect_unknown(merged: &config::Value, known: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    let (Ok(merged), Some(known)) = (merged.clone().into_table(), known.as_object()) else {
        return;
    };
    let mut keys: Vec<_> = merged.keys().cloned().collect();
    keys.sort();
    for key in keys {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match (merged.get(&key), known.get(&key)) {
            // Maps with free-form keys (e.g. per-class weights) serialise empty by default: no check below.
            (Some(m), Some(k)) if k.as_object().is_some_and(|o| !o.is_empty()) => collect_unknown(m, k, &path, out),
            (Some(_), Some(_)) => {}
            (Some(_), None) => out.push(path),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        lr: f64,
        layers: Vec<String>,
        limit: Option<u32>,
    }
    impl Default for Inner {
        fn default() -> Self {
            Self { lr: 0.1, layers: Vec::new(), limit: None }
        }
    }
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Outer {
        train: Inner,
    }

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        (dir, path)
    }

    #[test]
    fn layers_apply_in_order_and_keep_empty_lists_and_options() -> Result<(), ConfigError> {
        let (_dir, path) = write("[train]\nlr = 0.5\nlayers = []\nlimit = 3\n");
        let cfg: Outer = load(Some(&path), &["train.layers=[\"a\", \"b\"]".to_string()])?;
        assert_eq!(cfg.train.lr, 0.5);
        assert_eq!(cfg.train.layers, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(cfg.train.limit, Some(3));
        let round: Outer = load(Some(&write(&to_toml(&Outer::default())?).1), &[])?;
        assert_eq!(round, Outer::default());
        Ok(())
    }

    #[test]
    fn unknown_keys_and_bad_types_name_key_and_file() {
        let (_dir, path) = write("[train]\nlr2 = 0.5\n");
        let err = load::<Outer>(Some(&path), &[]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("unknown key `train.lr2`") && err.contains("c.toml"), "{err}");
        let err = load::<Outer>(None, &["train.lr=fast".to_string()]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("train.lr"), "{err}");
        let err = load::<Outer>(Some(std::path::Path::new("/nonexistent/c.toml")), &[]).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("does not exist")));
    }
}
