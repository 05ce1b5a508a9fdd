//! The classification network: a core backbone's classifier with its last layer sized to the data,
//! initial weights (ImageNet, none or a file), freezing per the transfer strategy, and an optional MLP head.

use std::path::Path;

use tch::{Device, Kind, Tensor, nn, nn::Module};
use tlcv_core::{
    backbones::{self, Arch, ClassifierNet, Normalization},
    checkpoint::{self, LoadOptions},
    fold,
    freeze::{self, FreezeSummary, Strategy},
    train::{BnMode, PrecisionPlan},
    weights::WeightsSource,
};

use crate::{
    ClassifyError,
    config::{HeadInit, HeadKind, ModelConfig},
};

/// Variable prefix of the MLP head (the linear head reuses the backbone's own classifier names).
pub const MLP_PREFIX: &str = "mlp_head";

/// A classifier ready to train or evaluate.
#[derive(Debug)]
pub struct Model {
    /// All variables (backbone group 0, head group 1).
    pub vs: nn::VarStore,
    /// The backbone with its torchvision-layout classifier.
    pub net: Box<dyn ClassifierNet>,
    /// The MLP head, when `model.head = "mlp"`.
    pub mlp: Option<nn::Sequential>,
    /// Dropout before the final layer.
    pub dropout: f64,
    /// The architecture.
    pub arch: Arch,
    /// What freezing did.
    pub freeze: FreezeSummary,
    /// Whether weights and inputs are laid out channels-last (NHWC strides).
    pub channels_last: bool,
    /// The kind inputs are cast to before the backbone in training: bfloat16 for mixed precision
    /// (see [`Model::set_compute_kind`]).
    input_kind: Kind,
    /// The same in eval mode (validation, evaluation, prediction, the feature cache): bfloat16 for
    /// bf16 inference and while [`Model::frozen_inference`] runs in bf16.
    infer_kind: Kind,
    /// `train.bn = "frozen"`: the backbone runs in inference mode (running batch-norm statistics, no
    /// stochastic depth or inner dropout) also while it trains.
    bn_frozen: bool,
}

impl Model {
    /// Builds the network for `num_classes` on `device` and applies `cfg.weights` and `cfg.strategy`.
    pub fn build(cfg: &ModelConfig, num_classes: i64, device: Device) -> Result<Self, ClassifyError> {
        let arch = cfg.backbone;
        let vs = nn::VarStore::new(device);
        let net = backbones::classifier(vs.root(), arch, num_classes)?;
        let mlp = match cfg.head {
            HeadKind::Linear => None,
            HeadKind::Mlp => {
                let p = vs.root().set_group(1) / MLP_PREFIX;
                let d = net.penultimate_dim();
                Some(
                    nn::seq()
                        .add(nn::linear(&p / "0", d, cfg.hidden, Default::default()))
                        .add_fn(|x| x.relu())
                        .add(nn::linear(&p / "2", cfg.hidden, num_classes, Default::default())),
                )
            }
        };
        let mut model = Self {
            vs,
            net,
            mlp,
            dropout: cfg.dropout,
            arch,
            freeze: FreezeSummary::default(),
            channels_last: false,
            input_kind: Kind::Float,
            infer_kind: Kind::Float,
            bn_frozen: false,
        };
        if cfg.weights.is_none() && cfg.strategy != Strategy::Scratch {
            return Err(ClassifyError::Invalid(format!(
                "strategy `{}` needs pretrained weights, but model.weights = \"none\"",
                cfg.strategy
            )));
        }
        let file = if cfg.strategy == Strategy::Scratch { None } else { cfg.weights.resolve(arch)? };
        let head_loaded = match file {
            Some(file) => model.load_pretrained(&file, num_classes)?,
            None => false,
        };
        if !head_loaded {
            model.init_new_head(cfg.head_init)?;
        }
        let trainable = cfg.strategy.trainable_layers(cfg.trainable_layers, model.net.stages().len());
        model.set_trainable_layers(trainable)?;
        Ok(model)
    }

    /// The network of `cfg` with random weights and nothing frozen, to load a trained run's weights
    /// into.
    pub fn untrained(cfg: &ModelConfig, num_classes: i64, device: Device) -> Result<Self, ClassifyError> {
        let cfg = ModelConfig { weights: WeightsSource::None, strategy: Strategy::Scratch, ..cfg.clone() };
        Self::build(&cfg, num_classes, device)
    }

    /// Number of backbone stages that train (the last ones), as `trainable_layers` counts them.
    pub fn trainable_layers(&self) -> usize {
        self.net.stages().len() - self.freeze.frozen_stages
    }

    /// Freezes all but the last `trainable` backbone stages (batch norm of frozen stages in eval mode);
    /// used at build time and by the unfreezing schedule.
    pub fn set_trainable_layers(&mut self, trainable: usize) -> Result<(), ClassifyError> {
        let stages = self.net.stages().clone();
        let head_prefix = self.net.head_prefix().to_string();
        let heads: Vec<&str> = match self.mlp {
            Some(_) => vec![MLP_PREFIX],
            None => vec![head_prefix.as_str()],
        };
        self.freeze = freeze::apply_freeze(&self.vs, &stages, trainable, &heads)?;
        if self.mlp.is_some() {
            // The backbone's own classifier is bypassed by the MLP head: keep it out of training.
            for (name, t) in self.vs.variables() {
                if backbones::has_prefix(&name, &head_prefix) {
                    let _ = t.set_requires_grad(false);
                }
            }
        }
        self.net.set_frozen_stages(self.freeze.frozen_stages);
        Ok(())
    }

    /// Sets the weight of the layer that produces the logits (the linear head, or the MLP's last layer)
    /// per `init`, and its bias to zero; `Native` keeps the architecture's own initialisation.
    fn init_new_head(&mut self, init: HeadInit) -> Result<(), ClassifyError> {
        let prefix = match self.mlp {
            Some(_) => format!("{MLP_PREFIX}.2"),
            None => self.net.head_prefix().to_string(),
        };
        let vars = self.vs.variables();
        let (Some(weight), Some(bias)) = (vars.get(&format!("{prefix}.weight")), vars.get(&format!("{prefix}.bias")))
        else {
            return Err(ClassifyError::Invalid(format!("the head `{prefix}` has no weight and bias")));
        };
        tch::no_grad(|| -> Result<(), tch::TchError> {
            match init {
                HeadInit::Native => return Ok(()),
                HeadInit::Zero => {
                    let _ = weight.shallow_clone().f_zero_()?;
                }
                HeadInit::Small => {
                    let _ = weight.shallow_clone().f_normal_(0.0, 0.01)?;
                }
            }
            let _ = bias.shallow_clone().f_zero_()?;
            Ok(())
        })?;
        Ok(())
    }

    /// Loads a pretrained checkpoint into everything but the final layer (unless its shape fits);
    /// returns whether the final layer was loaded too.
    fn load_pretrained(&mut self, file: &Path, num_classes: i64) -> Result<bool, ClassifyError> {
        let sd = checkpoint::read_state_dict(file)?;
        let head = self.net.head_prefix().to_string();
        let head_fits = sd.get(&format!("{head}.weight")).is_some_and(|w| w.size().first() == Some(&num_classes));
        let mut ignore = vec![MLP_PREFIX.to_string()];
        if !head_fits {
            ignore.push(head);
        }
        let opts = LoadOptions { strict: true, ignore_prefixes: ignore };
        checkpoint::load_into(&self.vs, &sd, &opts)
            .map_err(|e| ClassifyError::Invalid(format!("{}: {e}", file.display())))?;
        Ok(head_fits && self.mlp.is_none())
    }

    /// Input normalisation the backbone expects.
    pub fn normalization(&self) -> Normalization {
        self.arch.normalization()
    }

    /// `[N, D]` pooled features → `[N, classes]` logits through the active head.
    pub fn head(&self, feats: &Tensor, train: bool) -> Tensor {
        let feats = feats.dropout(self.dropout, train && self.dropout > 0.0);
        match &self.mlp {
            Some(mlp) => mlp.forward(&feats),
            None => self.net.head(&feats),
        }
    }

    /// `[N, 3, H, W]` normalised images → `[N, D]` pooled features (cast to float32). Gradients flow
    /// to the trainable layers whatever [`Model::set_bn_mode`] says; it only decides the batch norms.
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        let kind = if train { self.input_kind } else { self.infer_kind };
        let xs = if kind == xs.kind() { xs.shallow_clone() } else { xs.to_kind(kind) };
        let xs = if self.channels_last { freeze::channels_last(&xs) } else { xs };
        self.net.penultimate(&xs, train && !self.bn_frozen).to_kind(Kind::Float)
    }

    /// Sets `train.bn`: with [`BnMode::Frozen`] the backbone's batch norms keep their running
    /// statistics while its weights train.
    pub fn set_bn_mode(&mut self, mode: BnMode) {
        self.bn_frozen = mode == BnMode::Frozen;
    }

    /// Re-lays the 4-d weights channels-last; inputs follow in [`Model::features`]. Values are unchanged.
    pub fn use_channels_last(&mut self) {
        freeze::to_channels_last(&self.vs);
        self.channels_last = true;
    }

    /// Runs the backbone in `kind` (float32, or bfloat16 for mixed precision): inputs are cast to it,
    /// float32 weights are cast per call (`tlcv_core::backbones::layers::autocast`) so that their
    /// gradients stay float32, and the pooled features come back as float32 for the head. Sets
    /// training and inference alike; [`Model::set_precision`] sets them apart.
    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.input_kind = kind;
        self.infer_kind = kind;
    }

    /// Runs training steps in `plan.training` and everything in eval mode in `plan.inference`.
    pub fn set_precision(&mut self, plan: &PrecisionPlan) {
        self.input_kind = plan.training_kind();
        self.infer_kind = plan.inference_kind();
    }

    /// The kind training steps run in (see [`Model::set_compute_kind`]).
    pub fn input_kind(&self) -> Kind {
        self.input_kind
    }

    /// The kind eval-mode passes run in (see [`Model::set_precision`]).
    pub fn inference_kind(&self) -> Kind {
        self.infer_kind
    }

    /// Runs `f` on the network prepared for frozen inference, then restores it: batch norms folded
    /// into the convolutions ([`tlcv_core::fold`]) and, when `bf16`, every backbone variable cast to
    /// bfloat16 (the head stays float32, as [`Model::features`] hands it float32 features).
    /// Afterwards the variables hold their original float32 tensors again, bit for bit (they are
    /// swapped back, not converted back), and the batch norms are unfolded, also when `f` fails.
    pub fn frozen_inference<T>(
        &mut self,
        bf16: bool,
        f: impl FnOnce(&Model) -> tlcv_core::Result<T>,
    ) -> tlcv_core::Result<T> {
        let mut originals = Vec::new();
        let infer_kind = self.infer_kind;
        if bf16 {
            let heads = [MLP_PREFIX, self.net.head_prefix()];
            tch::no_grad(|| -> tlcv_core::Result<()> {
                for (name, mut var) in self.vs.variables() {
                    if var.is_floating_point() && !heads.iter().any(|h| backbones::has_prefix(&name, h)) {
                        let half = var.f_to_kind(Kind::BFloat16)?;
                        originals.push((var.shallow_clone(), var.f_detach()?));
                        var.set_data(&half);
                    }
                }
                Ok(())
            })?;
            self.infer_kind = Kind::BFloat16;
        }
        let result = fold::fold_classifier(self.net.as_mut()).and_then(|_| f(self));
        fold::unfold_classifier(self.net.as_mut());
        tch::no_grad(|| {
            for (mut var, original) in originals {
                var.set_data(&original);
            }
        });
        self.infer_kind = infer_kind;
        result
    }

    /// `[N, 3, H, W]` → `[N, classes]`.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head(&self.features(xs, train), train)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A randomly initialised ResNet-18 classifier for 5 classes, seeded.
    fn scratch_resnet18(seed: i64) -> Model {
        let cfg = ModelConfig {
            backbone: Arch::Resnet18,
            weights: WeightsSource::None,
            strategy: Strategy::Scratch,
            // A random head: a zero one would make every logit 0.
            head_init: HeadInit::Native,
            ..ModelConfig::default()
        };
        tch::manual_seed(seed);
        Model::build(&cfg, 5, Device::Cpu).unwrap()
    }

    #[test]
    fn frozen_inference_restores_weights_bit_for_bit() {
        let mut model = scratch_resnet18(3);
        let before: Vec<(String, Tensor)> = model.vs.variables().into_iter().map(|(k, v)| (k, v.copy())).collect();
        let xs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let plain = tch::no_grad(|| model.features(&xs, false)); // [2, 512]
        let scale = plain.abs().max().double_value(&[]);
        for bf16 in [false, true] {
            let got = model.frozen_inference(bf16, |m| Ok(tch::no_grad(|| m.features(&xs, false)))).unwrap();
            assert_eq!(got.kind(), Kind::Float);
            let err = (&got - &plain).abs().max().double_value(&[]) / scale;
            // Folding alone is exact to rounding; bf16 keeps about 3 significant digits.
            let tol = if bf16 { 5e-2 } else { 1e-4 };
            assert!(err < tol, "bf16 {bf16}: features differ by {err:e} (relative)");
            let after = model.vs.variables();
            for (k, v) in &before {
                assert_eq!(after[k].kind(), v.kind(), "{k}");
                assert!(after[k].equal(v), "bf16 {bf16}: {k} changed");
            }
        }
        let again = tch::no_grad(|| model.features(&xs, false));
        assert!(again.equal(&plain), "the model is not back to its unfolded float32 forward");
    }

    #[test]
    fn mixed_precision_trains_float32_master_weights_through_a_bf16_backbone() {
        let mut model = scratch_resnet18(4);
        let xs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let ys = Tensor::from_slice(&[1i64, 3]);
        let fp32 = tch::no_grad(|| model.forward(&xs, false)); // [2, 5]
        model.set_compute_kind(Kind::BFloat16);
        let mixed_eval = tch::no_grad(|| model.forward(&xs, false));
        let err = (&mixed_eval - &fp32).abs().max().double_value(&[]) / fp32.abs().max().double_value(&[]);
        // bf16 ran (the result moved) and kept about 3 significant digits.
        assert!(err > 0.0 && err < 5e-2, "bf16 logits differ from float32 ones by {err:e} (relative)");

        let logits = model.forward(&xs, true);
        assert_eq!(logits.kind(), Kind::Float, "the head and the loss run in float32");
        logits.cross_entropy_for_logits(&ys).backward();
        for (name, var) in model.vs.variables() {
            assert_eq!(var.kind(), Kind::Float, "{name}: master weights stay float32");
            if var.requires_grad() {
                let g = var.grad();
                assert!(g.defined() && g.kind() == Kind::Float, "{name}: no float32 gradient");
            }
        }
        let g = model.vs.variables()["conv1.weight"].grad();
        assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "the first convolution got no gradient through bf16");
    }
}
