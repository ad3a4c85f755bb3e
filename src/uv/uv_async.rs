//! `uv_async_t`: wake the loop from another thread.

use libuv_sys2 as sys;

use super::error::UvError;
use super::handle::{with_payload, Callback, HandleBox};
use super::Loop;

/// An async handle. `send` may be called from any thread; the callback runs on
/// the loop thread (several sends may be coalesced into one call).
pub struct Async {
    h: HandleBox<sys::uv_async_t>,
}

impl Async {
    /// Initialise on `lp`; `cb` runs on the loop thread after `send`.
    pub fn new(lp: &Loop, cb: Callback) -> Result<Async, UvError> {
        let raw_loop = lp.raw()?;
        // SAFETY: raw_loop is initialised and outlives the handle; p is zeroed.
        let h = HandleBox::init(cb, |p| unsafe {
            sys::uv_async_init(raw_loop, p, Some(Self::trampoline))
        })?;
        Ok(Async { h })
    }

    unsafe extern "C" fn trampoline(p: *mut sys::uv_async_t) {
        // SAFETY: p is this handle, initialised with a Callback payload.
        unsafe { with_payload::<Callback>(p as *mut sys::uv_handle_t, |cb| cb()) }
    }

    /// Wake the loop. Thread-safe and async-signal-safe per libuv.
    pub fn send(&self) {
        // SAFETY: the handle is initialised and not closed; the owner guarantees
        // no send races with closing (it checks its closed flag under a lock).
        unsafe { sys::uv_async_send(self.h.raw()) };
    }

    /// Stop the handle from keeping the loop alive.
    pub fn unref(&self) {
        self.h.unref()
    }
}

// SAFETY: uv_async_send is documented as thread-safe; everything else on the
// handle is used from the loop thread only.
unsafe impl Send for Async {}
// SAFETY: see Send.
unsafe impl Sync for Async {}
