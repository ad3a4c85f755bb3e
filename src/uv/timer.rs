//! `uv_timer_t`: one-shot wakeups at millisecond resolution.

use libuv_sys2 as sys;

super::handle::simple_handle!(
    /// A timer handle. uvrs uses one per loop to wake the poll when the
    /// earliest Python timer is due; the Python timers live in a heap.
    Timer, sys::uv_timer_t, sys::uv_timer_init, sys::uv_timer_stop
);

impl Timer {
    /// (Re)start as a one-shot timer firing `timeout_ms` after the loop's
    /// cached time.
    pub fn start(&self, timeout_ms: u64) {
        // SAFETY: the handle is initialised and not closed; repeat 0 = one-shot.
        unsafe { sys::uv_timer_start(self.h.raw(), Some(Self::trampoline), timeout_ms, 0) };
    }
}
