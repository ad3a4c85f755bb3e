//! The few raw CPython C-API operations the core needs beyond PyO3's safe API:
//! direct slot access on asyncio's Handle objects, context-bound vectorcall,
//! and the monotonic clock. Each `unsafe` states its invariant.

use std::os::raw::c_int;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple, PyType};

/// Byte offset of a `__slots__` member in instances of a Python class, read
/// from its member descriptor (e.g. `asyncio.Handle._callback`).
pub fn slot_offset(cls: &Bound<'_, PyType>, name: &str) -> PyResult<isize> {
    let descr = cls.getattr(name)?;
    let tname = descr.get_type().name()?.to_string();
    if tname != "member_descriptor" {
        return Err(PyTypeError::new_err(format!(
            "{}.{} is not a slot ({tname})",
            cls.name()?,
            name
        )));
    }
    // SAFETY: descr is a member_descriptor (checked above), whose C layout is
    // PyMemberDescrObject on every supported CPython; d_member points to the
    // type's static PyMemberDef, whose third field is the offset on all
    // versions (older PyO3 declares the field as PyGetSetDef, so cast).
    let off = unsafe {
        let d = descr.as_ptr() as *mut ffi::PyMemberDescrObject;
        let m = (*d).d_member as *const ffi::PyMemberDef;
        (*m).offset
    };
    Ok(off)
}

/// Borrowed pointer to a slot value (may be null if never set).
///
/// # Safety
/// `obj` must be a live instance of a class that has a slot at `off`.
#[inline]
pub unsafe fn slot_get(obj: *mut ffi::PyObject, off: isize) -> *mut ffi::PyObject {
    // SAFETY: per the contract, obj+off is a PyObject* slot inside obj.
    unsafe { *((obj as *mut u8).offset(off) as *mut *mut ffi::PyObject) }
}

/// Store a new strong reference in a slot, releasing the old one.
///
/// # Safety
/// As for `slot_get`; `val` must be a valid object (a new reference is taken).
#[inline]
pub unsafe fn slot_set(obj: *mut ffi::PyObject, off: isize, val: *mut ffi::PyObject) {
    // SAFETY: per the contract the slot exists; we incref before storing and
    // decref the previous value after, as CPython's member setter does.
    unsafe {
        let p = (obj as *mut u8).offset(off) as *mut *mut ffi::PyObject;
        ffi::Py_INCREF(val);
        let old = *p;
        *p = val;
        ffi::Py_XDECREF(old);
    }
}

/// Whether the caller holds the only reference to `obj` and no weak reference
/// to it exists, so that it can be reused in place without anyone noticing.
pub fn is_unshared(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: a Bound is a live object.
    unsafe { is_unshared_ptr(obj.as_ptr()) }
}

/// `is_unshared` for a raw pointer (usable where no `Python` token exists,
/// such as a GC traversal).
///
/// # Safety
/// `p` must be a live object.
pub unsafe fn is_unshared_ptr(p: *mut ffi::PyObject) -> bool {
    // SAFETY: p is a live object; ob_type is its live type. A positive
    // tp_weaklistoffset is the offset of the weakref list pointer inside p.
    unsafe {
        if ffi::Py_REFCNT(p) != 1 {
            return false;
        }
        let off = (*ffi::Py_TYPE(p)).tp_weaklistoffset;
        off > 0 && (*((p as *mut u8).offset(off) as *mut *mut ffi::PyObject)).is_null()
    }
}

/// Hint the CPU to start loading the cache line at `p` (a no-op where the
/// architecture has no stable prefetch). Never dereferences `p`.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86_64 baseline; a prefetch of any
        // address, mapped or not, never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetch the first two cache lines of a Python object (a handle's header
/// and slots span them).
#[inline(always)]
pub fn prefetch_object(p: *mut ffi::PyObject) {
    prefetch(p as *const u8);
    prefetch((p as *const u8).wrapping_add(64));
}

/// Take `obj` out of the cyclic GC's lists (no-op if it is not in them).
pub fn gc_untrack(obj: &Bound<'_, PyAny>) {
    // SAFETY: obj is a live object; PyObject_GC_UnTrack is a no-op for an
    // untracked object and is only valid for GC types, which we check.
    unsafe {
        if ffi::PyObject_IS_GC(obj.as_ptr()) != 0 {
            ffi::PyObject_GC_UnTrack(obj.as_ptr() as *mut _);
        }
    }
}

/// Put `obj` back in the cyclic GC's lists (no-op if it is there already).
pub fn gc_track(obj: &Bound<'_, PyAny>) {
    // SAFETY: obj is a live GC object (checked); tracking an already-tracked
    // object is an error, hence the IsTracked check.
    unsafe {
        let p = obj.as_ptr();
        if ffi::PyObject_IS_GC(p) != 0 && ffi::PyObject_GC_IsTracked(p) == 0 {
            ffi::PyObject_GC_Track(p as *mut _);
        }
    }
}

/// Allocate an instance of `cls` without running `__init__` (`cls.__new__`
/// semantics for a class whose instances are plain slot holders).
pub fn alloc_instance<'py>(cls: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    // SAFETY: cls is a live heap type; tp_alloc is always set for such types
    // (PyType_GenericAlloc), returns a new zero-filled reference or null with
    // an exception set.
    unsafe {
        let tp = cls.as_ptr() as *mut ffi::PyTypeObject;
        let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
        let obj = alloc(tp, 0);
        Bound::from_owned_ptr_or_err(py, obj)
    }
}

/// Call `cb(*args)` inside `ctx` (a `contextvars.Context`), the way
/// `ctx.run(cb, *args)` does, without building an argument tuple.
/// Returns the result, or the raised exception.
pub fn call_in_context<'py>(
    py: Python<'py>,
    ctx: *mut ffi::PyObject,
    cb: *mut ffi::PyObject,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: ctx, cb and args are live objects kept alive by the caller's
    // handle for the duration of the call; args is a tuple, so its item array
    // holds PyTuple_GET_SIZE valid pointers; enter/exit are paired.
    unsafe {
        if ffi::PyContext_Enter(ctx) < 0 {
            return Err(PyErr::fetch(py));
        }
        let tup = args.as_ptr() as *mut ffi::PyTupleObject;
        let n = ffi::PyTuple_GET_SIZE(args.as_ptr()) as usize;
        let res = ffi::PyObject_Vectorcall(cb, (*tup).ob_item.as_ptr(), n, std::ptr::null_mut());
        let res = Bound::from_owned_ptr_or_err(py, res);
        if ffi::PyContext_Exit(ctx) < 0 {
            return Err(PyErr::fetch(py));
        }
        res
    }
}

/// `callable(obj)`.
#[inline]
pub fn is_callable(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: obj is a live object; PyCallable_Check has no other precondition.
    unsafe { ffi::PyCallable_Check(obj.as_ptr()) != 0 }
}

/// The code flags of a plain Python function, and whether its `__dict__` is
/// non-empty (markers such as `_is_coroutine` live there).
pub fn function_flags(f: &Bound<'_, PyAny>) -> Option<(c_int, bool)> {
    // SAFETY: PyFunction_Check is a type check on a live object.
    if unsafe { ffi::PyFunction_Check(f.as_ptr()) } == 0 {
        return None;
    }
    // SAFETY: f is a PyFunctionObject (checked); func_dict is null or a dict.
    let has_dict = unsafe {
        let fo = f.as_ptr() as *mut ffi::PyFunctionObject;
        let d = (*fo).func_dict;
        !d.is_null() && ffi::PyDict_Size(d) > 0
    };
    let code = f.getattr(pyo3::intern!(f.py(), "__code__")).ok()?;
    let flags: c_int = code
        .getattr(pyo3::intern!(f.py(), "co_flags"))
        .ok()?
        .extract()
        .ok()?;
    Some((flags, has_dict))
}

/// If `m` is a bound method (`types.MethodType`), its `__func__`.
pub fn method_function<'py>(m: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    let py = m.py();
    static METHOD_TYPE: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let mt = METHOD_TYPE
        .get_or_try_init(py, || {
            py.import("types")?.getattr("MethodType").map(Bound::unbind)
        })
        .ok()?;
    if !m.get_type().is(mt.bind(py)) {
        return None;
    }
    m.getattr(pyo3::intern!(py, "__func__")).ok()
}

/// Whether `obj` is a builtin function or bound C method (never a coroutine
/// function).
#[inline]
pub fn is_builtin_callable(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: type checks on a live object.
    unsafe { ffi::PyCFunction_Check(obj.as_ptr()) != 0 }
}

/// The identifier of the calling OS thread, as `threading.get_ident()`.
#[inline]
pub fn thread_ident() -> u64 {
    // SAFETY: no preconditions.
    unsafe { ffi::PyThread_get_thread_ident() as u64 }
}

/// `PyErr_CheckSignals()`: run pending Python signal handlers on the main
/// thread; an exception they raise (KeyboardInterrupt) is returned.
pub fn check_signals(py: Python<'_>) -> PyResult<()> {
    // SAFETY: called with the GIL held (py token).
    if unsafe { ffi::PyErr_CheckSignals() } < 0 {
        Err(PyErr::fetch(py))
    } else {
        Ok(())
    }
}

/// Copy of the current `contextvars` context (`contextvars.copy_context()`).
pub fn copy_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: GIL held; returns a new reference or null with an exception.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }
}

/// `time.monotonic()` as a float, read without calling into Python where the
/// platform's libuv clock is the same clock (CLOCK_MONOTONIC on Linux and the
/// BSDs).
#[cfg(all(unix, not(target_vendor = "apple")))]
pub fn monotonic(_py: Python<'_>) -> PyResult<f64> {
    Ok(crate::uv::hrtime() as f64 * 1e-9)
}

/// On Windows, CPython's monotonic clock differs between versions
/// (GetTickCount64 before 3.13), so ask it. On macOS libuv's clock is
/// `mach_continuous_time` (it counts while the machine sleeps) and CPython's
/// is `mach_absolute_time` (it does not), so ask CPython there too.
#[cfg(any(windows, target_vendor = "apple"))]
pub fn monotonic(py: Python<'_>) -> PyResult<f64> {
    static MONOTONIC: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let f = MONOTONIC.get_or_try_init(py, || {
        py.import("time")?.getattr("monotonic").map(Bound::unbind)
    })?;
    f.bind(py).call0()?.extract()
}

/// A bytes-like object's memory: an exact `bytes` object held by reference
/// (its memory never moves or changes), anything else through the buffer
/// protocol (`PyObject_GetBuffer(PyBUF_SIMPLE)`, which accepts every
/// contiguous bytes-like object). Dropped (released) with the GIL held.
pub struct SimpleBuffer(BufferKind);

enum BufferKind {
    /// An exact bytes object (a strong reference, released in Drop), with
    /// its memory: no Py_buffer to fill or free (the common case of
    /// `transport.write(b"...")`). A raw reference rather than a Py: a Py's
    /// drop first asks a thread-local whether the GIL is held, and this one
    /// is always dropped with it.
    Bytes(*mut ffi::PyObject, *const u8, usize),
    View(Box<ffi::Py_buffer>),
}

impl SimpleBuffer {
    pub fn get(obj: &Bound<'_, PyAny>) -> PyResult<SimpleBuffer> {
        let p = obj.as_ptr();
        // SAFETY: p is a live object (GIL held by obj's token). An exact
        // bytes object's storage is fixed for its lifetime, which the Py
        // reference kept beside the pointer extends to this buffer's.
        let exact = unsafe {
            (ffi::PyBytes_CheckExact(p) != 0).then(|| {
                (
                    ffi::PyBytes_AsString(p) as *const u8,
                    ffi::PyBytes_Size(p) as usize,
                )
            })
        };
        if let Some((ptr, len)) = exact {
            return Ok(SimpleBuffer(BufferKind::Bytes(
                obj.clone().into_ptr(),
                ptr,
                len,
            )));
        }
        // Uninitialised, not zeroed: a zeroed Box is a calloc(), which glibc
        // serves past its per-thread cache. Freed into that cache, the chunks
        // overflowed into the fastbins, and the next large malloc (the 1 KiB
        // bytes of the next read) swept them: malloc_consolidate was 1.7 % of
        // a 1 KiB echo server's CPU, one call per write.
        let mut view: Box<std::mem::MaybeUninit<ffi::Py_buffer>> = Box::new_uninit();
        // SAFETY: obj is live; PyObject_GetBuffer fills every field of the
        // view on success (and on failure it is never read). On success the
        // view holds a new reference to obj and is released exactly once (Drop).
        if unsafe { ffi::PyObject_GetBuffer(p, view.as_mut_ptr(), ffi::PyBUF_SIMPLE) } < 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: filled by the successful PyObject_GetBuffer above.
        let view = unsafe { view.assume_init() };
        Ok(SimpleBuffer(BufferKind::View(view)))
    }

    pub fn as_slice(&self) -> &[u8] {
        let (ptr, len) = match &self.0 {
            BufferKind::Bytes(_, ptr, len) => (*ptr, *len),
            BufferKind::View(v) => (v.buf as *const u8, v.len as usize),
        };
        if len == 0 || ptr.is_null() {
            return &[];
        }
        // SAFETY: a bytes object's storage, or a PyBUF_SIMPLE view's one
        // contiguous block of `len` bytes: both stay valid and unchanged until
        // self is dropped (it holds the bytes object / the view).
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    pub fn readonly(&self) -> bool {
        match &self.0 {
            BufferKind::Bytes(..) => true,
            BufferKind::View(v) => v.readonly != 0,
        }
    }
}

impl Drop for SimpleBuffer {
    fn drop(&mut self) {
        match &mut self.0 {
            // SAFETY: the reference was taken (into_ptr) in `get` and is
            // released once; owners drop a SimpleBuffer only with the GIL held.
            BufferKind::Bytes(obj, ..) => unsafe { ffi::Py_DECREF(*obj) },
            // SAFETY: the view was filled by a successful PyObject_GetBuffer
            // and is released once; owners drop it only with the GIL held.
            BufferKind::View(view) => unsafe { ffi::PyBuffer_Release(&mut **view) },
        }
    }
}

/// A `contextvars.Context` entered for the guard's lifetime (protocol
/// callbacks of a transport run in the context captured at its creation).
pub struct ContextGuard {
    ctx: *mut ffi::PyObject,
}

impl ContextGuard {
    /// Enter `ctx` (a Context object); None if it cannot be entered (not a
    /// Context, or already entered): the callbacks then run where they are.
    pub fn enter(ctx: &Bound<'_, PyAny>) -> Option<ContextGuard> {
        let p = ctx.as_ptr();
        // SAFETY: the GIL is held (ctx is bound); p is a live object, kept
        // alive by the caller for the guard's lifetime; PyContext_Enter
        // checks its type.
        unsafe {
            if ffi::PyContext_CheckExact(p) == 0 || ffi::PyContext_Enter(p) < 0 {
                ffi::PyErr_Clear();
                return None;
            }
        }
        Some(ContextGuard { ctx: p })
    }
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        // SAFETY: the context was entered by `enter` on this thread, which
        // still holds the GIL (guards live within one GIL-holding callback).
        unsafe {
            if ffi::PyContext_Exit(self.ctx) < 0 {
                ffi::PyErr_Clear();
            }
        }
    }
}

extern "C" {
    // CPython's own (cpython/bytesobject.h, every version uvrs supports);
    // pyo3-ffi does not declare it.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> c_int;
}

/// A new `bytes` object of `size` uninitialised bytes, for a read to fill;
/// None if Python is out of memory (the error is cleared).
pub fn new_uninit_bytes(py: Python<'_>, size: usize) -> Option<Py<PyBytes>> {
    // SAFETY: the GIL is held (py). A NULL source gives an uninitialised
    // object of `size` bytes, or NULL with an error set.
    unsafe {
        let p = ffi::PyBytes_FromStringAndSize(std::ptr::null(), size as ffi::Py_ssize_t);
        if p.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        Some(
            Bound::from_owned_ptr(py, p)
                .cast_into_unchecked::<PyBytes>()
                .unbind(),
        )
    }
}

/// Whether `obj` is an exact `bytes` object that only the caller refers to,
/// so that it may be filled again in place without anyone noticing (bytes
/// objects take no weak references, and nothing else can reach them).
/// Never on a free-threaded build, where the reference count of an object
/// other threads have seen is not exact.
pub fn bytes_unshared(obj: &Bound<'_, PyBytes>) -> bool {
    if cfg!(Py_GIL_DISABLED) {
        return false;
    }
    let p = obj.as_ptr();
    // SAFETY: p is a live object (GIL held); only its header is read.
    unsafe {
        ffi::Py_REFCNT(p) == 1
            && std::ptr::eq(ffi::Py_TYPE(p), std::ptr::addr_of_mut!(ffi::PyBytes_Type))
    }
}

/// Overwrite the contents of `obj` with `data` (same length), and forget its
/// cached hash. Returns false (and changes nothing) if the lengths differ or
/// `obj` may be seen by anyone else (`bytes_unshared`).
pub fn refill_bytes(obj: &Bound<'_, PyBytes>, data: &[u8]) -> bool {
    let (ptr, len) = bytes_memory(obj.py(), obj.as_unbound());
    if len != data.len() || !bytes_unshared(obj) {
        return false;
    }
    let p = obj.as_ptr() as *mut ffi::PyBytesObject;
    // SAFETY: GIL held; obj is an exact bytes object of `len` bytes that only
    // the caller refers to (checked above), so no one can observe it change.
    // Its hash, cached by hash(), no longer matches: -1 means "not computed".
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, len);
        #[allow(deprecated)]
        {
            (*p).ob_shash = -1;
        }
    }
    true
}

/// Where the bytes of `obj` live, and how many there are.
pub fn bytes_memory(py: Python<'_>, obj: &Py<PyBytes>) -> (*mut u8, usize) {
    let b = obj.bind(py);
    // SAFETY: b is a live bytes object (GIL held); AS_STRING/Size only read it.
    unsafe {
        (
            ffi::PyBytes_AsString(b.as_ptr()) as *mut u8,
            ffi::PyBytes_Size(b.as_ptr()) as usize,
        )
    }
}

/// A writable memoryview of `len` bytes at `ptr`, with no exporter: the
/// caller keeps the memory alive and unmoved while the view may be used.
///
/// # Safety
/// `ptr..ptr+len` must be writable memory that outlives every use of the view.
pub unsafe fn memoryview_over<'py>(
    py: Python<'py>,
    ptr: *mut u8,
    len: usize,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: GIL held (py); the memory is valid per this function's contract.
    unsafe {
        let p = ffi::PyMemoryView_FromMemory(
            ptr as *mut std::os::raw::c_char,
            len as ffi::Py_ssize_t,
            ffi::PyBUF_WRITE,
        );
        Bound::from_owned_ptr_or_err(py, p)
    }
}

/// Resize a bytes object nobody else refers to to `n` bytes (its first `n`
/// bytes kept when it shrinks; new ones uninitialised when it grows).
pub fn resize_bytes(py: Python<'_>, obj: Py<PyBytes>, n: usize) -> PyResult<Py<PyAny>> {
    let mut p = obj.into_ptr();
    // SAFETY: GIL held. The caller guarantees p is the only reference to a
    // bytes object (refcount 1, never shared), as _PyBytes_Resize requires;
    // on failure it frees the object, sets p to NULL and sets an error.
    unsafe {
        if _PyBytes_Resize(&mut p, n as ffi::Py_ssize_t) < 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, p).unbind())
    }
}

/// A native method taking one argument (positionally or by its keyword),
/// bound to one object, for the hottest calls from Python (a transport's
/// `write(data)`): the argument check is two comparisons instead of PyO3's
/// general extractor, which cost about 130 instructions per call in the
/// 1 KiB echo profile. The function behind it is a
/// `METH_FASTCALL | METH_KEYWORDS` one that hands its arguments to
/// [`one_arg_call`].
pub struct FastMethod(ffi::PyMethodDef);

// SAFETY: the definition is never written after construction; its pointers
// are to 'static C strings and a function, valid from any thread.
unsafe impl Sync for FastMethod {}

/// What a [`FastMethod`] does once its argument is checked: `slf` is the
/// object it is bound to.
pub type FastBody = for<'py> fn(&Bound<'py, PyAny>, &Bound<'py, PyAny>) -> PyResult<Py<PyAny>>;

impl FastMethod {
    pub const fn new(
        name: &'static std::ffi::CStr,
        doc: &'static std::ffi::CStr,
        f: ffi::PyCFunctionFastWithKeywords,
    ) -> FastMethod {
        FastMethod(ffi::PyMethodDef {
            ml_name: name.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: f,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: doc.as_ptr(),
        })
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        // SAFETY: ml_name is one of the 'static C string literals given to new().
        unsafe { std::ffi::CStr::from_ptr(self.0.ml_name) }
            .to_str()
            .unwrap_or("")
    }

    /// The method as a descriptor of `ty` (a `method_descriptor`, as the
    /// methods of builtin types are): set on the type, instances look it up
    /// like any method, and CPython checks that `self` is a `ty`.
    pub fn descriptor<'py>(&'static self, ty: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyAny>> {
        let def = &self.0 as *const ffi::PyMethodDef as *mut ffi::PyMethodDef;
        // SAFETY: the definition is 'static and CPython only reads it; ty is a
        // live type object, which the descriptor references.
        unsafe {
            Bound::from_owned_ptr_or_err(
                ty.py(),
                ffi::PyDescr_NewMethod(ty.as_ptr() as *mut ffi::PyTypeObject, def),
            )
        }
    }

    /// The method bound to `slf` (a `builtin_function_or_method`).
    pub fn bind<'py>(&'static self, slf: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let def = &self.0 as *const ffi::PyMethodDef as *mut ffi::PyMethodDef;
        // SAFETY: the definition is 'static and CPython only reads it; slf is
        // live, and the new function object holds its own reference to it.
        unsafe {
            Bound::from_owned_ptr_or_err(
                slf.py(),
                ffi::PyCFunction_NewEx(def, slf.as_ptr(), std::ptr::null_mut()),
            )
        }
    }
}

/// The body of a [`FastMethod`]'s function: accepts exactly one argument,
/// positionally or as keyword `kw`, with CPython's TypeErrors otherwise, and
/// runs `body` with it. Errors are raised, a panic becomes PanicException.
///
/// # Safety
/// Only as the direct implementation of a `METH_FASTCALL | METH_KEYWORDS`
/// function, called by CPython with the GIL held: `slf` is the bound object,
/// `args` holds `nargs` positional arguments followed by one value per name
/// in `kwnames` (a tuple of str, or NULL).
pub unsafe fn one_arg_call(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
    name: &str,
    kw: &str,
    body: FastBody,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls METH_FASTCALL functions with the GIL held.
    let py = unsafe { Python::assume_attached() };
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: kwnames is a tuple when not NULL (the calling convention).
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) }
    };
    let arg = if nargs == 1 && nkw == 0 {
        // SAFETY: one positional argument is at args[0].
        Ok(unsafe { *args })
    } else if nargs == 0 && nkw == 1 {
        // SAFETY: kwnames has one item, a str; its value is at args[0].
        let key = unsafe { Bound::from_borrowed_ptr(py, ffi::PyTuple_GET_ITEM(kwnames, 0)) };
        if key.extract::<&str>().is_ok_and(|k| k == kw) {
            // SAFETY: the keyword's value is at args[0] (no positionals).
            Ok(unsafe { *args })
        } else {
            Err(PyTypeError::new_err(format!(
                "{name}() got an unexpected keyword argument {}",
                key.repr().map(|r| r.to_string()).unwrap_or_default()
            )))
        }
    } else if nargs == 0 && nkw == 0 {
        Err(PyTypeError::new_err(format!(
            "{name}() missing 1 required positional argument: '{kw}'"
        )))
    } else if nargs > 1 {
        Err(PyTypeError::new_err(format!(
            "{name}() takes 1 positional argument but {nargs} were given"
        )))
    } else {
        Err(PyTypeError::new_err(format!(
            "{name}() got multiple values for argument '{kw}'"
        )))
    };
    let result = arg.and_then(|arg| {
        // SAFETY: slf and arg are live objects borrowed for this call.
        let (slf, arg) = unsafe {
            (
                Bound::from_borrowed_ptr(py, slf),
                Bound::from_borrowed_ptr(py, arg),
            )
        };
        guarded(|| body(&slf, &arg))
    });
    into_return(py, result)
}

/// Run `f`, turning a panic into PanicException (as PyO3's trampoline does).
fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic in native code".to_owned());
        Err(pyo3::panic::PanicException::new_err(msg))
    })
}

/// A C function's return value: a new reference, or NULL with the error set.
fn into_return(py: Python<'_>, result: PyResult<Py<PyAny>>) -> *mut ffi::PyObject {
    match result {
        Ok(obj) => obj.into_ptr(),
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}

/// The arguments of a call to an asyncio scheduling method,
/// `f(lead..., *args, context=None)`: the named leading parameters (`lead`
/// ends with `callback`), the tuple of the rest, and `context`.
pub struct ScheduleArgs<'py> {
    pub lead: [Option<Bound<'py, PyAny>>; 2],
    pub args: Bound<'py, PyTuple>,
    pub context: Option<Bound<'py, PyAny>>,
}

/// A new tuple of the borrowed objects `items`.
///
/// # Safety
/// Every pointer in `items` is a live object (borrowed; the tuple takes its
/// own references) and the GIL is held.
unsafe fn tuple_of<'py>(
    py: Python<'py>,
    items: &[*mut ffi::PyObject],
) -> PyResult<Bound<'py, PyTuple>> {
    if items.is_empty() {
        return Ok(PyTuple::empty(py));
    }
    // SAFETY: the GIL is held; a new tuple's items are set exactly once each,
    // with references of their own, before it is shared.
    unsafe {
        let t = ffi::PyTuple_New(items.len() as ffi::Py_ssize_t);
        if t.is_null() {
            return Err(PyErr::fetch(py));
        }
        for (i, &o) in items.iter().enumerate() {
            ffi::Py_INCREF(o);
            ffi::PyTuple_SET_ITEM(t, i as ffi::Py_ssize_t, o);
        }
        Ok(Bound::from_owned_ptr(py, t).cast_into_unchecked())
    }
}

/// The body of a scheduling method (`call_soon`, `call_later`...): checks
/// the arguments of a `METH_FASTCALL | METH_KEYWORDS` call against
/// `qualname(names..., *args, context=None)` as CPython would check a Python
/// function with that signature (the same TypeErrors, in the same order),
/// then runs `body`. `names` has one or two entries.
///
/// # Safety
/// As [`one_arg_call`]: only as the direct implementation of a
/// `METH_FASTCALL | METH_KEYWORDS` function, called by CPython with the GIL.
pub unsafe fn schedule_call(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
    qualname: &str,
    names: &[&str],
    body: for<'py> fn(&Bound<'py, PyAny>, ScheduleArgs<'py>) -> PyResult<Py<PyAny>>,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls METH_FASTCALL functions with the GIL held.
    let py = unsafe { Python::assume_attached() };
    let nargs = nargs.max(0) as usize;
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: kwnames is a tuple when not NULL (the calling convention).
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) as usize }
    };
    // SAFETY: args holds nargs positionals, then one value per keyword name,
    // each a live object borrowed for the duration of the call.
    let all = unsafe { std::slice::from_raw_parts(args, nargs + nkw) };
    // SAFETY: only called with pointers from `all`, `slf` or `kwnames`: live
    // objects the caller lends for the duration of the call.
    let arg = |p: *mut ffi::PyObject| unsafe { Bound::from_borrowed_ptr(py, p) };
    let n = names.len();
    let npos = n.min(nargs);
    let parsed = (|| {
        let mut lead: [Option<Bound<'_, PyAny>>; 2] = [None, None];
        for (slot, &p) in lead.iter_mut().zip(&all[..npos]) {
            *slot = Some(arg(p));
        }
        // SAFETY: the positionals after the named ones, live (see `all`).
        let rest = unsafe { tuple_of(py, &all[npos..nargs])? };
        let context = if nkw == 0 {
            None
        } else if nkw == 1
            // SAFETY: kwnames is a tuple of nkw str (the calling convention).
            && is_context_kwname(py, unsafe { ffi::PyTuple_GET_ITEM(kwnames, 0) })
        {
            // `f(..., context=ctx)`: asyncio's own calls (a task's step).
            Some(arg(all[nargs])).filter(|c| !c.is_none())
        } else {
            // SAFETY: kwnames is a tuple of str (the calling convention).
            let kwnames = unsafe { arg(kwnames).cast_into_unchecked::<PyTuple>() };
            let values = all[nargs..].iter().map(|&p| arg(p));
            bind_keywords(&kwnames, values, qualname, names, &mut lead)?
        };
        // Only keywords can have left a leading parameter unset.
        if nargs < n && lead[..n].iter().any(Option::is_none) {
            return Err(missing_arguments(qualname, names, &lead));
        }
        Ok(ScheduleArgs {
            lead,
            args: rest,
            context,
        })
    })();
    let slf = arg(slf);
    into_return(py, parsed.and_then(|a| guarded(|| body(&slf, a))))
}

/// A `"context"` string other than the interned one that was seen as a
/// keyword name, kept (with a reference, so its address stays its own) to
/// be recognised by identity: asyncio's C `Task` passes `context=` under a
/// string of its own on every step.
static CONTEXT_KWNAME: std::sync::atomic::AtomicPtr<ffi::PyObject> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Whether `key` is known to be the keyword name `"context"` by identity.
#[inline]
fn is_context_kwname(py: Python<'_>, key: *mut ffi::PyObject) -> bool {
    key == pyo3::intern!(py, "context").as_ptr()
        || key == CONTEXT_KWNAME.load(std::sync::atomic::Ordering::Relaxed)
}

/// The keyword arguments of a scheduling call: each fills `context` or the
/// leading parameter of its name, as CPython binds them; returns `context`
/// (None when absent or None, the Python signature's default).
#[cold]
fn bind_keywords<'py>(
    kwnames: &Bound<'py, PyTuple>,
    values: impl Iterator<Item = Bound<'py, PyAny>>,
    qualname: &str,
    names: &[&str],
    lead: &mut [Option<Bound<'py, PyAny>>; 2],
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let context_name = pyo3::intern!(kwnames.py(), "context");
    let mut context = None;
    for (key, value) in kwnames.iter().zip(values) {
        let slot = if key.is(context_name) || key.eq(context_name)? {
            remember_context_kwname(&key);
            Some(&mut context)
        } else {
            let k = key.cast::<pyo3::types::PyString>()?.to_str()?;
            names.iter().position(|nm| *nm == k).map(|i| &mut lead[i])
        };
        match slot {
            Some(slot) if slot.is_none() => *slot = Some(value),
            Some(_) => {
                return Err(PyTypeError::new_err(format!(
                    "{qualname}() got multiple values for argument '{key}'"
                )))
            }
            None => {
                return Err(PyTypeError::new_err(format!(
                    "{qualname}() got an unexpected keyword argument '{key}'"
                )))
            }
        }
    }
    Ok(context.filter(|c| !c.is_none()))
}

/// Keep the first non-interned exact `str` "context" seen (see
/// `CONTEXT_KWNAME`); the reference taken is never released.
fn remember_context_kwname(key: &Bound<'_, PyAny>) {
    use std::sync::atomic::Ordering;
    let p = key.as_ptr();
    // SAFETY: p is a live object; PyUnicode_CheckExact only reads its type.
    if unsafe { ffi::PyUnicode_CheckExact(p) } == 0
        || is_context_kwname(key.py(), p)
        || !CONTEXT_KWNAME.load(Ordering::Relaxed).is_null()
    {
        return;
    }
    // SAFETY: the reference stored is a new one, owned by the static.
    unsafe { ffi::Py_INCREF(p) };
    if CONTEXT_KWNAME
        .compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        // SAFETY: undo the reference taken just above.
        unsafe { ffi::Py_DECREF(p) };
    }
}

/// CPython's TypeError for the leading parameters `lead` leaves unset.
#[cold]
fn missing_arguments(
    qualname: &str,
    names: &[&str],
    lead: &[Option<Bound<'_, PyAny>>; 2],
) -> PyErr {
    let missing: Vec<String> = names
        .iter()
        .zip(lead)
        .filter(|(_, v)| v.is_none())
        .map(|(nm, _)| format!("'{nm}'"))
        .collect();
    let noun = if missing.len() == 1 {
        "argument"
    } else {
        "arguments"
    };
    PyTypeError::new_err(format!(
        "{qualname}() missing {} required positional {noun}: {}",
        missing.len(),
        missing.join(" and ")
    ))
}
