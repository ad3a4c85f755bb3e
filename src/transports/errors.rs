//! libuv errors as the OSError subclasses asyncio raises.

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

use crate::uv::UvError;

/// `OSError(errno, strerror)` for a libuv error; Python picks the subclass
/// (ConnectionResetError, BrokenPipeError...). The errno comes from Python's
/// `errno` module by name, so it is right on every platform.
pub fn os_error(py: Python<'_>, e: UvError) -> PyErr {
    let name = e.name();
    let errno: Option<i64> = py
        .import("errno")
        .and_then(|m| m.getattr(name.as_str()))
        .and_then(|v| v.extract())
        .ok();
    let msg = e.message();
    match errno {
        Some(n) => PyOSError::new_err((n, capitalize(&msg))),
        None => PyOSError::new_err(format!("[{name}] {msg}")),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
