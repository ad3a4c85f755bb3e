//! `uvrs.Handle` / `uvrs.TimerHandle`: Python subclasses of asyncio's
//! `Handle` / `TimerHandle` whose asyncio slots the core fills directly, so
//! their public behaviour (repr, cancel, when, get_context) is asyncio's own
//! and `isinstance` checks against asyncio hold.

use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyTuple, PyType};

use super::capi;

/// Slot offsets inside asyncio.Handle / asyncio.TimerHandle instances.
pub struct Slots {
    pub callback: isize,
    pub args: isize,
    pub cancelled: isize,
    pub loop_: isize,
    pub source_traceback: isize,
    pub repr: isize,
    pub context: isize,
    pub when: isize,
    pub scheduled: isize,
}

/// The registered handle classes and their slot layout.
pub struct HandleTypes {
    pub handle: Py<PyType>,
    pub timer: Py<PyType>,
    pub slots: Slots,
}

static TYPES: OnceLock<HandleTypes> = OnceLock::new();

/// Register the Python handle classes (called once by `uvrs/__init__.py`).
#[pyfunction]
pub fn _set_handle_types(handle: &Bound<'_, PyType>, timer: &Bound<'_, PyType>) -> PyResult<()> {
    let py = handle.py();
    let asyncio = py.import("asyncio")?;
    let a_handle = asyncio.getattr("Handle")?.cast_into::<PyType>()?;
    let a_timer = asyncio.getattr("TimerHandle")?.cast_into::<PyType>()?;
    if !handle.is_subclass(&a_handle)? || !timer.is_subclass(&a_timer)? {
        return Err(PyRuntimeError::new_err(
            "handle types must subclass asyncio.Handle / asyncio.TimerHandle",
        ));
    }
    // The subclasses must not add instance storage: the core allocates them
    // with asyncio's layout.
    for (sub, base) in [(handle, &a_handle), (timer, &a_timer)] {
        let a: isize = sub.getattr("__basicsize__")?.extract()?;
        let b: isize = base.getattr("__basicsize__")?.extract()?;
        if a != b {
            return Err(PyRuntimeError::new_err(
                "handle subclasses must declare __slots__ = ()",
            ));
        }
    }
    let slots = Slots {
        callback: capi::slot_offset(&a_handle, "_callback")?,
        args: capi::slot_offset(&a_handle, "_args")?,
        cancelled: capi::slot_offset(&a_handle, "_cancelled")?,
        loop_: capi::slot_offset(&a_handle, "_loop")?,
        source_traceback: capi::slot_offset(&a_handle, "_source_traceback")?,
        repr: capi::slot_offset(&a_handle, "_repr")?,
        context: capi::slot_offset(&a_handle, "_context")?,
        when: capi::slot_offset(&a_timer, "_when")?,
        scheduled: capi::slot_offset(&a_timer, "_scheduled")?,
    };
    let _ = TYPES.set(HandleTypes {
        handle: handle.clone().unbind(),
        timer: timer.clone().unbind(),
        slots,
    });
    Ok(())
}

pub fn types() -> PyResult<&'static HandleTypes> {
    TYPES
        .get()
        .ok_or_else(|| PyRuntimeError::new_err("uvrs handle types are not registered"))
}

/// Fill the slots shared by Handle and TimerHandle.
fn fill_common(
    t: &HandleTypes,
    obj: &Bound<'_, PyAny>,
    callback: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    loop_: &Bound<'_, PyAny>,
    context: &Bound<'_, PyAny>,
    source_traceback: Option<&Bound<'_, PyAny>>,
) {
    let s = &t.slots;
    let p = obj.as_ptr();
    let none = obj.py().None();
    let st = source_traceback
        .map(|b| b.as_ptr())
        .unwrap_or(none.as_ptr());
    // SAFETY: obj is a fresh instance of a registered subclass of asyncio.Handle
    // with asyncio's layout (checked in _set_handle_types); the offsets come
    // from that layout; every value is a live object.
    unsafe {
        capi::slot_set(p, s.callback, callback.as_ptr());
        capi::slot_set(p, s.args, args.as_ptr());
        capi::slot_set(p, s.cancelled, ffi::Py_False());
        capi::slot_set(p, s.loop_, loop_.as_ptr());
        capi::slot_set(p, s.source_traceback, st);
        capi::slot_set(p, s.repr, none.as_ptr());
        capi::slot_set(p, s.context, context.as_ptr());
    }
}

/// A `uvrs.Handle`: `reuse` (a recycled one, see `recycle`) or a new one.
pub fn new_handle<'py>(
    reuse: Option<Py<PyAny>>,
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    loop_: &Bound<'py, PyAny>,
    context: &Bound<'py, PyAny>,
    source_traceback: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let t = types()?;
    let obj = match reuse {
        Some(h) => h.into_bound(callback.py()),
        None => capi::alloc_instance(t.handle.bind(callback.py()))?,
    };
    fill_common(t, &obj, callback, args, loop_, context, source_traceback);
    Ok(obj)
}

/// After a handle ran: if the loop held its only reference, drop what it
/// refers to and return it for reuse (a free list, as uvloop's Cython handles
/// have). A handle anyone else can still see is never recycled.
pub fn recycle(t: &HandleTypes, handle: Py<PyAny>, py: Python<'_>) -> Option<(Py<PyAny>, bool)> {
    let b = handle.bind(py);
    let ty = b.get_type();
    let is_timer = ty.is(t.timer.bind(py));
    if !(is_timer || ty.is(t.handle.bind(py))) || !capi::is_unshared(b) {
        return None;
    }
    let none = py.None();
    // SAFETY: b is an instance of a registered handle class (asyncio layout)
    // that nobody else references; clearing its slots releases the callback
    // and arguments now, as dropping the handle would.
    unsafe {
        capi::slot_set(b.as_ptr(), t.slots.callback, none.as_ptr());
        capi::slot_set(b.as_ptr(), t.slots.args, none.as_ptr());
        capi::slot_set(b.as_ptr(), t.slots.context, none.as_ptr());
    }
    Some((handle, is_timer))
}

/// A new `uvrs.TimerHandle` due at `when` (the object stored as `_when`).
#[allow(clippy::too_many_arguments)]
pub fn new_timer_handle<'py>(
    reuse: Option<Py<PyAny>>,
    when: &Bound<'py, PyAny>,
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    loop_: &Bound<'py, PyAny>,
    context: &Bound<'py, PyAny>,
    source_traceback: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let t = types()?;
    let obj = match reuse {
        Some(h) => h.into_bound(callback.py()),
        None => capi::alloc_instance(t.timer.bind(callback.py()))?,
    };
    fill_common(t, &obj, callback, args, loop_, context, source_traceback);
    // SAFETY: obj is a fresh TimerHandle subclass instance (asyncio layout).
    unsafe {
        capi::slot_set(obj.as_ptr(), t.slots.when, when.as_ptr());
        capi::slot_set(obj.as_ptr(), t.slots.scheduled, ffi::Py_True());
    }
    Ok(obj)
}

/// A Python float for `when`.
pub fn float<'py>(py: Python<'py>, v: f64) -> Bound<'py, PyAny> {
    PyFloat::new(py, v).into_any()
}

/// Whether `handle._cancelled` is true.
#[inline]
pub fn is_cancelled(t: &HandleTypes, handle: &Bound<'_, PyAny>) -> bool {
    // SAFETY: handle is a registered handle instance; _cancelled is always set
    // by fill_common and only ever replaced by asyncio with a bool.
    unsafe { capi::slot_get(handle.as_ptr(), t.slots.cancelled) == ffi::Py_True() }
}

/// Set `timer._scheduled = False`: the timer left the heap. It goes back
/// under the cyclic GC's watch (see `core.rs`: pending timers are untracked).
#[inline]
pub fn mark_unscheduled(t: &HandleTypes, timer: &Bound<'_, PyAny>) {
    // SAFETY: timer is a registered TimerHandle instance.
    unsafe { capi::slot_set(timer.as_ptr(), t.slots.scheduled, ffi::Py_False()) }
    capi::gc_track(timer);
}

/// Run a handle's callback in its context: `handle._context.run(cb, *args)`.
pub fn run<'py>(t: &HandleTypes, handle: &Bound<'py, PyAny>) -> PyResult<()> {
    let py = handle.py();
    let p = handle.as_ptr();
    // SAFETY: p is a registered handle instance kept alive by `handle`; its
    // _callback/_args/_context slots were set at creation and asyncio never
    // clears them while the handle is queued (cancel() only does so after
    // marking it cancelled, which the caller checked just before). _args is
    // always a tuple (set by us from *args).
    unsafe {
        let cb = capi::slot_get(p, t.slots.callback);
        let args = capi::slot_get(p, t.slots.args);
        let ctx = capi::slot_get(p, t.slots.context);
        if cb.is_null() || args.is_null() || ctx.is_null() || ffi::PyTuple_Check(args) == 0 {
            return Err(PyRuntimeError::new_err(
                "uvrs: handle is missing its callback",
            ));
        }
        let args = Borrowed::from_ptr(py, args).cast_unchecked::<PyTuple>();
        capi::call_in_context(py, ctx, cb, &args).map(drop)
    }
}

/// A handle's slot value (borrowed), or None where the slot is empty.
fn slot_or_none<'py>(handle: &Bound<'py, PyAny>, off: isize) -> Bound<'py, PyAny> {
    let py = handle.py();
    // SAFETY: callers pass a registered handle instance and one of its slot
    // offsets; a non-null slot holds a live object owned by the handle.
    unsafe {
        let v = capi::slot_get(handle.as_ptr(), off);
        if v.is_null() {
            py.None().into_bound(py)
        } else {
            Bound::from_borrowed_ptr(py, v)
        }
    }
}

/// The `_source_traceback` of a handle, or None.
pub fn source_traceback<'py>(t: &HandleTypes, handle: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    slot_or_none(handle, t.slots.source_traceback)
}

/// The callback and args of a handle (for error messages); None where
/// cancel() cleared them.
pub fn callback_and_args<'py>(
    t: &HandleTypes,
    handle: &Bound<'py, PyAny>,
) -> (Bound<'py, PyAny>, Bound<'py, PyAny>) {
    (
        slot_or_none(handle, t.slots.callback),
        slot_or_none(handle, t.slots.args),
    )
}

/// `handle.cancel()` for uvrs handles: asyncio's `TimerHandle.cancel` and
/// `Handle.cancel` steps, in order, without their Python frames.
#[pyfunction]
pub fn _cancel_handle(handle: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = handle.py();
    let t = types()?;
    let ty = handle.get_type();
    let is_timer = ty.is_subclass(t.timer.bind(py))?;
    if !is_timer && !ty.is_subclass(t.handle.bind(py))? {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "expected a uvrs Handle or TimerHandle",
        ));
    }
    if is_cancelled(t, handle) {
        return Ok(());
    }
    let p = handle.as_ptr();
    // SAFETY: handle is an instance of a registered handle class (checked
    // above), so it has asyncio's slots at the recorded offsets.
    let loop_ = unsafe { capi::slot_get(p, t.slots.loop_) };
    if loop_.is_null() {
        return Err(PyRuntimeError::new_err("handle has no loop"));
    }
    // SAFETY: a non-null slot holds a live object owned by the handle.
    let loop_ = unsafe { Bound::from_borrowed_ptr(py, loop_) };
    let core = loop_.cast::<super::core::LoopCore>().ok();
    if is_timer {
        match &core {
            Some(c) => c.get().timer_cancelled(t, handle),
            None => {
                loop_.call_method1("_timer_handle_cancelled", (handle,))?;
            }
        }
    }
    // SAFETY: as above.
    unsafe { capi::slot_set(p, t.slots.cancelled, ffi::Py_True()) };
    let debug = match &core {
        Some(c) => c.get().debug(),
        None => loop_.call_method0("get_debug")?.is_truthy()?,
    };
    if debug {
        // asyncio keeps a representation for debugging in debug mode.
        let r = handle.repr()?;
        // SAFETY: as above.
        unsafe { capi::slot_set(p, t.slots.repr, r.as_ptr()) };
    }
    let none = py.None();
    // SAFETY: as above.
    unsafe {
        capi::slot_set(p, t.slots.callback, none.as_ptr());
        capi::slot_set(p, t.slots.args, none.as_ptr());
    }
    Ok(())
}

/// Whether `timer._scheduled` is true (it is in its loop's heap).
#[inline]
pub fn is_scheduled(t: &HandleTypes, timer: &Bound<'_, PyAny>) -> bool {
    // SAFETY: timer is a registered TimerHandle instance.
    unsafe { capi::slot_get(timer.as_ptr(), t.slots.scheduled) == ffi::Py_True() }
}

/// `_run_in_context(ctx, fn, *args)`: `fn(*args)` inside the Context `ctx`,
/// or where it is when `ctx` is already entered (the caller runs in it
/// already). `Context.run` would raise there instead.
#[pyfunction]
#[pyo3(signature = (ctx, func, *args))]
pub fn _run_in_context<'py>(
    py: Python<'py>,
    ctx: Py<PyAny>,
    func: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let _entered = crate::r#loop::capi::ContextGuard::enter(ctx.bind(py));
    func.call1(args)
}
