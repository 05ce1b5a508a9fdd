//! A c10d process group (TCPStore rendezvous + ProcessGroupGloo) with the collectives training needs,
//! typed errors, and the diagnosis of a failed collective: which rank was lost.

use std::time::Duration;

use tch::{Device, Kind, Tensor};

use super::DistError;
use super::ffi::{Connect, Handle};

/// PyTorch DDP's default gradient bucket (`bucket_cap_mb = 25`).
pub const BUCKET_BYTES: i64 = 25 * 1024 * 1024;

/// The reduction of [`ProcessGroup::all_reduce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum over ranks.
    Sum,
    /// Mean over ranks (a sum divided by the world size: Gloo has no native average).
    Avg,
}

/// Where a rank joins its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOptions {
    /// Address of rank 0, which hosts the rendezvous store.
    pub master_addr: String,
    /// Port of the rendezvous store on rank 0.
    pub master_port: u16,
    /// This process's rank in `0..world_size`.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// How long a rendezvous or a collective may wait for the other ranks before failing.
    pub timeout: Duration,
    /// Address this rank's Gloo device listens on; `None` picks the machine's hostname (loopback
    /// when the master is on loopback), as torch.distributed does.
    pub bind_host: Option<String>,
}

/// This process's membership in a group of `world_size` ranks. Every collective must be called in the
/// same order on every rank (as in torch.distributed).
#[derive(Debug)]
pub struct ProcessGroup {
    handle: Handle,
    rank: usize,
    world: usize,
    master: String,
    timeout: Duration,
}

/// Longest wait for the other ranks' answer after a failed collective.
const ROLL_CALL_GRACE: Duration = Duration::from_secs(10);

impl ProcessGroup {
    /// Joins the group: rank 0 hosts the store at `master_addr:master_port`, the others connect to it,
    /// then all of them form a full Gloo mesh. Blocks until every rank has joined or `timeout` passes.
    pub fn connect(opts: &GroupOptions) -> Result<Self, DistError> {
        if opts.world_size == 0 || opts.rank >= opts.world_size {
            return Err(DistError::Invalid(format!("rank {} is not in a world of {}", opts.rank, opts.world_size)));
        }
        let loopback = matches!(opts.master_addr.as_str(), "127.0.0.1" | "localhost" | "::1");
        let bind = opts.bind_host.as_deref().or(if loopback { Some("127.0.0.1") } else { None });
        let handle = Handle::connect(&Connect {
            master_addr: &opts.master_addr,
            port: opts.master_port,
            rank: opts.rank,
            world: opts.world_size,
            timeout_ms: i64::try_from(opts.timeout.as_millis()).unwrap_or(i64::MAX),
            bind_host: bind,
        })
        .map_err(|reason| DistError::Connect {
            addr: opts.master_addr.clone(),
            port: opts.master_port,
            rank: opts.rank,
            reason,
        })?;
        Ok(ProcessGroup {
            handle,
            rank: opts.rank,
            world: opts.world_size,
            master: format!("{}:{}", opts.master_addr, opts.master_port),
            timeout: opts.timeout,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// In-place reduction of `tensors` (contiguous CPU tensors) over ranks, in [`BUCKET_BYTES`] buckets.
    pub fn all_reduce(&self, tensors: &[Tensor], op: ReduceOp) -> Result<(), DistError> {
        self.all_reduce_bucketed(tensors, op, BUCKET_BYTES)
    }

    /// [`Self::all_reduce`] with buckets of about `bucket_bytes` (each bucket one Gloo all-reduce,
    /// all of them in flight before the first is waited for).
    pub fn all_reduce_bucketed(&self, tensors: &[Tensor], op: ReduceOp, bucket_bytes: i64) -> Result<(), DistError> {
        if tensors.is_empty() {
            return Ok(());
        }
        self.handle
            .all_reduce(tensors, op == ReduceOp::Avg, bucket_bytes.max(1))
            .map_err(|e| self.fail("all_reduce", e))
    }

    /// Overwrites `tensors` with rank `root`'s values (the initial weights, for instance).
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<(), DistError> {
        if tensors.is_empty() {
            return Ok(());
        }
        self.handle.broadcast(tensors, root, BUCKET_BYTES).map_err(|e| self.fail("broadcast", e))
    }

    /// Rank `root`'s `bytes` on every rank (the others' `bytes` are ignored).
    pub fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>, DistError> {
        let len = Tensor::from_slice(&[bytes.len() as i64]);
        self.broadcast(std::slice::from_ref(&len), root)?;
        let n = usize::try_from(len.f_int64_value(&[0])?)
            .map_err(|_| DistError::Collective { op: "broadcast", reason: "negative length".into() })?;
        let data = padded(if self.rank == root { bytes } else { &[] }, n.max(1));
        self.broadcast(std::slice::from_ref(&data), root)?;
        self.bytes_of(&data, n)
    }

    /// Blocks until every rank has reached the barrier.
    pub fn barrier(&self) -> Result<(), DistError> {
        self.handle.barrier().map_err(|e| self.fail("barrier", e))
    }

    /// Every rank's `bytes` (any length), in rank order, on every rank.
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        let lengths = self.all_gather_len(bytes.len())?;
        let max = lengths.iter().copied().max().unwrap_or(0).max(1);
        let input = padded(bytes, max);
        let outputs = self.byte_buffers(max);
        self.handle.all_gather(&input, &outputs).map_err(|e| self.fail("all_gather", e))?;
        outputs.iter().zip(&lengths).map(|(t, &n)| self.bytes_of(t, n)).collect()
    }

    /// Every rank's `bytes` on `root` (`Some`, in rank order); `None` on the other ranks.
    pub fn gather_bytes(&self, bytes: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>, DistError> {
        // Every rank needs the longest length to pad to, so the lengths travel to all.
        let lengths = self.all_gather_len(bytes.len())?;
        let max = lengths.iter().copied().max().unwrap_or(0).max(1);
        let input = padded(bytes, max);
        let is_root = self.rank == root;
        let outputs = if is_root { self.byte_buffers(max) } else { Vec::new() };
        self.handle.gather(&input, &outputs, root, is_root).map_err(|e| self.fail("gather", e))?;
        if !is_root {
            return Ok(None);
        }
        outputs.iter().zip(&lengths).map(|(t, &n)| self.bytes_of(t, n)).collect::<Result<_, _>>().map(Some)
    }

    /// `input` summed over ranks as a new tensor whose gradient, in backward, is the sum of every
    /// rank's gradient (the shared statistics of synchronised batch norm).
    pub fn all_reduce_differentiable(&self, input: &Tensor) -> Result<Tensor, DistError> {
        self.handle.all_reduce_differentiable(input).map_err(|e| self.fail("all_reduce (autograd)", e))
    }

    /// The error for a failed collective: asks every rank through the store whether it is still
    /// there, so that the message names the lost rank instead of a socket address.
    pub(crate) fn fail(&self, op: &'static str, reason: String) -> DistError {
        let grace = self.timeout.min(ROLL_CALL_GRACE);
        match self.handle.roll_call(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX)) {
            Ok(lost) if !lost.is_empty() => DistError::RankLost { op, lost, reason },
            Ok(_) => DistError::Collective { op, reason },
            // The store lives in rank 0's process: unreachable means rank 0 is gone.
            Err(_) if self.rank != 0 => DistError::RankLost {
                op,
                lost: vec![0],
                reason: format!("{reason} (the master {} is unreachable)", self.master),
            },
            Err(store) => {
                DistError::Collective { op, reason: format!("{reason}; the store did not answer either: {store}") }
            }
        }
    }

    fn all_gather_len(&self, len: usize) -> Result<Vec<usize>, DistError> {
        let input = Tensor::from_slice(&[len as i64]);
        let outputs: Vec<Tensor> = (0..self.world).map(|_| Tensor::zeros([1], (Kind::Int64, Device::Cpu))).collect();
        self.handle.all_gather(&input, &outputs).map_err(|e| self.fail("all_gather", e))?;
        outputs
            .iter()
            .map(|t| {
                let v = t
                    .f_int64_value(&[0])
                    .map_err(|e| DistError::Collective { op: "all_gather", reason: e.to_string() })?;
                usize::try_from(v)
                    .map_err(|_| DistError::Collective { op: "all_gather", reason: format!("bad length {v}") })
            })
            .collect()
    }

    fn byte_buffers(&self, len: usize) -> Vec<Tensor> {
        (0..self.world).map(|_| Tensor::zeros([len as i64], (Kind::Uint8, Device::Cpu))).collect()
    }

    fn bytes_of(&self, t: &Tensor, len: usize) -> Result<Vec<u8>, DistError> {
        let all = Vec::<u8>::try_from(t).map_err(|e| DistError::Collective { op: "gather", reason: e.to_string() })?;
        Ok(all[..len.min(all.len())].to_vec())
    }
}

/// `bytes` zero-padded to `len`, as a u8 tensor (Gloo gathers equal-sized buffers).
fn padded(bytes: &[u8], len: usize) -> Tensor {
    let mut v = bytes.to_vec();
    v.resize(len, 0);
    Tensor::from_slice(&v)
}
