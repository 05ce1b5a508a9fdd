//! The run directory's pictures and page: the side-by-side panel (content, style, result), the loss
//! curves and `report.html`.

use std::path::Path;

use tlcv_core::data::{RgbImage, transforms};
use tlcv_core::report::{self, Figure, LineOptions, Report, Series, Tile};
use tlcv_core::run::RunDir;

use crate::config::StyleConfig;
use crate::transfer::TransferResult;
use crate::{Result, image};

/// Writes `content | style | result`, each scaled to the result's height, captioned.
pub fn write_panel(path: &Path, content: &RgbImage, style: &RgbImage, result: &RgbImage) -> Result<()> {
    let h = result.height;
    let fit = |img: &RgbImage| -> Result<RgbImage> {
        let w = ((img.width as f64 * h as f64 / img.height as f64).round() as usize).max(1);
        Ok(transforms::resize(img, w, h)?)
    };
    let tiles: Vec<Tile> = [(fit(content)?, "content"), (fit(style)?, "style"), (result.clone(), "result")]
        .into_iter()
        .map(|(img, caption)| Tile {
            width: img.width as u32,
            height: img.height as u32,
            rgb: img.data,
            caption: caption.into(),
            caption_color: [40, 40, 40],
        })
        .collect();
    report::image_grid(path, &tiles, 3)?;
    Ok(())
}

/// Plots log10 of the content, style, tv and total losses over the iterations of all levels.
pub fn write_loss_plot(path: &Path, result: &TransferResult) -> Result<()> {
    let pick = |f: &dyn Fn(&crate::transfer::LossValues) -> f64| -> Vec<(f64, f64)> {
        result.history.iter().filter(|h| f(&h.loss) > 0.0).map(|h| (h.step as f64, f(&h.loss).log10())).collect()
    };
    let series = vec![
        Series::new("total", pick(&|l| l.total)),
        Series::new("content", pick(&|l| l.content)),
        Series::new("style", pick(&|l| l.style)),
        Series::new("tv", pick(&|l| l.tv)),
    ];
    let opts = LineOptions { y_label: "log10 loss".into(), ..LineOptions::default() };
    report::line_plot_with(path, "Losses (levels run one after another)", "iteration", &series, &opts)?;
    Ok(())
}

/// Plots log10 of the fast network's training losses, each averaged over windows of `window` steps
/// (one step's batch is noisy): total, content, style × `style_weight` and the teacher's share.
pub fn write_fast_curve(path: &Path, logs: &[crate::fast::FastLog], style_weight: f64, window: usize) -> Result<()> {
    let window = window.max(1);
    let avg = |f: &dyn Fn(&crate::fast::FastLog) -> f64| -> Vec<(f64, f64)> {
        logs.chunks(window)
            .map(|c| {
                let m = c.iter().map(f).sum::<f64>() / c.len() as f64;
                ((c[0].step + c.len() / 2) as f64, m)
            })
            .filter(|p| p.1 > 0.0)
            .map(|(x, y)| (x, y.log10()))
            .collect()
    };
    let series = vec![
        Series::new("total", avg(&|l| l.loss.total)),
        Series::new("content", avg(&|l| l.loss.content)),
        Series::new(format!("style × {style_weight}"), avg(&|l| l.loss.style * style_weight)),
        Series::new("teacher term", avg(&|l| l.teacher)),
    ];
    let opts = LineOptions { y_label: "log10 loss".into(), ..LineOptions::default() };
    let title = format!("Fast-style training (means of {window} steps)");
    report::line_plot_with(path, &title, "step", &series, &opts)?;
    Ok(())
}

/// Everything `report.html` shows besides the pictures.
#[derive(Debug)]
pub struct ReportFacts<'a> {
    /// Configuration.
    pub cfg: &'a StyleConfig,
    /// The result of the optimisation.
    pub result: &'a TransferResult,
    /// Content and style files.
    pub content_path: &'a Path,
    /// Style file.
    pub style_path: &'a Path,
    /// Feature-network precision, e.g. `fp32`.
    pub precision: &'a str,
}

/// Writes `result.png`, `panel.png`, `plots/loss.png` and `report.html` into `run`.
pub fn write_run(run: &RunDir, content: &RgbImage, style: &RgbImage, f: &ReportFacts<'_>) -> Result<()> {
    let result_img = image::from_tensor(&f.result.image)?;
    image::write(&run.root().join("result.png"), &result_img)?;
    let panel = run.root().join("panel.png");
    write_panel(&panel, content, style, &result_img)?;
    let loss_png = run.plot("loss.png");
    write_loss_plot(&loss_png, f.result)?;
    let r = f.result;
    let levels: Vec<String> = r.level_sizes.iter().map(|(h, w)| format!("{w}x{h}")).collect();
    let facts = vec![
        ("content".to_string(), f.content_path.display().to_string()),
        ("style".to_string(), f.style_path.display().to_string()),
        ("backbone".to_string(), format!("{} ({})", f.cfg.model.backbone, f.precision)),
        ("optimiser".to_string(), format!("{:?}", f.cfg.optim.optimizer).to_lowercase()),
        ("levels".to_string(), levels.join(" → ")),
        ("iterations / evaluations".to_string(), format!("{} / {}", r.history.len(), r.evaluations)),
        ("seconds".to_string(), format!("{:.1}", r.seconds)),
        (
            "style loss".to_string(),
            format!(
                "{:.4} → {:.4} ({:.1}x lower)",
                r.initial_loss.style,
                r.final_loss.style,
                r.initial_loss.style / r.final_loss.style.max(1e-12)
            ),
        ),
        ("content loss".to_string(), format!("{:.4} → {:.4}", r.initial_loss.content, r.final_loss.content)),
        ("total variation".to_string(), format!("{:.5} → {:.5}", r.initial_loss.tv, r.final_loss.tv)),
    ];
    let page = Report::new(format!("style: {}", run.root().display()))
        .subtitle(format!("Gatys et al. style transfer · {} · colour {:?}", f.cfg.model.backbone, f.cfg.color.mode).to_lowercase())
        .key_values(facts)
        .heading("Content, style, result")
        .images(vec![Figure::new("content · style · result", &panel)])
        .heading("Losses")
        .paragraph("Content and style losses are relative errors (of features and of Gram matrices); the curves restart at each coarse-to-fine level.")
        .images(vec![Figure::new("Losses", &loss_png)])
        .config(tlcv_core::config::to_toml(f.cfg)?);
    page.write(&run.report_html())?;
    Ok(())
}
