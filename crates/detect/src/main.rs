//! `detect`: object detection by transfer learning (train, eval, predict, convert, evaluate, run).

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand};
use detect::{
    DetectConfig, compare,
    config::{DataFormat, EvalConfig, Family},
    data, eval, evaluate,
    export::DetectModel,
    pipeline,
    postprocess::PostprocessConfig,
    predict,
    task::DetectTask,
    ultralytics::spec::YoloArch,
};
use tlcv_core::{
    cli::{EvalArgs, PredictModelArgs, PredictSource, TrainArgs},
    run,
};

/// Object detection by transfer learning (YOLO-style, SSD and Faster R-CNN heads on ImageNet backbones).
#[derive(Debug, Parser)]
#[command(name = "detect", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a detector and evaluate its best checkpoint on the validation split.
    Train(TrainCmd),
    /// Evaluate a trained run on a data set's validation split.
    Eval(EvalArgs),
    /// Detect objects in images with a trained run; writes annotated images and JSON lines.
    Predict(PredictCmd),
    /// Convert a data set between the YOLO and COCO layouts.
    Convert(ConvertCmd),
    /// COCO bbox evaluation of a result file against a ground-truth file (the 12 numbers).
    Evaluate(EvaluateCmd),
    /// Train, evaluate, predict on held-out images and write the report: the end-to-end job.
    Run(TrainCmd),
    /// Train several detector families on the same data and print them side by side (mAP, training
    /// time, inference speed, parameters); each gets its own run directory `<name>-<family>`.
    Compare(CompareCmd),
    /// Export a trained run as ONNX (decoded head, or with --nms the detections; Faster R-CNN always
    /// ends with its detections).
    Export(ExportCmd),
    /// Parity tool: one float32 NCHW batch (RGB, 0-1) through an Ultralytics YOLOv8/YOLO11 network in
    /// eval mode; writes `[N, 4 + nc, anchors]` (xywh in input pixels, class probabilities).
    Forward(ForwardCmd),
}

#[derive(Debug, clap::Args)]
struct ExportCmd {
    #[command(flatten)]
    common: tlcv_core::onnx::cli::ExportArgs,
    /// End the graph with NMS (ONNX NonMaxSuppression): `detections` [N, K, 6] (always on for
    /// faster-rcnn).
    #[arg(long)]
    nms: bool,
    /// With --nms: score threshold (default: the run's eval.predict_conf).
    #[arg(long)]
    conf: Option<f64>,
    /// With --nms: IoU threshold (default: the run's eval.iou).
    #[arg(long)]
    iou: Option<f64>,
    /// With --nms: detections kept per image (default: the run's eval.max_det).
    #[arg(long)]
    max_det: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct ForwardCmd {
    /// Network: yolov8n|s|m|l|x or yolo11n|s|m|l|x (default: the one the checkpoint declares).
    #[arg(long)]
    model: Option<String>,
    /// An Ultralytics `.pt`, a state dict or a safetensors file.
    #[arg(long)]
    weights: PathBuf,
    /// Input `.npy`, float32 `[N, 3, H, W]`.
    #[arg(long)]
    input: PathBuf,
    /// Output `.npy`.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Debug, clap::Args)]
struct CompareCmd {
    #[command(flatten)]
    common: TrainArgs,
    /// Families to train, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "yolo,ssd,faster-rcnn")]
    models: Vec<String>,
    /// Override a key for one family only, e.g. `--family-set ssd:train.epochs=16` (repeatable;
    /// applied after `--set`).
    #[arg(long = "family-set", value_name = "FAMILY:KEY=VALUE")]
    family_set: Vec<String>,
    /// Start from a named preset (default, quick, frozen, scratch) before the config file.
    #[arg(long)]
    preset: Option<String>,
}

#[derive(Debug, clap::Args)]
struct TrainCmd {
    #[command(flatten)]
    common: TrainArgs,
    /// Detector family: yolo, ssd or faster-rcnn, or an Ultralytics network (yolov8n|s|m|l|x,
    /// yolo11n|s|m|l|x) started from `--weights` (an Ultralytics .pt; default: assets/models/<net>.pt).
    #[arg(long)]
    model: Option<String>,
    /// Ultralytics networks: keep the first N modules of the `model` list frozen (Ultralytics'
    /// `freeze=N`, at most the backbone's modules; default: per `--strategy`).
    #[arg(long)]
    freeze: Option<usize>,
    /// Start from a named preset (default, quick, frozen, scratch) before the config file.
    #[arg(long)]
    preset: Option<String>,
    #[command(flatten)]
    launch: tlcv_core::dist::launch::LaunchArgs,
}

#[derive(Debug, clap::Args)]
struct PredictCmd {
    #[command(flatten)]
    model: PredictModelArgs,
    /// Folder for the annotated images (default: <run>/predict).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Score threshold (default: the run's eval.predict_conf).
    #[arg(long)]
    conf: Option<f64>,
    /// One JSON object per image on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ConvertCmd {
    /// Input layout: yolo or coco.
    #[arg(long, value_parser = parse_format)]
    from: DataFormat,
    /// Output layout: yolo or coco.
    #[arg(long, value_parser = parse_format)]
    to: DataFormat,
    /// Input data set folder.
    input: PathBuf,
    /// Output folder (new or empty).
    output: PathBuf,
}

#[derive(Debug, clap::Args)]
struct EvaluateCmd {
    /// COCO ground-truth JSON.
    #[arg(long)]
    coco_gt: PathBuf,
    /// COCO result JSON (array of detections).
    #[arg(long)]
    coco_dets: PathBuf,
    /// Print the 12 numbers as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_format(s: &str) -> Result<DataFormat, String> {
    match s.to_ascii_lowercase().as_str() {
        "yolo" => Ok(DataFormat::Yolo),
        "coco" => Ok(DataFormat::Coco),
        _ => Err(format!("`{s}`: expected yolo or coco")),
    }
}

fn main() {
    tlcv_core::cli::main(run)
}

/// `--model`: a family, or an Ultralytics network (which also sets `model.ultralytics.arch`).
fn model_overrides(model: &str) -> anyhow::Result<Vec<String>> {
    if let Ok(arch) = model.parse::<YoloArch>() {
        let family = format!("model.family=\"{}\"", Family::Ultralytics);
        return Ok(vec![family, format!("model.ultralytics.arch=\"{arch}\"")]);
    }
    let f: Family = model.parse().map_err(|e: String| {
        anyhow::anyhow!("{e}, or an Ultralytics network ({})", detect::ultralytics::spec::ARCH_NAMES.join(", "))
    })?;
    Ok(vec![format!("model.family=\"{f}\"")])
}

fn load_config(common: &TrainArgs, preset: Option<&str>, family: Option<&str>) -> anyhow::Result<DetectConfig> {
    let mut first = match family {
        Some(family) => model_overrides(family)?,
        None => Vec::new(),
    };
    if let Some(n) = common.trainable_layers {
        // The flag means the same for every family, SSD's own setting included.
        first.push(format!("model.ssd.trainable_layers={n}"));
    }
    Ok(common.load_config(preset, first)?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(cmd) => train(&cmd, false),
        Command::Run(cmd) => train(&cmd, true),
        Command::Compare(cmd) => compare(&cmd),
        Command::Eval(cmd) => eval_cmd(&cmd),
        Command::Predict(cmd) => predict_cmd(&cmd),
        Command::Export(cmd) => export_cmd(&cmd),
        Command::Forward(cmd) => {
            let arch = cmd.model.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?;
            let s = detect::ultralytics::forward::forward_npy(arch, &cmd.weights, &cmd.input, &cmd.output)?;
            eprintln!(
                "{} ({} weights, {} classes) -> {} {:?}",
                s.arch,
                s.source,
                s.names.len(),
                cmd.output.display(),
                s.output_shape
            );
            Ok(())
        }
        Command::Convert(cmd) => {
            let (ds, issues) = data::convert::convert(cmd.from, cmd.to, &cmd.input, &cmd.output)?;
            pipeline::report_issues(&issues);
            let count = |v: &[data::DetImage]| v.iter().map(|i| i.objects.len()).sum::<usize>();
            eprintln!(
                "wrote {} ({} classes; {} train images / {} boxes, {} val images / {} boxes; {})",
                cmd.output.display(),
                ds.names.len(),
                ds.train.len(),
                count(&ds.train),
                ds.val.len(),
                count(&ds.val),
                issues.summary()
            );
            Ok(())
        }
        Command::Evaluate(cmd) => {
            let s = eval::evaluate_files(&cmd.coco_gt, &cmd.coco_dets)?;
            if cmd.json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                for (k, v) in serde_json::to_value(s)?.as_object().into_iter().flatten() {
                    println!("{k:>10}  {:.4}", v.as_f64().unwrap_or(f64::NAN));
                }
            }
            Ok(())
        }
    }
}

fn train(cmd: &TrainCmd, end_to_end: bool) -> anyhow::Result<()> {
    let mut common = cmd.common.clone();
    if let Some(n) = cmd.freeze {
        common.set.push(format!("model.ultralytics.freeze={n}"));
    }
    let cfg = load_config(&common, cmd.preset.as_deref(), cmd.model.as_deref())?;
    tlcv_core::cli::train_processes(&cmd.launch, &cmd.common, "detect", &cfg.train, |run, parallel| {
        let outcome = pipeline::train_and_report(&cfg, run, cmd.common.resume, end_to_end, parallel)?;
        tlcv_core::cli::finish_training(&outcome.fit, parallel, cmd.common.json, || {
            json_summary(&outcome.eval, run.root())
        })
    })
}

/// `detect compare`: the configuration of each family (`--set`, then its `--family-set`), then
/// [`compare::compare_families`] and the table (stdout and `<project>/detect/<name>-families.md`).
fn compare(cmd: &CompareCmd) -> anyhow::Result<()> {
    if cmd.common.resume {
        bail!("compare continues by itself: run the same command again and finished families are reused");
    }
    let base = cmd.common.name.clone().unwrap_or_else(|| "compare".into());
    // Keyed by what the name sets, so that aliases (faster_rcnn, faster-rcnn) match.
    let mut per_family: Vec<(Vec<String>, String)> = Vec::new();
    for s in &cmd.family_set {
        let (f, kv) =
            s.split_once(':').ok_or_else(|| anyhow::anyhow!("--family-set {s}: expected FAMILY:KEY=VALUE"))?;
        per_family.push((model_overrides(f)?, kv.to_string()));
    }
    let mut configs = Vec::with_capacity(cmd.models.len());
    for family in &cmd.models {
        let key = model_overrides(family)?;
        let mut common = cmd.common.clone();
        common.set.extend(per_family.iter().filter(|(g, _)| *g == key).map(|(_, kv)| kv.clone()));
        configs.push(load_config(&common, cmd.preset.as_deref(), Some(family))?);
    }
    let comparison = compare::compare_families(&cmd.common.project, &base, &configs)?;
    if comparison.interrupted {
        bail!(tlcv_core::Error::Interrupted);
    }
    let (table, path) = compare::write_table(&cmd.common.project, &base, &comparison.rows)?;
    println!("{table}");
    eprintln!("table: {}", path.display());
    if cmd.common.json {
        println!("{}", serde_json::to_string(&comparison.rows)?);
    }
    Ok(())
}

fn json_summary(e: &evaluate::EvalOutput, run: &std::path::Path) -> anyhow::Result<String> {
    let mut m = serde_json::Map::new();
    for (k, v) in evaluate::flat_metrics(e) {
        m.insert(k, serde_json::json!(v));
    }
    m.insert("run_dir".into(), serde_json::json!(run.display().to_string()));
    Ok(serde_json::to_string(&m)?)
}

fn eval_cmd(cmd: &EvalArgs) -> anyhow::Result<()> {
    run::configure_threads();
    let (trained, model) = pipeline::load_run(&cmd.run)?;
    let (mut cfg, names, run) = (trained.config, trained.classes, trained.dir);
    if let Some(d) = &cmd.data {
        cfg.data.path = d.clone();
    }
    let (ds, dir) = data::load_config(&cfg.data)?;
    pipeline::report_issues(&ds.issues);
    if ds.names != names {
        bail!("{}: classes {:?} differ from the run's {:?}", dir.display(), ds.names, names);
    }
    let pp = DetectTask::eval_postprocess(&cfg);
    let e = evaluate::evaluate_images(&model, &ds.val, &names, &pp, cfg.train.batch.max(1) * 2)?;
    e.skipped.print();
    let (p, r) = e.f1.as_ref().map_or((0.0, 0.0), |f| (f.precision, f.recall));
    eprintln!(
        "val mAP@.5 {:.4}  mAP@[.5:.95] {:.4}  precision {:.3}  recall {:.3}",
        e.summary.map50, e.summary.map, p, r
    );
    if cmd.json {
        println!("{}", json_summary(&e, run.root())?);
    }
    Ok(())
}

fn predict_cmd(cmd: &PredictCmd) -> anyhow::Result<()> {
    run::configure_threads();
    // The libtorch run, or the exported file with the default thresholds.
    let (model, names, eval, out): (Box<dyn DetectModel>, Vec<String>, EvalConfig, PathBuf) =
        match cmd.model.source()? {
            PredictSource::Onnx(file) => {
                let m = detect::export::OnnxDetector::load(file)?;
                let names = m.names.clone();
                let out = cmd.out.clone().unwrap_or_else(|| file.with_extension("predict"));
                (Box::new(m), names, EvalConfig::default(), out)
            }
            PredictSource::Run(dir) => {
                let (trained, model) = pipeline::load_run(dir)?;
                let out = cmd.out.clone().unwrap_or_else(|| trained.dir.root().join("predict"));
                (Box::new(model), trained.classes, trained.config.eval, out)
            }
        };
    let pp = PostprocessConfig {
        conf: cmd.conf.unwrap_or(eval.predict_conf),
        iou: eval.iou,
        max_det: eval.max_det,
        ..Default::default()
    };
    let mut failed = 0;
    for r in predict::predict_files(model.as_ref(), &names, &cmd.model.images, &pp, Some(&out))? {
        match r {
            Ok(p) if cmd.json => println!("{}", serde_json::to_string(&p)?),
            Ok(p) => {
                println!("{}", p.image);
                for d in &p.detections {
                    let b = d.bbox;
                    println!(
                        "  {:>5.3}  {} ({})  [{:.1}, {:.1}, {:.1}, {:.1}]",
                        d.score, d.class, d.index, b[0], b[1], b[2], b[3]
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("skipped: {e}");
            }
        }
    }
    eprintln!("annotated images: {}", out.display());
    if failed == cmd.model.images.len() {
        bail!("no image could be read");
    }
    Ok(())
}

fn export_cmd(cmd: &ExportCmd) -> anyhow::Result<()> {
    let (trained, model) = pipeline::load_run(&cmd.common.run)?;
    let (cfg, names) = (trained.config, trained.classes);
    let opts = cmd.common.options(cfg.data.img_size)?;
    if opts.img_size.is_some_and(|(s, _)| s % 32 != 0) {
        bail!("--img-size must be a multiple of 32 for a detector");
    }
    // Faster R-CNN's NMS is part of the network: its export always ends with the detections.
    let head = if cmd.nms || model.family == detect::family::Family::FasterRcnn {
        detect::export::Head::Nms(PostprocessConfig {
            conf: cmd.conf.unwrap_or(cfg.eval.predict_conf),
            iou: cmd.iou.unwrap_or(cfg.eval.iou),
            max_det: cmd.max_det.unwrap_or(cfg.eval.max_det),
            ..Default::default()
        })
    } else {
        detect::export::Head::Raw
    };
    let proto = detect::export::export(&model, cfg.model.backbone, &names, &opts, head)?;
    tlcv_core::onnx::cli::write_and_report(&proto, &cmd.common.out_path())?;
    Ok(())
}
