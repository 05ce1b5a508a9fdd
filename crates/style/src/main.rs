//! `style`: neural style transfer (run, train-fast, apply, score).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use style::{StyleConfig, fast, image, pipeline, transfer};
use tlcv_core::cli::Ranks;
use tlcv_core::dist::launch::LaunchArgs;
use tlcv_core::run::RunDir;

/// Neural style transfer on frozen ImageNet networks.
#[derive(Debug, Parser)]
#[command(name = "style", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Optimise an image (Gatys et al.); with --out writes only that image, else a run directory
    /// (result, side-by-side panel, loss curves, report.html).
    Run(RunCmd),
    /// Train a feed-forward network (Johnson et al.) for one style on a folder of photos.
    TrainFast(TrainFastCmd),
    /// Stylise images in one pass with a network trained by train-fast.
    Apply(ApplyCmd),
    /// Print the content, style and total-variation losses of an image against a content and a style.
    Score(ScoreCmd),
    /// Export a network trained by train-fast as ONNX (any input size unless --img-size fixes one).
    Export(tlcv_core::onnx::cli::ExportArgs),
}

/// Flags shared by the commands that build the feature network.
#[derive(Debug, Clone, clap::Args)]
struct Common {
    /// Style image: a path, or a file name in the Debian data (e.g. starry_night.jpg).
    #[arg(long)]
    style: Option<String>,
    /// Feature network: efficientnet_lite0 (default, weights shipped), vgg16 or vgg19 (with --weights).
    #[arg(long)]
    backbone: Option<String>,
    /// Feature-network weights: imagenet (Lite0) or a checkpoint file (torchvision's vgg19.pth loads as is).
    #[arg(long)]
    weights: Option<String>,
    /// Device: cpu, cuda or auto.
    #[arg(long)]
    device: Option<String>,
    /// Configuration file (TOML); defaults to the built-in defaults.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Start from a named preset (default, quick, gatys, adam, preserve-color) before the config file.
    #[arg(long)]
    preset: Option<String>,
    /// Override a configuration key, e.g. `--set loss.style_weight=20` (repeatable; applied last).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the result as one JSON object on stdout (human-readable output goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RunCmd {
    #[command(flatten)]
    common: Common,
    /// Content image: a path, or a file name in the Debian data (e.g. chelsea.png).
    #[arg(long)]
    content: Option<String>,
    /// Write only the stylised image here (no run directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Longer side of the output in pixels.
    #[arg(long)]
    size: Option<i64>,
    /// Iterations at the final size.
    #[arg(long)]
    steps: Option<usize>,
    /// Keep the content's colours: luminance (YCbCr) or histogram.
    #[arg(long)]
    preserve_color: Option<String>,
    /// Run name: the run directory is `<project>/style/<name>` (default run, run2, ...).
    #[arg(long)]
    name: Option<String>,
    /// Folder that holds the run directories.
    #[arg(long, default_value = "runs")]
    project: PathBuf,
}

#[derive(Debug, clap::Args)]
struct TrainFastCmd {
    #[command(flatten)]
    common: Common,
    /// Folder of content photos (default: the Debian photos).
    #[arg(long)]
    content_dir: Option<String>,
    /// Training steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Training crop size in pixels.
    #[arg(long)]
    size: Option<i64>,
    /// Run name: the run directory is `<project>/style/<name>` (default fast, fast2, ...).
    #[arg(long)]
    name: Option<String>,
    /// Folder that holds the run directories.
    #[arg(long, default_value = "runs")]
    project: PathBuf,
    #[command(flatten)]
    launch: LaunchArgs,
}

#[derive(Debug, clap::Args)]
struct ApplyCmd {
    /// A run directory written by train-fast (default: the shipped starry_night.jpg network,
    /// assets/models/fast_starry_night).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Output folder (one PNG per input, same stem).
    #[arg(long)]
    out: PathBuf,
    /// Resize so the longer side is this many pixels first (default: as is).
    #[arg(long)]
    size: Option<i64>,
    /// Device: cpu, cuda or auto.
    #[arg(long)]
    device: Option<String>,
    /// Print one JSON object per image on stdout.
    #[arg(long)]
    json: bool,
    /// Images to stylise: paths, or file names in the Debian data (e.g. chelsea.png).
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ScoreCmd {
    #[command(flatten)]
    common: Common,
    /// Content image the losses refer to (resized to the image's size).
    #[arg(long)]
    content: String,
    /// The image to score.
    #[arg(long)]
    image: PathBuf,
}

fn load_config(c: &Common, extra: Vec<(&str, Option<String>)>) -> anyhow::Result<StyleConfig> {
    let mut overrides = Vec::new();
    let common = [
        ("data.style", c.style.clone()),
        ("model.backbone", c.backbone.clone()),
        ("model.weights", c.weights.clone()),
        ("run.device", c.device.clone()),
    ];
    for (k, v) in common.into_iter().chain(extra) {
        if let Some(v) = v {
            overrides.push(format!("{k}={}", tlcv_core::cli::quote(&v)));
        }
    }
    overrides.extend(c.set.iter().cloned());
    Ok(tlcv_core::config::load_preset(c.preset.as_deref(), c.config.as_deref(), &overrides)?)
}

fn run(cmd: RunCmd) -> anyhow::Result<()> {
    let cfg = load_config(
        &cmd.common,
        vec![
            ("data.content", cmd.content.clone()),
            ("data.size", cmd.size.map(|v| v.to_string())),
            ("optim.steps", cmd.steps.map(|v| v.to_string())),
            ("color.mode", cmd.preserve_color.clone()),
        ],
    )?;
    let summary = match &cmd.out {
        Some(out) => pipeline::run_to_file(&cfg, out, !cmd.common.json)?,
        None => {
            let (run, s) = pipeline::run_job(&cfg, &cmd.project, cmd.name.as_deref(), !cmd.common.json)?;
            eprintln!(
                "style: {} in {:.1}s; style loss {:.4} -> {:.4} ({:.1}x lower), content loss {:.4}",
                cfg.model.backbone,
                s.seconds,
                s.initial_style_loss,
                s.style_loss,
                s.initial_style_loss / s.style_loss.max(1e-12),
                s.content_loss
            );
            eprintln!("results in {} (panel.png, result.png, report.html)", run.root().display());
            s
        }
    };
    if cmd.common.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if cmd.out.is_some() {
        eprintln!("wrote {}", summary.out.display());
    }
    Ok(())
}

fn train_fast(cmd: TrainFastCmd) -> anyhow::Result<()> {
    let cfg = load_config(
        &cmd.common,
        vec![
            ("fast.content_dir", cmd.content_dir.clone()),
            ("fast.steps", cmd.steps.map(|v| v.to_string())),
            ("fast.img_size", cmd.size.map(|v| v.to_string())),
        ],
    )?;
    let ranks = Ranks { timeout_s: cfg.fast.dist_timeout, sync_bn: false };
    let open_run = || {
        let run = RunDir::create(&cmd.project, "style", cmd.name.as_deref(), "fast")?;
        tlcv_core::run::write_config(&run, &cfg)?;
        Ok(run)
    };
    tlcv_core::cli::run_processes(&cmd.launch, ranks, open_run, |run, parallel| {
        let device = cfg.run.device.resolve()?;
        cfg.run.apply_threads();
        let net = style::features::FeatureNet::from_config(&cfg.model, device)?;
        let style_img = image::read(&image::resolve(&cfg.data.style)?)?;
        let logs = fast::train(&net, &style_img, &cfg, run, parallel)?;
        if parallel.is_main() {
            report_fast(&cfg, run, &style_img, &logs, cmd.common.json)?;
        }
        Ok(())
    })
}

/// What `train-fast` writes after training: the sample and panel, the loss curve, the summary.
fn report_fast(
    cfg: &StyleConfig,
    run: &RunDir,
    style_img: &tlcv_core::data::RgbImage,
    logs: &[fast::FastLog],
    json: bool,
) -> anyhow::Result<()> {
    let model = fast::FastModel::load(run.root(), cfg.run.device.resolve()?)?;
    let content = image::read(&image::resolve(&cfg.data.content)?)?;
    let sample = model.apply_image(&content, cfg.data.size)?;
    image::write(&run.root().join("sample.png"), &sample)?;
    style::report::write_panel(&run.root().join("panel.png"), &content, style_img, &sample)?;
    let window = (logs.len() / 100).max(1);
    style::report::write_fast_curve(&run.plot("loss.png"), logs, cfg.fast.style_weight, window)?;
    let last = logs.last().map(|l| l.loss).unwrap_or_default();
    if json {
        println!("{}", serde_json::json!({"run": run.root(), "steps": logs.len(), "final": last}));
    }
    eprintln!("trained {} steps; weights in {}", logs.len(), run.best_weights().display());
    Ok(())
}

fn apply(cmd: ApplyCmd) -> anyhow::Result<()> {
    let device: tlcv_core::device::DeviceChoice = cmd.device.as_deref().unwrap_or("cpu").parse()?;
    let run = match &cmd.run {
        Some(run) => run.clone(),
        None => fast::shipped_run()?,
    };
    let model = fast::FastModel::load(&run, device.resolve()?)?;
    std::fs::create_dir_all(&cmd.out).with_context(|| format!("creating {}", cmd.out.display()))?;
    for name in &cmd.images {
        let path = image::resolve(name)?;
        let img = image::read(&path)?;
        let t0 = std::time::Instant::now();
        let out_img = model.apply_image(&img, cmd.size.unwrap_or(0))?;
        let secs = t0.elapsed().as_secs_f64();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
        let path = path.display().to_string();
        let out = cmd.out.join(format!("{stem}.png"));
        image::write(&out, &out_img)?;
        if cmd.json {
            println!("{}", serde_json::json!({"image": path, "out": out, "seconds": secs}));
        } else {
            eprintln!("{path} -> {} ({:.3}s)", out.display(), secs);
        }
    }
    Ok(())
}

fn score(cmd: ScoreCmd) -> anyhow::Result<()> {
    let cfg = load_config(&cmd.common, vec![])?;
    let device = cfg.run.device.resolve()?;
    cfg.run.apply_threads();
    let net = style::features::FeatureNet::from_config(&cfg.model, device)?;
    let img = image::read(&cmd.image)?;
    let content = image::read(&image::resolve(&cmd.content)?)?;
    let content = tlcv_core::data::transforms::resize(&content, img.width, img.height)?;
    let style_img = image::read(&image::resolve(&cfg.data.style)?)?;
    let style_size = if cfg.data.style_size > 0 { cfg.data.style_size } else { img.width.max(img.height) as i64 };
    let style_img = image::resize_longer(&style_img, style_size)?;
    let (x, c, s) = (
        image::to_tensor(&img)?.to_device(device),
        image::to_tensor(&content)?.to_device(device),
        image::to_tensor(&style_img)?.to_device(device),
    );
    let t = transfer::targets(&net, &c, &s)?;
    let w = style::loss::Weights {
        content: cfg.loss.content_weight,
        style: cfg.loss.style_weight,
        tv: cfg.loss.tv_weight,
        style_layers: net.style_weights.clone(),
    };
    let v = transfer::losses_of(&net, &x, &t, &w)?;
    if cmd.common.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        eprintln!("total {:.4} content {:.4} style {:.4} tv {:.5}", v.total, v.content, v.style, v.tv);
    }
    Ok(())
}

fn main() {
    tlcv_core::alloc::keep_freed_memory();
    let cli = Cli::parse();
    tlcv_core::cli::exit_on_error(match cli.command {
        Command::Run(c) => run(c),
        Command::TrainFast(c) => train_fast(c),
        Command::Apply(c) => apply(c),
        Command::Score(c) => score(c),
        Command::Export(c) => export(c),
    });
}

fn export(cmd: tlcv_core::onnx::cli::ExportArgs) -> anyhow::Result<()> {
    let model = style::fast::FastModel::load(&cmd.run, tch::Device::Cpu)?;
    let mut opts = cmd.options(256)?;
    if cmd.img_size.is_none() {
        opts.img_size = None; // fully convolutional: any size
    }
    tlcv_core::onnx::cli::write_and_report(&model.export_onnx(&opts)?, &cmd.out_path())?;
    Ok(())
}
