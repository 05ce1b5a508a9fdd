//! Faster R-CNN against torchvision's `fasterrcnn_resnet50_fpn` (eval mode, no transform): the state
//! dict written by `scripts/fixtures/gen_faster_rcnn.py` loads strictly, and the proposals and final
//! detections equal torchvision's. Also a training smoke test (finite named losses, gradients).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test failures are panics

use std::collections::HashMap;
use std::path::PathBuf;

use detect::faster_rcnn::{FasterRcnn, FasterRcnnConfig};
use detect::model_io::Target;
use tch::{Device, Kind, Tensor, nn};
use tlcv_core::checkpoint::{LoadOptions, load_into, read_state_dict};

fn fixture_dir() -> PathBuf {
    tlcv_core::paths::generated_fixture("faster_rcnn").unwrap_or_else(|e| panic!("{e}"))
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    if a.numel() == 0 {
        return 0.0;
    }
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

/// Orders detections by (score desc, label, x1) so equal sets compare equal.
fn sorted(boxes: &Tensor, scores: &Tensor, labels: &Tensor) -> (Tensor, Tensor, Tensor) {
    let order = scores.argsort(0, true);
    (boxes.index_select(0, &order), scores.index_select(0, &order), labels.index_select(0, &order))
}

#[test]
fn matches_torchvision_fasterrcnn_resnet50_fpn() {
    let dir = fixture_dir();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).expect("meta")).expect("json");
    let num_classes = meta["num_classes"].as_i64().expect("num_classes") - 1;
    let vs = nn::VarStore::new(Device::Cpu);
    let model = FasterRcnn::new(&vs.root(), FasterRcnnConfig::new(num_classes)).expect("model");
    let sd = read_state_dict(&dir.join("model.pth")).expect("read state dict");
    let report = load_into(&vs, &sd, &LoadOptions::default()).expect("strict load");
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    assert_eq!(report.loaded.len(), vs.variables().len(), "every variable comes from the checkpoint");

    let t: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("tensors.safetensors")).expect("tensors").into_iter().collect();
    let x = &t["input"];
    let (props, _) = tch::no_grad(|| model.proposals(x)).expect("proposals").remove(0);
    // Proposals as sets (scores can tie, and tied proposals may come in either order).
    assert_eq!(props.size(), t["proposals"].size(), "number of proposals");
    let dist = (props.unsqueeze(1) - t["proposals"].unsqueeze(0)).abs().amax([2].as_slice(), false); // [P, P]
    let dp = dist
        .amin([1].as_slice(), false)
        .max()
        .double_value(&[])
        .max(dist.amin([0].as_slice(), false).max().double_value(&[]));
    let dets = tch::no_grad(|| model.predict(x)).expect("predict").remove(0);
    let (rb, rs, rl) = sorted(&t["boxes"], &t["scores"], &t["labels"]);
    let (b, s, l) = sorted(&dets.boxes, &dets.scores, &dets.labels);
    assert!(rs.size()[0] >= 10, "fixture has too few detections ({})", rs.size()[0]);
    assert_eq!(s.size(), rs.size(), "number of detections");
    let (db, ds) = (max_abs(&b, &rb), max_abs(&s, &rs));
    eprintln!(
        "faster_rcnn vs torchvision: {} detections; max |proposal diff| {dp:.3e}, |box diff| {db:.3e}, |score diff| {ds:.3e}",
        s.size()[0]
    );
    assert_eq!(Vec::<i64>::try_from(&l).expect("labels"), Vec::<i64>::try_from(rl - 1).expect("labels"), "labels");
    assert!(dp <= 1e-3, "proposals differ by {dp}");
    assert!(db <= 1e-4, "boxes differ by {db}");
    assert!(ds <= 1e-4, "scores differ by {ds}");
}

#[test]
fn training_losses_are_finite_and_reach_every_part() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = FasterRcnn::new(&vs.root(), FasterRcnnConfig::new(3)).expect("model");
    let x = Tensor::randn([2, 3, 64, 96], (Kind::Float, Device::Cpu));
    let targets = vec![
        Target {
            boxes: Tensor::from_slice(&[5.0f32, 6.0, 40.0, 50.0, 50.0, 10.0, 90.0, 40.0]).view([2, 4]),
            labels: Tensor::from_slice(&[0i64, 2]),
        },
        Target {
            boxes: Tensor::zeros([0, 4], (Kind::Float, Device::Cpu)),
            labels: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        },
    ];
    let losses = model.forward_train(&x, &targets).expect("losses");
    let names: Vec<&str> = losses.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"]);
    let mut total = Tensor::zeros([], (Kind::Float, Device::Cpu));
    for (n, l) in &losses {
        let v = l.double_value(&[]);
        assert!(v.is_finite() && v >= 0.0, "{n} = {v}");
        total += l;
    }
    // Positives exist (the gt boxes are added as proposals), so the box losses are not zero.
    assert!(losses[3].1.double_value(&[]) > 0.0 && losses[1].1.double_value(&[]) > 0.0);
    total.backward();
    let vars = vs.variables();
    for key in [
        "rpn.head.cls_logits.weight",
        "roi_heads.box_predictor.bbox_pred.weight",
        "backbone.fpn.inner_blocks.0.0.weight",
        "backbone.body.layer4.2.conv3.weight",
    ] {
        let g = vars[key].grad();
        assert!(g.defined() && g.abs().sum(Kind::Double).double_value(&[]) > 0.0, "no gradient for {key}");
    }
    let bad = model.forward_train(&x, &targets[..1]);
    assert!(bad.is_err(), "a target count mismatch must be an error");
}
