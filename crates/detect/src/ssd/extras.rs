//! SSD's extra feature layers past the end of the backbone: each halves the resolution with a
//! 1x1 bottleneck conv + ReLU and a 3x3 stride-2 conv + ReLU (`extras.{i}.0`, `extras.{i}.1`),
//! giving maps at strides 64, 128, ... after a stride-32 backbone.

use tch::{Tensor, nn};
use tlcv_core::backbones::layers::Conv;
use tlcv_core::onnx::{Graph, OnnxError, Value};

use crate::error::DetectError;
use crate::faster_rcnn::fpn::{conv_bias, kaiming_uniform_a1};

/// The extra layers.
#[derive(Debug)]
pub struct Extras {
    blocks: Vec<(Conv, Conv)>,
}

impl Extras {
    /// One block per entry of `channels` (output widths), starting from `cin` channels; the
    /// bottleneck of each block is half its output width.
    pub fn new(p: &nn::Path, cin: i64, channels: &[i64]) -> Result<Self, DetectError> {
        let mut blocks = Vec::new();
        let mut c = cin;
        for (i, &co) in channels.iter().enumerate() {
            if co < 2 {
                return Err(DetectError::Invalid(format!("ssd extras: width {co} too small")));
            }
            let q = p / i as i64;
            let mut a = conv_bias(&(&q / 0), c, co / 2, 1, 1)?;
            let mut b = conv_bias(&(&q / 1), co / 2, co, 3, 2)?;
            kaiming_uniform_a1(&mut a);
            kaiming_uniform_a1(&mut b);
            blocks.push((a, b));
            c = co;
        }
        Ok(Self { blocks })
    }

    /// `[N, C, H, W]` (the last backbone map) -> one map per block, `[N, c_i, ceil(H/2^i), ..]`.
    pub fn forward(&self, last: &Tensor) -> Vec<Tensor> {
        let mut x = last.shallow_clone();
        let mut outs = Vec::with_capacity(self.blocks.len());
        for (a, b) in &self.blocks {
            x = b.forward(&a.forward(&x).relu()).relu(); // [N, c_i, ceil(H/2), ceil(W/2)]
            outs.push(x.shallow_clone());
        }
        outs
    }
}

impl Extras {
    /// The ONNX nodes of [`Extras::forward`].
    pub fn to_onnx(&self, g: &mut Graph, last: &Value) -> Result<Vec<Value>, OnnxError> {
        let mut x = last.clone();
        let mut outs = Vec::with_capacity(self.blocks.len());
        for (a, b) in &self.blocks {
            let y = a.to_onnx(g, &x)?;
            let y = g.unary("Relu", &y);
            let y = b.to_onnx(g, &y)?;
            x = g.unary("Relu", &y);
            outs.push(x.clone());
        }
        Ok(outs)
    }
}
