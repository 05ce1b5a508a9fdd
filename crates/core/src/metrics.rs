//! Classification metrics from a confusion matrix: top-1/top-k accuracy, per-class and macro
//! precision, recall and F1 (a class never predicted has precision 0, as scikit-learn's `zero_division=0`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::{Error, Result};

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// TP / (TP + FP); 0 when the class is never predicted.
    pub precision: f64,
    /// TP / (TP + FN); 0 when the class has no samples.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
    /// Number of samples whose true class this is.
    pub support: u64,
}

/// The metrics `classify train/eval --json` print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    /// Top-1 accuracy in [0, 1].
    pub top1: f64,
    /// Top-5 accuracy (top-k with k = min(5, classes)).
    pub top5: f64,
    /// Unweighted mean of per-class precision.
    pub precision_macro: f64,
    /// Unweighted mean of per-class recall.
    pub recall_macro: f64,
    /// Unweighted mean of per-class F1.
    pub f1_macro: f64,
    /// Scores per class name.
    pub per_class: BTreeMap<String, ClassScores>,
    /// Confusion matrix, rows = true class, columns = predicted class.
    pub confusion: Vec<Vec<u64>>,
    /// Number of evaluated samples.
    pub samples: u64,
}

/// Accumulates predictions batch by batch.
#[derive(Debug, Clone)]
pub struct ClassificationAccumulator {
    num_classes: usize,
    top_k: usize,
    confusion: Vec<Vec<u64>>,
    top_k_hits: u64,
    total: u64,
}

impl ClassificationAccumulator {
    /// An empty accumulator for `num_classes` classes; top-k uses k = min(5, num_classes).
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            top_k: num_classes.clamp(1, 5),
            confusion: vec![vec![0; num_classes]; num_classes],
            top_k_hits: 0,
            total: 0,
        }
    }

    /// Adds one sample: `scores` has one value per class (logits or probabilities), `label` the true class.
    pub fn add(&mut self, scores: &[f32], label: usize) -> Result<()> {
        if scores.len() != self.num_classes || label >= self.num_classes {
            return Err(Error::Invalid(format!(
                "metrics: got {} scores and label {label} for {} classes",
                scores.len(),
                self.num_classes
            )));
        }
        let predicted = argmax(scores);
        self.confusion[label][predicted] += 1;
        // Rank of the true class = number of classes scored strictly higher (ties count for the label).
        let higher = scores.iter().filter(|&&s| s > scores[label]).count();
        if higher < self.top_k {
            self.top_k_hits += 1;
        }
        self.total += 1;
        Ok(())
    }

    /// Adds a batch: `logits` `[N, C]`, `labels` `[N]` (any integer kind).
    pub fn add_batch(&mut self, logits: &Tensor, labels: &Tensor) -> Result<()> {
        let logits = logits.to_kind(tch::Kind::Float).to_device(tch::Device::Cpu).contiguous();
        let labels = labels.to_kind(tch::Kind::Int64).to_device(tch::Device::Cpu);
        let rows: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&logits)?;
        let labels: Vec<i64> = Vec::<i64>::try_from(&labels)?;
        for (row, label) in rows.iter().zip(labels) {
            self.add(row, usize::try_from(label).map_err(|_| Error::Invalid(format!("negative label {label}")))?)?;
        }
        Ok(())
    }

    /// The counts so far (the confusion matrix row by row, then the top-k hits and the total), for
    /// summing over processes.
    pub fn counts(&self) -> Vec<u64> {
        self.confusion.iter().flatten().copied().chain([self.top_k_hits, self.total]).collect()
    }

    /// Replaces the counts with `counts`, laid out as [`Self::counts`] gives them.
    pub fn set_counts(&mut self, counts: &[u64]) -> Result<()> {
        let n = self.num_classes;
        if counts.len() != n * n + 2 {
            return Err(Error::Invalid(format!(
                "metrics: {} counts for {n} classes (expected {})",
                counts.len(),
                n * n + 2
            )));
        }
        for (row, chunk) in self.confusion.iter_mut().zip(counts.chunks(n.max(1))) {
            row.copy_from_slice(chunk);
        }
        (self.top_k_hits, self.total) = (counts[n * n], counts[n * n + 1]);
        Ok(())
    }

    /// The metrics so far, with `class_names` (one per class) as keys of `per_class`.
    pub fn finish(&self, class_names: &[String]) -> ClassificationMetrics {
        let n = self.num_classes;
        let mut per_class = BTreeMap::new();
        let (mut p_sum, mut r_sum, mut f_sum) = (0.0, 0.0, 0.0);
        let mut correct = 0;
        for c in 0..n {
            let tp = self.confusion[c][c];
            let predicted: u64 = (0..n).map(|r| self.confusion[r][c]).sum();
            let support: u64 = self.confusion[c].iter().sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
            correct += tp;
            p_sum += precision;
            r_sum += recall;
            f_sum += f1;
            let name = class_names.get(c).cloned().unwrap_or_else(|| c.to_string());
            per_class.insert(name, ClassScores { precision, recall, f1, support });
        }
        let classes = n.max(1) as f64;
        ClassificationMetrics {
            top1: ratio(correct, self.total),
            top5: ratio(self.top_k_hits, self.total),
            precision_macro: p_sum / classes,
            recall_macro: r_sum / classes,
            f1_macro: f_sum / classes,
            per_class,
            confusion: self.confusion.clone(),
            samples: self.total,
        }
    }
}

/// Index of the largest value (the first one on ties), as `torch.argmax`.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    /// A fixed 3-class case computed by hand.
    #[test]
    fn hand_computed_confusion() -> Result<()> {
        let mut acc = ClassificationAccumulator::new(3);
        // (true, predicted): 0->0 x2, 0->1 x1, 1->1 x3, 2->1 x1, 2->2 x1
        let cases = [(0, 0), (0, 0), (0, 1), (1, 1), (1, 1), (1, 1), (2, 1), (2, 2)];
        for (label, pred) in cases {
            let mut scores = vec![0.0f32; 3];
            scores[pred] = 1.0;
            acc.add(&scores, label)?;
        }
        let m = acc.finish(&names(3));
        assert_eq!(m.confusion, vec![vec![2, 1, 0], vec![0, 3, 0], vec![0, 1, 1]]);
        assert!((m.top1 - 6.0 / 8.0).abs() < 1e-12);
        // precision: c0 2/2, c1 3/5, c2 1/1; recall: c0 2/3, c1 3/3, c2 1/2
        let c1 = m.per_class["c1"];
        assert!((c1.precision - 0.6).abs() < 1e-12 && (c1.recall - 1.0).abs() < 1e-12);
        assert!((c1.f1 - 0.75).abs() < 1e-12);
        let p_macro = (1.0 + 0.6 + 1.0) / 3.0;
        let r_macro = (2.0 / 3.0 + 1.0 + 0.5) / 3.0;
        let f_c0 = 2.0 * (2.0 / 3.0) / (1.0 + 2.0 / 3.0);
        let f_c2 = 2.0 * 0.5 / 1.5;
        assert!((m.precision_macro - p_macro).abs() < 1e-12);
        assert!((m.recall_macro - r_macro).abs() < 1e-12);
        assert!((m.f1_macro - (f_c0 + 0.75 + f_c2) / 3.0).abs() < 1e-12);
        assert_eq!(m.per_class["c2"].support, 2);
        Ok(())
    }

    #[test]
    fn top_k_counts_rank() -> Result<()> {
        let mut acc = ClassificationAccumulator::new(7);
        // true class 6 ranked 5th -> top-5 hit, top-1 miss; true class 0 ranked 6th -> miss.
        acc.add(&[0.7, 0.6, 0.5, 0.4, 0.1, 0.0, 0.3], 6)?;
        acc.add(&[0.2, 0.9, 0.8, 0.7, 0.6, 0.5, 0.0], 0)?;
        let m = acc.finish(&names(7));
        assert_eq!(m.top1, 0.0);
        assert!((m.top5 - 0.5).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn never_predicted_class_has_zero_precision() -> Result<()> {
        let mut acc = ClassificationAccumulator::new(2);
        acc.add(&[1.0, 0.0], 1)?;
        let m = acc.finish(&names(2));
        assert_eq!(m.per_class["c1"].precision, 0.0);
        assert_eq!(m.per_class["c1"].f1, 0.0);
        assert!(acc.add(&[1.0], 0).is_err());
        Ok(())
    }
}
