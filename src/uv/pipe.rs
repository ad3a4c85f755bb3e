//! `uv_pipe_t`: Unix domain sockets, pipes and character devices opened from
//! an existing fd (the socket itself is created, bound and connected by
//! Python's `socket` module, as asyncio does).

use std::ops::Deref;

use libuv_sys2 as sys;

use super::error::UvError;
use super::handle::HandleBox;
use super::stream::{Handler, Stream};
use super::Loop;

/// A pipe handle: a `Stream` over a Unix socket, pipe or tty fd.
pub struct Pipe {
    s: Stream<sys::uv_pipe_t>,
}

impl Deref for Pipe {
    type Target = Stream<sys::uv_pipe_t>;
    fn deref(&self) -> &Self::Target {
        &self.s
    }
}

impl Pipe {
    /// A new, unopened pipe handle on `lp` (no fd passing); `handler`
    /// receives its events.
    pub fn new(lp: &Loop, handler: Handler) -> Result<Pipe, UvError> {
        let raw_loop = lp.raw()?;
        // SAFETY: raw_loop is initialised and outlives the handle; p is zeroed.
        let h = HandleBox::init(handler, |p| unsafe { sys::uv_pipe_init(raw_loop, p, 0) })?;
        Ok(Pipe { s: Stream { h } })
    }

    /// Adopt an existing fd. The handle owns it from now on and closes it
    /// when the handle is closed.
    pub fn open(&self, fd: i64) -> Result<(), UvError> {
        // SAFETY: the handle is initialised and has no fd yet.
        UvError::check(unsafe { sys::uv_pipe_open(self.s.h.raw(), fd as sys::uv_file) }).map(|_| ())
    }
}
