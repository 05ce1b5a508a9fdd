//! A run's own files: what training writes first (the resolved configuration and the class names)
//! and what `eval`, `predict` and `compare` read back ([`TrainedRun`]).

use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::nn::VarStore;

use super::dir::{RunDir, write_atomic};
use crate::{
    Error, Result,
    checkpoint::{self, LoadOptions},
    config::Layered,
};

/// Writes `config.toml`: the resolved configuration.
pub fn write_config<C: Serialize>(run: &RunDir, cfg: &C) -> Result<()> {
    write_atomic(&run.config_path(), crate::config::to_toml(cfg)?.as_bytes())
}

/// Writes `config.toml` (the resolved configuration) and `classes.json` (the class names).
pub fn write_run_files<C: Serialize>(run: &RunDir, cfg: &C, classes: &[String]) -> Result<()> {
    write_config(run, cfg)?;
    run.write_json(&run.classes_json(), &classes)
}

/// A finished (or stopped) run: its configuration, class names and the weights to use.
#[derive(Debug, Clone)]
pub struct TrainedRun<C> {
    /// The run directory.
    pub dir: RunDir,
    /// The configuration it was trained with.
    pub config: C,
    /// Class names in index order.
    pub classes: Vec<String>,
    /// `weights/best.safetensors`, else `weights/last.safetensors`.
    pub weights: PathBuf,
}

impl<C: Layered> TrainedRun<C> {
    /// Reads the run in `dir`; an error when it is no run directory or holds no weights.
    pub fn open(dir: &Path) -> Result<Self> {
        let run = RunDir::open(dir)?;
        let config: C = crate::config::load(Some(&run.config_path()), &[])?;
        let path = run.classes_json();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let classes: Vec<String> =
            serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let weights = run.trained_weights()?;
        Ok(Self { dir: run, config, classes, weights })
    }

    /// Loads the run's weights into `vs` (strictly).
    pub fn load_weights(&self, vs: &VarStore) -> Result<()> {
        checkpoint::load_file(vs, &self.weights, &LoadOptions::default())?;
        Ok(())
    }
}
