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
        // A plain load first: this runs several times per read, and a swap is
        // a locked instruction even when there is nothing to restore.
        if self.ts.load(Ordering::Relaxed).is_null() {
            return;
        }
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

/// A cell for loop state that is only ever touched with the GIL held (the
/// ready queue and the timer heap): every producer and consumer of that state
/// is Python-facing code or a libuv callback that has taken the GIL first.
///
/// With the GIL as the lock, a `RefCell` suffices and saves the atomic
/// read-modify-write of a mutex per access (several per `call_soon`); a borrow
/// taken twice (a bug: state must never be borrowed across a call into
/// Python) panics instead of deadlocking. Free-threaded CPython has no GIL to
/// lean on, so there it is a mutex.
#[cfg(not(Py_GIL_DISABLED))]
pub struct GilCell<T>(std::cell::RefCell<T>);

#[cfg(not(Py_GIL_DISABLED))]
// SAFETY: all access happens with the GIL held (see above), which serialises
// the threads that may touch the cell; T itself may move between threads.
unsafe impl<T: Send> Sync for GilCell<T> {}

#[cfg(not(Py_GIL_DISABLED))]
impl<T> GilCell<T> {
    pub fn new(v: T) -> Self {
        GilCell(std::cell::RefCell::new(v))
    }

    /// Exclusive access; the caller holds the GIL.
    #[inline]
    pub fn lock(&self) -> std::cell::RefMut<'_, T> {
        self.0.borrow_mut()
    }

    /// Exclusive access if nobody has it (GC traversal).
    #[inline]
    pub fn try_lock(&self) -> Option<std::cell::RefMut<'_, T>> {
        self.0.try_borrow_mut().ok()
    }
}

#[cfg(Py_GIL_DISABLED)]
pub struct GilCell<T>(parking_lot::Mutex<T>);

#[cfg(Py_GIL_DISABLED)]
impl<T> GilCell<T> {
    pub fn new(v: T) -> Self {
        GilCell(parking_lot::Mutex::new(v))
    }

    #[inline]
    pub fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
        self.0.lock()
    }

    #[inline]
    pub fn try_lock(&self) -> Option<parking_lot::MutexGuard<'_, T>> {
        self.0.try_lock()
    }
}
