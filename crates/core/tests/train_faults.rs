//! Faults in the shared training loop: `retry_lower_lr` restarts the epoch once from its starting
//! weights with lr / 10; an epoch where no batch loads is an error; `--resume` before any checkpoint
//! starts over.

#![allow(clippy::panic)]

use tch::{Device, Kind, Tensor, nn};
use tlcv_core::{
    Error, Result,
    run::RunDir,
    train::{self, Batches, FitOptions, Metrics, Parallel, ScheduleKind, SingleProcess, StepOutput, Task, TrainConfig},
};

/// One scalar `w` (from 0) minimising `(w - 1)^2`; the loss is infinite once `|w| > 5`, which the
/// first AdamW step at lr 10 reaches (Adam moves each weight by about lr) and lr 1 never does.
struct Scalar {
    vs: nn::VarStore,
    w: Tensor,
    steps: usize,
    /// Yield `Err`-free but empty epochs (every sample "skipped").
    empty: bool,
}

impl Scalar {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().set_group(1).zeros("w", &[1]);
        Self { vs, w, steps: 0, empty: false }
    }

    fn value(&self) -> f64 {
        self.w.double_value(&[0])
    }
}

impl Task for Scalar {
    type Batch = ();
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn batches_per_epoch(&self, _: &dyn Parallel) -> usize {
        4
    }
    fn train_batches(&mut self, _epoch: usize, _: &dyn Parallel) -> Result<Batches<()>> {
        let n = if self.empty { 0 } else { 4 };
        Ok(Box::new((0..n).map(|_| Ok(()))))
    }
    fn train_step(&mut self, (): (), _: &dyn Parallel) -> Result<StepOutput> {
        self.steps += 1;
        let mut loss = (&self.w - 1.0).square().sum(Kind::Float);
        if self.value().abs() > 5.0 {
            loss *= f64::INFINITY;
        }
        let value = loss.double_value(&[]);
        Ok(StepOutput { loss, terms: vec![("loss".into(), value)], samples: 1 })
    }
    fn validate(&mut self, _epoch: usize, _parallel: &dyn Parallel) -> Result<Metrics> {
        let mut m = Metrics { primary: "score".into(), ..Default::default() };
        m.values.insert("score".into(), -(self.value() - 1.0).abs());
        Ok(m)
    }
}

fn config(lr: f64, retry: bool) -> TrainConfig {
    TrainConfig {
        epochs: 3,
        lr,
        warmup_epochs: 0.0,
        weight_decay: 0.0,
        schedule: ScheduleKind::Constant,
        grad_clip: 0.0,
        retry_lower_lr: retry,
        ..TrainConfig::default()
    }
}

#[test]
fn without_retry_a_diverging_lr_stops_at_the_step() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = RunDir::create(tmp.path(), "toy", Some("a"), "train")?;
    let mut task = Scalar::new();
    match train::fit(&mut task, &config(10.0, false), &run, &SingleProcess, &FitOptions::default()) {
        Err(Error::NonFiniteLoss { epoch, step, .. }) => assert_eq!((epoch, step), (1, 2)),
        other => panic!("expected a non-finite loss at epoch 1, step 2, got {other:?}"),
    }
    Ok(())
}

#[test]
fn retry_restarts_the_epoch_once_with_a_tenth_of_the_lr() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = RunDir::create(tmp.path(), "toy", Some("b"), "train")?;
    let mut task = Scalar::new();
    let summary = train::fit(&mut task, &config(10.0, true), &run, &SingleProcess, &FitOptions::default())?;
    assert_eq!(summary.history.len(), 3);
    // Two steps at lr 10 (the second one non-finite), then three full epochs at lr 1.
    assert_eq!(task.steps, 2 + 3 * 4);
    for record in &summary.history {
        assert!((record.lr - 1.0).abs() < 1e-12, "lr {}", record.lr);
    }
    // Restarted from w = 0, not from the diverged w = 10: lr 1 steps keep it within 1 of the optimum.
    assert!((task.value() - 1.0).abs() <= 1.0 + 1e-6, "w = {}", task.value());
    Ok(())
}

#[test]
fn retry_happens_only_once() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = RunDir::create(tmp.path(), "toy", Some("c"), "train")?;
    let mut task = Scalar::new();
    // lr 100 and lr 10 both diverge at the second step.
    match train::fit(&mut task, &config(100.0, true), &run, &SingleProcess, &FitOptions::default()) {
        Err(Error::NonFiniteLoss { epoch, step, .. }) => assert_eq!((epoch, step), (1, 2)),
        other => panic!("expected a non-finite loss after one retry, got {other:?}"),
    }
    assert_eq!(task.steps, 4);
    Ok(())
}

#[test]
fn an_epoch_without_any_batch_is_an_error() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = RunDir::create(tmp.path(), "toy", Some("d"), "train")?;
    let mut task = Scalar::new();
    task.empty = true;
    match train::fit(&mut task, &config(0.1, false), &run, &SingleProcess, &FitOptions::default()) {
        Err(Error::Invalid(msg)) => assert!(msg.contains("epoch 1") && msg.contains("no training sample"), "{msg}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(!run.last_weights().exists());
    Ok(())
}

#[test]
fn resume_before_the_first_checkpoint_starts_over() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = RunDir::create(tmp.path(), "toy", Some("e"), "train")?;
    let mut task = Scalar::new();
    let opts = FitOptions { resume: true, ..Default::default() };
    let summary = train::fit(&mut task, &config(0.1, false), &run, &SingleProcess, &opts)?;
    assert_eq!(summary.history.len(), 3);
    assert_eq!(task.steps, 12);
    assert!(run.last_weights().is_file());
    Ok(())
}
