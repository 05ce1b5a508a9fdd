//! The ONNX rows of `cargo xtask bench --compare`: inference speed of the same network through
//! libtorch (tlcv's own forward, as `predict` runs it), through tract (`predict --onnx`) and, on the
//! reference side, through ONNX Runtime, on the exported file `prepare` writes. Two networks at the
//! embedded data's sizes: a ResNet-18 classifier (10 classes, 64 px, the digits' size) and the
//! YOLO-style detector on EfficientNet-Lite0 (3 classes, 256 px). Weights are random (seeded): speed
//! does not depend on them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use tch::{Device, Kind, Tensor};
use tlcv_core::backbones::Arch;
use tlcv_core::onnx::{self, ExportOptions, runtime::OnnxModel};

use crate::median;

/// The benchmarked networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Net {
    /// ResNet-18 classifier, 64 px.
    Resnet18,
    /// YOLO-style detector on EfficientNet-Lite0, 256 px.
    Yolo,
}

impl Net {
    /// Input side.
    pub fn size(self) -> i64 {
        match self {
            Net::Resnet18 => 64,
            Net::Yolo => 256,
        }
    }

    /// Name of the exported file.
    pub fn file_name(self) -> &'static str {
        match self {
            Net::Resnet18 => "resnet18-64.onnx",
            Net::Yolo => "yolo-lite0-256.onnx",
        }
    }
}

/// Where each side runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// tlcv's libtorch forward.
    Libtorch,
    /// The exported file in tract.
    Tract,
}

/// A built network: forward on libtorch, and its export.
enum Built {
    Classifier(classify::model::Model),
    Detector(detect::model::Detector),
}

fn build(net: Net) -> Result<Built> {
    tch::manual_seed(0);
    Ok(match net {
        Net::Resnet18 => {
            let cfg = classify::config::ModelConfig {
                backbone: Arch::Resnet18,
                weights: tlcv_core::weights::WeightsSource::None,
                strategy: tlcv_core::freeze::Strategy::Scratch,
                ..Default::default()
            };
            Built::Classifier(classify::model::Model::build(&cfg, 10, Device::Cpu)?)
        }
        Net::Yolo => {
            let mut cfg = detect::DetectConfig::default();
            cfg.model.weights = tlcv_core::weights::WeightsSource::None;
            cfg.model.strategy = tlcv_core::freeze::Strategy::Scratch;
            cfg.data.img_size = net.size();
            cfg.train.channels_last = false;
            Built::Detector(detect::model::Detector::build(&cfg, 3, Device::Cpu)?)
        }
    })
}

/// Exports both networks (dynamic batch) into `dir`; returns their paths.
pub fn prepare(dir: &Path) -> Result<Vec<(Net, PathBuf)>> {
    let mut out = Vec::new();
    for net in [Net::Resnet18, Net::Yolo] {
        let path = dir.join(net.file_name());
        let opts = ExportOptions { dynamic_batch: true, ..ExportOptions::new(net.size()) };
        let proto = match build(net)? {
            Built::Classifier(m) => {
                let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
                classify::export::export(&m, &names, &opts, false)?
            }
            Built::Detector(d) => {
                let names: Vec<String> = (0..3).map(|i| i.to_string()).collect();
                detect::export::export(&d, Arch::EfficientnetLite0, &names, &opts, detect::export::Head::Raw)?
            }
        };
        onnx::save(&proto, &path)?;
        out.push((net, path));
    }
    Ok(out)
}

/// Images per second of `net` on `runtime`: median over `iters` batches after `warmup`.
pub fn run(net: Net, runtime: Runtime, file: &Path, batch: i64, (warmup, iters): (usize, usize)) -> Result<String> {
    let s = net.size();
    tch::manual_seed(1);
    let xs = Tensor::rand([batch, 3, s, s], (Kind::Float, Device::Cpu));
    let forward: Box<dyn Fn() -> Result<Tensor>> = match runtime {
        Runtime::Tract => {
            let m = OnnxModel::load(file)?;
            Box::new(move || Ok(m.run(&xs)?.remove(0)))
        }
        Runtime::Libtorch => match build(net)? {
            Built::Classifier(m) => Box::new(move || Ok(tch::no_grad(|| m.forward(&xs, false)))),
            // The network and the decoding, as the exported graph (NMS excluded on every side).
            Built::Detector(d) => Box::new(move || {
                let (b, s) = d.net.decoded(&xs)?;
                Ok(Tensor::cat(&[b, s], 2))
            }),
        },
    };
    let mut times = Vec::new();
    for i in 0..warmup + iters.max(1) {
        let t = Instant::now();
        let out = forward()?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
        if !out.abs().mean(Kind::Float).double_value(&[]).is_finite() {
            bail!("non-finite output");
        }
    }
    let m = median(&times);
    Ok(format!("images_per_s={:.2} seconds_per_batch={m:.4}", batch as f64 / m))
}
