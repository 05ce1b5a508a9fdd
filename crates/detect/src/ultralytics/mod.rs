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

pub mod attention;
pub mod block;
pub mod checkpoint;
pub mod conv;
pub mod forward;
pub mod head;
pub mod postprocess;
pub mod spec;

use tch::{Tensor, nn};
use tlcv_core::backbones::layers::ConvBn;

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
    /// Whether each row's output is read by a later row (Ultralytics' `save` list).
    saved: Vec<bool>,
    /// The head.
    pub detect: Detect,
}

/// The output-channel count of every row, computed as `parse_model` does.
fn resolve(index: usize, from: &[i64]) -> impl Iterator<Item = usize> + '_ {
    from.iter().map(move |&f| if f < 0 { (index as i64 + f) as usize } else { f as usize })
}

impl UltralyticsYolo {
    /// The network for `nc` classes with its variables under `p / "model"`, initialised as
    /// Ultralytics initialises a new `DetectionModel` (PyTorch's default convolutions, batch norms at
    /// eps 1e-3 and momentum 0.03, `Detect.bias_init`).
    pub fn new(p: &nn::Path, arch: YoloArch, nc: i64) -> Result<Self> {
        if !(1..=10_000).contains(&nc) {
            return Err(DetectError::Invalid(format!("{arch}: number of classes must be 1 to 10000, got {nc}")));
        }
        let m = p / "model";
        let rows = arch.rows();
        let mut ch: Vec<i64> = Vec::with_capacity(rows.len()); // output channels per row
        let mut nodes = Vec::with_capacity(rows.len());
        let mut detect = None;
        let mut detect_from: &'static [i64] = &[];
        for (i, row) in rows.iter().enumerate() {
            let q = &m / i;
            let inputs: Vec<i64> = resolve(i, row.from).map(|j| if i == 0 { 3 } else { ch[j] }).collect();
            let c1 = inputs[0];
            let (layer, c2) = match row.module {
                Module::Conv { c2, k, s } => {
                    let c2 = arch.channels(c2);
                    (Layer::Conv(conv::conv(&q, ConvSpec::new(c1, c2, k).stride(s))?), c2)
                }
                Module::C2f { c2, n, shortcut } => {
                    let c2 = arch.channels(c2);
                    (Layer::C2f(C2f::new(&q, c1, c2, arch.repeats(n), C2fKind::C2f { shortcut })?), c2)
                }
                Module::C3k2 { c2, n, c3k, e } => {
                    let c2 = arch.channels(c2);
                    let kind = C2fKind::C3k2 { c3k: c3k || arch.forces_c3k(), e };
                    (Layer::C2f(C2f::new(&q, c1, c2, arch.repeats(n), kind)?), c2)
                }
                Module::Sppf { c2, k } => {
                    let c2 = arch.channels(c2);
                    (Layer::Sppf(Sppf::new(&q, c1, c2, k)?), c2)
                }
                Module::C2psa { c2, n } => {
                    let c2 = arch.channels(c2);
                    (Layer::C2psa(C2psa::new(&q, c1, c2, arch.repeats(n))?), c2)
                }
                Module::Upsample => (Layer::Upsample, c1),
                Module::Concat => (Layer::Concat, inputs.iter().sum()),
                Module::Detect => {
                    detect = Some(Detect::new(&q, arch.version, nc, &inputs, &STRIDES)?);
                    detect_from = row.from;
                    ch.push(0);
                    continue;
                }
            };
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
        Ok(Self { arch, nodes, detect_from, saved, detect })
    }

    /// Number of classes.
    pub fn nc(&self) -> i64 {
        self.detect.nc
    }

    /// `[N, 3, H, W]` (H, W multiples of 32) -> the inputs of `Detect`: `[N, c_i, H / s_i, W / s_i]`
    /// for strides 8, 16, 32. `train` puts the batch norms in training mode.
    pub fn features(&self, x: &Tensor, train: bool) -> Vec<Tensor> {
        let mut kept: Vec<Option<Tensor>> = Vec::with_capacity(self.nodes.len());
        let mut x = x.shallow_clone();
        for (i, node) in self.nodes.iter().enumerate() {
            let pick = |j: usize| {
                if j + 1 == i {
                    x.shallow_clone()
                } else {
                    kept[j].as_ref().map_or_else(|| x.shallow_clone(), Tensor::shallow_clone)
                }
            };
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
                    let parts: Vec<Tensor> = resolve(i, node.from).map(pick).collect();
                    Tensor::cat(&parts, 1)
                }
            };
            kept.push(self.saved[i].then(|| y.shallow_clone()));
            x = y;
        }
        let n = self.nodes.len();
        resolve(n, self.detect_from)
            .map(|j| kept[j].as_ref().map_or_else(|| x.shallow_clone(), Tensor::shallow_clone))
            .collect()
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

    /// State-dict prefix of module `i` (`model.{i}`).
    pub fn module_prefix(i: usize) -> String {
        format!("model.{i}")
    }
}
