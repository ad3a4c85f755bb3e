//! A listening socket (TCP, or Unix on Unix systems): each accepted connection
//! is handed to a Python callback as a transport core (per-connection work
//! stays in Python: protocol factory, transport wrapper, connection_made).
//!
//! On Unix, uvrs accepts by itself on a poll handle (see `uv::sys`), so that
//! running out of file descriptors leaves pending connections in the backlog
//! as asyncio does, instead of libuv's accept-and-drop. On Windows, libuv's
//! `uv_listen`/`uv_accept` do the work (TCP only).

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use super::errors::os_error;
use super::tcp::TcpTransportCore;
use crate::r#loop::core::{must_leave_loop, HandleOwner, LoopCore, State};
use crate::uv::{self, UvError};

struct Shared {
    st: Arc<State>,
    loop_: Py<LoopCore>,
    /// TCP (else a Unix socket). Read by the Unix accept path only.
    #[cfg_attr(windows, allow(dead_code))]
    tcp: bool,
    /// `on_connection(core)` for each accepted socket, or `on_error(exc)`.
    on_connection: Mutex<Option<Py<PyAny>>>,
    on_error: Mutex<Option<Py<PyAny>>>,
    listener: Mutex<Option<Listening>>,
    /// Connections accepted per readiness event at most (asyncio: backlog).
    backlog: Mutex<i32>,
}

impl HandleOwner for Shared {
    fn release_handle(&self) {
        let l = self.listener.lock().take();
        drop(l);
    }
}

impl Shared {
    /// Stop listening and close the socket.
    fn drop_listener(&self) {
        drop(self.listener.lock().take());
    }

    fn report(&self, py: Python<'_>, e: PyErr) {
        if must_leave_loop(py, &e) {
            self.st.fail(e);
            return;
        }
        let cb = self.on_error.lock().as_ref().map(|c| c.clone_ref(py));
        if let Some(cb) = cb {
            if let Err(err) = cb.bind(py).call1((e.into_value(py),)) {
                self.st.fail(err);
            }
        }
    }

    /// Hand one accepted connection to Python.
    fn deliver(&self, py: Python<'_>, core: TcpTransportCore) -> PyResult<()> {
        let core = Py::new(py, core)?;
        let cb = self.on_connection.lock().as_ref().map(|c| c.clone_ref(py));
        if let Some(cb) = cb {
            cb.bind(py).call1((core,))?;
        }
        Ok(())
    }

    fn gil(&self) -> Python<'static> {
        self.st.ensure_gil();
        // SAFETY: the GIL is held (ensure_gil above).
        unsafe { Python::assume_attached() }
    }
}

/// The OS listening socket and what watches it.
#[cfg(unix)]
struct Listening {
    poll: Option<uv::Poll>,
    fd: i32,
}

#[cfg(unix)]
impl Drop for Listening {
    fn drop(&mut self) {
        // uv_close on a poll handle stops watching at once, so the fd can be
        // closed right after.
        drop(self.poll.take());
        uv::sys::close(self.fd);
    }
}

#[cfg(unix)]
fn is_resource_error(e: UvError) -> bool {
    [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM].contains(&e.errno())
}

/// Accept what is pending (up to the backlog), handing each connection over.
#[cfg(unix)]
fn accept_ready(sh: &Arc<Shared>, status: i32) {
    let py = sh.gil();
    if status < 0 {
        sh.report(py, os_error(py, UvError(status)));
        return;
    }
    let rounds = (*sh.backlog.lock()).max(1);
    for _ in 0..rounds {
        // The callback may have closed the server: look the fd up each time.
        let Some(lfd) = sh.listener.lock().as_ref().map(|l| l.fd) else {
            return;
        };
        let fd = match uv::sys::accept(lfd) {
            Ok(fd) => fd,
            Err(e) if e.0 == libuv_sys2::uv_errno_t_UV_EAGAIN => return,
            Err(e) if e.0 == libuv_sys2::uv_errno_t_UV_ECONNABORTED => continue,
            Err(e) => {
                if is_resource_error(e) {
                    // Out of fds: stop watching; the server retries later
                    // (asyncio waits one second), the backlog keeps the
                    // clients.
                    if let Some(l) = sh.listener.lock().as_ref() {
                        if let Some(p) = l.poll.as_ref() {
                            p.stop();
                        }
                    }
                }
                sh.report(py, os_error(py, e));
                return;
            }
        };
        let res = super::tcp::stream_from_fd(
            sh.loop_.bind(py),
            fd as i64,
            sh.tcp,
            super::tcp::Kind::Socket,
        )
        .and_then(|core| sh.deliver(py, TcpTransportCore::wrap(core)));
        if let Err(e) = res {
            sh.report(py, e);
        }
    }
}

#[cfg(unix)]
fn open_listener(py: Python<'_>, sh: &Arc<Shared>, fd: i64) -> PyResult<Listening> {
    sh.st.evict_parked(fd);
    let fd = fd as i32;
    let acc = sh.clone();
    match uv::Poll::new(
        sh.st.uv(),
        fd,
        Box::new(move |status, _events| {
            if !acc.st.closed() {
                accept_ready(&acc, status)
            }
        }),
    ) {
        Ok(p) => Ok(Listening { poll: Some(p), fd }),
        Err(e) => {
            uv::sys::close(fd);
            Err(os_error(py, e))
        }
    }
}

/// The socket already listens (Python called `listen()` when creating the
/// server); only watching it starts here.
#[cfg(unix)]
fn start_listening(l: &Listening, _backlog: i32) -> Result<(), UvError> {
    match l.poll.as_ref() {
        Some(p) => p.start(uv::poll::READABLE),
        None => Ok(()),
    }
}

/// The libuv TCP handle that listens and accepts (Windows).
#[cfg(windows)]
struct Listening {
    tcp: uv::Tcp,
}

#[cfg(windows)]
struct Acceptor {
    sh: Arc<Shared>,
}

#[cfg(windows)]
impl uv::StreamHandler for Acceptor {
    fn alloc(&mut self, _suggested: usize) -> &mut [u8] {
        &mut []
    }

    fn on_read(&mut self, _result: Result<&[u8], UvError>) {}

    fn on_connection(&mut self, status: Result<(), UvError>) {
        let sh = self.sh.clone();
        if sh.st.closed() {
            return;
        }
        let py = sh.gil();
        if let Err(e) = status {
            sh.report(py, os_error(py, e));
            return;
        }
        let res = (|| -> PyResult<()> {
            let (client, tsh) = super::tcp::new_tcp(sh.loop_.bind(py))?;
            {
                let l = sh.listener.lock();
                let Some(l) = l.as_ref() else {
                    return Ok(());
                };
                l.tcp.accept(&client).map_err(|e| os_error(py, e))?;
            }
            super::tcp::install_tcp(&tsh, client);
            sh.deliver(py, TcpTransportCore::wrap(tsh))
        })();
        if let Err(e) = res {
            sh.report(py, e);
        }
    }
}

#[cfg(windows)]
fn open_listener(py: Python<'_>, sh: &Arc<Shared>, fd: i64) -> PyResult<Listening> {
    let tcp = uv::Tcp::new(sh.st.uv(), Box::new(Acceptor { sh: sh.clone() }))
        .map_err(|e| os_error(py, e))?;
    sh.st.evict_parked(fd);
    tcp.open(fd as uv::poll::OsSock)
        .map_err(|e| os_error(py, e))?;
    Ok(Listening { tcp })
}

#[cfg(windows)]
fn start_listening(l: &Listening, backlog: i32) -> Result<(), UvError> {
    l.tcp.listen(backlog)
}

/// A listening socket of a `uvrs` server.
#[pyclass(module = "uvrs._uvrs", frozen)]
pub struct TcpListener {
    sh: Arc<Shared>,
}

/// The last reference to a listener still listening is gone (a server nobody
/// closed): its socket is closed here, as asyncio's would be by the
/// collector. After the loop's `close()` there is nothing left to do: that
/// released the handle already (`HandleOwner`).
impl Drop for TcpListener {
    fn drop(&mut self) {
        self.sh.drop_listener();
    }
}

#[pymethods]
impl TcpListener {
    /// Adopt the bound, listening socket `fd` (owned by the listener from now
    /// on, closed by `close()`). `tcp=False`: a Unix socket (not on Windows).
    #[new]
    #[pyo3(signature = (loop_, fd, on_connection, on_error, tcp=true))]
    fn new(
        loop_: &Bound<'_, LoopCore>,
        fd: i64,
        on_connection: Py<PyAny>,
        on_error: Py<PyAny>,
        tcp: bool,
    ) -> PyResult<TcpListener> {
        let py = loop_.py();
        if cfg!(windows) && !tcp {
            return Err(pyo3::exceptions::PyNotImplementedError::new_err(
                "Unix sockets are not supported on Windows",
            ));
        }
        let sh = Arc::new(Shared {
            st: loop_.get().state(),
            loop_: loop_.clone().unbind(),
            tcp,
            on_connection: Mutex::new(Some(on_connection)),
            on_error: Mutex::new(Some(on_error)),
            listener: Mutex::new(None),
            backlog: Mutex::new(100),
        });
        let l = open_listener(py, &sh, fd)?;
        *sh.listener.lock() = Some(l);
        let owner: Arc<dyn HandleOwner> = sh.clone();
        sh.st.register_owner(Arc::downgrade(&owner));
        Ok(TcpListener { sh })
    }

    /// Start accepting connections (up to `backlog` per wake-up).
    fn listen(&self, py: Python<'_>, backlog: i32) -> PyResult<()> {
        *self.sh.backlog.lock() = backlog;
        let l = self.sh.listener.lock();
        match l.as_ref() {
            Some(l) => start_listening(l, backlog).map_err(|e| os_error(py, e)),
            None => Ok(()),
        }
    }

    /// Accept again after a pause for lack of file descriptors.
    fn resume(&self, py: Python<'_>) -> PyResult<()> {
        let backlog = *self.sh.backlog.lock();
        self.listen(py, backlog)
    }

    /// Stop listening and close the socket.
    fn close(&self) {
        self.sh.drop_listener();
        let a = self.sh.on_connection.lock().take();
        let b = self.sh.on_error.lock().take();
        drop((a, b));
    }

    /// While listening, the libuv handle owns the callbacks (and so the
    /// server): nothing is reported, so an unreferenced server keeps serving.
    /// Once the handle is gone (closed, or released by the loop's `close()`)
    /// an unreferenced server is collected.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let listening = self
            .sh
            .listener
            .try_lock()
            .map(|l| l.is_some())
            .unwrap_or(true);
        if listening {
            return Ok(());
        }
        visit.call(&self.sh.loop_)?;
        if let Some(c) = self.sh.on_connection.try_lock() {
            if let Some(c) = c.as_ref() {
                visit.call(c)?;
            }
        }
        if let Some(c) = self.sh.on_error.try_lock() {
            if let Some(c) = c.as_ref() {
                visit.call(c)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let a = self.sh.on_connection.lock().take();
        let b = self.sh.on_error.lock().take();
        drop((a, b));
    }
}
