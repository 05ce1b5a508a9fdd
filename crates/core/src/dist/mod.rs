//! Data-parallel training on libtorch's own c10d: the TCPStore rendezvous and ProcessGroupGloo that
//! `torch.distributed` uses, reached through a small C++ shim (`csrc/c10d_shim.cpp`) compiled against
//! the libtorch we link, so tlcv ranks run the same engine as PyTorch's.
//!
//! - [`ProcessGroup`]: joining a group and the collectives (all-reduce in buckets, broadcast, gather
//!   of byte buffers, barrier, a differentiable all-reduce), with errors that name a lost rank.
//! - [`sync_bn`]: synchronised batch norm.
//! - [`launch`]: torchrun's environment contract and `--nproc-per-node` local launching.
//!
//! Only Gloo (CPU tensors) is built: the NCCL backend needs a CUDA libtorch and NCCL's headers, which
//! the CPU set-up does not install.

mod ffi;
mod group;
pub mod launch;
pub mod sync_bn;

pub use group::{BUCKET_BYTES, GroupOptions, ProcessGroup, ReduceOp};

/// What can go wrong between ranks.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The rendezvous failed: the master could not be reached (or, on rank 0, its port could not be
    /// bound, or not every rank arrived within the timeout).
    #[error("rank {rank} could not join the group at the master {addr}:{port}: {reason}")]
    Connect {
        /// The master's address.
        addr: String,
        /// The master's port.
        port: u16,
        /// The rank that failed.
        rank: usize,
        /// c10d's message.
        reason: String,
    },
    /// A collective failed and these ranks did not answer the roll call that followed.
    #[error("{}: lost during {op} (killed, crashed or stopped on its own error): {reason}", ranks(lost))]
    RankLost {
        /// The collective.
        op: &'static str,
        /// The ranks that are gone.
        lost: Vec<usize>,
        /// c10d's message.
        reason: String,
    },
    /// A collective failed although every rank is still there.
    #[error("{op} failed: {reason}")]
    Collective {
        /// The collective.
        op: &'static str,
        /// c10d's message.
        reason: String,
    },
    /// An inconsistent launch setting; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation around a collective failed.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

fn ranks(lost: &[usize]) -> String {
    let list: Vec<String> = lost.iter().map(usize::to_string).collect();
    format!("rank{} {}", if lost.len() > 1 { "s" } else { "" }, list.join(", "))
}
