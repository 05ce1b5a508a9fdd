//! The training loop every task shares. A task implements [`Task`] (its data, one step, validation);
//! [`fit`] does the orchestration: epochs, schedule, optimiser, clipping, early stopping, checkpoints,
//! `--resume`, stopping on request (Ctrl-C) and non-finite losses, `results.csv`, and progress
//! through a [`Reporter`]. Data-parallel training plugs in through [`Parallel`].

pub mod budget;
pub mod config;
mod fit;
pub mod memory;
pub mod optim;
pub mod parallel;
pub mod precision;
pub mod reporter;
pub mod schedule;
mod state;

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn::VarStore};

pub use config::{BnMode, TrainConfig};
pub use fit::fit;
pub use optim::{Optimizer, OptimizerKind, OptimizerParams, Param, trainable_params};
pub use parallel::{C10dParallel, Parallel, SingleProcess, epoch_shard_order, shard_padded, sorted_variables};
pub use precision::{Convs, Precision, PrecisionPlan, TaskKind};
pub use reporter::{ConsoleReporter, Reporter, SilentReporter, StepProgress, StopFlag};
pub use schedule::{Schedule, ScheduleKind};
pub use state::{EpochRecord, TrainerState, proc_status_mb};

use crate::Result;

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
    /// Forward pass and loss on one batch in training mode. A loss whose normaliser depends on the
    /// batch (YOLO's sum of target scores) can make it global over `parallel`'s ranks, so that a step
    /// at world size W equals one process's step on the W batches together.
    fn train_step(&mut self, batch: Self::Batch, parallel: &dyn Parallel) -> Result<StepOutput>;
    /// Evaluates on the validation split. Every rank calls it; a task may split the work with
    /// [`Parallel::eval_batches`] and combine it with the collectives, as long as every rank returns
    /// the same metrics.
    fn validate(&mut self, epoch: usize, parallel: &dyn Parallel) -> Result<Metrics>;
    /// The factor on the learning rate of the backbone variable `name` (group 0), on top of
    /// `backbone_lr_scale`: layer-wise decay gives earlier stages less. 1 by default.
    fn lr_multiplier(&self, _name: &str) -> f64 {
        1.0
    }
}

/// How [`fit`] should start, stop and report.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Continue from `weights/last.safetensors` and its optimiser state.
    pub resume: bool,
    /// Stop after this many epochs in this invocation (the run can be resumed later).
    pub max_epochs_this_run: Option<usize>,
    /// Checked after every step: when set, training saves a resumable checkpoint and stops (the
    /// binaries pass [`StopFlag::on_ctrl_c`]).
    pub stop: StopFlag,
    /// Receives progress and notes (default: [`ConsoleReporter`]).
    pub reporter: Arc<dyn Reporter>,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            resume: false,
            max_epochs_this_run: None,
            stop: StopFlag::new(),
            reporter: Arc::new(ConsoleReporter::default()),
        }
    }
}

impl FitOptions {
    /// Starting over or resuming, stopped by Ctrl-C, reporting on the console: what the binaries use.
    pub fn interactive(resume: bool) -> Self {
        Self { resume, stop: StopFlag::on_ctrl_c(), ..Self::default() }
    }
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
