//! Semantic segmentation metrics from a confusion matrix: per-class IoU, mIoU, pixel accuracy,
//! mean Dice and frequency-weighted IoU (MMSegmentation conventions: a class absent from both gt
//! and prediction has NaN IoU/Dice and is left out of the means).

use std::path::{Path, PathBuf};

use opencv::core::{CV_8U, Mat};
use opencv::imgcodecs::{IMREAD_UNCHANGED, imread};
use opencv::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::SegmentError;

/// Pixel counts `[gt][pred]` over every non-ignored pixel seen so far.
#[derive(Debug, Clone, PartialEq)]
pub struct SegConfusion {
    num_classes: usize,
    ignore_index: Option<i64>,
    counts: Vec<u64>,
}

/// Means and per-class IoU of a [`SegConfusion`]; NaN (JSON `null`) where undefined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegSummary {
    /// Mean IoU over classes present in gt or prediction.
    pub miou: f64,
    /// Correct pixels / non-ignored pixels.
    pub pixel_acc: f64,
    /// Mean Dice over classes present in gt or prediction.
    pub mean_dice: f64,
    /// IoU weighted by each class's share of gt pixels.
    pub fw_iou: f64,
    /// IoU per class, `None` for classes absent from both gt and prediction.
    pub per_class_iou: Vec<Option<f64>>,
}

impl SegConfusion {
    /// An empty matrix; pixels whose gt equals `ignore_index` are skipped.
    pub fn new(num_classes: usize, ignore_index: Option<i64>) -> Result<Self, SegmentError> {
        if num_classes == 0 {
            return Err(SegmentError::Invalid("num_classes must be > 0".into()));
        }
        Ok(Self { num_classes, ignore_index, counts: vec![0; num_classes * num_classes] })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Raw counts, row-major `[gt][pred]`.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Adds a gt/prediction pair of equally long index slices (`u8`, `i64`, ...).
    pub fn update<T: Copy + Into<i64>>(&mut self, gt: &[T], pred: &[T]) -> Result<(), SegmentError> {
        if gt.len() != pred.len() {
            return Err(SegmentError::Invalid(format!("gt has {} pixels, prediction {}", gt.len(), pred.len())));
        }
        let nc = self.num_classes as i64;
        for (&g, &p) in gt.iter().zip(pred) {
            let (g, p) = (g.into(), p.into());
            if Some(g) == self.ignore_index {
                continue;
            }
            if !(0..nc).contains(&g) || !(0..nc).contains(&p) {
                return Err(SegmentError::Invalid(format!(
                    "label out of range: gt {g}, prediction {p} (num_classes {nc}, ignore_index {:?})",
                    self.ignore_index
                )));
            }
            self.counts[(g * nc + p) as usize] += 1;
        }
        Ok(())
    }

    /// Adds integer index tensors of equal shape (any device), counted with `bincount` there.
    pub fn update_tensor(&mut self, gt: &Tensor, pred: &Tensor) -> Result<(), SegmentError> {
        if gt.size() != pred.size() {
            return Err(SegmentError::Invalid(format!(
                "gt shape {:?} != prediction shape {:?}",
                gt.size(),
                pred.size()
            )));
        }
        let nc = self.num_classes as i64;
        let g = gt.to_kind(Kind::Int64).reshape([-1]);
        let p = pred.to_kind(Kind::Int64).reshape([-1]);
        let (g, p) = match self.ignore_index {
            Some(ig) => {
                let keep = g.ne(ig);
                (g.masked_select(&keep), p.masked_select(&keep))
            }
            None => (g, p),
        };
        if g.numel() == 0 {
            return Ok(());
        }
        let lo = g.min().int64_value(&[]).min(p.min().int64_value(&[]));
        let hi = g.max().int64_value(&[]).max(p.max().int64_value(&[]));
        if lo < 0 || hi >= nc {
            return Err(SegmentError::Invalid(format!("label out of range [{lo}, {hi}] (num_classes {nc})")));
        }
        let bins = (g * nc + p).bincount(None::<Tensor>, nc * nc).to_device(tch::Device::Cpu);
        let bins = Vec::<i64>::try_from(bins)?;
        for (c, b) in self.counts.iter_mut().zip(bins) {
            *c += b as u64;
        }
        Ok(())
    }

    /// Replaces the counts with `counts` (row-major `[gt][pred]`, e.g. summed over ranks).
    pub fn set_counts(&mut self, counts: impl IntoIterator<Item = u64>) -> Result<(), SegmentError> {
        let counts: Vec<u64> = counts.into_iter().collect();
        if counts.len() != self.counts.len() {
            return Err(SegmentError::Invalid(format!(
                "{} counts for a {n}x{n} confusion matrix",
                counts.len(),
                n = self.num_classes
            )));
        }
        self.counts = counts;
        Ok(())
    }

    /// Adds another matrix of the same shape (e.g. from another worker).
    pub fn merge(&mut self, other: &Self) -> Result<(), SegmentError> {
        if other.num_classes != self.num_classes {
            return Err(SegmentError::Invalid("merging confusion matrices of different sizes".into()));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }

    /// Per class `(intersection, gt pixels, predicted pixels)`.
    fn areas(&self) -> Vec<(f64, f64, f64)> {
        let nc = self.num_classes;
        (0..nc)
            .map(|c| {
                let inter = self.counts[c * nc + c] as f64;
                let label: u64 = self.counts[c * nc..(c + 1) * nc].iter().sum();
                let pred: u64 = (0..nc).map(|g| self.counts[g * nc + c]).sum();
                (inter, label as f64, pred as f64)
            })
            .collect()
    }

    /// IoU per class; NaN when the class is in neither gt nor prediction.
    pub fn iou_per_class(&self) -> Vec<f64> {
        self.areas().iter().map(|&(i, l, p)| if l + p - i > 0.0 { i / (l + p - i) } else { f64::NAN }).collect()
    }

    /// Dice per class, `2I / (|gt| + |pred|)`; NaN when the class is in neither.
    pub fn dice_per_class(&self) -> Vec<f64> {
        self.areas().iter().map(|&(i, l, p)| if l + p > 0.0 { 2.0 * i / (l + p) } else { f64::NAN }).collect()
    }

    /// Mean IoU over non-NaN classes (NaN if there are none).
    pub fn miou(&self) -> f64 {
        nanmean(&self.iou_per_class())
    }

    /// Mean Dice over non-NaN classes.
    pub fn mean_dice(&self) -> f64 {
        nanmean(&self.dice_per_class())
    }

    /// Correct / counted pixels (NaN when nothing was counted).
    pub fn pixel_accuracy(&self) -> f64 {
        let a = self.areas();
        let total: f64 = a.iter().map(|x| x.1).sum();
        if total > 0.0 { a.iter().map(|x| x.0).sum::<f64>() / total } else { f64::NAN }
    }

    /// Frequency-weighted IoU: `sum_c (|gt_c| / total) * IoU_c` over classes with a defined IoU.
    pub fn fw_iou(&self) -> f64 {
        let a = self.areas();
        let total: f64 = a.iter().map(|x| x.1).sum();
        if total == 0.0 {
            return f64::NAN;
        }
        a.iter().zip(self.iou_per_class()).filter(|(_, iou)| !iou.is_nan()).map(|(x, iou)| x.1 / total * iou).sum()
    }

    /// All metrics at once.
    pub fn summary(&self) -> SegSummary {
        SegSummary {
            miou: self.miou(),
            pixel_acc: self.pixel_accuracy(),
            mean_dice: self.mean_dice(),
            fw_iou: self.fw_iou(),
            per_class_iou: self.iou_per_class().into_iter().map(|v| (!v.is_nan()).then_some(v)).collect(),
        }
    }
}

fn nanmean(v: &[f64]) -> f64 {
    let (s, n) = v.iter().filter(|x| !x.is_nan()).fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

/// Reads a single-channel 8-bit index mask as `(rows, cols, pixels)`.
pub fn read_mask(path: &Path) -> Result<(i32, i32, Vec<u8>), SegmentError> {
    let bad = |message: String| SegmentError::Mask { path: path.to_path_buf(), message };
    if !path.is_file() {
        return Err(bad("file not found".into()));
    }
    let name = path.to_str().ok_or_else(|| bad("path is not valid UTF-8".into()))?;
    let m: Mat = imread(name, IMREAD_UNCHANGED)?;
    if m.empty() {
        return Err(bad("cannot decode image".into()));
    }
    if m.channels() != 1 {
        return Err(bad(format!("expected a single-channel index mask, found {} channels", m.channels())));
    }
    if m.depth() != CV_8U {
        return Err(bad("expected an 8-bit mask".into()));
    }
    let m = if m.is_continuous() { m } else { m.try_clone()? };
    Ok((m.rows(), m.cols(), m.data_bytes()?.to_vec()))
}

/// Evaluates every `*.png` mask in `gt` against the prediction of the same file name in `pred`.
/// Errors name the file for a missing prediction, a size mismatch or a multi-channel mask.
pub fn evaluate_dirs(gt: &Path, pred: &Path, num_classes: usize, ignore_index: u8) -> Result<SegSummary, SegmentError> {
    let io = |path: &Path| {
        let path: PathBuf = path.to_path_buf();
        move |source| SegmentError::Io { path, source }
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(gt).map_err(io(gt))? {
        let p = e.map_err(io(gt))?.path();
        if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")) {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(SegmentError::Mask { path: gt.to_path_buf(), message: "no .png masks in this folder".into() });
    }
    let ignore = Some(i64::from(ignore_index));
    let parts: Vec<SegConfusion> = files
        .par_iter()
        .map(|g| {
            let name = g.file_name().unwrap_or_default();
            let p = pred.join(name);
            if !p.is_file() {
                return Err(SegmentError::Mask { path: p, message: "prediction missing".into() });
            }
            let (gr, gc, gpx) = read_mask(g)?;
            let (pr, pc, ppx) = read_mask(&p)?;
            if (gr, gc) != (pr, pc) {
                return Err(SegmentError::Mask {
                    path: p,
                    message: format!("size {pc}x{pr} differs from ground truth {gc}x{gr}"),
                });
            }
            let mut cm = SegConfusion::new(num_classes, ignore)?;
            cm.update(&gpx, &ppx).map_err(|e| SegmentError::Mask { path: p.clone(), message: e.to_string() })?;
            Ok(cm)
        })
        .collect::<Result<_, _>>()?;
    let mut total = SegConfusion::new(num_classes, ignore)?;
    for p in &parts {
        total.merge(p)?;
    }
    Ok(total.summary())
}
