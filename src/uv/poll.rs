//! `uv_poll_t`: readiness notifications on a socket or fd owned elsewhere.

use libuv_sys2 as sys;

use super::error::UvError;
use super::handle::{with_payload, HandleBox};
use super::Loop;

/// Callback of a poll handle: `(status, events)`; status < 0 is a libuv error.
pub type PollCallback = Box<dyn FnMut(i32, i32)>;

/// Readable event bit.
pub const READABLE: i32 = sys::uv_poll_event_UV_READABLE as i32;
/// Writable event bit.
pub const WRITABLE: i32 = sys::uv_poll_event_UV_WRITABLE as i32;
/// The peer hung up (reported to readers).
pub const DISCONNECT: i32 = sys::uv_poll_event_UV_DISCONNECT as i32;

/// A poll handle watching a socket (any fd on Unix) that it does not own.
pub struct Poll {
    h: HandleBox<sys::uv_poll_t>,
}

/// The OS socket type libuv polls (`int` on Unix, `SOCKET` on Windows).
pub type OsSock = sys::uv_os_sock_t;

impl Poll {
    /// Initialise on `lp` for `sock`. The caller keeps ownership of `sock` and
    /// must keep it open until this handle is dropped.
    pub fn new(lp: &Loop, sock: OsSock, cb: PollCallback) -> Result<Poll, UvError> {
        let raw_loop = lp.raw()?;
        // SAFETY: raw_loop is initialised and outlives the handle; p is zeroed.
        let h = HandleBox::init(cb, |p| unsafe {
            sys::uv_poll_init_socket(raw_loop, p, sock)
        })?;
        Ok(Poll { h })
    }

    unsafe extern "C" fn trampoline(p: *mut sys::uv_poll_t, status: i32, events: i32) {
        // SAFETY: p is this handle, initialised with a PollCallback payload.
        unsafe { with_payload::<PollCallback>(p as *mut sys::uv_handle_t, |cb| cb(status, events)) }
    }

    /// Watch for `events` (READABLE | WRITABLE).
    pub fn start(&self, events: i32) -> Result<(), UvError> {
        // SAFETY: the handle is initialised and not closed.
        let rc = unsafe { sys::uv_poll_start(self.h.raw(), events, Some(Self::trampoline)) };
        UvError::check(rc).map(|_| ())
    }

    /// Stop watching.
    pub fn stop(&self) {
        // SAFETY: the handle is initialised and not closed.
        unsafe { sys::uv_poll_stop(self.h.raw()) };
    }

    /// Stop the handle from keeping the loop alive.
    pub fn unref(&self) {
        self.h.unref()
    }
}
