//! `uvrs._uvrs`: the native module of uvrs, an asyncio event loop on libuv.
//! This file only registers classes; see docs/architecture.md for the map.

use pyo3::prelude::*;

mod r#loop;
mod transports;
pub mod uv;

#[pymodule]
fn _uvrs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    r#loop::core::register(m)?;
    m.add_function(wrap_pyfunction!(r#loop::handles::_set_handle_types, m)?)?;
    m.add_function(wrap_pyfunction!(r#loop::handles::_cancel_handle, m)?)?;
    m.add_function(wrap_pyfunction!(r#loop::handles::_retrack_context, m)?)?;
    m.add_function(wrap_pyfunction!(r#loop::handles::_run_in_context, m)?)?;
    m.add_function(wrap_pyfunction!(_live_counts, m)?)?;
    m.add_function(wrap_pyfunction!(transports::tls::_ssl_read_all, m)?)?;
    m.add_function(wrap_pyfunction!(transports::tls::_ssl_write, m)?)?;
    m.add_function(wrap_pyfunction!(transports::tls::_ssl_writing_due, m)?)?;
    m.add_function(wrap_pyfunction!(transports::tls::_ssl_data_in, m)?)?;
    m.add_function(wrap_pyfunction!(transports::tls::_ssl_app_write, m)?)?;
    m.add_class::<transports::tcp::TcpTransportCore>()?;
    m.add_class::<transports::server::TcpListener>()?;
    let (major, minor, patch) = uv::version();
    m.add("LIBUV_VERSION", format!("{major}.{minor}.{patch}"))?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // What `python -m uvrs` reports about this build.
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    m.add("BUILD_PROFILE", profile)?;
    m.add("FREE_THREADED_BUILD", cfg!(Py_GIL_DISABLED))?;
    Ok(())
}

/// Live libuv handles (by type), requests and loops, process-wide: only the
/// non-zero counters. The test suite checks they return to their values
/// before each test (see `uv::accounting`).
#[pyfunction]
fn _live_counts() -> std::collections::HashMap<String, isize> {
    uv::accounting::live_counts().into_iter().collect()
}
