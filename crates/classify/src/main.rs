//! `classify`: image classification by transfer learning (train, eval, predict, study, forward, run).

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand};
use classify::{
    ClassifyConfig, forward, pipeline,
    predict::{self, Pretrained},
    study,
};

use tlcv_core::{
    backbones::Arch,
    cli::{EvalArgs, TrainArgs},
    dist::launch::LaunchArgs,
    run::{self, RunDir},
    weights::WeightsSource,
};

/// Image classification by transfer learning.
#[derive(Debug, Parser)]
#[command(name = "classify", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a classifier and evaluate its best checkpoint.
    Train(TrainCmd),
    /// Evaluate a trained run on a split.
    Eval(EvalCmd),
    /// Predict the classes of images with a trained run or a pretrained ImageNet model.
    Predict(PredictCmd),
    /// Compare scratch, feature-extract and fine-tune across training-set sizes.
    Study(StudyCmd),
    /// Run one float32 batch from an .npy file through a network in eval mode and write the logits.
    Forward(ForwardCmd),
    /// Export a trained run as ONNX.
    Export(ExportCmd),
    /// Train, evaluate, predict on held-out images and write the report: the end-to-end job.
    Run(TrainCmd),
}

#[derive(Debug, clap::Args)]
struct TrainCmd {
    #[command(flatten)]
    common: TrainArgs,
    /// Classification model: the backbone architecture (same as --backbone).
    #[arg(long)]
    model: Option<Arch>,
    /// Start from a named preset (default, quick, finetune, scratch) before the config file.
    #[arg(long)]
    preset: Option<String>,
    #[command(flatten)]
    launch: LaunchArgs,
}

#[derive(Debug, clap::Args)]
struct EvalCmd {
    #[command(flatten)]
    common: EvalArgs,
    /// Split: val or test.
    #[arg(long, default_value = "test", display_order = 1)] // listed after --data, as before the flatten
    split: String,
}

#[derive(Debug, clap::Args)]
struct ExportCmd {
    #[command(flatten)]
    common: tlcv_core::onnx::cli::ExportArgs,
    /// End the graph with a softmax (output `probs`) instead of the logits.
    #[arg(long)]
    softmax: bool,
}

#[derive(Debug, clap::Args)]
struct PredictCmd {
    /// A trained run directory.
    #[arg(long, conflicts_with_all = ["model", "weights", "onnx"])]
    run: Option<PathBuf>,
    /// An ONNX file written by `classify export`, run by tract (no libtorch in the forward pass).
    #[arg(long, conflicts_with_all = ["model", "weights", "img_size"])]
    onnx: Option<PathBuf>,
    /// A pretrained architecture (with --weights).
    #[arg(long, requires = "weights")]
    model: Option<Arch>,
    /// Weights for --model: imagenet or a checkpoint file.
    #[arg(long)]
    weights: Option<WeightsSource>,
    /// Class count of --weights when the file does not tell.
    #[arg(long)]
    num_classes: Option<i64>,
    /// Input size in pixels (default: the run's, or the architecture's).
    #[arg(long)]
    img_size: Option<i64>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// One JSON object per image on stdout.
    #[arg(long)]
    json: bool,
    /// Images to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct StudyCmd {
    #[command(flatten)]
    common: TrainArgs,
    /// Training images per class to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [5usize, 10, 20, 50])]
    sizes: Vec<usize>,
    /// Backbones to compare, comma-separated (default: the configuration's `model.backbone`).
    #[arg(long, value_delimiter = ',')]
    backbones: Vec<Arch>,
    /// Seeds per configuration; the table gives mean ± standard deviation.
    #[arg(long, default_value_t = 1)]
    seeds: usize,
}

#[derive(Debug, clap::Args)]
struct ForwardCmd {
    /// Architecture, e.g. resnet18.
    #[arg(long)]
    model: Arch,
    /// Checkpoint file (or imagenet).
    #[arg(long)]
    weights: WeightsSource,
    /// Class count when the checkpoint's head does not tell.
    #[arg(long)]
    num_classes: Option<i64>,
    /// Input: float32 [N, 3, H, W], already normalised.
    #[arg(long)]
    input: PathBuf,
    /// Output: float32 [N, classes] logits.
    #[arg(long)]
    output: PathBuf,
}

fn main() {
    tlcv_core::cli::main(run)
}

fn load_config(cmd: &TrainCmd) -> anyhow::Result<ClassifyConfig> {
    let model = cmd.model.iter().map(|m| format!("model.backbone=\"{m}\"")).collect();
    Ok(cmd.common.load_config(cmd.preset.as_deref(), model)?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(cmd) => train(&cmd, false),
        Command::Run(cmd) => train(&cmd, true),
        Command::Eval(cmd) => eval(&cmd),
        Command::Predict(cmd) => predict_cmd(&cmd),
        Command::Study(cmd) => {
            let tc = TrainCmd { common: cmd.common.clone(), model: None, preset: None, launch: LaunchArgs::default() };
            let mut cfg = load_config(&tc)?;
            let max = cmd.sizes.iter().copied().max().unwrap_or(20);
            cfg.data.train_per_class = cfg.data.train_per_class.max(max);
            let backbones = if cmd.backbones.is_empty() { vec![cfg.model.backbone] } else { cmd.backbones.clone() };
            let plan = study::StudyPlan { backbones, sizes: cmd.sizes.clone(), seeds: cmd.seeds.max(1) };
            let dir = RunDir::create(&cmd.common.project, "classify", cmd.common.name.as_deref(), "study")?;
            let rows = study::run_study(&cfg, &plan, &dir)?;
            let summaries = study::summarize(&rows);
            eprintln!("\n{}", study::markdown_table(&summaries));
            for v in study::verdicts(&summaries) {
                eprintln!("{v}");
            }
            eprintln!("study: {}", dir.root().display());
            if cmd.common.json {
                println!("{}", serde_json::to_string(&rows)?);
            }
            Ok(())
        }
        Command::Export(cmd) => {
            let (trained, model) = pipeline::load_run(&cmd.common.run)?;
            let (cfg, classes) = (trained.config, trained.classes);
            let opts = cmd.common.options(cfg.data.img_size)?;
            let proto = classify::export::export(&model, &classes, &opts, cmd.softmax)?;
            tlcv_core::onnx::cli::write_and_report(&proto, &cmd.common.out_path())?;
            Ok(())
        }
        Command::Forward(cmd) => {
            let shape = forward::forward_npy(cmd.model, &cmd.weights, cmd.num_classes, &cmd.input, &cmd.output)?;
            eprintln!("wrote {:?} logits to {}", shape, cmd.output.display());
            Ok(())
        }
    }
}

fn train(cmd: &TrainCmd, end_to_end: bool) -> anyhow::Result<()> {
    let cfg = load_config(cmd)?;
    tlcv_core::cli::train_processes(&cmd.launch, &cmd.common, "classify", &cfg.train, |run, parallel| {
        let outcome = pipeline::train_and_report(&cfg, run, cmd.common.resume, end_to_end, parallel)?;
        tlcv_core::cli::finish_training(&outcome.fit, parallel, cmd.common.json, || {
            let summary = pipeline::JsonSummary::new(&outcome.metrics, run.root()).with_skipped(&outcome.skipped);
            Ok(serde_json::to_string(&summary)?)
        })
    })
}

fn eval(cmd: &EvalCmd) -> anyhow::Result<()> {
    let (trained, model) = pipeline::load_run(&cmd.common.run)?;
    let (mut cfg, classes, run) = (trained.config, trained.classes, trained.dir);
    if let Some(data) = &cmd.common.data {
        cfg.data.path = data.clone();
    }
    cfg.eval.split = cmd.split.clone();
    let (dataset, _) = classify::data::load_dataset(&cfg.data)?;
    if dataset.classes != classes {
        bail!("the data's classes {:?} differ from the run's {:?}", dataset.classes, classes);
    }
    let (split, samples) = pipeline::eval_split(&cfg, &dataset);
    if split != cmd.split {
        eprintln!("note: no {} split; evaluating {split}", cmd.split);
    }
    let skips = run::SkipLog::default();
    let (metrics, _) = classify::evaluate::evaluate_split(&model, &cfg, samples, &classes, &skips)?;
    skips.print();
    eprintln!(
        "{split} top-1 {:.4}  top-5 {:.4}  macro F1 {:.4}  ({} images, {} skipped)",
        metrics.top1,
        metrics.top5,
        metrics.f1_macro,
        metrics.samples,
        skips.len()
    );
    if cmd.common.json {
        let summary = pipeline::JsonSummary::new(&metrics, run.root()).with_skipped(&skips);
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

fn predict_cmd(cmd: &PredictCmd) -> anyhow::Result<()> {
    predict::check_images(&cmd.images)?;
    let results = if let Some(dir) = &cmd.run {
        let (mut trained, model) = pipeline::load_run(dir)?;
        if let Some(size) = cmd.img_size {
            trained.config.data.img_size = size;
        }
        predict::predict_images(&model, &trained.config.data, &trained.classes, &cmd.images, cmd.top_k)
    } else if let Some(file) = &cmd.onnx {
        let model = classify::export::OnnxClassifier::load(file)?;
        let data = classify::config::DataConfig { img_size: model.img_size, augment: false, ..Default::default() };
        predict::predict_images(&model, &data, &model.classes, &cmd.images, cmd.top_k)
    } else {
        let (Some(arch), Some(weights)) = (cmd.model, &cmd.weights) else {
            bail!("give --run RUN_DIR, --onnx FILE, or --model NAME with --weights imagenet|FILE");
        };
        let model = Pretrained::load(arch, weights, cmd.num_classes)?;
        let classes = predict::imagenet_names(model.net_classes());
        let data = predict::pretrained_data_config(arch, cmd.img_size);
        predict::predict_images(&model, &data, &classes, &cmd.images, cmd.top_k)
    };
    let mut failed = 0;
    for result in results {
        match result {
            Ok(p) if cmd.json => println!("{}", serde_json::to_string(&p)?),
            Ok(p) => {
                println!("{}", p.image);
                for t in &p.top {
                    println!("  {:>6.3}  {} ({})", t.prob, t.class, t.index);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("skipped: {e}");
            }
        }
    }
    if failed == cmd.images.len() {
        bail!("no image could be read");
    }
    Ok(())
}
