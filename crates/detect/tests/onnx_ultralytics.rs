//! ONNX export of Ultralytics' YOLOv8 / YOLO11 (`model.family = "ultralytics"`) against ONNX Runtime
//! and tract. yolov8n and yolo11n (C2f; C3k2, C2PSA attention), randomly initialised for 3 classes
//! with non-trivial batch norms (see [`calibrate_batch_norms`]), are exported with a dynamic batch at
//! 64 and 96 px, once ending at the decoded head (`predictions`, compared to 1e-4 relative with
//! `decoded()`) and once with NMS (`detections`, compared with `Detector::detect`, i.e. Ultralytics'
//! `non_max_suppression`: the same boxes and classes paired one to one, boxes tied in score within
//! 1e-4 in either order, scores within 1e-4), on batches of 1 and 3, and yolo11n with NMS at opsets
//! 13 and 21 too. `onnx.checker` (full check) must pass on every file; tract must give the same
//! predictions and detections on a batch of one image. `decoded()` itself is the eval output that
//! `detect forward` writes (`[N, 4 + nc, A]`, xywh), converted to xyxy as `xywh2xyxy` does.

mod onnx_common;

use anyhow::{Context, Result, ensure};
use detect::config::DetectConfig;
use detect::family::Family;
use detect::model::Detector;
use detect::postprocess::PostprocessConfig;
use detect::ultralytics::conv::BN_MOMENTUM;
use detect::ultralytics::forward::forward_npy;
use tch::{Device, Kind, Tensor};
use tlcv_core::backbones::Arch;
use tlcv_core::checkpoint::save_safetensors;
use tlcv_core::freeze::Strategy;
use tlcv_core::onnx::parity::{ParityCheck, max_rel_err, randomise_batch_norms};

use onnx_common::{Export, add_opset_case, add_raw_and_nms, calibrate_batch_norms, check_tract, loss_pass, raw};

const NC: usize = 3;
const ARCHS: [&str; 2] = ["yolov8n", "yolo11n"];
/// The batch norms' running variances over the calibration batch's (see [`calibrate_batch_norms`]).
const VAR_FACTOR: f64 = 2.0;

fn detector(arch: &str, size: i64) -> Result<Detector> {
    let mut cfg = DetectConfig::default();
    cfg.model.family = Family::Ultralytics;
    cfg.model.ultralytics.arch = arch.parse().map_err(anyhow::Error::msg)?;
    cfg.model.weights = tlcv_core::weights::WeightsSource::None;
    cfg.model.strategy = Strategy::Scratch;
    cfg.data.img_size = size;
    cfg.train.channels_last = false;
    let d = Detector::build(&cfg, NC as i64, Device::Cpu)?;
    randomise_batch_norms(&d.vs);
    // Measured over 20 seeds x 2 networks x 3 images at 64 and 96 px: tract's NMS kept the same boxes as
    // libtorch's on every image, scores within 3e-7.
    calibrate_batch_norms(&d, |_| BN_MOMENTUM, VAR_FACTOR, || loss_pass(&d, size))?;
    Ok(d)
}

/// `decoded()` is `detect forward`'s `[N, 4 + nc, A]` output (the same weights, through a
/// safetensors file) with its boxes converted by `xywh2xyxy` in float32.
fn decoded_is_the_forward_output(d: &Detector, arch: &str, x: &Tensor, dir: &std::path::Path) -> Result<()> {
    let (weights, input, output) = (dir.join(format!("{arch}.safetensors")), dir.join("x.npy"), dir.join("y.npy"));
    save_safetensors(&d.vs, &weights, None)?;
    x.write_npy(&input)?;
    let summary = forward_npy(Some(arch.parse().map_err(anyhow::Error::msg)?), &weights, &input, &output)?;
    let y = Tensor::read_npy(&output)?.transpose(1, 2).contiguous(); // [N, A, 4 + nc]
    let a = y.size()[1];
    ensure!(summary.output_shape == [x.size()[0], 4 + NC as i64, a], "{arch}: {:?}", summary.output_shape);
    let v = Vec::<f32>::try_from(y.view([-1]))?;
    let want: Vec<f32> = v
        .chunks_exact(4 + NC)
        .flat_map(|r| {
            let (hw, hh) = (r[2] / 2.0, r[3] / 2.0);
            let mut row = vec![r[0] - hw, r[1] - hh, r[0] + hw, r[1] + hh];
            row.extend_from_slice(&r[4..]);
            row
        })
        .collect();
    let got = raw(d, x)?;
    ensure!(got.size() == [x.size()[0], a, 4 + NC as i64], "{arch}: decoded {:?}", got.size());
    let err = max_rel_err(&got, &Tensor::from_slice(&want).view([x.size()[0], a, 4 + NC as i64]));
    eprintln!("{arch}: decoded() vs detect forward in xyxy: max relative error {err:e}");
    ensure!(err <= 1e-6, "{arch}: decoded() differs from detect forward's output by {err:e}");
    Ok(())
}

#[test]
fn yolov8_and_yolo11_export_and_match_onnxruntime_and_tract() -> Result<()> {
    let start = std::time::Instant::now();
    let tmp = tempfile::tempdir()?;
    let mut check = ParityCheck::new(tmp.path());
    let names: Vec<String> = (0..NC).map(|i| format!("c{i}")).collect();
    // A low threshold keeps many overlapping boxes of the random network, so NMS has work to do.
    let pp = PostprocessConfig { conf: 0.02, iou: 0.5, max_det: 100, ..Default::default() };
    let e = Export { names: &names, backbone: Arch::Resnet18, pp };
    let mut tract_cases = Vec::new();
    for arch in ARCHS {
        for size in [64, 96] {
            tch::manual_seed(500 + size);
            let d = detector(arch, size)?;
            if size == 64 {
                let x = Tensor::rand([3, 3, size, size], (Kind::Float, Device::Cpu));
                decoded_is_the_forward_output(&d, arch, &x, tmp.path())?;
            }
            let (any, case) = add_raw_and_nms(&mut check, d, &format!("{arch}_{size}"), &e, size)?;
            ensure!(any > 0, "{arch} {size}: no detections to compare");
            eprintln!("{arch} {size}: {any} detections on batches of 1 and 3");
            tract_cases.push(case);
        }
    }
    // The lowest and highest opsets tlcv writes (the reductions change form at 18), on the network
    // with attention.
    for opset in [13, 21] {
        let d = detector("yolo11n", 64)?;
        add_opset_case(&mut check, &d, &format!("yolo11n_opset{opset}"), &e, opset)?;
    }
    eprintln!("{}", check.check().context("ONNX Runtime parity")?);
    let err = check_tract(&tract_cases, &pp)?;
    eprintln!("tract raw: max relative error {err:e}; total {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
