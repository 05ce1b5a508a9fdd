//! The arithmetic a benchmark row does, and the most this machine can do: each network's forward FLOPs
//! per image (counted once, here), and libtorch's matrix-multiply throughput (`compare peak`), so that
//! `benches/RESULTS.md` can show achieved GFLOP/s as a share of what the cores reach.
//!
//! The counts are multiply-adds of the convolutions and linear layers times 2 (batch norms, activations,
//! pooling and the loss not counted), which is how torchvision's model docs ("GFLOPS", really GMACs) and
//! Ultralytics (thop's MACs x 2) count.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

/// Forward GFLOP per image at `base` px: `(arch, gflop, base)`.
///
/// - `resnet18`: 1.814 GMACs at 224 (torchvision's model docs, `ResNet18_Weights.IMAGENET1K_V1`,
///   "GFLOPS 1.81"), x 2.
/// - `resnet50`: 4.089 GMACs at 224 (torchvision, `ResNet50_Weights.IMAGENET1K_V1`, "GFLOPS 4.09"), x 2.
/// - `efficientnet_b0`: 0.386 GMACs at 224 (torchvision, `EfficientNet_B0_Weights.IMAGENET1K_V1`,
///   "GFLOPS 0.39"), x 2.
/// - `efficientnet_lite0`: 0.385 GMACs at 224 (the convolutions and the classifier; timm's
///   `tf_efficientnet_lite0` card says 0.4 GMACs, TensorFlow's EfficientNet-Lite README 407M MAdds, which
///   also counts element-wise operations), x 2.
/// - `yolov8n`: 8.7 GFLOPs at 640 (Ultralytics' YOLOv8 model table, "FLOPs (B)"; the fused model).
/// - `yolo-style`, `unet`: the embedded detector (Lite0, 64-channel neck, 9 classes) at 256 px and U-Net
///   (Lite0, decoder 128..16, 5 classes) at 128 px of [`crate::tasks`], counted as below on
///   `benches/reference/tasks.py`'s same networks (2026-12-05); the U-Net's full-resolution decoder
///   blocks make most of its count.
///
/// Checked on 2026-12-04 with `torch.utils.flop_counter.FlopCounterMode` (which counts 2 FLOPs per
/// multiply-add) on one image in the reference venv: torchvision ResNet-18 3.628, ResNet-50 8.178,
/// EfficientNet-B0 0.772, the functional Lite0 forward of `scripts/fixtures/gen_backbones.py` 0.770,
/// Ultralytics' fused `DetectionModel("yolov8n.yaml")` at 640 px 8.744, `tasks.YoloStyle()` at 256 px 1.657,
/// `tasks.UNet()` at 128 px 0.941.
pub const FORWARD_GFLOP: [(&str, f64, i64); 7] = [
    ("resnet18", 3.628, 224),
    ("resnet50", 8.178, 224),
    ("efficientnet_b0", 0.772, 224),
    ("efficientnet_lite0", 0.770, 224),
    ("yolov8n", 8.7, 640),
    ("yolo-style", 1.657, 256),
    ("unet", 0.941, 128),
];

/// Training step over forward: the backward pass computes the gradients of both the activations and
/// the weights, each about one forward's arithmetic (the usual 3x rule).
pub const TRAIN_FACTOR: f64 = 3.0;

/// GFLOP per image of `arch` at `size` px: the forward's, scaled by `(size / base)^2`, times
/// [`TRAIN_FACTOR`] for a training step; `None` for a network not in [`FORWARD_GFLOP`].
pub fn gflop_per_image(arch: &str, size: i64, train: bool) -> Option<f64> {
    let (_, gflop, base) = FORWARD_GFLOP.iter().find(|(a, _, _)| *a == arch)?;
    let scale = (size as f64 / *base as f64).powi(2);
    Some(gflop * scale * if train { TRAIN_FACTOR } else { 1.0 })
}

/// The fields a model row adds to its `RESULT` line: `gflop_per_image=G flop_kind=fp32|bf16` (the kind
/// whose matmul peak bounds it), or nothing for a network without a count.
pub fn result_fields(arch: &str, size: i64, train: bool, bf16: bool) -> String {
    match gflop_per_image(arch, size, train) {
        Some(g) => format!(" gflop_per_image={g:.4} flop_kind={}", if bf16 { "bf16" } else { "fp32" }),
        None => String::new(),
    }
}

/// libtorch's `n`x`n` matrix multiply in `kind` on the CPU: GFLOP/s of the fastest of `iters` timed
/// products (2 n^3 FLOPs each) after `warmup` untimed ones.
pub fn matmul_gflops(kind: Kind, n: i64, (warmup, iters): (usize, usize)) -> f64 {
    tch::manual_seed(0);
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu)).to_kind(kind);
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu)).to_kind(kind);
    let mut best = f64::INFINITY;
    for i in 0..warmup + iters.max(1) {
        let t = Instant::now();
        let c = a.matmul(&b);
        let s = t.elapsed().as_secs_f64();
        drop(c);
        if i >= warmup {
            best = best.min(s);
        }
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_scale_with_area_and_training() {
        assert_eq!(gflop_per_image("resnet18", 224, false), Some(3.628));
        let half = gflop_per_image("resnet18", 112, true).unwrap_or(0.0);
        assert!((half - 3.628 / 4.0 * 3.0).abs() < 1e-12);
        let y = gflop_per_image("yolov8n", 320, false).unwrap_or(0.0);
        assert!((y - 8.7 / 4.0).abs() < 1e-12);
        assert_eq!(gflop_per_image("vgg16", 224, false), None);
        assert_eq!(result_fields("vgg16", 224, false, false), "");
        assert_eq!(result_fields("resnet50", 224, true, true), " gflop_per_image=24.5340 flop_kind=bf16");
    }
}
