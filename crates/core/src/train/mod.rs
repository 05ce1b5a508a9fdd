//! The training loop every task shares. A task implements [`Task`] (its data, one step, validation);
//! [`fit`] does the orchestration: epochs, schedule, optimiser, clipping, early stopping, checkpoints,
//! `--resume`, Ctrl-C and non-finite losses, `results.csv` and progress.

pub mod budget;
pub mod config;
pub mod memory;
pub mod optim;
pub mod parallel;
pub mod schedule;
mod state;

use std::{
    collections::{BTreeMap, HashMap},
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn::VarStore};

pub use config::{BnMode, Precision, TrainConfig};
pub use optim::{Optimizer, OptimizerKind, OptimizerParams, Param, trainable_params};
pub use parallel::{C10dParallel, Parallel, SingleProcess, shard_padded, sorted_variables};
pub use schedule::{Schedule, ScheduleKind};
pub use state::{EpochRecord, TrainerState, proc_status_mb};

use crate::{Error, Result, progress::Progress, run::RunDir};

/// What one training step returns.
#[derive(Debug)]
pub struct StepOutput {
    /// The scalar loss to back-propagate.
    pub loss: Tensor,
    /// Named loss terms for logging (their sum is usually `loss`).
    pub terms: Vec<(String, f64)>,
    /// Images in the batch.
    pub samples: usize,
}

/// Validation results: named values, one of which decides "best".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// Metric values by name.
    pub values: BTreeMap<String, f64>,
    /// Name of the metric that selects the best checkpoint (higher is better).
    pub primary: String,
}

impl Metrics {
    /// The primary metric's value.
    pub fn primary_value(&self) -> f64 {
        self.values.get(&self.primary).copied().unwrap_or(f64::NAN)
    }
}

/// An epoch's batches, owned so that the task can be borrowed mutably while they are consumed.
pub type Batches<B> = Box<dyn Iterator<Item = Result<B>> + Send>;

/// Per-task training code, separate from the orchestration in [`fit`].
pub trait Task {
    /// One mini-batch, ready for [`Task::train_step`].
    type Batch;
    /// The variables to optimise and checkpoint.
    fn var_store(&self) -> &VarStore;
    /// Called before each epoch (0-based), e.g. to unfreeze a stage or turn mosaic off.
    fn on_epoch_start(&mut self, _epoch: usize, _epochs: usize) -> Result<()> {
        Ok(())
    }
    /// Number of batches in one epoch for this shard (for progress and the schedule).
    fn batches_per_epoch(&self, parallel: &dyn Parallel) -> usize;
    /// The batches of `epoch`, for this process's shard, in a deterministic order for a given seed.
    fn train_batches(&mut self, epoch: usize, parallel: &dyn Parallel) -> Result<Batches<Self::Batch>>;
    /// Forward pass and loss on one batch in training mode.
    fn train_step(&mut self, batch: Self::Batch) -> Result<StepOutput>;
    /// Evaluates on the validation split.
    fn validate(&mut self, epoch: usize) -> Result<Metrics>;
    /// The factor on the learning rate of the backbone variable `name` (group 0), on top of
    /// `backbone_lr_scale`: layer-wise decay gives earlier stages less. 1 by default.
    fn lr_multiplier(&self, _name: &str) -> f64 {
        1.0
    }
}

/// How [`fit`] should start.
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    /// Continue from `weights/last.safetensors` and its optimiser state.
    pub resume: bool,
    /// Stop after this many epochs in this invocation (the run can be resumed later).
    pub max_epochs_this_run: Option<usize>,
}

/// What [`fit`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitSummary {
    /// One record per finished epoch, resumed ones included.
    pub history: Vec<EpochRecord>,
    /// Epoch (0-based) of the best validation metric.
    pub best_epoch: Option<usize>,
    /// The best validation metric.
    pub best_metric: Option<f64>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Whether Ctrl-C ended the run.
    pub interrupted: bool,
    /// Training wall time of this invocation, in seconds.
    pub seconds: f64,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static HANDLER: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// Installs the Ctrl-C handler: the first Ctrl-C stops after the current step, a second one exits.
pub fn install_interrupt_handler() {
    HANDLER.get_or_init(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupt: stopping after the current step (Ctrl-C again to quit now)");
        });
    });
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Trains `task` per `cfg`, writing checkpoints, `results.csv` and the trainer state into `run`.
pub fn fit<T: Task>(
    task: &mut T,
    cfg: &TrainConfig,
    run: &RunDir,
    parallel: &dyn Parallel,
    opts: &FitOptions,
) -> Result<FitSummary> {
    install_interrupt_handler();
    let started = Instant::now();
    let steps_per_epoch = task.batches_per_epoch(parallel).max(1);
    // `train.epochs = 0` scales with the data; `train.time` refits the count after every epoch.
    let mut epochs = budget::resolve_epochs(cfg.epochs, steps_per_epoch);
    let mut schedule = Schedule {
        kind: cfg.schedule,
        warmup_steps: (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize,
        warmup_start: 0.1,
        total_steps: epochs * steps_per_epoch,
        steps_per_epoch,
        step_size: cfg.step_size,
        gamma: cfg.gamma,
        min_lr_ratio: cfg.min_lr_ratio,
    };
    let new_optimizer = || {
        Optimizer::new(OptimizerParams {
            kind: cfg.optimizer,
            weight_decay: cfg.weight_decay,
            momentum: cfg.momentum,
            beta2: 0.999,
            eps: 1e-8,
            nesterov: false,
        })
    };
    let mut optimizer = new_optimizer();
    let mut state = TrainerState::default();
    if opts.resume && !run.last_weights().is_file() {
        // Stopped before the first checkpoint: nothing to continue, so the run starts over.
        eprintln!("resume: no checkpoint in {} yet; starting from epoch 1", run.root().display());
    } else if opts.resume {
        state = state::restore(task.var_store(), &mut optimizer, run)?;
        eprintln!("resuming at epoch {}, step {}", state.next_epoch + 1, state.global_step);
        // A kill between the checkpoint commit and the results.csv rewrite leaves the file one row short;
        // the checkpoint's history is the truth, so the file is rebuilt from it before anything else.
        if parallel.is_main() {
            state::write_results_csv(&state.history, &run.results_csv())?;
        }
    }
    // Every rank starts from rank 0's weights and statistics (DDP's broadcast at construction).
    parallel.broadcast_tensors(&parallel::sorted_variables(task.var_store()))?;
    let mut lr_scale = 1.0;
    let mut summary = FitSummary {
        history: state.history.clone(),
        best_epoch: state.best_epoch,
        best_metric: state.best_metric,
        stopped_early: false,
        interrupted: false,
        seconds: 0.0,
    };
    let first_epoch = state.next_epoch;
    // With `retry_lower_lr`, the weights, optimiser and trainer state at the start of the epoch, to
    // go back to on a non-finite loss.
    let mut snapshot: Option<(NamedTensors, NamedTensors, TrainerState)> = None;
    'epochs: while state.next_epoch < epochs {
        let epoch = state.next_epoch;
        if opts.max_epochs_this_run.is_some_and(|n| epoch >= first_epoch + n) {
            break;
        }
        tch::manual_seed(cfg.seed as i64 + epoch as i64);
        task.on_epoch_start(epoch, epochs)?;
        let epoch_start = Instant::now();
        let progress = Progress::bar(steps_per_epoch as u64, &format!("epoch {}/{}", epoch + 1, epochs));
        let mut totals: HashMap<String, f64> = HashMap::new();
        let (mut samples, mut batches) = (0usize, 0usize);
        let skip = state.batches_done_in_epoch;
        if cfg.retry_lower_lr && lr_scale == 1.0 {
            snapshot = Some((
                copy_tensors(task.var_store().variables()),
                copy_tensors(optimizer.state_tensors()),
                state.clone(),
            ));
        }
        for (index, batch) in task.train_batches(epoch, parallel)?.enumerate() {
            if index < skip {
                continue;
            }
            let out = memory::guard_oom(cfg.batch, || task.train_step(batch?))?;
            let loss_value = out.loss.double_value(&[]);
            if !loss_value.is_finite() {
                if let Some((vars, optim, saved)) = snapshot.take() {
                    eprintln!(
                        "non-finite loss at epoch {}, step {}: retrying the epoch once with lr / 10",
                        epoch + 1,
                        index + 1
                    );
                    restore_tensors(task.var_store(), &vars)?;
                    optimizer = new_optimizer();
                    optimizer.load_state_tensors(optim, task.var_store().device())?;
                    state = saved;
                    lr_scale = 0.1;
                    continue 'epochs;
                }
                return Err(Error::NonFiniteLoss { epoch: epoch + 1, step: index + 1, value: loss_value });
            }
            let params = trainable_params(task.var_store());
            let factor = schedule.factor(state.global_step) * lr_scale;
            let head_lr = cfg.lr * factor;
            let backbone_lr = head_lr * cfg.backbone_lr_scale;
            let lrs: Vec<f64> = params
                .iter()
                .map(|p| if p.group == 0 { backbone_lr * task.lr_multiplier(&p.name) } else { head_lr })
                .collect();
            memory::guard_oom(cfg.batch, || {
                Optimizer::zero_grad(&params);
                out.loss.f_backward()?;
                let grads: Vec<Tensor> = params.iter().map(|p| p.tensor.grad()).filter(|g| g.defined()).collect();
                parallel.all_reduce_grads(&grads)?;
                if cfg.grad_clip > 0.0 {
                    Optimizer::clip_grad_norm(&params, cfg.grad_clip);
                }
                optimizer.step(&params, &lrs);
                Ok(())
            })?;
            state.global_step += 1;
            state.batches_done_in_epoch = index + 1;
            for (name, value) in &out.terms {
                *totals.entry(name.clone()).or_default() += value * out.samples as f64;
            }
            samples += out.samples;
            batches += 1;
            let rate = samples as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            progress.inc(1);
            progress.set_message(format!("loss {loss_value:.4}  {rate:.1} img/s  lr {head_lr:.2e}"));
            if interrupted() {
                break;
            }
        }
        let seconds = epoch_start.elapsed().as_secs_f64();
        if interrupted() {
            progress.finish(&format!("epoch {} interrupted after {} batches", epoch + 1, state.batches_done_in_epoch));
            if parallel.is_main() {
                state::save(task.var_store(), &optimizer, &state, run)?;
            }
            summary.interrupted = true;
            eprintln!(
                "stopped; weights in {}. Resume with the same command plus --resume --name {}",
                run.last_weights().display(),
                run.root().file_name().and_then(|n| n.to_str()).unwrap_or("NAME")
            );
            break;
        }
        if batches == 0 && skip == 0 {
            return Err(Error::Invalid(format!(
                "epoch {}: no training sample could be loaded (every one was skipped); check the data",
                epoch + 1
            )));
        }
        let mut sums: Vec<f64> = vec![samples as f64, batches as f64];
        parallel.all_reduce_sum(&mut sums)?;
        let train: BTreeMap<String, f64> = totals.into_iter().map(|(k, v)| (k, v / samples.max(1) as f64)).collect();
        let metrics = task.validate(epoch)?;
        let primary = metrics.primary_value();
        let improved = primary.is_finite() && state.best_metric.is_none_or(|best| primary > best);
        if improved {
            state.best_metric = Some(primary);
            state.best_epoch = Some(epoch);
            state.bad_epochs = 0;
        } else if primary.is_finite() {
            // An epoch without the metric (e.g. mAP computed every few epochs) is no evidence either way.
            state.bad_epochs += 1;
        }
        let record = EpochRecord {
            epoch,
            lr: cfg.lr * schedule.factor(state.global_step.saturating_sub(1)) * lr_scale,
            train,
            val: metrics.values.clone(),
            seconds,
            images_per_sec: samples as f64 / seconds.max(1e-9),
            samples: sums[0] as usize,
            rss_mb: state::proc_status_mb("VmRSS").unwrap_or(0.0),
        };
        progress.finish(&record.summary_line(&metrics.primary));
        state.history.push(record);
        state.next_epoch = epoch + 1;
        state.batches_done_in_epoch = 0;
        if parallel.is_main() {
            if improved {
                let mut meta = HashMap::new();
                meta.insert("epoch".to_string(), epoch.to_string());
                meta.insert(metrics.primary.clone(), primary.to_string());
                crate::checkpoint::save_safetensors(task.var_store(), &run.best_weights(), Some(meta))?;
            }
            state::save(task.var_store(), &optimizer, &state, run)?;
            state::write_results_csv(&state.history, &run.results_csv())?;
        }
        summary.history = state.history.clone();
        summary.best_epoch = state.best_epoch;
        summary.best_metric = state.best_metric;
        if cfg.time > 0.0 {
            let fitted =
                budget::fit_to_budget(cfg.time * 60.0, started.elapsed().as_secs_f64(), first_epoch, state.next_epoch);
            if fitted != epochs {
                eprintln!("time budget of {} min: {fitted} epochs in all (was {epochs})", cfg.time);
                epochs = fitted;
                schedule.total_steps = epochs * steps_per_epoch;
            }
        }
        if cfg.patience > 0 && state.bad_epochs >= cfg.patience {
            eprintln!("early stopping: no improvement of {} for {} epochs", metrics.primary, cfg.patience);
            summary.stopped_early = true;
            break;
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Named tensors (variables or optimiser buffers).
type NamedTensors = Vec<(String, Tensor)>;

/// Detached copies of named tensors (a snapshot that later steps do not change).
fn copy_tensors(vars: impl IntoIterator<Item = (String, Tensor)>) -> NamedTensors {
    tch::no_grad(|| vars.into_iter().map(|(n, t)| (n, t.detach().copy())).collect())
}

/// Writes a snapshot from [`copy_tensors`] back into the variables.
fn restore_tensors(vs: &VarStore, saved: &[(String, Tensor)]) -> Result<()> {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, value) in saved {
            if let Some(v) = vars.get(name) {
                v.shallow_clone().f_copy_(value)?;
            }
        }
        Ok(())
    })
}
