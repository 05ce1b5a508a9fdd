//! The detection report: loss curves per term, validation mAP over epochs, PR and
//! F1 curves, the confusion matrix, a grid of validation images with ground truth and predictions
//! side by side, and `report.html`.

use std::path::Path;

use tlcv_core::{
    data::{self, DecodeOptions, transforms},
    report::{self, Figure, Report, Series, Tile},
    run::{
        RunDir,
        report::{Curve, RunRecord, epoch_plots, finish},
    },
};

use crate::boxes::iou_xyxy;
use crate::config::DetectConfig;
use crate::data::{DetImage, Object};
use crate::error::Result;
use crate::evaluate::EvalOutput;
use crate::pipeline::ClassRow;
use crate::postprocess::Detection;
use crate::predict::draw;

/// Everything the report shows.
#[derive(Debug)]
pub struct ReportInput<'a> {
    /// Configuration, class names, history, skipped inputs and facts.
    pub record: RunRecord<'a, DetectConfig>,
    /// Final evaluation.
    pub eval: &'a EvalOutput,
    /// Per-class rows.
    pub per_class: &'a [ClassRow],
    /// The validation images (same order as `eval.per_image`).
    pub val: &'a [DetImage],
}

/// Draws the plots into `run/plots/` and writes `run/report.html`.
pub fn write(run: &RunDir, input: &ReportInput<'_>) -> Result<()> {
    // Every term the family logs (YOLO: box, cls, dfl; SSD: regression, classification; Faster
    // R-CNN: the four RPN and box-head losses), with the total last.
    let mut keys: Vec<&String> = input
        .record
        .history
        .first()
        .map(|r| r.train.keys().filter(|k| k.as_str() != "loss").collect())
        .unwrap_or_default();
    keys.sort();
    let terms: Vec<Curve> = keys.iter().map(|k| k.as_str()).chain(["loss"]).map(|k| Curve::train(k, k)).collect();
    let scores: Vec<Curve> = ["map50", "map", "precision", "recall"].map(|k| Curve::val(k, k)).to_vec();
    let curves = epoch_plots(
        run,
        input.record.history,
        &[("loss.png", "Training loss per term", &terms), ("val_metrics.png", "Validation metrics", &scores)],
    )?;
    let e = input.eval;
    let pr = run.plot("pr_curves.png");
    let pr_series: Vec<Series> =
        e.pr.cat_ids
            .iter()
            .zip(&e.pr.precision)
            .filter(|(_, p)| p.iter().all(|&v| v >= 0.0))
            .map(|(&cat, p)| {
                let name = input.record.classes.get((cat - 1) as usize).cloned().unwrap_or_else(|| cat.to_string());
                let ap = p.iter().sum::<f64>() / p.len().max(1) as f64;
                Series::new(format!("{name} {ap:.3}"), e.pr.recall.iter().copied().zip(p.iter().copied()).collect())
            })
            .collect();
    report::pr_curves(&pr, &format!("Precision-recall at IoU 0.5 (mAP@.5 {:.3})", e.summary.map50), &pr_series)?;
    let mut figures = vec![Figure::new("PR curves", pr)];
    if let Some(f1) = &e.f1 {
        let path = run.plot("f1_curve.png");
        let n = f1.f1_curve.len().max(2) - 1;
        let pts = f1.f1_curve.iter().enumerate().map(|(i, &v)| (i as f64 / n as f64, v)).collect();
        report::line_plot(
            &path,
            &format!("Mean F1 (best {:.3} at {:.2})", f1.f1, f1.confidence),
            "confidence",
            &[Series::new("F1", pts)],
        )?;
        figures.push(Figure::new("F1 curve", path));
    }
    // Ours is [pred][true] with background last; the plot wants [true][pred].
    let k = e.confusion.matrix.len();
    let cm: Vec<Vec<u64>> = (0..k).map(|t| (0..k).map(|p| e.confusion.matrix[p][t]).collect()).collect();
    let mut labels: Vec<String> = input.record.classes.to_vec();
    labels.push("background".into());
    let cm_path = run.plot("confusion_matrix.png");
    report::confusion_matrix(&cm_path, "Confusion matrix (rows: true, columns: predicted)", &cm, &labels, false)?;
    figures.push(Figure::new("Confusion matrix", cm_path));
    let grid = run.plot("val_predictions.png");
    write_grid(&grid, input)?;

    let s = &e.summary;
    let mut facts = input.record.facts.clone();
    facts.extend([
        ("mAP@.5".to_string(), format!("{:.4}", s.map50)),
        ("mAP@[.5:.95]".to_string(), format!("{:.4}", s.map)),
        ("mAP@.75".to_string(), format!("{:.4}", s.map75)),
        (
            "mAP small / medium / large".to_string(),
            format!("{:.3} / {:.3} / {:.3}", s.map_small, s.map_medium, s.map_large),
        ),
        ("AR@100".to_string(), format!("{:.4}", s.mar100)),
    ]);
    if let Some(f1) = &e.f1 {
        facts.push((
            "precision / recall / F1".into(),
            format!("{:.3} / {:.3} / {:.3} at confidence {:.2}", f1.precision, f1.recall, f1.f1, f1.confidence),
        ));
    }
    let rows: Vec<Vec<String>> = input
        .per_class
        .iter()
        .map(|r| {
            vec![
                r.class.clone(),
                r.instances.to_string(),
                format!("{:.3}", r.ap50),
                format!("{:.3}", r.precision),
                format!("{:.3}", r.recall),
            ]
        })
        .collect();
    let headers = ["class", "instances", "AP@.5", "precision", "recall"].map(String::from).to_vec();
    let page = Report::new(format!("detect: {}", run.root().display()))
        .subtitle(format!(
            "{} · {} · {} · {}",
            input.record.cfg.model.family,
            input.record.cfg.network(),
            input.record.cfg.model.strategy,
            input.record.cfg.data.path
        ))
        .key_values(facts)
        .heading("Per class (validation)")
        .metrics_table(headers, rows)
        .heading("Training")
        .images(curves)
        .heading("Evaluation")
        .images(figures)
        .heading("Validation images: ground truth (left) and predictions (right)")
        .image("Ground truth / predictions", grid);
    finish(run, page, "Label problems and skipped images", &input.record)?;
    Ok(())
}

/// Whether every gt is found (same class, IoU >= 0.5) and nothing else is predicted.
fn all_correct(gt: &[Object], dets: &[Detection]) -> bool {
    let mut used = vec![false; dets.len()];
    for g in gt {
        let hit =
            dets.iter().enumerate().find(|(j, d)| !used[*j] && d.class == g.class && iou_xyxy(&d.bbox, &g.bbox) >= 0.5);
        match hit {
            Some((j, _)) => used[j] = true,
            None => return false,
        }
    }
    used.iter().all(|&u| u)
}

/// Pairs of tiles: the image with its ground truth, then with the predictions above `predict_conf`.
fn write_grid(path: &Path, input: &ReportInput<'_>) -> Result<()> {
    const SIDE: usize = 224;
    let conf = input.record.cfg.eval.predict_conf;
    let mut tiles = Vec::new();
    for (im, dets) in input.val.iter().zip(&input.eval.per_image).take(input.record.cfg.eval.grid_images) {
        let Ok(img) = data::decode_file(&im.path, &DecodeOptions::default()) else { continue };
        let gt: Vec<Detection> =
            im.objects.iter().map(|o| Detection { bbox: o.bbox, score: 1.0, class: o.class }).collect();
        let shown: Vec<Detection> = dets.iter().filter(|d| d.score >= conf).copied().collect();
        let ok = all_correct(&im.objects, &shown);
        let name = im.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        for (dets, caption, colour) in [
            (&gt, format!("{name}: {} true", gt.len()), Tile::CORRECT),
            (&shown, format!("{} predicted", shown.len()), if ok { Tile::CORRECT } else { Tile::WRONG }),
        ] {
            let drawn = draw(&img, dets, input.record.classes, 2)?;
            let r = SIDE as f64 / drawn.width.max(drawn.height) as f64;
            let (w, h) = (
                ((drawn.width as f64 * r).round() as usize).max(1),
                ((drawn.height as f64 * r).round() as usize).max(1),
            );
            let thumb = transforms::resize(&drawn, w, h)?;
            tiles.push(Tile { rgb: thumb.data, width: w as u32, height: h as u32, caption, caption_color: colour });
        }
    }
    if tiles.is_empty() {
        tiles.push(Tile::placeholder("no images"));
    }
    report::image_grid(path, &tiles, 4)?;
    Ok(())
}
