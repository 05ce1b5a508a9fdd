//! Backbones at 224 px (batch 8 here; `cargo xtask bench --compare` uses 32): a training step and an
//! inference batch per mode, and classify's feature-cache epoch against the recomputing epoch.
// A benchmark cannot continue after a failed setup: aborting with the error is the right outcome.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use classify::{
    config::{ClassifyConfig, ModelConfig},
    model::Model,
    task::{ClassifyTask, Mode, cache_features},
};
use tch::Device;
use tlcv_benches::models::{Mode as NumMode, ModelBench};
use tlcv_core::{
    backbones::Arch,
    data::{ClassDataset, Sample},
    freeze::Strategy,
    progress::Progress,
    train::{SingleProcess, Task},
};

const BATCH: i64 = 8;

fn bench_backbones(c: &mut Criterion) {
    let mut g = c.benchmark_group("backbone");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(BATCH as u64));
    for arch in [Arch::Resnet18, Arch::EfficientnetB0] {
        for mode in [NumMode::Fp32, NumMode::ChannelsLast, NumMode::ChannelsLastFolded] {
            let Ok(m) = ModelBench::new(arch, BATCH, 224, mode, false) else { continue };
            g.bench_function(format!("{arch}/infer/{}", mode.name()), |b| b.iter(|| black_box(m.infer())));
        }
        for mode in [NumMode::Fp32, NumMode::ChannelsLast] {
            let Ok(mut m) = ModelBench::new(arch, BATCH, 224, mode, true) else { continue };
            g.bench_function(format!("{arch}/train/{}", mode.name()), |b| b.iter(|| black_box(m.train_step())));
        }
    }
    g.finish();
}

/// classify's feature cache on 32 JPEGs at 64 px with a frozen ResNet-18 (random weights) and a linear
/// head: filling the cache once (`cache_features`), an epoch on cached features, and an epoch that
/// decodes and runs the frozen backbone again (image mode), each with the loss's backward pass.
fn bench_feature_cache(c: &mut Criterion) {
    let paths = match tlcv_benches::corpus::ensure_corpus(200) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("feature-cache bench skipped: {e:#}");
            return;
        }
    };
    let samples: Vec<Sample> =
        paths.iter().take(32).enumerate().map(|(i, p)| Sample { path: p.clone(), label: i % 4 }).collect();
    let dataset = ClassDataset {
        classes: (0..4).map(|i| format!("c{i}")).collect(),
        train: samples.clone(),
        val: samples[..8].to_vec(),
        ..Default::default()
    };
    let mut cfg = ClassifyConfig::default();
    cfg.data.img_size = 64;
    cfg.data.cache_images = false;
    cfg.train.batch = 16;
    cfg.train.channels_last = false;
    cfg.model = ModelConfig {
        backbone: Arch::Resnet18,
        weights: tlcv_core::weights::WeightsSource::None,
        strategy: Strategy::Scratch,
        ..ModelConfig::default()
    };
    let frozen_model = || -> Model {
        tch::manual_seed(0);
        let mut m = match Model::build(&cfg.model, 4, Device::Cpu) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let stages = m.net.stages().clone();
        let head = m.net.head_prefix().to_string();
        match tlcv_core::freeze::apply_freeze(&m.vs, &stages, 0, &[head.as_str()]) {
            Ok(f) => m.net.set_frozen_stages(f.frozen_stages),
            Err(e) => panic!("{e}"),
        }
        m
    };
    let skipped = tlcv_core::run::SkipLog::default();
    let progress = Progress::new(0, "bench");
    let cache = |m: &Model| match cache_features(m, &cfg, (&samples, 1), &skipped, &progress) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let epoch = |task: &mut ClassifyTask| {
        let batches = match task.train_batches(0, &SingleProcess) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        for batch in batches {
            let out = batch.and_then(|b| task.train_step(b, &SingleProcess));
            match out {
                Ok(o) => o.loss.backward(),
                Err(e) => panic!("{e}"),
            }
        }
    };
    let mut g = c.benchmark_group("feature_cache");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let mut m = frozen_model();
    g.bench_function("fill_cache_32", |b| {
        b.iter(|| black_box(m.frozen_inference(false, |m| Ok(cache(m))).map(|c| c.labels.size())))
    });
    let train = cache(&m);
    let val = cache(&m);
    let mut cached = ClassifyTask::new(m, cfg.clone(), dataset.clone(), Mode::Cached { train, val });
    g.bench_function("epoch_cached_32", |b| b.iter(|| epoch(&mut cached)));
    let mut images = ClassifyTask::new(frozen_model(), cfg.clone(), dataset.clone(), Mode::Images);
    g.bench_function("epoch_recompute_32", |b| b.iter(|| epoch(&mut images)));
    g.finish();
}

criterion_group! {
    name = benches;
    // No plots: plotters needs system fonts that minimal machines lack (criterion would panic).
    config = Criterion::default().without_plots();
    targets = bench_backbones, bench_feature_cache
}
criterion_main!(benches);
