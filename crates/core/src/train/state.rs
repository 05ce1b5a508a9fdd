//! Trainer state on disk. `weights/last.safetensors` is the commit point: its metadata holds the trainer
//! state and names the optimiser file written just before it, and older optimiser files are removed only
//! after it, so a kill at any moment leaves a loadable, consistent checkpoint.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

use super::optim::Optimizer;
use crate::{
    Error, Result,
    checkpoint::{self, LoadOptions},
    run::RunDir,
};

const STATE_KEY: &str = "tlcv_trainer_state";
const OPTIM_KEY: &str = "tlcv_optimizer_file";

/// One finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: usize,
    /// Head learning rate at the end of the epoch.
    pub lr: f64,
    /// Mean training loss terms.
    pub train: BTreeMap<String, f64>,
    /// Validation metrics.
    pub val: BTreeMap<String, f64>,
    /// Training time of the epoch in seconds (validation excluded).
    pub seconds: f64,
    /// Training throughput.
    pub images_per_sec: f64,
    /// Training samples this epoch, over all ranks (skipped ones are not counted).
    #[serde(default)]
    pub samples: usize,
    /// Resident memory (VmRSS) of the process at the end of the epoch, in MiB (0 where unknown).
    #[serde(default)]
    pub rss_mb: f64,
}

impl EpochRecord {
    /// One plain line: losses, the primary metric, time and throughput (the epoch is in the progress label).
    pub fn summary_line(&self, primary: &str) -> String {
        let losses: Vec<String> = self.train.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        let metric = self.val.get(primary).map(|v| format!("  {primary} {v:.4}")).unwrap_or_default();
        format!("{}{}  {:.1}s  {:.1} img/s", losses.join("  "), metric, self.seconds, self.images_per_sec)
    }
}

/// Where training stands, saved with every checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainerState {
    /// The epoch to run next (0-based).
    pub next_epoch: usize,
    /// Batches of `next_epoch` already trained (after an interrupt).
    pub batches_done_in_epoch: usize,
    /// Optimiser steps so far.
    pub global_step: usize,
    /// Best validation metric so far.
    pub best_metric: Option<f64>,
    /// Its epoch.
    pub best_epoch: Option<usize>,
    /// Epochs since the last improvement.
    pub bad_epochs: usize,
    /// All finished epochs.
    pub history: Vec<EpochRecord>,
}

/// Writes the optimiser state, then the weights with the trainer state (the commit), then cleans up.
pub fn save(vs: &VarStore, optimizer: &Optimizer, state: &TrainerState, run: &RunDir) -> Result<()> {
    let weights_dir = run.root().join("weights");
    let optim_name = format!("optim-{}-{}.safetensors", state.next_epoch, state.global_step);
    checkpoint::save_named_safetensors(&optimizer.state_tensors(), &weights_dir.join(&optim_name), None)?;
    let state_json = serde_json::to_string(state).map_err(|e| Error::Invalid(format!("trainer state: {e}")))?;
    let mut meta = HashMap::new();
    meta.insert(STATE_KEY.to_string(), state_json.clone());
    meta.insert(OPTIM_KEY.to_string(), optim_name.clone());
    checkpoint::save_safetensors(vs, &run.last_weights(), Some(meta))?;
    let entries = std::fs::read_dir(&weights_dir).map_err(|e| Error::io(&weights_dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("optim-") && name != optim_name {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    crate::run::write_atomic(&run.trainer_state(), state_json.as_bytes())
}

/// Loads `last.safetensors` into `vs` and the optimiser file it names; returns the trainer state.
pub fn restore(vs: &VarStore, optimizer: &mut Optimizer, run: &RunDir) -> Result<TrainerState> {
    let last = run.last_weights();
    if !last.is_file() {
        return Err(Error::Invalid(format!("--resume: {} does not exist", last.display())));
    }
    let meta = checkpoint::read_safetensors_metadata(&last)?;
    let state_json = meta
        .get(STATE_KEY)
        .ok_or_else(|| Error::Invalid(format!("{}: no trainer state in the metadata", last.display())))?;
    let state: TrainerState = serde_json::from_str(state_json)
        .map_err(|e| Error::Invalid(format!("{}: bad trainer state: {e}", last.display())))?;
    checkpoint::load_file(vs, &last, &LoadOptions::default())?;
    if let Some(name) = meta.get(OPTIM_KEY) {
        let path = run.root().join("weights").join(name);
        let sd = checkpoint::read_state_dict(&path)?;
        let tensors = sd.iter().map(|(n, t)| (n.to_string(), t.shallow_clone())).collect();
        optimizer.load_state_tensors(tensors, vs.device())?;
    }
    Ok(state)
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`) in MiB; `None` off Linux or if absent.
pub fn proc_status_mb(field: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: f64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb / 1024.0)
    })
}

/// Rewrites `results.csv` from the history (one row per epoch), atomically.
pub fn write_results_csv(history: &[EpochRecord], path: &Path) -> Result<()> {
    let train_keys: BTreeSet<&String> = history.iter().flat_map(|r| r.train.keys()).collect();
    let val_keys: BTreeSet<&String> = history.iter().flat_map(|r| r.val.keys()).collect();
    let mut header = vec!["epoch".to_string(), "lr".to_string()];
    header.extend(train_keys.iter().map(|k| format!("train/{k}")));
    header.extend(val_keys.iter().map(|k| format!("val/{k}")));
    header.extend(["seconds", "images_per_sec", "samples", "rss_mb"].map(String::from));
    let mut text = header.join(",") + "\n";
    for r in history {
        let mut row = vec![(r.epoch + 1).to_string(), format!("{:e}", r.lr)];
        row.extend(train_keys.iter().map(|k| r.train.get(*k).map(|v| v.to_string()).unwrap_or_default()));
        row.extend(val_keys.iter().map(|k| r.val.get(*k).map(|v| v.to_string()).unwrap_or_default()));
        row.extend([
            format!("{:.3}", r.seconds),
            format!("{:.2}", r.images_per_sec),
            r.samples.to_string(),
            format!("{:.1}", r.rss_mb),
        ]);
        text += &(row.join(",") + "\n");
    }
    crate::run::write_atomic(path, text.as_bytes())
}
