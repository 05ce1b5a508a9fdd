//! A U-Net decoder (Ronneberger et al. 2015) on a pretrained encoder: from the deepest map, each block
//! upsamples ×2 (bilinear), concatenates the encoder skip of that stride and applies two 3x3 conv, BN
//! and ReLU. Skips: the backbone's stride-16, 8 and 4 maps, nothing at stride 2, and the input image
//! itself at stride 1 (3 channels, which sharpens boundaries at almost no cost).
//!
//! Names: `blocks.{i}.{0,1}.{conv,bn}`, `cls` (1x1 classifier with bias).

use tch::{Tensor, nn};
use tlcv_core::backbones::layers::{Act, Conv, ConvBn, ConvInit, ConvOpts};
use tlcv_core::onnx::ops::{Interp, SizeOf};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use crate::deeplab::upsample_to;
use crate::error::SegmentError;

/// Two 3x3 conv + BN + ReLU.
#[derive(Debug)]
struct Block {
    convs: [ConvBn; 2],
}

impl Block {
    fn new(p: &nn::Path, cin: i64, cout: i64) -> Result<Self, SegmentError> {
        let cb = |i: i64, ci: i64| {
            let q = p / i;
            ConvBn::new(&(&q / "conv"), &(&q / "bn"), ci, cout, ConvOpts::new(3).bn(1e-5, Act::Relu))
        };
        Ok(Self { convs: [cb(0, cin)?, cb(1, cout)?] })
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        self.convs[1].forward(&self.convs[0].forward(xs, train), train)
    }
}

/// The decoder and its classifier.
#[derive(Debug)]
pub struct UNetHead {
    blocks: Vec<Block>,
    cls: Conv,
}

impl UNetHead {
    /// A decoder for encoder maps `[C2/4, C3/8, C4/16, C5/32]` with `skip_channels = [c2, c3, c4]`,
    /// `deep_channels = c5` and five block widths `channels` (strides 16, 8, 4, 2, 1).
    pub fn new(
        p: &nn::Path,
        skip_channels: [i64; 3],
        deep_channels: i64,
        channels: &[i64],
        num_classes: i64,
    ) -> Result<Self, SegmentError> {
        if channels.len() != 5 || channels.iter().any(|&c| c < 1) {
            return Err(SegmentError::Invalid(format!(
                "U-Net needs 5 positive decoder widths (strides 16, 8, 4, 2, 1), got {channels:?}"
            )));
        }
        // Skip channels per block, deepest first: C4, C3, C2, none, the image.
        let skips = [skip_channels[2], skip_channels[1], skip_channels[0], 0, 3];
        let bp = p / "blocks";
        let mut blocks = Vec::with_capacity(5);
        let mut cin = deep_channels;
        for (i, (&c, &s)) in channels.iter().zip(&skips).enumerate() {
            blocks.push(Block::new(&(&bp / i), cin + s, c)?);
            cin = c;
        }
        let cls = Conv::new(&(p / "cls"), cin, num_classes, ConvOpts::new(1).bias(true).init(ConvInit::Default))?;
        Ok(Self { blocks, cls })
    }

    /// `feats` = `[C2, C3, C4, C5]` of `image` `[N, 3, H, W]` -> `[N, classes, H, W]`.
    pub fn forward(&self, image: &Tensor, feats: &[Tensor], train: bool) -> Tensor {
        let (h, w) = (image.size()[2], image.size()[3]);
        let mut x = feats[3].shallow_clone(); // [N, C5, H/32, W/32]
        let half = |t: i64| (t + 1) / 2;
        let skips: [Option<&Tensor>; 5] = [Some(&feats[2]), Some(&feats[1]), Some(&feats[0]), None, Some(image)];
        for (block, skip) in self.blocks.iter().zip(skips) {
            x = match skip {
                Some(s) => {
                    let up = upsample_to(&x, s.size()[2], s.size()[3]); // to the skip's stride
                    Tensor::cat(&[up, s.shallow_clone()], 1) // [N, c + skip, h', w']
                }
                None => upsample_to(&x, half(h), half(w)), // stride 2
            };
            x = block.forward(&x, train);
        }
        self.cls.forward(&x) // [N, classes, H, W]
    }
}

impl UNetHead {
    /// The ONNX nodes of [`UNetHead::forward`] in eval mode: `image` `[N, 3, H, W]` (normalised) and
    /// `feats` `[C2, C3, C4, C5]` -> `[N, classes, H, W]`.
    pub fn to_onnx(&self, g: &mut Graph, image: &Value, feats: &[Value]) -> Result<Value, OnnxError> {
        let (Some(h), Some(w)) = (image.dim(2), image.dim(3)) else {
            return Err(OnnxError::Unsupported("U-Net export needs a fixed input size".into()));
        };
        let [c2, c3, c4, c5] = feats else {
            return Err(OnnxError::Unsupported(format!("U-Net needs 4 encoder maps, got {}", feats.len())));
        };
        let mut x = c5.clone();
        let skips: [Option<&Value>; 5] = [Some(c4), Some(c3), Some(c2), None, Some(image)];
        for (block, skip) in self.blocks.iter().zip(skips) {
            x = match skip {
                Some(s) => {
                    let up = g.resize(&x, SizeOf::Like(s), Interp::BilinearHalfPixel);
                    g.concat(&[&up, s], 1)
                }
                None => g.resize(&x, SizeOf::Fixed((h + 1) / 2, (w + 1) / 2), Interp::BilinearHalfPixel),
            };
            for c in &block.convs {
                x = c.to_onnx(g, &x)?;
            }
        }
        self.cls.to_onnx(g, &x)
    }
}
