//! `uv_stream_t`: reading, writing, shutdown and listening, shared by every
//! stream handle type (TCP now; pipes later).

use std::ffi::c_void;

use libuv_sys2 as sys;

use super::accounting::{self, Counter};
use super::error::UvError;
use super::handle::{with_payload, HandleBox};

/// What a stream tells its owner. Runs on the loop thread, from libuv
/// callbacks; the owner must not assume the GIL or any lock is held.
pub trait StreamHandler {
    /// A buffer for the next read. It must stay valid and untouched until the
    /// following `on_read` call. It must not stop or close the stream: libuv
    /// calls the read callback right after, without checking that it is
    /// still set.
    fn alloc(&mut self, suggested: usize) -> &mut [u8];
    /// `Ok(n)`: n bytes were read into the buffer from `alloc` (passed back as
    /// `data`). `Err(e)`: end of stream (`e.is_eof()`) or a read error.
    fn on_read(&mut self, result: Result<&[u8], UvError>);
    /// The read that followed `alloc` found nothing (EAGAIN): the buffer
    /// handed out is free again.
    fn on_nothing_read(&mut self) {}
    /// A listening stream has a connection to accept (or failed to).
    fn on_connection(&mut self, _status: Result<(), UvError>) {}
}

/// Boxed handler stored in the handle.
pub type Handler = Box<dyn StreamHandler>;

/// Callback of a write, shutdown or connect request.
pub type Done = Box<dyn FnOnce(Result<(), UvError>)>;

/// A stream handle of raw type `H` (`uv_tcp_t`, `uv_pipe_t`...).
#[repr(transparent)]
pub struct Stream<H> {
    pub(crate) h: HandleBox<H>,
}

/// A stream of either kind, owned; derefs to the operations every stream has.
pub enum AnyStream {
    /// A TCP socket.
    Tcp(super::Tcp),
    /// A Unix socket, pipe or character device.
    Pipe(super::Pipe),
}

impl std::ops::Deref for AnyStream {
    type Target = Stream<sys::uv_stream_t>;
    fn deref(&self) -> &Self::Target {
        match self {
            AnyStream::Tcp(t) => t.erase(),
            AnyStream::Pipe(p) => p.erase(),
        }
    }
}

fn status(rc: i32) -> Result<(), UvError> {
    UvError::check(rc).map(|_| ())
}

impl<H> Stream<H> {
    /// This stream seen through libuv's base type. Only borrowed: the owner
    /// (and its `Drop`, which frees memory of type `H`) stays `self`.
    pub fn erase(&self) -> &Stream<sys::uv_stream_t> {
        // SAFETY: Stream and HandleBox are repr(transparent) over one raw
        // pointer, so both types have the pointer's layout; every uv stream
        // type begins with the uv_stream_t fields, which is all the methods of
        // Stream<uv_stream_t> touch.
        unsafe { &*(self as *const Self as *const Stream<sys::uv_stream_t>) }
    }

    fn raw(&self) -> *mut sys::uv_stream_t {
        self.h.raw() as *mut sys::uv_stream_t
    }

    /// Start delivering reads to the handler.
    pub fn read_start(&self) -> Result<(), UvError> {
        // SAFETY: the handle is an initialised, open stream whose payload is a
        // Handler (set by the constructor of every Stream).
        status(unsafe { sys::uv_read_start(self.raw(), Some(alloc_cb), Some(read_cb)) })
    }

    /// Stop reading (idempotent).
    pub fn read_stop(&self) {
        // SAFETY: the handle is an initialised, open stream.
        unsafe { sys::uv_read_stop(self.raw()) };
    }

    /// Write as much of `data` as the socket takes now, without queueing.
    /// Returns the number of bytes written (0 if it would block).
    pub fn try_write(&self, data: &[u8]) -> Result<usize, UvError> {
        if data.is_empty() {
            return Ok(0);
        }
        // SAFETY: buf points into `data`, valid for this synchronous call; the
        // handle is an initialised, open stream.
        let rc = unsafe {
            let buf = sys::uv_buf_init(data.as_ptr() as *mut _, data.len() as _);
            sys::uv_try_write(self.raw(), &buf, 1)
        };
        match rc {
            n if n >= 0 => Ok(n as usize),
            n if n == sys::uv_errno_t_UV_EAGAIN => Ok(0),
            n => Err(UvError(n)),
        }
    }

    /// Queue `bufs` for writing; `done` runs once they are written (or failed).
    ///
    /// # Safety
    /// Every slice in `bufs` must stay valid and unmodified until `done` runs:
    /// the caller moves their owners into `done`.
    pub unsafe fn write(&self, bufs: &[&[u8]], done: Done) -> Result<(), UvError> {
        let raw_bufs: Vec<sys::uv_buf_t> = bufs
            .iter()
            // SAFETY: uv_buf_init only packs pointer and length.
            .map(|b| unsafe { sys::uv_buf_init(b.as_ptr() as *mut _, b.len() as _) })
            .collect();
        let req = new_req::<sys::uv_write_t>(done, Counter::WriteReq);
        // SAFETY: req is a fresh request from new_req, reclaimed exactly once:
        // in write_cb, or below on failure. libuv copies the uv_buf_t array;
        // the bytes stay alive per this function's contract.
        unsafe {
            let rc = sys::uv_write(
                req,
                self.raw(),
                raw_bufs.as_ptr(),
                raw_bufs.len() as _,
                Some(write_cb),
            );
            if rc < 0 {
                drop(take_req(req, Counter::WriteReq));
                return Err(UvError(rc));
            }
        }
        Ok(())
    }

    /// Shut down the write side once queued writes are done.
    pub fn shutdown(&self, done: Done) -> Result<(), UvError> {
        let req = new_req::<sys::uv_shutdown_t>(done, Counter::ShutdownReq);
        // SAFETY: as in `write`: req is reclaimed once, in shutdown_cb or here
        // on failure.
        unsafe {
            let rc = sys::uv_shutdown(req, self.raw(), Some(shutdown_cb));
            if rc < 0 {
                drop(take_req(req, Counter::ShutdownReq));
                return Err(UvError(rc));
            }
        }
        Ok(())
    }

    /// Bytes queued in libuv, not yet written to the socket.
    pub fn write_queue_size(&self) -> usize {
        // SAFETY: the handle is an initialised stream.
        unsafe { sys::uv_stream_get_write_queue_size(self.raw()) }
    }

    /// Listen for connections; the handler's `on_connection` is called.
    pub fn listen(&self, backlog: i32) -> Result<(), UvError> {
        // SAFETY: the handle is an initialised, bound stream with a Handler.
        status(unsafe { sys::uv_listen(self.raw(), backlog, Some(connection_cb)) })
    }

    /// Accept a pending connection into `client` (a fresh stream).
    pub fn accept<C>(&self, client: &Stream<C>) -> Result<(), UvError> {
        // SAFETY: both handles are initialised streams of the same loop.
        status(unsafe { sys::uv_accept(self.raw(), client.raw()) })
    }

    /// The OS file descriptor (socket) of the stream.
    pub fn fileno(&self) -> Result<i64, UvError> {
        // SAFETY: uv_os_fd_t is an int or a HANDLE, valid when zeroed.
        let mut fd: sys::uv_os_fd_t = unsafe { std::mem::zeroed() };
        // SAFETY: the handle is initialised; fd is a valid out pointer.
        status(unsafe { sys::uv_fileno(self.h.as_handle(), &mut fd) })?;
        Ok(fd as usize as i64)
    }
}

unsafe extern "C" fn alloc_cb(h: *mut sys::uv_handle_t, suggested: usize, buf: *mut sys::uv_buf_t) {
    // SAFETY: h is a stream with a Handler payload; buf is libuv's out slot.
    unsafe {
        *buf = sys::uv_buf_init(std::ptr::null_mut(), 0);
        with_payload::<Handler>(h, |hd| {
            let b = hd.alloc(suggested);
            *buf = sys::uv_buf_init(b.as_mut_ptr() as *mut _, b.len() as _);
        });
    }
}

unsafe extern "C" fn read_cb(s: *mut sys::uv_stream_t, nread: isize, buf: *const sys::uv_buf_t) {
    // SAFETY: s is a stream with a Handler payload. For nread > 0, libuv wrote
    // nread bytes at buf.base, the buffer the handler handed out in alloc_cb.
    unsafe {
        if nread == 0 {
            // EAGAIN: nothing to report, the buffer is free again.
            with_payload::<Handler>(s as *mut sys::uv_handle_t, |hd| hd.on_nothing_read());
            return;
        }
        let res = if nread > 0 {
            Ok(std::slice::from_raw_parts(
                (*buf).base as *const u8,
                nread as usize,
            ))
        } else {
            Err(UvError(nread as i32))
        };
        with_payload::<Handler>(s as *mut sys::uv_handle_t, |hd| hd.on_read(res));
    }
}

unsafe extern "C" fn connection_cb(s: *mut sys::uv_stream_t, st: i32) {
    // SAFETY: s is a listening stream with a Handler payload.
    unsafe {
        with_payload::<Handler>(s as *mut sys::uv_handle_t, |hd| {
            hd.on_connection(status(st))
        })
    }
}

unsafe extern "C" fn write_cb(req: *mut sys::uv_write_t, st: i32) {
    // SAFETY: req was made by new_req in Stream::write; libuv is done with it.
    let done = unsafe { take_req(req, Counter::WriteReq) };
    run_done(done, st);
}

unsafe extern "C" fn shutdown_cb(req: *mut sys::uv_shutdown_t, st: i32) {
    // SAFETY: req was made by new_req in Stream::shutdown; libuv is done with it.
    let done = unsafe { take_req(req, Counter::ShutdownReq) };
    run_done(done, st);
}

/// A zeroed libuv request of type `R` on the heap, its `data` carrying
/// `done`; counted under `c` until `take_req` frees it.
pub(crate) fn new_req<R>(done: Done, c: Counter) -> *mut R {
    let req = Box::into_raw(Box::new(std::mem::MaybeUninit::<R>::zeroed())) as *mut R;
    // SAFETY: req is zeroed memory we own; every uv_xxx_t request begins with
    // the uv_req_t fields, so writing `data` through uv_req_t is valid.
    unsafe { (*(req as *mut sys::uv_req_t)).data = Box::into_raw(Box::new(done)) as *mut c_void };
    accounting::add(c, 1);
    req
}

/// Free a request made by `new_req` and return its callback.
///
/// # Safety
/// `req` must come from `new_req::<R>(_, c)`, libuv must hold no pointer to it
/// any more (its callback is running, or submitting it failed), and it must
/// not be used again.
pub(crate) unsafe fn take_req<R>(req: *mut R, c: Counter) -> Done {
    accounting::add(c, -1);
    // SAFETY: per the contract, data is the Box<Done> set by new_req and req
    // the Box<MaybeUninit<R>> allocated there; both are reclaimed once, here.
    unsafe {
        let done = Box::from_raw((*(req as *mut sys::uv_req_t)).data as *mut Done);
        drop(Box::from_raw(req as *mut std::mem::MaybeUninit<R>));
        *done
    }
}

pub(crate) fn run_done(done: Done, st: i32) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| done(status(st))));
    if r.is_err() {
        eprintln!("uvrs: a panic in a libuv request callback was caught");
    }
}
