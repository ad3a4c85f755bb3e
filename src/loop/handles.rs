//! `uvrs.Handle` / `uvrs.TimerHandle`: Python subclasses of asyncio's
//! `Handle` / `TimerHandle` whose asyncio slots the core fills directly, so
//! their public behaviour (repr, cancel, when, get_context) is asyncio's own
//! and `isinstance` checks against asyncio hold.

use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

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
    /// Offsets of a `contextvars.Context`'s two object fields (`ctx_prev`,
    /// `ctx_vars`), where the running CPython has the layout this was
    /// written against (checked by `probe_context_layout`). Only then are
    /// the contexts copied for pending timers kept out of the GC's lists:
    /// the loop must be able to report what they refer to.
    pub context_fields: Option<[usize; 2]>,
}

/// Where a `Context`'s `ctx_prev` and `ctx_vars` are, if the layout is the
/// one CPython 3.10-3.14 have (`PyObject_HEAD`, then those two pointers):
/// a fresh context has no `ctx_prev` and its `ctx_vars` is a `hamt`.
fn probe_context_layout(py: Python<'_>) -> Option<[usize; 2]> {
    let ctx = py
        .import("contextvars")
        .ok()?
        .getattr("Context")
        .ok()?
        .call0()
        .ok()?;
    let head = std::mem::size_of::<ffi::PyObject>();
    let fields = [head, head + std::mem::size_of::<*mut ffi::PyObject>()];
    // SAFETY: a Context is at least PyObject_HEAD plus three pointers on
    // every CPython this builds for; the two words read are inside it, and
    // the second is dereferenced only after the first matched (null) and
    // it is non-null.
    unsafe {
        let p = ctx.as_ptr() as *const u8;
        let prev = *(p.add(fields[0]) as *const *mut ffi::PyObject);
        let vars = *(p.add(fields[1]) as *const *mut ffi::PyObject);
        if !prev.is_null() || vars.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr((*ffi::Py_TYPE(vars)).tp_name);
        (name.to_bytes() == b"hamt").then_some(fields)
    }
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
        context_fields: probe_context_layout(py),
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
/// The caller has `release`d it already.
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

/// Set `timer._scheduled = False`: the timer left the heap. It stays out of
/// the cyclic GC's lists until the loop lets go of it (`release`).
#[inline]
pub fn mark_unscheduled(t: &HandleTypes, timer: &Bound<'_, PyAny>) {
    // SAFETY: timer is a registered TimerHandle instance.
    unsafe { capi::slot_set(timer.as_ptr(), t.slots.scheduled, ffi::Py_False()) }
}

/// The loop lets go of a handle (it ran, was cancelled, or the loop closed).
///
/// A timer handle, and the context the loop copied for it, are kept out of
/// the cyclic GC's lists while the loop holds them (see
/// `LoopCore::schedule_timer`): the GC would walk every pending timer on each
/// collection, and tracking them back on the way out cost a write to two
/// cold neighbours per timer. The loop's own GC traversal reports what they
/// refer to (`traverse_owned`). Whatever anyone else can still see goes back
/// under the GC here, so cycles through it are collected as usual. Handles
/// the GC tracks already (`call_soon`'s) are left as they are.
#[inline]
pub fn release(t: &HandleTypes, handle: &Bound<'_, PyAny>) {
    // Only timer handles are ever untracked: the others cost one compare.
    if handle.get_type_ptr() == t.timer.as_ptr() as *mut ffi::PyTypeObject {
        retrack(t, handle, true);
    }
}

/// Before a collection, for a loop that is not running: pending timers that
/// someone else now holds (the handle, or its context) go back under the GC,
/// so that a loop dropped without `close()` is still collected when those
/// holders are garbage too.
pub fn track_if_shared(t: &HandleTypes, handle: &Bound<'_, PyAny>) {
    retrack(t, handle, false);
}

fn retrack(t: &HandleTypes, handle: &Bound<'_, PyAny>, leaving: bool) {
    let p = handle.as_ptr();
    // SAFETY: handle is a live object; a registered handle type is a GC type.
    if unsafe { ffi::PyObject_GC_IsTracked(p) } != 0 {
        return;
    }
    let shared = !capi::is_unshared(handle);
    if shared {
        capi::gc_track(handle);
    }
    // Leaving, the context goes back in any case: CPython's context dealloc
    // unlinks it from the GC's lists without checking that it is in them.
    let ctx_shared = || {
        // SAFETY: an untracked handle here is a registered TimerHandle the
        // loop untracked; a non-null context slot holds a live object.
        let ctx = unsafe { capi::slot_get(p, t.slots.context) };
        // SAFETY: checked non-null just before; live as above.
        !ctx.is_null() && unsafe { ffi::Py_REFCNT(ctx) } > 1
    };
    if leaving || shared || ctx_shared() {
        track_context(t, handle);
    }
}

/// Put a timer handle's context (if any) under the GC.
fn track_context(t: &HandleTypes, timer: &Bound<'_, PyAny>) {
    // SAFETY: timer is a registered TimerHandle instance (callers check or
    // know it); a non-null context slot holds a live object it owns.
    unsafe {
        let ctx = capi::slot_get(timer.as_ptr(), t.slots.context);
        if !ctx.is_null() {
            capi::gc_track(&Borrowed::from_ptr(timer.py(), ctx));
        }
    }
}

/// Report one handle the loop holds to the GC (the loop's `__traverse__`).
///
/// A handle the GC tracks is reported as itself. An untracked one that only
/// the loop holds is part of the loop as far as the GC can tell, so what it
/// refers to is reported instead, and likewise for its context when the
/// handle is the context's only holder. Anything shared is reported as
/// itself (an untracked object reported is simply not followed), never
/// looked through: that could hide a path to an object from elsewhere.
pub fn traverse_owned(
    t: &HandleTypes,
    handle: &Py<PyAny>,
    visit: &PyVisit<'_>,
) -> Result<(), PyTraverseError> {
    let p = handle.as_ptr();
    // SAFETY: handle is a live handle instance the loop holds (asyncio
    // layout), so the slot offsets are inside it; `Option<Py<PyAny>>` has
    // the layout of a nullable object pointer, so a slot read through it is
    // a borrowed view that is never dropped. No reference count changes.
    unsafe {
        if ffi::PyObject_GC_IsTracked(p) != 0 || !capi::is_unshared_ptr(p) {
            return visit.call(handle);
        }
        let field = |obj: *mut ffi::PyObject, off: usize| {
            &*((obj as *const u8).add(off) as *const Option<Py<PyAny>>)
        };
        let s = &t.slots;
        for off in [s.callback, s.args, s.loop_, s.source_traceback, s.repr] {
            visit.call(field(p, off as usize))?;
        }
        if ffi::PyObject_TypeCheck(p, t.timer.as_ptr() as *mut ffi::PyTypeObject) != 0 {
            visit.call(field(p, s.when as usize))?;
        }
        let ctx = capi::slot_get(p, s.context);
        match t.context_fields {
            Some(fs)
                if !ctx.is_null()
                    && ffi::PyObject_GC_IsTracked(ctx) == 0
                    && ffi::Py_REFCNT(ctx) == 1 =>
            {
                for off in fs {
                    visit.call(field(ctx, off))?;
                }
                Ok(())
            }
            _ => visit.call(field(p, s.context as usize)),
        }
    }
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

/// Before Python code replaces or deletes a uvrs `TimerHandle`'s `_context`
/// (its `_context` property): the old context may be one the loop keeps
/// out of the GC's lists, and CPython must not free a context that way.
#[pyfunction]
pub fn _retrack_context(handle: &Bound<'_, PyAny>) -> PyResult<()> {
    let t = types()?;
    if !handle.get_type().is_subclass(t.timer.bind(handle.py()))? {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "expected a uvrs TimerHandle",
        ));
    }
    track_context(t, handle);
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
