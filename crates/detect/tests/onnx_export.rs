//! ONNX export of the YOLO-style detector and SSD against ONNX Runtime and tract. Each family, randomly
//! initialised with non-trivial batch norms, is exported with a dynamic batch at 64 and 96 px, once
//! ending at the decoded head (`predictions`, compared to 1e-4 relative with tlcv's decoding) and once
//! with NMS (`detections`, compared with `Detector::predict`: the same boxes and classes paired one to one,
//! boxes tied in score within 1e-4 in either order, scores within
//! 1e-4), on batches of 1 and 3, and with NMS at opsets 13 and 21 too. `onnx.checker` (full check) must
//! pass on every file; tract must give the same predictions and detections on a batch of 1.

use anyhow::{Context, Result, ensure};
use detect::config::DetectConfig;
use detect::export::{DetectModel, Head, OnnxDetector, export};
use detect::family::Family;
use detect::model::Detector;
use detect::postprocess::{Detection, PostprocessConfig};
use tch::{Device, Kind, Tensor};
use tlcv_core::backbones::Arch;
use tlcv_core::freeze::Strategy;
use tlcv_core::onnx::parity::{Compare, ParityCheck, max_rel_err, normalise, randomise_batch_norms};
use tlcv_core::onnx::{self, ExportOptions};

const RTOL: f64 = 1e-4;
const NC: usize = 3;

fn detector(family: Family, backbone: Arch, size: i64) -> Result<Detector> {
    let mut cfg = DetectConfig::default();
    cfg.model.family = family;
    cfg.model.backbone = backbone;
    cfg.model.weights = tlcv_core::weights::WeightsSource::None;
    cfg.model.strategy = Strategy::Scratch;
    cfg.model.neck_channels = 32;
    cfg.model.ssd.extra_channels = vec![64, 64, 32];
    cfg.data.img_size = size;
    cfg.train.channels_last = false;
    let d = Detector::build(&cfg, NC as i64, Device::Cpu)?;
    randomise_batch_norms(&d.vs);
    Ok(d)
}

/// tlcv's decoded head: `[N, A, 4 + nc]`.
fn raw(d: &Detector, xs: &Tensor) -> Result<Tensor> {
    let (b, s) = d.net.decoded(xs)?;
    Ok(Tensor::cat(&[b, s], 2))
}

/// Detections as `[N, K, 6]` rows padded with zeros.
fn rows(dets: &[Vec<Detection>], k: usize) -> Tensor {
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
fn same_boxes(got: &[Detection], want: &[Detection], box_tol: f64, nms_iou: f64) -> Result<()> {
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
            anyhow::bail!("{b:?} has no match and no tie among {} boxes", got.len());
        }
    }
    Ok(())
}

/// IoU of two xyxy boxes.
fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let inter = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) * (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

#[test]
fn yolo_and_ssd_export_and_match_onnxruntime_and_tract() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut check = ParityCheck::new(tmp.path());
    let names: Vec<String> = (0..NC).map(|i| format!("c{i}")).collect();
    // A low threshold keeps many overlapping boxes of the random network, so NMS has work to do.
    let pp = PostprocessConfig { conf: 0.02, iou: 0.5, max_det: 100, ..Default::default() };
    let mut tract_cases = Vec::new();
    for (family, backbone) in [(Family::Yolo, Arch::EfficientnetLite0), (Family::Ssd, Arch::Resnet18)] {
        for size in [64, 96] {
            tch::manual_seed(300 + size);
            let d = detector(family, backbone, size)?;
            let opts = ExportOptions { dynamic_batch: true, ..ExportOptions::new(size) };
            let norm = d.normalization();
            let raw_name = format!("{family}_{size}_raw");
            onnx::save(&export(&d, backbone, &names, &opts, Head::Raw)?, &check.model_path(&raw_name))?;
            let nms_name = format!("{family}_{size}_nms");
            onnx::save(&export(&d, backbone, &names, &opts, Head::Nms(pp))?, &check.model_path(&nms_name))?;
            let inputs: Vec<Tensor> =
                [1, 3].iter().map(|&n| Tensor::rand([n, 3, size, size], (Kind::Float, Device::Cpu))).collect();
            check.model(&raw_name, Compare::Relative { rtol: RTOL });
            for x in &inputs {
                check.run(x, &[raw(&d, &normalise(x, norm))?])?;
            }
            check.model(&nms_name, Compare::Detections { rtol: RTOL, atol: 1e-4, nms_iou: pp.iou });
            let mut any = 0;
            for x in &inputs {
                let dets = d.detect(&normalise(x, norm), &pp)?;
                any += dets.iter().map(Vec::len).sum::<usize>();
                check.run(x, &[rows(&dets, pp.max_det)])?;
            }
            ensure!(any > 0, "{family} {size}: no detections to compare");
            tract_cases.push((check.model_path(&raw_name), check.model_path(&nms_name), inputs[0].shallow_clone(), d));
        }
    }
    // The lowest and highest opsets tlcv writes (the reductions change form at 18).
    for opset in [13, 21] {
        let d = detector(Family::Yolo, Arch::EfficientnetLite0, 64)?;
        let opts = ExportOptions { dynamic_batch: true, opset, ..ExportOptions::new(64) };
        let name = format!("yolo_opset{opset}");
        onnx::save(&export(&d, Arch::EfficientnetLite0, &names, &opts, Head::Nms(pp))?, &check.model_path(&name))?;
        check.model(&name, Compare::Detections { rtol: RTOL, atol: 1e-4, nms_iou: pp.iou });
        let x = Tensor::rand([3, 3, 64, 64], (Kind::Float, Device::Cpu));
        check.run(&x, &[rows(&d.detect(&normalise(&x, d.normalization()), &pp)?, pp.max_det)])?;
    }
    eprintln!("{}", check.check().context("ONNX Runtime parity")?);
    // tract: the raw head equals tlcv's; with or without NMS in the graph, `predict --onnx`'s
    // detections equal the libtorch path's.
    for (raw_path, nms_path, x, d) in &tract_cases {
        let want = d.detect(&normalise(x, d.normalization()), &pp)?;
        for path in [raw_path, nms_path] {
            let m = OnnxDetector::load(path)?;
            let got = m.detect(x, &pp)?;
            ensure!(got.len() == want.len(), "{}: {} vs {} images", path.display(), got.len(), want.len());
            same_boxes(&got[0], &want[0], RTOL * x.size()[3] as f64, pp.iou)
                .with_context(|| format!("{}", path.display()))?;
        }
        let out = OnnxDetector::load(raw_path)?.model.run(x)?;
        let err = max_rel_err(&out[0], &raw(d, &normalise(x, d.normalization()))?);
        ensure!(err <= RTOL, "{}: tract differs by {err:e}", raw_path.display());
    }
    Ok(())
}
