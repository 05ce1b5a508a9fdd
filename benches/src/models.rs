//! A backbone's training step (forward, cross-entropy, backward, SGD with momentum 0.9 and weight decay
//! 1e-4 through the project's own optimiser) and inference batch (eval mode, no gradients), on random
//! `[B, 3, S, S]` inputs and 1000 classes, in one of several numeric modes.

use anyhow::{Result, bail};
use tch::{Device, Kind, Reduction, Tensor, nn};
use tlcv_core::{
    backbones::{self, Arch, ClassifierNet},
    fold,
    freeze::{channels_last, to_channels_last},
    train::{Optimizer, OptimizerKind, OptimizerParams, Param, trainable_params},
};

/// Classes of the benchmark head (ImageNet's).
pub const CLASSES: i64 = 1000;

/// Numeric mode of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// float32, NCHW.
    Fp32,
    /// float32 with channels-last weights and inputs.
    ChannelsLast,
    /// Channels-last with batch norms folded into the convolutions (inference only).
    ChannelsLastFolded,
    /// bfloat16. Training is mixed precision as under `torch.autocast`: a bf16 input, float32 variables
    /// cast per layer (`tlcv_core::backbones::layers::autocast`), float32 gradients and optimiser state.
    /// Inference casts every variable to bf16 once, as classify's frozen backbone does.
    Bf16,
    /// [`Mode::Bf16`] with channels-last variables and input.
    ChannelsLastBf16,
    /// [`Mode::ChannelsLastBf16`] with batch norms folded into the (bf16) convolutions (inference only).
    ChannelsLastBf16Folded,
}

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 6] = [
        Mode::Fp32,
        Mode::ChannelsLast,
        Mode::ChannelsLastFolded,
        Mode::Bf16,
        Mode::ChannelsLastBf16,
        Mode::ChannelsLastBf16Folded,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fp32 => "fp32",
            Mode::ChannelsLast => "cl",
            Mode::ChannelsLastFolded => "cl+fold",
            Mode::Bf16 => "bf16",
            Mode::ChannelsLastBf16 => "cl+bf16",
            Mode::ChannelsLastBf16Folded => "cl+bf16+fold",
        }
    }

    /// Parses [`Mode::name`].
    pub fn parse(s: &str) -> Result<Mode> {
        match Mode::ALL.into_iter().find(|m| m.name() == s) {
            Some(m) => Ok(m),
            None => {
                let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                bail!("unknown mode {s:?} ({})", names.join(", "))
            }
        }
    }

    /// Variables and input stored channels-last.
    pub fn channels_last(self) -> bool {
        matches!(
            self,
            Mode::ChannelsLast | Mode::ChannelsLastFolded | Mode::ChannelsLastBf16 | Mode::ChannelsLastBf16Folded
        )
    }

    /// The convolutions run in bf16 (mixed for training, bf16 variables for inference).
    pub fn bf16(self) -> bool {
        matches!(self, Mode::Bf16 | Mode::ChannelsLastBf16 | Mode::ChannelsLastBf16Folded)
    }

    /// Batch norms folded into the convolutions (inference only).
    pub fn folded(self) -> bool {
        matches!(self, Mode::ChannelsLastFolded | Mode::ChannelsLastBf16Folded)
    }
}

/// A model with its inputs, ready to step.
pub struct ModelBench {
    vs: nn::VarStore,
    net: Box<dyn ClassifierNet>,
    xs: Tensor,
    ys: Tensor,
    params: Vec<Param>,
    opt: Optimizer,
}

impl std::fmt::Debug for ModelBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelBench").field("input", &self.xs.size()).finish()
    }
}

impl ModelBench {
    /// `arch` with random weights, a batch of `batch` random `size`x`size` images, in `mode`, set up for
    /// training steps when `train` (else for inference).
    pub fn new(arch: Arch, batch: i64, size: i64, mode: Mode, train: bool) -> Result<Self> {
        tch::manual_seed(0);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let mut net = backbones::classifier(vs.root(), arch, CLASSES)?;
        let mut xs = Tensor::randn([batch, 3, size, size], (Kind::Float, Device::Cpu));
        let ys = Tensor::randint(CLASSES, [batch], (Kind::Int64, Device::Cpu));
        // bf16 first, so that the channels-last copies and the folded weights are made in bf16.
        if mode.bf16() {
            if !train {
                vs.bfloat16();
            }
            xs = xs.to_kind(Kind::BFloat16);
        }
        if mode.channels_last() {
            to_channels_last(&vs);
            xs = channels_last(&xs);
        }
        if mode.folded() {
            if train {
                bail!("folded batch norms are for inference only");
            }
            fold::fold_classifier(net.as_mut())?;
        }
        let params = trainable_params(&vs);
        let opt = Optimizer::new(OptimizerParams {
            kind: OptimizerKind::Sgd,
            weight_decay: 1e-4,
            momentum: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            nesterov: false,
        });
        Ok(Self { vs, net, xs, ys, params, opt })
    }

    /// One training step; returns the loss.
    pub fn train_step(&mut self) -> f64 {
        let loss = self.forward_backward();
        self.update();
        loss
    }

    /// The first half of a training step: fresh gradients of the batch's loss; returns the loss.
    pub fn forward_backward(&mut self) -> f64 {
        Optimizer::zero_grad(&self.params);
        let logits = self.net.forward_t(&self.xs, true); // [B, 1000]
        let loss = logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(&self.ys, None, Reduction::Mean, -100, 0.0);
        loss.backward();
        loss.double_value(&[])
    }

    /// The gradients of the trainable variables (after [`ModelBench::forward_backward`]).
    pub fn grads(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.tensor.grad()).filter(|g| g.defined()).collect()
    }

    /// The second half of a training step: SGD on the current gradients.
    pub fn update(&mut self) {
        self.opt.step(&self.params, &vec![0.01; self.params.len()]);
    }

    /// One inference batch; returns the logits `[B, 1000]` as float32.
    pub fn infer(&self) -> Tensor {
        tch::no_grad(|| self.net.forward_t(&self.xs, false)).to_kind(Kind::Float)
    }

    /// The batch size.
    pub fn batch(&self) -> i64 {
        self.xs.size()[0]
    }

    /// The variables.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
}
