//! asyncio's `_check_callback`: callbacks must be callables, never coroutines
//! or coroutine functions. Plain functions, bound methods of plain functions
//! and builtins are checked natively; anything else asks asyncio itself.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::capi;

/// `CO_COROUTINE` (what `inspect.iscoroutinefunction` looks for).
const COROUTINE_FLAGS: i32 = 0x80;

static ISCOROUTINE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ISCOROUTINEFUNCTION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn asyncio_check<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    names: &[&str],
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        let m = py.import("asyncio.coroutines")?;
        let mut last = None;
        for n in names {
            match m.getattr(*n) {
                Ok(f) => return Ok(f.unbind()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one name"))
    })
    .map(|f| f.bind(py))
}

fn coroutine_error(method: &str) -> PyErr {
    PyTypeError::new_err(format!("coroutines cannot be used with {method}()"))
}

/// Raise TypeError as asyncio's `_check_callback(callback, method)` does.
pub fn check_callback(cb: &Bound<'_, PyAny>, method: &str) -> PyResult<()> {
    let py = cb.py();
    if !capi::is_callable(cb) {
        if asyncio_check(py, &ISCOROUTINE, &["iscoroutine"])?
            .call1((cb,))?
            .is_truthy()?
        {
            return Err(coroutine_error(method));
        }
        return Err(PyTypeError::new_err(format!(
            "a callable object was expected by {method}(), got {}",
            cb.repr()?
        )));
    }
    if capi::is_builtin_callable(cb) {
        return Ok(());
    }
    let func = capi::method_function(cb);
    let target = func.as_ref().unwrap_or(cb);
    if let Some((flags, has_dict)) = capi::function_flags(target) {
        if flags & COROUTINE_FLAGS != 0 {
            return Err(coroutine_error(method));
        }
        if !has_dict {
            // Marker attributes (`_is_coroutine`, inspect's coroutine mark) live
            // in the function's __dict__; a bound method forwards to it.
            return Ok(());
        }
    }
    let iscorofunc = asyncio_check(
        py,
        &ISCOROUTINEFUNCTION,
        &["_iscoroutinefunction", "iscoroutinefunction"],
    )?;
    let iscoro = asyncio_check(py, &ISCOROUTINE, &["iscoroutine"])?;
    if iscoro.call1((cb,))?.is_truthy()? || iscorofunc.call1((cb,))?.is_truthy()? {
        return Err(coroutine_error(method));
    }
    Ok(())
}
