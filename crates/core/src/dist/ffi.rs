//! The C ABI of `csrc/c10d_shim.cpp`, wrapped in safe functions. Every unsafe block of the dist
//! module is here. tch tensors cross as `at::Tensor*`: tch's `Tensor` is a pointer to a heap
//! `torch::Tensor` (torch-sys's `C_tensor`), which `Tensor::as_ptr` hands out and `Tensor::from_ptr`
//! takes ownership of (tch frees it with `delete`).

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use tch::Tensor;

/// The shim's `Group`, opaque here.
#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

type Tp = *const c_void;

unsafe extern "C" {
    fn tlcv_c10d_new(
        master_addr: *const c_char,
        port: u16,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        bind_host: *const c_char,
        out: *mut *mut RawGroup,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn tlcv_c10d_free(g: *mut RawGroup);
    fn tlcv_c10d_all_reduce(
        g: *mut RawGroup,
        ts: *const Tp,
        n: usize,
        average: c_int,
        bucket_bytes: i64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn tlcv_c10d_broadcast(
        g: *mut RawGroup,
        ts: *const Tp,
        n: usize,
        root: c_int,
        bucket_bytes: i64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn tlcv_c10d_all_gather(g: *mut RawGroup, input: Tp, outputs: *const Tp, err: *mut c_char, err_len: usize)
    -> c_int;
    fn tlcv_c10d_gather(
        g: *mut RawGroup,
        input: Tp,
        outputs: *const Tp,
        root: c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn tlcv_c10d_barrier(g: *mut RawGroup, err: *mut c_char, err_len: usize) -> c_int;
    fn tlcv_c10d_all_reduce_differentiable(
        g: *mut RawGroup,
        input: Tp,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn tlcv_c10d_roll_call(g: *mut RawGroup, grace_ms: i64, lost: *mut u8, err: *mut c_char, err_len: usize) -> c_int;
}

/// The shim's error text buffer.
struct ErrBuf([c_char; 1024]);

impl ErrBuf {
    fn new() -> Self {
        ErrBuf([0; 1024])
    }
    fn ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr()
    }
    /// Maps the shim's return code to a result carrying its message.
    fn check(&self, code: c_int) -> Result<(), String> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: the shim always NUL-terminates what it writes, and the buffer starts zeroed.
        let msg = unsafe { CStr::from_ptr(self.0.as_ptr()) };
        Err(msg.to_string_lossy().trim().to_string())
    }
}

fn ptrs(ts: &[Tensor]) -> Vec<Tp> {
    ts.iter().map(|t| t.as_ptr().cast::<c_void>()).collect()
}

/// One rank's membership in a c10d process group: the TCPStore client (or server, on rank 0) and a
/// ProcessGroupGloo. Freed on drop.
#[derive(Debug)]
pub(super) struct Handle {
    raw: *mut RawGroup,
    world: usize,
}

// SAFETY: the shim's Group is only reached through these functions, which take no Rust-side state;
// c10d's backends enqueue work under their own mutex, so calls from several threads are memory-safe
// (their order across ranks is the caller's business, as in torch.distributed).
unsafe impl Send for Handle {}
// SAFETY: as above: no method mutates Rust-side state.
unsafe impl Sync for Handle {}

/// Where and how to rendezvous.
#[derive(Debug, Clone)]
pub(super) struct Connect<'a> {
    pub master_addr: &'a str,
    pub port: u16,
    pub rank: usize,
    pub world: usize,
    pub timeout_ms: i64,
    pub bind_host: Option<&'a str>,
}

impl Handle {
    /// Rendezvous and group formation (blocks until every rank has joined or the timeout passes).
    pub fn connect(c: &Connect<'_>) -> Result<Self, String> {
        let addr = CString::new(c.master_addr).map_err(|_| "the master address contains a NUL byte".to_string())?;
        let bind = c.bind_host.map(CString::new).transpose().map_err(|_| "the bind address contains a NUL byte")?;
        let rank = c_int::try_from(c.rank).map_err(|_| format!("rank {} out of range", c.rank))?;
        let world = c_int::try_from(c.world).map_err(|_| format!("world size {} out of range", c.world))?;
        let mut raw: *mut RawGroup = std::ptr::null_mut();
        let mut err = ErrBuf::new();
        // SAFETY: the strings are NUL-terminated and live through the call; `raw` is written only on
        // success; `err` is valid for its length.
        let code = unsafe {
            tlcv_c10d_new(
                addr.as_ptr(),
                c.port,
                rank,
                world,
                c.timeout_ms,
                bind.as_ref().map_or(std::ptr::null(), |b| b.as_ptr()),
                &mut raw,
                err.ptr(),
                1024,
            )
        };
        err.check(code)?;
        Ok(Handle { raw, world: c.world })
    }

    /// In-place sum, or mean with `average`, in buckets of about `bucket_bytes`.
    pub fn all_reduce(&self, ts: &[Tensor], average: bool, bucket_bytes: i64) -> Result<(), String> {
        let p = ptrs(ts);
        let mut err = ErrBuf::new();
        // SAFETY: `self.raw` is a live group; `p` holds `p.len()` pointers to tensors borrowed for the
        // call (the shim waits for every collective before returning).
        let code = unsafe {
            tlcv_c10d_all_reduce(self.raw, p.as_ptr(), p.len(), c_int::from(average), bucket_bytes, err.ptr(), 1024)
        };
        err.check(code)
    }

    /// Overwrites `ts` with rank `root`'s values.
    pub fn broadcast(&self, ts: &[Tensor], root: usize, bucket_bytes: i64) -> Result<(), String> {
        let p = ptrs(ts);
        let root = c_int::try_from(root).map_err(|_| format!("root rank {root} out of range"))?;
        let mut err = ErrBuf::new();
        // SAFETY: as in `all_reduce`.
        let code = unsafe { tlcv_c10d_broadcast(self.raw, p.as_ptr(), p.len(), root, bucket_bytes, err.ptr(), 1024) };
        err.check(code)
    }

    /// `outputs[r]` receives rank r's `input`; `outputs` has one contiguous tensor per rank shaped
    /// like `input`.
    pub fn all_gather(&self, input: &Tensor, outputs: &[Tensor]) -> Result<(), String> {
        self.check_outputs(outputs)?;
        let p = ptrs(outputs);
        let mut err = ErrBuf::new();
        // SAFETY: the shim reads exactly `world` pointers from `p` (checked above).
        let code = unsafe { tlcv_c10d_all_gather(self.raw, input.as_ptr().cast(), p.as_ptr(), err.ptr(), 1024) };
        err.check(code)
    }

    /// On `root`, `outputs[r]` receives rank r's `input`; elsewhere `outputs` is ignored (pass none).
    pub fn gather(&self, input: &Tensor, outputs: &[Tensor], root: usize, is_root: bool) -> Result<(), String> {
        if is_root {
            self.check_outputs(outputs)?;
        }
        let p = ptrs(outputs);
        let root = c_int::try_from(root).map_err(|_| format!("root rank {root} out of range"))?;
        let mut err = ErrBuf::new();
        // SAFETY: on the root the shim reads `world` pointers (checked above), elsewhere none.
        let code = unsafe { tlcv_c10d_gather(self.raw, input.as_ptr().cast(), p.as_ptr(), root, err.ptr(), 1024) };
        err.check(code)
    }

    /// Blocks until every rank has reached it.
    pub fn barrier(&self) -> Result<(), String> {
        let mut err = ErrBuf::new();
        // SAFETY: `self.raw` is a live group.
        let code = unsafe { tlcv_c10d_barrier(self.raw, err.ptr(), 1024) };
        err.check(code)
    }

    /// A new tensor: `input` summed over ranks, with the summed gradient in backward.
    pub fn all_reduce_differentiable(&self, input: &Tensor) -> Result<Tensor, String> {
        let mut out: *mut c_void = std::ptr::null_mut();
        let mut err = ErrBuf::new();
        // SAFETY: `input` is borrowed for the call; on success `out` is a fresh heap `at::Tensor`
        // whose ownership passes to the returned tch Tensor (freed with `delete` on drop).
        let code =
            unsafe { tlcv_c10d_all_reduce_differentiable(self.raw, input.as_ptr().cast(), &mut out, err.ptr(), 1024) };
        err.check(code)?;
        // SAFETY: see above; `out` is non-null on success.
        Ok(unsafe { Tensor::from_ptr(out.cast()) })
    }

    /// The ranks that did not answer a roll call through the store within `grace_ms`.
    pub fn roll_call(&self, grace_ms: i64) -> Result<Vec<usize>, String> {
        let mut lost = vec![0u8; self.world];
        let mut err = ErrBuf::new();
        // SAFETY: `lost` holds `world` bytes, which is what the shim writes.
        let code = unsafe { tlcv_c10d_roll_call(self.raw, grace_ms, lost.as_mut_ptr(), err.ptr(), 1024) };
        err.check(code)?;
        Ok(lost.iter().enumerate().filter(|(_, l)| **l != 0).map(|(r, _)| r).collect())
    }

    fn check_outputs(&self, outputs: &[Tensor]) -> Result<(), String> {
        if outputs.len() == self.world {
            Ok(())
        } else {
            Err(format!("{} output tensors for a world of {}", outputs.len(), self.world))
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `tlcv_c10d_new` and is freed once, here.
        unsafe { tlcv_c10d_free(self.raw) }
    }
}
