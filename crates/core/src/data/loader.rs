//! A generic prefetching loader: a background thread prepares batches (samples decoded in parallel
//! with rayon) while the caller trains on the previous one. Samples that fail to load are skipped and
//! reported, never aborting an epoch. Results are deterministic: the order comes from (seed, epoch)
//! and each sample's RNG from (seed, epoch, index), not from thread timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::DataError;

/// Splits `total_cores` between rayon (decoding) and libtorch (intra-op), builds rayon's global pool
/// and sets libtorch's thread count. Returns `(rayon_threads, torch_threads)`.
///
/// With prefetching, decoding of batch k+1 overlaps the model's work on batch k, but on small
/// machines the two mostly alternate (the model waits for data or the loader waits for a free slot),
/// so both get every core: 2 cores give (2, 2). From 4 cores on, libtorch keeps all cores (GEMMs scale
/// well) and decoding gets half, which is enough to keep ahead of the model while bounding
/// oversubscription. If rayon's global pool already exists its size is kept and returned.
pub fn configure_threads(total_cores: usize) -> (usize, usize) {
    let total = total_cores.max(1);
    let (rayon_n, torch_n) = if total <= 3 { (total, total) } else { (total / 2, total) };
    let rayon_n = match rayon::ThreadPoolBuilder::new().num_threads(rayon_n).build_global() {
        Ok(()) => rayon_n,
        Err(_) => rayon::current_num_threads(),
    };
    tch::set_num_threads(torch_n as i32);
    (rayon_n, torch_n)
}

/// A sample that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The item index given to the load function.
    pub index: usize,
    /// The one-line reason (the [`DataError`] message, which names the file).
    pub reason: String,
}

/// One batch from [`Loader::iter_epoch`].
#[derive(Debug)]
pub struct Batch<B> {
    /// Position of this batch in the epoch (0-based).
    pub batch_index: usize,
    /// The collated samples, or `None` when every sample of the batch failed (skip the step).
    pub data: Option<B>,
    /// The item indices that loaded, in the order given to `collate`.
    pub indices: Vec<usize>,
    /// The samples that failed, with their reasons.
    pub skipped: Vec<Skipped>,
}

/// Batching parameters; see [`Loader::new`].
#[derive(Clone, Debug)]
pub struct Loader {
    num_items: usize,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    drop_last: bool,
    prefetch: usize,
}

/// Mixes numbers into a well-spread 64-bit seed (splitmix64 finaliser).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(a << 6).wrapping_add(a >> 2);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG a sample gets: a function of (seed, epoch, index) only.
pub fn sample_rng(seed: u64, epoch: usize, index: usize) -> StdRng {
    StdRng::seed_from_u64(mix(mix(seed, epoch as u64 + 1), index as u64))
}

impl Loader {
    /// A loader over items `0..num_items` in batches of `batch_size` (at least 1), in order, keeping a
    /// final short batch, with two prepared batches allowed to wait.
    pub fn new(num_items: usize, batch_size: usize) -> Self {
        Loader { num_items, batch_size: batch_size.max(1), shuffle: false, seed: 0, drop_last: false, prefetch: 2 }
    }

    /// Permutes the items each epoch from (`seed`, epoch) when `shuffle` is true; the seed also
    /// seeds each sample's RNG ([`sample_rng`]).
    pub fn shuffled(mut self, shuffle: bool, seed: u64) -> Self {
        self.shuffle = shuffle;
        self.seed = seed;
        self
    }

    /// Drops a final short batch.
    pub fn drop_last(mut self) -> Self {
        self.drop_last = true;
        self
    }

    /// How many prepared batches may wait (0 still prepares one ahead while the caller works).
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches;
        self
    }

    /// Number of batches per epoch.
    pub fn num_batches(&self) -> usize {
        if self.drop_last { self.num_items / self.batch_size } else { self.num_items.div_ceil(self.batch_size) }
    }

    /// The item order of an epoch (identity unless shuffling).
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.num_items).collect();
        if self.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(mix(self.seed, 0xE90C_u64 ^ epoch as u64)));
        }
        order
    }

    /// Starts preparing the batches of `epoch` on a background thread and returns an iterator over
    /// them. `load_fn(index, rng)` loads one item (called in parallel on rayon's pool); `collate` turns
    /// the loaded items of a batch into the batch value. Dropping the iterator stops the worker.
    pub fn iter_epoch<T, B, L, C>(&self, epoch: usize, load_fn: L, collate: C) -> EpochIter<B>
    where
        T: Send + 'static,
        B: Send + 'static,
        L: Fn(usize, &mut StdRng) -> Result<T, DataError> + Send + Sync + 'static,
        C: Fn(Vec<T>) -> B + Send + 'static,
    {
        let order = self.epoch_order(epoch);
        let batches: Vec<Vec<usize>> = order
            .chunks(self.batch_size)
            .filter(|c| !self.drop_last || c.len() == self.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        let (tx, rx) = sync_channel(self.prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = Arc::clone(&stop);
        let seed = self.seed;
        let handle = std::thread::Builder::new()
            .name(format!("tlcv-loader-e{epoch}"))
            .spawn(move || worker(&EpochPlan { batches, seed, epoch }, load_fn, collate, tx, &worker_stop));
        match handle {
            Ok(h) => EpochIter { rx: Some(rx), handle: Some(h), stop, spawn_error: None },
            Err(e) => EpochIter { rx: None, handle: None, stop, spawn_error: Some(e.to_string()) },
        }
    }
}

/// The item indices of each batch of one epoch, and what seeds each sample's RNG.
struct EpochPlan {
    batches: Vec<Vec<usize>>,
    seed: u64,
    epoch: usize,
}

/// Loads and collates `plan`'s batches in order and sends them to `tx`, until done, `stop` or a
/// dropped receiver.
fn worker<T, B, L, C>(plan: &EpochPlan, load_fn: L, collate: C, tx: SyncSender<Batch<B>>, stop: &AtomicBool)
where
    T: Send,
    L: Fn(usize, &mut StdRng) -> Result<T, DataError> + Sync,
    C: Fn(Vec<T>) -> B,
{
    let (seed, epoch) = (plan.seed, plan.epoch);
    for (batch_index, ids) in plan.batches.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // par_iter + collect keeps the batch order whatever the thread timing.
        let results: Vec<(usize, Result<T, DataError>)> =
            ids.par_iter().map(|&i| (i, load_fn(i, &mut sample_rng(seed, epoch, i)))).collect();
        let mut items = Vec::with_capacity(results.len());
        let mut indices = Vec::with_capacity(results.len());
        let mut skipped = Vec::new();
        for (index, r) in results {
            match r {
                Ok(t) => {
                    items.push(t);
                    indices.push(index);
                }
                Err(e) => skipped.push(Skipped { index, reason: e.to_string() }),
            }
        }
        let data = if items.is_empty() { None } else { Some(collate(items)) };
        if tx.send(Batch { batch_index, data, indices, skipped }).is_err() {
            return; // the iterator was dropped
        }
    }
}

/// The batches of one epoch, prepared ahead on a background thread.
pub struct EpochIter<B> {
    rx: Option<Receiver<Batch<B>>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    spawn_error: Option<String>,
}

impl<B> EpochIter<B> {
    /// Set when the worker thread could not be started (the iterator is then empty).
    pub fn spawn_error(&self) -> Option<&str> {
        self.spawn_error.as_deref()
    }
}

impl<B> Iterator for EpochIter<B> {
    type Item = Batch<B>;

    fn next(&mut self) -> Option<Batch<B>> {
        let got = self.rx.as_ref()?.recv().ok();
        if got.is_none() {
            // The worker finished or died: a panic in the caller's closures is re-raised here.
            self.rx = None;
            if let Some(h) = self.handle.take()
                && let Err(payload) = h.join()
            {
                std::panic::resume_unwind(payload);
            }
        }
        got
    }
}

impl<B> Drop for EpochIter<B> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx = None; // unblocks a worker waiting to send
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
