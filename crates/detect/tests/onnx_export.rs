//! ONNX export of the YOLO-style detector and SSD against ONNX Runtime and tract. Each family, randomly
//! initialised with non-trivial batch norms, is exported with a dynamic batch at 64 and 96 px, once
//! ending at the decoded head (`predictions`, compared to 1e-4 relative with tlcv's decoding) and once
//! with NMS (`detections`, compared with `Detector::predict`: the same boxes and classes paired one to one,
//! boxes tied in score within 1e-4 in either order, scores within
//! 1e-4), on batches of 1 and 3, and with NMS at opsets 13 and 21 too. `onnx.checker` (full check) must
//! pass on every file; tract must give the same predictions and detections on a batch of 1.
//!
//! Faster R-CNN (whose export always ends with its NMS) is checked the same way on its detections at
//! 64 and 96 px, opsets 13, 17 and 21, with both FPN layouts, and on tract (through tlcv's `RoiAlign`).

mod onnx_common;

use anyhow::{Context, Result, ensure};
use detect::config::DetectConfig;
use detect::export::{DetectModel, Head, OnnxDetector, export};
use detect::family::Family;
use detect::model::Detector;
use detect::postprocess::PostprocessConfig;
use tch::{Device, Kind, Tensor};
use tlcv_core::backbones::Arch;
use tlcv_core::freeze::Strategy;
use tlcv_core::onnx::parity::{Compare, ParityCheck, max_rel_err, normalise, randomise_batch_norms};
use tlcv_core::onnx::{self, ExportOptions};

use onnx_common::{rows, same_boxes};

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

/// A Faster R-CNN with small widths whose RPN scores spread (the default RPN init gives every
/// anchor nearly the same objectness, so NMS would decide between near-ties).
fn faster_rcnn(size: i64, from_c2: bool) -> Result<Detector> {
    let mut cfg = DetectConfig::default();
    cfg.model.family = Family::FasterRcnn;
    cfg.model.backbone = Arch::Resnet18;
    cfg.model.weights = tlcv_core::weights::WeightsSource::None;
    cfg.model.strategy = Strategy::Scratch;
    let f = &mut cfg.model.faster_rcnn;
    (f.fpn_channels, f.representation_size, f.proposals_test, f.fpn_from_c2) = (32, 64, 100, from_c2);
    if from_c2 {
        f.anchor_sizes = vec![8.0, 16.0, 32.0, 64.0, 128.0];
    }
    cfg.data.img_size = size;
    cfg.train.channels_last = false;
    let d = Detector::build(&cfg, NC as i64, Device::Cpu)?;
    randomise_batch_norms(&d.vs);
    tch::no_grad(|| {
        for (name, mut t) in d.vs.variables() {
            if name.starts_with("rpn.head") {
                let _ = t.g_mul_scalar_(30.0);
            }
        }
    });
    Ok(d)
}

#[test]
fn faster_rcnn_exports_its_detections_and_matches_onnxruntime() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut check = ParityCheck::new(tmp.path());
    let names: Vec<String> = (0..NC).map(|i| format!("c{i}")).collect();
    let pp = PostprocessConfig { conf: 0.05, max_det: 100, ..Default::default() };
    let cases = [(64, false, 17), (96, false, 17), (64, true, 13), (96, true, 21)];
    for (size, from_c2, opset) in cases {
        tch::manual_seed(700 + size);
        let d = faster_rcnn(size, from_c2)?;
        let opts = ExportOptions { dynamic_batch: true, opset, ..ExportOptions::new(size) };
        let name = format!("frcnn_{size}_{from_c2}_{opset}");
        let err = export(&d, Arch::Resnet18, &names, &opts, Head::Raw).err().map(|e| e.to_string()).unwrap_or_default();
        ensure!(err.contains("--nms"), "a raw Faster R-CNN export must ask for --nms, got {err:?}");
        onnx::save(&export(&d, Arch::Resnet18, &names, &opts, Head::Nms(pp))?, &check.model_path(&name))?;
        check.model(&name, Compare::Detections { rtol: RTOL, atol: 1e-4, nms_iou: 0.5 });
        let mut any = 0;
        let tract = OnnxDetector::load(&check.model_path(&name))?;
        for n in [1, 3] {
            let x = Tensor::rand([n, 3, size, size], (Kind::Float, Device::Cpu));
            let dets = d.detect(&normalise(&x, d.normalization()), &pp)?;
            any += dets.iter().map(Vec::len).sum::<usize>();
            check.run(&x, &[rows(&dets, pp.max_det)])?;
            if n == 1 {
                // tract, with tlcv's RoiAlign kernel.
                let got = tract.detect(&x, &pp)?;
                same_boxes(&got[0], &dets[0], RTOL * size as f64, 0.5).with_context(|| format!("{name} on tract"))?;
            }
        }
        ensure!(any > 0, "{name}: no detections to compare");
    }
    eprintln!("{}", check.check().context("ONNX Runtime parity")?);
    Ok(())
}
