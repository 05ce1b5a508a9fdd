//! `segment`: semantic segmentation by transfer learning (train, eval, predict, evaluate, run).

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand};
use segment::{
    SegmentConfig,
    config::ModelKind,
    metrics::evaluate_dirs,
    pipeline::{self, JsonSummary},
    predict::{PredictOptions, Segmenter, predict_file},
};
use tlcv_core::cli::{EvalArgs, PredictModelArgs, PredictSource, TrainArgs};

/// Semantic segmentation by transfer learning.
#[derive(Debug, Parser)]
#[command(name = "segment", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a segmentation model and evaluate its best checkpoint on val.
    Train(TrainCmd),
    /// Evaluate a trained run on the val split (original resolution).
    #[command(mut_arg("data", |a| a.help("Data folder (default: the run's own)")))]
    Eval(EvalArgs),
    /// Predict index masks and colour overlays for images with a trained run.
    Predict(PredictCmd),
    /// Score a folder of predicted index masks against a folder of ground-truth masks (offline).
    Evaluate(EvaluateCmd),
    /// Train, evaluate, predict on held-out images and write the report: the end-to-end job.
    Run(TrainCmd),
    /// Export a trained run as ONNX.
    Export(tlcv_core::onnx::cli::ExportArgs),
}

#[derive(Debug, clap::Args)]
struct TrainCmd {
    #[command(flatten)]
    common: TrainArgs,
    /// Model family: unet, deeplabv3 or deeplabv3plus.
    #[arg(long)]
    model: Option<ModelKind>,
    /// Start from a named preset (default, quick, scratch) before the config file.
    #[arg(long)]
    preset: Option<String>,
    #[command(flatten)]
    launch: tlcv_core::dist::launch::LaunchArgs,
}

#[derive(Debug, clap::Args)]
struct PredictCmd {
    #[command(flatten)]
    model: PredictModelArgs,
    /// Output folder for `<stem>.png` (index mask) and `<stem>_overlay.png`.
    #[arg(long)]
    out: PathBuf,
    /// One JSON object per image on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct EvaluateCmd {
    /// Folder of ground-truth index masks (`*.png`).
    #[arg(long)]
    gt: PathBuf,
    /// Folder of predicted index masks with the same file names.
    #[arg(long)]
    pred: PathBuf,
    /// Number of classes.
    #[arg(long)]
    num_classes: usize,
    /// Ground-truth value that is not scored.
    #[arg(long, default_value_t = 255)]
    ignore_index: u8,
    /// Print the metrics as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn main() {
    tlcv_core::cli::main(run)
}

fn load_config(cmd: &TrainCmd) -> anyhow::Result<SegmentConfig> {
    let kind = cmd.model.iter().map(|k| format!("model.kind=\"{k}\"")).collect();
    Ok(cmd.common.load_config(cmd.preset.as_deref(), kind)?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(cmd) => train(&cmd, false),
        Command::Run(cmd) => train(&cmd, true),
        Command::Eval(cmd) => eval(&cmd),
        Command::Predict(cmd) => predict(&cmd),
        Command::Export(cmd) => {
            let (trained, model) = pipeline::load_run(&cmd.run)?;
            let (cfg, classes) = (trained.config, trained.classes);
            let proto = segment::export::export(&model, &classes, &cmd.options(cfg.data.img_size)?)?;
            tlcv_core::onnx::cli::write_and_report(&proto, &cmd.out_path())?;
            Ok(())
        }
        Command::Evaluate(cmd) => {
            let s = evaluate_dirs(&cmd.gt, &cmd.pred, cmd.num_classes, cmd.ignore_index)?;
            eprintln!(
                "mIoU {:.4}  pixel acc {:.4}  mean Dice {:.4}  fwIoU {:.4}",
                s.miou, s.pixel_acc, s.mean_dice, s.fw_iou
            );
            if cmd.json {
                println!("{}", serde_json::to_string(&s)?);
            }
            Ok(())
        }
    }
}

fn train(cmd: &TrainCmd, end_to_end: bool) -> anyhow::Result<()> {
    let cfg = load_config(cmd)?;
    tlcv_core::cli::train_processes(&cmd.launch, &cmd.common, "segment", &cfg.train, |run, parallel| {
        let outcome = pipeline::train_and_report(&cfg, run, cmd.common.resume, end_to_end, parallel)?;
        tlcv_core::cli::finish_training(&outcome.fit, parallel, cmd.common.json, || {
            let summary = JsonSummary::new(&outcome.eval, &outcome.dataset.classes, run.root());
            Ok(serde_json::to_string(&summary)?)
        })
    })
}

fn eval(cmd: &EvalArgs) -> anyhow::Result<()> {
    let (trained, model) = pipeline::load_run(&cmd.run)?;
    let (mut cfg, classes, run) = (trained.config, trained.classes, trained.dir);
    if let Some(data) = &cmd.data {
        cfg.data.path = data.clone();
    }
    let dataset = segment::data::load_dataset(&cfg.data)?;
    if dataset.classes.len() != classes.len() {
        bail!("the data has {} classes but the run was trained on {}", dataset.classes.len(), classes.len());
    }
    let e = pipeline::evaluate_run(&model, &cfg, &dataset)?;
    dataset.skipped.extend(&e.skipped);
    dataset.skipped.print();
    let s = &e.summary;
    eprintln!(
        "val mIoU {:.4}  pixel acc {:.4}  mean Dice {:.4}  fwIoU {:.4}",
        s.miou, s.pixel_acc, s.mean_dice, s.fw_iou
    );
    if cmd.json {
        println!("{}", serde_json::to_string(&JsonSummary::new(&e, &classes, run.root()))?);
    }
    Ok(())
}

fn predict(cmd: &PredictCmd) -> anyhow::Result<()> {
    // The libtorch run, or the exported file with the default overlay opacity.
    let (model, opts): (Box<dyn Segmenter>, PredictOptions) = match cmd.model.source()? {
        PredictSource::Onnx(file) => {
            let m = segment::export::OnnxSegmenter::load(file)?;
            let alpha = segment::config::EvalConfig::default().overlay_alpha;
            let opts = PredictOptions { size: m.img_size, alpha, channels_last: false };
            (Box::new(m), opts)
        }
        PredictSource::Run(run) => {
            let (trained, model) = pipeline::load_run(run)?;
            (Box::new(model), PredictOptions::of_run(&trained.config))
        }
    };
    let mut failed = 0;
    for image in &cmd.model.images {
        match predict_file(model.as_ref(), image, &cmd.out, opts) {
            Ok(p) if cmd.json => println!("{}", serde_json::to_string(&p)?),
            Ok(p) => println!("{}  ->  {}  ({})", p.image, p.mask, p.overlay),
            Err(e) => {
                failed += 1;
                eprintln!("skipped: {e}");
            }
        }
    }
    if failed == cmd.model.images.len() {
        bail!("no image could be segmented");
    }
    Ok(())
}
