//! Segmentation losses on logits `[N, C, H, W]` and targets `[N, H, W]` (int64 class indices, with
//! an ignore index): cross-entropy (optionally class-weighted), soft Dice, and their weighted sum.

use tch::{Kind, Reduction, Tensor};

/// Pixel-wise cross-entropy averaged over non-ignored pixels; with `weights` (`[C]`) it is PyTorch's
/// weighted mean `sum_i w[y_i] * nll_i / sum_i w[y_i]`. Returns 0 when every pixel is ignored.
pub fn cross_entropy(logits: &Tensor, target: &Tensor, weights: Option<&Tensor>, ignore_index: i64) -> Tensor {
    let valid = target.ne(ignore_index).sum(Kind::Int64).int64_value(&[]);
    if valid == 0 {
        return (logits.sum(Kind::Float) * 0.0).to_kind(Kind::Float);
    }
    logits.cross_entropy_loss::<&Tensor>(target, weights, Reduction::Mean, ignore_index, 0.0)
}

/// Soft Dice loss: `1 - mean_c (2 * sum(p_c * g_c) + smooth) / (sum(p_c) + sum(g_c) + smooth)` with
/// `p` the softmax probabilities and `g` the one-hot target, sums over the batch's non-ignored pixels.
/// A class absent from both prediction and target scores 1 (no penalty) thanks to `smooth`.
pub fn dice(logits: &Tensor, target: &Tensor, ignore_index: i64, smooth: f64) -> Tensor {
    let c = logits.size()[1];
    let probs = logits.softmax(1, Kind::Float); // [N, C, H, W]
    let valid = target.ne(ignore_index); // [N, H, W]
    let safe = target.where_scalarother(&valid, 0); // ignored pixels -> class 0, masked out below
    let onehot = safe.one_hot(c).permute([0, 3, 1, 2]).to_kind(Kind::Float); // [N, C, H, W]
    let m = valid.unsqueeze(1).to_kind(Kind::Float); // [N, 1, H, W]
    let (p, g) = (&probs * &m, onehot * &m);
    let dims: &[i64] = &[0, 2, 3];
    let inter = (&p * &g).sum_dim_intlist(dims, false, Kind::Float); // [C]
    let denom = p.sum_dim_intlist(dims, false, Kind::Float) + g.sum_dim_intlist(dims, false, Kind::Float);
    let score = (inter * 2.0 + smooth) / (denom + smooth);
    1.0 - score.mean(Kind::Float)
}

/// The configured combination `ce_weight * CE + dice_weight * Dice` and its terms.
#[derive(Debug)]
pub struct SegLoss {
    /// Weight of the cross-entropy term (0 = off).
    pub ce_weight: f64,
    /// Weight of the Dice term (0 = off).
    pub dice_weight: f64,
    /// Per-class cross-entropy weights.
    pub class_weights: Option<Tensor>,
    /// Target value that is not scored.
    pub ignore_index: i64,
    /// Dice smoothing.
    pub smooth: f64,
}

impl SegLoss {
    /// The total loss and its named terms (`loss` = the total, then `ce`, `dice`).
    pub fn compute(&self, logits: &Tensor, target: &Tensor) -> (Tensor, Vec<(String, f64)>) {
        let mut terms = Vec::new();
        let mut total = Tensor::zeros([], (Kind::Float, logits.device()));
        if self.ce_weight > 0.0 {
            let w = self.class_weights.as_ref().map(|w| w.to_device(logits.device()));
            let ce = cross_entropy(logits, target, w.as_ref(), self.ignore_index);
            terms.push(("ce".to_string(), ce.double_value(&[])));
            total += ce * self.ce_weight;
        }
        if self.dice_weight > 0.0 {
            let d = dice(logits, target, self.ignore_index, self.smooth);
            terms.push(("dice".to_string(), d.double_value(&[])));
            total += d * self.dice_weight;
        }
        terms.insert(0, ("loss".to_string(), total.double_value(&[])));
        (total, terms)
    }
}
