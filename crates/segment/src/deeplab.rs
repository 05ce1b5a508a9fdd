//! DeepLabv3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation") and
//! DeepLabv3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution").
//!
//! [`DeepLabV3Head`] has the layout and names of torchvision's `DeepLabHead`, so torchvision's
//! `deeplabv3_resnet50` state dict loads strictly into backbone `backbone.*` + head `classifier.*`:
//! `classifier.0` = ASPP (`convs.0` 1x1, `convs.1..` 3x3 atrous at each rate, `convs.{last}` image
//! pooling, `project` 1x1 + dropout 0.5), `classifier.1`/`.2` 3x3 conv + BN, `classifier.4` 1x1 conv
//! with bias. [`DeepLabV3PlusHead`] adds the low-level decoder on the stride-4 map: `aspp`,
//! `low_proj` (1x1 to 48 channels), `decoder.0`/`.1` (3x3 convs on the concatenation), `cls`.

use tch::{Tensor, nn};
use tlcv_core::backbones::layers::{Act, Conv, ConvBn, ConvInit, ConvOpts};
use tlcv_core::onnx::ops::{Interp, SizeOf};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use crate::error::SegmentError;

const BN_EPS: f64 = 1e-5;

/// A conv (no bias) + BN + ReLU whose conv and BN sit at `p/names[0]` and `p/names[1]`.
fn cbr(p: &nn::Path, names: [&str; 2], cin: i64, cout: i64, o: ConvOpts) -> Result<ConvBn, SegmentError> {
    Ok(ConvBn::new(&(p / names[0]), &(p / names[1]), cin, cout, o.bn(BN_EPS, Act::Relu))?)
}

/// Bilinear resize of `[N, C, h, w]` to `[N, C, H, W]` (PyTorch's `align_corners=False`).
pub fn upsample_to(xs: &Tensor, h: i64, w: i64) -> Tensor {
    xs.upsample_bilinear2d([h, w], false, None, None)
}

/// Atrous spatial pyramid pooling: a 1x1 branch, one 3x3 branch per rate, image pooling, projection.
#[derive(Debug)]
pub struct Aspp {
    branches: Vec<ConvBn>,
    pool: ConvBn,
    project: ConvBn,
    dropout: f64,
}

impl Aspp {
    /// ASPP from `cin` to `cout` channels with atrous `rates` (torchvision's names under `p`).
    pub fn new(p: &nn::Path, cin: i64, cout: i64, rates: &[i64], dropout: f64) -> Result<Self, SegmentError> {
        let convs = p / "convs";
        let mut branches = vec![cbr(&(&convs / 0), ["0", "1"], cin, cout, ConvOpts::new(1))?];
        for (i, &r) in rates.iter().enumerate() {
            if r < 1 {
                return Err(SegmentError::Invalid(format!("atrous rates must be >= 1, got {r}")));
            }
            branches.push(cbr(&(&convs / (i + 1)), ["0", "1"], cin, cout, ConvOpts::new(3).dilation(r))?);
        }
        let pool = cbr(&(&convs / (rates.len() + 1)), ["1", "2"], cin, cout, ConvOpts::new(1))?;
        let n = rates.len() as i64 + 2;
        let project = cbr(&(p / "project"), ["0", "1"], n * cout, cout, ConvOpts::new(1))?;
        Ok(Self { branches, pool, project, dropout })
    }

    /// `[N, cin, h, w]` -> `[N, cout, h, w]`.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let (h, w) = (xs.size()[2], xs.size()[3]);
        let mut outs: Vec<Tensor> = self.branches.iter().map(|b| b.forward(xs, train)).collect();
        let pooled = xs.adaptive_avg_pool2d([1, 1]); // [N, cin, 1, 1]
        // Batch statistics need more than one value per channel: a single image uses running stats.
        let bn_train = train && xs.size()[0] > 1;
        outs.push(upsample_to(&self.pool.forward(&pooled, bn_train), h, w)); // [N, cout, h, w]
        let cat = Tensor::cat(&outs, 1); // [N, (rates + 2) * cout, h, w]
        self.project.forward(&cat, train).dropout(self.dropout, train)
    }
}

/// torchvision's `DeepLabHead`: ASPP, 3x3 conv + BN + ReLU, 1x1 classifier.
#[derive(Debug)]
pub struct DeepLabV3Head {
    aspp: Aspp,
    conv: ConvBn,
    cls: Conv,
}

impl DeepLabV3Head {
    /// The head under `p` (`classifier` in torchvision) on `cin` channels.
    pub fn new(p: &nn::Path, cin: i64, channels: i64, rates: &[i64], num_classes: i64) -> Result<Self, SegmentError> {
        let aspp = Aspp::new(&(p / "0"), cin, channels, rates, 0.5)?;
        let conv = cbr(p, ["1", "2"], channels, channels, ConvOpts::new(3))?;
        let cls = Conv::new(&(p / "4"), channels, num_classes, ConvOpts::new(1).bias(true).init(ConvInit::Default))?;
        Ok(Self { aspp, conv, cls })
    }

    /// `[N, cin, h, w]` (the deepest features) -> `[N, classes, h, w]`.
    pub fn forward(&self, c5: &Tensor, train: bool) -> Tensor {
        let x = self.aspp.forward(c5, train); // [N, ch, h, w]
        self.cls.forward(&self.conv.forward(&x, train))
    }
}

/// DeepLabv3+: ASPP on the deepest map, upsampled to the stride-4 map and fused with its projection.
#[derive(Debug)]
pub struct DeepLabV3PlusHead {
    aspp: Aspp,
    low_proj: ConvBn,
    decoder: [ConvBn; 2],
    cls: Conv,
}

impl DeepLabV3PlusHead {
    /// The head under `p` on a `cin`-channel deep map and a `low_cin`-channel stride-4 map, with
    /// `channels` in the ASPP and decoder and `low_channels` in the stride-4 projection.
    pub fn new(
        p: &nn::Path,
        (cin, low_cin): (i64, i64),
        (channels, low_channels): (i64, i64),
        rates: &[i64],
        num_classes: i64,
    ) -> Result<Self, SegmentError> {
        let aspp = Aspp::new(&(p / "aspp"), cin, channels, rates, 0.1)?;
        let low_proj = cbr(&(p / "low_proj"), ["0", "1"], low_cin, low_channels, ConvOpts::new(1))?;
        let d = p / "decoder";
        let decoder = [
            cbr(&(&d / 0), ["0", "1"], channels + low_channels, channels, ConvOpts::new(3))?,
            cbr(&(&d / 1), ["0", "1"], channels, channels, ConvOpts::new(3))?,
        ];
        let cls = Conv::new(&(p / "cls"), channels, num_classes, ConvOpts::new(1).bias(true).init(ConvInit::Default))?;
        Ok(Self { aspp, low_proj, decoder, cls })
    }

    /// `low` `[N, low_cin, H/4, W/4]`, `deep` `[N, cin, h, w]` -> `[N, classes, H/4, W/4]`.
    pub fn forward(&self, low: &Tensor, deep: &Tensor, train: bool) -> Tensor {
        let (h, w) = (low.size()[2], low.size()[3]);
        let x = upsample_to(&self.aspp.forward(deep, train), h, w); // [N, ch, H/4, W/4]
        let l = self.low_proj.forward(low, train); // [N, 48, H/4, W/4]
        let mut y = Tensor::cat(&[x, l], 1); // [N, ch + 48, H/4, W/4]
        for d in &self.decoder {
            y = d.forward(&y, train);
        }
        self.cls.forward(&y)
    }
}

impl Aspp {
    /// The ONNX nodes of [`Aspp::forward`] in eval mode: `[N, cin, h, w]` -> `[N, cout, h, w]`.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> Result<Value, OnnxError> {
        let mut outs = self.branches.iter().map(|b| b.to_onnx(g, x)).collect::<Result<Vec<_>, _>>()?;
        let pooled = g.global_avg_pool(x); // [N, cin, 1, 1]
        let p = self.pool.to_onnx(g, &pooled)?;
        outs.push(g.resize(&p, SizeOf::Like(x), Interp::BilinearHalfPixel));
        let refs: Vec<&Value> = outs.iter().collect();
        let cat = g.concat(&refs, 1);
        self.project.to_onnx(g, &cat)
    }
}

impl DeepLabV3Head {
    /// The ONNX nodes of [`DeepLabV3Head::forward`]: `[N, cin, h, w]` -> `[N, classes, h, w]`.
    pub fn to_onnx(&self, g: &mut Graph, c5: &Value) -> Result<Value, OnnxError> {
        let x = self.aspp.to_onnx(g, c5)?;
        let x = self.conv.to_onnx(g, &x)?;
        self.cls.to_onnx(g, &x)
    }
}

impl DeepLabV3PlusHead {
    /// The ONNX nodes of [`DeepLabV3PlusHead::forward`]: `low`, `deep` -> `[N, classes, H/4, W/4]`.
    pub fn to_onnx(&self, g: &mut Graph, low: &Value, deep: &Value) -> Result<Value, OnnxError> {
        let a = self.aspp.to_onnx(g, deep)?;
        let x = g.resize(&a, SizeOf::Like(low), Interp::BilinearHalfPixel);
        let l = self.low_proj.to_onnx(g, low)?;
        let mut y = g.concat(&[&x, &l], 1);
        for d in &self.decoder {
            y = d.to_onnx(g, &y)?;
        }
        self.cls.to_onnx(g, &y)
    }
}
