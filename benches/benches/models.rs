//! Backbones at 224 px (batch 8 here; `cargo xtask bench --compare` uses 32): a training step and an
//! inference batch per mode, and classify's feature-cache epoch against the recomputing epoch.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tch::{Device, Kind, Reduction, Tensor, nn, nn::OptimizerConfig};
use tlcv_benches::models::{Mode, ModelBench};
use tlcv_core::backbones::{self, Arch};

const BATCH: i64 = 8;

fn bench_backbones(c: &mut Criterion) {
    let mut g = c.benchmark_group("backbone");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(BATCH as u64));
    for arch in [Arch::Resnet18, Arch::EfficientnetB0] {
        for mode in [Mode::Fp32, Mode::ChannelsLast, Mode::ChannelsLastFolded] {
            let Ok(m) = ModelBench::new(arch, BATCH, 224, mode) else { continue };
            g.bench_function(format!("{arch}/infer/{}", mode.name()), |b| b.iter(|| black_box(m.infer())));
        }
        for mode in [Mode::Fp32, Mode::ChannelsLast] {
            let Ok(mut m) = ModelBench::new(arch, BATCH, 224, mode) else { continue };
            g.bench_function(format!("{arch}/train/{}", mode.name()), |b| b.iter(|| black_box(m.train_step())));
        }
    }
    g.finish();
}

/// A frozen ResNet-18 at 64 px on 64 images with a linear head: one epoch trains the head either on
/// features cached once (classify's feature cache) or on features recomputed by a full forward.
fn bench_feature_cache(c: &mut Criterion) {
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = match backbones::classifier(vs.root() / "net", Arch::Resnet18, 10) {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    };
    vs.freeze();
    let head_vs = nn::VarStore::new(Device::Cpu);
    let head = nn::linear(head_vs.root(), 512, 10, Default::default());
    let mut opt = match nn::Sgd::default().build(&head_vs, 0.01) {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    let images = Tensor::randn([64, 3, 64, 64], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(10, [64], (Kind::Int64, Device::Cpu));
    let cached = tch::no_grad(|| net.penultimate(&images, false)); // [64, 512], once
    let mut head_epoch = |feats: &dyn Fn(i64) -> Tensor| {
        for start in (0..64).step_by(16) {
            let xs = feats(start);
            let ys = labels.narrow(0, start, 16);
            let loss = nn::Module::forward(&head, &xs).cross_entropy_loss::<Tensor>(&ys, None, Reduction::Mean, -100, 0.0);
            opt.backward_step(&loss);
        }
    };
    let mut g = c.benchmark_group("feature_cache_epoch");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("cached", |b| b.iter(|| head_epoch(&|s| cached.narrow(0, s, 16))));
    g.bench_function("recompute", |b| {
        b.iter(|| head_epoch(&|s| tch::no_grad(|| net.penultimate(&images.narrow(0, s, 16), false))))
    });
    g.finish();
}

criterion_group!(benches, bench_backbones, bench_feature_cache);
criterion_main!(benches);
