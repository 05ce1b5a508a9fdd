//! [`fit`] in pieces: one [`Trainer`] holds the optimiser, the schedule and the trainer state, and
//! each piece does one thing: resuming ([`Trainer::resume`]), one epoch of steps
//! ([`Trainer::train_epoch`]), one optimiser step ([`Trainer::step`]), the non-finite-loss retry
//! ([`Snapshot`]), validation and best-epoch tracking ([`Trainer::close_epoch`]), checkpoint and
//! `results.csv` bookkeeping ([`Trainer::save`]), the time budget ([`Trainer::refit_to_budget`])
//! and early stopping ([`Trainer::should_stop_early`]). Slightly past 450 lines: the pieces share the
//! trainer's state, so they stay in one file.

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use tch::{Tensor, nn::VarStore};

use super::{
    EpochRecord, FitOptions, FitSummary, Metrics, Optimizer, OptimizerParams, Parallel, Schedule, StepOutput, Task,
    TrainConfig, TrainerState, budget, memory, reporter::StepProgress, state, trainable_params,
};
use crate::{Error, Result, run::RunDir};

/// Optimiser group of the backbone (the others train at the head's rate); see
/// [`crate::backbones::BACKBONE_GROUP`].
const BACKBONE_GROUP: usize = crate::backbones::BACKBONE_GROUP;
/// Learning-rate factor of the warmup's first step.
const WARMUP_START: f64 = 0.1;
/// Learning-rate factor after a non-finite loss (`train.retry_lower_lr`).
const RETRY_LR_SCALE: f64 = 0.1;

/// Trains `task` per `cfg`, writing checkpoints, `results.csv` and the trainer state into `run`.
pub fn fit<T: Task>(
    task: &mut T,
    cfg: &TrainConfig,
    run: &RunDir,
    parallel: &dyn Parallel,
    opts: &FitOptions,
) -> Result<FitSummary> {
    // Only the main rank reports (the others train the same epochs on their shards).
    let quiet;
    let opts = if parallel.is_main() {
        opts
    } else {
        quiet = FitOptions { reporter: std::sync::Arc::new(super::SilentReporter), ..opts.clone() };
        &quiet
    };
    let mut trainer = Trainer::new(task, cfg, run, parallel, opts);
    if opts.resume {
        trainer.resume()?;
    }
    // Every rank starts from rank 0's weights and statistics (DDP's broadcast at construction).
    parallel.broadcast_tensors(&super::parallel::sorted_variables(trainer.task.var_store()))?;
    let mut summary = trainer.summary();
    let first_epoch = trainer.state.next_epoch;
    // With `retry_lower_lr`, the weights, optimiser and trainer state at the start of the epoch, to
    // go back to on a non-finite loss.
    let mut snapshot: Option<Snapshot> = None;
    while trainer.state.next_epoch < trainer.epochs {
        let epoch = trainer.state.next_epoch;
        if opts.max_epochs_this_run.is_some_and(|n| epoch >= first_epoch + n) {
            break;
        }
        match trainer.train_epoch(epoch, &mut snapshot)? {
            EpochEnd::Retried => continue,
            EpochEnd::Interrupted => {
                summary.interrupted = true;
                break;
            }
            EpochEnd::Trained(totals) => {
                let metrics = trainer.close_epoch(epoch, totals)?;
                summary = trainer.summary();
                trainer.refit_to_budget(first_epoch);
                if trainer.should_stop_early(&metrics) {
                    summary.stopped_early = true;
                    break;
                }
            }
        }
    }
    summary.seconds = trainer.started.elapsed().as_secs_f64();
    Ok(summary)
}

/// How an epoch of steps ended.
enum EpochEnd {
    /// Every batch trained.
    Trained(EpochTotals),
    /// A non-finite loss sent the run back to the epoch's start at a lower learning rate.
    Retried,
    /// A stop was asked for; a resumable checkpoint is saved.
    Interrupted,
}

/// Loss sums and counts of an epoch's steps.
#[derive(Default)]
struct EpochTotals {
    /// Sample-weighted sums of the loss terms.
    terms: HashMap<String, f64>,
    samples: usize,
    batches: usize,
    /// Batches skipped because an interrupted run had trained them already.
    resumed_from: usize,
    seconds: f64,
}

/// What a step did.
enum StepEnd {
    /// The weights moved; the step's loss and head learning rate.
    Trained { loss: f64, lr: f64 },
    /// The loss was not finite; nothing changed.
    NonFinite(f64),
}

/// Weights, optimiser buffers and trainer state at the start of an epoch (detached copies).
struct Snapshot {
    vars: NamedTensors,
    optim: NamedTensors,
    state: TrainerState,
}

/// Named tensors (variables or optimiser buffers).
type NamedTensors = Vec<(String, Tensor)>;

/// The training loop's state between its pieces.
struct Trainer<'a, T: Task> {
    task: &'a mut T,
    cfg: &'a TrainConfig,
    run: &'a RunDir,
    parallel: &'a dyn Parallel,
    opts: &'a FitOptions,
    steps_per_epoch: usize,
    /// The epochs to train: `train.epochs`, or the automatic count for 0, refitted by `train.time`.
    epochs: usize,
    schedule: Schedule,
    optimizer: Optimizer,
    state: TrainerState,
    /// 1, or [`RETRY_LR_SCALE`] after a retry.
    lr_scale: f64,
    /// When this invocation started (the time budget counts from here).
    started: Instant,
}

impl<'a, T: Task> Trainer<'a, T> {
    fn new(
        task: &'a mut T,
        cfg: &'a TrainConfig,
        run: &'a RunDir,
        parallel: &'a dyn Parallel,
        opts: &'a FitOptions,
    ) -> Self {
        let steps_per_epoch = task.batches_per_epoch(parallel).max(1);
        let epochs = budget::resolve_epochs(cfg.epochs, steps_per_epoch);
        let schedule = Schedule {
            kind: cfg.schedule,
            warmup_steps: (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize,
            warmup_start: WARMUP_START,
            total_steps: epochs * steps_per_epoch,
            steps_per_epoch,
            step_size: cfg.step_size,
            gamma: cfg.gamma,
            min_lr_ratio: cfg.min_lr_ratio,
        };
        let optimizer = new_optimizer(cfg);
        Self {
            task,
            cfg,
            run,
            parallel,
            opts,
            steps_per_epoch,
            epochs,
            schedule,
            optimizer,
            state: TrainerState::default(),
            lr_scale: 1.0,
            started: Instant::now(),
        }
    }

    /// Continues from `weights/last.safetensors` and its optimiser state, or starts over when the run
    /// stopped before its first checkpoint.
    fn resume(&mut self) -> Result<()> {
        let reporter = &self.opts.reporter;
        if !self.run.last_weights().is_file() {
            reporter
                .note(&format!("resume: no checkpoint in {} yet; starting from epoch 1", self.run.root().display()));
            return Ok(());
        }
        self.state = state::restore(self.task.var_store(), &mut self.optimizer, self.run)?;
        reporter.note(&format!("resuming at epoch {}, step {}", self.state.next_epoch + 1, self.state.global_step));
        // A kill between the checkpoint commit and the results.csv rewrite leaves the file one row short;
        // the checkpoint's history is the truth, so the file is rebuilt from it before anything else.
        if self.parallel.is_main() {
            state::write_results_csv(&self.state.history, &self.run.results_csv())?;
        }
        Ok(())
    }

    /// The summary of what has been trained so far.
    fn summary(&self) -> FitSummary {
        FitSummary {
            history: self.state.history.clone(),
            best_epoch: self.state.best_epoch,
            best_metric: self.state.best_metric,
            stopped_early: false,
            interrupted: false,
            seconds: 0.0,
        }
    }

    /// Trains the steps of `epoch` (after those an interrupted run already trained).
    fn train_epoch(&mut self, epoch: usize, snapshot: &mut Option<Snapshot>) -> Result<EpochEnd> {
        tch::manual_seed(self.cfg.seed as i64 + epoch as i64);
        self.task.on_epoch_start(epoch, self.epochs)?;
        let epoch_start = Instant::now();
        self.opts.reporter.epoch_start(epoch, self.epochs, self.steps_per_epoch);
        let mut totals = EpochTotals { resumed_from: self.state.batches_done_in_epoch, ..EpochTotals::default() };
        if self.cfg.retry_lower_lr && self.lr_scale == 1.0 {
            *snapshot = Some(self.snapshot());
        }
        for (index, batch) in self.task.train_batches(epoch, self.parallel)?.enumerate() {
            if index < totals.resumed_from {
                continue;
            }
            let out = memory::guard_oom(self.cfg.batch, || self.task.train_step(batch?, self.parallel))?;
            let (loss, lr) = match self.step(&out)? {
                StepEnd::Trained { loss, lr } => (loss, lr),
                StepEnd::NonFinite(value) => {
                    return match snapshot.take() {
                        Some(saved) => {
                            self.retry(epoch, index, saved)?;
                            Ok(EpochEnd::Retried)
                        }
                        None => Err(Error::NonFiniteLoss { epoch: epoch + 1, step: index + 1, value }),
                    };
                }
            };
            self.state.batches_done_in_epoch = index + 1;
            for (name, value) in &out.terms {
                *totals.terms.entry(name.clone()).or_default() += value * out.samples as f64;
            }
            totals.samples += out.samples;
            totals.batches += 1;
            let images_per_sec = totals.samples as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            self.opts.reporter.step(&StepProgress { loss, images_per_sec, lr });
            if self.opts.stop.is_set() {
                break;
            }
        }
        totals.seconds = epoch_start.elapsed().as_secs_f64();
        if self.opts.stop.is_set() {
            self.interrupt(epoch)?;
            return Ok(EpochEnd::Interrupted);
        }
        if totals.batches == 0 && totals.resumed_from == 0 {
            return Err(Error::Invalid(format!(
                "epoch {}: no training sample could be loaded (every one was skipped); check the data",
                epoch + 1
            )));
        }
        Ok(EpochEnd::Trained(totals))
    }

    /// Back-propagates one step's loss and updates the weights at the scheduled learning rates; a
    /// non-finite loss changes nothing.
    fn step(&mut self, out: &StepOutput) -> Result<StepEnd> {
        let loss_value = out.loss.double_value(&[]);
        if !loss_value.is_finite() {
            return Ok(StepEnd::NonFinite(loss_value));
        }
        let params = trainable_params(self.task.var_store());
        let head_lr = self.lr_at(self.state.global_step);
        let backbone_lr = head_lr * self.cfg.backbone_lr_scale;
        let lrs: Vec<f64> = params
            .iter()
            .map(|p| if p.group == BACKBONE_GROUP { backbone_lr * self.task.lr_multiplier(&p.name) } else { head_lr })
            .collect();
        let (optimizer, parallel, grad_clip) = (&mut self.optimizer, self.parallel, self.cfg.grad_clip);
        memory::guard_oom(self.cfg.batch, || {
            Optimizer::zero_grad(&params);
            out.loss.f_backward()?;
            let grads: Vec<Tensor> = params.iter().map(|p| p.tensor.grad()).filter(|g| g.defined()).collect();
            parallel.all_reduce_grads(&grads)?;
            if grad_clip > 0.0 {
                Optimizer::clip_grad_norm(&params, grad_clip);
            }
            optimizer.step(&params, &lrs);
            Ok(())
        })?;
        self.state.global_step += 1;
        Ok(StepEnd::Trained { loss: loss_value, lr: head_lr })
    }

    /// Detached copies of the weights, optimiser buffers and trainer state.
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            vars: copy_tensors(self.task.var_store().variables()),
            optim: copy_tensors(self.optimizer.state_tensors()),
            state: self.state.clone(),
        }
    }

    /// Goes back to `saved` and trains on at a tenth of the learning rate.
    fn retry(&mut self, epoch: usize, index: usize, saved: Snapshot) -> Result<()> {
        self.opts.reporter.note(&format!(
            "non-finite loss at epoch {}, step {}: retrying the epoch once with lr / 10",
            epoch + 1,
            index + 1
        ));
        restore_tensors(self.task.var_store(), &saved.vars)?;
        self.optimizer = new_optimizer(self.cfg);
        self.optimizer.load_state_tensors(saved.optim, self.task.var_store().device())?;
        self.state = saved.state;
        self.lr_scale = RETRY_LR_SCALE;
        Ok(())
    }

    /// Saves a resumable checkpoint after a stop was asked for in `epoch`.
    fn interrupt(&mut self, epoch: usize) -> Result<()> {
        let reporter = &self.opts.reporter;
        reporter.epoch_end(&format!(
            "epoch {} interrupted after {} batches",
            epoch + 1,
            self.state.batches_done_in_epoch
        ));
        if self.parallel.is_main() {
            state::save(self.task.var_store(), &self.optimizer, &self.state, self.run)?;
        }
        reporter.note(&format!(
            "stopped; weights in {}. Resume with the same command plus --resume --name {}",
            self.run.last_weights().display(),
            self.run.root().file_name().and_then(|n| n.to_str()).unwrap_or("NAME")
        ));
        Ok(())
    }

    /// Validates, records the epoch, tracks the best metric and saves; returns the metrics.
    fn close_epoch(&mut self, epoch: usize, totals: EpochTotals) -> Result<Metrics> {
        let mut sums: Vec<f64> = vec![totals.samples as f64, totals.batches as f64];
        self.parallel.all_reduce_sum(&mut sums)?;
        let samples = totals.samples.max(1) as f64;
        let train: BTreeMap<String, f64> = totals.terms.into_iter().map(|(k, v)| (k, v / samples)).collect();
        let metrics = self.task.validate(epoch, self.parallel)?;
        let primary = metrics.primary_value();
        let improved = primary.is_finite() && self.state.best_metric.is_none_or(|best| primary > best);
        if improved {
            self.state.best_metric = Some(primary);
            self.state.best_epoch = Some(epoch);
            self.state.bad_epochs = 0;
        } else if primary.is_finite() {
            // An epoch without the metric (e.g. mAP computed every few epochs) is no evidence either way.
            self.state.bad_epochs += 1;
        }
        let record = EpochRecord {
            epoch,
            lr: self.lr_at(self.state.global_step.saturating_sub(1)),
            train,
            val: metrics.values.clone(),
            seconds: totals.seconds,
            images_per_sec: totals.samples as f64 / totals.seconds.max(1e-9),
            samples: sums[0] as usize,
            rss_mb: state::proc_status_mb("VmRSS").unwrap_or(0.0),
        };
        self.opts.reporter.epoch_end(&record.summary_line(&metrics.primary));
        self.state.history.push(record);
        self.state.next_epoch = epoch + 1;
        self.state.batches_done_in_epoch = 0;
        self.save(epoch, improved.then_some((&metrics.primary, primary)))?;
        Ok(metrics)
    }

    /// Writes `best.safetensors` when `epoch` improved (`(metric, value)`), the resumable checkpoint
    /// and `results.csv` (the main process only).
    fn save(&self, epoch: usize, improved: Option<(&String, f64)>) -> Result<()> {
        if !self.parallel.is_main() {
            return Ok(());
        }
        if let Some((metric, value)) = improved {
            let mut meta = HashMap::new();
            meta.insert("epoch".to_string(), epoch.to_string());
            meta.insert(metric.clone(), value.to_string());
            crate::checkpoint::save_safetensors(self.task.var_store(), &self.run.best_weights(), Some(meta))?;
        }
        state::save(self.task.var_store(), &self.optimizer, &self.state, self.run)?;
        state::write_results_csv(&self.state.history, &self.run.results_csv())
    }

    /// The head's learning rate at `step`: the schedule, over the budget's spent fraction under
    /// `train.time` (so it only falls when the epoch count is refitted), and the retry scale.
    fn lr_at(&self, step: usize) -> f64 {
        let spent = self.budget_seconds().map(|budget| self.started.elapsed().as_secs_f64() / budget);
        self.cfg.lr * self.schedule.factor_at(step, spent) * self.lr_scale
    }

    /// `train.time` in seconds, when a budget is set.
    fn budget_seconds(&self) -> Option<f64> {
        (self.cfg.time.is_finite() && self.cfg.time > 0.0).then_some(self.cfg.time * 60.0)
    }

    /// `train.time`: refits the epoch count, and the schedule's length with it, to end within the
    /// budget, given that this invocation started at `first_epoch`. A resumed run gets a new budget, as
    /// in Ultralytics.
    fn refit_to_budget(&mut self, first_epoch: usize) {
        let Some(budget_s) = self.budget_seconds() else {
            return;
        };
        let spent_s = self.started.elapsed().as_secs_f64();
        let fitted = budget::fit_to_budget(budget_s, spent_s, first_epoch, self.state.next_epoch);
        if fitted != self.epochs {
            self.opts
                .reporter
                .note(&format!("time budget of {} min: {fitted} epochs in all (was {})", self.cfg.time, self.epochs));
            self.epochs = fitted;
            self.schedule.total_steps = self.epochs * self.steps_per_epoch;
        }
    }

    /// Whether `train.patience` epochs went by without improvement (then says so).
    fn should_stop_early(&self, metrics: &Metrics) -> bool {
        let patience = self.cfg.patience;
        let stop = patience > 0 && self.state.bad_epochs >= patience;
        if stop {
            self.opts
                .reporter
                .note(&format!("early stopping: no improvement of {} for {patience} epochs", metrics.primary));
        }
        stop
    }
}

/// The optimiser `cfg` asks for, with fresh state.
fn new_optimizer(cfg: &TrainConfig) -> Optimizer {
    Optimizer::new(OptimizerParams {
        kind: cfg.optimizer,
        weight_decay: cfg.weight_decay,
        momentum: cfg.momentum,
        beta2: 0.999,
        eps: 1e-8,
        nesterov: false,
    })
}

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
