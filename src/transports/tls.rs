//! The per-record work of the TLS layer. The state machine is asyncio's
//! `SSLProtocol` (python/uvrs/_sslproto.py); what it does for every read
//! and every write of an open connection is here, with asyncio's semantics.

use pyo3::exceptions::{PyException, PyMemoryError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PySlice, PyString};

use crate::r#loop::capi;

/// Plaintext bytes the TLS object can hand out without more input: at most
/// the ciphertext waiting in `incoming` plus what is decrypted but unread.
/// (Records are never shorter than their plaintext; a record started in
/// OpenSSL's own buffer is decrypted into `pending()` once it completes.)
fn available(incoming: &Bound<'_, PyAny>, pending: &Bound<'_, PyAny>) -> PyResult<usize> {
    let decrypted: usize = pending.call0()?.extract()?;
    Ok(bio_pending(incoming)? + decrypted)
}

/// `_ssl_read_all(sslobj, incoming, again_errors) -> (bytes | None, eof)`:
/// asyncio's `SSLProtocol._do_read__copied` loop. Every record readable now
/// is decrypted straight into one `bytes` (asyncio reads each into its own
/// 256 KiB `bytes` and joins them), and the read that could only raise
/// SSLWantReadError is not made when nothing is left to read. `eof` is True
/// when a read returned nothing: the peer's close_notify. Errors other than
/// `again_errors` propagate, as in asyncio (what was read is dropped).
#[pyfunction]
pub fn _ssl_read_all<'py>(
    sslobj: &Bound<'py, PyAny>,
    incoming: &Bound<'py, PyAny>,
    again_errors: &Bound<'py, PyAny>,
) -> PyResult<(Option<Py<PyAny>>, bool)> {
    let py = sslobj.py();
    // ssl.SSLObject wraps the C-level _ssl._SSLSocket in `_sslobj`; calling
    // that one directly skips a Python frame per record.
    let raw = sslobj
        .getattr(intern!(py, "_sslobj"))
        .unwrap_or_else(|_| sslobj.clone());
    let read = raw.getattr(intern!(py, "read"))?;
    let pending = raw.getattr(intern!(py, "pending"))?;
    let mut cap = available(incoming, &pending)?;
    if cap == 0 {
        return Ok((None, false));
    }
    let mut obj = capi::new_uninit_bytes(py, cap).ok_or_else(|| PyMemoryError::new_err(()))?;
    let mut off = 0usize;
    let mut eof = false;
    loop {
        if off > 0 {
            let more = available(incoming, &pending)?;
            if more == 0 {
                break;
            }
            if cap - off < more {
                // Only when a record outgrows the estimate (a compressed
                // TLS 1.2 record): grow, in place when the allocator can.
                cap = off + more.max(16 * 1024);
                obj = capi::resize_bytes(py, obj, cap)?
                    .into_bound(py)
                    .cast_into::<PyBytes>()?
                    .unbind();
            }
        }
        let (base, _) = capi::bytes_memory(py, &obj);
        // SAFETY: base..base+cap is the memory of `obj`, which only this
        // function refers to and which is neither freed nor resized while
        // the view lives: the view is released right after the read.
        let view = unsafe { capi::memoryview_over(py, base.add(off), cap - off)? };
        let res = read.call1((cap - off, &view));
        if !capi::is_unshared(&view) {
            // Somebody kept the view: cut it from the memory before it moves.
            view.call_method0(intern!(py, "release"))?;
        }
        drop(view);
        match res {
            Ok(n) => {
                let n: usize = n.extract()?;
                if n == 0 {
                    eof = true;
                    break;
                }
                off += n;
            }
            Err(e) if e.is_instance(py, again_errors) => break,
            Err(e) => return Err(e),
        }
    }
    if off == 0 {
        return Ok((None, eof));
    }
    Ok((Some(capi::resize_bytes(py, obj, off)?), eof))
}

/// An `SSLProtocol` as the native paths see it. Its state lives in plain
/// instance attributes that asyncio's Python code reads and writes too; they
/// are looked up in the instance `__dict__` directly (no type lookup or
/// descriptor protocol per name), falling back to `getattr()` for a name
/// the dict does not hold.
struct Proto<'a, 'py> {
    obj: &'a Bound<'py, PyAny>,
    dict: Option<Bound<'py, PyDict>>,
}

impl<'a, 'py> Proto<'a, 'py> {
    fn new(obj: &'a Bound<'py, PyAny>) -> Self {
        let dict = obj
            .getattr(intern!(obj.py(), "__dict__"))
            .ok()
            .and_then(|d| d.cast_into::<PyDict>().ok());
        Proto { obj, dict }
    }

    fn get(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(dict) = &self.dict {
            if let Some(value) = dict.get_item(name)? {
                return Ok(value);
            }
        }
        self.obj.getattr(name)
    }

    fn truthy(&self, name: &Bound<'py, PyString>) -> PyResult<bool> {
        self.get(name)?.is_truthy()
    }

    fn usize(&self, name: &Bound<'py, PyString>) -> PyResult<usize> {
        self.get(name)?.extract()
    }

    fn set(&self, name: &Bound<'py, PyString>, value: impl IntoPyObject<'py>) -> PyResult<()> {
        self.obj.setattr(name, value)
    }

    fn call0(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        self.obj.call_method0(name)
    }
}

/// The BIO's byte count (`MemoryBIO.pending`).
fn bio_pending(bio: &Bound<'_, PyAny>) -> PyResult<usize> {
    bio.getattr(intern!(bio.py(), "pending"))?.extract()
}

/// `_ssl_write(proto, again_errors, encrypt)`: asyncio's
/// `SSLProtocol._do_write` (when `encrypt`) and `_process_outgoing`, with
/// the `_control_app_writing` test, in one native call.
///
/// `encrypt`: the write backlog is fed to the TLS object until it is empty
/// or the TLS object wants to read first (a renegotiation); a partly written
/// item stays at the head as its unwritten rest, and `_write_buffer_size`
/// follows what was consumed, also when an error propagates. Then, unless
/// the raw transport paused us, the records waiting in the outgoing BIO go
/// to the raw transport in one write (nothing is read when none wait, where
/// asyncio reads an empty bytes). Last, `_control_app_writing()` is called
/// when the app's flow control has a call due (asyncio calls it every time
/// to test that).
#[pyfunction]
pub fn _ssl_write(
    proto: &Bound<'_, PyAny>,
    again_errors: &Bound<'_, PyAny>,
    encrypt: bool,
) -> PyResult<()> {
    write_out(&Proto::new(proto), again_errors, encrypt)
}

fn write_out(p: &Proto<'_, '_>, again_errors: &Bound<'_, PyAny>, encrypt: bool) -> PyResult<()> {
    let py = p.obj.py();
    if encrypt {
        encrypt_backlog(p, again_errors)?;
    }
    let outgoing = p.get(intern!(py, "_outgoing"))?;
    let mut waiting = bio_pending(&outgoing)?;
    if waiting > 0 && !p.truthy(intern!(py, "_ssl_writing_paused"))? {
        let data = outgoing.call_method0(intern!(py, "read"))?;
        p.get(intern!(py, "_transport"))?
            .call_method1(intern!(py, "write"), (data,))?;
        waiting = bio_pending(&outgoing)?;
    }
    // asyncio's _control_app_writing() test, on _get_write_buffer_size().
    let size = waiting + p.usize(intern!(py, "_write_buffer_size"))?;
    if writing_due(p, size)? {
        p.call0(intern!(py, "_control_app_writing"))?;
    }
    Ok(())
}

/// asyncio's `_control_app_writing()` test: whether the app protocol's
/// `resume_writing()` (paused, `size` down to the low-water mark) or
/// `pause_writing()` (not paused, `size` up to the high-water mark) is due.
fn writing_due(p: &Proto<'_, '_>, size: usize) -> PyResult<bool> {
    let py = p.obj.py();
    Ok(if p.truthy(intern!(py, "_app_writing_paused"))? {
        size <= p.usize(intern!(py, "_outgoing_low_water"))?
    } else {
        size >= p.usize(intern!(py, "_outgoing_high_water"))?
    })
}

/// `_ssl_writing_due(proto, size)`: [`writing_due`] for the Python side
/// (`SSLProtocol._control_app_writing`), so that the test exists once.
#[pyfunction]
pub fn _ssl_writing_due(proto: &Bound<'_, PyAny>, size: usize) -> PyResult<bool> {
    writing_due(&Proto::new(proto), size)
}

/// The `_do_write` loop of [`_ssl_write`].
fn encrypt_backlog(p: &Proto<'_, '_>, again_errors: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = p.obj.py();
    let backlog = p.get(intern!(py, "_write_backlog"))?;
    if !backlog.is_truthy()? {
        return Ok(());
    }
    let sslobj = p.get(intern!(py, "_sslobj"))?;
    // As in _ssl_read_all: the C-level object, without the wrapper's frame.
    let raw = sslobj.getattr(intern!(py, "_sslobj")).unwrap_or(sslobj);
    let write = raw.getattr(intern!(py, "write"))?;
    let size_name = intern!(py, "_write_buffer_size");
    let mut size: isize = p.get(size_name)?.extract()?;
    let mut result = Ok(());
    while backlog.is_truthy()? {
        let data = backlog.get_item(0)?;
        let count: usize = match write.call1((&data,)) {
            Ok(n) => n.extract()?,
            Err(e) if e.is_instance(py, again_errors) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let len = data.len()?;
        if count < len {
            let rest = data.get_item(PySlice::new(py, count as isize, isize::MAX, 1))?;
            backlog.set_item(0, rest)?;
            size -= count as isize;
        } else {
            backlog.del_item(0)?;
            size -= len as isize;
        }
    }
    p.set(size_name, size)?;
    result
}

const FATAL: &str = "Fatal error on SSL protocol";

/// Runs `step`; an `Exception` it raises goes to `proto._fatal_error()`, as
/// asyncio's `try: ... except Exception as ex: self._fatal_error(ex, ...)`
/// (a BaseException such as KeyboardInterrupt propagates).
fn or_fatal(p: &Proto<'_, '_>, step: impl FnOnce() -> PyResult<()>) -> PyResult<()> {
    let py = p.obj.py();
    match step() {
        Err(e) if e.is_instance_of::<PyException>(py) => {
            p.obj
                .call_method1(intern!(py, "_fatal_error"), (e.value(py), FATAL))?;
            Ok(())
        }
        other => other,
    }
}

/// `_ssl_data_in(proto, nbytes, wrapped, again_errors) -> bool`: asyncio's
/// `SSLProtocol.buffer_updated()` for the common case, in one native call:
/// the state is `wrapped`, the app reads with `data_received()` and has not
/// paused reading. The `nbytes` just read into `_ssl_buffer_view` go to the
/// incoming BIO; the records readable now are decrypted into one bytes
/// (`_ssl_read_all`) and delivered; a close_notify calls
/// `_call_eof_received()` and `_start_shutdown()`; the write backlog or the
/// outgoing records are flushed (`_ssl_write`); and the raw transport's
/// reading is paused or resumed on the incoming BIO's size. Returns False,
/// having done nothing, in every other case: the caller then runs asyncio's
/// `buffer_updated()`.
#[pyfunction]
pub fn _ssl_data_in(
    proto: &Bound<'_, PyAny>,
    nbytes: usize,
    wrapped: &Bound<'_, PyAny>,
    again_errors: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let py = proto.py();
    let p = Proto::new(proto);
    if !p.get(intern!(py, "_state"))?.is(wrapped)
        || p.truthy(intern!(py, "_app_protocol_is_buffer"))?
        || p.truthy(intern!(py, "_app_reading_paused"))?
    {
        return Ok(false);
    }
    let incoming = p.get(intern!(py, "_incoming"))?;
    let view = p.get(intern!(py, "_ssl_buffer_view"))?;
    let chunk = view.get_item(PySlice::new(py, 0, nbytes as isize, 1))?;
    incoming.call_method1(intern!(py, "write"), (chunk,))?;
    or_fatal(&p, || {
        let sslobj = p.get(intern!(py, "_sslobj"))?;
        let (data, eof) = _ssl_read_all(&sslobj, &incoming, again_errors)?;
        if let Some(data) = data {
            p.get(intern!(py, "_app_protocol"))?
                .call_method1(intern!(py, "data_received"), (data,))?;
        }
        if eof {
            p.call0(intern!(py, "_call_eof_received"))?;
            p.call0(intern!(py, "_start_shutdown"))?;
        }
        let backlog = p.truthy(intern!(py, "_write_backlog"))?;
        write_out(&p, again_errors, backlog)?;
        control_ssl_reading(&p, &incoming)
    })?;
    Ok(true)
}

/// asyncio's `SSLProtocol._control_ssl_reading()`: pause the raw transport
/// when the incoming BIO holds its high-water mark, resume it at low water.
fn control_ssl_reading(p: &Proto<'_, '_>, incoming: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = p.obj.py();
    let size = bio_pending(incoming)?;
    let paused_name = intern!(py, "_ssl_reading_paused");
    let paused = p.truthy(paused_name)?;
    let (flip, method) = if paused {
        (
            size <= p.usize(intern!(py, "_incoming_low_water"))?,
            intern!(py, "resume_reading"),
        )
    } else {
        (
            size >= p.usize(intern!(py, "_incoming_high_water"))?,
            intern!(py, "pause_reading"),
        )
    };
    if flip {
        p.set(paused_name, !paused)?;
        p.get(intern!(py, "_transport"))?.call_method0(method)?;
    }
    Ok(())
}

/// `_ssl_app_write(proto, data, wrapped, again_errors) -> bool`: the TLS
/// transport's `write(data)` (asyncio's `_SSLProtocolTransport.write` and
/// `SSLProtocol._write_appdata`) when the connection is `wrapped`: the type
/// is checked as asyncio does, empty data is ignored, the data joins the
/// write backlog and is encrypted and sent at once (`_ssl_write`); an
/// Exception there is the protocol's fatal error. Returns False, having
/// done nothing but the type check, in any other state or without a
/// protocol: the caller then runs asyncio's `_write_appdata()` (which drops
/// the data and counts it while closing).
#[pyfunction]
pub fn _ssl_app_write(
    proto: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
    wrapped: &Bound<'_, PyAny>,
    again_errors: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let py = proto.py();
    if !(data.is_instance_of::<PyBytes>()
        || data.is_instance_of::<PyByteArray>()
        || data.is_instance_of::<PyMemoryView>())
    {
        let name = data.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "data: expecting a bytes-like instance, got {name}"
        )));
    }
    if !data.is_truthy()? {
        return Ok(true);
    }
    // (A transport closed twice has no protocol: asyncio's AttributeError.)
    if proto.is_none() {
        return Ok(false);
    }
    let p = Proto::new(proto);
    if !p.get(intern!(py, "_state"))?.is(wrapped) {
        return Ok(false);
    }
    p.get(intern!(py, "_write_backlog"))?
        .call_method1(intern!(py, "append"), (data,))?;
    let size_name = intern!(py, "_write_buffer_size");
    p.set(size_name, p.usize(size_name)? + data.len()?)?;
    or_fatal(&p, || write_out(&p, again_errors, true))?;
    Ok(true)
}
