//! The per-record work of the TLS layer. The state machine is asyncio's
//! `SSLProtocol` (python/uvrs/_sslproto.py); what it does for every record
//! it reads is here.

use pyo3::exceptions::PyMemoryError;
use pyo3::prelude::*;

use crate::r#loop::capi;

/// Plaintext bytes the TLS object can hand out without more input: at most
/// the ciphertext waiting in `incoming` plus what is decrypted but unread.
/// (Records are never shorter than their plaintext; a record started in
/// OpenSSL's own buffer is decrypted into `pending()` once it completes.)
fn available(incoming: &Bound<'_, PyAny>, pending: &Bound<'_, PyAny>) -> PyResult<usize> {
    let py = incoming.py();
    let waiting: usize = incoming.getattr(pyo3::intern!(py, "pending"))?.extract()?;
    let decrypted: usize = pending.call0()?.extract()?;
    Ok(waiting + decrypted)
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
        .getattr(pyo3::intern!(py, "_sslobj"))
        .unwrap_or_else(|_| sslobj.clone());
    let read = raw.getattr(pyo3::intern!(py, "read"))?;
    let pending = raw.getattr(pyo3::intern!(py, "pending"))?;
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
                    .cast_into::<pyo3::types::PyBytes>()?
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
            view.call_method0(pyo3::intern!(py, "release"))?;
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
