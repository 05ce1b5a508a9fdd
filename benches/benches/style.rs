//! Fast style transfer: one forward pass of the transformation network on a 512x512 image (CPU).
//! Uses the trained run in `TLCV_STYLE_RUN` when set (the weights do not change the time), else a
//! network of the default size (width 16, 5 residual blocks) with random weights.

use criterion::{Criterion, criterion_group, criterion_main};
use style::fast::FastModel;
use tch::{Device, Kind, Tensor};

fn apply_512(c: &mut Criterion) {
    let model = match std::env::var_os("TLCV_STYLE_RUN") {
        Some(run) => FastModel::load(std::path::Path::new(&run), Device::Cpu),
        None => FastModel::untrained(16, 5, Device::Cpu),
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

criterion_group!(benches, apply_512);
criterion_main!(benches);
