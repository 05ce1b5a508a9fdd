//! The perceptual losses of Gatys et al., made independent of image size and feature scale so that
//! one set of weights suits every backbone:
//!
//! - Gram matrix `G = F Fᵀ / (C·H·W)` for features `F` reshaped to `[C, H·W]`.
//! - Content loss of one layer: `mean((F - P)²) / mean(P²)` (relative squared error) per image,
//!   averaged over the batch, so that a batch's loss is the mean of its images' (data-parallel ranks
//!   then average to the whole batch's loss).
//! - Style loss of one layer: `sum((G - A)²) / sum(A²)` (relative squared Frobenius error).
//! - Total variation: `mean((x[i+1,j] - x[i,j])²) + mean((x[i,j+1] - x[i,j])²)` on the image.
//!
//! Batched features share one target: a target of batch 1 broadcasts over the batch.

use tch::{Kind, Tensor};

/// `[N, C, H, W]` -> `[N, C, C]`: `F Fᵀ / (C·H·W)`, in fp32 whatever the input precision.
pub fn gram(features: &Tensor) -> Tensor {
    let (n, c, h, w) = features.size4().unwrap_or((1, 1, 1, 1));
    let f = features.to_kind(Kind::Float).reshape([n, c, h * w]); // [N, C, HW]
    f.matmul(&f.transpose(1, 2)) / ((c * h * w) as f64) // [N, C, C]
}

/// Guards the denominators of relative errors against all-zero targets.
const EPS: f64 = 1e-12;

/// Relative content error of one layer, a scalar: `mean((F - P)²) / mean(P²)` of each image
/// (`[N, C, H, W]` features, target `[1 or N, C, H, W]`), averaged over the images.
pub fn content_loss(features: &Tensor, target: &Tensor) -> Tensor {
    let f = features.to_kind(Kind::Float);
    let p = target.to_kind(Kind::Float);
    let per_image = |t: Tensor| t.flatten(1, -1).mean_dim(1, false, Kind::Float); // [N] or [1]
    (per_image((&f - &p).square()) / (per_image(p.square()) + EPS)).mean(Kind::Float)
}

/// Relative style error of one layer, a scalar averaged over the batch: `sum((G - A)²) / sum(A²)`
/// with `G = gram(features)` `[N, C, C]` and the target Gram `A` `[1 or N, C, C]`.
pub fn style_loss(features: &Tensor, target_gram: &Tensor) -> Tensor {
    let g = gram(features); // [N, C, C]
    let n = g.size().first().copied().unwrap_or(1).max(1) as f64;
    let num = (&g - target_gram).square().sum(Kind::Float) / n;
    num / (target_gram.square().sum(Kind::Float) / target_gram.size()[0].max(1) as f64 + EPS)
}

/// Total variation of `[N, 3, H, W]` images, a scalar (see the module docs).
pub fn tv_loss(image: &Tensor) -> Tensor {
    let (_, _, h, w) = image.size4().unwrap_or((1, 3, 1, 1));
    let dy = image.narrow(2, 1, h - 1) - image.narrow(2, 0, h - 1); // [N, 3, H-1, W]
    let dx = image.narrow(3, 1, w - 1) - image.narrow(3, 0, w - 1); // [N, 3, H, W-1]
    dy.square().mean(Kind::Float) + dx.square().mean(Kind::Float)
}

/// Weighted sum of the per-layer losses and its parts, all scalars.
#[derive(Debug)]
pub struct LossTerms {
    /// `content_weight * content + style_weight * style + tv_weight * tv`.
    pub total: Tensor,
    /// Mean content loss over the content layers (unweighted).
    pub content: Tensor,
    /// Style loss summed over the style layers with the layer weights (unweighted by `style_weight`).
    pub style: Tensor,
    /// Total variation (unweighted).
    pub tv: Tensor,
}

/// Targets of one optimisation: content features and style Grams, computed once.
#[derive(Debug)]
pub struct Targets {
    /// One per content layer, `[1, C, H, W]`.
    pub content: Vec<Tensor>,
    /// One per style layer, `[1, C, C]`.
    pub grams: Vec<Tensor>,
}

/// Loss weights: `content`, `style`, `tv` and one weight per style layer (summing to 1 by convention).
#[derive(Debug, Clone)]
pub struct Weights {
    /// Content weight.
    pub content: f64,
    /// Style weight.
    pub style: f64,
    /// Total-variation weight.
    pub tv: f64,
    /// Per style layer.
    pub style_layers: Vec<f64>,
}

/// Combines the features of the current image with the targets.
/// `content_feats` and `style_feats` are in the layer order of `targets`.
pub fn total_loss(
    image: &Tensor,
    content_feats: &[Tensor],
    style_feats: &[Tensor],
    targets: &Targets,
    w: &Weights,
) -> LossTerms {
    let zero = || Tensor::zeros([], (Kind::Float, image.device()));
    let mut content = zero();
    for (f, t) in content_feats.iter().zip(&targets.content) {
        content += content_loss(f, t);
    }
    if !content_feats.is_empty() {
        content /= content_feats.len() as f64;
    }
    let mut style = zero();
    for ((f, a), lw) in style_feats.iter().zip(&targets.grams).zip(&w.style_layers) {
        style += style_loss(f, a) * *lw;
    }
    let tv = tv_loss(image);
    let total = &content * w.content + &style * w.style + &tv * w.tv;
    LossTerms { total, content, style, tv }
}
