//! The detector: a core backbone plus one family's neck, head and loss, in one `VarStore` (backbone
//! variables in optimiser group 0, everything after it in group 1). `model.family` picks
//! YOLO ([`crate::heads::yolo`]), SSD ([`crate::ssd`]) or Faster R-CNN ([`crate::faster_rcnn`]); all
//! three train, predict and evaluate through the same [`Detector`] methods.

use tch::{Device, Kind, Tensor, nn};
use tlcv_core::{
    backbones::{Arch, Backbone, Normalization},
    freeze::{self, FreezeSummary, Strategy, channels_last, to_channels_last},
};

use crate::backbone::{self, BackboneAdapter};
use crate::config::{DetectConfig, Family};
use crate::error::{DetectError, Result};
use crate::faster_rcnn::{self, FasterRcnn, FasterRcnnConfig};
use crate::heads::yolo::YoloHead;
use crate::loss::yolo::{Targets, YoloLoss};
use crate::model_io::{Detections, Target};
use crate::neck::PanFpn;
use crate::postprocess::{self, Detection, PostprocessConfig};
use crate::ssd::{Ssd, SsdConfig};

/// Prefixes of the YOLO variables that are never frozen.
pub const HEAD_PREFIXES: [&str; 2] = ["neck", "head"];
/// Prefixes of the SSD variables that are never frozen.
pub const SSD_HEAD_PREFIXES: [&str; 2] = ["extras", "head"];

/// The YOLO-style network: backbone C3..C5 -> FPN+PAN neck -> decoupled anchor-free head, with its
/// TAL + BCE/CIoU/DFL loss.
#[derive(Debug)]
pub struct YoloNet {
    /// The backbone (skips autograd when fully frozen).
    pub backbone: BackboneAdapter,
    /// The neck.
    pub neck: PanFpn,
    /// The head.
    pub head: YoloHead,
    /// The loss.
    pub loss: YoloLoss,
}

/// The family-specific network.
#[derive(Debug)]
pub enum FamilyNet {
    /// Anchor-free YOLO-style detector.
    Yolo(Box<YoloNet>),
    /// Single-shot detector with default boxes and hard-negative mining.
    Ssd(Box<Ssd>),
    /// Two-stage detector: FPN, RPN, RoIAlign and the box head.
    FasterRcnn(Box<FasterRcnn>),
}

/// One training step's losses: the scalar to back-propagate and its named terms.
#[derive(Debug)]
pub struct StepLosses {
    /// Scalar to back-propagate.
    pub total: Tensor,
    /// Named terms (already weighted), for the logs.
    pub terms: Vec<(String, f64)>,
}

/// A detector ready to train or predict.
#[derive(Debug)]
pub struct Detector {
    /// Every variable.
    pub vs: nn::VarStore,
    /// Backbone, neck, head and loss.
    pub net: FamilyNet,
    /// The family.
    pub family: Family,
    /// Number of classes.
    pub num_classes: i64,
    /// Square input side.
    pub img_size: i64,
    /// What freezing did.
    pub freeze: FreezeSummary,
    /// Inputs are laid out channels-last.
    pub channels_last: bool,
    normalization: Normalization,
    /// The kind the backbone computes in (see [`Detector::set_compute_kind`]).
    compute_kind: Kind,
}

fn invalid(msg: String) -> DetectError {
    DetectError::Invalid(msg)
}

impl Detector {
    /// Builds the detector for `num_classes` on `device`, loads the backbone weights and freezes per
    /// the strategy.
    pub fn build(cfg: &DetectConfig, num_classes: i64, device: Device) -> Result<Self> {
        let m = &cfg.model;
        let arch: Arch = m.backbone.parse()?;
        if cfg.data.img_size < 32 || cfg.data.img_size % 32 != 0 {
            return Err(invalid(format!("data.img_size must be a positive multiple of 32, got {}", cfg.data.img_size)));
        }
        if m.weights == "none" && m.strategy != Strategy::Scratch {
            return Err(invalid(format!(
                "strategy `{}` needs pretrained weights, but model.weights = \"none\" (use --strategy scratch)",
                m.strategy
            )));
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        // Where the backbone's variables live, and the prefixes that never freeze.
        let (mut net, prefix, heads): (FamilyNet, &str, &[&str]) = match m.family {
            Family::Yolo => (build_yolo(cfg, &root, arch, num_classes)?, backbone::PREFIX, &HEAD_PREFIXES),
            Family::Ssd => {
                let s = &m.ssd;
                let ssd_cfg = SsdConfig {
                    extra_channels: s.extra_channels.clone(),
                    min_ratio: s.min_ratio,
                    max_ratio: s.max_ratio,
                    aspect_ratios: s.aspect_ratios.clone(),
                    neg_pos_ratio: s.neg_pos_ratio,
                    ..SsdConfig::new(num_classes)
                };
                (FamilyNet::Ssd(Box::new(Ssd::new(&root, arch, ssd_cfg)?)), backbone::PREFIX, &SSD_HEAD_PREFIXES)
            }
            Family::FasterRcnn => {
                let f = &m.faster_rcnn;
                let mut fc = FasterRcnnConfig::new(num_classes);
                fc.fpn_channels = f.fpn_channels;
                fc.anchor_sizes = f.anchor_sizes.clone();
                fc.fpn_from_c2 = f.fpn_from_c2;
                fc.roi_heads.representation_size = f.representation_size;
                fc.roi_heads.batch_size_per_image = f.roi_batch_per_image;
                fc.rpn.post_nms_top_n_train = f.proposals_train;
                fc.rpn.pre_nms_top_n_train = f.proposals_train;
                fc.rpn.post_nms_top_n_test = f.proposals_test;
                fc.rpn.pre_nms_top_n_test = f.proposals_test;
                let net = FasterRcnn::with_backbone(&root, arch, fc)?;
                (FamilyNet::FasterRcnn(Box::new(net)), "backbone.body", &faster_rcnn::HEAD_PREFIXES)
            }
        };
        if m.weights != "none" {
            let file = backbone::weights_file(arch, &m.weights)?;
            backbone::load_pretrained(&vs, arch, &file, prefix)?;
        }
        let trunk = net.backbone_mut();
        let stages = trunk.stages().clone();
        let normalization = trunk.normalization();
        let requested = match m.family {
            Family::Ssd => m.ssd.trainable_layers.map_or(m.trainable_layers, |t| t.min(stages.len())),
            _ => m.trainable_layers,
        };
        let trainable = m.strategy.trainable_layers(requested, stages.len());
        let freeze = freeze::apply_freeze(&vs, &stages, trainable, heads)?;
        net.set_frozen_stages(freeze.frozen_stages);
        let channels_last = cfg.train.channels_last;
        if channels_last {
            to_channels_last(&vs);
        }
        Ok(Self {
            vs,
            net,
            family: m.family,
            num_classes,
            img_size: cfg.data.img_size,
            freeze,
            channels_last,
            normalization,
            compute_kind: Kind::Float,
        })
    }

    /// Runs the backbone in `kind`: float32, or bfloat16 for mixed precision, where inputs are cast to
    /// bf16, float32 weights are cast per layer (`tlcv_core::backbones::layers::autocast`, so that their
    /// gradients stay float32) and the backbone's maps come back as float32 for the neck, heads and losses.
    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.compute_kind = kind;
    }

    /// Input normalisation.
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    fn layout(&self, xs: &Tensor) -> Tensor {
        let xs = xs.to_kind(self.compute_kind);
        if self.channels_last { channels_last(&xs) } else { xs }
    }

    /// Training losses of a batch `[N, 3, S, S]` (normalised) against padded targets (input pixels).
    pub fn loss(&self, xs: &Tensor, targets: &Targets) -> Result<StepLosses> {
        let xs = self.layout(xs);
        let named = |terms: Vec<(String, Tensor)>| -> Result<StepLosses> {
            let mut total = Tensor::zeros([], (Kind::Float, xs.device()));
            let mut out = Vec::with_capacity(terms.len());
            for (name, t) in terms {
                out.push((name, t.double_value(&[])));
                total += t;
            }
            Ok(StepLosses { total, terms: out })
        };
        match &self.net {
            FamilyNet::Yolo(y) => {
                let YoloNet { backbone, neck, head, loss } = y.as_ref();
                let feats = backbone.forward(&xs, true); // [C3, C4, C5]
                let p = neck.forward(&feats, true); // [P3, P4, P5], each [N, c, S/s, S/s]
                let out = head.forward(&p, true);
                let anchors = head.anchors(&out);
                let l = loss.compute(&out, &anchors, targets);
                Ok(StepLosses {
                    total: l.total,
                    terms: vec![
                        ("box_loss".into(), l.box_loss),
                        ("cls_loss".into(), l.cls_loss),
                        ("dfl_loss".into(), l.dfl_loss),
                    ],
                })
            }
            FamilyNet::Ssd(ssd) => named(ssd.forward_train(&xs, &unpad(targets)?)?),
            FamilyNet::FasterRcnn(frcnn) => named(frcnn.forward_train(&xs, &unpad(targets)?)?),
        }
    }

    /// Detections (input pixels) for a batch `[N, 3, S, S]`, in eval mode without gradients: scores
    /// above `cfg.conf`, at most `cfg.max_det` per image, best first.
    pub fn predict(&self, xs: &Tensor, cfg: &PostprocessConfig) -> Result<Vec<Vec<Detection>>> {
        let xs = self.layout(xs);
        match &self.net {
            FamilyNet::Yolo(y) => {
                let YoloNet { backbone, neck, head, .. } = y.as_ref();
                let (boxes, scores) = tch::no_grad(|| {
                    let feats = backbone.forward(&xs, false);
                    let out = head.forward(&neck.forward(&feats, false), false);
                    postprocess::decode(&out, &head.anchors(&out), head.reg_max)
                });
                postprocess::postprocess(&boxes, &scores, cfg)
            }
            FamilyNet::Ssd(ssd) => tch::no_grad(|| ssd.predict(&xs))?.iter().map(|d| to_detections(d, cfg)).collect(),
            FamilyNet::FasterRcnn(frcnn) => {
                tch::no_grad(|| frcnn.predict(&xs))?.iter().map(|d| to_detections(d, cfg)).collect()
            }
        }
    }

    /// Parameters of the whole detector, frozen ones included (batch-norm statistics excluded).
    pub fn num_params(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }
}

impl FamilyNet {
    fn backbone_mut(&mut self) -> &mut Box<dyn Backbone> {
        match self {
            FamilyNet::Yolo(y) => &mut y.backbone.net,
            FamilyNet::Ssd(ssd) => ssd.backbone_mut(),
            FamilyNet::FasterRcnn(frcnn) => frcnn.body_mut(),
        }
    }

    fn set_frozen_stages(&mut self, n: usize) {
        match self {
            FamilyNet::Yolo(y) => y.backbone.set_frozen_stages(n),
            other => other.backbone_mut().set_frozen_stages(n),
        }
    }
}

fn build_yolo(cfg: &DetectConfig, root: &nn::Path, arch: Arch, num_classes: i64) -> Result<FamilyNet> {
    let m = &cfg.model;
    if m.reg_max < 2 {
        return Err(invalid(format!("model.reg_max must be at least 2, got {}", m.reg_max)));
    }
    let backbone = BackboneAdapter::new(root, arch)?;
    let info = backbone.feature_info();
    let chans: Vec<i64> = info.iter().map(|f| f.channels).collect();
    let strides: Vec<i64> = info.iter().map(|f| f.stride).collect();
    let hp = root.set_group(1);
    let neck = PanFpn::new(&(&hp / "neck"), &chans, m.neck_channels)?;
    let head = YoloHead::new(&(&hp / "head"), m.neck_channels, num_classes, m.reg_max, &strides, cfg.data.img_size)?;
    let loss = YoloLoss { cfg: cfg.loss.clone(), reg_max: m.reg_max };
    Ok(FamilyNet::Yolo(Box::new(YoloNet { backbone, neck, head, loss })))
}

/// Padded batch targets -> one [`Target`] per image (padding dropped).
fn unpad(t: &Targets) -> Result<Vec<Target>> {
    let b = t.boxes.size().first().copied().unwrap_or(0);
    (0..b)
        .map(|i| {
            let keep = t.mask.get(i).nonzero().view([-1]); // [M_i]
            Ok(Target {
                boxes: t.boxes.get(i).index_select(0, &keep).to_kind(Kind::Float), // [M_i, 4]
                labels: t.labels.get(i).index_select(0, &keep).to_kind(Kind::Int64), // [M_i]
            })
        })
        .collect()
}

/// A model's [`Detections`] -> the pipeline's detections, filtered by `cfg.conf` and capped.
fn to_detections(d: &Detections, cfg: &PostprocessConfig) -> Result<Vec<Detection>> {
    let boxes = Vec::<f32>::try_from(d.boxes.to_kind(Kind::Float).view([-1]))?;
    let scores = Vec::<f32>::try_from(d.scores.to_kind(Kind::Float))?;
    let labels = Vec::<i64>::try_from(d.labels.to_kind(Kind::Int64))?;
    let mut out: Vec<Detection> = scores
        .iter()
        .zip(&labels)
        .enumerate()
        .filter(|(_, (s, _))| f64::from(**s) > cfg.conf)
        .map(|(i, (s, l))| Detection {
            bbox: [0, 1, 2, 3].map(|c| f64::from(boxes[i * 4 + c])),
            score: f64::from(*s),
            class: (*l).max(0) as usize,
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(cfg.max_det);
    Ok(out)
}
