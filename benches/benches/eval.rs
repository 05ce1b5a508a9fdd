//! Post-processing and metrics: NMS at 1k and 10k boxes, COCO evaluation of 5000 images x 100
//! detections, mIoU over 20 masks of 512x512 with 21 classes.
// A benchmark cannot continue after a failed setup: aborting with the error is the right outcome.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tch::{Device, Kind, Tensor};
use tlcv_benches::synth;

fn bench_nms(c: &mut Criterion) {
    let mut g = c.benchmark_group("nms");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for n in [1000usize, 10000] {
        let (boxes, scores) = synth::nms_boxes(n, 12 + n as u64);
        let flat: Vec<f32> = boxes.iter().flatten().copied().collect();
        let b = Tensor::from_slice(&flat).view([n as i64, 4]);
        let s = Tensor::from_slice(&scores);
        let cls = Tensor::zeros([n as i64], (Kind::Int64, Device::Cpu));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| black_box(detect::nms::batched_nms(&b, &s, &cls, detect::nms::NmsParams::new(0.5, n))))
        });
    }
    g.finish();
}

fn bench_coco(c: &mut Criterion) {
    let (gt, dets) = synth::coco(5000, 100, 11);
    let params = detect::eval::CocoParams::default();
    let mut g = c.benchmark_group("coco_eval");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("5000x100", |b| {
        b.iter(|| black_box(detect::eval::evaluate(&gt, &dets, &params).map(|e| e.summary())))
    });
    g.finish();
}

fn bench_miou(c: &mut Criterion) {
    let masks = synth::seg_masks(20, 512, 21, 13);
    let mut g = c.benchmark_group("miou");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("21cls_512x512x20", |b| {
        b.iter(|| {
            let mut conf = match segment::metrics::SegConfusion::new(21, Some(255)) {
                Ok(c) => c,
                Err(e) => panic!("{e}"),
            };
            for (gt, pred) in &masks {
                if let Err(e) = conf.update(gt, pred) {
                    panic!("{e}");
                }
            }
            black_box(conf.miou())
        })
    });
    g.finish();
}

// TODO(style): one style-transfer step once the style crate lands on main (it is a stub today).

criterion_group! {
    name = benches;
    // No plots: plotters needs system fonts that minimal machines lack (criterion would panic).
    config = Criterion::default().without_plots();
    targets = bench_nms, bench_coco, bench_miou
}
criterion_main!(benches);
