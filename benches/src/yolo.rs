//! YOLOv8 / YOLO11 (`detect::ultralytics`) with random weights and 80 classes on random `[B, 3, S, S]`
//! inputs in 0-1: an inference batch (eval, no gradients, batch norms folded as Ultralytics' `fuse()`
//! folds them for prediction; the `[B, 84, A]` output) or a training step (the crate's YOLO loss against
//! four fixed boxes per image, backward, SGD with momentum 0.937 and weight decay 5e-4, Ultralytics'
//! defaults). `bf16`: mixed precision as `torch.autocast` runs it (a bf16 input, float32 variables cast
//! per layer, the loss in float32); for inference the variables are cast to bf16 once. `channels_last`:
//! variables and input stored NHWC, as `detect train` runs by default (`train.channels_last`).

use anyhow::Result;
use tch::{Device, Kind, Tensor, nn};
use tlcv_core::train::{Optimizer, OptimizerKind, OptimizerParams, Param, trainable_params};

use detect::config::LossConfig;
use detect::family::LossScope;
use detect::model_io::Targets;
use detect::ultralytics::{STRIDES, UltralyticsYolo, head::REG_MAX, spec::YoloArch};
use detect::yolo::anchors::anchor_points;
use detect::yolo::loss::YoloLoss;

/// Classes of the benchmark head (COCO's).
pub const CLASSES: i64 = 80;

/// Boxes per image: `(cx, cy, w, h)` as fractions of the side, class `j` (the reference script uses
/// the same four).
pub const BOXES: [[f64; 4]; 4] =
    [[0.25, 0.3, 0.2, 0.3], [0.7, 0.25, 0.3, 0.2], [0.3, 0.75, 0.15, 0.15], [0.7, 0.7, 0.4, 0.4]];

/// [`BOXES`] in every image of a batch of `batch` `size`x`size` images (xyxy pixels, class `j` for the
/// `j`-th box).
pub fn four_boxes(batch: i64, size: i64) -> Targets {
    let s = size as f64;
    let boxes: Vec<f32> = (0..batch)
        .flat_map(|_| {
            BOXES.iter().flat_map(|b| {
                [(b[0] - b[2] / 2.0) * s, (b[1] - b[3] / 2.0) * s, (b[0] + b[2] / 2.0) * s, (b[1] + b[3] / 2.0) * s]
            })
        })
        .map(|v| v as f32)
        .collect();
    let labels: Vec<i64> = (0..batch).flat_map(|_| 0..BOXES.len() as i64).collect();
    let n = BOXES.len() as i64;
    Targets {
        boxes: Tensor::from_slice(&boxes).view([batch, n, 4]),
        labels: Tensor::from_slice(&labels).view([batch, n]),
        mask: Tensor::ones([batch, n], (Kind::Bool, Device::Cpu)),
    }
}

/// SGD as Ultralytics trains: momentum 0.937, Nesterov, weight decay 5e-4.
pub fn ultralytics_sgd() -> Optimizer {
    Optimizer::new(OptimizerParams {
        kind: OptimizerKind::Sgd,
        weight_decay: 5e-4,
        momentum: 0.937,
        beta2: 0.999,
        eps: 1e-8,
        nesterov: true,
    })
}

/// What a [`YoloBench`] runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup {
    /// A training step (else inference with folded batch norms).
    pub train: bool,
    /// Mixed bf16 for training, bf16 variables for inference.
    pub bf16: bool,
    /// Variables and input channels-last.
    pub channels_last: bool,
}

/// A network with its inputs, ready to step.
pub struct YoloBench {
    _vs: nn::VarStore,
    model: UltralyticsYolo,
    loss: YoloLoss,
    xs: Tensor,
    targets: Targets,
    params: Vec<Param>,
    opt: Optimizer,
}

impl std::fmt::Debug for YoloBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YoloBench").field("input", &self.xs.size()).finish()
    }
}

impl YoloBench {
    /// `arch` with random weights and a batch of `batch` random `size`x`size` images, as `setup` says.
    pub fn new(arch: YoloArch, batch: i64, size: i64, setup: Setup) -> Result<Self> {
        let Setup { train, bf16, channels_last } = setup;
        tch::manual_seed(0);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let mut model = UltralyticsYolo::new(&vs.root(), arch, CLASSES)?;
        if bf16 && !train {
            vs.bfloat16();
        }
        if !train {
            model.fold()?;
        }
        let mut xs = Tensor::rand([batch, 3, size, size], (Kind::Float, Device::Cpu));
        if bf16 {
            xs = xs.to_kind(Kind::BFloat16);
        }
        if channels_last {
            tlcv_core::freeze::to_channels_last(&vs);
            xs = tlcv_core::freeze::channels_last(&xs);
        }
        let targets = four_boxes(batch, size);
        let params = trainable_params(&vs);
        let opt = ultralytics_sgd();
        let loss = YoloLoss { cfg: LossConfig::default(), reg_max: REG_MAX };
        Ok(Self { _vs: vs, model, loss, xs, targets, params, opt })
    }

    /// One training step; returns the loss.
    pub fn train_step(&mut self) -> Result<f64> {
        Optimizer::zero_grad(&self.params);
        let mut out = self.model.forward_raw(&self.xs, true);
        (out.cls, out.dist) = (out.cls.to_kind(Kind::Float), out.dist.to_kind(Kind::Float));
        let anchors = anchor_points(&out.shapes, &STRIDES, 0.5, out.cls.device());
        let l = self.loss.compute(&out, &anchors, &self.targets, LossScope::SINGLE)?;
        l.total.backward();
        self.opt.step(&self.params, &vec![0.01; self.params.len()]);
        Ok(l.total.double_value(&[]))
    }

    /// One inference batch: `[B, 4 + 80, A]`.
    pub fn infer(&self) -> Tensor {
        tch::no_grad(|| self.model.forward_eval(&self.xs)).to_kind(Kind::Float)
    }

    /// The batch size.
    pub fn batch(&self) -> i64 {
        self.xs.size()[0]
    }
}
