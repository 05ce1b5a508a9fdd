//! An opt-in cache of decoded images for small data sets, so that epochs after the first skip
//! decoding. It fills up to a byte budget and then stops admitting: an epoch scans every image once,
//! so evicting (LRU) when the set does not fit would only thrash; a fixed resident subset still saves
//! that share of the decoding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::DataError;
use super::image::RgbImage;

/// A thread-safe map from path to decoded image, bounded by a byte budget.
#[derive(Debug)]
pub struct ImageCache {
    budget_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<PathBuf, Arc<RgbImage>>,
    bytes: usize,
    hits: u64,
    misses: u64,
}

impl ImageCache {
    /// A cache holding at most `budget_bytes` of pixel data.
    pub fn new(budget_bytes: usize) -> Self {
        ImageCache { budget_bytes, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the map consistent (each update is one insert).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached image for `path`, or `load()`'s result, cached if it fits in the budget. Errors are
    /// not cached. Decoding runs outside the lock, so two threads may decode the same path once each.
    pub fn get_or_load(
        &self,
        path: &Path,
        load: impl FnOnce() -> Result<RgbImage, DataError>,
    ) -> Result<Arc<RgbImage>, DataError> {
        {
            let mut g = self.lock();
            if let Some(img) = g.map.get(path).cloned() {
                g.hits += 1;
                return Ok(img);
            }
            g.misses += 1;
        }
        let img = Arc::new(load()?);
        let mut g = self.lock();
        if !g.map.contains_key(path) && g.bytes + img.num_bytes() <= self.budget_bytes {
            g.bytes += img.num_bytes();
            g.map.insert(path.to_path_buf(), Arc::clone(&img));
        }
        Ok(img)
    }

    /// Bytes of pixel data held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Number of images held.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(hits, misses)` since creation.
    pub fn stats(&self) -> (u64, u64) {
        let g = self.lock();
        (g.hits, g.misses)
    }
}
