//! The seam for data-parallel training. Today there is one process; a c10d (torchrun-style) strategy will
//! implement the same trait: shard the sample indices by rank and all-reduce gradients after backward.

use tch::Tensor;

use crate::Result;

/// How a training step is spread over processes (one implementation per strategy, as burn's
/// single/multi/ddp).
pub trait Parallel: Send + std::fmt::Debug {
    /// This process's rank in `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn world_size(&self) -> usize;
    /// Whether this process writes checkpoints, reports and logs.
    fn is_main(&self) -> bool {
        self.rank() == 0
    }
    /// The part of an epoch's (already shuffled) sample order this process trains on.
    fn shard(&self, order: &[usize]) -> Vec<usize> {
        order.iter().copied().skip(self.rank()).step_by(self.world_size().max(1)).collect()
    }
    /// Averages the gradients of `params` over processes, after backward and before the optimiser step.
    fn all_reduce_grads(&self, params: &[Tensor]) -> Result<()>;
    /// Sums scalars (loss totals, sample counts) over processes.
    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()>;
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
    fn all_reduce_grads(&self, _params: &[Tensor]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fake(usize, usize);
    impl Parallel for Fake {
        fn rank(&self) -> usize {
            self.0
        }
        fn world_size(&self) -> usize {
            self.1
        }
        fn all_reduce_grads(&self, _: &[Tensor]) -> Result<()> {
            Ok(())
        }
        fn all_reduce_sum(&self, _: &mut [f64]) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn shards_partition_the_order() {
        let order: Vec<usize> = (0..10).rev().collect();
        let mut all: Vec<usize> = (0..3).flat_map(|r| Fake(r, 3).shard(&order)).collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(SingleProcess.shard(&order), order);
    }
}
