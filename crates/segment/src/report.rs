//! The segmentation report: loss and mIoU curves, per-class IoU bars, the pixel confusion matrix,
//! image / ground truth / prediction triplets, and `report.html`.

use tlcv_core::{
    data::transforms,
    report::{self, Figure, Report, Tile},
    run::{
        RunDir,
        report::{Curve, RunRecord, epoch_plots, finish},
    },
};

use crate::{
    SegmentError,
    augment::resize_mask,
    config::SegmentConfig,
    evaluate::Evaluation,
    mask::{Mask, colourise},
};

/// Everything the report shows.
#[derive(Debug)]
pub struct ReportInput<'a> {
    /// Configuration, class names, history, skipped inputs and facts.
    pub record: RunRecord<'a, SegmentConfig>,
    /// Final evaluation.
    pub eval: &'a Evaluation,
}

fn rerr(e: report::ReportError) -> SegmentError {
    SegmentError::Invalid(e.to_string())
}

/// Draws the plots into `run/plots/` and writes `run/report.html`.
pub fn write(run: &RunDir, input: &ReportInput<'_>) -> Result<(), SegmentError> {
    let loss = [Curve::train("train loss", "loss"), Curve::val("val loss", "loss")];
    let scores =
        [Curve::val("mIoU", "miou"), Curve::val("pixel acc", "pixel_acc"), Curve::val("mean Dice", "mean_dice")];
    let curves = epoch_plots(
        run,
        input.record.history,
        &[("loss.png", "Loss", &loss), ("metrics.png", "Validation metrics (network resolution)", &scores)],
    )?;
    let s = &input.eval.summary;
    let iou_png = run.plot("per_class_iou.png");
    let ious: Vec<f64> = s.per_class_iou.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
    report::plots::bar_plot(&iou_png, "IoU per class (val, original resolution)", input.record.classes, &ious)
        .map_err(rerr)?;
    let n = input.record.classes.len();
    let counts = input.eval.confusion.counts();
    let matrix: Vec<Vec<u64>> = (0..n).map(|g| counts[g * n..(g + 1) * n].to_vec()).collect();
    let cm_png = run.plot("confusion_matrix.png");
    report::plots::confusion_matrix(
        &cm_png,
        "Pixel confusion, normalised by true class",
        &matrix,
        input.record.classes,
        true,
    )
    .map_err(rerr)?;
    let triplets_png = run.plot("triplets.png");
    write_triplets(&triplets_png, input)?;

    let mut facts = input.record.facts.clone();
    facts.extend([
        ("mIoU (val)".to_string(), format!("{:.4}", s.miou)),
        ("pixel accuracy".to_string(), format!("{:.4}", s.pixel_acc)),
        ("mean Dice".to_string(), format!("{:.4}", s.mean_dice)),
        ("frequency-weighted IoU".to_string(), format!("{:.4}", s.fw_iou)),
        ("samples skipped".to_string(), input.record.skipped.len().to_string()),
    ]);
    let rows: Vec<Vec<String>> = input
        .record
        .classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let gt: u64 = counts[c * n..(c + 1) * n].iter().sum();
            let iou = s.per_class_iou.get(c).copied().flatten().map_or("-".into(), |v| format!("{v:.4}"));
            vec![c.to_string(), name.clone(), iou, gt.to_string()]
        })
        .collect();
    let headers = ["index", "class", "IoU", "gt pixels"].map(String::from).to_vec();
    let mut page = Report::new(format!("segment: {}", run.root().display()))
        .subtitle(format!(
            "{} · {} · {} · {}",
            input.record.cfg.model.kind,
            input.record.cfg.model.backbone,
            input.record.cfg.model.strategy,
            input.record.cfg.data.path
        ))
        .key_values(facts)
        .heading("IoU per class")
        .metrics_table(headers, rows)
        .images(vec![Figure::new("IoU per class", iou_png), Figure::new("Confusion matrix", cm_png)]);
    if !curves.is_empty() {
        page = page.heading("Curves").images(curves);
    }
    page = page.heading("Image / ground truth / prediction").image("Validation triplets", triplets_png);
    finish(run, page, "Skipped samples", &input.record)?;
    Ok(())
}

/// Rows of (image, ground truth, prediction), each scaled to at most 160 pixels.
fn write_triplets(path: &std::path::Path, input: &ReportInput<'_>) -> Result<(), SegmentError> {
    let mut tiles = Vec::new();
    for e in input.eval.kept.iter().take(input.record.cfg.eval.triplets.max(1)) {
        let f = 160.0 / e.image.width.max(e.image.height) as f64;
        let (w, h) = (
            ((e.image.width as f64 * f).round() as usize).max(1),
            ((e.image.height as f64 * f).round() as usize).max(1),
        );
        let img = transforms::resize(&e.image, w, h)?;
        let mut cm = crate::metrics::SegConfusion::new(
            input.record.classes.len(),
            Some(i64::from(input.record.cfg.data.ignore_index)),
        )?;
        cm.update(&e.truth.data, &e.pred.data)?;
        let name = e.sample.image.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let tile = |rgb: Vec<u8>, caption: String| Tile {
            rgb,
            width: w as u32,
            height: h as u32,
            caption,
            caption_color: [40, 40, 40],
        };
        let mask_rgb = |m: &Mask| colourise(&resize_mask(m, w, h));
        tiles.push(tile(img.data, name));
        tiles.push(tile(mask_rgb(&e.truth), "ground truth".into()));
        tiles.push(tile(mask_rgb(&e.pred), format!("prediction (mIoU {:.2})", cm.miou())));
    }
    if tiles.is_empty() {
        tiles.push(Tile::placeholder("no images"));
    }
    report::plots::image_grid(path, &tiles, 3).map_err(rerr)?;
    Ok(())
}
