//! The parity check every task's export tests use: exported files, inputs and tlcv's own outputs go
//! to `scripts/onnx_parity.py`, which runs `onnx.checker.check_model(full_check=True)` and ONNX
//! Runtime in the reference venv (one Python process for all the models of a test).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use tch::Tensor;

use super::OnnxError;

type Result<T> = std::result::Result<T, OnnxError>;

/// How outputs are compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compare {
    /// `max|ort - tlcv| <= rtol * max|tlcv|` per output.
    Relative {
        /// The tolerance.
        rtol: f64,
    },
    /// `[N, max_det, 6]` detections, paired one to one with the same class, coordinates within `rtol`
    /// times the input side and score within `atol` (boxes whose scores tie within `atol` may come in
    /// either order). A box that only one side kept must be a tie: the other side kept a box of the same
    /// class, score within `atol`, overlapping it by more than `nms_iou` (NMS met the pair in the other
    /// order and kept the other one).
    Detections {
        /// Coordinate tolerance relative to the input side.
        rtol: f64,
        /// Score tolerance.
        atol: f64,
        /// The exported NMS's IoU threshold.
        nms_iou: f64,
    },
}

#[derive(Debug, Serialize)]
struct RunEntry {
    input: String,
    expected: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ModelEntry {
    name: String,
    onnx: String,
    compare: &'static str,
    rtol: f64,
    atol: f64,
    nms_iou: f64,
    runs: Vec<RunEntry>,
}

/// A set of exported models and the runs to check them on, kept in one folder.
#[derive(Debug)]
pub struct ParityCheck {
    dir: PathBuf,
    models: Vec<ModelEntry>,
    files: usize,
}

impl ParityCheck {
    /// A check writing its arrays under `dir`.
    pub fn new(dir: &Path) -> Self {
        ParityCheck { dir: dir.to_path_buf(), models: Vec::new(), files: 0 }
    }

    /// Where to write the model named `name`.
    pub fn model_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.onnx"))
    }

    fn npy(&mut self, t: &Tensor) -> Result<String> {
        self.files += 1;
        let p = self.dir.join(format!("a{}.npy", self.files));
        t.f_to_kind(tch::Kind::Float)?.f_contiguous()?.write_npy(&p)?;
        Ok(p.display().to_string())
    }

    /// Adds model `name` (written at [`ParityCheck::model_path`]).
    pub fn model(&mut self, name: &str, compare: Compare) {
        let (compare, rtol, atol, nms_iou) = match compare {
            Compare::Relative { rtol } => ("relative", rtol, 0.0, 1.0),
            Compare::Detections { rtol, atol, nms_iou } => ("detections", rtol, atol, nms_iou),
        };
        let onnx = self.model_path(name).display().to_string();
        self.models.push(ModelEntry { name: name.into(), onnx, compare, rtol, atol, nms_iou, runs: Vec::new() });
    }

    /// Adds a run of the last model: `input` `[N, 3, H, W]` and tlcv's `expected` outputs.
    pub fn run(&mut self, input: &Tensor, expected: &[Tensor]) -> Result<()> {
        let input = self.npy(input)?;
        let expected = expected.iter().map(|t| self.npy(t)).collect::<Result<Vec<_>>>()?;
        match self.models.last_mut() {
            Some(m) => m.runs.push(RunEntry { input, expected }),
            None => return Err(OnnxError::Runtime("ParityCheck::run before any model".into())),
        }
        Ok(())
    }

    /// Runs the reference script; `Ok(report)` when every check passed, otherwise the report as error.
    pub fn check(&self) -> Result<String> {
        let manifest = self.dir.join("manifest.json");
        let text = serde_json::json!({ "models": self.models }).to_string();
        std::fs::write(&manifest, text).map_err(|source| OnnxError::Io { path: manifest.clone(), source })?;
        let root = crate::paths::workspace_root()?;
        let python = std::env::var_os("TLCV_REF_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".tlcv/venv-ref/bin/python"));
        let out = Command::new(&python)
            .arg(root.join("scripts/onnx_parity.py"))
            .arg(&manifest)
            .output()
            .map_err(|source| OnnxError::Io { path: python.clone(), source })?;
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() { Ok(report) } else { Err(OnnxError::Runtime(format!("parity failed:\n{report}"))) }
    }
}

/// Gives every batch norm of `vs` non-trivial statistics and affine parameters (running variance in
/// `[0.5, 1.5)`, means and biases `N(0, 0.1)`, scales in `[0.5, 1.5)`), so that folding them is not
/// the identity in a test.
pub fn randomise_batch_norms(vs: &tch::nn::VarStore) {
    use tch::Kind;
    // In name order, so that a seed gives the same network every time (`variables` is a hash map).
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, mut t) in vars {
            let n = t.size();
            let opts = (Kind::Float, t.device());
            if name.ends_with("running_var") {
                t.copy_(&(Tensor::rand(&n[..], opts) + 0.5));
            } else if name.ends_with("running_mean") || (t.dim() == 1 && name.ends_with("bias")) {
                t.copy_(&(Tensor::randn(&n[..], opts) * 0.1));
            } else if t.dim() == 1 && name.ends_with("weight") {
                t.copy_(&(Tensor::rand(&n[..], opts) + 0.5));
            }
        }
    });
}

/// `(x - mean) / std` of `[N, 3, H, W]` pixels in `0..1`: what an export's first nodes compute.
pub fn normalise(x: &Tensor, n: crate::backbones::Normalization) -> Tensor {
    let m = Tensor::from_slice(&n.mean.map(|v| v as f32)).view([1, 3, 1, 1]);
    let s = Tensor::from_slice(&n.std.map(|v| v as f32)).view([1, 3, 1, 1]);
    (x - m) / s
}

/// `max|a - b| / max|b|`.
pub fn max_rel_err(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-12)
}
