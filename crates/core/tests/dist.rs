//! The c10d engine between two processes on 127.0.0.1: every collective the trainer uses, synchronised
//! batch norm against libtorch's own batch norm on the whole batch, data-parallel training steps
//! ([`C10dParallel`]) against one process on the whole batch, and the fault paths (a SIGKILLed rank
//! named by the survivor, a peer that never joins, an unreachable master named with its address and
//! port).
//!
//! Each test starts this test binary twice more, as rank 0 and rank 1 of a group (the `worker` test,
//! which does nothing unless `TLCV_DIST_ROLE` is set), and checks their exit status.

#![allow(clippy::panic)] // test failures are panics

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor, nn};
use tlcv_core::backbones::layers::Bn;
use tlcv_core::backbones::{ClassifierNet, resnet};
use tlcv_core::dist::{DistError, GroupOptions, ProcessGroup, ReduceOp, sync_bn};
use tlcv_core::train::{
    C10dParallel, Optimizer, OptimizerKind, OptimizerParams, Parallel, SingleProcess, shard_padded, sorted_variables,
    trainable_params,
};

const ROLE: &str = "TLCV_DIST_ROLE";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(29517)
}

fn spawn(role: &str, rank: usize, port: u16, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap_or_default())
        .args(["--exact", "worker", "--ignored", "--nocapture", "--test-threads=1", "--quiet"])
        .env(ROLE, role)
        .env("TLCV_DIST_RANK", rank.to_string())
        .env("TLCV_DIST_PORT", port.to_string())
        .env("TLCV_DIST_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start a worker: {e}"))
}

/// Waits for `child` (at most `limit`), returning its success and stderr.
fn finish(mut child: Child, limit: Duration) -> (bool, String) {
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.is_some_and(|s| s.success()), err)
}

fn run_pair(role: &str) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let port = free_port();
    let kids: Vec<Child> = (0..2).map(|r| spawn(role, r, port, dir.path())).collect();
    for (rank, kid) in kids.into_iter().enumerate() {
        let (ok, err) = finish(kid, Duration::from_secs(120));
        assert!(ok, "{role}: rank {rank} failed:\n{err}");
    }
}

#[test]
fn collectives_between_two_processes() {
    run_pair("collectives");
}

#[test]
fn sync_batch_norm_equals_batch_norm_on_the_whole_batch() {
    run_pair("sync_bn");
}

#[test]
fn data_parallel_steps_equal_one_process_on_the_whole_batch() {
    run_pair("train");
}

#[test]
fn a_killed_rank_is_named_by_the_survivor_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let port = free_port();
    let rank0 = spawn("fault", 0, port, dir.path());
    let mut rank1 = spawn("fault", 1, port, dir.path());
    let ready = dir.path().join("ready");
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "rank 1 never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
    rank1.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}")); // std's kill is SIGKILL
    let _ = rank1.wait();
    let killed = Instant::now();
    let (ok, err) = finish(rank0, Duration::from_secs(60));
    // Timeout 3 s: the broken connection is seen at once, then the roll call waits up to 3 s.
    assert!(killed.elapsed() < Duration::from_secs(20), "rank 0 took {:?}", killed.elapsed());
    assert!(ok, "rank 0 did not see the expected error:\n{err}");
    eprintln!("rank 0 said: {err}");
}

#[test]
fn an_unreachable_master_is_named_with_its_address_and_port() {
    let port = free_port(); // nobody listens there
    let started = Instant::now();
    let err = ProcessGroup::connect(&options(1, port, Duration::from_secs(2)))
        .err()
        .unwrap_or_else(|| panic!("joined a group with no master"));
    let msg = err.to_string();
    assert!(matches!(err, DistError::Connect { .. }), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    eprintln!("rank 1 said: {msg}");
}

#[test]
fn a_peer_that_never_joins_fails_the_rendezvous_within_the_timeout() {
    let port = free_port();
    let started = Instant::now();
    // Rank 0 hosts the store and waits for a rank 1 that never comes.
    let err = ProcessGroup::connect(&options(0, port, Duration::from_secs(2)))
        .err()
        .unwrap_or_else(|| panic!("formed a group of 2 alone"));
    let msg = err.to_string();
    assert!(matches!(err, DistError::Connect { rank: 0, .. }), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    eprintln!("rank 0 said: {msg}");
}

fn options(rank: usize, port: u16, timeout: Duration) -> GroupOptions {
    GroupOptions { master_addr: "127.0.0.1".into(), master_port: port, rank, world_size: 2, timeout, bind_host: None }
}

/// One rank of a two-rank group, for the tests above.
#[test]
#[ignore = "started by the other tests"]
fn worker() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let rank: usize = var("TLCV_DIST_RANK").parse().unwrap_or(0);
    let port: u16 = var("TLCV_DIST_PORT").parse().unwrap_or(0);
    let dir = std::path::PathBuf::from(var("TLCV_DIST_DIR"));
    let timeout = Duration::from_secs(if role == "fault" { 3 } else { 60 });
    let group = ProcessGroup::connect(&options(rank, port, timeout)).unwrap_or_else(|e| panic!("{e}"));
    match role.as_str() {
        "collectives" => collectives(&group),
        "sync_bn" => sync_bn_check(Arc::new(group)),
        "fault" => fault(&group, &dir),
        "train" => train_equivalence(Arc::new(group)),
        other => panic!("unknown role {other}"),
    }
}

fn close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    let diff = (a - b).abs().max().double_value(&[]);
    assert!(diff <= tol, "{what}: max |difference| {diff:e} > {tol:e}");
}

fn collectives(g: &ProcessGroup) {
    let r = g.rank() as f64 + 1.0; // 1 on rank 0, 2 on rank 1
    let base = [
        Tensor::arange(3, (Kind::Float, Device::Cpu)),
        Tensor::ones([2, 2], (Kind::Float, Device::Cpu)),
        Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]).tr(),
    ];
    // Sum and mean, one bucket per tensor (8-byte buckets) and all in one, a transposed tensor among them.
    for bucket in [8, 1 << 20] {
        let ts: Vec<Tensor> = base.iter().map(|t| t * r).collect();
        g.all_reduce_bucketed(&ts, ReduceOp::Sum, bucket).unwrap_or_else(|e| panic!("{e}"));
        for (t, b) in ts.iter().zip(&base) {
            close(t, &(b * 3.0), 0.0, "sum");
        }
        let ts: Vec<Tensor> = base.iter().map(|t| t * r).collect();
        g.all_reduce_bucketed(&ts, ReduceOp::Avg, bucket).unwrap_or_else(|e| panic!("{e}"));
        for (t, b) in ts.iter().zip(&base) {
            close(t, &(b * 1.5), 0.0, "avg");
        }
    }
    let d = Tensor::from_slice(&[r, 0.25 * r]);
    g.all_reduce(std::slice::from_ref(&d), ReduceOp::Sum).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(Vec::<f64>::try_from(&d).unwrap_or_default(), vec![3.0, 0.75]);
    // Broadcast from rank 1 overwrites rank 0's values; a parameter that requires grad works too.
    let p = (Tensor::ones([4], (Kind::Float, Device::Cpu)) * r).set_requires_grad(true);
    g.broadcast(std::slice::from_ref(&p), 1).unwrap_or_else(|e| panic!("{e}"));
    close(&p, &Tensor::full([4], 2.0, (Kind::Float, Device::Cpu)), 0.0, "broadcast");
    // Byte buffers of different lengths, an empty one included.
    let mine: &[u8] = if g.rank() == 0 { b"hello, rank 1" } else { b"" };
    let all = g.all_gather_bytes(mine).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all, vec![b"hello, rank 1".to_vec(), Vec::new()]);
    let gathered = g.gather_bytes(format!("rank {}", g.rank()).as_bytes(), 0).unwrap_or_else(|e| panic!("{e}"));
    match g.rank() {
        0 => assert_eq!(gathered, Some(vec![b"rank 0".to_vec(), b"rank 1".to_vec()])),
        _ => assert_eq!(gathered, None),
    }
    let b = g
        .broadcast_bytes(if g.rank() == 0 { b"from zero" } else { b"ignored!!!!!!!" }, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b, b"from zero");
    g.barrier().unwrap_or_else(|e| panic!("{e}"));
    // Differentiable sum: y = x0 + x1 everywhere; loss_r = r * y.sum(), so dL/dx = 1 + 2 on both ranks.
    let x = Tensor::full([3], r, (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let y = g.all_reduce_differentiable(&x).unwrap_or_else(|e| panic!("{e}"));
    close(&y, &Tensor::full([3], 3.0, (Kind::Float, Device::Cpu)), 0.0, "differentiable sum");
    (y * r).sum(Kind::Float).backward();
    close(&x.grad(), &Tensor::full([3], 3.0, (Kind::Float, Device::Cpu)), 0.0, "its gradient");
}

/// Rank r's half of a batch through synchronised batch norm gives the rows, gradients and running
/// statistics that libtorch's batch norm gives on the whole batch.
fn sync_bn_check(g: Arc<ProcessGroup>) {
    tch::manual_seed(7);
    let (n, c) = (8i64, 3i64);
    let x_all = Tensor::randn([n, c, 5, 4], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
    let g_all = Tensor::randn([n, c, 5, 4], (Kind::Float, Device::Cpu));
    let (w, b) = (Tensor::randn([c], (Kind::Float, Device::Cpu)), Tensor::randn([c], (Kind::Float, Device::Cpu)));
    let make = || {
        let vs = nn::VarStore::new(Device::Cpu);
        let bn = Bn::new(&vs.root(), c, 1e-5, 0.1).unwrap_or_else(|e| panic!("{e}"));
        tch::no_grad(|| {
            bn.weight.shallow_clone().copy_(&w);
            bn.bias.shallow_clone().copy_(&b);
        });
        (vs, bn)
    };
    // Reference: the whole batch in this process, no synchronisation.
    let (_vs_ref, bn_ref) = make();
    let x_ref = x_all.copy().set_requires_grad(true);
    let y_ref = bn_ref.forward(&x_ref, true);
    (&y_ref * &g_all).sum(Kind::Float).backward();
    // This rank's half, synchronised. The loss is a sum, so the ranks' parameter gradients add up.
    let rows = |t: &Tensor| t.narrow(0, g.rank() as i64 * n / 2, n / 2);
    let (_vs, bn) = make();
    sync_bn::enable(Arc::clone(&g));
    let x = rows(&x_all).copy().set_requires_grad(true);
    let y = bn.forward(&x, true);
    (&y * rows(&g_all)).sum(Kind::Float).backward();
    sync_bn::disable();
    assert!(sync_bn::take_error().is_none());
    close(&y, &rows(&y_ref), 1e-5, "output");
    close(&x.grad(), &rows(&x_ref.grad()), 1e-5, "input gradient");
    let grads = [bn.weight.grad(), bn.bias.grad()];
    g.all_reduce(&grads, ReduceOp::Sum).unwrap_or_else(|e| panic!("{e}"));
    close(&grads[0], &bn_ref.weight.grad(), 1e-4, "weight gradient");
    close(&grads[1], &bn_ref.bias.grad(), 1e-4, "bias gradient");
    close(&bn.running_mean, &bn_ref.running_mean, 1e-6, "running mean");
    close(&bn.running_var, &bn_ref.running_var, 1e-5, "running variance");
}

/// Rank 1 says it is ready and waits to be killed; rank 0 all-reduces until that fails, and succeeds
/// only if the error names rank 1.
fn fault(g: &ProcessGroup, dir: &Path) {
    let t = Tensor::ones([1000], (Kind::Float, Device::Cpu));
    g.all_reduce(std::slice::from_ref(&t), ReduceOp::Sum).unwrap_or_else(|e| panic!("{e}"));
    if g.rank() == 1 {
        std::fs::write(dir.join("ready"), b"").unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    loop {
        match g.all_reduce(std::slice::from_ref(&t), ReduceOp::Sum) {
            Ok(()) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                eprintln!("{e}");
                assert!(matches!(&e, DistError::RankLost { lost, .. } if lost == &[1]), "unexpected error: {e}");
                assert!(e.to_string().starts_with("rank 1: lost during all_reduce"), "{e}");
                return;
            }
        }
    }
}

/// ResNet-18 (scratch, 16 px, 4 classes) with synchronised batch norm: 3 SGD steps at world size 2
/// with 8 samples per rank (DistributedSampler shards of one order) give the weights of 3 steps in one
/// process with batch 16 over the same samples (to 1e-9, in float64). Batch norm is exact only when
/// synchronised (the global batch's statistics), so this is the `train.sync_bn = true` case.
fn train_equivalence(g: Arc<ProcessGroup>) {
    const STEPS: usize = 3;
    const BATCH: usize = 16;
    tch::manual_seed(11);
    let n = (STEPS * BATCH) as i64;
    // Float64 throughout: in float32 the two orders of summation drift apart by ~1e-4 in 3 steps of a
    // scratch ResNet at this learning rate, which would hide a real error behind rounding.
    let images = Tensor::randn([n, 3, 16, 16], (Kind::Double, Device::Cpu));
    let labels = Tensor::randint(4, [n], (Kind::Int64, Device::Cpu));
    let order: Vec<usize> = Tensor::randperm(n, (Kind::Int64, Device::Cpu))
        .iter::<i64>()
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|i| i as usize)
        .collect();
    // One thread per rank: two ranks share the test machine's cores.
    tch::set_num_threads(1);
    // Every rank builds its own random weights; C10dParallel's broadcast makes them rank 0's.
    let parallel = C10dParallel::new(Arc::clone(&g), true);
    let ranks = train_steps(&parallel, 200 + g.rank() as i64, (&images, &labels), &order, BATCH / 2);
    drop(parallel);
    // Both ranks hold the same weights (same start, same averaged gradients); rank 0 compares.
    if g.rank() != 0 {
        return;
    }
    let reference = train_steps(&SingleProcess, 100, (&images, &labels), &order, BATCH);
    assert_eq!(reference.len(), ranks.len());
    for (i, (a, b)) in reference.iter().zip(&ranks).enumerate() {
        close(a, b, 1e-9, &format!("variable {i} after {STEPS} steps"));
    }
}

/// `order`'s shard for this rank, in batches of `batch`, through SGD with momentum; returns every
/// variable afterwards (sorted by name). The model is seeded by `seed`, then broadcast from rank 0;
/// the reference (one process) is seeded like rank 0 so that both start from the same weights.
fn train_steps(
    parallel: &dyn Parallel,
    seed: i64,
    (images, labels): (&Tensor, &Tensor),
    order: &[usize],
    batch: usize,
) -> Vec<Tensor> {
    tch::manual_seed(if parallel.rank() == 0 { 100 } else { seed });
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = resnet::resnet18(vs.root(), 4).unwrap_or_else(|e| panic!("{e}"));
    vs.double();
    parallel.broadcast_tensors(&sorted_variables(&vs)).unwrap_or_else(|e| panic!("{e}"));
    let mut opt = Optimizer::new(OptimizerParams {
        kind: OptimizerKind::Sgd,
        weight_decay: 1e-4,
        momentum: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        nesterov: false,
    });
    let shard = shard_padded(order, parallel.rank(), parallel.world_size());
    for chunk in shard.chunks(batch) {
        let idx = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let (x, y) = (images.index_select(0, &idx), labels.index_select(0, &idx));
        let logits = net.head(&net.penultimate(&x, true));
        let loss = logits.cross_entropy_for_logits(&y);
        let params = trainable_params(&vs);
        Optimizer::zero_grad(&params);
        loss.backward();
        let grads: Vec<Tensor> = params.iter().map(|p| p.tensor.grad()).filter(|g| g.defined()).collect();
        parallel.all_reduce_grads(&grads).unwrap_or_else(|e| panic!("{e}"));
        let lrs = vec![0.05; params.len()];
        opt.step(&params, &lrs);
    }
    sorted_variables(&vs)
}
