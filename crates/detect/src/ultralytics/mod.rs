//! The exact Ultralytics detectors: YOLOv8 (Jocher, Chaurasia & Qiu, Ultralytics YOLOv8, 2023) and
//! YOLO11 (Jocher & Qiu, Ultralytics YOLO11, 2024) at every scale, built from the rows of their
//! YAMLs ([`spec`]) the way `ultralytics.nn.tasks.parse_model` builds a `DetectionModel`: module `i`
//! of the table lives at `model.{i}` and every variable has the name `model.state_dict()` gives it,
//! so Ultralytics' checkpoints load strictly and a saved state dict loads back into Ultralytics.
//!
//! - [`conv`]: `Conv` / `DWConv`; [`block`]: `Bottleneck`, `C2f`, `C3k`, `C3k2`, `SPPF`;
//!   [`attention`]: `Attention`, `PSABlock`, `C2PSA`; [`head`]: `Detect` with its DFL integral.
//! - [`checkpoint`] reads Ultralytics `.pt` files (whole pickled models, through core's restricted
//!   unpickler), plain state dicts and safetensors; [`postprocess`] is `non_max_suppression`;
//!   [`forward`] is the parity tool.
//! - Every module also writes its eval-mode forward as ONNX nodes (`to_onnx`, batch norms folded),
//!   for `detect export` ([`UltralyticsYolo::to_onnx`]).

pub mod attention;
pub mod block;
pub mod checkpoint;
pub mod conv;
pub mod family;
pub mod forward;
pub mod head;
pub mod postprocess;
pub mod spec;

use tch::{Tensor, nn};
use tlcv_core::backbones::layers::ConvBn;
use tlcv_core::backbones::{Backbone, FeatureInfo, Normalization, Stages};
use tlcv_core::onnx::ops::{Interp, SizeOf};
use tlcv_core::onnx::{Graph, OnnxError, Value as OnnxValue};

use self::attention::C2psa;
use self::block::{C2f, C2fKind, Sppf};
use self::conv::ConvSpec;
use self::head::Detect;
use self::spec::{Module, YoloArch};
use crate::error::{DetectError, Result};
use crate::yolo::head::HeadOutput;

pub use self::spec::{Scale, Version};

/// Strides of the three detection levels (P3, P4, P5).
pub const STRIDES: [i64; 3] = [8, 16, 32];

/// A module of the `model` list other than `Detect`.
#[derive(Debug)]
enum Layer {
    Conv(ConvBn),
    C2f(C2f),
    Sppf(Sppf),
    C2psa(C2psa),
    Upsample,
    Concat,
}

/// One row: its module and where its inputs come from (`-1` = the previous row).
#[derive(Debug)]
struct Node {
    from: &'static [i64],
    layer: Layer,
}

/// A YOLOv8 / YOLO11 `DetectionModel`.
#[derive(Debug)]
pub struct UltralyticsYolo {
    /// Which network.
    pub arch: YoloArch,
    nodes: Vec<Node>,
    detect_from: &'static [i64],
    /// The first this many modules run in eval mode (frozen; see [`UltralyticsYolo::set_frozen_modules`]).
    frozen: usize,
    /// Whether each row's output is read by a later row (Ultralytics' `save` list).
    saved: Vec<bool>,
    /// Output channels of each row before `Detect`.
    channels: Vec<i64>,
    /// The backbone modules, one stage each (for freezing).
    stages: Stages,
    /// The head.
    pub detect: Detect,
}

/// The rows a row at `index` reads (`-1` = the previous row), as indices.
fn resolve(index: usize, from: &[i64]) -> impl Iterator<Item = usize> + '_ {
    from.iter().map(move |&f| if f < 0 { (index as i64 + f) as usize } else { f as usize })
}

/// The module of one non-`Detect` row at `q` with its output channels, scaled as `parse_model` scales
/// it; `inputs` are the channels of the rows it reads.
fn layer(q: &nn::Path, arch: YoloArch, module: Module, inputs: &[i64]) -> Result<(Layer, i64)> {
    let c1 = inputs[0];
    Ok(match module {
        Module::Conv { c2, k, s } => {
            let c2 = arch.channels(c2);
            (Layer::Conv(conv::conv(q, ConvSpec::new(c1, c2, k).stride(s))?), c2)
        }
        Module::C2f { c2, n, shortcut } => {
            let c2 = arch.channels(c2);
            (Layer::C2f(C2f::new(q, c1, c2, arch.repeats(n), C2fKind::C2f { shortcut })?), c2)
        }
        Module::C3k2 { c2, n, c3k, e } => {
            let c2 = arch.channels(c2);
            let kind = C2fKind::C3k2 { c3k: c3k || arch.forces_c3k(), e };
            (Layer::C2f(C2f::new(q, c1, c2, arch.repeats(n), kind)?), c2)
        }
        Module::Sppf { c2, k } => {
            let c2 = arch.channels(c2);
            (Layer::Sppf(Sppf::new(q, c1, c2, k)?), c2)
        }
        Module::C2psa { c2, n } => {
            let c2 = arch.channels(c2);
            (Layer::C2psa(C2psa::new(q, c1, c2, arch.repeats(n))?), c2)
        }
        Module::Upsample => (Layer::Upsample, c1),
        Module::Concat => (Layer::Concat, inputs.iter().sum()),
        Module::Detect => return Err(DetectError::Invalid("Detect is built by UltralyticsYolo::new".into())),
    })
}

impl UltralyticsYolo {
    /// The network for `nc` classes with its variables under `p / "model"`, initialised as
    /// Ultralytics initialises a new `DetectionModel` (PyTorch's default convolutions, batch norms at
    /// eps 1e-3 and momentum 0.03, `Detect.bias_init`). The backbone modules are in optimiser group
    /// 0 and the others in group 1, as this crate's other detectors split backbone and head.
    pub fn new(p: &nn::Path, arch: YoloArch, nc: i64) -> Result<Self> {
        if !(1..=10_000).contains(&nc) {
            return Err(DetectError::Invalid(format!("{arch}: number of classes must be 1 to 10000, got {nc}")));
        }
        let (backbone, head) = (p.set_group(0) / "model", p.set_group(1) / "model");
        let rows = arch.rows();
        let mut ch: Vec<i64> = Vec::with_capacity(rows.len()); // output channels per row
        let mut nodes = Vec::with_capacity(rows.len());
        let mut detect = None;
        let mut detect_from: &'static [i64] = &[];
        for (i, row) in rows.iter().enumerate() {
            let q = if i < arch.backbone_len() { &backbone / i } else { &head / i };
            let inputs: Vec<i64> = resolve(i, row.from).map(|j| if i == 0 { 3 } else { ch[j] }).collect();
            if row.module == Module::Detect {
                detect = Some(Detect::new(&q, arch.version, nc, &inputs, &STRIDES)?);
                detect_from = row.from;
                break;
            }
            let (layer, c2) = layer(&q, arch, row.module, &inputs)?;
            ch.push(c2);
            nodes.push(Node { from: row.from, layer });
        }
        let detect = detect.ok_or_else(|| DetectError::Invalid(format!("{arch}: no Detect row")))?;
        let mut saved = vec![false; rows.len()];
        // Row 0 reads the image.
        for (i, row) in rows.iter().enumerate().skip(1) {
            for j in resolve(i, row.from) {
                if j + 1 != i {
                    saved[j] = true;
                }
            }
        }
        let stages = Stages { prefixes: (0..arch.backbone_len()).map(|i| vec![Self::module_prefix(i)]).collect() };
        Ok(Self { arch, nodes, detect_from, frozen: 0, saved, channels: ch, stages, detect })
    }

    /// Runs the first `n` modules with their batch norms in eval mode whatever `train` says (their
    /// variables are frozen by the caller).
    pub fn set_frozen_modules(&mut self, n: usize) {
        self.frozen = n;
    }

    /// Number of modules before `Detect` (`model.0` .. `model.{n - 1}`).
    pub fn num_modules(&self) -> usize {
        self.nodes.len()
    }

    /// Number of classes.
    pub fn nc(&self) -> i64 {
        self.detect.nc
    }

    /// Runs rows `0..=last` on `x`; returns every row's output when `keep_all`, else only those a
    /// later row reads (and always the last).
    fn run_rows(&self, x: &Tensor, train: bool, last: usize, keep_all: bool) -> Vec<Option<Tensor>> {
        let mut kept: Vec<Option<Tensor>> = Vec::with_capacity(last + 1);
        let mut x = x.shallow_clone();
        for (i, node) in self.nodes.iter().enumerate().take(last + 1) {
            let train = train && i >= self.frozen;
            let y = match &node.layer {
                Layer::Conv(c) => c.forward(&x, train),
                Layer::C2f(c) => c.forward(&x, train),
                Layer::Sppf(c) => c.forward(&x, train),
                Layer::C2psa(c) => c.forward(&x, train),
                Layer::Upsample => {
                    let s = x.size();
                    x.upsample_nearest2d([s[2] * 2, s[3] * 2], Some(2.0), Some(2.0))
                }
                Layer::Concat => {
                    let parts: Vec<Tensor> = resolve(i, node.from)
                        .map(|j| {
                            if j + 1 == i {
                                x.shallow_clone()
                            } else {
                                kept[j].as_ref().map_or_else(|| x.shallow_clone(), Tensor::shallow_clone)
                            }
                        })
                        .collect();
                    Tensor::cat(&parts, 1)
                }
            };
            kept.push((keep_all || self.saved[i] || i == last).then(|| y.shallow_clone()));
            x = y;
        }
        kept
    }

    /// `[N, 3, H, W]` (H, W multiples of 32) -> the inputs of `Detect`: `[N, c_i, H / s_i, W / s_i]`
    /// for strides 8, 16, 32. `train` puts the batch norms in training mode.
    pub fn features(&self, x: &Tensor, train: bool) -> Vec<Tensor> {
        let n = self.nodes.len();
        let kept = self.run_rows(x, train, n - 1, false);
        resolve(n, self.detect_from).filter_map(|j| kept[j].as_ref().map(Tensor::shallow_clone)).collect()
    }

    /// `[N, 3, H, W]` -> the raw head output (class logits `[N, A, nc]`, distance logits
    /// `[N, A, 64]`), for the loss.
    pub fn forward_raw(&self, x: &Tensor, train: bool) -> HeadOutput {
        self.detect.forward_raw(&self.features(x, train), train)
    }

    /// `[N, 3, H, W]` (RGB in 0-1) -> `[N, 4 + nc, A]` in eval mode: what Ultralytics'
    /// `DetectionModel` returns first (xywh boxes in input pixels, class probabilities).
    pub fn forward_eval(&self, x: &Tensor) -> Tensor {
        self.detect.decode(&self.forward_raw(x, false))
    }

    /// Folds every batch norm into its convolution for eval-mode forwards, as Ultralytics' `fuse()`
    /// does for inference (a snapshot: fold again after the weights change; training forwards are
    /// unaffected).
    pub fn fold(&mut self) -> Result<()> {
        let mut all: Vec<&mut ConvBn> = Vec::new();
        for node in &mut self.nodes {
            match &mut node.layer {
                Layer::Conv(c) => all.push(c),
                Layer::C2f(c) => all.extend(c.conv_bns_mut()),
                Layer::Sppf(c) => all.extend(c.conv_bns_mut()),
                Layer::C2psa(c) => all.extend(c.conv_bns_mut()),
                Layer::Upsample | Layer::Concat => {}
            }
        }
        all.extend(self.detect.conv_bns_mut());
        for c in all {
            c.fold()?;
        }
        Ok(())
    }

    /// [`UltralyticsYolo::run_rows`] in eval mode as ONNX nodes: rows `0..=last` on `x`
    /// (`[N, 3, H, W]`, H and W fixed multiples of 32); every row's output when `keep_all`, else only
    /// those a later row reads (and always the last).
    fn rows_onnx(
        &self,
        g: &mut Graph,
        x: &OnnxValue,
        last: usize,
        keep_all: bool,
    ) -> std::result::Result<Vec<Option<OnnxValue>>, OnnxError> {
        let mut kept: Vec<Option<OnnxValue>> = Vec::with_capacity(last + 1);
        let mut x = x.clone();
        for (i, node) in self.nodes.iter().enumerate().take(last + 1) {
            let y = match &node.layer {
                Layer::Conv(c) => c.to_onnx(g, &x)?,
                Layer::C2f(c) => c.to_onnx(g, &x)?,
                Layer::Sppf(c) => c.to_onnx(g, &x)?,
                Layer::C2psa(c) => c.to_onnx(g, &x)?,
                Layer::Upsample => {
                    // nn.Upsample(scale_factor=2, mode="nearest"): src = floor(dst / 2).
                    let (Some(h), Some(w)) = (x.dim(2), x.dim(3)) else {
                        return Err(OnnxError::Unsupported(format!("{}: needs a fixed input size", self.arch)));
                    };
                    g.resize(&x, SizeOf::Fixed(2 * h, 2 * w), Interp::NearestFloor)
                }
                Layer::Concat => {
                    let parts = resolve(i, node.from)
                        .map(|j| match kept.get(j) {
                            _ if j + 1 == i => Ok(x.clone()),
                            Some(Some(v)) => Ok(v.clone()),
                            _ => Err(OnnxError::Unsupported(format!("{}: row {i} reads row {j}", self.arch))),
                        })
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    g.concat(&parts.iter().collect::<Vec<_>>(), 1)
                }
            };
            kept.push((keep_all || self.saved[i] || i == last).then(|| y.clone()));
            x = y;
        }
        Ok(kept)
    }

    /// [`UltralyticsYolo::features`] as ONNX nodes: `[N, 3, H, W]` -> the inputs of `Detect`.
    pub fn detect_inputs_onnx(&self, g: &mut Graph, x: &OnnxValue) -> std::result::Result<Vec<OnnxValue>, OnnxError> {
        let n = self.nodes.len();
        let kept = self.rows_onnx(g, x, n - 1, false)?;
        resolve(n, self.detect_from)
            .map(|j| {
                kept.get(j).cloned().flatten().ok_or_else(|| {
                    OnnxError::Unsupported(format!("{}: Detect reads row {j}, which is not kept", self.arch))
                })
            })
            .collect()
    }

    /// [`UltralyticsYolo::forward_eval`] as ONNX nodes, before its final transpose: `[N, 3, H, W]`
    /// (H, W fixed multiples of 32) -> boxes `[N, A, 4]` (centre x, centre y, width, height in input
    /// pixels) and class probabilities `[N, A, nc]`.
    pub fn to_onnx(&self, g: &mut Graph, x: &OnnxValue) -> std::result::Result<(OnnxValue, OnnxValue), OnnxError> {
        let feats = self.detect_inputs_onnx(g, x)?;
        self.detect.to_onnx(g, &feats)
    }

    /// State-dict prefix of module `i` (`model.{i}`).
    pub fn module_prefix(i: usize) -> String {
        format!("model.{i}")
    }
}

/// The backbone modules as a core [`Backbone`]: C3, C4, C5 are the outputs of
/// [`YoloArch::feature_rows`], the low-level map is row 2's (stride 4), and every module is a stage.
impl Backbone for UltralyticsYolo {
    fn forward_features(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        let rows = self.arch.feature_rows();
        let kept = self.run_rows(xs, train, rows[2], true);
        rows.iter().filter_map(|&r| kept[r].as_ref().map(Tensor::shallow_clone)).collect()
    }

    fn feature_info(&self) -> Vec<FeatureInfo> {
        let rows = self.arch.feature_rows();
        rows.iter().zip(STRIDES).map(|(&r, stride)| FeatureInfo { stride, channels: self.channels[r] }).collect()
    }

    fn forward_features_with_low(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        let rows = self.arch.feature_rows();
        let kept = self.run_rows(xs, train, rows[2], true);
        [2, rows[0], rows[1], rows[2]].iter().filter_map(|&r| kept[r].as_ref().map(Tensor::shallow_clone)).collect()
    }

    fn low_level_info(&self) -> FeatureInfo {
        FeatureInfo { stride: 4, channels: self.channels[2] }
    }

    fn stages(&self) -> &Stages {
        &self.stages
    }

    fn set_frozen_stages(&mut self, n: usize) {
        self.set_frozen_modules(n);
    }

    fn normalization(&self) -> Normalization {
        NORMALIZATION
    }

    /// [`Backbone::forward_features_with_low`] as ONNX nodes (eval mode, fixed input size).
    fn features_with_low_onnx(&self, g: &mut Graph, x: &OnnxValue) -> std::result::Result<Vec<OnnxValue>, OnnxError> {
        let rows = self.arch.feature_rows();
        let kept = self.rows_onnx(g, x, rows[2], true)?;
        [2, rows[0], rows[1], rows[2]]
            .iter()
            .map(|&r| {
                kept.get(r)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| OnnxError::Unsupported(format!("{}: no row {r}", self.arch)))
            })
            .collect()
    }
}

/// Inputs are RGB in 0-1, as Ultralytics feeds them.
pub const NORMALIZATION: Normalization = Normalization { mean: [0.0; 3], std: [1.0; 3] };
