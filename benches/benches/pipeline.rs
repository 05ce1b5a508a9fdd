//! The data pipeline on real JPEGs: decode + random-resized-crop 224 + flip + normalise + batch of 32,
//! on the calling thread and through the prefetching loader.

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

criterion_group! {
    name = benches;
    // No plots: plotters needs system fonts that minimal machines lack (criterion would panic).
    config = Criterion::default().without_plots();
    targets = bench_pipeline
}
criterion_main!(benches);
