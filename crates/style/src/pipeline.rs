//! The end-to-end jobs behind `style run`: one stylised image written to a file, or the full run
//! directory (result, panel, loss curves, `history.csv`, `metrics.json`, `report.html`).

use std::path::{Path, PathBuf};

use serde::Serialize;
use tlcv_core::run::RunDir;

use crate::config::StyleConfig;
use crate::features::FeatureNet;
use crate::transfer::{self, TransferResult};
use crate::{Result, image, report};

/// The numbers `style run --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Final content loss.
    pub content_loss: f64,
    /// Final style loss.
    pub style_loss: f64,
    /// Style loss of the starting image at the final size.
    pub initial_style_loss: f64,
    /// Final total variation.
    pub tv_loss: f64,
    /// Wall time of the optimisation.
    pub seconds: f64,
    /// The stylised image.
    pub out: PathBuf,
}

impl RunSummary {
    fn new(r: &TransferResult, out: PathBuf) -> Self {
        Self {
            content_loss: r.final_loss.content,
            style_loss: r.final_loss.style,
            initial_style_loss: r.initial_loss.style,
            tv_loss: r.final_loss.tv,
            seconds: r.seconds,
            out,
        }
    }
}

/// Loads the feature network of `cfg` on its device.
pub fn feature_net(cfg: &StyleConfig) -> Result<FeatureNet> {
    let device = cfg.run.device.resolve()?;
    cfg.run.apply_threads();
    FeatureNet::from_config(&cfg.model, device)
}

fn precision_name(net: &FeatureNet) -> &'static str {
    if net.kind() == tch::Kind::BFloat16 { "bf16" } else { "fp32" }
}

/// Stylises `cfg.data.content` with `cfg.data.style` and writes the result to `out`.
pub fn run_to_file(cfg: &StyleConfig, out: &Path, show_progress: bool) -> Result<RunSummary> {
    let net = feature_net(cfg)?;
    let content = image::read(&image::resolve(&cfg.data.content)?)?;
    let style = image::read(&image::resolve(&cfg.data.style)?)?;
    let r = transfer::stylize(&net, &content, &style, cfg, show_progress)?;
    image::write_tensor(out, &r.image)?;
    Ok(RunSummary::new(&r, out.to_path_buf()))
}

/// The full job: a run directory `project/style/<name>` with everything in it.
pub fn run_job(
    cfg: &StyleConfig,
    project: &Path,
    name: Option<&str>,
    show_progress: bool,
) -> Result<(RunDir, RunSummary)> {
    let net = feature_net(cfg)?;
    let content_path = image::resolve(&cfg.data.content)?;
    let style_path = image::resolve(&cfg.data.style)?;
    let content = image::read(&content_path)?;
    let style = image::read(&style_path)?;
    let run = RunDir::create(project, "style", name, "run")?;
    tlcv_core::run::write_config(&run, cfg)?;
    let r = transfer::stylize(&net, &content, &style, cfg, show_progress)?;
    let mut csv = String::from("step,level,total,content,style,tv\n");
    for h in &r.history {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            h.step, h.level, h.loss.total, h.loss.content, h.loss.style, h.loss.tv
        ));
    }
    tlcv_core::run::write_atomic(&run.root().join("history.csv"), csv.as_bytes())?;
    let facts = report::ReportFacts {
        cfg,
        result: &r,
        content_path: &content_path,
        style_path: &style_path,
        precision: precision_name(&net),
    };
    report::write_run(&run, &content, &style, &facts)?;
    let summary = RunSummary::new(&r, run.root().join("result.png"));
    run.write_json(&run.metrics_json(), &summary)?;
    Ok((run, summary))
}
