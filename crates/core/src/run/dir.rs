//! The run directory `runs/<task>/<name>/`: resolved config, weights, per-epoch results, metrics, plots
//! and the report. Names default to `train`, `train2`, … like Ultralytics; a given name is used as is.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, Result};

/// Paths inside one run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates `base/<task>/<name>` (or the first free `<stem>N` when `name` is None) with its sub-folders.
    pub fn create(base: &Path, task: &str, name: Option<&str>, stem: &str) -> Result<Self> {
        let parent = base.join(task);
        let root = match name {
            Some(name) => parent.join(name),
            None => next_free(&parent, stem),
        };
        for dir in [root.clone(), root.join("weights"), root.join("plots")] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(Self { root })
    }

    /// A new `<project>/<task>/<name>` (or `<stem>`, `<stem>2`, ...), or with `resume` the existing one
    /// named `name`. A run stopped before it wrote its configuration is started over under the same
    /// name.
    pub fn create_or_resume(project: &Path, task: &str, name: Option<&str>, stem: &str, resume: bool) -> Result<Self> {
        if !resume {
            return Self::create(project, task, name, stem);
        }
        let name = name.ok_or_else(|| Error::Invalid("--resume needs --name NAME of the run to continue".into()))?;
        let root = project.join(task).join(name);
        if root.join("weights").is_dir() && !root.join("config.toml").is_file() {
            eprintln!("resume: {} holds no configuration yet; starting it over", root.display());
            return Self::create(project, task, Some(name), stem);
        }
        Self::open(&root)
    }

    /// Opens an existing run directory (for eval, predict and resume); an error if it has no config.
    pub fn open(root: &Path) -> Result<Self> {
        let run = Self { root: root.to_path_buf() };
        if !run.config_path().is_file() {
            return Err(Error::Invalid(format!("{} is not a run directory (no config.toml)", root.display())));
        }
        Ok(run)
    }

    /// The directory that data-parallel rank 0 created (it may have no config yet): the other ranks
    /// read checkpoints from it and write nothing.
    pub fn of_main_rank(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    /// The run directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`: the resolved configuration.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `weights/best.safetensors`.
    pub fn best_weights(&self) -> PathBuf {
        self.root.join("weights").join("best.safetensors")
    }
    /// `weights/last.safetensors`.
    pub fn last_weights(&self) -> PathBuf {
        self.root.join("weights").join("last.safetensors")
    }
    /// The weights a finished run is used with: `best.safetensors`, else `last.safetensors` (a run
    /// without validation improvements); an error naming both when neither exists.
    pub fn trained_weights(&self) -> Result<PathBuf> {
        [self.best_weights(), self.last_weights()].into_iter().find(|p| p.is_file()).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no weights (weights/best.safetensors or last.safetensors)",
                self.root.display()
            ))
        })
    }
    /// `weights/last.optim.safetensors`: optimiser state for `--resume`.
    pub fn last_optimizer(&self) -> PathBuf {
        self.root.join("weights").join("last.optim.safetensors")
    }
    /// `weights/state.json`: epoch, step, best metric and history for `--resume`.
    pub fn trainer_state(&self) -> PathBuf {
        self.root.join("weights").join("state.json")
    }
    /// `results.csv`: one row per epoch.
    pub fn results_csv(&self) -> PathBuf {
        self.root.join("results.csv")
    }
    /// `metrics.json`: the final metrics.
    pub fn metrics_json(&self) -> PathBuf {
        self.root.join("metrics.json")
    }
    /// `report.html`.
    pub fn report_html(&self) -> PathBuf {
        self.root.join("report.html")
    }
    /// `classes.json`: the class names in index order.
    pub fn classes_json(&self) -> PathBuf {
        self.root.join("classes.json")
    }
    /// `predictions.jsonl`: predictions on held-out images, one JSON object per line.
    pub fn predictions_jsonl(&self) -> PathBuf {
        self.root.join("predictions.jsonl")
    }
    /// `plots/<name>`.
    pub fn plot(&self, name: &str) -> PathBuf {
        self.root.join("plots").join(name)
    }

    /// Writes `value` as pretty JSON, atomically.
    pub fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| Error::Invalid(format!("cannot serialise {}: {e}", path.display())))?;
        write_atomic(path, text.as_bytes())
    }
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename, so a crash never leaves a torn file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    {
        let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn next_free(parent: &Path, stem: &str) -> PathBuf {
    let first = parent.join(stem);
    if !first.exists() {
        return first;
    }
    (2..).map(|i| parent.join(format!("{stem}{i}"))).find(|p| !p.exists()).unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_count_up_and_given_names_are_kept() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let a = RunDir::create(tmp.path(), "classify", None, "train")?;
        let b = RunDir::create(tmp.path(), "classify", None, "train")?;
        let c = RunDir::create(tmp.path(), "classify", Some("mine"), "train")?;
        assert!(a.root().ends_with("classify/train"));
        assert!(b.root().ends_with("classify/train2"));
        assert!(c.root().ends_with("classify/mine"));
        assert!(a.root().join("weights").is_dir() && a.root().join("plots").is_dir());
        Ok(())
    }

    #[test]
    fn atomic_write_replaces_whole_file() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = tmp.path().join("x.json");
        write_atomic(&path, b"first")?;
        write_atomic(&path, b"second")?;
        assert_eq!(std::fs::read(&path).map_err(|e| Error::io(&path, e))?, b"second");
        assert!(!tmp.path().join("x.json.tmp").exists());
        Ok(())
    }
}
