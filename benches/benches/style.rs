//! Style transfer on the CPU. `apply_512x512`: one forward pass of the fast-style transformation
//! network on a 512x512 image, NCHW and channels-last; it uses the trained run in `TLCV_STYLE_RUN`
//! when set, else the shipped network (`assets/models/fast_starry_night`). `gatys_step_256`: one step of the optimisation-based
//! method (features, content/style/TV losses and the image gradient) at 256x256 on each feature
//! network (random weights: the time does not depend on them).

use criterion::{Criterion, criterion_group, criterion_main};
use style::fast::FastModel;
use style::features::FeatureNet;
use style::loss::Weights;
use style::transfer;
use tch::{Device, Kind, Tensor};
use tlcv_core::backbones::Arch;

fn apply_512(c: &mut Criterion) {
    let model = match std::env::var_os("TLCV_STYLE_RUN") {
        Some(run) => FastModel::load(std::path::Path::new(&run), Device::Cpu),
        None => style::fast::shipped_run().and_then(|run| FastModel::load(&run, Device::Cpu)),
    };
    let Ok(mut model) = model else {
        eprintln!("style bench: cannot load the model");
        return;
    };
    tch::manual_seed(0);
    let x = Tensor::rand([1, 3, 512, 512], (Kind::Float, Device::Cpu));
    let mut g = c.benchmark_group("style");
    g.sample_size(10);
    g.bench_function("apply_512x512", |b| b.iter(|| model.apply(&x)));
    model.set_channels_last(true);
    g.bench_function("apply_512x512_channels_last", |b| b.iter(|| model.apply(&x)));
    g.finish();
}

fn gatys_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("style");
    g.sample_size(10);
    for arch in [Arch::EfficientnetLite0, Arch::Vgg19] {
        let Ok(net) = FeatureNet::new(arch, Device::Cpu) else {
            eprintln!("style bench: cannot build {arch}");
            continue;
        };
        tch::manual_seed(0);
        let content = Tensor::rand([1, 3, 256, 256], (Kind::Float, Device::Cpu));
        let style_img = Tensor::rand([1, 3, 256, 256], (Kind::Float, Device::Cpu));
        let Ok(t) = transfer::targets(&net, &content, &style_img) else { continue };
        let w = Weights { content: 1.0, style: 100.0, tv: 10.0, style_layers: net.style_weights.clone() };
        g.bench_function(format!("gatys_step_256/{arch}"), |b| b.iter(|| transfer::evaluate(&net, &content, &t, &w)));
    }
    g.finish();
}

criterion_group!(benches, apply_512, gatys_step);
criterion_main!(benches);
