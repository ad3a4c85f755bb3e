//! `uv_prepare_t`: runs right before the loop polls for I/O.

use libuv_sys2 as sys;

super::handle::simple_handle!(
    /// A prepare handle: its callback runs once per iteration, before the poll.
    Prepare, sys::uv_prepare_t, sys::uv_prepare_init, sys::uv_prepare_stop
);

impl Prepare {
    /// Start the handle (no-op if started).
    pub fn start(&self) {
        // SAFETY: the handle is initialised and not closed.
        unsafe { sys::uv_prepare_start(self.h.raw(), Some(Self::trampoline)) };
    }
}
