//! Building blocks shared by the backbone families: convolution (with PyTorch or TensorFlow 'SAME'
//! padding), batch norm that can be held in eval mode, linear, and the initialisations torchvision uses.
//!
//! Their ONNX nodes are in [`crate::onnx::layers`]; this file stays past 450 lines because the batch-norm
//! folding that both the eval forward and the export use ([`fold_bn`]) belongs with the layers.
//!
//! Variables are created with `f_var`/`f_zeros_no_train` so that a failure is an error, not a panic,
//! and with the names `torch.nn.Conv2d`/`BatchNorm2d`/`Linear` give them (`weight`, `bias`,
//! `running_mean`, `running_var`). `num_batches_tracked` is not created: it does not affect the
//! forward pass, and the checkpoint loader ignores it.

use tch::{Tensor, nn};

use crate::Result;

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Symmetric zero padding of this many pixels on each side (PyTorch).
    Symmetric(i64),
    /// TensorFlow 'SAME': pad so that `out = ceil(in / stride)`, the odd pixel going to the bottom/right.
    TfSame,
}

/// How a convolution's weight is initialised (torchvision's choices).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConvInit {
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`: std = sqrt(2 / (out * k * k)).
    KaimingFanOut,
    /// PyTorch's default `Conv2d` init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (for the SE 1x1 convs).
    Default,
}

/// A 2-d convolution with its padding rule.
#[derive(Debug)]
pub struct Conv {
    /// `[out, in / groups, k, k]`.
    pub weight: Tensor,
    /// `[out]`, when the layer has a bias.
    pub bias: Option<Tensor>,
    stride: i64,
    kernel: i64,
    groups: i64,
    dilation: i64,
    padding: Padding,
}

/// The options of [`Conv::new`].
#[derive(Debug, Clone, Copy)]
pub struct ConvOpts {
    /// Kernel size on both axes.
    pub kernel: i64,
    /// Stride on both axes.
    pub stride: i64,
    /// Groups (`groups == in == out` for depthwise).
    pub groups: i64,
    /// Whether the layer has a bias.
    pub bias: bool,
    /// Padding rule.
    pub padding: Padding,
    /// Weight initialisation.
    pub init: ConvInit,
    /// Dilation on both axes (atrous convolution; 1 = none).
    pub dilation: i64,
}

impl ConvOpts {
    /// Stride 1, one group, no bias, "same" symmetric padding `k / 2`, Kaiming fan-out init.
    pub fn new(kernel: i64) -> Self {
        ConvOpts {
            kernel,
            stride: 1,
            groups: 1,
            bias: false,
            padding: Padding::Symmetric(kernel / 2),
            init: ConvInit::KaimingFanOut,
            dilation: 1,
        }
    }
    /// Sets the stride.
    pub fn stride(mut self, s: i64) -> Self {
        self.stride = s;
        self
    }
    /// Sets the groups.
    pub fn groups(mut self, g: i64) -> Self {
        self.groups = g;
        self
    }
    /// Sets whether there is a bias.
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }
    /// Sets the padding rule.
    pub fn padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }
    /// Sets the initialisation.
    pub fn init(mut self, i: ConvInit) -> Self {
        self.init = i;
        self
    }
    /// Sets the dilation and, for symmetric padding, the matching "same" padding `d * (k / 2)`
    /// (torchvision's dilated ResNet and DeepLab's atrous convolutions).
    pub fn dilation(mut self, d: i64) -> Self {
        self.dilation = d.max(1);
        if let Padding::Symmetric(_) = self.padding {
            self.padding = Padding::Symmetric(self.dilation * (self.kernel / 2));
        }
        self
    }
    /// These options followed by a batch norm with `eps` and `act`, for [`ConvBn::new`].
    pub fn bn(self, eps: f64, act: Act) -> ConvBnOpts {
        ConvBnOpts { conv: self, eps, act }
    }
}

/// The options of [`ConvBn::new`]: the convolution's, the batch norm's eps and the activation.
#[derive(Debug, Clone, Copy)]
pub struct ConvBnOpts {
    /// The convolution.
    pub conv: ConvOpts,
    /// The batch norm's eps.
    pub eps: f64,
    /// The activation after the batch norm.
    pub act: Act,
}

impl Conv {
    /// Creates `p.weight` `[out, in/groups, k, k]` (and `p.bias` `[out]`).
    pub fn new(p: &nn::Path, cin: i64, cout: i64, o: ConvOpts) -> Result<Self> {
        let kernel = o.kernel;
        let fan_in = cin / o.groups * kernel * kernel;
        let winit = match o.init {
            ConvInit::KaimingFanOut => {
                nn::Init::Randn { mean: 0.0, stdev: (2.0 / (cout * kernel * kernel) as f64).sqrt() }
            }
            ConvInit::Default => uniform_bound(fan_in),
        };
        let weight = p.f_var("weight", &[cout, cin / o.groups, kernel, kernel], winit)?;
        let bias = if o.bias {
            let binit = match o.init {
                ConvInit::KaimingFanOut => nn::Init::Const(0.0),
                ConvInit::Default => uniform_bound(fan_in),
            };
            Some(p.f_var("bias", &[cout], binit)?)
        } else {
            None
        };
        Ok(Conv {
            weight,
            bias,
            stride: o.stride,
            kernel,
            groups: o.groups,
            dilation: o.dilation.max(1),
            padding: o.padding,
        })
    }

    /// `[N, in, H, W]` -> `[N, out, H', W']`. A bfloat16/float16 input runs the convolution in its
    /// kind with the weights cast per call (see [`autocast`]).
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let (w_cast, b_cast) = (autocast(&self.weight, xs), self.bias.as_ref().and_then(|b| autocast(b, xs)));
        let w = w_cast.as_ref().unwrap_or(&self.weight);
        let b = b_cast.as_ref().or(self.bias.as_ref());
        let s = [self.stride, self.stride];
        let d = [self.dilation, self.dilation];
        match self.padding {
            Padding::Symmetric(pad) => xs.conv2d(w, b, s, [pad, pad], d, self.groups),
            Padding::TfSame => {
                // A dilated kernel covers `(k - 1) * d + 1` pixels.
                let k_eff = (self.kernel - 1) * self.dilation + 1;
                let (ph, pw) = same_pad(xs, k_eff, self.stride);
                if ph % 2 == 0 && pw % 2 == 0 {
                    // Even totals are symmetric: let the convolution pad (no copy).
                    xs.conv2d(w, b, s, [ph / 2, pw / 2], d, self.groups)
                } else {
                    // [left, right, top, bottom]: the extra pixel goes right/bottom as in TensorFlow.
                    let padded = xs.constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2]);
                    padded.conv2d(w, b, s, [0, 0], d, self.groups)
                }
            }
        }
    }
}

/// `w` cast to the kind of `xs` when `xs` is bfloat16 or float16 and `w` is not; `None` otherwise.
///
/// This is `torch.autocast`'s rule for convolutions and linear layers, which tch lacks on CPU:
/// float32 master weights take part in a reduced-precision forward through a differentiable cast,
/// so their gradients and optimiser updates stay float32 (mixed-precision training). Batch norms need
/// no cast: libtorch normalises a bfloat16 input with float32 parameters and statistics.
pub fn autocast(w: &Tensor, xs: &Tensor) -> Option<Tensor> {
    let kind = xs.kind();
    (matches!(kind, tch::Kind::BFloat16 | tch::Kind::Half) && w.kind() != kind).then(|| w.to_kind(kind))
}

impl Conv {
    /// Stride on both axes.
    pub fn stride(&self) -> i64 {
        self.stride
    }
    /// Kernel side.
    pub fn kernel(&self) -> i64 {
        self.kernel
    }
    /// Groups.
    pub fn groups(&self) -> i64 {
        self.groups
    }
    /// Dilation on both axes.
    pub fn dilation(&self) -> i64 {
        self.dilation
    }
    /// Padding rule.
    pub fn padding(&self) -> Padding {
        self.padding
    }

    /// A convolution with the same geometry whose weight and bias are set by the caller.
    fn clone_shape(&self) -> Conv {
        Conv {
            weight: self.weight.shallow_clone(),
            bias: None,
            stride: self.stride,
            kernel: self.kernel,
            dilation: self.dilation,
            groups: self.groups,
            padding: self.padding,
        }
    }
}

/// Total TF-'SAME' padding `(rows, cols)` for an input `[.., H, W]`.
fn same_pad(xs: &Tensor, k: i64, s: i64) -> (i64, i64) {
    let size = xs.size();
    let n = size.len();
    let (h, w) = if n >= 2 { (size[n - 2], size[n - 1]) } else { (0, 0) };
    let total = |i: i64| (((i + s - 1) / s - 1) * s + k - i).max(0);
    (total(h), total(w))
}

fn uniform_bound(fan_in: i64) -> nn::Init {
    let b = 1.0 / (fan_in.max(1) as f64).sqrt();
    nn::Init::Uniform { lo: -b, up: b }
}

/// Batch normalisation with torchvision's init (weight 1, bias 0). The caller decides per call
/// whether it normalises with batch statistics (and updates the running ones) or runs in eval mode.
#[derive(Debug)]
pub struct Bn {
    /// `[C]`.
    pub weight: Tensor,
    /// `[C]`.
    pub bias: Tensor,
    /// `[C]`, not trainable.
    pub running_mean: Tensor,
    /// `[C]`, not trainable.
    pub running_var: Tensor,
    eps: f64,
    momentum: f64,
}

impl Bn {
    /// Creates `p.{weight,bias,running_mean,running_var}` for `c` channels.
    pub fn new(p: &nn::Path, c: i64, eps: f64, momentum: f64) -> Result<Self> {
        Ok(Bn {
            weight: p.f_var("weight", &[c], nn::Init::Const(1.0))?,
            bias: p.f_var("bias", &[c], nn::Init::Const(0.0))?,
            running_mean: p.f_zeros_no_train("running_mean", &[c])?,
            running_var: p.f_ones_no_train("running_var", &[c])?,
            eps,
            momentum,
        })
    }

    /// The epsilon added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// `[N, C, ...]` -> same shape. `train` = batch statistics and running-stat update (the global
    /// batch's statistics when [`crate::dist::sync_bn`] is enabled).
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        if train {
            let p = crate::dist::sync_bn::BnParams {
                weight: &self.weight,
                bias: &self.bias,
                running_mean: &self.running_mean,
                running_var: &self.running_var,
                momentum: self.momentum,
                eps: self.eps,
            };
            if let Some(ys) = crate::dist::sync_bn::forward(xs, &p) {
                return ys;
            }
        }
        xs.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            self.momentum,
            self.eps,
            false,
        )
    }
}

/// The activation after a [`ConvBn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// No activation.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x * sigmoid(x)`.
    Silu,
}

impl Act {
    /// Applies the activation. `xs` is taken by value and overwritten in place where that is safe, which
    /// saves an allocation of its size per layer: always when nothing will differentiate through it
    /// (inference), and for ReLU and ReLU6 also under autograd.
    pub fn apply(self, xs: Tensor) -> Tensor {
        if !xs.requires_grad() {
            let mut x = xs;
            let _ = match self {
                Act::None => return x,
                Act::Relu => x.relu_(),
                Act::Relu6 => x.clamp_(0.0, 6.0),
                Act::Silu => x.silu_(),
            };
            return x;
        }
        match self {
            Act::None => xs,
            // In place under autograd too: relu's backward reads its output, not its input, and every
            // caller hands over a fresh tensor (a batch norm's or a residual sum's output) that no
            // backward needs.
            Act::Relu => {
                let mut x = xs;
                let _ = x.relu_();
                x
            }
            // hardtanh(0, 6) in place, as `nn.ReLU6(inplace=True)` (and autocast) runs it: its backward is
            // one fused kernel reading the output, where clamp's takes four unvectorised bf16 passes (a
            // quarter of a Lite0 detector's mixed-bf16 step); like ReLU, the input is a fresh tensor.
            Act::Relu6 => {
                let mut x = xs;
                let _ = x.relu6_();
                x
            }
            Act::Silu => xs.silu(),
        }
    }
}

/// A convolution without bias, a batch norm and an activation.
#[derive(Debug)]
pub struct ConvBn {
    /// The convolution.
    pub conv: Conv,
    /// The batch norm.
    pub bn: Bn,
    act: Act,
    /// The convolution with the batch norm folded in, used in eval mode once [`ConvBn::fold`] ran.
    folded: Option<Conv>,
}

impl ConvBn {
    /// Convolution at `conv_p`, batch norm (eps, momentum 0.1) at `bn_p`, then `o.act`.
    pub fn new(conv_p: &nn::Path, bn_p: &nn::Path, cin: i64, cout: i64, o: ConvBnOpts) -> Result<Self> {
        Ok(ConvBn {
            conv: Conv::new(conv_p, cin, cout, o.conv)?,
            bn: Bn::new(bn_p, cout, o.eps, 0.1)?,
            act: o.act,
            folded: None,
        })
    }

    /// Sets the batch norm's running-stat momentum (PyTorch convention; default 0.1).
    pub fn bn_momentum(mut self, m: f64) -> Self {
        self.bn.momentum = m;
        self
    }

    /// `[N, in, H, W]` -> `[N, out, H', W']`. In eval mode a folded layer runs one biased convolution.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        if let (false, Some(folded)) = (train, &self.folded) {
            return self.act.apply(folded.forward(xs));
        }
        self.act.apply(self.bn.forward(&self.conv.forward(xs), train))
    }

    /// Folds the batch norm's eval-mode affine map into a copy of the convolution:
    /// `W' = W * g / sqrt(v + eps)`, `b' = beta + (b - mean) * g / sqrt(v + eps)`, computed in float64
    /// and stored in the weight's kind and memory layout. Eval-mode forwards then skip the batch norm;
    /// training forwards are unchanged. The variables are not modified. The copy is a snapshot: call
    /// [`ConvBn::unfold`] (or fold again) after the weights change.
    pub fn fold(&mut self) -> Result<()> {
        let (weight, bias) = fold_bn(&self.conv, &self.bn)?;
        let w = &self.conv.weight;
        let weight = if w.is_contiguous() { weight.f_contiguous()? } else { crate::freeze::channels_last(&weight) };
        self.folded = Some(Conv { weight, bias: Some(bias), ..self.conv.clone_shape() });
        Ok(())
    }

    /// The activation after the batch norm.
    pub fn act(&self) -> Act {
        self.act
    }

    /// Drops the folded copy: eval-mode forwards use the convolution and batch norm again.
    pub fn unfold(&mut self) {
        self.folded = None;
    }

    /// Whether [`ConvBn::fold`] is in effect.
    pub fn is_folded(&self) -> bool {
        self.folded.is_some()
    }
}

/// The eval-mode batch norm `bn` folded into `conv`: `(W', b')` with `W' = W * g / sqrt(v + eps)` and
/// `b' = beta + (b - mean) * g / sqrt(v + eps)`, computed in float64 and returned in the weight's
/// and the batch norm's kinds (used by [`ConvBn::fold`] and by the ONNX export).
pub fn fold_bn(conv: &Conv, bn: &Bn) -> Result<(Tensor, Tensor)> {
    tch::no_grad(|| {
        let d = |t: &Tensor| t.f_to_kind(tch::Kind::Double);
        let scale = d(&bn.weight)?.f_div(&d(&bn.running_var)?.f_add_scalar(bn.eps)?.f_sqrt()?)?; // [out]
        let bias0 = match &conv.bias {
            Some(b) => d(b)?,
            None => d(&bn.running_mean)?.f_zeros_like()?,
        };
        let bias =
            bias0.f_sub(&d(&bn.running_mean)?)?.f_mul(&scale)?.f_add(&d(&bn.bias)?)?.f_to_kind(bn.bias.kind())?;
        // [out, in/g, k, k] * [out, 1, 1, 1]; the product keeps the weight's (channels-last) layout.
        let w = &conv.weight;
        let weight = d(w)?.f_mul(&scale.f_view([-1, 1, 1, 1])?)?.f_to_kind(w.kind())?;
        Ok((weight, bias))
    })
}

/// A fully connected layer `y = x W^T + b`.
#[derive(Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Tensor,
}

/// How a [`Linear`] is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinearInit {
    /// PyTorch's default: weight and bias U(-1/sqrt(in), 1/sqrt(in)).
    Default,
    /// Weight N(0, std), bias 0 (VGG uses 0.01).
    Normal(f64),
    /// Weight U(-1/sqrt(out), 1/sqrt(out)), bias 0 (torchvision EfficientNet).
    UniformOut,
}

impl Linear {
    /// Creates `p.weight` `[out, in]` and `p.bias` `[out]`.
    pub fn new(p: &nn::Path, cin: i64, cout: i64, init: LinearInit) -> Result<Self> {
        let (w, b) = match init {
            LinearInit::Default => (uniform_bound(cin), uniform_bound(cin)),
            LinearInit::Normal(std) => (nn::Init::Randn { mean: 0.0, stdev: std }, nn::Init::Const(0.0)),
            LinearInit::UniformOut => (uniform_bound(cout), nn::Init::Const(0.0)),
        };
        Ok(Linear { weight: p.f_var("weight", &[cout, cin], w)?, bias: p.f_var("bias", &[cout], b)? })
    }

    /// `[N, in]` -> `[N, out]`. A bfloat16/float16 input runs in its kind (see [`autocast`]).
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let (w, b) = (autocast(&self.weight, xs), autocast(&self.bias, xs));
        xs.linear(w.as_ref().unwrap_or(&self.weight), Some(b.as_ref().unwrap_or(&self.bias)))
    }
}

/// Stochastic depth ("row" mode) in training: each sample's residual branch is dropped with
/// probability `p` and the kept ones scaled by `1 / (1 - p)`. Identity when not training or `p == 0`.
pub fn stochastic_depth(xs: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return xs.shallow_clone();
    }
    let survival = 1.0 - p;
    let n = xs.size().first().copied().unwrap_or(1);
    // Scaling the [N, 1, 1, 1] mask rather than the output saves a full-size pass (torchvision's order).
    let mask = Tensor::empty([n, 1, 1, 1], (xs.kind(), xs.device())).bernoulli_float_(survival) / survival;
    xs * mask
}

/// `y + shortcut`, in place in `y` when nothing will differentiate through it (inference).
pub fn add_residual(y: Tensor, shortcut: &Tensor) -> Tensor {
    if y.requires_grad() || shortcut.requires_grad() {
        return y + shortcut;
    }
    let mut y = y;
    let _ = y.g_add_(shortcut);
    y
}

/// Global average pooling `[N, C, H, W]` -> `[N, C]`.
pub fn global_avg_pool(xs: &Tensor) -> Tensor {
    xs.mean_dim(&[-2i64, -1][..], false, xs.kind())
}

/// The full variable-name prefix of `p / seg` (e.g. `backbone.layer1`), for [`super::Stages`].
pub fn prefix(p: &nn::Path, seg: &str) -> String {
    let mut parts: Vec<&str> = p.components().collect();
    parts.push(seg);
    parts.join(".")
}

/// The stride-8, 16 and 32 maps (C3, C4, C5) from the outputs of EfficientNet's seven block stages
/// (stages 3, 5 and 7); anything shorter is returned as is.
pub(crate) fn strides_8_16_32(outs: Vec<Tensor>) -> Vec<Tensor> {
    let whole = outs.len() >= 7;
    let mut maps = super::efficientnet::take_c2_to_c5(outs);
    if whole {
        let _c2 = maps.remove(0);
    }
    maps
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn stochastic_depth_drops_whole_samples_and_rescales_the_rest() {
        tch::manual_seed(7);
        let xs = Tensor::rand([64, 3, 4, 5], (Kind::Float, Device::Cpu)) + 0.5;
        assert!(stochastic_depth(&xs, 0.2, false).equal(&xs), "identity in eval");
        assert!(stochastic_depth(&xs, 0.0, true).equal(&xs), "identity at p = 0");
        let ys = stochastic_depth(&xs, 0.2, true);
        // Per sample, the output is either all zeros or the input times 1 / 0.8.
        let ratio = (&ys / &xs).view([64, -1]);
        let (lo, hi) = (ratio.amin(1, false), ratio.amax(1, false));
        let dropped = lo.eq(0.0).logical_and(&hi.eq(0.0));
        let kept = (&lo - 1.25).abs().le(1e-6).logical_and(&(&hi - 1.25).abs().le(1e-6));
        assert_eq!(dropped.logical_or(&kept).all().int64_value(&[]), 1);
        let n_dropped = dropped.sum(Kind::Int64).int64_value(&[]);
        assert!((3..=25).contains(&n_dropped), "{n_dropped} of 64 dropped at p = 0.2");
    }

    /// ReLU6 under autograd is `nn.ReLU6`'s hardtanh(0, 6) in float32 and bf16 alike: gradient 1 strictly
    /// inside, 0 at exactly 0 and 6 (bf16 rounds many activations to 6) and outside.
    #[test]
    fn relu6_has_hardtanhs_gradient_in_every_kind() {
        let vals = [-1.0f32, 0.0, 0.5, 3.0, 5.5, 6.0, 7.0];
        for kind in [Kind::Float, Kind::BFloat16] {
            let x = Tensor::from_slice(&vals).to_kind(kind).set_requires_grad(true);
            let y = Act::Relu6.apply(&x * 1.0); // a fresh tensor, as a batch norm's output
            y.to_kind(Kind::Float).sum(Kind::Float).backward();
            let got: Vec<f32> = Vec::try_from(x.grad().to_kind(Kind::Float)).unwrap_or_default();
            assert_eq!(got, [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0], "{kind:?}");
            let out: Vec<f32> = Vec::try_from(y.to_kind(Kind::Float)).unwrap_or_default();
            assert_eq!(out, [0.0, 0.0, 0.5, 3.0, 5.5, 6.0, 6.0], "{kind:?}");
        }
    }
}
