//! Reading Ultralytics weights without Python and without running any pickle code:
//! - a `.pt` saved by Ultralytics (a whole pickled `DetectionModel`, usually float16, under `ema` in a
//!   training checkpoint and under `model` in a released one) goes through core's restricted
//!   unpickler, which keeps its modules as inert records ([`tlcv_core::checkpoint::read_checkpoint`]);
//!   `ema` is preferred as Ultralytics' `load_checkpoint` prefers it; the class names (`names`), the
//!   class count (`Detect.nc`), the network (`yaml["yaml_file"]`, `yaml["scale"]`) and the strides
//!   come from the records;
//! - a plain state dict (`torch.save(model.state_dict())`, `.pth`) or a `.safetensors` export of the
//!   same network gives only the weights: the network is the caller's, the class count is read
//!   from the class branch's last convolution, and classes are named `class0`, `class1`, ...

use std::path::Path;

use tch::nn::VarStore;
use tlcv_core::checkpoint::{
    Checkpoint, CheckpointError, LoadOptions, LoadReport, ModuleTree, PyValue, StateDict, load_into, read_checkpoint,
};

use super::spec::{Scale, Version, YoloArch};
use super::{STRIDES, UltralyticsYolo};
use crate::error::{DetectError, Result};

/// The weights and what the file says about them.
#[derive(Debug)]
pub struct YoloCheckpoint {
    /// The state dict, named as `DetectionModel.state_dict()` names it.
    pub state_dict: StateDict,
    /// The network the file declares (`None` for a plain state dict).
    pub arch: Option<YoloArch>,
    /// Number of classes.
    pub nc: i64,
    /// Class names, `nc` of them.
    pub names: Vec<String>,
    /// Where the weights came from: `ema`, `model` or `state dict`.
    pub source: String,
}

/// Reads an Ultralytics checkpoint, a state dict or a safetensors file of a YOLOv8/YOLO11 model.
pub fn read(path: &Path) -> Result<YoloCheckpoint> {
    let Checkpoint { state_dict, modules } = read_checkpoint(path)?;
    let bad = |m: String| DetectError::Invalid(format!("{}: {m}", path.display()));
    let nc = class_count(&state_dict).ok_or_else(|| {
        bad("no `model.<i>.cv3.0.2.weight`: not the weights of an Ultralytics YOLOv8/YOLO11 detector".into())
    })?;
    let Some(tree) = modules else {
        let names = (0..nc).map(|i| format!("class{i}")).collect();
        return Ok(YoloCheckpoint { state_dict, arch: None, nc, names, source: "state dict".into() });
    };
    let root = tree.root().ok_or_else(|| bad("empty module tree".into()))?;
    if !root.class.ends_with("DetectionModel") {
        return Err(bad(format!("holds a {}, not an Ultralytics DetectionModel", root.class)));
    }
    let detect_nc = tree.modules.iter().find(|m| m.class.ends_with(".Detect")).and_then(|m| m.attr("nc")?.as_i64());
    if detect_nc.is_some_and(|n| n != nc) {
        return Err(bad(format!("Detect.nc is {detect_nc:?} but the class branch has {nc} outputs")));
    }
    if let Some(PyValue::Tensor { values, .. }) = root.attr("stride")
        && values.iter().zip(STRIDES).any(|(&a, b)| a != b as f64)
    {
        return Err(bad(format!("strides {values:?}, expected {STRIDES:?}")));
    }
    let names = class_names(root.attr("names"), nc).map_err(bad)?;
    Ok(YoloCheckpoint { state_dict, arch: declared_arch(&tree), nc, names, source: tree.source.clone() })
}

/// `nc` from `model.<last>.cv3.0.2.weight` `[nc, c3, 1, 1]`.
fn class_count(sd: &StateDict) -> Option<i64> {
    sd.iter()
        .filter_map(|(name, t)| {
            let rest = name.strip_prefix("model.")?;
            let (idx, tail) = rest.split_once('.')?;
            (tail == "cv3.0.2.weight").then(|| (idx.parse::<usize>().ok(), t.size()))
        })
        .filter_map(|(i, s)| Some((i?, *s.first()?)))
        .max_by_key(|&(i, _)| i)
        .map(|(_, nc)| nc)
}

/// `names` as `{index: name}` or a list, checked against `nc`.
fn class_names(v: Option<&PyValue>, nc: i64) -> std::result::Result<Vec<String>, String> {
    let fallback = || (0..nc).map(|i| format!("class{i}")).collect();
    let names: Vec<String> = match v {
        None | Some(PyValue::None) => return Ok(fallback()),
        Some(PyValue::List(items)) => items.iter().map(|n| n.as_str().unwrap_or_default().to_string()).collect(),
        Some(PyValue::Dict(entries)) => {
            let mut out = vec![String::new(); usize::try_from(nc).unwrap_or(0)];
            for (k, n) in entries {
                let i = k.as_i64().and_then(|i| usize::try_from(i).ok()).filter(|&i| i < out.len());
                let Some(i) = i else { return Err(format!("class index {k:?} out of range for {nc} classes")) };
                out[i] = n.as_str().unwrap_or_default().to_string();
            }
            out
        }
        Some(other) => return Err(format!("`names` is not a dict or list: {other:?}")),
    };
    if names.len() as i64 != nc {
        return Err(format!("{} class names for {nc} classes", names.len()));
    }
    Ok(names.into_iter().enumerate().map(|(i, n)| if n.is_empty() { format!("class{i}") } else { n }).collect())
}

/// The network from `yaml["yaml_file"]` (`yolov8n.yaml`, `yolo11s.yaml`) or, failing that, from the
/// block classes (`C3k2` means YOLO11, `C2f` YOLOv8) and `yaml["scale"]`.
fn declared_arch(tree: &ModuleTree) -> Option<YoloArch> {
    let yaml = tree.root()?.attr("yaml");
    let file = yaml.and_then(|y| y.get("yaml_file")).and_then(PyValue::as_str).unwrap_or_default();
    let stem = file.rsplit('/').next().unwrap_or_default().trim_end_matches(".yaml").trim_end_matches(".yml");
    if let Ok(a) = stem.parse::<YoloArch>() {
        return Some(a);
    }
    let scale =
        yaml.and_then(|y| y.get("scale")).and_then(PyValue::as_str)?.chars().next().and_then(Scale::from_letter)?;
    let has = |c: &str| tree.modules.iter().any(|m| m.class.ends_with(c));
    let version = if has(".C3k2") {
        Version::V11
    } else if has(".C2f") {
        Version::V8
    } else {
        return None;
    };
    Some(YoloArch { version, scale })
}

/// Builds `arch` (or the checkpoint's own network when `arch` is `None`) for the checkpoint's
/// classes and loads every weight strictly.
pub fn load_model(
    vs: &VarStore,
    ckpt: &YoloCheckpoint,
    arch: Option<YoloArch>,
    path: &Path,
) -> Result<UltralyticsYolo> {
    let arch = match (arch, ckpt.arch) {
        (Some(a), Some(b)) if a != b => {
            return Err(DetectError::Invalid(format!("{}: the checkpoint holds {b}, not {a}", path.display())));
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            return Err(DetectError::Invalid(format!(
                "{}: a plain state dict does not say which network it is: give --model (yolov8n, yolo11s, ...)",
                path.display()
            )));
        }
    };
    let model = UltralyticsYolo::new(&vs.root(), arch, ckpt.nc)?;
    load_strict(vs, &ckpt.state_dict, path)?;
    Ok(model)
}

/// [`load_into`] with strict checking; errors name the file.
pub fn load_strict(vs: &VarStore, sd: &StateDict, path: &Path) -> Result<LoadReport> {
    load_into(vs, sd, &LoadOptions::default()).map_err(|e| match e {
        CheckpointError::Incompatible { missing, unexpected, shapes, .. } => {
            CheckpointError::Incompatible { path: Some(path.to_path_buf()), missing, unexpected, shapes }.into()
        }
        other => other.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_dict_or_list() {
        let d = PyValue::Dict(vec![
            (PyValue::Int(1), PyValue::Str("b".into())),
            (PyValue::Int(0), PyValue::Str("a".into())),
        ]);
        assert_eq!(class_names(Some(&d), 2), Ok(vec!["a".to_string(), "b".to_string()]));
        let l = PyValue::List(vec![PyValue::Str("x".into())]);
        assert_eq!(class_names(Some(&l), 1), Ok(vec!["x".to_string()]));
        assert!(class_names(Some(&l), 2).is_err());
        assert!(class_names(Some(&PyValue::Dict(vec![(PyValue::Int(5), PyValue::Str("z".into()))])), 2).is_err());
        assert_eq!(class_names(None, 2), Ok(vec!["class0".to_string(), "class1".to_string()]));
    }
}
