//! Releasing the GIL while libuv blocks in its poll, and taking it back.
//!
//! The loop thread holds the GIL while `uv_run` runs. Just before libuv polls
//! with a non-zero timeout (in a `uv_prepare` callback) the thread state is
//! saved and the GIL released; every libuv callback that may touch Python calls
//! `ensure()` first, which re-acquires it if (and only if) it was released.
//! This costs one PyEval_SaveThread/RestoreThread pair per blocking poll,
//! instead of one attach/detach per callback.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi;

/// The saved thread state of a loop thread that released the GIL.
pub struct SavedThread {
    ts: AtomicPtr<ffi::PyThreadState>,
}

impl SavedThread {
    pub fn new() -> Self {
        SavedThread {
            ts: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Release the GIL. Must be called by the loop thread while it holds the
    /// GIL and has no Python borrow alive; `ensure()` must run before any
    /// Python object is touched again.
    pub fn release(&self) {
        if !self.ts.load(Ordering::Relaxed).is_null() {
            return;
        }
        // SAFETY: the caller holds the GIL (loop thread inside uv_run, which is
        // entered with the GIL held) and touches no Python object until
        // `ensure()` has restored the thread state saved here.
        let ts = unsafe { ffi::PyEval_SaveThread() };
        self.ts.store(ts, Ordering::Relaxed);
    }

    /// Re-acquire the GIL if `release()` gave it up. Idempotent.
    pub fn ensure(&self) {
        let ts = self.ts.swap(ptr::null_mut(), Ordering::Relaxed);
        if !ts.is_null() {
            // SAFETY: ts was returned by PyEval_SaveThread on this same thread
            // (only the loop thread calls release/ensure) and not restored since.
            unsafe { ffi::PyEval_RestoreThread(ts) };
        }
    }
}

impl Default for SavedThread {
    fn default() -> Self {
        Self::new()
    }
}
