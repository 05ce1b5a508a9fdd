//! IoU-based assignment of priors (anchors, proposals, default boxes) to ground truth, shared by SSD
//! and Faster R-CNN: torchvision's `Matcher`, the SSD rule, the balanced positive/negative sampler and
//! SSD's hard-negative mining. (YOLO's task-aligned assigner is [`crate::yolo::assigner`].)

use tch::{Device, Kind, Tensor};

use crate::error::DetectError;

/// Match value of a prior whose best IoU is below the low threshold (a negative).
pub const BELOW_LOW_THRESHOLD: i64 = -1;
/// Match value of a prior whose best IoU lies in `[low, high)` (ignored).
pub const BETWEEN_THRESHOLDS: i64 = -2;

fn check_quality(q: &Tensor) -> Result<(i64, i64), DetectError> {
    match q.size().as_slice() {
        [m, n] if *m > 0 && *n > 0 => Ok((*m, *n)),
        s => Err(DetectError::Invalid(format!(
            "matcher: need a non-empty [ground truths, priors] quality matrix, got {s:?}"
        ))),
    }
}

/// torchvision's `Matcher`: each prior takes its best ground truth when that IoU is `>= high`,
/// [`BETWEEN_THRESHOLDS`] when it is in `[low, high)` and [`BELOW_LOW_THRESHOLD`] below `low`.
/// With `allow_low_quality_matches`, every prior that ties for the best IoU of some ground truth
/// gets back its best ground truth even when that IoU is low.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matcher {
    /// IoU from which a prior is positive.
    pub high: f64,
    /// IoU below which a prior is negative.
    pub low: f64,
    /// Rescue the best priors of every ground truth.
    pub allow_low_quality_matches: bool,
}

impl Matcher {
    /// A matcher; `low` must not exceed `high`.
    pub fn new(high: f64, low: f64, allow_low_quality_matches: bool) -> Result<Self, DetectError> {
        if low > high {
            return Err(DetectError::Invalid(format!("matcher: low threshold {low} above high {high}")));
        }
        Ok(Self { high, low, allow_low_quality_matches })
    }

    /// `quality` `[M, N]` (IoU of ground truth m with prior n) -> matches `[N]` (i64): a ground-truth
    /// index, [`BELOW_LOW_THRESHOLD`] or [`BETWEEN_THRESHOLDS`].
    pub fn assign(&self, quality: &Tensor) -> Result<Tensor, DetectError> {
        check_quality(quality)?;
        let (vals, best) = quality.max_dim(0, false); // [N], [N]
        let below = vals.lt(self.low);
        let between = vals.ge(self.low).logical_and(&vals.lt(self.high));
        let mut m = best.masked_fill(&below, BELOW_LOW_THRESHOLD).masked_fill(&between, BETWEEN_THRESHOLDS);
        if self.allow_low_quality_matches {
            let (best_per_gt, _) = quality.max_dim(1, true); // [M, 1]
            // Priors that reach some ground truth's best IoU, ties included.
            let rescued = quality.eq_tensor(&best_per_gt).any_dim(0, false); // [N]
            m = best.where_self(&rescued, &m);
        }
        Ok(m)
    }
}

/// SSD matching: threshold matching at `threshold` (no ignore band), then every ground truth claims
/// its best prior (when several pick the same prior, one of them keeps it). Returns matches `[N]`
/// (i64; [`BELOW_LOW_THRESHOLD`] for negatives). Every ground truth ends with at least one prior
/// unless two share the same best prior.
pub fn ssd_match(quality: &Tensor, threshold: f64) -> Result<Tensor, DetectError> {
    let (m, _) = check_quality(quality)?;
    let matches = Matcher::new(threshold, threshold, false)?.assign(quality)?;
    let (_, best_prior) = quality.max_dim(1, false); // [M]
    let gt = Tensor::arange(m, (Kind::Int64, quality.device()));
    Ok(matches.index_put(&[Some(best_prior)], &gt, false))
}

/// Samples a fixed-size, balanced set of training priors (torchvision's
/// `BalancedPositiveNegativeSampler`): up to `batch_size_per_image * positive_fraction` random
/// positives, the rest of the batch filled with random negatives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalancedPositiveNegativeSampler {
    /// Priors sampled per image.
    pub batch_size_per_image: i64,
    /// Largest share of positives.
    pub positive_fraction: f64,
}

impl BalancedPositiveNegativeSampler {
    /// `labels` `[N]` (`>= 1` positive, `0` negative, `< 0` ignored) -> `(positive, negative)` bool
    /// masks `[N]` of the sampled priors.
    pub fn sample(&self, labels: &Tensor) -> Result<(Tensor, Tensor), DetectError> {
        if labels.dim() != 1 {
            return Err(DetectError::Invalid(format!("sampler: labels must be [N], got {:?}", labels.size())));
        }
        let dev = labels.device();
        let pos = labels.ge(1).nonzero().view([-1]);
        let neg = labels.eq(0).nonzero().view([-1]);
        let want_pos = (self.batch_size_per_image as f64 * self.positive_fraction) as i64;
        let n_pos = want_pos.min(pos.size()[0]);
        let n_neg = (self.batch_size_per_image - n_pos).min(neg.size()[0]).max(0);
        let pick = |idx: &Tensor, n: i64| {
            let perm = Tensor::randperm(idx.size()[0], (Kind::Int64, dev)).narrow(0, 0, n);
            let mask = labels.zeros_like().to_kind(Kind::Bool);
            mask.index_fill(0, &idx.index_select(0, &perm), 1)
        };
        Ok((pick(&pos, n_pos), pick(&neg, n_neg)))
    }
}

/// SSD hard-negative mining: per image (row), the `neg_pos_ratio * #positives` non-positive priors
/// with the highest classification loss. `cls_loss` `[B, P]`, `positive` `[B, P]` bool ->
/// negatives `[B, P]` bool (disjoint from `positive`).
pub fn hard_negative_mask(cls_loss: &Tensor, positive: &Tensor, neg_pos_ratio: i64) -> Result<Tensor, DetectError> {
    if cls_loss.dim() != 2 || cls_loss.size() != positive.size() {
        return Err(DetectError::Invalid(format!(
            "hard negatives: loss {:?} and positives {:?} must both be [B, P]",
            cls_loss.size(),
            positive.size()
        )));
    }
    let num_neg = positive.sum_dim_intlist([1].as_slice(), true, Kind::Int64) * neg_pos_ratio; // [B, 1]
    let loss = cls_loss.detach().masked_fill(positive, f64::NEG_INFINITY);
    let (_, order) = loss.sort(1, true);
    let rank = order.argsort(1, false); // rank of each prior by descending loss
    Ok(rank.lt_tensor(&num_neg).logical_and(&positive.logical_not()))
}

/// The device-independent CPU copy of a small i64 tensor (for tests and diagnostics).
pub fn to_vec_i64(t: &Tensor) -> Result<Vec<i64>, DetectError> {
    Ok(Vec::<i64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Int64).contiguous().view([-1]))?)
}
