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

/// Content and style of one coarse-to-fine level, and their targets.
struct Level {
    /// 0 = coarsest.
    index: usize,
    /// `(height, width)`.
    size: (i64, i64),
    /// `[1, 3, H, W]` content as the losses see it.
    content: Tensor,
    targets: Targets,
}

/// Iterations logged so far over all levels, and the progress bar.
struct Log {
    history: Vec<StepLog>,
    evaluations: usize,
    bar: Option<Progress>,
}

impl Log {
    fn push(&mut self, level: &Level, i: usize, base: usize, lossv: LossValues) {
        self.history.push(StepLog { step: base + i, level: level.index, loss: lossv });
        if let Some(b) = &self.bar {
            let (h, wd) = level.size;
            b.inc(1);
            b.set_message(format!(
                "{}x{} total {:.4} content {:.4} style {:.4} tv {:.5}",
                wd, h, lossv.total, lossv.content, lossv.style, lossv.tv
            ));
        }
    }
}

/// `(height, width)` of every level, coarsest first: the final size halved `levels - 1` times (at
/// least 16 pixels a side).
fn level_sizes(final_size: (i64, i64), levels: usize) -> Vec<(i64, i64)> {
    (0..levels)
        .map(|level| {
            let f = 1i64 << (levels - 1 - level);
            ((final_size.0 / f).max(16), (final_size.1 / f).max(16))
        })
        .collect()
}

/// The content and style of `level` at its size, and their targets.
fn prepare_level(
    net: &FeatureNet,
    (c_full, s_full): (&RgbImage, &RgbImage),
    cfg: &StyleConfig,
    (index, levels): (usize, usize),
    size: (i64, i64),
) -> Result<Level> {
    let (h, wd) = size;
    let f = 1i64 << (levels - 1 - index);
    let c_img = tlcv_core::data::transforms::resize(c_full, wd as usize, h as usize)?;
    let s_img = image::resize_longer(s_full, (s_full.width.max(s_full.height) as i64 / f).max(16))?;
    let content = as_input(&c_img, cfg, net.device())?;
    let mut style = as_input(&s_img, cfg, net.device())?;
    if cfg.color.mode == ColorMode::Luminance {
        style = color::match_luminance(&style, &content);
    }
    let content = content.detach();
    Ok(Level { index, size, targets: targets(net, &content, &style)?, content })
}

/// Where the optimisation starts at `level`: the content, or seeded noise, at the level's size.
fn start_image(cfg: &StyleConfig, level: &Level) -> Tensor {
    match cfg.optim.init {
        Init::Content => level.content.shallow_clone(),
        Init::Noise => {
            tch::manual_seed(cfg.optim.seed);
            let (h, wd) = level.size;
            Tensor::rand([1, 3, h, wd], (Kind::Float, level.content.device()))
        }
    }
}

/// One level: starts from `previous` upsampled to the level's size (or from [`start_image`] at the
/// coarsest level) and optimises it for `steps` iterations.
fn run_level(
    net: &FeatureNet,
    (level, steps): (&Level, usize),
    previous: Option<&Tensor>,
    settings: (&StyleConfig, &Weights),
    log: &mut Log,
) -> Result<Tensor> {
    let x0 = match previous {
        Some(prev) => image::resize_tensor(prev, level.size.0, level.size.1),
        None => start_image(settings.0, level),
    };
    optimize_level(net, (level, steps), &x0, settings, log)
}

/// Optimises `x0` for `steps` iterations against the level's targets; returns the image in `[0, 1]`.
fn optimize_level(
    net: &FeatureNet,
    (level, steps): (&Level, usize),
    x0: &Tensor,
    (cfg, w): (&StyleConfig, &Weights),
    log: &mut Log,
) -> Result<Tensor> {
    let o = &cfg.optim;
    let base = log.history.len();
    let out = match o.optimizer {
        OptimizerKind::Lbfgs => {
            let opts = LbfgsOptions { max_iters: steps, history: o.history, lr: o.lr, ..LbfgsOptions::default() };
            let last = RefCell::new(LossValues::default());
            let r = lbfgs::minimize(
                x0,
                &opts,
                |xx| {
                    let (v, g) = evaluate(net, xx, &level.targets, w)?;
                    *last.borrow_mut() = v;
                    Ok((v.total, g))
                },
                |i, _| log.push(level, i, base, *last.borrow()),
            )?;
            log.evaluations += r.evaluations;
            r.x
        }
        OptimizerKind::Adam => {
            let mut opt = Adam::new(x0, o.lr);
            let mut xx = x0.shallow_clone();
            for i in 0..steps {
                let (v, g) = evaluate(net, &xx, &level.targets, w)?;
                log.evaluations += 1;
                xx = opt.step(&xx, &g).clamp(0.0, 1.0);
                log.push(level, i, base, v);
            }
            xx
        }
    };
    Ok(out.clamp(0.0, 1.0).detach())
}

/// Runs the optimisation, coarse to fine; `show_progress` draws a bar with the current losses on
/// stderr.
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
    let start = Instant::now();
    let (c_full, s_full) = prepare(content, style, cfg)?;
    let w = weights(net, cfg);
    let level_sizes = level_sizes((c_full.height as i64, c_full.width as i64), levels);
    let total_steps = o.coarse_steps * (levels - 1) + o.steps;
    let bar = show_progress.then(|| Progress::bar(total_steps as u64, "style"));
    let mut log = Log { history: Vec::with_capacity(total_steps), evaluations: 0, bar };
    // The coarse levels, then the final one (`levels >= 1`), each from the previous level's result.
    let mut x: Option<Tensor> = None;
    for (index, &size) in level_sizes[..levels - 1].iter().enumerate() {
        let level = prepare_level(net, (&c_full, &s_full), cfg, (index, levels), size)?;
        x = Some(run_level(net, (&level, o.coarse_steps), x.as_ref(), (cfg, &w), &mut log)?);
    }
    let level = prepare_level(net, (&c_full, &s_full), cfg, (levels - 1, levels), level_sizes[levels - 1])?;
    let xf = run_level(net, (&level, o.steps), x.as_ref(), (cfg, &w), &mut log)?;
    // Final numbers on the final image and on the starting image, with the same targets.
    let final_loss = losses_of(net, &xf, &level.targets, &w)?;
    let initial_loss = losses_of(net, &start_image(cfg, &level), &level.targets, &w)?;
    let image = if cfg.color.mode == ColorMode::Luminance {
        color::combine_luminance(&xf, &image::to_tensor(&c_full)?.to_device(net.device()))
    } else {
        xf
    };
    let seconds = start.elapsed().as_secs_f64();
    if let Some(b) = &log.bar {
        b.finish(format!(
            "style: {} iterations, {} evaluations, {:.1}s; style loss {:.4} -> {:.4}, content {:.4}",
            log.history.len(),
            log.evaluations,
            seconds,
            initial_loss.style,
            final_loss.style,
            final_loss.content
        ));
    }
    Ok(TransferResult {
        image,
        final_loss,
        initial_loss,
        history: log.history,
        level_sizes,
        evaluations: log.evaluations,
        seconds,
    })
}
