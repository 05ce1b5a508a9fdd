//! The task networks of the embedded runs, built by the crates' own code from `configs/detect.toml` and
//! `configs/segment.toml` with random weights: the YOLO-style detector (EfficientNet-Lite0, FPN+PAN neck,
//! DFL head; 9 classes, the embedded set's, at `data.img_size` 256) and the U-Net (Lite0 encoder; 5
//! classes at 128). A training step runs the crate's loss (detector: TAL + BCE + CIoU + DFL against
//! [`crate::yolo::BOXES`]; U-Net: cross-entropy + 0.5 Dice against four quadrant classes), backward and
//! SGD (momentum 0.937, Nesterov, weight decay 5e-4) over the whole network; an inference batch runs in
//! eval mode without gradients (the detector to decoded boxes and scores, as `detect predict` before its
//! NMS). `bf16`: as the tasks run it, a bf16 input with float32 variables cast per layer (the detector's
//! neck and head then run in float32 on the backbone's maps, as `detect train` does); `channels_last`:
//! variables and input NHWC. `benches/reference/tasks.py` is the same networks in PyTorch.

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};
use tlcv_core::freeze::{channels_last, to_channels_last};
use tlcv_core::train::{Optimizer, Param, trainable_params};

use detect::config::DetectConfig;
use detect::family::LossScope;
use detect::model::Detector;
use detect::model_io::Targets;
use segment::config::SegmentConfig;
use segment::loss::SegLoss;
use segment::model::SegModel;

use crate::yolo::{Setup, four_boxes, ultralytics_sgd};

/// Classes of the embedded detection set (six shapes, three digits).
pub const DETECT_CLASSES: i64 = 9;
/// Classes of the embedded segmentation set (background, circle, square, triangle, digit).
pub const SEGMENT_CLASSES: i64 = 5;

/// Which network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Net {
    /// `detect`'s YOLO-style family on Lite0.
    YoloStyle,
    /// `segment`'s U-Net on Lite0.
    Unet,
}

impl Net {
    /// The name in tables and FLOP counts.
    pub fn name(self) -> &'static str {
        match self {
            Net::YoloStyle => "yolo-style",
            Net::Unet => "unet",
        }
    }
}

enum Model {
    Detect(Detector, Targets),
    Segment(Box<SegModel>, SegLoss, Tensor),
}

/// A task network with its inputs, ready to step.
pub struct TaskBench {
    model: Model,
    xs: Tensor,
    params: Vec<Param>,
    opt: Optimizer,
}

impl std::fmt::Debug for TaskBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskBench").field("input", &self.xs.size()).finish()
    }
}

fn config<T: tlcv_core::config::Layered>(file: &str) -> Result<T> {
    let path = tlcv_core::paths::workspace_root()?.join("configs").join(file);
    tlcv_core::config::load(Some(&path), &[]).with_context(|| format!("loading {}", path.display()))
}

/// `[N, S, S]` int64: classes 1-4 in the four quadrants.
fn quadrants(batch: i64, size: i64) -> Tensor {
    let h = size / 2;
    let m = Tensor::zeros([size, size], (Kind::Int64, Device::Cpu));
    for (i, (y, x)) in [(0, 0), (0, h), (h, 0), (h, h)].into_iter().enumerate() {
        let (hy, wx) = (if y == 0 { h } else { size - h }, if x == 0 { h } else { size - h });
        let _ = m.narrow(0, y, hy).narrow(1, x, wx).fill_(i as i64 + 1);
    }
    m.unsqueeze(0).expand([batch, size, size], false).contiguous()
}

impl TaskBench {
    /// `net` with random weights and `batch` random images at its embedded size (or `size` when
    /// non-zero), as `setup` says.
    pub fn new(net: Net, batch: i64, size: i64, setup: Setup) -> Result<Self> {
        let Setup { bf16, channels_last: cl, .. } = setup;
        tch::manual_seed(0);
        let (model, vs_size) = match net {
            Net::YoloStyle => {
                let mut cfg: DetectConfig = config("detect.toml")?;
                let size = if size > 0 { size } else { cfg.data.img_size };
                cfg.data.img_size = size;
                cfg.train.channels_last = cl;
                let mut det = Detector::untrained(&cfg, DETECT_CLASSES)?;
                det.set_compute_kind(if bf16 { Kind::BFloat16 } else { Kind::Float });
                (Model::Detect(det, four_boxes(batch, size)), size)
            }
            Net::Unet => {
                let cfg: SegmentConfig = config("segment.toml")?;
                let size = if size > 0 { size } else { cfg.data.img_size };
                let mut m = SegModel::untrained(&cfg.model, SEGMENT_CLASSES, Device::Cpu)?;
                m.inference_kind = if bf16 { Kind::BFloat16 } else { Kind::Float };
                if cl {
                    to_channels_last(&m.vs);
                }
                let l = &cfg.loss;
                let loss = SegLoss {
                    ce_weight: l.ce_weight,
                    dice_weight: l.dice_weight,
                    class_weights: None,
                    ignore_index: i64::from(cfg.data.ignore_index),
                    smooth: l.dice_smooth,
                };
                (Model::Segment(Box::new(m), loss, quadrants(batch, size)), size)
            }
        };
        let mut xs = Tensor::rand([batch, 3, vs_size, vs_size], (Kind::Float, Device::Cpu));
        if bf16 {
            xs = xs.to_kind(Kind::BFloat16);
        }
        if cl {
            xs = channels_last(&xs);
        }
        let vs = match &model {
            Model::Detect(d, _) => &d.vs,
            Model::Segment(m, _, _) => &m.vs,
        };
        let params = trainable_params(vs);
        let opt = ultralytics_sgd();
        Ok(Self { model, xs, params, opt })
    }

    /// One training step; returns the loss.
    pub fn train_step(&mut self) -> Result<f64> {
        Optimizer::zero_grad(&self.params);
        let loss = match &self.model {
            Model::Detect(d, targets) => d.net.forward_train(&self.xs, targets, LossScope::SINGLE)?.total,
            Model::Segment(m, loss, target) => {
                let logits = m.forward(&self.xs, true).to_kind(Kind::Float); // [B, C, S, S]
                loss.compute(&logits, target).0
            }
        };
        loss.backward();
        self.opt.step(&self.params, &vec![0.01; self.params.len()]);
        Ok(loss.double_value(&[]))
    }

    /// One inference batch; returns the mean absolute class score (detector) or logit (U-Net).
    pub fn infer(&self) -> Result<f64> {
        let out = match &self.model {
            Model::Detect(d, _) => d.net.decoded(&self.xs)?.1, // [B, A, nc]
            Model::Segment(m, _, _) => tch::no_grad(|| m.forward(&self.xs, false)), // [B, C, S, S]
        };
        Ok(out.to_kind(Kind::Float).abs().mean(Kind::Float).double_value(&[]))
    }

    /// The batch size.
    pub fn batch(&self) -> i64 {
        self.xs.size()[0]
    }

    /// The input side.
    pub fn size(&self) -> i64 {
        self.xs.size()[2]
    }
}
