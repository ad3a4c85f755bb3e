//! `LoopCore`: the native half of `uvrs.Loop`.
//!
//! How an iteration maps onto libuv (see libuv's design.rst for the phases):
//!
//! * `call_soon` appends a handle to the ready queue; nothing touches libuv.
//! * The check handle runs after every poll. It moves due timers to the ready
//!   queue and runs exactly the handles that were queued at that moment, as
//!   asyncio's `_run_once` does; handles queued meanwhile run next iteration.
//! * Afterwards, if handles are still queued (or `stop()` was called), the idle
//!   handle is started so the next poll does not block; otherwise the one libuv
//!   timer is armed for the earliest Python timer, rounded up to a whole
//!   millisecond so it never fires early (an early wake finds nothing due and
//!   re-arms).
//! * The prepare handle releases the GIL when the poll is about to block; the
//!   first callback after the poll takes it back (`gil.rs`).
//! * `call_soon_threadsafe` from another thread queues under the lock and wakes
//!   the poll with the async handle.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::callback_check::check_callback;
use super::capi;
use super::fdwatch::{FdWatchers, Side};
use super::gil::{GilCell, SavedThread};
use super::handles::{self, HandleTypes};
use super::timers::TimerHeap;
use crate::uv;

/// How many recycled handles a loop keeps.
const FREE_HANDLES: usize = 256;

/// Most batches run back to back, without a poll in between, when nothing but
/// the loop's own handles is registered with libuv.
const MAX_BATCHES_WITHOUT_POLL: usize = 64;

/// Longest single libuv timer arm (asyncio's MAXIMUM_SELECT_TIMEOUT, 24 h).
const MAX_TIMER_MS: u64 = 24 * 3600 * 1000;
/// The largest read whose `bytes` is kept for reuse (`State::bytes_for`).
const SPARE_BYTES_MAX: usize = 64 * 1024;

/// Python objects waiting to run.
#[derive(Default)]
struct Queue {
    ready: VecDeque<Py<PyAny>>,
    /// An empty deque kept to swap with `ready`, so batches reuse capacity.
    spare: VecDeque<Py<PyAny>>,
    /// Handles that ran and that nobody else referenced, ready for reuse.
    free: Vec<Py<PyAny>>,
    /// The same for timer handles.
    free_timers: Vec<Py<PyAny>>,
    timers: TimerHeap<Py<PyAny>>,
}

/// What `Queue::take_all` takes: ready handles, timers, free handles.
type Taken = (VecDeque<Py<PyAny>>, Vec<Py<PyAny>>, Vec<Py<PyAny>>);

impl Queue {
    /// Everything queued, pending and kept for reuse, taken out (loop close,
    /// GC clear): the ready handles, the timers, the free lists.
    fn take_all(&mut self) -> Taken {
        let mut free = std::mem::take(&mut self.free);
        free.append(&mut self.free_timers);
        (std::mem::take(&mut self.ready), self.timers.drain(), free)
    }
}

impl Drop for Queue {
    /// A loop dropped without `close()` (a subclass whose `__del__` skips it,
    /// or a bare `LoopCore`): its pending timers' contexts are untracked, and
    /// CPython must not free them that way (see `handles::release`). Where
    /// Python can no longer be entered they are leaked instead.
    fn drop(&mut self) {
        if self.ready.is_empty() && self.timers.is_empty() {
            return;
        }
        let mut held = Some(self.take_all());
        Python::try_attach(|py| {
            if let Some((ready, timers, free)) = held.take() {
                release_all(py, ready.iter().chain(&timers));
                drop(free);
            }
        });
        std::mem::forget(held);
    }
}

/// The libuv handles of one loop. Dropping them closes them.
struct UvHandles {
    timer: uv::Timer,
    idle: uv::Idle,
    /// Kept for its lifetime: dropping it closes it.
    _check: uv::Check,
    /// Kept for its lifetime: dropping it closes it.
    _prepare: uv::Prepare,
    wake: uv::Async,
    wakeup_fd: Option<uv::Poll>,
}

/// An object outside the loop's own state that holds a libuv handle of the
/// loop: a transport's stream, a server's listener.
pub(crate) trait HandleOwner: Send + Sync {
    /// The loop is closing: close the handle now (dropping it; no close
    /// callback may reach Python) and never touch libuv again.
    fn release_handle(&self);
}

/// The handle owners of a loop, held weakly; dead entries are pruned as the
/// list grows, so it stays within twice the live count.
#[derive(Default)]
struct Owners {
    list: Vec<Weak<dyn HandleOwner>>,
    prune_at: usize,
}

/// The signal wakeup socket and the callable that gets what it reads.
type WakeupFd = (Py<PyAny>, Option<Py<PyAny>>);

/// Shared state of a loop; libuv callbacks reach it through a `Weak`.
///
/// Locking rule: `q` and `uv_handles` are never held at the same time, and no
/// Python code runs (no call, no allocation of Python objects, no decref that
/// could free one) while either is held.
pub(crate) struct State {
    /// Declared before `uv` so the handles close before the loop is freed.
    uv_handles: GilCell<Option<UvHandles>>,
    uv: uv::Loop,
    q: GilCell<Queue>,
    gil: SavedThread,
    running: AtomicBool,
    stopping: AtomicBool,
    /// Whether the idle handle is started (the next poll will not block).
    idle_on: AtomicBool,
    closed: AtomicBool,
    debug: AtomicBool,
    /// `threading.get_ident()` of the thread running the loop, 0 when idle.
    thread_id: AtomicU64,
    /// The exception that stopped the loop (KeyboardInterrupt, SystemExit...).
    pending: GilCell<Option<PyErr>>,
    /// Borrowed pointer to the Python loop object while `_run_native` runs.
    pyself: AtomicPtr<ffi::PyObject>,
    /// fds watched by add_reader / add_writer.
    watchers: FdWatchers,
    /// The signal wakeup socket and its dispatcher, while it is watched.
    /// Held here rather than in the poll's callback, so that the loop's GC
    /// traversal reports them and unwatching releases them at once: a
    /// closed libuv handle frees its callback only when the loop runs again,
    /// and a dropped, never-closed loop never does.
    wakeup: GilCell<Option<WakeupFd>>,
    /// Transports and listeners with a handle on this loop (see `close`).
    owners: parking_lot::Mutex<Owners>,
    clock_resolution: f64,
    py_minor: u8,
    /// `create_task(coro, **kwargs)` passes every keyword through (3.13.3+).
    create_task_kwargs: bool,
    /// The `bytes` of the last small read, given back after the protocol
    /// dropped it: the next read of the same length fills it again instead
    /// of a malloc and a free (reads above glibc's 1 KiB per-thread cache
    /// cost about 600 instructions for those two).
    spare_bytes: GilCell<Option<Py<PyBytes>>>,
}

static FUTURE_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static TASK_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static FORMAT_CALLBACK_SOURCE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static EXTRACT_STACK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn cached<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || py.import(module)?.getattr(name).map(Bound::unbind))
        .map(|v| v.bind(py))
}

/// In debug mode, where a handle was created (`_source_traceback`), taken
/// as asyncio's Handle.__init__ does.
fn source_traceback(py: Python<'_>, debug: bool) -> PyResult<Option<Bound<'_, PyAny>>> {
    if !debug {
        return Ok(None);
    }
    let extract = cached(
        py,
        &EXTRACT_STACK,
        "asyncio.format_helpers",
        "extract_stack",
    )?;
    extract.call0().map(Some)
}

/// The context a handle runs in: the one given, else a copy of the current.
fn context_or_copy<'py>(
    py: Python<'py>,
    context: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    match context {
        Some(c) if !c.is_none() => Ok(c.clone()),
        _ => capi::copy_context(py),
    }
}

fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

pub(crate) fn must_leave_loop(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PyKeyboardInterrupt>(py) || e.is_instance_of::<PySystemExit>(py)
}

impl State {
    fn new(py: Python<'_>) -> PyResult<Arc<State>> {
        let uv = uv::Loop::new().map_err(uv_err)?;
        let clock_resolution: f64 = py
            .import("time")?
            .call_method1("get_clock_info", ("monotonic",))?
            .getattr("resolution")?
            .extract()?;
        let st = Arc::new(State {
            uv_handles: GilCell::new(None),
            uv,
            q: GilCell::new(Queue::default()),
            gil: SavedThread::new(),
            running: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            idle_on: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            thread_id: AtomicU64::new(0),
            wakeup: GilCell::new(None),
            pending: GilCell::new(None),
            pyself: AtomicPtr::new(std::ptr::null_mut()),
            watchers: FdWatchers::default(),
            owners: parking_lot::Mutex::new(Owners::default()),
            clock_resolution,
            py_minor: py.version_info().minor,
            create_task_kwargs: py.version_info() >= (3, 13, 3),
            spare_bytes: GilCell::new(None),
        });
        let hs = UvHandles::new(&st.uv, Arc::downgrade(&st)).map_err(uv_err)?;
        *st.uv_handles.lock() = Some(hs);
        Ok(st)
    }

    /// `close()` has run: libuv callbacks still draining (handles being
    /// closed) must not reach Python protocols or futures any more.
    /// `owner` holds a handle of this loop: `close()` will have it released.
    pub(crate) fn register_owner(&self, owner: Weak<dyn HandleOwner>) {
        let mut o = self.owners.lock();
        if o.list.len() >= o.prune_at {
            o.list.retain(|w| w.strong_count() > 0);
            o.prune_at = (o.list.len() * 2).max(64);
        }
        o.list.push(owner);
    }

    /// A `bytes` holding `data`: the spare one refilled when it has the
    /// same length, else a new one.
    pub(crate) fn bytes_for<'py>(&self, py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
        let spare = self.spare_bytes.lock().take().map(|b| b.into_bound(py));
        match spare {
            Some(b) if capi::refill_bytes(&b, data) => b,
            other => {
                *self.spare_bytes.lock() = other.map(Bound::unbind);
                PyBytes::new(py, data)
            }
        }
    }

    /// Keep `b` (from `bytes_for`) for the next read, if nobody else kept
    /// it and it is small; a larger one is freed as usual.
    pub(crate) fn recycle_bytes(&self, b: Bound<'_, PyBytes>) {
        if capi::bytes_unshared(&b) && b.as_bytes().len() <= SPARE_BYTES_MAX {
            let old = self.spare_bytes.lock().replace(b.unbind());
            drop(old);
        }
    }

    pub(crate) fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(closed_error())
        } else {
            Ok(())
        }
    }

    pub(crate) fn is_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    /// asyncio's `_check_thread` (debug mode only).
    fn check_thread(&self) -> PyResult<()> {
        let tid = self.thread_id.load(Ordering::Relaxed);
        if tid != 0 && tid != capi::thread_ident() {
            return Err(PyRuntimeError::new_err(
                "Non-thread-safe operation invoked on an event loop other than the current one",
            ));
        }
        Ok(())
    }

    fn on_loop_thread(&self) -> bool {
        self.thread_id.load(Ordering::Relaxed) == capi::thread_ident()
    }

    fn wake(&self) {
        if let Some(h) = self.uv_handles.lock().as_ref() {
            h.wake.send();
        }
    }

    /// The libuv loop (transports create their handles on it).
    pub(crate) fn uv(&self) -> &uv::Loop {
        &self.uv
    }

    /// Take the GIL back if the poll released it. Every libuv callback that
    /// touches Python calls this first.
    pub(crate) fn ensure_gil(&self) {
        self.gil.ensure();
    }

    /// Stop the loop with an exception that must leave `run_forever`.
    pub(crate) fn fail(&self, e: PyErr) {
        let mut p = self.pending.lock();
        if p.is_none() {
            *p = Some(e);
        }
        drop(p);
        self.uv.stop();
    }

    fn has_pending(&self) -> bool {
        self.pending.lock().is_some()
    }

    fn pyself<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let p = self.pyself.load(Ordering::Relaxed);
        if p.is_null() {
            None
        } else {
            // SAFETY: pyself is set only for the duration of `_run_native`,
            // whose caller holds a strong reference to the loop object.
            Some(unsafe { Bound::from_borrowed_ptr(py, p) })
        }
    }

    // ---- libuv callbacks -------------------------------------------------

    /// uv_prepare: about to poll. Release the GIL unless the poll is known
    /// not to block (the idle handle is started exactly when work is queued).
    /// `uv_backend_timeout()` cannot decide this: it answers 0 whenever fd
    /// watchers are waiting to be registered, even if the poll then blocks.
    fn on_prepare(&self) {
        self.watchers.verify_pending();
        if !self.idle_on.load(Ordering::Relaxed) {
            self.gil.release();
        }
    }

    /// uv_timer: the earliest Python timer may be due. Make sure the poll does
    /// not block, so the check phase runs at once and looks.
    fn on_timer(&self) {
        if let Some(h) = self.uv_handles.lock().as_ref() {
            h.idle.start();
            self.idle_on.store(true, Ordering::Relaxed);
        }
    }

    /// uv_check: one asyncio iteration's worth of callbacks.
    fn on_check(&self) {
        self.gil.ensure();
        // SAFETY: the GIL is held: ensure() restored it if the poll released it,
        // and otherwise this thread has held it since entering uv_run.
        let py = unsafe { Python::assume_attached() };
        self.watchers.sweep(py);
        if self.has_pending() {
            return;
        }
        // While no fd, timer or request of anyone else is registered with
        // libuv, a poll between two batches could not deliver any event (the
        // loop's check handle is its only referenced active handle; thread-safe
        // calls land in the ready queue directly), so run the next batch at
        // once, a bounded number of times, instead of paying an epoll_wait.
        for _ in 0..MAX_BATCHES_WITHOUT_POLL {
            if let Err(e) = self.run_once(py) {
                self.fail(e);
                return;
            }
            if self.stopping.load(Ordering::Relaxed) {
                self.uv.stop();
                break;
            }
            if self.q.lock().ready.is_empty() || self.uv.activity() != (1, 0) {
                break;
            }
        }
        self.schedule_next(py);
    }

    /// The signal wakeup fd is readable: drain it, run Python's signal
    /// handlers (KeyboardInterrupt surfaces here while the loop sleeps), then
    /// hand the signal numbers read to `on_data` (the loop's
    /// `add_signal_handler` dispatch), if any.
    fn on_wakeup_fd(&self) {
        self.gil.ensure();
        // SAFETY: as in on_check.
        let py = unsafe { Python::assume_attached() };
        let Some((sock, on_data)) = self
            .wakeup
            .lock()
            .as_ref()
            .map(|(s, d)| (s.clone_ref(py), d.as_ref().map(|d| d.clone_ref(py))))
        else {
            return;
        };
        let on_data = on_data.as_ref();
        // The socket is non-blocking; a failed read (EAGAIN) is harmless.
        let sock = sock.bind(py);
        let data = if sock.hasattr("recv").unwrap_or(false) {
            sock.call_method1("recv", (4096,)).ok()
        } else if let Ok(os) = py.import("os") {
            os.call_method1("read", (sock, 4096)).ok()
        } else {
            None
        };
        if let Err(e) = capi::check_signals(py) {
            self.fail(e);
        }
        if let (Some(cb), Some(data)) = (on_data, data) {
            if data.len().unwrap_or(0) > 0 {
                if let Err(e) = cb.bind(py).call1((data,)) {
                    self.fail(e);
                }
            }
        }
    }

    /// A watched fd is ready: queue its reader and/or writer handle.
    /// Register `obj` (a handle or a native reader) on `fd`.
    pub(crate) fn watchers_add(
        self: &Arc<Self>,
        fd: i64,
        side: Side,
        obj: Py<PyAny>,
    ) -> Result<(), crate::uv::UvError> {
        self.watchers.add(self, fd, side, obj)
    }

    /// Register a native op of socket `sock` as the reader of `fd`.
    pub(crate) fn watchers_add_op(
        self: &Arc<Self>,
        py: Python<'_>,
        fd: i64,
        obj: Py<PyAny>,
        sock: &Bound<'_, PyAny>,
    ) -> Result<(), crate::uv::UvError> {
        self.watchers
            .add_op(py, self, fd, Side::Reader, obj, Some(sock))
    }

    /// A native op finished: park its watch for the socket's next op.
    pub(crate) fn watchers_park(
        &self,
        fd: i64,
        obj: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
    ) -> bool {
        self.watchers.park(fd, obj, sock)
    }

    /// Unregister the native reader `obj` of `fd` if it is still there.
    pub(crate) fn watchers_remove_if(&self, fd: i64, obj: &Bound<'_, PyAny>) -> bool {
        self.watchers.remove_if(fd, Side::Reader, obj)
    }

    /// About to open a libuv handle on `fd`: drop a watch parked on it.
    pub(crate) fn evict_parked(&self, fd: i64) {
        self.watchers.evict(fd);
    }

    pub(crate) fn on_fd_ready(&self, fd: i64, status: i32, events: i32) {
        self.gil.ensure();
        // SAFETY: as in on_check.
        let py = unsafe { Python::assume_attached() };
        let Ok(t) = handles::types() else { return };
        let mut ready: Vec<Py<PyAny>> = Vec::new();
        for h in self.watchers.ready(py, fd, status, events) {
            // A native sock op completes right here; a handle is queued.
            if let Ok(op) = h.bind(py).cast::<super::sockops::SockRecv>() {
                op.get().on_ready(py);
            } else if let Ok(r) = h.bind(py).cast::<super::sockops::DatagramReader>() {
                r.get().on_ready(py);
            } else if !handles::is_cancelled(t, h.bind(py)) {
                ready.push(h);
            }
        }
        if !ready.is_empty() {
            self.q.lock().ready.extend(ready);
        }
    }

    // ---- the iteration -----------------------------------------------------

    fn time(&self, py: Python<'_>) -> PyResult<f64> {
        capi::monotonic(py)
    }

    fn run_once(&self, py: Python<'_>) -> PyResult<()> {
        let t = handles::types()?;
        // Read the clock only when there are timers to compare with it.
        let has_timers = self.q.lock().timers.next_when().is_some();
        let end = if has_timers {
            self.time(py)? + self.clock_resolution
        } else {
            f64::NEG_INFINITY
        };
        let mut dropped: Vec<Py<PyAny>> = Vec::new();
        let mut expired = 0usize;
        let mut batch = {
            let mut q = self.q.lock();
            if q.timers.should_compact() {
                let gone = q.timers.compact(|h| handles::is_cancelled(t, h.bind(py)));
                for h in &gone {
                    handles::mark_unscheduled(t, h.bind(py));
                    handles::release(t, h.bind(py));
                }
                dropped.extend(gone);
            }
            while let Some(e) = q.timers.pop_if(|w| w < end) {
                // The next timer's handle is cold (timers fire in deadline
                // order, not allocation order): start loading it now.
                if let Some(n) = q.timers.peek() {
                    capi::prefetch_object(n.as_ptr());
                }
                let h = e.handle.bind(py);
                handles::mark_unscheduled(t, h);
                if handles::is_cancelled(t, h) {
                    q.timers.forget_cancelled();
                    handles::release(t, h);
                    dropped.push(e.handle);
                } else {
                    q.ready.push_back(e.handle);
                    expired += 1;
                }
            }
            let spare = std::mem::take(&mut q.spare);
            std::mem::replace(&mut q.ready, spare)
        };
        drop(dropped);
        let debug = self.is_debug();
        let mut recycled: Vec<(Py<PyAny>, bool)> = Vec::new();
        // Expired timers are cold in the cache (they run in deadline order,
        // not the order they were made in); other handles were just queued.
        let prefetch = expired >= 16;
        while let Some(h) = batch.pop_front() {
            if prefetch {
                prefetch_ahead(t, &batch);
            }
            let hb = h.bind(py);
            if handles::is_cancelled(t, hb) {
                handles::release(t, hb);
                continue;
            }
            let res = if debug {
                self.run_handle_debug(py, t, hb)
            } else {
                self.run_handle(py, t, hb)
            };
            handles::release(t, hb);
            if let Err(e) = res {
                // Leave the rest of this batch queued, in order, as asyncio does
                // when an exception escapes _run_once.
                let mut q = self.q.lock();
                while let Some(x) = batch.pop_back() {
                    q.ready.push_front(x);
                }
                drop(q);
                drop(h);
                return Err(e);
            }
            if recycled.len() < 2 * FREE_HANDLES {
                if let Some(h) = handles::recycle(t, h, py) {
                    recycled.push(h);
                }
            }
        }
        let mut q = self.q.lock();
        if q.spare.capacity() < batch.capacity() {
            q.spare = batch;
        }
        let mut extra = Vec::new();
        for (h, is_timer) in recycled {
            let list = if is_timer {
                &mut q.free_timers
            } else {
                &mut q.free
            };
            if list.len() < FREE_HANDLES {
                list.push(h);
            } else {
                extra.push(h);
            }
        }
        drop(q);
        drop(extra);
        Ok(())
    }

    /// Run one handle; an ordinary exception goes to the exception handler.
    /// Returns Err only for exceptions that must leave the loop.
    #[inline]
    fn run_handle(&self, py: Python<'_>, t: &HandleTypes, h: &Bound<'_, PyAny>) -> PyResult<()> {
        match handles::run(t, h) {
            Ok(()) => Ok(()),
            Err(e) if must_leave_loop(py, &e) => Err(e),
            Err(e) => self.report_callback_error(py, t, h, e),
        }
    }

    fn run_handle_debug(
        &self,
        py: Python<'_>,
        t: &HandleTypes,
        h: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        // asyncio's default exception handler reports where the running handle
        // was created, from `loop._current_handle` (debug mode only).
        let me = self.pyself(py);
        if let Some(me) = &me {
            me.setattr(pyo3::intern!(py, "_current_handle"), h)?;
        }
        let t0 = self.time(py)?;
        let res = self.run_handle(py, t, h);
        let dt = self.time(py)? - t0;
        if let Some(me) = &me {
            me.setattr(pyo3::intern!(py, "_current_handle"), py.None())?;
        }
        res?;
        if let Some(me) = me {
            let limit: f64 = me.getattr("slow_callback_duration")?.extract()?;
            if dt >= limit {
                me.call_method1("_report_slow_callback", (h, dt))?;
            }
        }
        Ok(())
    }

    /// Build asyncio's context for an exception raised by a callback and hand
    /// it to `loop.call_exception_handler`.
    fn report_callback_error(
        &self,
        py: Python<'_>,
        t: &HandleTypes,
        h: &Bound<'_, PyAny>,
        e: PyErr,
    ) -> PyResult<()> {
        let Some(me) = self.pyself(py) else {
            return Err(e);
        };
        let (cb, args) = handles::callback_and_args(t, h);
        let fmt = cached(
            py,
            &FORMAT_CALLBACK_SOURCE,
            "asyncio.format_helpers",
            "_format_callback_source",
        )?;
        let src = if self.py_minor >= 13 {
            let kw = PyDict::new(py);
            kw.set_item("debug", self.is_debug())?;
            fmt.call((cb, args), Some(&kw))?
        } else {
            fmt.call1((cb, args))?
        };
        let ctx = PyDict::new(py);
        ctx.set_item("message", format!("Exception in callback {src}"))?;
        ctx.set_item("exception", e.into_value(py))?;
        ctx.set_item("handle", h)?;
        let stb = handles::source_traceback(t, h);
        if stb.is_truthy()? {
            ctx.set_item("source_traceback", stb)?;
        }
        me.call_method1("call_exception_handler", (ctx,))?;
        Ok(())
    }

    /// After a batch: keep polling without blocking while work is queued,
    /// otherwise arm the libuv timer for the earliest Python timer.
    fn schedule_next(&self, py: Python<'_>) {
        let Ok(t) = handles::types() else { return };
        let mut dropped = Vec::new();
        let (busy, next) = {
            let mut q = self.q.lock();
            // Drop cancelled timers at the head, as asyncio does before it
            // computes the poll timeout.
            while let Some(h) = q.timers.peek() {
                if !handles::is_cancelled(t, h.bind(py)) {
                    break;
                }
                if let Some(e) = q.timers.pop_if(|_| true) {
                    handles::mark_unscheduled(t, e.handle.bind(py));
                    handles::release(t, e.handle.bind(py));
                    q.timers.forget_cancelled();
                    dropped.push(e.handle);
                }
            }
            (!q.ready.is_empty(), q.timers.next_when())
        };
        drop(dropped);
        let busy = busy || self.stopping.load(Ordering::Relaxed);
        let now = if busy {
            0.0
        } else {
            self.time(py).unwrap_or(0.0)
        };
        let hs = self.uv_handles.lock();
        let Some(hs) = hs.as_ref() else { return };
        self.idle_on.store(busy, Ordering::Relaxed);
        if busy {
            hs.idle.start();
            return;
        }
        hs.idle.stop();
        match next {
            Some(when) => {
                let ms = ((when - now) * 1000.0).ceil();
                let ms = if ms.is_nan() || ms <= 0.0 {
                    0
                } else {
                    (ms as u64).min(MAX_TIMER_MS)
                };
                self.uv.update_time();
                hs.timer.start(ms);
            }
            None => hs.timer.stop(),
        }
    }
}

/// While one handle of a batch runs, start loading the next ones: the
/// handle after next, and the context of the next (its slot was loaded by
/// the previous call).
#[inline(always)]
fn prefetch_ahead(t: &HandleTypes, batch: &VecDeque<Py<PyAny>>) {
    if let Some(n) = batch.get(1) {
        capi::prefetch_object(n.as_ptr());
    }
    if let Some(n) = batch.front() {
        // SAFETY: every queued object is a registered handle instance
        // (asyncio layout) kept alive by the queue.
        let ctx = unsafe { capi::slot_get(n.as_ptr(), t.slots.context) };
        capi::prefetch(ctx as *const u8);
    }
}

/// Handles the loop drops without running them (loop close): what anyone
/// else still holds goes back under the GC (`handles::release`).
fn release_all<'a>(py: Python<'_>, hs: impl IntoIterator<Item = &'a Py<PyAny>>) {
    let Ok(t) = handles::types() else { return };
    for h in hs {
        handles::release(t, h.bind(py));
    }
}

fn uv_err(e: uv::UvError) -> PyErr {
    PyRuntimeError::new_err(format!("libuv: {e}"))
}

impl UvHandles {
    fn new(lp: &uv::Loop, st: Weak<State>) -> Result<UvHandles, uv::UvError> {
        let w = st.clone();
        let timer = uv::Timer::new(
            lp,
            Box::new(move || {
                if let Some(s) = w.upgrade() {
                    s.on_timer()
                }
            }),
        )?;
        let idle = uv::Idle::new(lp, Box::new(|| {}))?;
        let w = st.clone();
        let check = uv::Check::new(
            lp,
            Box::new(move || {
                if let Some(s) = w.upgrade() {
                    s.on_check()
                }
            }),
        )?;
        let w = st.clone();
        let prepare = uv::Prepare::new(
            lp,
            Box::new(move || {
                if let Some(s) = w.upgrade() {
                    s.on_prepare()
                }
            }),
        )?;
        // Queued handles are already in the ready queue; waking the poll is
        // all the async handle has to do.
        let wake = uv::Async::new(lp, Box::new(|| {}))?;
        wake.unref();
        check.start();
        prepare.start();
        timer.unref();
        idle.unref();
        prepare.unref();
        Ok(UvHandles {
            timer,
            idle,
            _check: check,
            _prepare: prepare,
            wake,
            wakeup_fd: None,
        })
    }
}

/// The native core of `uvrs.Loop`. See the module docs for the iteration.
#[pyclass(subclass, dict, weakref, frozen, module = "uvrs._uvrs")]
pub struct LoopCore {
    st: Arc<State>,
    task_factory: GilCell<Option<Py<PyAny>>>,
    loop_kwargs: GilCell<Option<Py<PyDict>>>,
}

impl LoopCore {
    #[allow(clippy::too_many_arguments)]
    fn schedule_timer<'py>(
        slf: &Bound<'py, Self>,
        when_obj: &Bound<'py, PyAny>,
        when: f64,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let st = &slf.get().st;
        st.check_closed()?;
        let debug = st.is_debug();
        if debug {
            st.check_thread()?;
            check_callback(callback, "call_at")?;
        }
        let stb = source_traceback(py, debug)?;
        let ctx = context_or_copy(py, context)?;
        let reuse = st.q.lock().free_timers.pop();
        let h = handles::new_timer_handle(
            reuse,
            when_obj,
            callback,
            args,
            slf.as_any(),
            &ctx,
            stb.as_ref(),
        )?;
        // A pending timer is kept alive by the heap (which the loop's GC
        // traversal reports), so the cyclic GC need not walk it or the
        // context copied for it: with many timers pending, that walk
        // dominated their cost. They stay untracked until the loop lets go
        // of them; then whatever anyone else holds is tracked again
        // (handles::release). A recycled handle is untracked already.
        capi::gc_untrack(&h);
        if handles::types()?.context_fields.is_some() && context.is_none_or(|c| c.is_none()) {
            capi::gc_untrack(&ctx);
        }
        st.q.lock().timers.push(when, h.clone().unbind());
        if !st.on_loop_thread() && st.running.load(Ordering::Relaxed) {
            st.wake();
        }
        Ok(h)
    }

    fn queue_handle<'py>(
        slf: &Bound<'py, Self>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<&Bound<'py, PyAny>>,
        debug_stack: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let st = &slf.get().st;
        let ctx = context_or_copy(py, context)?;
        let stb = source_traceback(py, debug_stack)?;
        let reuse = st.q.lock().free.pop();
        let h = handles::new_handle(reuse, callback, args, slf.as_any(), &ctx, stb.as_ref())?;
        st.q.lock().ready.push_back(h.clone().unbind());
        Ok(h)
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        Ok(LoopCore {
            st: State::new(py)?,
            task_factory: GilCell::new(None),
            loop_kwargs: GilCell::new(None),
        })
    }

    /// `time.monotonic()`'s clock, at full resolution.
    fn time(&self, py: Python<'_>) -> PyResult<f64> {
        self.st.time(py)
    }

    /// libuv's counters: (idle time in ns, or None unless measured,
    /// iterations, events, events already waiting). `Loop.metrics()` wraps
    /// them.
    fn _metrics(&self) -> (Option<u64>, u64, u64, u64) {
        let m = self.st.uv.metrics();
        let idle = uv::uv_loop::idle_time_wanted().then_some(m.idle_time_ns);
        (idle, m.loop_count, m.events, m.events_waiting)
    }

    /// Called before each garbage collection (`uvrs._loop`'s gc hook): for
    /// a loop that is not running, put the pending timers someone else holds
    /// back under the GC (`handles::track_if_shared`).
    fn _gc_track_shared(&self, py: Python<'_>) {
        if self.st.running.load(Ordering::Relaxed) {
            return;
        }
        let (Some(q), Ok(t)) = (self.st.q.try_lock(), handles::types()) else {
            return;
        };
        for h in q.ready.iter().chain(q.timers.iter()) {
            handles::track_if_shared(t, h.bind(py));
        }
    }

    /// Called by `TimerHandle.cancel()` before it marks itself cancelled.
    fn _timer_handle_cancelled(&self, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        let scheduled = handle
            .getattr(pyo3::intern!(handle.py(), "_scheduled"))?
            .is_truthy()?;
        if scheduled {
            self.st.q.lock().timers.note_cancelled();
        }
        Ok(())
    }

    fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let fut = cached(py, &FUTURE_TYPE, "asyncio.futures", "Future")?;
        fut.call((), Some(&slf.get().loop_kwargs(slf)?))
    }

    #[pyo3(signature = (coro, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.st.check_closed()?;
        let kwargs = kwargs.filter(|k| !k.is_empty());
        let factory = this.task_factory.lock().as_ref().map(|f| f.clone_ref(py));
        let minor = this.st.py_minor;
        if this.st.create_task_kwargs {
            // 3.13.3+: every keyword goes to the factory or to Task as given.
            return match factory {
                Some(f) => f.bind(py).call((slf, coro), kwargs),
                None => Self::new_task(slf, coro, kwargs),
            };
        }
        // 3.10-3.12: only name= (and context= from 3.11) are accepted.
        let mut name = None;
        let mut context = None;
        if let Some(kw) = kwargs {
            for (k, v) in kw.iter() {
                let k: String = k.extract()?;
                match k.as_str() {
                    "name" => name = Some(v),
                    "context" if minor >= 11 => context = Some(v),
                    _ => {
                        return Err(PyTypeError::new_err(format!(
                            "create_task() got an unexpected keyword argument '{k}'"
                        )))
                    }
                }
            }
        }
        let name = name.filter(|n| !n.is_none());
        let context = context.filter(|c| !c.is_none());
        match factory {
            None => Self::new_task(slf, coro, kwargs),
            Some(f) => {
                let task = match context {
                    None => f.bind(py).call1((slf, coro))?,
                    Some(c) => {
                        let kw = PyDict::new(py);
                        kw.set_item("context", c)?;
                        f.bind(py).call((slf, coro), Some(&kw))?
                    }
                };
                if minor == 13 {
                    // 3.13.0-3.13.2 call set_name(name) even when name is None.
                    task.call_method1("set_name", (name,))?;
                } else if let Some(n) = name {
                    task.call_method1("set_name", (n,))?;
                }
                Ok(task)
            }
        }
    }

    fn set_task_factory(&self, factory: &Bound<'_, PyAny>) -> PyResult<()> {
        if !factory.is_none() && !capi::is_callable(factory) {
            return Err(PyTypeError::new_err(
                "task factory must be a callable or None",
            ));
        }
        let new = (!factory.is_none()).then(|| factory.clone().unbind());
        let old = std::mem::replace(&mut *self.task_factory.lock(), new);
        drop(old);
        Ok(())
    }

    fn get_task_factory(&self, py: Python<'_>) -> Py<PyAny> {
        match self.task_factory.lock().as_ref() {
            Some(f) => f.clone_ref(py),
            None => py.None(),
        }
    }

    fn get_debug(&self) -> bool {
        self.st.is_debug()
    }

    fn _set_debug_flag(&self, enabled: bool) {
        self.st.debug.store(enabled, Ordering::Relaxed);
    }

    fn is_running(&self) -> bool {
        self.st.running.load(Ordering::Relaxed)
    }

    fn is_closed(&self) -> bool {
        self.st.closed.load(Ordering::Acquire)
    }

    /// asyncio loops expose this flag; some libraries and tests read it.
    #[getter]
    fn _closed(&self) -> bool {
        self.st.closed.load(Ordering::Acquire)
    }

    fn _check_closed(&self) -> PyResult<()> {
        self.st.check_closed()
    }

    /// Stop after the callbacks already queued have run once.
    fn stop(&self) {
        self.st.stopping.store(true, Ordering::Relaxed);
        if self.st.running.load(Ordering::Relaxed) && !self.st.on_loop_thread() {
            self.st.wake();
        }
    }

    /// Run libuv until `stop()`. Everything per-run that is not per-iteration
    /// (running-loop registration, async-generator hooks, wakeup fd) is done by
    /// the Python `run_forever` around this call.
    fn _run_native(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let st = &slf.get().st;
        st.check_closed()?;
        if st.running.swap(true, Ordering::AcqRel) {
            return Err(PyRuntimeError::new_err(
                "This event loop is already running",
            ));
        }
        st.thread_id.store(capi::thread_ident(), Ordering::Relaxed);
        st.pyself.store(slf.as_ptr(), Ordering::Relaxed);
        st.schedule_next(py);
        st.uv.run(uv::RunMode::Default);
        // uv_run returns only after uv_stop, from the check phase or a callback
        // after the poll, all of which re-acquire the GIL first; be certain.
        st.gil.ensure();
        st.pyself.store(std::ptr::null_mut(), Ordering::Relaxed);
        st.thread_id.store(0, Ordering::Relaxed);
        st.stopping.store(false, Ordering::Relaxed);
        st.running.store(false, Ordering::Release);
        match st.pending.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Drop queued callbacks and timers and close every libuv handle.
    fn _close_native(&self, py: Python<'_>) -> PyResult<()> {
        let st = &self.st;
        if st.running.load(Ordering::Relaxed) {
            return Err(PyRuntimeError::new_err("Cannot close a running event loop"));
        }
        if st.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (ready, timers, free) = st.q.lock().take_all();
        release_all(py, ready.iter().chain(&timers));
        drop((ready, timers, free));
        st.watchers.clear(py);
        let spare = st.spare_bytes.lock().take();
        drop(spare);
        let hs = st.uv_handles.lock().take();
        drop(hs);
        // Transports and servers still open: asyncio's close() closes the
        // selector under them; here their handles are closed, so that libuv
        // can close too. Their Python sockets stay open until they are
        // closed or collected, as on asyncio.
        let owners = std::mem::take(&mut st.owners.lock().list);
        for owner in owners.iter().filter_map(Weak::upgrade) {
            owner.release_handle();
        }
        // Gives the epoll fd & co. back now.
        st.uv.close();
        Ok(())
    }

    /// `add_reader(fd, callback, *args)` with an fd number (the Python layer
    /// resolves file objects).
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader<'py>(
        slf: &Bound<'py, Self>,
        fd: i64,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::add_watch(slf, fd, Side::Reader, callback, args)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer<'py>(
        slf: &Bound<'py, Self>,
        fd: i64,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::add_watch(slf, fd, Side::Writer, callback, args)
    }

    /// `sock_recv` fast path: the bytes now, or None after arranging for
    /// `fut` to get them (see `sockops`).
    fn _sock_recv(
        &self,
        py: Python<'_>,
        sock: &Bound<'_, PyAny>,
        n: isize,
        fut: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Py<PyAny>>> {
        self.st.check_closed()?;
        super::sockops::sock_recv(py, &self.st, sock, n, fut)
    }

    /// Read datagrams for `transport` from `sock` (fd `fd`) natively; the
    /// protocol's callbacks run in `context`.
    #[pyo3(signature = (fd, sock, transport, context=None))]
    fn _add_datagram_reader(
        slf: &Bound<'_, Self>,
        fd: i64,
        sock: &Bound<'_, PyAny>,
        transport: &Bound<'_, PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let st = &slf.get().st;
        st.check_closed()?;
        super::sockops::add_datagram_reader(
            slf.py(),
            st,
            slf.as_any(),
            fd,
            sock,
            transport,
            context,
        )
    }

    fn _remove_reader(&self, fd: i64) -> bool {
        self.st.watchers.remove(fd, Side::Reader)
    }

    fn _remove_writer(&self, fd: i64) -> bool {
        self.st.watchers.remove(fd, Side::Writer)
    }

    /// Watch the read end of `signal.set_wakeup_fd`: a non-blocking socket
    /// object (drained with `recv`), or on Unix its file descriptor number.
    /// `on_data(bytes)` receives the signal numbers read, if given.
    #[pyo3(signature = (sock, on_data=None))]
    fn _watch_wakeup_fd(
        &self,
        sock: &Bound<'_, PyAny>,
        on_data: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let fd: i64 = match sock.extract::<i64>() {
            Ok(fd) => fd,
            Err(_) => sock.call_method0("fileno")?.extract()?,
        };
        self.st.evict_parked(fd);
        let w = Arc::downgrade(&self.st);
        let poll = uv::Poll::new(
            &self.st.uv,
            fd as uv::poll::OsSock,
            Box::new(move |_status, _events| {
                if let Some(st) = w.upgrade() {
                    st.on_wakeup_fd();
                }
            }),
        )
        .map_err(uv_err)?;
        poll.start(uv::poll::READABLE).map_err(uv_err)?;
        poll.unref();
        let mut hs = self.st.uv_handles.lock();
        let old = match hs.as_mut() {
            Some(h) => h.wakeup_fd.replace(poll),
            None => return Err(closed_error()),
        };
        drop(hs);
        drop(old);
        let old = self
            .st
            .wakeup
            .lock()
            .replace((sock.clone().unbind(), on_data.map(Bound::unbind)));
        drop(old);
        Ok(())
    }

    fn _unwatch_wakeup_fd(&self) {
        let old = self
            .st
            .uv_handles
            .lock()
            .as_mut()
            .and_then(|h| h.wakeup_fd.take());
        drop(old);
        let held = self.st.wakeup.lock().take();
        drop(held);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(d) = self.loop_kwargs.try_lock() {
            if let Some(d) = d.as_ref() {
                visit.call(d)?;
            }
        }
        if let Some(f) = self.task_factory.try_lock() {
            if let Some(f) = f.as_ref() {
                visit.call(f)?;
            }
        }
        if let Some(w) = self.st.wakeup.try_lock() {
            if let Some((sock, on_data)) = w.as_ref() {
                visit.call(sock)?;
                visit.call(on_data)?;
            }
        }
        if let (Some(q), Ok(t)) = (self.st.q.try_lock(), handles::types()) {
            for h in q
                .ready
                .iter()
                .chain(q.timers.iter())
                .chain(q.free.iter())
                .chain(q.free_timers.iter())
            {
                handles::traverse_owned(t, h, &visit)?;
            }
        }
        let mut res = Ok(());
        self.st.watchers.for_each_handle(|h| {
            if res.is_ok() {
                res = visit.call(h);
            }
        });
        res?;
        Ok(())
    }

    fn __clear__(&self) {
        let kw = self.loop_kwargs.lock().take();
        drop(kw);
        let f = self.task_factory.lock().take();
        let w = self.st.wakeup.lock().take();
        drop(w);
        let (ready, timers, free) = self.st.q.lock().take_all();
        Python::attach(|py| release_all(py, ready.iter().chain(&timers)));
        drop((f, ready, timers, free));
    }
}

impl LoopCore {
    /// Register a reader or writer; returns its handle (as asyncio's private
    /// `_add_reader` does, so callers can tell whether it was replaced).
    fn add_watch<'py>(
        slf: &Bound<'py, Self>,
        fd: i64,
        side: Side,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let st = &slf.get().st;
        st.check_closed()?;
        let stb = source_traceback(py, st.is_debug())?;
        let ctx = capi::copy_context(py)?;
        let h = handles::new_handle(None, callback, args, slf.as_any(), &ctx, stb.as_ref())?;
        st.watchers
            .add(st, fd, side, h.clone().unbind())
            .map_err(|e| crate::transports::errors::os_error(py, e))?;
        Ok(h)
    }

    /// A timer of this loop is being cancelled (`_timer_handle_cancelled`).
    pub(crate) fn timer_cancelled(&self, t: &HandleTypes, handle: &Bound<'_, PyAny>) {
        if handles::is_scheduled(t, handle) {
            self.st.q.lock().timers.note_cancelled();
        }
    }

    pub(crate) fn debug(&self) -> bool {
        self.st.is_debug()
    }

    /// The shared loop state, for transports.
    pub(crate) fn state(&self) -> Arc<State> {
        self.st.clone()
    }

    /// `{'loop': self}`, built once: calling a type with keyword arguments
    /// through vectorcall would build a new kwargs dict on every call, while
    /// `PyObject_Call` hands this one to `__init__` as is (which only reads it).
    /// (`Future()` without `loop=` would look up the running loop instead,
    /// which costs a getpid() system call per call on CPython 3.11.)
    fn loop_kwargs<'py>(&self, slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        if let Some(d) = self.loop_kwargs.lock().as_ref() {
            return Ok(d.bind(py).clone());
        }
        let d = PyDict::new(py);
        d.set_item("loop", slf)?;
        *self.loop_kwargs.lock() = Some(d.clone().unbind());
        Ok(d)
    }

    /// `Task(coro, loop=self, **kwargs)`.
    fn new_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let task = cached(py, &TASK_TYPE, "asyncio.tasks", "Task")?;
        match kwargs {
            None => task.call((coro,), Some(&slf.get().loop_kwargs(slf)?)),
            Some(kw) => {
                let kw = kw.copy()?;
                kw.set_item("loop", slf)?;
                task.call((coro,), Some(&kw))
            }
        }
    }
}

/// The scheduling methods. They are not PyO3 methods: `register` installs
/// them on `LoopCore` as `METH_FASTCALL` descriptors whose argument check
/// (`capi::schedule_call`) is cheaper than PyO3's extractor for a
/// `(callback, *args, context=None)` signature: the micro-benchmark's
/// `call_soon` went from 1,124 to 1,080 instructions per callback.
impl LoopCore {
    pub(crate) fn call_soon<'py>(
        slf: &Bound<'py, Self>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::queue_checked(slf, callback, args, context, "call_soon", true)
    }

    pub(crate) fn call_soon_threadsafe<'py>(
        slf: &Bound<'py, Self>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = Self::queue_checked(slf, callback, args, context, "call_soon_threadsafe", false)?;
        let st = &slf.get().st;
        if !st.on_loop_thread() {
            st.wake();
        }
        Ok(h)
    }

    /// asyncio's checks of `method` (in debug mode, the thread check only
    /// where `on_loop_thread_only`: not for `call_soon_threadsafe`), then the
    /// handle is queued.
    fn queue_checked<'py>(
        slf: &Bound<'py, Self>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<&Bound<'py, PyAny>>,
        method: &str,
        on_loop_thread_only: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let st = &slf.get().st;
        st.check_closed()?;
        let debug = st.is_debug();
        if debug {
            if on_loop_thread_only {
                st.check_thread()?;
            }
            check_callback(callback, method)?;
        }
        Self::queue_handle(slf, callback, args, context, debug)
    }

    pub(crate) fn call_later<'py>(
        slf: &Bound<'py, Self>,
        delay: &Bound<'py, PyAny>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let now = slf.get().st.time(py)?;
        // `self.time() + delay`, exactly as asyncio computes it.
        let when_obj = handles::float(py, now).add(delay)?;
        let when: f64 = when_obj.extract()?;
        Self::schedule_timer(slf, &when_obj, when, callback, args, context)
    }

    pub(crate) fn call_at<'py>(
        slf: &Bound<'py, Self>,
        when: &Bound<'py, PyAny>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        let w: f64 = when.extract()?;
        Self::schedule_timer(slf, when, w, callback, args, context)
    }
}

/// The four scheduling methods' definitions: name, and a doc whose first
/// line is the `__text_signature__` CPython derives `inspect.signature` from.
static CALL_SOON: capi::FastMethod = capi::FastMethod::new(
    c"call_soon",
    c"call_soon($self, callback, *args, context=None)\n--\n\nArrange for callback(*args) to be called soon.",
    call_soon_fast,
);
static CALL_SOON_THREADSAFE: capi::FastMethod = capi::FastMethod::new(
    c"call_soon_threadsafe",
    c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\nLike call_soon(), from any thread.",
    call_soon_threadsafe_fast,
);
static CALL_LATER: capi::FastMethod = capi::FastMethod::new(
    c"call_later",
    c"call_later($self, delay, callback, *args, context=None)\n--\n\nArrange for callback(*args) to be called after delay seconds.",
    call_later_fast,
);
static CALL_AT: capi::FastMethod = capi::FastMethod::new(
    c"call_at",
    c"call_at($self, when, callback, *args, context=None)\n--\n\nArrange for callback(*args) to be called at loop time when.",
    call_at_fast,
);

/// The loop a scheduling method was called on.
fn this<'a, 'py>(slf: &'a Bound<'py, PyAny>) -> &'a Bound<'py, LoopCore> {
    // SAFETY: the scheduling methods are method descriptors of LoopCore
    // (see `register`), and CPython calls a method descriptor only with an
    // instance of its type (or a subclass) as self.
    unsafe { slf.cast_unchecked::<LoopCore>() }
}

/// A scheduling method's C function: `schedule_call` checks the arguments
/// against `$qualname($lead..., *args, context=None)`, then
/// `LoopCore::$method(loop, $lead..., args, context)` runs.
macro_rules! schedule_fn {
    ($func:ident, $method:ident, [$($lead:ident),+]) => {
        unsafe extern "C" fn $func(
            slf: *mut pyo3::ffi::PyObject,
            args: *const *mut pyo3::ffi::PyObject,
            nargs: pyo3::ffi::Py_ssize_t,
            kwnames: *mut pyo3::ffi::PyObject,
        ) -> *mut pyo3::ffi::PyObject {
            let qualname = concat!("LoopCore.", stringify!($method));
            // SAFETY: CPython calls this METH_FASTCALL | METH_KEYWORDS function
            // (a FastMethod's, installed by `register`) with the GIL held and
            // its arguments in that convention.
            unsafe {
                capi::schedule_call(slf, args, nargs, kwnames, qualname, &[$(stringify!($lead)),+], |slf, mut a| {
                    let mut lead = a.lead.iter_mut().map(|o| o.take().expect("checked by schedule_call"));
                    $(let $lead = lead.next().expect("one per name");)+
                    LoopCore::$method(this(slf), $(&$lead,)+ &a.args, a.context.as_ref()).map(Bound::unbind)
                })
            }
        }
    };
}

schedule_fn!(call_soon_fast, call_soon, [callback]);
schedule_fn!(call_soon_threadsafe_fast, call_soon_threadsafe, [callback]);
schedule_fn!(call_later_fast, call_later, [delay, callback]);
schedule_fn!(call_at_fast, call_at, [when, callback]);

/// Register the classes of this module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LoopCore>()?;
    let ty = m.py().get_type::<LoopCore>();
    for def in [&CALL_SOON, &CALL_SOON_THREADSAFE, &CALL_LATER, &CALL_AT] {
        ty.setattr(def.name(), def.descriptor(&ty)?)?;
    }
    Ok(())
}
