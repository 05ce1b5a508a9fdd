//! Running a detector over images (letterboxed, batched, decoded in parallel) and scoring the
//! detections with the COCO evaluation of [`crate::eval`]: the 12 COCO numbers, precision, recall
//! and F1 at the best-F1 confidence, PR curves and the confusion matrix.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tlcv_core::backbones::Normalization;
use tlcv_core::data::{self, DecodeOptions, Loader, RgbImage};
use tlcv_core::run::SkipLog;

use crate::augment::{LetterboxInfo, letterbox};
use crate::data::DetImage;
use crate::error::{DetectError, Result};
use crate::eval::curves::{ConfusionMatrix, F1Report, PrCurves, best_f1, pr_curves};
use crate::eval::{
    CocoAnnotation, CocoCategory, CocoDataset, CocoDetection, CocoImage, CocoParams, CocoSummary, evaluate,
};
use crate::export::DetectModel;
use crate::model::Detector;
use crate::postprocess::{Detection, PostprocessConfig, to_original};

/// A letterboxed image waiting for the network.
struct Prepared {
    image: RgbImage,
    info: LetterboxInfo,
    width: f64,
    height: f64,
}

/// Detections for each image file (original pixels); an unreadable image gives its error message.
pub fn detect_files(
    model: &dyn DetectModel,
    paths: &[PathBuf],
    pp: &PostprocessConfig,
    batch: usize,
    max_pixels: usize,
) -> Vec<std::result::Result<Vec<Detection>, String>> {
    let size = model.img_size() as usize;
    // An ONNX export takes pixels in 0..1 and normalises in its graph.
    let norm = model.input_normalization().unwrap_or(Normalization { mean: [0.0; 3], std: [1.0; 3] });
    let shared = Arc::new(paths.to_vec());
    let loader = Loader::new(paths.len(), batch.max(1));
    let opts = DecodeOptions { max_pixels, target_size: None };
    let files = Arc::clone(&shared);
    let iter = loader.iter_epoch(
        0,
        move |i, _rng| {
            let img = data::decode_file(&files[i], &opts)?;
            let (s, info) = letterbox(&img, &[], size).map_err(|e| data::DataError::Other(e.to_string()))?;
            Ok(Prepared { image: s.image, info, width: img.width as f64, height: img.height as f64 })
        },
        move |items: Vec<Prepared>| {
            let imgs: Vec<RgbImage> = items.iter().map(|p| p.image.clone()).collect();
            let t = data::to_tensor(&imgs, norm.mean, norm.std);
            (t, items.into_iter().map(|p| (p.info, p.width, p.height)).collect::<Vec<_>>())
        },
    );
    let mut out: Vec<std::result::Result<Vec<Detection>, String>> = vec![Err("not processed".into()); paths.len()];
    let device = model.device();
    for b in iter {
        for s in &b.skipped {
            out[s.index] = Err(s.reason.clone());
        }
        let Some((tensor, infos)) = b.data else { continue };
        let result = tensor
            .map_err(|e| e.to_string())
            .and_then(|t| model.detect(&t.to_device(device), pp).map_err(|e| e.to_string()));
        match result {
            Ok(dets) => {
                for ((idx, d), (info, w, h)) in b.indices.iter().zip(dets).zip(infos) {
                    out[*idx] = Ok(to_original(&d, &info, w, h));
                }
            }
            Err(e) => {
                for idx in &b.indices {
                    out[*idx] = Err(e.clone());
                }
            }
        }
    }
    out
}

/// COCO ground truth of images (image ids 1.., category ids class + 1).
pub fn gt_dataset(images: &[DetImage], names: &[String]) -> CocoDataset {
    let mut ds = CocoDataset {
        categories: names.iter().enumerate().map(|(i, n)| CocoCategory { id: i as i64 + 1, name: n.clone() }).collect(),
        ..Default::default()
    };
    for (i, im) in images.iter().enumerate() {
        ds.images.push(CocoImage {
            id: i as i64 + 1,
            width: Some(im.width),
            height: Some(im.height),
            file_name: im.path.file_name().map(|f| f.to_string_lossy().into_owned()),
        });
        for o in &im.objects {
            let [x1, y1, x2, y2] = o.bbox;
            ds.annotations.push(CocoAnnotation {
                id: ds.annotations.len() as i64 + 1,
                image_id: i as i64 + 1,
                category_id: o.class as i64 + 1,
                bbox: [x1, y1, x2 - x1, y2 - y1],
                area: (x2 - x1) * (y2 - y1),
                iscrowd: 0,
            });
        }
    }
    ds
}

/// Detections of image `i` as COCO results.
pub fn coco_dets(per_image: &[Vec<Detection>]) -> Vec<CocoDetection> {
    per_image
        .iter()
        .enumerate()
        .flat_map(|(i, dets)| {
            dets.iter().map(move |d| CocoDetection {
                image_id: i as i64 + 1,
                category_id: d.class as i64 + 1,
                bbox: [d.bbox[0], d.bbox[1], d.bbox[2] - d.bbox[0], d.bbox[3] - d.bbox[1]],
                score: d.score,
            })
        })
        .collect()
}

/// Everything an evaluation produces.
#[derive(Debug, Clone, Serialize)]
pub struct EvalOutput {
    /// The 12 COCO numbers.
    pub summary: CocoSummary,
    /// Precision/recall/F1 at the best-F1 confidence (None without ground truth).
    pub f1: Option<F1Report>,
    /// IoU-0.5 PR curves per class.
    pub pr: PrCurves,
    /// Detection confusion matrix at confidence 0.25, IoU 0.45.
    pub confusion: ConfusionMatrix,
    /// The ground truth evaluated.
    #[serde(skip)]
    pub gt: CocoDataset,
    /// The detections evaluated.
    #[serde(skip)]
    pub dets: Vec<CocoDetection>,
    /// Detections per image (original pixels).
    #[serde(skip)]
    pub per_image: Vec<Vec<Detection>>,
    /// Images that could not be read, with reasons.
    #[serde(skip)]
    pub skipped: SkipLog,
}

/// Detects on `images` and evaluates against their boxes.
pub fn evaluate_images(
    model: &Detector,
    images: &[DetImage],
    names: &[String],
    pp: &PostprocessConfig,
    batch: usize,
) -> Result<EvalOutput> {
    let paths: Vec<PathBuf> = images.iter().map(|i| i.path.clone()).collect();
    score_results(images, names, detect_files(model, &paths, pp, batch, EVAL_MAX_PIXELS))
}

/// Largest decoded image that evaluation accepts (pixels).
pub const EVAL_MAX_PIXELS: usize = 64_000_000;

/// Scores [`detect_files`]' `results` (one per image of `images`, in order).
pub fn score_results(
    images: &[DetImage],
    names: &[String],
    results: Vec<std::result::Result<Vec<Detection>, String>>,
) -> Result<EvalOutput> {
    // An image that cannot be read is left out of the scores, ground truth included: counting its
    // boxes as missed would blame the model for a file problem. `per_image` stays aligned with `images`.
    let skipped = SkipLog::default();
    let mut readable = Vec::with_capacity(images.len());
    let mut readable_dets = Vec::with_capacity(images.len());
    let mut per_image = Vec::with_capacity(images.len());
    for (img, r) in images.iter().zip(results) {
        match r {
            Ok(d) => {
                readable.push(img.clone());
                readable_dets.push(d.clone());
                per_image.push(d);
            }
            Err(e) => {
                skipped.record(&img.path, &e);
                per_image.push(Vec::new());
            }
        }
    }
    if readable.is_empty() && !images.is_empty() {
        return Err(DetectError::Invalid(format!(
            "none of the {} images to evaluate could be read (first: {})",
            images.len(),
            skipped.reasons().first().map_or("", String::as_str)
        )));
    }
    let mut out = score(&readable, names, readable_dets, skipped)?;
    out.per_image = per_image;
    Ok(out)
}

/// Evaluates given detections (original pixels, one list per image) against `images`.
pub fn score(
    images: &[DetImage],
    names: &[String],
    per_image: Vec<Vec<Detection>>,
    skipped: SkipLog,
) -> Result<EvalOutput> {
    if images.is_empty() {
        return Err(DetectError::Invalid("no images to evaluate".into()));
    }
    let gt = gt_dataset(images, names);
    let dets = coco_dets(&per_image);
    let ev = evaluate(&gt, &dets, &CocoParams::default())?;
    let f1 = best_f1(&ev, 101).ok();
    let pr = pr_curves(&ev);
    let confusion = ConfusionMatrix::from_coco(&gt, &dets, 0.45, 0.25)?;
    Ok(EvalOutput { summary: ev.summary(), f1, pr, confusion, gt, dets, per_image, skipped })
}

/// The flat metrics `detect eval --json` prints: the COCO keys plus precision, recall, F1 and the
/// confidence they are taken at.
pub fn flat_metrics(e: &EvalOutput) -> std::collections::BTreeMap<String, f64> {
    let mut m = std::collections::BTreeMap::new();
    if let Ok(serde_json::Value::Object(o)) = serde_json::to_value(e.summary) {
        for (k, v) in o {
            if let Some(x) = v.as_f64() {
                m.insert(k, x);
            }
        }
    }
    let (p, r, f, c) = e.f1.as_ref().map_or((0.0, 0.0, 0.0, 0.0), |f| (f.precision, f.recall, f.f1, f.confidence));
    m.insert("precision".into(), p);
    m.insert("recall".into(), r);
    m.insert("f1".into(), f);
    m.insert("f1_confidence".into(), c);
    m
}
