//! The data pipeline on real JPEGs: decode + random-resized-crop 224 + flip + normalise + batch of 32,
//! on the calling thread and through the prefetching loader; and the two resamplers of the
//! classification transforms (Pillow's, the default, against OpenCV's) on decoded images.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tlcv_benches::{corpus, pipeline};

fn bench_pipeline(c: &mut Criterion) {
    let paths = match corpus::ensure_corpus(200) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pipeline bench skipped: {e:#}");
            return;
        }
    };
    let batch: Vec<_> = paths.iter().take(32).cloned().collect();
    let shared = Arc::new(batch.clone());
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(32));
    g.bench_function("batch32_sync", |b| b.iter(|| black_box(pipeline::epoch_sync(&batch, 32, 0))));
    g.bench_function("batch32_loader", |b| b.iter(|| black_box(pipeline::epoch_loader(&shared, 32, 0))));
    g.finish();
}

fn bench_resize(c: &mut Criterion) {
    use rand::SeedableRng;
    use tlcv_core::data::{
        DecodeOptions, decode_file,
        transforms::{self, RandomResizedCrop, ResizeMethod},
    };
    let paths = match corpus::ensure_corpus(200) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("resize bench skipped: {e:#}");
            return;
        }
    };
    let images: Vec<_> = paths.iter().take(16).filter_map(|p| decode_file(p, &DecodeOptions::default()).ok()).collect();
    let mut g = c.benchmark_group("resize");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(images.len() as u64));
    for (name, method) in [("pillow", ResizeMethod::Pillow), ("opencv", ResizeMethod::Opencv)] {
        g.bench_function(format!("eval256_crop224_{name}"), |b| {
            b.iter(|| {
                for img in &images {
                    let r =
                        transforms::resize_shorter_by(img, 256, method).map(|r| transforms::center_crop(&r, 224, 224));
                    black_box(r.ok());
                }
            })
        });
        let rrc = RandomResizedCrop { width: 224, height: 224, scale: (0.08, 1.0), ratio: (0.75, 4.0 / 3.0), method };
        g.bench_function(format!("random_resized_crop224_{name}"), |b| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            b.iter(|| {
                for img in &images {
                    black_box(rrc.apply(img, &mut rng).ok());
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // No plots: plotters needs system fonts that minimal machines lack (criterion would panic).
    config = Criterion::default().without_plots();
    targets = bench_pipeline, bench_resize
}
criterion_main!(benches);
