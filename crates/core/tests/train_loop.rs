//! The shared training loop on a toy task: exact resume, non-finite losses, results.csv.

#![allow(clippy::panic)] // test failures are panics

use tch::{Device, Kind, Tensor, nn, nn::ModuleT};
use tlcv_core::{
    Error, Result,
    run::RunDir,
    train::{self, Batches, FitOptions, Metrics, Parallel, SingleProcess, StepOutput, Task, TrainConfig},
};

/// A small MLP with dropout on a fixed synthetic problem; `poison_at` makes one step's loss NaN.
struct Toy {
    vs: nn::VarStore,
    net: nn::SequentialT,
    xs: Tensor,
    ys: Tensor,
    batch: i64,
    poison_at: Option<usize>,
    steps: usize,
}

impl Toy {
    /// Same data for every seed; `seed` only changes the initial weights.
    fn new(seed: i64) -> Self {
        tch::manual_seed(1234);
        let xs = Tensor::randn([96, 4], (Kind::Float, Device::Cpu));
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let net = nn::seq_t()
            .add(nn::linear(root.set_group(0) / "0", 4, 16, Default::default()))
            .add_fn(|x| x.relu())
            .add_fn_t(|x, train| x.dropout(0.2, train))
            .add(nn::linear(root.set_group(1) / "2", 16, 3, Default::default()));
        let ys = xs.narrow(1, 0, 3).argmax(1, false);
        Self { vs, net, xs, ys, batch: 16, poison_at: None, steps: 0 }
    }
}

impl Task for Toy {
    type Batch = (Tensor, Tensor);
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn batches_per_epoch(&self, _: &dyn Parallel) -> usize {
        (96 / self.batch) as usize
    }
    fn train_batches(&mut self, epoch: usize, parallel: &dyn Parallel) -> Result<Batches<Self::Batch>> {
        let order = Tensor::randperm(96, (Kind::Int64, Device::Cpu));
        let _ = epoch;
        let order: Vec<i64> = Vec::<i64>::try_from(&order)?;
        let order: Vec<usize> = parallel.shard(&order.iter().map(|&i| i as usize).collect::<Vec<_>>());
        let (xs, ys, b) = (self.xs.shallow_clone(), self.ys.shallow_clone(), self.batch as usize);
        let batches: Vec<Result<(Tensor, Tensor)>> = order
            .chunks(b)
            .map(|chunk| {
                let idx = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
                Ok((xs.index_select(0, &idx), ys.index_select(0, &idx)))
            })
            .collect();
        Ok(Box::new(batches.into_iter()))
    }
    fn train_step(&mut self, (xs, ys): Self::Batch, _: &dyn Parallel) -> Result<StepOutput> {
        self.steps += 1;
        let mut loss = self.net.forward_t(&xs, true).cross_entropy_for_logits(&ys);
        if self.poison_at == Some(self.steps) {
            loss *= f64::NAN;
        }
        let value = loss.double_value(&[]);
        Ok(StepOutput { loss, terms: vec![("ce".into(), value)], samples: xs.size()[0] as usize })
    }
    fn validate(&mut self, _epoch: usize, _parallel: &dyn Parallel) -> Result<Metrics> {
        let logits = tch::no_grad(|| self.net.forward_t(&self.xs, false));
        let acc = logits.argmax(1, false).eq_tensor(&self.ys).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        let mut m = Metrics { primary: "acc".into(), ..Default::default() };
        m.values.insert("acc".into(), acc);
        m.values.insert("val_loss".into(), logits.cross_entropy_for_logits(&self.ys).double_value(&[]));
        Ok(m)
    }
}

/// libtorch's RNG is global: tests that seed it must not overlap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config(epochs: usize) -> TrainConfig {
    TrainConfig { epochs, lr: 0.01, warmup_epochs: 1.0, ..TrainConfig::default() }
}

fn weights(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn four_epochs_equal_two_plus_resumed_two() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir()?;
    let cfg = config(4);

    let run_a = RunDir::create(tmp.path(), "toy", Some("a"), "train")?;
    let mut a = Toy::new(7);
    let full = train::fit(&mut a, &cfg, &run_a, &SingleProcess, &FitOptions::default())?;
    assert_eq!(full.history.len(), 4);

    let run_b = RunDir::create(tmp.path(), "toy", Some("b"), "train")?;
    let mut b = Toy::new(7);
    let opts = FitOptions { max_epochs_this_run: Some(2), ..Default::default() };
    let half = train::fit(&mut b, &cfg, &run_b, &SingleProcess, &opts)?;
    assert_eq!(half.history.len(), 2);
    // A fresh process: different initial weights, everything comes from the checkpoint.
    let mut c = Toy::new(99);
    let resumed = train::fit(&mut c, &cfg, &run_b, &SingleProcess, &FitOptions { resume: true, ..Default::default() })?;
    assert_eq!(resumed.history.len(), 4);

    for (ra, rc) in full.history.iter().zip(&resumed.history) {
        for (k, v) in &ra.val {
            assert!((v - rc.val[k]).abs() < 1e-5, "epoch {} {k}: {v} vs {}", ra.epoch, rc.val[k]);
        }
        for (k, v) in &ra.train {
            assert!((v - rc.train[k]).abs() < 1e-5, "epoch {} train {k}: {v} vs {}", ra.epoch, rc.train[k]);
        }
    }
    for ((na, ta), (nc, tc)) in weights(&a.vs).iter().zip(weights(&c.vs).iter()) {
        assert_eq!(na, nc);
        let diff = (ta - tc).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{na} differs by {diff}");
    }
    let csv = std::fs::read_to_string(run_b.results_csv())?;
    assert_eq!(csv.lines().count(), 5, "header + 4 epochs:\n{csv}");
    assert!(csv.lines().next().is_some_and(|h| h.contains("train/ce") && h.contains("val/acc")));
    Ok(())
}

#[test]
fn resume_after_the_last_commit_restores_a_lost_results_row() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir()?;
    let cfg = config(2);
    let run = RunDir::create(tmp.path(), "toy", Some("late_kill"), "train")?;
    train::fit(&mut Toy::new(1), &cfg, &run, &SingleProcess, &FitOptions::default())?;
    let complete = std::fs::read_to_string(run.results_csv())?;
    // A SIGKILL after the final checkpoint commit but before results.csv was rewritten: the last row is missing.
    let short: Vec<&str> = complete.lines().take(2).collect();
    std::fs::write(run.results_csv(), short.join("\n") + "\n")?;
    // Nothing is left to train, yet resuming must bring the file back in step with the checkpoint.
    let summary =
        train::fit(&mut Toy::new(2), &cfg, &run, &SingleProcess, &FitOptions { resume: true, ..Default::default() })?;
    assert_eq!(summary.history.len(), 2);
    assert_eq!(std::fs::read_to_string(run.results_csv())?, complete);
    Ok(())
}

#[test]
fn non_finite_loss_stops_and_keeps_last_good_checkpoint() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir()?;
    let run = RunDir::create(tmp.path(), "toy", Some("nan"), "train")?;
    let mut toy = Toy::new(3);
    toy.poison_at = Some(6 + 3); // epoch 2, step 3
    let err = train::fit(&mut toy, &config(3), &run, &SingleProcess, &FitOptions::default()).err();
    match err {
        Some(Error::NonFiniteLoss { epoch, step, .. }) => assert_eq!((epoch, step), (2, 3)),
        other => panic!("expected a non-finite loss error, got {other:?}"),
    }
    // The checkpoint of epoch 1 is intact and resumable.
    let mut fresh = Toy::new(5);
    let summary =
        train::fit(&mut fresh, &config(3), &run, &SingleProcess, &FitOptions { resume: true, ..Default::default() })?;
    assert_eq!(summary.history.len(), 3);
    assert!(fresh.vs.variables().values().all(|t| t.isfinite().all().int64_value(&[]) == 1));
    Ok(())
}

#[test]
fn nets_are_deterministic_for_a_seed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = Toy::new(11);
    let b = Toy::new(11);
    let ya = a.net.forward_t(&a.xs, false);
    let yb = b.net.forward_t(&b.xs, false);
    assert!(ya.equal(&yb));
}
