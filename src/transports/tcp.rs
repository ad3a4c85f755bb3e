//! The native core of a TCP transport: reads delivered straight to the
//! protocol, writes tried at once and queued in libuv otherwise, flow control,
//! half-close and closing, all with asyncio's selector-transport semantics.
//!
//! The Python class `uvrs._tcp.TCPTransport` (an `asyncio.Transport`) owns one
//! of these and exposes its methods; protocol callbacks receive that wrapper.

use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};
use pyo3::{PyTraverseError, PyVisit};

use super::errors::os_error;
use crate::r#loop::capi::{self, ContextGuard, SimpleBuffer};
use crate::r#loop::core::{must_leave_loop, HandleOwner, LoopCore, State};
use crate::r#loop::gil::GilCell;
use crate::uv::{self, StreamHandler, UvError};

/// Read buffer size for plain protocols (asyncio reads up to 256 KiB).
const READ_SIZE: usize = 256 * 1024;
/// After a read this large, the next one goes straight into a new `bytes`
/// object (saving a copy of the whole message); smaller ones share
/// `READ_BUF` and are copied into an exact-size `bytes`.
const LARGE_READ: usize = 64 * 1024;
/// The most a fresh `bytes` for one read asks for: below glibc's smallest
/// mmap threshold (128 KiB), so it comes from the heap and shrinks in place.
/// At 256 KiB every read cost an mmap, an mremap and a munmap.
const FRESH_MAX: usize = 120 * 1024;

/// After this many writes to a lost connection, asyncio logs a warning.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

/// What the stream is, for the few places where asyncio's transports differ.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A TCP or Unix socket connection.
    Socket,
    /// The read end of a pipe, socket or character device
    /// (`connect_read_pipe`): EOF always closes it.
    ReadPipe,
    /// The write end (`connect_write_pipe`); never reads.
    WritePipe,
}

impl Kind {
    fn parse(s: &str) -> PyResult<Kind> {
        match s {
            "socket" => Ok(Kind::Socket),
            "read_pipe" => Ok(Kind::ReadPipe),
            "write_pipe" => Ok(Kind::WritePipe),
            _ => Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unknown stream kind {s:?}"
            ))),
        }
    }
}

struct Inner {
    tcp: Option<uv::AnyStream>,
    kind: Kind,
    /// The context protocol callbacks run in (a copy of the creator's).
    context: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    /// The Python wrapper handed to protocol callbacks.
    transport: Option<Py<PyAny>>,
    buffered: bool,
    paused: bool,
    closing: bool,
    eof: bool,
    conn_lost: u32,
    high: usize,
    low: usize,
    protocol_paused: bool,
    /// uv_write requests not yet completed.
    pending_writes: usize,
    /// A sendfile is running: write() raises, as asyncio's does.
    sendfile_active: bool,
    /// Futures waiting for every queued write to be done (sendfile).
    drain_waiters: Vec<Py<PyAny>>,
    /// libuv is between `alloc_cb` and `read_cb`, and a BufferedProtocol's
    /// `get_buffer()` ran in between: the stream must not be stopped or
    /// closed now (libuv would call a NULL read callback, or read fd -1), so
    /// those wait in `stop_after_read`/`parked` until the read is reported.
    in_alloc: bool,
    stop_after_read: bool,
    /// The handle closed while `in_alloc`; closed once the read is reported.
    parked: Option<uv::AnyStream>,
}

impl Inner {
    /// Take the handle out to close it. Inside `get_buffer()` the handle is
    /// parked instead (closed by `Reader::end_alloc`), and None is returned.
    fn take_stream(&mut self) -> Option<uv::AnyStream> {
        let stream = self.tcp.take();
        if self.in_alloc && stream.is_some() {
            self.parked = stream;
            return None;
        }
        stream
    }

    /// `uv_read_stop`, or, inside `get_buffer()`, once the read is reported.
    fn read_stop(&mut self) {
        if self.in_alloc {
            self.stop_after_read = true;
        } else if let Some(t) = self.tcp.as_ref() {
            t.read_stop();
        }
    }
}

/// State shared by the Python-facing core and the libuv read handler.
pub(crate) struct Shared {
    st: Arc<State>,
    loop_: Py<PyAny>,
    /// Only touched with the GIL held (Python-facing methods, and libuv
    /// callbacks after `ensure_gil`).
    inner: GilCell<Inner>,
}

thread_local! {
    /// The read buffer of every stream of the loop running on this thread.
    /// One is enough: libuv calls `read_cb` right after `alloc_cb`, and the
    /// bytes are copied out (into a `bytes` object or a BufferedProtocol's
    /// buffer) before anything else can read. A thread runs one loop at a
    /// time, and a loop's callbacks never nest a read of another stream.
    /// (One 256 KiB buffer per connection cost 256 KiB of RSS each.)
    static READ_BUF: std::cell::UnsafeCell<Vec<u8>> = const {
        std::cell::UnsafeCell::new(Vec::new())
    };
}

/// The libuv-side handler for a stream's reads.
///
/// A BufferedProtocol is read in place, as asyncio's selector transport
/// does: `alloc` calls `get_buffer(-1)` and libuv reads into that buffer,
/// then `on_read` calls `buffer_updated(n)`. libuv calls `read_cb` right
/// after `alloc_cb` returns without checking that the stream still reads, so
/// a pause or close from inside `get_buffer()` is deferred until `on_read`
/// (`Inner::in_alloc`). Plain protocols read into `READ_BUF` (or a fresh
/// `bytes` for large reads) and get an exact-size `bytes`.
///
/// It holds the shared state strongly: while the libuv handle is open the
/// connection is alive whoever else forgets it (as asyncio's selector keeps
/// its transports), and the state, with the protocol and the wrapper, lives at
/// least until the handle is closed.
struct Reader {
    sh: Arc<Shared>,
    /// The `bytes` object libuv reads into (large reads), between `alloc`
    /// and `on_read`; only this reader refers to it.
    fresh: Option<Py<PyBytes>>,
    /// Size of the last read, which picks the next buffer.
    last: usize,
    /// The BufferedProtocol's buffer libuv reads into, between `alloc` and
    /// the read callback.
    app_buf: Option<SimpleBuffer>,
    /// `get_buffer()` failed in `alloc` (already reported): the read
    /// callback's ENOBUFS that follows is not an error of its own.
    alloc_failed: bool,
}

impl Reader {
    /// A new `bytes` of `size` for libuv to read into (kept in
    /// `self.fresh` until `on_read`), or None.
    fn fresh_bytes(&mut self, size: usize) -> Option<(*mut u8, usize)> {
        self.sh.st.ensure_gil();
        // SAFETY: the GIL is held (ensure_gil above).
        let py = unsafe { Python::assume_attached() };
        if self.fresh.is_none() {
            self.fresh = capi::new_uninit_bytes(py, size);
        }
        self.fresh.as_ref().map(|obj| capi::bytes_memory(py, obj))
    }

    /// `get_buffer(-1)` of a BufferedProtocol, for libuv to read into; None
    /// when the protocol is not buffered (or there is none any more).
    /// Err(()): get_buffer() failed (reported): no read this time.
    fn app_buffer(&mut self) -> Option<Result<(*mut u8, usize), ()>> {
        // A borrow, not an Arc clone (two atomic operations per read): the
        // fields assigned below are disjoint from `sh`.
        let sh = &*self.sh;
        if sh.st.closed() {
            return None;
        }
        sh.st.ensure_gil();
        // SAFETY: the GIL is held (ensure_gil above).
        let py = unsafe { Python::assume_attached() };
        let proto = {
            let mut g = sh.inner.lock();
            if !g.buffered || g.conn_lost > 0 {
                return None;
            }
            let proto = g.protocol.as_ref()?.bind(py).clone();
            g.in_alloc = true;
            proto
        };
        let ctx = sh.context(py);
        let _entered = ctx.as_ref().and_then(ContextGuard::enter);
        match get_buffer(&proto) {
            Ok(buf) => {
                let (ptr, len) = (buf.as_slice().as_ptr() as *mut u8, buf.as_slice().len());
                self.app_buf = Some(buf);
                Some(Ok((ptr, len)))
            }
            Err(e) => {
                sh.protocol_error(py, e, "Fatal error: protocol.get_buffer() call failed.");
                self.alloc_failed = true;
                Some(Err(()))
            }
        }
    }

    /// The read that followed `alloc` is reported: apply what was deferred
    /// while libuv was between its callbacks. Returns the buffer read into,
    /// if it was the protocol's.
    fn end_alloc(&mut self) -> Option<SimpleBuffer> {
        if self.app_buf.is_none() && !self.alloc_failed {
            return None;
        }
        self.sh.st.ensure_gil();
        let (parked, stop) = {
            let mut g = self.sh.inner.lock();
            g.in_alloc = false;
            (g.parked.take(), std::mem::take(&mut g.stop_after_read))
        };
        if parked.is_some() {
            drop(parked);
        } else if stop {
            self.sh.stop_reading();
        }
        self.app_buf.take()
    }
}

/// `protocol.get_buffer(-1)`, checked to be a non-empty writable buffer.
fn get_buffer(proto: &Bound<'_, PyAny>) -> PyResult<SimpleBuffer> {
    let b = proto.call_method1(pyo3::intern!(proto.py(), "get_buffer"), (-1,))?;
    let buf = SimpleBuffer::get(&b)?;
    if buf.as_slice().is_empty() {
        return Err(PyRuntimeError::new_err(
            "get_buffer() returned an empty buffer",
        ));
    }
    if buf.readonly() {
        return Err(PyTypeError::new_err(
            "get_buffer() returned a read-only buffer",
        ));
    }
    Ok(buf)
}

/// The bytes object holding the bytes just read at `data`, if it was the
/// reader's fresh one: shrunk to their length and handed over.
fn take_fresh(
    fresh: &mut Option<Py<PyBytes>>,
    py: Python<'_>,
    data: &[u8],
) -> Option<PyResult<Py<PyAny>>> {
    let (base, _) = capi::bytes_memory(py, fresh.as_ref()?);
    if !std::ptr::eq(base as *const u8, data.as_ptr()) {
        return None;
    }
    // Only this reader ever referred to it: shrinking in place is safe.
    let obj = fresh.take()?;
    Some(capi::resize_bytes(py, obj, data.len()))
}

impl StreamHandler for Reader {
    fn alloc(&mut self, _suggested: usize) -> &mut [u8] {
        match self.app_buffer() {
            // SAFETY: the protocol's writable buffer (checked), held by
            // self.app_buf until the read callback: libuv fills it and reports
            // at once, and no Python code runs in between.
            Some(Ok((ptr, len))) => return unsafe { std::slice::from_raw_parts_mut(ptr, len) },
            // Empty: libuv reports UV_ENOBUFS and reads nothing.
            Some(Err(())) => return &mut [],
            None => {}
        }
        if self.last >= LARGE_READ {
            let size = (self.last * 2).min(FRESH_MAX);
            if let Some((ptr, len)) = self.fresh_bytes(size) {
                // SAFETY: the memory of self.fresh's bytes object, which only
                // this reader refers to (so it may be written) and which stays
                // alive until on_read takes it, right after libuv fills it.
                return unsafe { std::slice::from_raw_parts_mut(ptr, len) };
            }
        }
        READ_BUF.with(|b| {
            // SAFETY: the thread-local Vec is only touched here, on the loop's
            // thread; it is sized once and never resized or freed while the
            // thread lives, so the slice stays valid. libuv fills it and hands
            // it to this stream's read callback at once, which copies the
            // bytes out before any other stream can read (see READ_BUF), so
            // no two live uses of the slice overlap.
            unsafe {
                let v = &mut *b.get();
                if v.len() < READ_SIZE {
                    v.resize(READ_SIZE, 0);
                }
                std::slice::from_raw_parts_mut(v.as_mut_ptr(), READ_SIZE)
            }
        })
    }

    fn on_nothing_read(&mut self) {
        // As asyncio: get_buffer() was called, recv_into() would block, and
        // buffer_updated() is not called.
        drop(self.end_alloc());
        self.alloc_failed = false;
        // An idle connection keeps no 120 KiB bytes object around.
        if self.fresh.is_some() {
            self.sh.st.ensure_gil();
            self.fresh = None;
        }
    }

    fn on_read(&mut self, result: Result<&[u8], UvError>) {
        let in_place = self.end_alloc().is_some();
        // A borrow, not an Arc clone, as in app_buffer.
        let sh = &*self.sh;
        if std::mem::take(&mut self.alloc_failed) {
            // get_buffer() failed in alloc (reported there); this is libuv's
            // UV_ENOBUFS for the empty buffer.
            return;
        }
        // A buffer read in place is released above, before the protocol
        // hears of the read (as recv_into() releases it): buffer_updated()
        // may resize its bytearray.
        if sh.st.closed() {
            // Data that arrives while close() drains libuv: asyncio's closed
            // selector would never report it either.
            return;
        }
        sh.st.ensure_gil();
        // SAFETY: the GIL is held (ensure_gil above).
        let py = unsafe { Python::assume_attached() };
        let ctx = sh.context(py);
        let _entered = ctx.as_ref().and_then(ContextGuard::enter);
        let buffered = sh.inner.lock().buffered;
        match result {
            // Read in place: as asyncio, buffer_updated() goes to whichever
            // protocol is current (get_buffer() may have swapped it).
            Ok(data) if in_place => sh.buffer_updated(py, data.len()),
            Ok(data) if buffered => {
                // Copied straight into the protocol's buffers: no bytes
                // object is needed, so the next read uses READ_BUF.
                self.last = 0;
                sh.deliver_buffered(py, data);
                // `data` may be the memory of self.fresh (a read sized while
                // the protocol was not buffered yet): free it only now that
                // every byte is copied out. Shrinking it first, as the
                // data_received path does, would move the memory under `data`
                // (ASan found that use after free).
                self.fresh = None;
            }
            Ok(data) => {
                self.last = data.len();
                match take_fresh(&mut self.fresh, py, data) {
                    Some(Ok(obj)) => sh.data_received_obj(py, obj.bind(py)),
                    Some(Err(e)) => {
                        sh.protocol_error(py, e, "Fatal read error on socket transport")
                    }
                    None => sh.data_received(py, data),
                }
            }
            Err(e) if e.is_eof() => sh.eof_received(py),
            Err(e) => {
                let exc = os_error(py, e);
                let msg = match sh.inner.lock().kind {
                    Kind::Socket => "Fatal read error on socket transport",
                    _ => "Fatal read error on pipe transport",
                };
                sh.fatal_error(py, exc, msg);
            }
        }
    }
}

impl HandleOwner for Shared {
    fn release_handle(&self) {
        let stream = self.inner.lock().take_stream();
        drop(stream);
    }
}

impl Shared {
    // Bound, not Py: dropping a Py<T> first asks a thread-local whether the
    // GIL is held (about 11 instructions each, several times per read).
    fn context<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.inner
            .lock()
            .context
            .as_ref()
            .map(|c| c.bind(py).clone())
    }

    fn protocol<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.inner
            .lock()
            .protocol
            .as_ref()
            .map(|p| p.bind(py).clone())
    }

    fn transport(&self, py: Python<'_>) -> Py<PyAny> {
        self.inner
            .lock()
            .transport
            .as_ref()
            .map(|t| t.clone_ref(py))
            .unwrap_or_else(|| py.None())
    }

    /// Feed `data` to a BufferedProtocol: `get_buffer(-1)` (as asyncio asks),
    /// copy what fits, `buffer_updated(n)`, until all is delivered or the
    /// transport is lost.
    fn deliver_buffered(&self, py: Python<'_>, mut data: &[u8]) {
        while !data.is_empty() {
            let Some(proto) = self.protocol(py) else {
                return;
            };
            if self.inner.lock().conn_lost > 0 {
                return;
            }
            let buf = match get_buffer(&proto) {
                Ok(b) => b,
                Err(e) => {
                    self.protocol_error(py, e, "Fatal error: protocol.get_buffer() call failed.");
                    return;
                }
            };
            let dst = buf.as_slice();
            let n = dst.len().min(data.len());
            // SAFETY: dst is a writable (checked), contiguous buffer of at least
            // n bytes, kept alive by `buf`; data is our own read buffer, so the
            // two do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst.as_ptr() as *mut u8, n) };
            drop(buf);
            data = &data[n..];
            self.buffer_updated(py, n);
        }
    }

    fn data_received(&self, py: Python<'_>, data: &[u8]) {
        if self.inner.lock().protocol.is_none() {
            return;
        }
        let bytes = self.st.bytes_for(py, data);
        self.data_received_obj(py, bytes.as_any());
        // Reused only if the protocol kept no reference to it.
        self.st.recycle_bytes(bytes);
    }

    /// `data_received(bytes)` with a bytes object already made.
    fn data_received_obj(&self, py: Python<'_>, bytes: &Bound<'_, PyAny>) {
        let Some(proto) = self.protocol(py) else {
            return;
        };
        if let Err(e) = proto.call_method1(pyo3::intern!(py, "data_received"), (bytes,)) {
            self.protocol_error(py, e, "Fatal error: protocol.data_received() call failed.");
        }
    }

    fn buffer_updated(&self, py: Python<'_>, n: usize) {
        let Some(proto) = self.protocol(py) else {
            return;
        };
        if let Err(e) = proto.call_method1(pyo3::intern!(py, "buffer_updated"), (n,)) {
            self.protocol_error(py, e, "Fatal error: protocol.buffer_updated() call failed.");
        }
    }

    fn eof_received(&self, py: Python<'_>) {
        let Some(proto) = self.protocol(py) else {
            return;
        };
        if self.inner.lock().kind != Kind::Socket {
            // A pipe closes on EOF whatever eof_received() returns. libuv
            // reports a hung-up pty as EOF without reading; the wrapper reads
            // once to turn that into asyncio's OSError(EIO).
            self.stop_reading();
            match self.transport(py).bind(py).call_method0("_probe_eof") {
                Ok(exc) if !exc.is_none() => {
                    self.fatal_error(
                        py,
                        PyErr::from_value(exc),
                        "Fatal read error on pipe transport",
                    );
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    self.protocol_error(py, e, "Fatal read error on pipe transport");
                    return;
                }
            }
            let res = proto.call_method0("eof_received");
            match res {
                Err(e) if must_leave_loop(py, &e) => self.st.fail(e),
                Err(e) => {
                    self.protocol_error(py, e, "Fatal error: protocol.eof_received() call failed.")
                }
                Ok(_) => self.or_fail(self.close(py)),
            }
            return;
        }
        match proto.call_method0("eof_received") {
            Ok(keep_open) => match keep_open.is_truthy() {
                Ok(true) => self.stop_reading(),
                Ok(false) => self.or_fail(self.close(py)),
                Err(e) => {
                    self.protocol_error(py, e, "Fatal error: protocol.eof_received() call failed.")
                }
            },
            Err(e) => {
                self.protocol_error(py, e, "Fatal error: protocol.eof_received() call failed.")
            }
        }
    }

    /// An exception from a protocol callback: KeyboardInterrupt/SystemExit
    /// leave the loop; anything else is a fatal error of the transport.
    fn protocol_error(&self, py: Python<'_>, e: PyErr, msg: &str) {
        if must_leave_loop(py, &e) {
            self.st.fail(e);
        } else {
            self.fatal_error(py, e, msg);
        }
    }

    fn stop_reading(&self) {
        self.inner.lock().read_stop();
    }

    /// asyncio's `_fatal_error`: report (OSErrors only in debug mode), then
    /// force-close with the exception.
    fn fatal_error(&self, py: Python<'_>, e: PyErr, msg: &str) {
        let loop_ = self.loop_.bind(py);
        // Socket and write-pipe transports only log OSErrors (in debug
        // mode); read pipes only EIO (a pty whose other side closed).
        let quiet = match self.inner.lock().kind {
            Kind::Socket | Kind::WritePipe => e.is_instance_of::<pyo3::exceptions::PyOSError>(py),
            Kind::ReadPipe => e
                .value(py)
                .getattr("errno")
                .and_then(|n| n.extract::<i32>())
                .map(|n| n == libuv_errno_eio())
                .unwrap_or(false),
        };
        if quiet {
            if self.st.is_debug() {
                let _ = py.import("logging").and_then(|l| {
                    l.call_method1("getLogger", ("asyncio",))?
                        .call_method1("debug", ("%r: %s", self.transport(py), msg))
                });
            }
        } else {
            let ctx = PyDict::new(py);
            let _ = ctx.set_item("message", msg);
            let _ = ctx.set_item("exception", e.clone_ref(py).into_value(py));
            let _ = ctx.set_item("transport", self.transport(py));
            let _ = ctx.set_item("protocol", self.protocol(py));
            if let Err(err) = loop_.call_method1("call_exception_handler", (ctx,)) {
                if must_leave_loop(py, &err) {
                    self.st.fail(err);
                }
            }
        }
        self.or_fail(self.force_close(py, Some(e)));
    }

    /// An error of a step run from a libuv callback, where nobody can
    /// receive it: the loop reports it (and stops if it must).
    fn or_fail(&self, res: PyResult<()>) {
        if let Err(e) = res {
            self.st.fail(e);
        }
    }

    /// asyncio's `_force_close`: drop queued writes, stop reading, and call
    /// connection_lost soon. Err: connection_lost could not be scheduled
    /// (the loop is closed), as asyncio's call_soon raises.
    fn force_close(&self, py: Python<'_>, exc: Option<PyErr>) -> PyResult<()> {
        let (tcp, first, waiters) = {
            let mut g = self.inner.lock();
            if g.conn_lost > 0 {
                return Ok(());
            }
            g.closing = true;
            g.conn_lost += 1;
            (g.take_stream(), true, std::mem::take(&mut g.drain_waiters))
        };
        wake_waiters(py, waiters, false);
        // Closing the handle cancels pending writes (their callbacks see
        // ECANCELED) and stops reading.
        drop(tcp);
        if first {
            self.schedule_connection_lost(py, exc.map(|e| e.into_value(py).into_any()))?;
        }
        Ok(())
    }

    fn schedule_connection_lost(&self, py: Python<'_>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let t = self.transport(py);
        if t.is_none(py) {
            // Never attached to a wrapper (e.g. the protocol factory failed):
            // nobody to tell; just let the socket go.
            let tcp = self.inner.lock().take_stream();
            drop(tcp);
            return Ok(());
        }
        // In the transport's context, as uvloop does (asyncio uses whatever
        // context closed the transport).
        let ctx = self.context(py);
        let res = t.bind(py).getattr("_call_connection_lost").and_then(|cb| {
            let kw = PyDict::new(py);
            if let Some(c) = ctx {
                kw.set_item(pyo3::intern!(py, "context"), c)?;
            }
            self.loop_
                .bind(py)
                .call_method("call_soon", (cb, exc), Some(&kw))
        });
        res.map(|_| ())
    }

    /// `transport.close()`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let lose_now = {
            let mut g = self.inner.lock();
            if g.closing {
                return Ok(());
            }
            g.closing = true;
            g.read_stop();
            if g.pending_writes == 0 {
                g.conn_lost += 1;
                true
            } else {
                false
            }
        };
        if lose_now {
            self.schedule_connection_lost(py, None)?;
        }
        Ok(())
    }

    fn maybe_pause_protocol(&self, py: Python<'_>) {
        let proto = {
            let mut g = self.inner.lock();
            let size = g.tcp.as_ref().map(|t| t.write_queue_size()).unwrap_or(0);
            if size <= g.high || g.protocol_paused {
                return;
            }
            g.protocol_paused = true;
            g.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        if let Some(p) = proto {
            // In the transport's context, as every protocol callback (also
            // when a write() from another context crosses the high mark).
            let ctx = self.context(py);
            let _entered = ctx.as_ref().and_then(ContextGuard::enter);
            if let Err(e) = p.bind(py).call_method0("pause_writing") {
                self.flow_error(py, e, "protocol.pause_writing() failed");
            }
        }
    }

    fn maybe_resume_protocol(&self, py: Python<'_>) {
        let proto = {
            let mut g = self.inner.lock();
            let size = g.tcp.as_ref().map(|t| t.write_queue_size()).unwrap_or(0);
            if !g.protocol_paused || size > g.low {
                return;
            }
            g.protocol_paused = false;
            g.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        if let Some(p) = proto {
            let ctx = self.context(py);
            let _entered = ctx.as_ref().and_then(ContextGuard::enter);
            if let Err(e) = p.bind(py).call_method0("resume_writing") {
                self.flow_error(py, e, "protocol.resume_writing() failed");
            }
        }
    }

    fn flow_error(&self, py: Python<'_>, e: PyErr, msg: &str) {
        if must_leave_loop(py, &e) {
            self.st.fail(e);
            return;
        }
        let ctx = PyDict::new(py);
        let _ = ctx.set_item("message", msg);
        let _ = ctx.set_item("exception", e.into_value(py));
        let _ = ctx.set_item("transport", self.transport(py));
        let _ = ctx.set_item("protocol", self.protocol(py));
        if let Err(err) = self
            .loop_
            .bind(py)
            .call_method1("call_exception_handler", (ctx,))
        {
            self.st.fail(err);
        }
    }

    /// A uv_write finished.
    fn on_write_done(&self, py: Python<'_>, res: Result<(), UvError>) {
        let ctx = self.context(py);
        let _entered = ctx.as_ref().and_then(ContextGuard::enter);
        let (lose, waiters) = {
            let mut g = self.inner.lock();
            g.pending_writes = g.pending_writes.saturating_sub(1);
            let waiters = if g.pending_writes == 0 {
                std::mem::take(&mut g.drain_waiters)
            } else {
                Vec::new()
            };
            (
                g.closing && g.conn_lost == 0 && g.pending_writes == 0,
                waiters,
            )
        };
        wake_waiters(py, waiters, res.is_ok());
        match res {
            Err(e) if e.is_cancelled() => return,
            Err(e) => {
                let exc = os_error(py, e);
                let msg = match self.inner.lock().kind {
                    Kind::Socket => "Fatal write error on socket transport",
                    _ => "Fatal write error on pipe transport",
                };
                self.fatal_error(py, exc, msg);
                return;
            }
            Ok(()) => {}
        }
        self.maybe_resume_protocol(py);
        if lose {
            self.inner.lock().conn_lost += 1;
            self.or_fail(self.schedule_connection_lost(py, None));
        }
    }
}

/// Resolve drain waiters: None when the queue drained, ConnectionError when
/// the connection was lost first.
fn wake_waiters(py: Python<'_>, waiters: Vec<Py<PyAny>>, ok: bool) {
    for w in waiters {
        let w = w.bind(py);
        if w.call_method0("done")
            .and_then(|d| d.is_truthy())
            .unwrap_or(true)
        {
            continue;
        }
        let _ = if ok {
            w.call_method1("set_result", (py.None(),))
        } else {
            let exc = pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
            w.call_method1("set_exception", (exc.into_value(py),))
        };
    }
}

/// Data to write, kept alive until libuv is done with it.
enum Owned {
    /// An immutable object (bytes, read-only buffer): no copy.
    Borrowed(SimpleBuffer, usize),
    /// A copy of mutable data (bytearray, writable memoryview).
    Copied(Vec<u8>),
}

impl Owned {
    fn bytes(&self) -> &[u8] {
        match self {
            Owned::Borrowed(b, off) => &b.as_slice()[*off..],
            Owned::Copied(v) => v,
        }
    }
}

/// The native core of a TCP transport.
#[pyclass(module = "uvrs._uvrs", frozen)]
pub struct TcpTransportCore {
    sh: Arc<Shared>,
}

/// A core whose handle is still open is normally out of reach of the
/// collector (the open handle refers to it, see `__traverse__`), and the
/// loop's `close()` releases every handle (`HandleOwner`). This is the net
/// for a core dropped before any transport wrapped it (a failed set-up): its
/// handle is closed here, as asyncio's socket is when collected.
impl Drop for TcpTransportCore {
    fn drop(&mut self) {
        let stream = self.sh.inner.try_lock().and_then(|mut g| g.take_stream());
        drop(stream);
    }
}

impl TcpTransportCore {
    /// The core around a stream whose handle is installed in `sh`.
    pub(crate) fn wrap(sh: Arc<Shared>) -> TcpTransportCore {
        TcpTransportCore { sh }
    }
}

/// The buffer of `data` if it is one of the bytes-like types asyncio's
/// transports accept (TypeError otherwise; BufferError for a strided view).
/// `TcpTransportCore.write`, as the builtin method `_fast_write` returns.
static WRITE: capi::FastMethod = capi::FastMethod::new(
    c"write",
    c"write(data): send data, as asyncio's Transport.write().",
    write_fast,
);

unsafe extern "C" fn write_fast(
    slf: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: this is WRITE's METH_FASTCALL | METH_KEYWORDS function, and
    // CPython calls it as such; WRITE is only ever bound to a core.
    unsafe {
        capi::one_arg_call(slf, args, nargs, kwnames, "write", "data", |slf, data| {
            slf.cast::<TcpTransportCore>()?
                .get()
                .write(slf.py(), data)?;
            Ok(slf.py().None())
        })
    }
}

fn bytes_like(data: &Bound<'_, PyAny>) -> PyResult<SimpleBuffer> {
    if !(data.is_instance_of::<PyBytes>()
        || data.is_instance_of::<PyByteArray>()
        || data.is_instance_of::<PyMemoryView>())
    {
        return Err(PyTypeError::new_err(format!(
            "data argument must be a bytes-like object, not {:?}",
            data.get_type().name()?.to_string()
        )));
    }
    SimpleBuffer::get(data)
}

/// The EIO errno (libuv's codes are -errno on Unix; Windows has no EIO case
/// for pipes).
fn libuv_errno_eio() -> i32 {
    -libuv_sys2::uv_errno_t_UV_EIO
}

/// Shared state for a new stream of `kind`, and the read handler for its
/// libuv handle.
fn new_shared(loop_: &Bound<'_, LoopCore>, kind: Kind) -> (Arc<Shared>, uv::stream::Handler) {
    let st = loop_.get().state();
    let sh = Arc::new(Shared {
        st,
        loop_: loop_.clone().into_any().unbind(),
        inner: GilCell::new(Inner {
            tcp: None,
            kind,
            context: None,
            protocol: None,
            transport: None,
            buffered: false,
            paused: false,
            closing: false,
            eof: false,
            conn_lost: 0,
            high: 64 * 1024,
            low: 16 * 1024,
            protocol_paused: false,
            pending_writes: 0,
            sendfile_active: false,
            drain_waiters: Vec::new(),
            in_alloc: false,
            stop_after_read: false,
            parked: None,
        }),
    });
    let owner: Arc<dyn HandleOwner> = sh.clone();
    sh.st.register_owner(Arc::downgrade(&owner));
    let reader = Reader {
        sh: sh.clone(),
        fresh: None,
        last: 0,
        app_buf: None,
        alloc_failed: false,
    };
    (sh, Box::new(reader))
}

/// A fresh TCP handle on `loop_`'s libuv loop, with the shared state its
/// reader reports to.
pub(crate) fn new_tcp(loop_: &Bound<'_, LoopCore>) -> PyResult<(uv::Tcp, Arc<Shared>)> {
    let (sh, reader) = new_shared(loop_, Kind::Socket);
    let tcp = uv::Tcp::new(sh.st.uv(), reader).map_err(|e| os_error(loop_.py(), e))?;
    Ok((tcp, sh))
}

pub(crate) fn install_tcp(sh: &Arc<Shared>, tcp: uv::Tcp) {
    // asyncio sets TCP_NODELAY on every TCP transport.
    let _ = tcp.nodelay(true);
    sh.inner.lock().tcp = Some(uv::AnyStream::Tcp(tcp));
}

/// A stream core adopting `fd`: a TCP socket (`tcp`), or a pipe handle for a
/// Unix socket, pipe or character device. The handle owns `fd` afterwards
/// (closed when the transport is); on failure `fd` is left to the caller.
pub(crate) fn stream_from_fd(
    loop_: &Bound<'_, LoopCore>,
    fd: i64,
    tcp: bool,
    kind: Kind,
) -> PyResult<Arc<Shared>> {
    let py = loop_.py();
    // A watch parked on this fd number belongs to a socket closed since.
    loop_.get().state().evict_parked(fd);
    if tcp {
        let (t, sh) = new_tcp(loop_)?;
        t.open(fd as uv::poll::OsSock)
            .map_err(|e| os_error(py, e))?;
        install_tcp(&sh, t);
        return Ok(sh);
    }
    let (sh, reader) = new_shared(loop_, kind);
    let p = uv::Pipe::new(sh.st.uv(), reader).map_err(|e| os_error(py, e))?;
    p.open(fd).map_err(|e| os_error(py, e))?;
    sh.inner.lock().tcp = Some(uv::AnyStream::Pipe(p));
    Ok(sh)
}

#[pymethods]
impl TcpTransportCore {
    /// Adopt a connected socket (its fd now belongs to the transport). With
    /// `tcp=False`, `fd` is a Unix socket, pipe or character device and
    /// `kind` says which transport it backs: `socket`, `read_pipe` or
    /// `write_pipe`.
    #[staticmethod]
    #[pyo3(signature = (loop_, fd, tcp=true, kind="socket"))]
    fn from_fd(
        loop_: &Bound<'_, LoopCore>,
        fd: i64,
        tcp: bool,
        kind: &str,
    ) -> PyResult<TcpTransportCore> {
        let kind = Kind::parse(kind)?;
        Ok(TcpTransportCore::wrap(stream_from_fd(
            loop_, fd, tcp, kind,
        )?))
    }

    /// Connect a new TCP handle that adopts `fd` (an unconnected socket) to
    /// the numeric address `(host, port[, flowinfo, scope_id])`; `done(exc)`
    /// is called with None or an OSError. Returns the core.
    #[staticmethod]
    fn connect(
        loop_: &Bound<'_, LoopCore>,
        fd: i64,
        addr: &Bound<'_, PyAny>,
        done: Py<PyAny>,
    ) -> PyResult<TcpTransportCore> {
        let py = loop_.py();
        let host: String = addr.get_item(0)?.extract()?;
        let port: u16 = addr.get_item(1)?.extract()?;
        let n = addr.len()?;
        let flowinfo: u32 = if n > 2 {
            addr.get_item(2)?.extract()?
        } else {
            0
        };
        let scope_id: u32 = if n > 3 {
            addr.get_item(3)?.extract()?
        } else {
            0
        };
        let sa = uv::SockAddr::new(&host, port, flowinfo, scope_id).map_err(|e| os_error(py, e))?;
        let (tcp, sh) = new_tcp(loop_)?;
        sh.st.evict_parked(fd);
        tcp.open(fd as uv::poll::OsSock)
            .map_err(|e| os_error(py, e))?;
        let st = sh.st.clone();
        tcp.connect(
            &sa,
            Box::new(move |res| {
                if st.closed() {
                    return;
                }
                st.ensure_gil();
                // SAFETY: the GIL is held (ensure_gil above).
                let py = unsafe { Python::assume_attached() };
                let exc = match res {
                    Ok(()) => py.None(),
                    Err(e) => os_error(py, e).into_value(py).into_any(),
                };
                if let Err(e) = done.bind(py).call1((exc,)) {
                    st.fail(e);
                }
            }),
        )
        .map_err(|e| os_error(py, e))?;
        install_tcp(&sh, tcp);
        Ok(TcpTransportCore::wrap(sh))
    }

    /// Attach the protocol, the Python wrapper and the context the
    /// protocol's callbacks run in.
    #[pyo3(signature = (protocol, transport, buffered, context=None))]
    fn _attach(
        &self,
        protocol: Py<PyAny>,
        transport: Py<PyAny>,
        buffered: bool,
        context: Option<Py<PyAny>>,
    ) {
        let mut g = self.sh.inner.lock();
        g.protocol = Some(protocol);
        g.transport = Some(transport);
        g.buffered = buffered;
        g.context = context;
    }

    /// Start reading (after connection_made, as asyncio does).
    fn _start_reading(&self, py: Python<'_>) -> PyResult<()> {
        let g = self.sh.inner.lock();
        if g.closing || g.paused {
            return Ok(());
        }
        if let Some(t) = g.tcp.as_ref() {
            t.read_start().map_err(|e| os_error(py, e))?;
        }
        Ok(())
    }

    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_no_sendfile()?;
        self._write_internal(py, data)
    }

    /// `write` bound to this core as a builtin method with its own argument
    /// check (see `capi::FastMethod`): the transport wrapper's `write`.
    fn _fast_write<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        WRITE.bind(slf.as_any())
    }

    /// `write()` without the sendfile check (the sendfile fallback's own writes).
    fn _write_internal(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.write_buffer(py, bytes_like(data)?)
    }

    /// Mark a sendfile as running (write() raises) or done.
    fn _set_sendfile_active(&self, active: bool) {
        self.sh.inner.lock().sendfile_active = active;
    }

    /// Resolve `fut` once every queued write is done (at once if none is);
    /// fail it with ConnectionError if the connection is lost first.
    fn _wait_drained(&self, py: Python<'_>, fut: Py<PyAny>) -> PyResult<()> {
        let mut g = self.sh.inner.lock();
        if g.conn_lost > 0 || g.tcp.is_none() {
            drop(g);
            wake_waiters(py, vec![fut], false);
        } else if g.pending_writes == 0 {
            drop(g);
            wake_waiters(py, vec![fut], true);
        } else {
            g.drain_waiters.push(fut);
        }
        Ok(())
    }

    fn writelines(&self, py: Python<'_>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        // As asyncio: every item is checked before anything is written, so a
        // bad item (a str, a strided memoryview) leaves nothing half sent.
        let bufs = list_of_data
            .try_iter()?
            .map(|item| bytes_like(&item?))
            .collect::<PyResult<Vec<SimpleBuffer>>>()?;
        for buf in bufs {
            self.check_no_sendfile()?;
            self.write_buffer(py, buf)?;
        }
        Ok(())
    }

    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        let mut g = self.sh.inner.lock();
        if g.closing || g.eof {
            return Ok(());
        }
        if g.kind == Kind::WritePipe {
            // A pipe has no half-close: asyncio closes the transport once the
            // buffer is flushed.
            drop(g);
            return self.sh.close(py);
        }
        g.eof = true;
        let Some(t) = g.tcp.as_ref() else {
            return Ok(());
        };
        // uv_shutdown waits for queued writes, as asyncio waits for its buffer.
        t.shutdown(Box::new(|_| {})).map_err(|e| os_error(py, e))
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    /// RuntimeError once the loop is closed, as asyncio's (connection_lost
    /// cannot be scheduled); the transport is closing all the same.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.sh.close(py)
    }

    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.sh.force_close(py, None)
    }

    /// Drop what is queued and lose the connection with `exc`.
    fn _force_close(&self, py: Python<'_>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        self.sh.force_close(py, Some(PyErr::from_value(exc)))
    }

    fn is_closing(&self) -> bool {
        self.sh.inner.lock().closing
    }

    fn pause_reading(&self) {
        let mut g = self.sh.inner.lock();
        if g.closing || g.paused {
            return;
        }
        g.paused = true;
        g.read_stop();
    }

    fn resume_reading(&self, py: Python<'_>) -> PyResult<()> {
        let mut g = self.sh.inner.lock();
        if g.closing || !g.paused {
            return Ok(());
        }
        g.paused = false;
        if g.in_alloc && g.stop_after_read {
            // Paused and resumed inside get_buffer(): libuv never stopped.
            g.stop_after_read = false;
        } else if let Some(t) = g.tcp.as_ref() {
            t.read_start().map_err(|e| os_error(py, e))?;
        }
        Ok(())
    }

    fn is_reading(&self) -> bool {
        let g = self.sh.inner.lock();
        !g.paused && !g.closing
    }

    fn get_write_buffer_size(&self) -> usize {
        let g = self.sh.inner.lock();
        g.tcp.as_ref().map(|t| t.write_queue_size()).unwrap_or(0)
    }

    /// The limits as byte counts, already checked by the Python layer
    /// (which takes any number asyncio takes: floats, inf, huge ints, and
    /// clamps them to what a buffer size can be).
    fn _set_write_buffer_limits(&self, py: Python<'_>, high: u64, low: u64) -> PyResult<()> {
        if high < low {
            return Err(PyValueError::new_err(format!(
                "high ({high}) must be >= low ({low}) must be >= 0"
            )));
        }
        {
            let mut g = self.sh.inner.lock();
            g.high = usize::try_from(high).unwrap_or(usize::MAX);
            g.low = usize::try_from(low).unwrap_or(usize::MAX);
        }
        self.sh.maybe_pause_protocol(py);
        Ok(())
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        let g = self.sh.inner.lock();
        (g.low, g.high)
    }

    fn set_protocol(&self, protocol: Py<PyAny>, buffered: bool) {
        let mut g = self.sh.inner.lock();
        g.protocol = Some(protocol);
        g.buffered = buffered;
    }

    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        self.sh
            .protocol(py)
            .map_or_else(|| py.None(), Bound::unbind)
    }

    /// The socket's file descriptor (for get_extra_info), or -1 once closed.
    fn fileno(&self) -> i64 {
        let g = self.sh.inner.lock();
        g.tcp.as_ref().and_then(|t| t.fileno().ok()).unwrap_or(-1)
    }

    /// How many writes were made after the connection was lost (asyncio logs
    /// a warning past a threshold).
    fn _conn_lost(&self) -> u32 {
        self.sh.inner.lock().conn_lost
    }

    /// Called (through call_soon) after connection_lost: close the socket and
    /// drop the references to the protocol and the wrapper.
    fn _release(&self) {
        let (tcp, p, t, c) = {
            let mut g = self.sh.inner.lock();
            (
                g.take_stream(),
                g.protocol.take(),
                g.transport.take(),
                g.context.take(),
            )
        };
        drop(tcp);
        drop((p, t, c));
    }

    /// While the socket is open, the libuv handle owns the protocol and the
    /// wrapper (like asyncio's selector owning its transports): they are not
    /// reported, so the collector never takes a live connection for garbage.
    /// Once the handle is gone (closed by the transport, or released by the
    /// loop's `close()`: nothing reaches the connection through the loop
    /// then, as asyncio's closed selector holds none), they belong to this
    /// object alone: an unreferenced connection is collected.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(g) = self.sh.inner.try_lock() {
            if g.tcp.is_some() {
                return Ok(());
            }
            visit.call(&self.sh.loop_)?;
            if let Some(p) = g.protocol.as_ref() {
                visit.call(p)?;
            }
            if let Some(t) = g.transport.as_ref() {
                visit.call(t)?;
            }
            if let Some(c) = g.context.as_ref() {
                visit.call(c)?;
            }
            for w in &g.drain_waiters {
                visit.call(w)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let (p, t, c) = {
            let mut g = self.sh.inner.lock();
            (g.protocol.take(), g.transport.take(), g.context.take())
        };
        drop((p, t, c));
    }
}

impl TcpTransportCore {
    /// asyncio's transports refuse writes while a sendfile runs.
    fn check_no_sendfile(&self) -> PyResult<()> {
        if self.sh.inner.lock().sendfile_active {
            return Err(PyRuntimeError::new_err(
                "unable to write; sendfile is in progress",
            ));
        }
        Ok(())
    }

    fn write_buffer(&self, py: Python<'_>, buf: SimpleBuffer) -> PyResult<()> {
        let sh = &self.sh;
        let mut g = sh.inner.lock();
        if g.eof {
            return Err(PyRuntimeError::new_err(
                "Cannot call write() after write_eof()",
            ));
        }
        if buf.as_slice().is_empty() {
            return Ok(());
        }
        if g.conn_lost > 0 || g.tcp.is_none() {
            if g.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
                drop(g);
                let _ = py.import("logging").and_then(|l| {
                    l.call_method1("getLogger", ("asyncio",))?
                        .call_method1("warning", ("socket.send() raised exception.",))
                });
                sh.inner.lock().conn_lost += 1;
                return Ok(());
            }
            g.conn_lost += 1;
            return Ok(());
        }
        let tcp = g.tcp.as_ref().expect("checked above");
        let mut written = 0;
        if g.pending_writes == 0 {
            match tcp.try_write(buf.as_slice()) {
                Ok(n) => written = n,
                Err(e) => {
                    drop(g);
                    let exc = os_error(py, e);
                    sh.fatal_error(py, exc, "Fatal write error on socket transport");
                    return Ok(());
                }
            }
            if written == buf.as_slice().len() {
                return Ok(());
            }
        }
        let owned = if buf.readonly() {
            Owned::Borrowed(buf, written)
        } else {
            let v = buf.as_slice()[written..].to_vec();
            drop(buf);
            Owned::Copied(v)
        };
        let weak = Arc::downgrade(sh);
        let st = sh.st.clone();
        let slice: &[u8] = owned.bytes();
        let (ptr, len) = (slice.as_ptr(), slice.len());
        let done = Box::new(move |res: Result<(), UvError>| {
            st.ensure_gil();
            // SAFETY: the GIL is held (ensure_gil above).
            let py = unsafe { Python::assume_attached() };
            drop(owned);
            if st.closed() {
                return;
            }
            if let Some(sh) = weak.upgrade() {
                sh.on_write_done(py, res);
            }
        });
        // SAFETY: (ptr, len) is the data of `owned`, which the callback owns:
        // a SimpleBuffer keeps its object's buffer alive and unmoved, and a
        // Vec's heap block does not move when the Vec is moved.
        let data = unsafe { std::slice::from_raw_parts(ptr, len) };
        // SAFETY: as just said, the data outlives the request.
        let res = unsafe { tcp.write(&[data], done) };
        match res {
            Ok(()) => {
                g.pending_writes += 1;
                drop(g);
                sh.maybe_pause_protocol(py);
                Ok(())
            }
            Err(e) => {
                drop(g);
                let exc = os_error(py, e);
                sh.fatal_error(py, exc, "Fatal write error on socket transport");
                Ok(())
            }
        }
    }
}
