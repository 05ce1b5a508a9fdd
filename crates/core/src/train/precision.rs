//! `train.precision`: what the forward pass computes in, and the one place that resolves `auto`.
//!
//! [`Precision::resolve`] turns the setting into a [`PrecisionPlan`] for a device and a task: the kind
//! of inference (evaluation, prediction, the feature cache, frozen backbones) and the kind of training.
//! `auto` (the default) picks bf16 for inference where the device has native bf16 (a GPU, or a CPU with
//! AVX-512 BF16 or AMX) and mixed bf16 for training where it is also faster ([`fast_mixed_training`]: a
//! GPU, or AMX for dense convolutions) in the tasks where seeded runs on the embedded data lost no
//! quality against float32 ([`TaskKind::auto_trains_mixed`], measured in `benches/RESULTS.md`); float32
//! everywhere else.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::backbones::Arch;
use crate::device::{cpu_has_amx, cpu_has_bf16};

/// Numeric precision of the forward pass (`train.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 where it is native and measured harmless, float32 elsewhere: see [`Precision::resolve`].
    #[default]
    Auto,
    /// float32 everywhere.
    Fp32,
    /// bfloat16 activations with float32 master weights, as under `torch.autocast`: convolutions and
    /// linear layers run in bf16 with their weights cast per call, gradients and optimiser state stay
    /// float32; frozen backbones run wholly in bf16. Used on GPUs and on CPUs with AVX-512 BF16 or
    /// AMX; elsewhere bf16 is emulated and slower, so it falls back to float32 with a note.
    Bf16,
}

/// The task a precision is resolved for: `auto` trains in mixed bf16 only where measured harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Image classification.
    Classify,
    /// Object detection.
    Detect,
    /// Semantic segmentation.
    Segment,
    /// Style transfer (its feature network is frozen: inference only).
    Style,
}

impl TaskKind {
    /// Whether `precision = "auto"` trains this task in mixed bf16 on a device with native bf16: only
    /// where the seeded embedded runs in bf16 stayed within 0.5 points of float32's top-1, 0.01 of its
    /// mAP@.5 or 0.01 of its mIoU (`benches/RESULTS.md`, "precision = auto").
    pub fn auto_trains_mixed(self) -> bool {
        match self {
            // Fine-tuning Lite0 on the embedded digits: top-1 0.8685 in bf16 against 0.8720; U-Net on
            // the embedded shapes: mIoU 0.8543 against 0.8557; the YOLO-style detector on the embedded
            // set, 11 epochs: mAP@.5 0.9352 against 0.9352 (mAP@[.5:.95] 0.6901 against 0.6949).
            TaskKind::Classify | TaskKind::Segment | TaskKind::Detect => true,
            // Style trains nothing through its network.
            TaskKind::Style => false,
        }
    }
}

/// What a precision setting resolved to on one device for one task; written into the run's
/// `config.toml` as `train.precision_resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecisionPlan {
    /// Inference, evaluation, the feature cache and frozen backbones: `fp32` or `bf16`.
    pub inference: Precision,
    /// Training steps: `fp32`, or `bf16` for mixed precision (float32 master weights).
    pub training: Precision,
}

impl PrecisionPlan {
    /// float32 for everything.
    pub const FP32: PrecisionPlan = PrecisionPlan { inference: Precision::Fp32, training: Precision::Fp32 };

    /// The kind inference runs in.
    pub fn inference_kind(&self) -> Kind {
        kind_of(self.inference)
    }

    /// The kind training steps compute activations in (weights stay float32).
    pub fn training_kind(&self) -> Kind {
        kind_of(self.training)
    }
}

fn kind_of(p: Precision) -> Kind {
    if p == Precision::Bf16 { Kind::BFloat16 } else { Kind::Float }
}

/// Whether `device` computes bf16 natively: CUDA, or a CPU with AVX-512 BF16 or AMX.
pub fn native_bf16(device: Device) -> bool {
    device.is_cuda() || cpu_has_bf16()
}

/// What a network's trained convolutions are, for `auto`'s mixed-training decision on a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convs {
    /// Dense convolutions: ResNet, VGG, Ultralytics' YOLO.
    Dense,
    /// Depthwise-separable blocks: the EfficientNets.
    Depthwise,
}

impl Convs {
    /// The convolutions of backbone `arch`.
    pub fn of(arch: Arch) -> Convs {
        match arch {
            Arch::EfficientnetB0 | Arch::EfficientnetLite0 | Arch::EfficientnetLite1 | Arch::EfficientnetLite2 => {
                Convs::Depthwise
            }
            _ => Convs::Dense,
        }
    }
}

/// Whether mixed bf16 training of a network made of `convs` is faster than float32 on `device`: a GPU,
/// or a CPU with AMX for dense convolutions. With AVX-512 BF16 alone the weights cast for every call cost
/// more than the faster dot products save: on such a host detection trained at 61 s per epoch in mixed
/// bf16 against 46 s in float32, segmentation 1907 s against 1342 s. On an AMX host, mixed bf16
/// channels-last against float32 channels-last: ResNet-18 32.8 against 16.6 images/s (batch 32, 224 px)
/// and YOLOv8n 7.8 against 4.6 (batch 16, 640 px), but EfficientNet-B0 9.1 against 19.4 and Lite0 6.2 against 17.7 (oneDNN's
/// bf16 depthwise backward; PyTorch's autocast is slower there too). `benches/RESULTS.md` has both.
pub fn fast_mixed_training(device: Device, convs: Convs) -> bool {
    device.is_cuda() || (cpu_has_amx() && convs == Convs::Dense)
}

impl Precision {
    /// The plan for `task` training a network of `convs` on `device`. `fp32`: float32 throughout.
    /// `bf16`: bf16 inference and mixed training where bf16 is native, float32 elsewhere. `auto`: bf16
    /// inference where native, mixed training only where [`fast_mixed_training`] and
    /// [`TaskKind::auto_trains_mixed`]; float32 otherwise. Never prints.
    pub fn resolve(self, device: Device, task: TaskKind, convs: Convs) -> PrecisionPlan {
        let native = native_bf16(device);
        let pick = |on: bool| if on { Precision::Bf16 } else { Precision::Fp32 };
        match self {
            Precision::Fp32 => PrecisionPlan::FP32,
            Precision::Bf16 => PrecisionPlan { inference: pick(native), training: pick(native) },
            Precision::Auto => {
                let mixed = fast_mixed_training(device, convs) && task.auto_trains_mixed();
                PrecisionPlan { inference: pick(native), training: pick(mixed) }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Read independently of `cpu_has_bf16`: the flags line of the first processor.
    fn host_has_bf16() -> bool {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
        flags.split_whitespace().any(|f| f == "avx512_bf16" || f == "amx_bf16")
    }

    /// Read independently of `cpu_has_amx`.
    fn host_has_amx() -> bool {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
        flags.split_whitespace().any(|f| f == "amx_bf16")
    }

    const TASKS: [TaskKind; 4] = [TaskKind::Classify, TaskKind::Detect, TaskKind::Segment, TaskKind::Style];

    #[test]
    fn auto_resolves_as_documented_on_this_host() {
        let native = cfg!(target_arch = "x86_64") && host_has_bf16();
        let amx = cfg!(target_arch = "x86_64") && host_has_amx();
        let bf = |on: bool| if on { Precision::Bf16 } else { Precision::Fp32 };
        for (task, convs) in TASKS.into_iter().flat_map(|t| [(t, Convs::Dense), (t, Convs::Depthwise)]) {
            let plan = Precision::Auto.resolve(Device::Cpu, task, convs);
            assert_eq!(plan.inference, bf(native), "{task:?}: inference");
            let mixed = amx && task.auto_trains_mixed() && convs == Convs::Dense;
            assert_eq!(plan.training, bf(mixed), "{task:?} {convs:?}: training");
            assert_eq!(Precision::Fp32.resolve(Device::Cpu, task, convs), PrecisionPlan::FP32);
            assert_eq!(
                Precision::Bf16.resolve(Device::Cpu, task, convs),
                PrecisionPlan { inference: bf(native), training: bf(native) }
            );
        }
        assert_eq!(Convs::of(Arch::EfficientnetLite0), Convs::Depthwise);
        assert_eq!(Convs::of(Arch::EfficientnetB0), Convs::Depthwise);
        assert_eq!(Convs::of(Arch::Resnet50), Convs::Dense);
        // Style only infers: its feature network is frozen.
        assert!(!TaskKind::Style.auto_trains_mixed());
    }

    #[test]
    fn auto_on_cuda_is_bf16_inference_whatever_the_cpu() {
        // Resolving never touches the device, so a CUDA device can be named on a CPU-only machine.
        for task in TASKS {
            for convs in [Convs::Dense, Convs::Depthwise] {
                let plan = Precision::Auto.resolve(Device::Cuda(0), task, convs);
                assert_eq!(plan.inference_kind(), Kind::BFloat16, "{task:?}");
                let mixed = if task.auto_trains_mixed() { Kind::BFloat16 } else { Kind::Float };
                assert_eq!(plan.training_kind(), mixed, "{task:?}");
                assert_eq!(Precision::Bf16.resolve(Device::Cuda(0), task, convs).training_kind(), Kind::BFloat16);
            }
        }
    }

    #[test]
    fn plan_round_trips_through_toml() {
        let plan = PrecisionPlan { inference: Precision::Bf16, training: Precision::Fp32 };
        let text = toml::to_string(&plan).unwrap();
        assert_eq!(text.trim(), "inference = \"bf16\"\ntraining = \"fp32\"");
        assert_eq!(toml::from_str::<PrecisionPlan>(&text).unwrap(), plan);
        assert_eq!(toml::from_str::<toml::Table>("p = \"auto\"").unwrap()["p"].as_str(), Some("auto"));
    }
}
