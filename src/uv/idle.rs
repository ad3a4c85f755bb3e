//! `uv_idle_t`: while active, the loop polls for I/O without blocking.

use libuv_sys2 as sys;

super::handle::simple_handle!(
    /// An idle handle: runs its callback once per iteration while started.
    Idle, sys::uv_idle_t, sys::uv_idle_init, sys::uv_idle_stop
);

impl Idle {
    /// Start the handle (no-op if started).
    pub fn start(&self) {
        // SAFETY: the handle is initialised and not closed.
        unsafe { sys::uv_idle_start(self.h.raw(), Some(Self::trampoline)) };
    }
}
