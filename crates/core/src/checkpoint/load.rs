//! Copying a state dict into a `VarStore`, with strict checking.

use std::collections::BTreeSet;
use std::path::Path;

use tch::nn::VarStore;

use super::{CheckpointError, ShapeMismatch, StateDict, read_state_dict};

/// How [`load_into`] treats keys that do not match.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Fail on any missing or unexpected key (shape mismatches always fail).
    pub strict: bool,
    /// Keys starting with any of these prefixes are skipped on both sides (e.g. a head that is
    /// replaced for transfer learning: `"fc."`).
    pub ignore_prefixes: Vec<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { strict: true, ignore_prefixes: Vec::new() }
    }
}

/// What [`load_into`] did, by name (each list sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Variables that received a checkpoint tensor.
    pub loaded: Vec<String>,
    /// Model variables the checkpoint lacks (left untouched).
    pub missing: Vec<String>,
    /// Checkpoint keys the model lacks.
    pub unexpected: Vec<String>,
    /// Keys skipped on purpose: under `ignore_prefixes`, or `*.num_batches_tracked` (tch's batch
    /// norm has no such buffer).
    pub ignored: Vec<String>,
}

/// Copies each checkpoint tensor into the variable of the same name, converting dtype and device
/// to the variable's. Everything is checked before anything is copied: a shape mismatch (always)
/// or, when `opts.strict`, any missing or unexpected key fails with one
/// [`CheckpointError::Incompatible`] listing every problem, and leaves `vs` unchanged.
pub fn load_into(vs: &VarStore, sd: &StateDict, opts: &LoadOptions) -> Result<LoadReport, CheckpointError> {
    let mut vars = vs.variables();
    // `fc` and `fc.` both cover `fc.weight` but not `fc2.weight`.
    let is_ignored = |name: &str| {
        opts.ignore_prefixes.iter().any(|p| {
            let p = p.trim_end_matches('.');
            name == p || (name.starts_with(p) && name.as_bytes().get(p.len()) == Some(&b'.'))
        })
    };
    let mut report = LoadReport::default();
    let mut shapes = Vec::new();
    let mut used = BTreeSet::new();
    let mut plan = Vec::new();
    for (name, t) in sd.iter() {
        if is_ignored(name) || (name.ends_with(".num_batches_tracked") && !vars.contains_key(name)) {
            report.ignored.push(name.to_string());
            continue;
        }
        let Some(var) = vars.get(name) else {
            report.unexpected.push(name.to_string());
            continue;
        };
        used.insert(name.to_string());
        let (cs, ms) = (t.size(), var.size());
        if cs != ms {
            shapes.push(ShapeMismatch { name: name.to_string(), checkpoint: cs, model: ms });
            continue;
        }
        plan.push(name);
    }
    report.missing = vars.keys().filter(|n| !used.contains(*n) && !is_ignored(n)).cloned().collect();
    report.missing.sort();
    report.unexpected.sort();
    report.ignored.sort();
    if !shapes.is_empty() || (opts.strict && !(report.missing.is_empty() && report.unexpected.is_empty())) {
        let (missing, unexpected) =
            if opts.strict { (report.missing, report.unexpected) } else { (Vec::new(), Vec::new()) };
        return Err(CheckpointError::Incompatible { path: None, missing, unexpected, shapes });
    }
    tch::no_grad(|| -> Result<(), CheckpointError> {
        for name in &plan {
            let (Some(var), Some(src)) = (vars.get_mut(*name), sd.get(name)) else {
                continue;
            };
            var.f_copy_(src).map_err(|e| CheckpointError::torch(format!("copying {name}"), e))?;
        }
        Ok(())
    })?;
    report.loaded = plan.into_iter().map(str::to_string).collect();
    report.loaded.sort();
    Ok(report)
}

/// [`read_state_dict`] then [`load_into`]; errors name the file.
pub fn load_file(vs: &VarStore, path: &Path, opts: &LoadOptions) -> Result<LoadReport, CheckpointError> {
    let sd = read_state_dict(path)?;
    load_into(vs, &sd, opts).map_err(|e| match e {
        CheckpointError::Incompatible { missing, unexpected, shapes, .. } => {
            CheckpointError::Incompatible { path: Some(path.to_path_buf()), missing, unexpected, shapes }
        }
        CheckpointError::Torch { context, source } => {
            CheckpointError::Torch { context: format!("{}: {context}", path.display()), source }
        }
        other => other,
    })
}
