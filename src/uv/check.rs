//! `uv_check_t`: runs right after the loop has polled for I/O.

use libuv_sys2 as sys;

super::handle::simple_handle!(
    /// A check handle: its callback runs once per iteration, after the poll.
    Check, sys::uv_check_t, sys::uv_check_init, sys::uv_check_stop
);

impl Check {
    /// Start the handle (no-op if started).
    pub fn start(&self) {
        // SAFETY: the handle is initialised and not closed.
        unsafe { sys::uv_check_start(self.h.raw(), Some(Self::trampoline)) };
    }
}
