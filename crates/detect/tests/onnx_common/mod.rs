//! What the ONNX export tests share: the export-and-compare cases (ONNX Runtime through
//! `ParityCheck`, tract in process), detections as the exported `[N, K, 6]` rows, the comparison of two
//! runtimes' detections that tolerates NMS ties, and batch-norm calibration of random networks.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use detect::export::{DetectModel, Head, OnnxDetector, export};
use detect::family::LossScope;
use detect::model::Detector;
use detect::model_io::Targets;
use detect::postprocess::{Detection, PostprocessConfig};
use tch::{Device, Kind, Tensor};
use tlcv_core::backbones::Arch;
use tlcv_core::onnx::parity::{Compare, ParityCheck, max_rel_err, normalise};
use tlcv_core::onnx::{self, ExportOptions};

/// Relative tolerance of raw outputs, and box tolerance per pixel of input size.
pub const RTOL: f64 = 1e-4;

/// What one exported detector is checked with: `d`'s label set, backbone (for the metadata) and
/// post-processing.
pub struct Export<'a> {
    /// Class names written into the metadata.
    pub names: &'a [String],
    /// The backbone named in the metadata.
    pub backbone: Arch,
    /// Thresholds of the libtorch path and of the NMS in the graph.
    pub pp: PostprocessConfig,
}

/// A detector exported raw and with NMS, and the batch of one image tract is checked on.
pub struct TractCase {
    /// The graph ending at the decoded head.
    pub raw: PathBuf,
    /// The graph ending with NMS.
    pub nms: PathBuf,
    /// `[1, 3, H, W]` input in 0..1.
    pub x: Tensor,
    /// The network both came from.
    pub d: Detector,
}

/// tlcv's decoded head: `[N, A, 4 + nc]`.
pub fn raw(d: &Detector, xs: &Tensor) -> Result<Tensor> {
    let (b, s) = d.net.decoded(xs)?;
    Ok(Tensor::cat(&[b, s], 2))
}

/// Exports `d` as `{name}_raw` and `{name}_nms` with a dynamic batch and adds ONNX Runtime runs on
/// random batches of 1 and 3 (raw to [`RTOL`], detections as `Detector::detect`'s). Returns the
/// number of detections compared (a random network that detects nothing checks nothing) and the
/// case for [`check_tract`].
pub fn add_raw_and_nms(
    check: &mut ParityCheck,
    d: Detector,
    name: &str,
    e: &Export,
    size: i64,
) -> Result<(usize, TractCase)> {
    let opts = ExportOptions { dynamic_batch: true, ..ExportOptions::new(size) };
    let norm = d.normalization();
    let (raw_name, nms_name) = (format!("{name}_raw"), format!("{name}_nms"));
    onnx::save(&export(&d, e.backbone, e.names, &opts, Head::Raw)?, &check.model_path(&raw_name))?;
    onnx::save(&export(&d, e.backbone, e.names, &opts, Head::Nms(e.pp))?, &check.model_path(&nms_name))?;
    let inputs: Vec<Tensor> =
        [1, 3].iter().map(|&n| Tensor::rand([n, 3, size, size], (Kind::Float, Device::Cpu))).collect();
    check.model(&raw_name, Compare::Relative { rtol: RTOL });
    for x in &inputs {
        check.run(x, &[raw(&d, &normalise(x, norm))?])?;
    }
    check.model(&nms_name, Compare::Detections { rtol: RTOL, atol: 1e-4, nms_iou: e.pp.iou });
    let mut any = 0;
    for x in &inputs {
        let dets = d.detect(&normalise(x, norm), &e.pp)?;
        any += dets.iter().map(Vec::len).sum::<usize>();
        check.run(x, &[rows(&dets, e.pp.max_det)])?;
    }
    let (raw, nms) = (check.model_path(&raw_name), check.model_path(&nms_name));
    Ok((any, TractCase { raw, nms, x: inputs[0].shallow_clone(), d }))
}

/// Exports `d` with NMS at `opset` and adds an ONNX Runtime run on a random batch of 3.
pub fn add_opset_case(check: &mut ParityCheck, d: &Detector, name: &str, e: &Export, opset: i64) -> Result<()> {
    let size = d.img_size();
    let opts = ExportOptions { dynamic_batch: true, opset, ..ExportOptions::new(size) };
    onnx::save(&export(d, e.backbone, e.names, &opts, Head::Nms(e.pp))?, &check.model_path(name))?;
    check.model(name, Compare::Detections { rtol: RTOL, atol: 1e-4, nms_iou: e.pp.iou });
    let x = Tensor::rand([3, 3, size, size], (Kind::Float, Device::Cpu));
    check.run(&x, &[rows(&d.detect(&normalise(&x, d.normalization()), &e.pp)?, e.pp.max_det)])?;
    Ok(())
}

/// tract on every case: with or without NMS in the graph, `predict --onnx`'s detections equal the
/// libtorch path's, and the raw head equals tlcv's to [`RTOL`]. Returns the largest raw error.
pub fn check_tract(cases: &[TractCase], pp: &PostprocessConfig) -> Result<f64> {
    let mut worst = 0f64;
    for c in cases {
        let want = c.d.detect(&normalise(&c.x, c.d.normalization()), pp)?;
        for path in [&c.raw, &c.nms] {
            let m = OnnxDetector::load(path)?;
            ensure!(m.family == c.d.family, "{}: family {:?}", path.display(), m.family);
            let got = m.detect(&c.x, pp)?;
            ensure!(got.len() == want.len(), "{}: {} vs {} images", path.display(), got.len(), want.len());
            same_boxes(&got[0], &want[0], RTOL * c.x.size()[3] as f64, pp.iou)
                .with_context(|| format!("{} on tract", path.display()))?;
        }
        let out = OnnxDetector::load(&c.raw)?.model.run(&c.x)?;
        let err = max_rel_err(&out[0], &raw(&c.d, &normalise(&c.x, c.d.normalization()))?);
        ensure!(err <= RTOL, "{}: tract differs by {err:e}", c.raw.display());
        worst = worst.max(err);
    }
    Ok(worst)
}

/// Detections as `[N, K, 6]` rows padded with zeros.
pub fn rows(dets: &[Vec<Detection>], k: usize) -> Tensor {
    let mut v = vec![0f32; dets.len() * k * 6];
    for (i, img) in dets.iter().enumerate() {
        for (j, d) in img.iter().take(k).enumerate() {
            let r = &mut v[(i * k + j) * 6..(i * k + j + 1) * 6];
            r.copy_from_slice(&[d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3], d.score, d.class as f64].map(|x| x as f32));
        }
    }
    Tensor::from_slice(&v).view([dets.len() as i64, k as i64, 6])
}

/// `got` and `want` pair one to one: same class, coordinates within `box_tol`, score within 1e-4. Rows
/// are paired in `want`'s order among the unpaired ones, so boxes whose scores tie within 1e-4 may come
/// in either order (two runtimes' float sums differ in the last bits).
pub fn same_boxes(got: &[Detection], want: &[Detection], box_tol: f64, nms_iou: f64) -> Result<()> {
    let mut free = vec![true; got.len()];
    let mut unpaired = Vec::new();
    for b in want {
        let hit = got.iter().enumerate().position(|(i, a)| {
            let box_err = a.bbox.iter().zip(&b.bbox).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
            free[i] && a.class == b.class && box_err < box_tol && (a.score - b.score).abs() < 1e-4
        });
        match hit {
            Some(i) => free[i] = false,
            None => unpaired.push(b),
        }
    }
    // As scripts/onnx_parity.py: a box kept on one side only must tie with one kept on the other only
    // (same class, score within 1e-4, IoU above the NMS threshold: NMS met the pair in the other order).
    let left: Vec<&Detection> = got.iter().zip(&free).filter(|(_, f)| **f).map(|(d, _)| d).collect();
    let tied = |a: &Detection, b: &Detection| {
        a.class == b.class && (a.score - b.score).abs() < 1e-4 && iou(&a.bbox, &b.bbox) > nms_iou
    };
    for (mine, theirs) in [(&unpaired, &left), (&left, &unpaired)] {
        if let Some(b) = mine.iter().find(|b| !theirs.iter().any(|o| tied(b, o))) {
            bail!("{b:?} has no match and no tie among {} boxes", got.len());
        }
    }
    Ok(())
}

/// Sets every batch norm's running statistics from one training-mode `pass` (run from zero statistics,
/// then divided by each layer's `momentum(name)`): the batch's means and `var_factor` times its variances,
/// keeping the random scales and shifts. With the random statistics of `randomise_batch_norms` the
/// signal fades or grows over a deep network: anchors score exactly alike, or boxes collapse, so that
/// NMS decides between ties that the last bit of each runtime's arithmetic breaks. With the batch's
/// own variances the eval-mode network amplifies rounding; twice them lies between.
pub fn calibrate_batch_norms(
    d: &Detector,
    momentum: impl Fn(&str) -> f64,
    var_factor: f64,
    pass: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let stats: Vec<(String, Tensor)> =
        d.vs.variables()
            .into_iter()
            .filter(|(name, _)| name.ends_with("running_mean") || name.ends_with("running_var"))
            .collect();
    tch::no_grad(|| -> Result<()> {
        for (_, t) in &stats {
            let _ = t.shallow_clone().zero_();
        }
        pass()?;
        for (name, t) in &stats {
            let factor = if name.ends_with("running_var") { var_factor } else { 1.0 };
            let _ = t.shallow_clone().g_mul_scalar_(factor / momentum(name));
        }
        Ok(())
    })
}

/// One training-mode loss of `d` on 8 random `size` px images with one box each: the pass of
/// [`calibrate_batch_norms`] for families whose batch norms all train.
pub fn loss_pass(d: &Detector, size: i64) -> Result<()> {
    let xs = Tensor::rand([8, 3, size, size], (Kind::Float, Device::Cpu));
    let targets = Targets {
        boxes: Tensor::from_slice(&[4f32, 4.0, 40.0, 40.0]).view([1, 1, 4]).repeat([8, 1, 1]),
        labels: Tensor::zeros([8, 1], (Kind::Int64, Device::Cpu)),
        mask: Tensor::ones([8, 1], (Kind::Bool, Device::Cpu)),
    };
    d.loss(&xs, &targets, LossScope::SINGLE)?;
    Ok(())
}

/// IoU of two xyxy boxes.
fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let inter = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) * (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}
