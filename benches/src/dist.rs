//! Data-parallel workloads for `compare dist`: an all-reduce of a backbone's gradient tensors (mean,
//! in the trainer's 25 MB buckets) and a backbone's data-parallel training steps (forward, backward,
//! gradient all-reduce, SGD), over local ranks that this program starts itself through tlcv's
//! launcher (`tlcv_core::dist::launch::launch_local`, torchrun's environment), on libtorch's c10d
//! Gloo group, as `classify train --nproc-per-node N` does. Rank 0 reports; the others print nothing.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tch::{Device, Tensor, nn};
use tlcv_core::backbones::{self, Arch};
use tlcv_core::dist::launch::{LaunchArgs, launch_local, worker_env};
use tlcv_core::dist::{ProcessGroup, ReduceOp};
use tlcv_core::train::{C10dParallel, Parallel, sorted_variables};

use crate::median;
use crate::models::{CLASSES, Mode, ModelBench};

/// What the ranks time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Work {
    /// One mean all-reduce of every trainable variable's gradient (milliseconds).
    Allreduce,
    /// One data-parallel training step of `batch` images per rank (images/s over all ranks).
    Train,
}

/// The workload's shape: ranks, network and batch.
#[derive(Debug, Clone, Copy)]
pub struct DistCase {
    /// What is timed.
    pub work: Work,
    /// Local processes.
    pub ranks: usize,
    /// The backbone (a 1000-class classifier).
    pub arch: Arch,
    /// Images per rank and step (`Train`).
    pub batch: i64,
    /// Image side (`Train`).
    pub size: i64,
}

/// Runs `case` for `(warmup, iters)` steps: started without torchrun's environment, starts the ranks
/// and returns `None`; as a rank, returns rank 0's `RESULT` fields (`None` on the other ranks).
pub fn run(case: DistCase, (warmup, iters): (usize, usize)) -> Result<Option<String>> {
    let Some(env) = worker_env(|k| std::env::var(k).ok())? else {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let code =
            launch_local(&LaunchArgs { nproc_per_node: case.ranks, master_port: port, ..LaunchArgs::default() })?;
        if code != 0 {
            bail!("a rank exited with code {code}");
        }
        return Ok(None);
    };
    let group =
        Arc::new(ProcessGroup::connect(&env.group_options(Duration::from_secs(300))).context("joining the group")?);
    let times = match case.work {
        Work::Allreduce => time_allreduce(&group, case.arch, warmup + iters.max(1))?,
        Work::Train => time_training(&group, case, warmup + iters.max(1))?,
    };
    let t = median(&times[warmup.min(times.len() - 1)..]);
    if group.rank() != 0 {
        return Ok(None);
    }
    Ok(Some(match case.work {
        Work::Allreduce => format!("ms={:.3} ranks={}", t * 1e3, group.world_size()),
        Work::Train => format!(
            "images_per_s={:.2} seconds_per_step={t:.4} ranks={}",
            (case.batch as usize * group.world_size()) as f64 / t,
            group.world_size()
        ),
    }))
}

/// Seconds of each of `steps` mean all-reduces of random tensors shaped as `arch`'s trainable variables,
/// each started together on every rank (a barrier before it).
fn time_allreduce(group: &ProcessGroup, arch: Arch, steps: usize) -> Result<Vec<f64>> {
    tch::manual_seed(group.rank() as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = backbones::classifier(vs.root(), arch, CLASSES)?;
    let grads: Vec<Tensor> = tlcv_core::train::trainable_params(&vs).iter().map(|p| p.tensor.randn_like()).collect();
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        group.barrier()?;
        let t = Instant::now();
        group.all_reduce(&grads, ReduceOp::Avg)?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// Seconds of each of `steps` data-parallel training steps (rank 0's weights broadcast first, as DDP
/// does; gradients averaged through the trainer's `C10dParallel`).
fn time_training(group: &Arc<ProcessGroup>, case: DistCase, steps: usize) -> Result<Vec<f64>> {
    let mut m = ModelBench::new(case.arch, case.batch, case.size, Mode::Fp32, true)?;
    let parallel = C10dParallel::new(Arc::clone(group), false);
    parallel.broadcast_tensors(&sorted_variables(m.var_store()))?;
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        let loss = m.forward_backward();
        parallel.all_reduce_grads(&m.grads())?;
        m.update();
        if !loss.is_finite() {
            bail!("non-finite loss");
        }
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}
