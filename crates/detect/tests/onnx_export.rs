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
//!
//! Both tests draw from libtorch's one global generator, so they take [`SEQUENTIAL`] in turn: each
//! seed then gives the same networks and inputs on every run.

mod onnx_common;

use std::sync::Mutex;

use anyhow::{Context, Result, ensure};
use detect::config::DetectConfig;
use detect::export::{DetectModel, Head, OnnxDetector, export};
use detect::family::Family;
use detect::model::Detector;
use detect::postprocess::PostprocessConfig;
use tch::{Device, Kind, Tensor};
use tlcv_core::backbones::Arch;
use tlcv_core::freeze::Strategy;
use tlcv_core::onnx::parity::{Compare, ParityCheck, normalise, randomise_batch_norms};
use tlcv_core::onnx::{self, ExportOptions};

use onnx_common::{
    Export, RTOL, add_opset_case, add_raw_and_nms, calibrate_batch_norms, check_tract, loss_pass, rows, same_boxes,
};

const NC: usize = 3;
/// Held by each test while it draws random numbers (see the module docs).
static SEQUENTIAL: Mutex<()> = Mutex::new(());

/// A scratch `family` detector at `size` px with random batch-norm scales and shifts.
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
    if family == Family::Yolo {
        // Random statistics left 4 of 20 seeds with scores of exactly 1.0 and boxes far outside the
        // image (NMS then met ties); calibrated (the backbone's momentum 0.1, the head's 0.03), 40 of
        // 40 seeds kept the same boxes in ONNX Runtime and tract.
        calibrate_batch_norms(
            &d,
            |name| if name.starts_with("backbone") { 0.1 } else { 0.03 },
            2.0,
            || loss_pass(&d, size),
        )?;
    }
    Ok(d)
}

#[test]
fn yolo_and_ssd_export_and_match_onnxruntime_and_tract() -> Result<()> {
    let _turn = SEQUENTIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir()?;
    let mut check = ParityCheck::new(tmp.path());
    let names: Vec<String> = (0..NC).map(|i| format!("c{i}")).collect();
    // A low threshold keeps many overlapping boxes of the random network, so NMS has work to do.
    let pp = PostprocessConfig { conf: 0.02, iou: 0.5, max_det: 100, ..Default::default() };
    let mut tract_cases = Vec::new();
    for (family, backbone) in [(Family::Yolo, Arch::EfficientnetLite0), (Family::Ssd, Arch::Resnet18)] {
        let e = Export { names: &names, backbone, pp };
        for size in [64, 96] {
            tch::manual_seed(300 + size);
            let d = detector(family, backbone, size)?;
            let (any, case) = add_raw_and_nms(&mut check, d, &format!("{family}_{size}"), &e, size)?;
            ensure!(any > 0, "{family} {size}: no detections to compare");
            tract_cases.push(case);
        }
    }
    // The lowest and highest opsets tlcv writes (the reductions change form at 18).
    let e = Export { names: &names, backbone: Arch::EfficientnetLite0, pp };
    for opset in [13, 21] {
        let d = detector(Family::Yolo, Arch::EfficientnetLite0, 64)?;
        add_opset_case(&mut check, &d, &format!("yolo_opset{opset}"), &e, opset)?;
    }
    eprintln!("{}", check.check().context("ONNX Runtime parity")?);
    let err = check_tract(&tract_cases, &pp)?;
    eprintln!("tract raw: max relative error {err:e}");
    Ok(())
}

/// A Faster R-CNN with small widths whose every decision has a margin far above float32 rounding, so
/// that two runtimes meet no ties: batch norms calibrated on a random batch (random statistics make
/// the FPN's scale vary by orders of magnitude between seeds); the RPN conv times 30 so objectness
/// logits spread (std 1 to 3; the default init gives every anchor nearly the same score, and larger
/// logits saturate the sigmoid at exactly 1.0, whose ties each runtime breaks its own way); small
/// random box regressions plus a random bias per anchor and class, so that boxes keep their shape
/// (large random deltas collapse them to slivers whose IoUs and FPN levels turn on the last bit).
/// Measured over 60 seeds x 4 cases x batches of 1 and 3: ONNX Runtime and tract kept the same boxes
/// as libtorch on every image.
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
    // The trunk's batch norms stay in eval mode in `loss` (FrozenBatchNorm2d): run the trunk itself.
    let batch = Tensor::rand([8, 3, size, size], (Kind::Float, Device::Cpu));
    calibrate_batch_norms(
        &d,
        |_| 0.1,
        2.0,
        || {
            d.net.backbone().forward_features(&batch, true);
            Ok(())
        },
    )?;
    let mut vars: Vec<(String, Tensor)> = d.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, t) in &mut vars {
            let _ = match name.as_str() {
                "rpn.head.conv.0.0.weight" => t.g_mul_scalar_(30.0),
                "rpn.head.bbox_pred.weight" => t.g_mul_scalar_(0.003),
                "roi_heads.box_predictor.bbox_pred.weight" => t.g_mul_scalar_(0.01),
                "rpn.head.bbox_pred.bias" => t.normal_(0.0, 0.2),
                "roi_heads.box_predictor.bbox_pred.bias" => t.normal_(0.0, 1.0),
                _ => continue,
            };
        }
    });
    Ok(d)
}

#[test]
fn faster_rcnn_exports_its_detections_and_matches_onnxruntime() -> Result<()> {
    let _turn = SEQUENTIAL.lock().unwrap_or_else(|e| e.into_inner());
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
            // tract, with tlcv's RoiAlign kernel, on every image.
            let got = tract.detect(&x, &pp)?;
            for (i, (g, w)) in got.iter().zip(&dets).enumerate() {
                same_boxes(g, w, RTOL * size as f64, 0.5).with_context(|| format!("{name} image {i} on tract"))?;
            }
        }
        ensure!(any > 0, "{name}: no detections to compare");
    }
    eprintln!("{}", check.check().context("ONNX Runtime parity")?);
    Ok(())
}
