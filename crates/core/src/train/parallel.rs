//! The seam for data-parallel training: [`SingleProcess`] (one process, every operation trivial) and
//! [`C10dParallel`] (ranks of a c10d group, as PyTorch's DistributedDataParallel): each rank trains on
//! its DistributedSampler shard, starts from rank 0's weights, and averages gradients with bucketed
//! all-reduces after backward; validation is split by whole batches and gathered on rank 0.

use std::sync::Arc;

use tch::{Device, Kind, Tensor, nn::VarStore};

use crate::{
    Result,
    dist::{ProcessGroup, ReduceOp, sync_bn},
};

/// How a training step is spread over processes (one implementation per strategy, as burn's
/// single/multi/ddp). Every collective must be called in the same order on every rank.
pub trait Parallel: Send + std::fmt::Debug {
    /// This process's rank in `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn world_size(&self) -> usize;
    /// Whether this process writes checkpoints, reports and logs.
    fn is_main(&self) -> bool {
        self.rank() == 0
    }
    /// The part of an epoch's sample order (the same on every rank) this process trains on:
    /// DistributedSampler's rule, see [`shard_padded`].
    fn shard(&self, order: &[usize]) -> Vec<usize> {
        shard_padded(order, self.rank(), self.world_size())
    }
    /// The validation batches (of `num_batches`, batched as in one process) this rank evaluates:
    /// every `world_size`-th one, so that each batch's outputs are those of a single-process run.
    fn eval_batches(&self, num_batches: usize) -> Vec<usize> {
        (self.rank()..num_batches).step_by(self.world_size().max(1)).collect()
    }
    /// The indices of the `num_items` validation items in this rank's [`Parallel::eval_batches`] of
    /// `batch` items each, in order.
    fn eval_items(&self, num_items: usize, batch: usize) -> Vec<usize> {
        let batch = batch.max(1);
        self.eval_batches(num_items.div_ceil(batch))
            .into_iter()
            .flat_map(|b| b * batch..((b + 1) * batch).min(num_items))
            .collect()
    }
    /// Sums `counts` (exact in f64 up to 2^53) and `totals` over processes, in place.
    fn sum_counts(&self, counts: &mut [u64], totals: &mut [f64]) -> Result<()> {
        if self.world_size() <= 1 {
            return Ok(());
        }
        let mut sums: Vec<f64> = counts.iter().map(|&c| c as f64).chain(totals.iter().copied()).collect();
        self.all_reduce_sum(&mut sums)?;
        for (c, s) in counts.iter_mut().zip(&sums) {
            *c = *s as u64;
        }
        totals.copy_from_slice(&sums[counts.len()..]);
        Ok(())
    }
    /// Overwrites `tensors` with rank 0's values (the same tensors, in the same order, on every rank).
    fn broadcast_tensors(&self, tensors: &[Tensor]) -> Result<()>;
    /// Rank 0's `bytes` on every rank.
    fn broadcast_bytes(&self, bytes: Vec<u8>) -> Result<Vec<u8>>;
    /// Averages the gradients of the trainable parameters over processes, after backward and before
    /// the optimiser step.
    fn all_reduce_grads(&self, grads: &[Tensor]) -> Result<()>;
    /// Sums scalars (loss totals, sample counts, flags) over processes.
    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()>;
    /// Every rank's `bytes` on rank 0 (`Some`, in rank order); `None` elsewhere.
    fn gather_bytes(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>>;
    /// Blocks until every rank has reached it.
    fn barrier(&self) -> Result<()>;
}

/// DistributedSampler's shard: `order` padded by repeating its start until its length is a multiple
/// of `world` (so every rank takes the same number of steps), then every `world`-th item from `rank`.
pub fn shard_padded(order: &[usize], rank: usize, world: usize) -> Vec<usize> {
    let world = world.max(1);
    if order.is_empty() {
        return Vec::new();
    }
    let total = order.len().div_ceil(world) * world;
    order.iter().copied().cycle().take(total).skip(rank).step_by(world).collect()
}

/// The order whose [`Parallel::shard`] a rank trains on in `epoch` when it shuffles its shard itself:
/// in one process `0..n` (the loader's shuffle is the whole story); across ranks a shuffle of `0..n`
/// that every rank computes alike from `seed` and `epoch`, so that the ranks' parts change every epoch
/// as with DistributedSampler.
pub fn epoch_shard_order(n: usize, seed: u64, epoch: usize, parallel: &dyn Parallel) -> Vec<usize> {
    if parallel.world_size() > 1 {
        crate::data::Loader::new(n, 1).shuffled(true, seed).prefetch(0).epoch_order(epoch)
    } else {
        (0..n).collect()
    }
}

/// Every variable of `vs` (parameters and buffers), sorted by name so that ranks agree on the order.
pub fn sorted_variables(vs: &VarStore) -> Vec<Tensor> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter().map(|(_, t)| t).collect()
}

/// One process, one device: sharding is the identity and reductions do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Parallel for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn broadcast_tensors(&self, _tensors: &[Tensor]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        Ok(bytes)
    }
    fn all_reduce_grads(&self, _grads: &[Tensor]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn gather_bytes(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(Some(vec![bytes.to_vec()]))
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// A rank of a c10d group. With `sync_bn`, every training-mode batch norm of the process uses the
/// global batch's statistics while this value lives.
#[derive(Debug)]
pub struct C10dParallel {
    group: Arc<ProcessGroup>,
    sync_bn: bool,
}

impl C10dParallel {
    /// Data-parallel training over `group`.
    pub fn new(group: Arc<ProcessGroup>, sync_bn: bool) -> Self {
        if sync_bn {
            sync_bn::enable(Arc::clone(&group));
        }
        C10dParallel { group, sync_bn }
    }

    /// The group.
    pub fn group(&self) -> &ProcessGroup {
        &self.group
    }

    /// A failure of a synchronised batch norm since the last check (it cannot return errors itself).
    fn check_sync_bn(&self) -> Result<()> {
        match sync_bn::take_error() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Drop for C10dParallel {
    fn drop(&mut self) {
        if self.sync_bn {
            sync_bn::disable();
        }
    }
}

impl Parallel for C10dParallel {
    fn rank(&self) -> usize {
        self.group.rank()
    }
    fn world_size(&self) -> usize {
        self.group.world_size()
    }
    fn broadcast_tensors(&self, tensors: &[Tensor]) -> Result<()> {
        Ok(self.group.broadcast(tensors, 0)?)
    }
    fn broadcast_bytes(&self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        Ok(self.group.broadcast_bytes(&bytes, 0)?)
    }
    fn all_reduce_grads(&self, grads: &[Tensor]) -> Result<()> {
        self.check_sync_bn()?;
        Ok(self.group.all_reduce(grads, ReduceOp::Avg)?)
    }
    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()> {
        self.check_sync_bn()?;
        let t = Tensor::from_slice(values).to_kind(Kind::Double).to_device(Device::Cpu);
        self.group.all_reduce(std::slice::from_ref(&t), ReduceOp::Sum)?;
        let summed = Vec::<f64>::try_from(&t)?;
        values.copy_from_slice(&summed[..values.len()]);
        Ok(())
    }
    fn gather_bytes(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(self.group.gather_bytes(bytes, 0)?)
    }
    fn barrier(&self) -> Result<()> {
        Ok(self.group.barrier()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_and_pad_as_distributed_sampler() {
        let order: Vec<usize> = (0..10).rev().collect();
        let shards: Vec<Vec<usize>> = (0..3).map(|r| shard_padded(&order, r, 3)).collect();
        // DistributedSampler: pad 10 -> 12 with the first two of the order, then indices[rank::3].
        assert_eq!(shards[0], vec![9, 6, 3, 0]);
        assert_eq!(shards[1], vec![8, 5, 2, 9]);
        assert_eq!(shards[2], vec![7, 4, 1, 8]);
        let mut all: Vec<usize> = shards.concat();
        all.sort();
        all.dedup();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(SingleProcess.shard(&order), order);
        assert!(shard_padded(&[], 1, 2).is_empty());
    }

    #[test]
    fn eval_batches_cover_each_batch_once() {
        #[derive(Debug)]
        struct Rank(usize);
        impl Parallel for Rank {
            fn rank(&self) -> usize {
                self.0
            }
            fn world_size(&self) -> usize {
                2
            }
            fn broadcast_tensors(&self, _: &[Tensor]) -> Result<()> {
                Ok(())
            }
            fn broadcast_bytes(&self, b: Vec<u8>) -> Result<Vec<u8>> {
                Ok(b)
            }
            fn all_reduce_grads(&self, _: &[Tensor]) -> Result<()> {
                Ok(())
            }
            fn all_reduce_sum(&self, _: &mut [f64]) -> Result<()> {
                Ok(())
            }
            fn gather_bytes(&self, b: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
                Ok(Some(vec![b.to_vec()]))
            }
            fn barrier(&self) -> Result<()> {
                Ok(())
            }
        }
        assert_eq!(Rank(0).eval_batches(5), vec![0, 2, 4]);
        assert_eq!(Rank(1).eval_batches(5), vec![1, 3]);
        assert_eq!(SingleProcess.eval_batches(3), vec![0, 1, 2]);
        // Items of 5 in batches of 2: batches [0, 1], [2, 3], [4].
        assert_eq!(Rank(0).eval_items(5, 2), vec![0, 1, 4]);
        assert_eq!(Rank(1).eval_items(5, 2), vec![2, 3]);
        assert_eq!(SingleProcess.eval_items(5, 2), vec![0, 1, 2, 3, 4]);
    }
}
