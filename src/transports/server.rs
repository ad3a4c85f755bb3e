//! A listening TCP socket: libuv accepts, and each connection is handed to a
//! Python callback (per-connection work stays in Python: protocol factory,
//! transport wrapper, connection_made).

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use super::errors::os_error;
use super::tcp::{install_tcp, new_tcp, TcpTransportCore};
use crate::r#loop::core::{LoopCore, State};
use crate::uv::{self, StreamHandler, UvError};

struct Shared {
    st: Arc<State>,
    loop_: Py<LoopCore>,
    /// `on_connection(core)` for each accepted socket, or `on_error(exc)`.
    on_connection: Mutex<Option<Py<PyAny>>>,
    on_error: Mutex<Option<Py<PyAny>>>,
    listener: Mutex<Option<uv::Tcp>>,
}

/// Holds the listener's state strongly: an open listening socket keeps its
/// server alive (in asyncio, the selector holds the accept callback).
struct Acceptor {
    sh: Arc<Shared>,
}

impl StreamHandler for Acceptor {
    fn alloc(&mut self, _suggested: usize) -> &mut [u8] {
        &mut []
    }

    fn on_read(&mut self, _result: Result<&[u8], UvError>) {}

    fn on_connection(&mut self, status: Result<(), UvError>) {
        let sh = self.sh.clone();
        sh.st.ensure_gil();
        // SAFETY: the GIL is held (ensure_gil above).
        let py = unsafe { Python::assume_attached() };
        if let Err(e) = status {
            sh.report(py, os_error(py, e));
            return;
        }
        let res = (|| -> PyResult<()> {
            let (client, tsh) = new_tcp(sh.loop_.bind(py))?;
            {
                let l = sh.listener.lock();
                let Some(listener) = l.as_ref() else {
                    return Ok(());
                };
                listener.accept(&client).map_err(|e| os_error(py, e))?;
            }
            install_tcp(&tsh, client);
            let core = Py::new(py, TcpTransportCore::wrap_pub(tsh))?;
            let cb = sh.on_connection.lock().as_ref().map(|c| c.clone_ref(py));
            if let Some(cb) = cb {
                cb.bind(py).call1((core,))?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            if crate::r#loop::core::must_leave_loop(py, &e) {
                sh.st.fail(e);
            } else {
                sh.report(py, e);
            }
        }
    }
}

impl Shared {
    fn report(&self, py: Python<'_>, e: PyErr) {
        let cb = self.on_error.lock().as_ref().map(|c| c.clone_ref(py));
        if let Some(cb) = cb {
            if let Err(err) = cb.bind(py).call1((e.into_value(py),)) {
                self.st.fail(err);
            }
        }
    }
}

/// A listening socket of a `uvrs` server.
#[pyclass(module = "uvrs._uvrs", frozen)]
pub struct TcpListener {
    sh: Arc<Shared>,
}

#[pymethods]
impl TcpListener {
    /// Adopt the bound socket `fd` (owned by the listener from now on).
    #[new]
    fn new(
        loop_: &Bound<'_, LoopCore>,
        fd: i64,
        on_connection: Py<PyAny>,
        on_error: Py<PyAny>,
    ) -> PyResult<TcpListener> {
        let py = loop_.py();
        let st = loop_.get().state();
        let sh = Arc::new(Shared {
            st: st.clone(),
            loop_: loop_.clone().unbind(),
            on_connection: Mutex::new(Some(on_connection)),
            on_error: Mutex::new(Some(on_error)),
            listener: Mutex::new(None),
        });
        let tcp = uv::Tcp::new(st.uv(), Box::new(Acceptor { sh: sh.clone() }))
            .map_err(|e| os_error(py, e))?;
        tcp.open(fd as uv::poll::OsSock)
            .map_err(|e| os_error(py, e))?;
        *sh.listener.lock() = Some(tcp);
        Ok(TcpListener { sh })
    }

    /// Start accepting connections.
    fn listen(&self, py: Python<'_>, backlog: i32) -> PyResult<()> {
        let l = self.sh.listener.lock();
        match l.as_ref() {
            Some(t) => t.listen(backlog).map_err(|e| os_error(py, e)),
            None => Ok(()),
        }
    }

    /// Stop listening and close the socket.
    fn close(&self) {
        let l = self.sh.listener.lock().take();
        drop(l);
        let a = self.sh.on_connection.lock().take();
        let b = self.sh.on_error.lock().take();
        drop((a, b));
    }

    /// While listening, the libuv handle owns the callbacks (and so the
    /// server): nothing is reported, so an unreferenced server keeps serving.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if self
            .sh
            .listener
            .try_lock()
            .map(|l| l.is_some())
            .unwrap_or(true)
        {
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
