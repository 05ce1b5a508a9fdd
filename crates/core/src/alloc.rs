//! Keeping freed memory in the process, so that a training step does not pay the kernel to zero fresh
//! pages for every activation.
//!
//! glibc serves each allocation above its mmap threshold (128 KiB to 32 MiB) with a new `mmap` and
//! unmaps it on `free`. A 224 px batch of 32 allocates hundreds of such tensors per step, so every step
//! page-faults its whole working set in again: `perf stat` counts 4.0 M page faults and 12.5 s of
//! system time in 4 EfficientNet-B0 training steps. With mmap off and trimming off, freed tensors go
//! back to the heap and are reused: 1.0 M faults (the first step's growth only) and 4.1 s. PyTorch's
//! own CPU allocator does not cache, and its performance guide recommends a caching malloc for the
//! same reason; this is the glibc-only form of that advice, with no library to preload.
//!
//! It applies to the main thread's heap, where the training and inference loops run. Other threads'
//! glibc arenas still map blocks over their 64 MiB heap size; the data pipeline's blocks are far
//! smaller. The price is that the heap keeps its high-water mark: peak RSS is reached once and stays.

/// Set to `system` to leave glibc's allocator settings alone.
pub const ENV: &str = "TLCV_ALLOCATOR";

/// Turns off glibc's `mmap` for large blocks and heap trimming, unless [`ENV`] is `system`. Returns
/// whether the settings were applied (always `false` on non-glibc targets). Call it first in `main`.
pub fn keep_freed_memory() -> bool {
    if std::env::var(ENV).is_ok_and(|v| v == "system") {
        return false;
    }
    glibc::keep_freed_memory()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    use std::ffi::c_int;

    // <malloc.h>
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_MAX: c_int = -4;

    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub fn keep_freed_memory() -> bool {
        // SAFETY: `mallopt` only changes allocator parameters; both values are documented in mallopt(3)
        // (`M_MMAP_MAX` 0: never mmap; `M_TRIM_THRESHOLD` -1: never trim). It returns 1 on success.
        unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub fn keep_freed_memory() -> bool {
        false
    }
}
