//! Native `sock_recv`: the read is tried at once and, when the socket has
//! nothing yet, retried from the fd watcher's poll callback itself, with the
//! future completed there (no Python handle, frame or done-callback in
//! between). The op object is also the future's done callback: it
//! unregisters the watch and gives back the socket's I/O reference.

#[cfg(unix)]
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::{PyTraverseError, PyVisit};

use super::core::State;
use crate::transports::errors::os_error;

/// Largest single read (as asyncio's transports read at most 256 KiB).
const MAX_READ: usize = 256 * 1024;

#[cfg(unix)]
thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A pending `sock_recv` registered as the reader of its fd.
#[pyclass(module = "uvrs._uvrs", frozen)]
pub struct SockRecv {
    st: Weak<State>,
    fd: i64,
    n: usize,
    fut: Py<PyAny>,
    sock: Py<PyAny>,
    /// An I/O reference was taken on the socket and not yet given back.
    io_ref: AtomicBool,
}

/// What one read attempt gave.
pub(crate) enum Attempt {
    Done(PyResult<Py<PyAny>>),
    WouldBlock,
}

/// Reads longer than this go straight into their `bytes` object (when the
/// last read on this thread was that long too); shorter ones go through the
/// scratch buffer and are copied into an exact-size `bytes`.
#[cfg(unix)]
const DIRECT_READ: usize = 16 * 1024;

#[cfg(unix)]
thread_local! {
    /// The last read on this thread returned more than `DIRECT_READ` bytes.
    static LAST_READ_BIG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// One non-blocking read of at most `n` bytes from `sock`.
///
/// A large read (a 100 KiB `sock_recv` that gets tens of KiB) is made into
/// a `bytes` of `n` bytes, then shrunk in place, as `socket.recv` does: no
/// copy out of the scratch buffer. A small one uses the scratch buffer and
/// an exact-size copy, which saves allocating `n` bytes for a short answer.
/// Which one is guessed from the previous read's size.
#[cfg(unix)]
fn read_once(py: Python<'_>, _sock: &Py<PyAny>, fd: i64, n: usize) -> Attempt {
    let want = n.min(MAX_READ);
    if want > DIRECT_READ && LAST_READ_BIG.get() {
        let Some(obj) = super::capi::new_uninit_bytes(py, want) else {
            return Attempt::Done(Err(pyo3::exceptions::PyMemoryError::new_err(())));
        };
        let (base, len) = super::capi::bytes_memory(py, &obj);
        // SAFETY: base..base+len is the memory of `obj`, a new bytes object
        // only this function refers to; it lives until the slice is gone.
        let buf = unsafe { std::slice::from_raw_parts_mut(base, len) };
        let res = crate::uv::sys::recv(fd as i32, buf);
        // Only this function refers to obj: it may shrink in place.
        return attempt(py, res, |k| super::capi::resize_bytes(py, obj, k));
    }
    SCRATCH.with(|s| {
        let mut buf = s.borrow_mut();
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let res = crate::uv::sys::recv(fd as i32, &mut buf[..want]);
        attempt(py, res, |k| {
            Ok(PyBytes::new(py, &buf[..k]).into_any().unbind())
        })
    })
}

/// The outcome of a `recv` that returned `res`; `bytes(k)` makes the result
/// of a read of `k` bytes. Remembers whether the read was large.
#[cfg(unix)]
fn attempt(
    py: Python<'_>,
    res: Result<usize, crate::uv::UvError>,
    bytes: impl FnOnce(usize) -> PyResult<Py<PyAny>>,
) -> Attempt {
    match res {
        Ok(k) => {
            LAST_READ_BIG.set(k > DIRECT_READ);
            Attempt::Done(bytes(k))
        }
        Err(e) if e.0 == libuv_sys2::uv_errno_t_UV_EAGAIN => Attempt::WouldBlock,
        Err(e) => Attempt::Done(Err(os_error(py, e))),
    }
}

/// One read through the socket object (Windows: no native recv here).
#[cfg(not(unix))]
fn read_once(py: Python<'_>, sock: &Py<PyAny>, _fd: i64, n: usize) -> Attempt {
    match sock.bind(py).call_method1(pyo3::intern!(py, "recv"), (n,)) {
        Ok(v) => Attempt::Done(Ok(v.unbind())),
        Err(e)
            if e.is_instance_of::<pyo3::exceptions::PyBlockingIOError>(py)
                || e.is_instance_of::<pyo3::exceptions::PyInterruptedError>(py) =>
        {
            Attempt::WouldBlock
        }
        Err(e) => Attempt::Done(Err(e)),
    }
}

impl SockRecv {
    /// Give back the socket's I/O reference (once).
    pub(crate) fn release(&self, py: Python<'_>) -> PyResult<()> {
        if self.io_ref.swap(false, Ordering::Relaxed) {
            self.sock
                .bind(py)
                .call_method0(pyo3::intern!(py, "_decref_socketios"))?;
        }
        Ok(())
    }

    /// The fd is readable: finish the future unless the read would block.
    pub(crate) fn on_ready(&self, py: Python<'_>) {
        let fut = self.fut.bind(py);
        if fut
            .call_method0(pyo3::intern!(py, "done"))
            .and_then(|d| d.is_truthy())
            .unwrap_or(true)
        {
            return; // cancelled: the done callback unregisters
        }
        let res = match read_once(py, &self.sock, self.fd, self.n) {
            Attempt::WouldBlock => return,
            Attempt::Done(Ok(v)) => fut.call_method1(pyo3::intern!(py, "set_result"), (v,)),
            Attempt::Done(Err(e)) => {
                fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),))
            }
        };
        if let Err(e) = res {
            if let Some(st) = self.st.upgrade() {
                st.fail(e);
            }
        }
    }
}

#[pymethods]
impl SockRecv {
    /// The future is done: stop watching and release the socket.
    fn __call__(slf: &Bound<'_, Self>, _fut: &Bound<'_, PyAny>) -> PyResult<()> {
        let op = slf.get();
        let py = slf.py();
        // Giving the I/O reference back may close the socket (it was closed
        // during the call): then the watch goes; else it stays for the
        // socket's next sock_recv (see fdwatch).
        op.release(py)?;
        if let Some(st) = op.st.upgrade() {
            let sock = op.sock.bind(py);
            let open = sock
                .call_method0(pyo3::intern!(py, "fileno"))
                .and_then(|f| f.extract::<i64>())
                .is_ok_and(|f| f == op.fd);
            if !(open && st.watchers_park(op.fd, slf.as_any(), sock)) {
                st.watchers_remove_if(op.fd, slf.as_any());
            }
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.fut)?;
        visit.call(&self.sock)
    }
}

/// `sock_recv(sock, n)`: the bytes if the socket has some (or EOF) now;
/// otherwise None, and `fut` gets them later.
pub(crate) fn sock_recv(
    py: Python<'_>,
    st: &Arc<State>,
    sock: &Bound<'_, PyAny>,
    n: isize,
    fut: &Bound<'_, PyAny>,
) -> PyResult<Option<Py<PyAny>>> {
    if n < 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "negative buffersize in recv",
        ));
    }
    if n == 0 {
        // As socket.recv(0): nothing to read, nothing to wait for.
        return Ok(Some(PyBytes::new(py, b"").into_any().unbind()));
    }
    let n = n as usize;
    let fd: i64 = sock.call_method0(pyo3::intern!(py, "fileno"))?.extract()?;
    let sock_py = sock.clone().unbind();
    match read_once(py, &sock_py, fd, n) {
        Attempt::Done(r) => return r.map(Some),
        Attempt::WouldBlock => {}
    }
    let io_ref = sock.hasattr(pyo3::intern!(py, "_decref_socketios"))?;
    let op = Bound::new(
        py,
        SockRecv {
            st: Arc::downgrade(st),
            fd,
            n,
            fut: fut.clone().unbind(),
            sock: sock_py,
            io_ref: AtomicBool::new(io_ref),
        },
    )?;
    st.watchers_add_op(py, fd, op.clone().into_any().unbind(), sock)
        .map_err(|e| os_error(py, e))?;
    if io_ref {
        let refs: i64 = sock.getattr(pyo3::intern!(py, "_io_refs"))?.extract()?;
        sock.setattr(pyo3::intern!(py, "_io_refs"), refs + 1)?;
    }
    fut.call_method1(pyo3::intern!(py, "add_done_callback"), (op,))?;
    Ok(None)
}

/// Datagrams read per readiness event at most (then other fds get a turn).
const DATAGRAMS_PER_WAKEUP: usize = 16;

/// The reader of a datagram transport: on readiness, `recvfrom` on the
/// socket and `datagram_received` on the protocol, straight from the poll
/// callback (asyncio's `_read_ready`, without a handle or a Python frame).
#[pyclass(module = "uvrs._uvrs", frozen)]
pub struct DatagramReader {
    st: Weak<State>,
    loop_: Py<PyAny>,
    recvfrom: Py<PyAny>,
    transport: Py<PyAny>,
    /// The context the protocol's callbacks run in.
    context: Option<Py<PyAny>>,
}

impl DatagramReader {
    pub(crate) fn on_ready(&self, py: Python<'_>) {
        let _entered = self
            .context
            .as_ref()
            .and_then(|c| super::capi::ContextGuard::enter(c.bind(py)));
        if let Err(e) = self.read(py) {
            if let Some(st) = self.st.upgrade() {
                if crate::r#loop::core::must_leave_loop(py, &e) {
                    st.fail(e);
                    return;
                }
            }
            let t = self.transport.bind(py);
            let ctx = pyo3::types::PyDict::new(py);
            let _ = ctx.set_item(
                "message",
                "Exception in callback DatagramTransport._read_ready()",
            );
            let _ = ctx.set_item("exception", e.into_value(py));
            let _ = ctx.set_item("transport", t);
            if let Ok(p) = t.getattr(pyo3::intern!(py, "_protocol")) {
                let _ = ctx.set_item("protocol", p);
            }
            if let Err(err) = self
                .loop_
                .bind(py)
                .call_method1(pyo3::intern!(py, "call_exception_handler"), (ctx,))
            {
                if let Some(st) = self.st.upgrade() {
                    st.fail(err);
                }
            }
        }
    }

    fn read(&self, py: Python<'_>) -> PyResult<()> {
        let t = self.transport.bind(py);
        for _ in 0..DATAGRAMS_PER_WAKEUP {
            // Closed (possibly by the previous datagram's callback): asyncio
            // would have removed the reader by now.
            if t.getattr(pyo3::intern!(py, "_closing"))?.is_truthy()? {
                return Ok(());
            }
            let proto = t.getattr(pyo3::intern!(py, "_protocol"))?;
            match self.recvfrom.bind(py).call1((MAX_READ,)) {
                Ok(pair) => {
                    let (data, addr): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
                    proto.call_method1(pyo3::intern!(py, "datagram_received"), (data, addr))?;
                }
                Err(e)
                    if e.is_instance_of::<pyo3::exceptions::PyBlockingIOError>(py)
                        || e.is_instance_of::<pyo3::exceptions::PyInterruptedError>(py) =>
                {
                    return Ok(());
                }
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyOSError>(py) => {
                    proto.call_method1(pyo3::intern!(py, "error_received"), (e.into_value(py),))?;
                    return Ok(());
                }
                Err(e) => {
                    t.call_method1(
                        pyo3::intern!(py, "_fatal_error"),
                        (e.into_value(py), "Fatal read error on datagram transport"),
                    )?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

#[pymethods]
impl DatagramReader {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.recvfrom)?;
        if let Some(c) = &self.context {
            visit.call(c)?;
        }
        visit.call(&self.transport)
    }
}

/// Register `transport`'s native reader on `fd` (its socket `sock`).
pub(crate) fn add_datagram_reader(
    py: Python<'_>,
    st: &Arc<State>,
    loop_: &Bound<'_, PyAny>,
    fd: i64,
    sock: &Bound<'_, PyAny>,
    transport: &Bound<'_, PyAny>,
    context: Option<Py<PyAny>>,
) -> PyResult<()> {
    let reader = Py::new(
        py,
        DatagramReader {
            st: Arc::downgrade(st),
            loop_: loop_.clone().unbind(),
            recvfrom: sock.getattr(pyo3::intern!(py, "recvfrom"))?.unbind(),
            transport: transport.clone().unbind(),
            context,
        },
    )?;
    st.watchers_add(fd, super::fdwatch::Side::Reader, reader.into_any())
        .map_err(|e| os_error(py, e))
}
