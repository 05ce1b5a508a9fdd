//! Times Faster R-CNN training steps as the pipeline runs them (development aid):
//! `FAMILY=faster-rcnn CL=1 BATCH=16 cargo run --release -p detect --example profile_frcnn`.
use std::time::Instant;

use detect::{DetectConfig, family::LossScope, model::Detector, model_io::Targets};
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let mut cfg = DetectConfig::default();
    cfg.model.family = env("FAMILY", "faster-rcnn").parse().map_err(anyhow::Error::msg)?;
    cfg.model.weights = tlcv_core::weights::WeightsSource::None;
    cfg.model.strategy = tlcv_core::freeze::Strategy::Scratch;
    cfg.train.channels_last = env("CL", "1") == "1";
    let b: i64 = env("BATCH", "16").parse()?;
    let model = Detector::build(&cfg, 9, Device::Cpu)?;
    let x = Tensor::randn([b, 3, 256, 256], (Kind::Float, Device::Cpu));
    let boxes =
        Tensor::from_slice(&[20f32, 30., 80., 90., 100., 100., 200., 180., 150., 20., 190., 60.]).view([1, 3, 4]);
    let t = Targets {
        boxes: boxes.repeat([b, 1, 1]),
        labels: Tensor::from_slice(&[1i64, 3, 5]).view([1, 3]).repeat([b, 1]),
        mask: Tensor::ones([b, 3], (Kind::Bool, Device::Cpu)),
    };
    for _ in 0..3 {
        let t0 = Instant::now();
        let l = model.loss(&x, &t, LossScope::SINGLE)?;
        let f = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        l.total.backward();
        println!("loss {:.2}s backward {:.2}s", f, t1.elapsed().as_secs_f64());
    }
    let pp = detect::task::DetectTask::eval_postprocess(&cfg);
    let t0 = Instant::now();
    model.predict(&x, &pp)?;
    println!("predict {:.2}s", t0.elapsed().as_secs_f64());
    Ok(())
}
