//! SSD: the augmentation keeps boxes on their objects, and a forward/backward pass on random
//! input gives finite named losses with 3:1 mining and sane detections.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test failures are panics

use detect::model_io::Target;
use detect::ssd::augment::{BoxedImage, SsdAugment};
use detect::ssd::{Ssd, SsdConfig};
use rand::{SeedableRng, rngs::StdRng};
use tch::{Device, Kind, Tensor, nn};
use tlcv_core::backbones::Arch;
use tlcv_core::data::RgbImage;

const COLOURS: [[u8; 3]; 3] = [[230, 20, 20], [20, 220, 30], [30, 40, 240]];

fn scene() -> BoxedImage {
    let mut image = RgbImage::filled(160, 120, [128, 128, 128]);
    let boxes = vec![[10.0, 15.0, 60.0, 70.0], [80.0, 10.0, 150.0, 50.0], [70.0, 70.0, 120.0, 115.0]];
    for (b, c) in boxes.iter().zip(COLOURS) {
        for y in b[1] as usize..b[3] as usize {
            for x in b[0] as usize..b[2] as usize {
                image.data[(y * 160 + x) * 3..(y * 160 + x) * 3 + 3].copy_from_slice(&c);
            }
        }
    }
    BoxedImage { image, boxes, labels: vec![0, 1, 2] }
}

#[test]
fn augmentation_keeps_boxes_on_their_objects() {
    let aug = SsdAugment { photometric_p: 0.0, ..SsdAugment::default() };
    let (mut zoomed, mut cropped) = (0, 0);
    for seed in 0..60 {
        let mut rng = StdRng::seed_from_u64(seed);
        let s = scene();
        let out = aug.apply(s.clone(), &mut rng).expect("augment");
        assert_eq!(out.boxes.len(), out.labels.len());
        if out.image.width > 160 {
            zoomed += 1;
        }
        if out.boxes.len() < 3 || out.image.width < 160 {
            cropped += 1;
        }
        for (b, &l) in out.boxes.iter().zip(&out.labels) {
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= out.image.width as f64 && b[3] <= out.image.height as f64);
            assert!(b[2] > b[0] && b[3] > b[1], "seed {seed}: empty box {b:?}");
            // Every pixel strictly inside the box has the object's colour.
            let (x0, y0, x1, y1) =
                (b[0].ceil() as usize, b[1].ceil() as usize, b[2].floor() as usize, b[3].floor() as usize);
            for y in y0..y1 {
                for x in x0..x1 {
                    assert_eq!(out.image.pixel(x, y), COLOURS[l as usize], "seed {seed}: pixel ({x},{y}) in box {b:?}");
                }
            }
        }
    }
    assert!(zoomed > 5 && cropped > 5, "the recipe should zoom ({zoomed}) and crop ({cropped})");
}

#[test]
fn forward_backward_smoke() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Ssd::new(&vs.root(), Arch::Resnet18, SsdConfig::new(3)).expect("model");
    let x = Tensor::randn([2, 3, 128, 128], (Kind::Float, Device::Cpu));
    let (logits, deltas, priors) = model.forward_raw(&x, false).expect("raw");
    // Maps 16, 8, 4 (backbone) + 2, 1, 1 (extras); 4 or 6 boxes per location.
    let p = 16 * 16 * 4 + 8 * 8 * 6 + 4 * 4 * 6 + 2 * 2 * 6 + 4 + 4;
    assert_eq!((logits.size(), deltas.size(), priors.size()), (vec![2, p, 4], vec![2, p, 4], vec![p, 4]));
    let targets = vec![
        Target {
            boxes: Tensor::from_slice(&[10.0f32, 10.0, 60.0, 80.0, 70.0, 64.0, 120.0, 120.0]).view([2, 4]),
            labels: Tensor::from_slice(&[0i64, 2]),
        },
        Target {
            boxes: Tensor::zeros([0, 4], (Kind::Float, Device::Cpu)),
            labels: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        },
    ];
    let losses = model.forward_train(&x, &targets).expect("losses");
    assert_eq!(losses.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["bbox_regression", "classification"]);
    let total = &losses[0].1 + &losses[1].1;
    for (n, l) in &losses {
        let v = l.double_value(&[]);
        assert!(v.is_finite() && v > 0.0, "{n} = {v}");
    }
    total.backward();
    let vars = vs.variables();
    let g = |key: &str| vars[key].grad().abs().sum(Kind::Double).double_value(&[]);
    for key in ["head.cls.0.weight", "extras.0.0.weight", "backbone.layer4.1.conv2.weight"] {
        assert!(g(key) > 0.0, "no gradient for {key}");
    }
    // Regression gradients come only from levels holding positives (not necessarily all of them).
    assert!((0..6).map(|l| g(&format!("head.reg.{l}.weight"))).sum::<f64>() > 0.0);
    let dets = tch::no_grad(|| model.predict(&x)).expect("predict");
    assert_eq!(dets.len(), 2);
    for d in &dets {
        let n = d.scores.size()[0];
        assert!(n <= 200 && d.boxes.size() == [n, 4] && d.labels.size() == [n]);
        if n > 0 {
            assert!(d.labels.min().int64_value(&[]) >= 0 && d.labels.max().int64_value(&[]) < 3);
            assert!(d.boxes.min().double_value(&[]) >= 0.0 && d.boxes.max().double_value(&[]) <= 128.0);
        }
    }
    assert!(model.forward_train(&x, &targets[..1]).is_err());
}
