//! Gatys et al. (2016), "Image Style Transfer Using Convolutional Neural Networks": optimise the
//! pixels so that the deep features match the content image's and the Gram matrices match the style
//! image's. Coarse to fine: each level doubles the size of the previous one and starts from its
//! upsampled result, so most iterations run on small images. Targets are computed once per level.

use std::cell::RefCell;
use std::time::Instant;

use serde::Serialize;
use tch::{Kind, Tensor};
use tlcv_core::data::RgbImage;
use tlcv_core::progress::Progress;

use crate::color;
use crate::config::{ColorMode, Init, OptimizerKind, StyleConfig};
use crate::features::FeatureNet;
use crate::lbfgs::{self, LbfgsOptions};
use crate::loss::{self, Targets, Weights};
use crate::{Result, StyleError, adam::Adam, image};

/// Loss values of one evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LossValues {
    /// Weighted total.
    pub total: f64,
    /// Content loss (unweighted).
    pub content: f64,
    /// Style loss (unweighted).
    pub style: f64,
    /// Total variation (unweighted).
    pub tv: f64,
}

/// One logged iteration.
#[derive(Debug, Clone, Serialize)]
pub struct StepLog {
    /// Iteration counted over all levels.
    pub step: usize,
    /// Coarse-to-fine level (0 = coarsest).
    pub level: usize,
    /// Losses after the iteration.
    pub loss: LossValues,
}

/// The outcome of [`stylize`].
#[derive(Debug)]
pub struct TransferResult {
    /// `[1, 3, H, W]` in `[0, 1]`.
    pub image: Tensor,
    /// Losses of the final image at the final size (before colour recombination).
    pub final_loss: LossValues,
    /// Losses of the starting image (content or noise) at the final size, with the same targets.
    pub initial_loss: LossValues,
    /// Every iteration.
    pub history: Vec<StepLog>,
    /// `(height, width)` of each level.
    pub level_sizes: Vec<(i64, i64)>,
    /// Loss evaluations (forward + backward passes).
    pub evaluations: usize,
    /// Wall time of the optimisation in seconds.
    pub seconds: f64,
}

/// Content and style images of one level as tensors, and their targets.
struct Level {
    content: Tensor,
    targets: Targets,
}

fn weights(net: &FeatureNet, cfg: &StyleConfig) -> Weights {
    Weights {
        content: cfg.loss.content_weight,
        style: cfg.loss.style_weight,
        tv: cfg.loss.tv_weight,
        style_layers: net.style_weights.clone(),
    }
}

/// Builds the targets: content features of `content`, Grams of `style`.
pub fn targets(net: &FeatureNet, content: &Tensor, style: &Tensor) -> Result<Targets> {
    tch::no_grad(|| {
        let (c, _) = net.extract(content)?;
        let (_, s) = net.extract(style)?;
        Ok(Targets { content: c, grams: s.iter().map(loss::gram).collect() })
    })
}

/// Loss and gradient of `x` (`[1, 3, H, W]`).
pub fn evaluate(net: &FeatureNet, x: &Tensor, t: &Targets, w: &Weights) -> Result<(LossValues, Tensor)> {
    let x = x.detach().set_requires_grad(true);
    let (cf, sf) = net.extract(&x)?;
    let terms = loss::total_loss(&x, &cf, &sf, t, w);
    let total = terms.total.double_value(&[]);
    if !total.is_finite() {
        return Err(StyleError::NonFinite(total));
    }
    terms.total.backward();
    let g = x.grad().detach();
    let v = LossValues {
        total,
        content: terms.content.double_value(&[]),
        style: terms.style.double_value(&[]),
        tv: terms.tv.double_value(&[]),
    };
    Ok((v, g))
}

/// Loss values of `x` without a gradient.
pub fn losses_of(net: &FeatureNet, x: &Tensor, t: &Targets, w: &Weights) -> Result<LossValues> {
    tch::no_grad(|| {
        let (cf, sf) = net.extract(x)?;
        let terms = loss::total_loss(x, &cf, &sf, t, w);
        Ok(LossValues {
            total: terms.total.double_value(&[]),
            content: terms.content.double_value(&[]),
            style: terms.style.double_value(&[]),
            tv: terms.tv.double_value(&[]),
        })
    })
}

/// Prepares the content and style tensors per the colour mode: `(content, style, original content)`
/// at the final size.
fn prepare(content: &RgbImage, style: &RgbImage, cfg: &StyleConfig) -> Result<(RgbImage, RgbImage)> {
    let c = image::resize_longer(content, cfg.data.size)?;
    let style_size = if cfg.data.style_size > 0 { cfg.data.style_size } else { cfg.data.size };
    let mut s = image::resize_longer(style, style_size)?;
    if cfg.color.mode == ColorMode::Histogram {
        s = color::match_histograms(&s, &c)?;
    }
    Ok((c, s))
}

/// Converts an `RgbImage` into the tensor the losses see (luminance only in `luminance` mode).
fn as_input(img: &RgbImage, cfg: &StyleConfig, device: tch::Device) -> Result<Tensor> {
    let t = image::to_tensor(img)?.to_device(device);
    Ok(if cfg.color.mode == ColorMode::Luminance { color::luminance(&t) } else { t })
}

/// Runs the optimisation; `show_progress` draws a bar with the current losses on stderr.
pub fn stylize(
    net: &FeatureNet,
    content: &RgbImage,
    style: &RgbImage,
    cfg: &StyleConfig,
    show_progress: bool,
) -> Result<TransferResult> {
    let o = &cfg.optim;
    if cfg.data.size < 16 {
        return Err(StyleError::Invalid(format!("data.size = {} is too small (at least 16)", cfg.data.size)));
    }
    let levels = o.levels.max(1);
    let dev = net.device();
    let start = Instant::now();
    let (c_full, s_full) = prepare(content, style, cfg)?;
    let w = weights(net, cfg);
    let (fh, fw) = (c_full.height as i64, c_full.width as i64);
    let mut level_sizes = Vec::with_capacity(levels);
    let total_steps = o.coarse_steps * (levels - 1) + o.steps;
    let bar = show_progress.then(|| Progress::bar(total_steps as u64, "style"));
    let mut history: Vec<StepLog> = Vec::with_capacity(total_steps);
    let mut evaluations = 0usize;
    let mut x: Option<Tensor> = None;
    let mut luminance_ref: Option<Tensor> = None;
    for level in 0..levels {
        let f = 1i64 << (levels - 1 - level);
        let (h, wd) = ((fh / f).max(16), (fw / f).max(16));
        level_sizes.push((h, wd));
        let c_img = tlcv_core::data::transforms::resize(&c_full, wd as usize, h as usize)?;
        let s_img = image::resize_longer(&s_full, (s_full.width.max(s_full.height) as i64 / f).max(16))?;
        let mut content_t = as_input(&c_img, cfg, dev)?;
        let mut style_t = as_input(&s_img, cfg, dev)?;
        if cfg.color.mode == ColorMode::Luminance {
            style_t = color::match_luminance(&style_t, &content_t);
            luminance_ref = Some(content_t.shallow_clone());
        }
        content_t = content_t.detach();
        let lv = Level { targets: targets(net, &content_t, &style_t)?, content: content_t };
        let x0 = match (&x, o.init) {
            (Some(prev), _) => image::resize_tensor(prev, h, wd),
            (None, Init::Content) => lv.content.shallow_clone(),
            (None, Init::Noise) => {
                tch::manual_seed(o.seed);
                Tensor::rand([1, 3, h, wd], (Kind::Float, dev))
            }
        };
        let steps = if level + 1 == levels { o.steps } else { o.coarse_steps };
        let last = RefCell::new(LossValues::default());
        let base = history.len();
        let mut log = |i: usize, lossv: LossValues| {
            history.push(StepLog { step: base + i, level, loss: lossv });
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(format!(
                    "{}x{} total {:.4} content {:.4} style {:.4} tv {:.5}",
                    wd, h, lossv.total, lossv.content, lossv.style, lossv.tv
                ));
            }
        };
        let out = match o.optimizer {
            OptimizerKind::Lbfgs => {
                let opts = LbfgsOptions { max_iters: steps, history: o.history, lr: o.lr, ..LbfgsOptions::default() };
                let r = lbfgs::minimize(
                    &x0,
                    &opts,
                    |xx| {
                        let (v, g) = evaluate(net, xx, &lv.targets, &w)?;
                        *last.borrow_mut() = v;
                        Ok((v.total, g))
                    },
                    |i, _| log(i, *last.borrow()),
                )?;
                evaluations += r.evaluations;
                r.x
            }
            OptimizerKind::Adam => {
                let mut opt = Adam::new(&x0, o.lr);
                let mut xx = x0.shallow_clone();
                for i in 0..steps {
                    let (v, g) = evaluate(net, &xx, &lv.targets, &w)?;
                    evaluations += 1;
                    xx = opt.step(&xx, &g).clamp(0.0, 1.0);
                    log(i, v);
                }
                xx
            }
        };
        x = Some(out.clamp(0.0, 1.0).detach());
        if level + 1 == levels {
            // Final numbers on the final image and on the starting image, with the same targets.
            let xf = x.as_ref().map(Tensor::shallow_clone).unwrap_or_else(|| lv.content.shallow_clone());
            let final_loss = losses_of(net, &xf, &lv.targets, &w)?;
            let init_full = match o.init {
                Init::Content => lv.content.shallow_clone(),
                Init::Noise => {
                    tch::manual_seed(o.seed);
                    Tensor::rand([1, 3, h, wd], (Kind::Float, dev))
                }
            };
            let initial_loss = losses_of(net, &init_full, &lv.targets, &w)?;
            let image = match (&luminance_ref, cfg.color.mode) {
                (Some(_), ColorMode::Luminance) => {
                    let orig = image::to_tensor(&c_full)?.to_device(dev);
                    color::combine_luminance(&xf, &orig)
                }
                _ => xf,
            };
            let seconds = start.elapsed().as_secs_f64();
            if let Some(b) = &bar {
                b.finish(format!(
                    "style: {} iterations, {} evaluations, {:.1}s; style loss {:.4} -> {:.4}, content {:.4}",
                    history.len(),
                    evaluations,
                    seconds,
                    initial_loss.style,
                    final_loss.style,
                    final_loss.content
                ));
            }
            return Ok(TransferResult { image, final_loss, initial_loss, history, level_sizes, evaluations, seconds });
        }
    }
    Err(StyleError::Invalid("no optimisation level ran".into()))
}
