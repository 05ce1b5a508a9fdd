//! ONNX export of a trained detector (`detect export`) and serving an exported file with tract
//! (`detect predict --onnx`).
//!
//! Without `--nms` the graph ends at the decoded head: `predictions` `[N, A, 4 + nc]`, per anchor (or
//! default box) the box `x1, y1, x2, y2` in input pixels and one score per foreground class (YOLO:
//! sigmoid; SSD: softmax without the background column). With `--nms` it goes on to the detections of
//! [`crate::postprocess::postprocess`] (YOLO) or `Ssd::predict` (SSD) through ONNX's
//! `NonMaxSuppression`: `detections` `[N, K, 6]` = `x1, y1, x2, y2, score, class`, best first, rows
//! past the last detection all zero, `K = min(max_det, candidates)`.
//!
//! Faster R-CNN ([`OnnxHead::Detections`]) always ends with its detections, its NMS being part of the
//! two-stage network (see `faster_rcnn/onnx.rs`); tract runs its `RoiAlign` through the kernel that
//! `tlcv_core::onnx` registers.

use tch::{Device, Tensor};
use tlcv_core::backbones::{Arch, Normalization};
use tlcv_core::onnx::graph::{Attr, DataType};
use tlcv_core::onnx::{
    self, ExportOptions, FloatKind, Graph, Metadata, ModelProto, OnnxError, Value, runtime::OnnxModel,
};

use crate::error::{DetectError, Result};
use crate::family::{Family, to_detections};
use crate::model::Detector;
use crate::postprocess::{self, Detection, PostprocessConfig};
use crate::ssd::{SsdConfig, select_detections};

/// What the exported graph ends with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Head {
    /// `predictions` `[N, A, 4 + nc]`.
    Raw,
    /// `detections` `[N, K, 6]` after NMS with these thresholds.
    Nms(PostprocessConfig),
}

/// The thresholds of [`nms_rows`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NmsThresholds {
    /// IoU above which a lower-scored box of the same class is dropped.
    pub iou: f64,
    /// A box enters a class when its score there is above this.
    pub score_thr: f64,
    /// Boxes kept per class and overall.
    pub max_det: i64,
    /// Only the best this many boxes of each class are candidates (`None`: all).
    pub cand_per_class: Option<i64>,
}

/// Greedy class-wise NMS as ONNX nodes: boxes `[N, P, 4]`, per-class scores `[N, C, P]` ->
/// `[N, K, 6]` rows `x1, y1, x2, y2, score, class`, `K = min(max_det, C * P)` (see [`NmsThresholds`]).
pub(crate) fn nms_rows(
    g: &mut Graph,
    boxes: &Value,
    scores: &Value,
    params: NmsThresholds,
) -> std::result::Result<Value, OnnxError> {
    let NmsThresholds { iou, score_thr, max_det, cand_per_class } = params;
    let (Some(c), Some(p)) = (scores.dim(1), scores.dim(2)) else {
        return Err(OnnxError::Unsupported("NMS needs static class and box counts".into()));
    };
    let mut scores = scores.clone();
    if let Some(kc) = cand_per_class.filter(|&k| k < p) {
        let (vals, idx) = g.topk(&scores, kc, 2);
        let zeros = g.binary("Sub", &scores, &scores);
        scores = g.op("ScatterElements", &[&zeros, &idx, &vals], &[Attr::Int("axis", 2)], scores.dims().to_vec());
    }
    let max_out = g.ints(&[max_det]);
    let iou_v = g.const_f32_always(&[iou as f32]);
    let thr_v = g.const_f32_always(&[score_thr as f32]);
    let sel = g.op("NonMaxSuppression", &[boxes, &scores, &max_out, &iou_v, &thr_v], &[], vec![None, Some(3)]);
    let sel_scores = g.op("GatherND", &[&scores, &sel], &[], vec![None]);
    let zeros = g.binary("Sub", &scores, &scores);
    let kept = g.op("ScatterND", &[&zeros, &sel, &sel_scores], &[], scores.dims().to_vec()); // [N, C, P]
    let flat = g.reshape(&kept, &[0, c * p]);
    let k = max_det.min(c * p);
    let (vals, idx) = g.topk(&flat, k, 1); // [N, K]
    let pv = g.ints(&[p]);
    let cls = g.binary("Div", &idx, &pv);
    let bidx = g.binary("Mod", &idx, &pv);
    let bidx = g.unsqueeze(&bidx, 2); // [N, K, 1]
    let n = boxes.dims()[0];
    let picked = g.op("GatherND", &[boxes, &bidx], &[Attr::Int("batch_dims", 1)], vec![n, Some(k), Some(4)]);
    let cls = g.cast(&cls, DataType::Float);
    let cls = g.unsqueeze(&cls, 2);
    let sc = g.unsqueeze(&vals, 2);
    let rows = g.concat(&[&picked, &sc, &cls], 2); // [N, K, 6]
    let zero = g.const_f32_always(&[0.0]);
    let valid = g.binary("Greater", &sc, &zero);
    let valid = g.cast(&valid, DataType::Float);
    Ok(g.binary("Mul", &rows, &valid))
}

/// YOLO's per-anchor best class as per-class scores for [`nms_rows`]: `[N, A, nc]` -> `[N, nc, A]`
/// holding each anchor's best score in its best class only (others zero), restricted to the
/// `max_candidates` best anchors.
fn best_class_scores(g: &mut Graph, scores: &Value, max_candidates: i64) -> std::result::Result<Value, OnnxError> {
    let (Some(a), Some(nc)) = (scores.dim(1), scores.dim(2)) else {
        return Err(OnnxError::Unsupported("YOLO NMS needs static anchor and class counts".into()));
    };
    let mut best = g.reduce("ReduceMax", scores, &[2], false); // [N, A]
    let cls = g.op("ArgMax", &[scores], &[Attr::Int("axis", 2), Attr::Int("keepdims", 0)], best.dims().to_vec());
    if max_candidates < a {
        let (vals, idx) = g.topk(&best, max_candidates, 1);
        let zeros = g.binary("Sub", &best, &best);
        best = g.op("ScatterElements", &[&zeros, &idx, &vals], &[Attr::Int("axis", 1)], best.dims().to_vec());
    }
    let classes = g.const_i64(&(0..nc).collect::<Vec<_>>(), &[1, nc, 1]);
    let cls = g.unsqueeze(&cls, 1); // [N, 1, A]
    let onehot = g.binary("Equal", &cls, &classes); // [N, nc, A]
    let onehot = g.cast(&onehot, DataType::Float);
    let best = g.unsqueeze(&best, 1);
    Ok(g.binary("Mul", &onehot, &best))
}

/// How a family's detections come out of its decoded head (the libtorch rule the NMS graph follows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NmsRule {
    /// YOLO: each anchor's best class only ([`crate::postprocess::postprocess`]), at most
    /// `max_candidates` anchors by score into the class-wise NMS; the thresholds come from the run's
    /// [`PostprocessConfig`].
    BestClass {
        /// Anchors that enter NMS (tlcv's YOLO: `PostprocessConfig::max_candidates`; Ultralytics: 30000).
        max_candidates: usize,
    },
    /// SSD: every class whose probability is above `score_thresh`, the best `topk` per class,
    /// class-wise NMS at `iou`, the best `max_det`.
    PerClass {
        /// Class probability threshold.
        score_thresh: f64,
        /// Candidates per class before NMS.
        topk: i64,
        /// NMS IoU threshold.
        iou: f64,
        /// Detections per image.
        max_det: usize,
    },
}

/// How a family's exported network ends (from [`crate::family::DetectorFamily::to_onnx`]).
#[derive(Debug)]
pub enum OnnxHead {
    /// A dense head decoded per anchor; the export adds NMS with `--nms`.
    Dense(DenseHead),
    /// A two-stage network whose NMS is part of it: `detections` `[N, K, 6]` rows as [`Head::Nms`]
    /// describes them.
    Detections {
        /// The rows.
        rows: Value,
        /// Its thresholds, for the metadata (`conf > 0.05, iou 0.5, max_det 100`).
        nms: String,
    },
}

/// A one-stage family's decoded head as ONNX values.
#[derive(Debug)]
pub struct DenseHead {
    /// `[N, A, 4]` x1, y1, x2, y2 in input pixels.
    pub boxes: Value,
    /// `[N, A, nc]` per-class scores.
    pub scores: Value,
    /// How NMS treats them.
    pub nms: NmsRule,
    /// The strides of the levels, for the metadata (anchor-point heads).
    pub strides: Option<Vec<i64>>,
}

/// The ONNX model of `det` (built with `backbone`) for `names`.
pub fn export(
    det: &Detector,
    backbone: Arch,
    names: &[String],
    opts: &ExportOptions,
    head: Head,
) -> Result<ModelProto> {
    let norm = det.normalization();
    let (mut g, x) = onnx::begin(opts, Some(norm))?;
    g.name_params(det.vs.variables().iter());
    let pp = match head {
        Head::Raw => None,
        Head::Nms(pp) => Some(pp),
    };
    let out = match det.net.to_onnx(&mut g, &x, pp.as_ref())? {
        OnnxHead::Dense(d) => dense_output(&mut g, d, head)?,
        OnnxHead::Detections { rows, nms } => {
            let rows = to_float32(&mut g, &rows);
            Output { value: rows, strides: None, nms: Some(nms) }
        }
    };
    let name = if out.nms.is_some() { "detections" } else { "predictions" };
    g.output(&out.value, name, &["batch"]);
    let meta = metadata(det, backbone, names, opts, &out);
    let doc = format!("tlcv detect: {} with {} classes", det.family, names.len());
    Ok(onnx::finish(g, &doc, meta))
}

/// The graph's one output.
struct Output {
    value: Value,
    strides: Option<Vec<i64>>,
    /// The thresholds when the output is `detections` `[N, K, 6]` rather than `predictions`.
    nms: Option<String>,
}

/// A value of a half network in float32 (post-processing and outputs are float32).
fn to_float32(g: &mut Graph, v: &Value) -> Value {
    if g.float_kind() == FloatKind::F16 {
        g.set_float_kind(FloatKind::F32);
        g.cast(v, DataType::Float)
    } else {
        v.clone()
    }
}

/// The decoded head as `predictions`, or with [`Head::Nms`] the detections of the family's rule.
fn dense_output(g: &mut Graph, d: DenseHead, head: Head) -> Result<Output> {
    let DenseHead { boxes, scores, nms, strides } = d;
    // Post-processing runs in float32 (NonMaxSuppression takes float32 only).
    let half = g.float_kind() == FloatKind::F16;
    let (boxes, scores) = (to_float32(g, &boxes), if half { g.cast(&scores, DataType::Float) } else { scores });
    let Head::Nms(pp) = head else {
        return Ok(Output { value: g.concat(&[&boxes, &scores], 2), strides, nms: None });
    };
    let rows = match nms {
        NmsRule::PerClass { score_thresh, topk, iou, max_det } => {
            let per_class = g.transpose(&scores, &[0, 2, 1]); // [N, nc, P]
            let max_det = max_det.min(pp.max_det) as i64;
            let params =
                NmsThresholds { iou, score_thr: score_thresh.max(pp.conf), max_det, cand_per_class: Some(topk) };
            nms_rows(g, &boxes, &per_class, params)?
        }
        NmsRule::BestClass { max_candidates } => {
            let per_class = best_class_scores(g, &scores, max_candidates as i64)?;
            let params =
                NmsThresholds { iou: pp.iou, score_thr: pp.conf, max_det: pp.max_det as i64, cand_per_class: None };
            nms_rows(g, &boxes, &per_class, params)?
        }
    };
    let nms = format!("conf > {}, iou {}, max_det {}", pp.conf, pp.iou, pp.max_det);
    Ok(Output { value: rows, strides, nms: Some(nms) })
}

/// The model's metadata: the input contract, the family, what the output holds, the thresholds.
fn metadata(det: &Detector, backbone: Arch, names: &[String], opts: &ExportOptions, out: &Output) -> Metadata {
    let family = det.family;
    let network = det.net.network_name().unwrap_or_else(|| backbone.to_string());
    let mut meta = Metadata::new("detect", &format!("{family}/{network}"), opts, Some(det.normalization()));
    meta.names(names);
    meta.set("family", family.name());
    if let Some(s) = &out.strides {
        meta.set("strides", &serde_json::to_string(s).unwrap_or_default());
    }
    let s = det.img_size;
    meta.set(
        "preprocess",
        &format!("letterbox to {s}x{s} (aspect kept, centred, padded with 114); boxes are in those input pixels"),
    );
    let outputs = if out.nms.is_some() {
        "detections [N, K, 6]: x1, y1, x2, y2 (input pixels), score, class; zero rows pad"
    } else {
        "predictions [N, A, 4 + classes]: x1, y1, x2, y2 (input pixels), class scores"
    };
    meta.set("outputs", outputs);
    if let Some(nms) = &out.nms {
        meta.set("nms", nms);
    }
    meta
}

/// Something that detects objects in a letterboxed batch: the libtorch detector or an exported file.
pub trait DetectModel {
    /// Square input side.
    fn img_size(&self) -> i64;
    /// Input normalisation; `None` = pixels in `0..1` (an ONNX export normalises in its graph).
    fn input_normalization(&self) -> Option<Normalization>;
    /// Where inputs go.
    fn device(&self) -> Device;
    /// Detections (input pixels) of `[N, 3, S, S]`, best first per image.
    fn detect(&self, xs: &Tensor, pp: &PostprocessConfig) -> Result<Vec<Vec<Detection>>>;
}

impl DetectModel for Detector {
    fn img_size(&self) -> i64 {
        self.img_size
    }
    fn input_normalization(&self) -> Option<Normalization> {
        Some(self.normalization())
    }
    fn device(&self) -> Device {
        self.vs.device()
    }
    fn detect(&self, xs: &Tensor, pp: &PostprocessConfig) -> Result<Vec<Vec<Detection>>> {
        self.predict(xs, pp)
    }
}

/// An exported detector served by tract.
#[derive(Debug)]
pub struct OnnxDetector {
    /// The model.
    pub model: OnnxModel,
    /// Class names from the metadata.
    pub names: Vec<String>,
    /// Input side.
    pub img_size: i64,
    /// Whether the graph ends with NMS (`detections`) rather than `predictions`.
    pub has_nms: bool,
    /// The family, whose post-processing a graph without NMS needs.
    pub family: Family,
}

impl OnnxDetector {
    /// Loads a file written by `detect export`.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let model = OnnxModel::load(path)?;
        model.expect_task("detect")?;
        let Some((img_size, _)) = model.input_size() else {
            return Err(DetectError::Invalid(format!("{}: the model has no fixed input size", path.display())));
        };
        let meta = model.metadata();
        let names: Vec<String> = meta.get("names").and_then(|n| serde_json::from_str(n).ok()).unwrap_or_default();
        if names.is_empty() {
            return Err(DetectError::Invalid(format!("{}: no class names in the metadata", path.display())));
        }
        let has_nms = meta.get("nms").is_some();
        let family: Family = meta
            .get("family")
            .unwrap_or("")
            .parse()
            .map_err(|e| DetectError::Invalid(format!("{}: metadata `family`: {e}", path.display())))?;
        Ok(Self { model, names, img_size, has_nms, family })
    }
}

impl DetectModel for OnnxDetector {
    fn img_size(&self) -> i64 {
        self.img_size
    }
    fn input_normalization(&self) -> Option<Normalization> {
        None
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn detect(&self, xs: &Tensor, pp: &PostprocessConfig) -> Result<Vec<Vec<Detection>>> {
        let out = self.model.run(xs)?.into_iter().next().ok_or_else(|| DetectError::Invalid("no output".into()))?;
        if !self.has_nms {
            // The same post-processing as the libtorch path, on the decoded head.
            let boxes = out.narrow(2, 0, 4);
            let scores = out.narrow(2, 4, out.size()[2] - 4);
            if self.family != Family::Ssd {
                return postprocess::postprocess(&boxes, &scores, pp);
            }
            let cfg = SsdConfig::new(self.names.len() as i64);
            return (0..boxes.size()[0])
                .map(|i| to_detections(&select_detections(&boxes.get(i), &scores.get(i), &cfg)?, pp))
                .collect();
        }
        let rows = Vec::<f32>::try_from(out.reshape([-1]))?;
        let k = out.size()[1] as usize;
        Ok(rows
            .chunks_exact(6 * k)
            .map(|img| {
                img.chunks_exact(6)
                    .filter(|r| r[4] > 0.0 && f64::from(r[4]) > pp.conf)
                    .take(pp.max_det)
                    .map(|r| Detection {
                        bbox: [r[0], r[1], r[2], r[3]].map(f64::from),
                        score: f64::from(r[4]),
                        class: r[5] as usize,
                    })
                    .collect()
            })
            .collect())
    }
}
