//! Command-line pieces every task binary shares, so that the same flag means the same thing everywhere:
//! the training flags, how they map onto configuration keys, how a `train` command runs alone or as
//! one rank of a data-parallel group, and how errors become exit codes.

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::{
    dist::{
        ProcessGroup,
        launch::{self, LaunchArgs, Role},
    },
    run::RunDir,
    train::{C10dParallel, FitSummary, Parallel, SingleProcess, TrainConfig},
    weights::WeightsSource,
};

/// Flags of `<task> train` (and of `<task> run`, which trains, evaluates and predicts end to end).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrainArgs {
    /// Data set: a directory in the task's layout, a CSV file (classify), or an embedded data set name.
    #[arg(long)]
    pub data: Option<String>,
    /// Backbone architecture, e.g. resnet18, vgg16_bn, efficientnet_b0, efficientnet_lite0.
    #[arg(long)]
    pub backbone: Option<String>,
    /// Initial weights: `imagenet` (weights shipped by a registry package), `none`, or a checkpoint file
    /// (.pth, .pt, .bin or .safetensors).
    #[arg(long)]
    pub weights: Option<WeightsSource>,
    /// Transfer strategy: feature-extract (backbone frozen), fine-tune (last N stages train) or scratch.
    #[arg(long)]
    pub strategy: Option<String>,
    /// With fine-tune: how many backbone stages train, counted from the last (torchvision's convention).
    #[arg(long)]
    pub trainable_layers: Option<usize>,
    /// Number of training epochs (0 = scale with the data set's size).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training budget in minutes: the epoch count and the learning-rate schedule are refitted after
    /// every epoch so that training ends within it (as Ultralytics' `time=`).
    #[arg(long, value_name = "MINUTES")]
    pub time: Option<f64>,
    /// Input size in pixels (square).
    #[arg(long)]
    pub img_size: Option<i64>,
    /// Images per batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Device: cpu, cuda or auto.
    #[arg(long)]
    pub device: Option<String>,
    /// Configuration file (TOML); defaults to the task's built-in defaults.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Override a configuration key, e.g. `--set train.lr=0.01` (repeatable; applied last).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run name: the run directory is `<project>/<task>/<name>` (default train, train2, ...).
    #[arg(long)]
    pub name: Option<String>,
    /// Folder that holds the run directories.
    #[arg(long, default_value = "runs")]
    pub project: PathBuf,
    /// Continue the run named by --name from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Print the final metrics as one JSON object on stdout (human-readable output goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Which trained model `<task> predict` runs, and on which images.
#[derive(Debug, Clone, clap::Args)]
pub struct PredictModelArgs {
    /// A trained run directory.
    #[arg(long, required_unless_present = "onnx", conflicts_with = "onnx")]
    pub run: Option<PathBuf>,
    /// An ONNX file written by this task's `export`, run by tract (no libtorch in the forward pass).
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// Images.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// The model of [`PredictModelArgs`].
#[derive(Debug, Clone, Copy)]
pub enum PredictSource<'a> {
    /// A run directory, run by libtorch.
    Run(&'a std::path::Path),
    /// An exported ONNX file, run by tract.
    Onnx(&'a std::path::Path),
}

impl PredictModelArgs {
    /// The model to run, after checking that every image exists.
    pub fn source(&self) -> anyhow::Result<PredictSource<'_>> {
        if let Some(missing) = self.images.iter().find(|p| !p.exists()) {
            anyhow::bail!("{} does not exist", missing.display());
        }
        match (&self.run, &self.onnx) {
            (_, Some(file)) => Ok(PredictSource::Onnx(file)),
            (Some(dir), None) => Ok(PredictSource::Run(dir)),
            (None, None) => anyhow::bail!("give --run RUN_DIR or --onnx FILE"),
        }
    }
}

/// Flags of `<task> eval`: the run to evaluate, and on which data.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The run directory to evaluate.
    #[arg(long)]
    pub run: PathBuf,
    /// Data set (default: the run's own).
    #[arg(long)]
    pub data: Option<String>,
    /// Print the metrics as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl TrainArgs {
    /// The configuration overrides these flags stand for, followed by the `--set` ones.
    ///
    /// Every task's configuration uses the same keys for them: `data.path`, `data.img_size`,
    /// `model.backbone`, `model.weights`, `model.strategy`, `model.trainable_layers`, `train.epochs`,
    /// `train.time`, `train.batch`, `train.device`.
    pub fn overrides(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                out.push(format!("{key}={}", quote(&v)));
            }
        };
        push("data.path", self.data.clone());
        push("data.img_size", self.img_size.map(|v| v.to_string()));
        push("model.backbone", self.backbone.clone());
        push("model.weights", self.weights.as_ref().map(WeightsSource::to_string));
        push("model.strategy", self.strategy.clone());
        push("model.trainable_layers", self.trainable_layers.map(|v| v.to_string()));
        push("train.epochs", self.epochs.map(|v| v.to_string()));
        push("train.time", self.time.map(|v| format!("{v:?}")));
        push("train.batch", self.batch.map(|v| v.to_string()));
        push("train.device", self.device.clone());
        out.extend(self.set.iter().cloned());
        out
    }
}

impl TrainArgs {
    /// The task's configuration: the preset `preset` (or the defaults), the `--config` file, then the
    /// `first` overrides (what a task's own flags stand for, such as its `--model`), then [`Self::overrides`].
    pub fn load_config<T: crate::config::Preset>(
        &self,
        preset: Option<&str>,
        first: Vec<String>,
    ) -> Result<T, crate::config::ConfigError> {
        let overrides: Vec<String> = first.into_iter().chain(self.overrides()).collect();
        crate::config::load_preset(preset, self.config.as_deref(), &overrides)
    }

    /// The run directory of `task`: a new `<project>/<task>/<name>` (or `train`, `train2`, ...), or with
    /// `--resume` the existing one named by `--name` (see [`RunDir::create_or_resume`]); says which.
    pub fn open_run(&self, task: &str) -> crate::Result<RunDir> {
        let run = RunDir::create_or_resume(&self.project, task, self.name.as_deref(), "train", self.resume)?;
        eprintln!("run directory: {}", run.root().display());
        Ok(run)
    }
}

/// Runs a `train` command's `body` in this process's role ([`LaunchArgs::role`]), with the run
/// directory that [`TrainArgs::open_run`] opens for `task`; see [`run_processes`].
pub fn train_processes(
    launch: &LaunchArgs,
    args: &TrainArgs,
    task: &str,
    train: &TrainConfig,
    body: impl FnOnce(&RunDir, &dyn Parallel) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let ranks = Ranks { timeout_s: train.dist_timeout, sync_bn: train.sync_bn };
    run_processes(launch, ranks, || Ok(args.open_run(task)?), body)
}

/// How the ranks of a data-parallel command work together.
#[derive(Debug, Clone, Copy)]
pub struct Ranks {
    /// Seconds a rendezvous or collective waits for the other ranks (at least 1).
    pub timeout_s: f64,
    /// Synchronised batch norm ([`C10dParallel::new`]).
    pub sync_bn: bool,
}

/// Runs a training command's `body` in this process's role ([`LaunchArgs::role`]). As a launcher it
/// starts `--nproc-per-node` workers that run the same command line and exits with the first failure's
/// code. As a rank it joins the group, rank 0 opens the run directory with `open_run` and sends its
/// path to the others, and `body` trains this rank's shard. Alone it opens the run directory and trains.
pub fn run_processes(
    launch: &LaunchArgs,
    ranks: Ranks,
    open_run: impl FnOnce() -> anyhow::Result<RunDir>,
    body: impl FnOnce(&RunDir, &dyn Parallel) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match launch.role()? {
        Role::Launcher => match launch::launch_local(launch)? {
            0 => Ok(()),
            code => std::process::exit(code),
        },
        Role::Worker(env) => {
            let timeout = Duration::from_secs_f64(ranks.timeout_s.max(1.0));
            let group = Arc::new(ProcessGroup::connect(&env.group_options(timeout))?);
            let parallel = C10dParallel::new(Arc::clone(&group), ranks.sync_bn);
            let run = if parallel.is_main() { Some(open_run()?) } else { None };
            let path = run.as_ref().map(|r| r.root().to_string_lossy().into_owned()).unwrap_or_default();
            let path = String::from_utf8(parallel.broadcast_bytes(path.into_bytes())?)?;
            let run = match run {
                Some(run) => run,
                None => RunDir::of_main_rank(std::path::Path::new(&path)),
            };
            body(&run, &parallel)
        }
        Role::Single => body(&open_run()?, &SingleProcess),
    }
}

/// The end of a `train` command on one rank: an interrupted fit is an error (exit code 130), and with
/// `json` the main rank prints `summary()` as one line on stdout.
pub fn finish_training(
    fit: &FitSummary,
    parallel: &dyn Parallel,
    json: bool,
    summary: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    if fit.interrupted {
        anyhow::bail!(crate::Error::Interrupted);
    }
    if json && parallel.is_main() {
        println!("{}", summary()?);
    }
    Ok(())
}

/// Quotes a flag's value as a TOML string for an override, so that `--data 123` stays a path; numbers and
/// booleans pass unquoted.
pub fn quote(value: &str) -> String {
    if value.parse::<f64>().is_ok() || value == "true" || value == "false" {
        value.to_string()
    } else {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// A task binary's `main`: keeps freed memory for reuse ([`crate::alloc::keep_freed_memory`]), parses
/// the command line and runs `run` through [`exit_on_error`].
pub fn main<C: clap::Parser>(run: fn(C) -> anyhow::Result<()>) -> ! {
    crate::alloc::keep_freed_memory();
    exit_on_error(run(C::parse()))
}

/// Runs a binary's body: prints an error as one line on stderr and exits with code 2 (a usage, data,
/// configuration or checkpoint problem), or 130 after an interrupt.
pub fn exit_on_error(result: anyhow::Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(err) => {
            let interrupted =
                err.chain().any(|c| matches!(c.downcast_ref::<crate::Error>(), Some(crate::Error::Interrupted)));
            let message = format!("{err:#}").replace('\n', " ");
            eprintln!("error: {message}");
            std::process::exit(if interrupted { 130 } else { 2 });
        }
    }
}

/// Parses an override list entry's key, for messages.
pub fn override_key(item: &str) -> &str {
    item.split_once('=').map(|(k, _)| k.trim()).unwrap_or(item)
}
