//! `uv_loop_t`: the libuv event loop itself.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use libuv_sys2 as sys;

use super::accounting::{self, Counter};
use super::error::UvError;

/// How `Loop::run` runs (libuv's `uv_run_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Run until `stop()` or until nothing keeps the loop alive.
    Default,
    /// Poll once (blocking if needed), run what is due.
    Once,
    /// Poll once without blocking.
    NoWait,
}

/// libuv's own counters for a loop (`uv_metrics_info`, `uv_metrics_idle_time`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Nanoseconds spent blocked in the kernel's poll, waiting for events.
    pub idle_time_ns: u64,
    /// Loop iterations (`uv_run` passes).
    pub loop_count: u64,
    /// Events the poll reported, and handed to callbacks.
    pub events: u64,
    /// Events that were already waiting when a poll returned.
    pub events_waiting: u64,
}

/// Whether loops measure their idle time (`UVRS_LOOP_METRICS=1`). Off by
/// default: libuv then polls once more, without blocking, before each poll
/// that would block (measured: pipe throughput halved).
pub fn idle_time_wanted() -> bool {
    std::env::var_os("UVRS_LOOP_METRICS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// An owned, initialised libuv loop. Its memory is on the heap so that handles
/// can keep pointers to it. `close` releases libuv's resources (epoll fd,
/// eventfd, io_uring) as soon as no handle is left; otherwise, and in any
/// case for the memory, that happens on drop.
pub struct Loop {
    raw: *mut sys::uv_loop_t,
    /// `uv_loop_close` has run: libuv must not be called on `raw` again.
    closed: AtomicBool,
    /// `uv_now` when the loop was closed (what `now` answers from then on).
    closed_now: AtomicU64,
    /// The counters when the loop was closed (what `metrics` answers then).
    closed_metrics: parking_lot::Mutex<Metrics>,
    /// `drain_closing` is running: a handle dropped by one of the close
    /// callbacks it runs must not start another `uv_run` inside it.
    draining: AtomicBool,
}

impl Loop {
    /// Allocate and initialise a new loop.
    pub fn new() -> Result<Loop, UvError> {
        let raw =
            Box::into_raw(Box::new(MaybeUninit::<sys::uv_loop_t>::zeroed())) as *mut sys::uv_loop_t;
        // SAFETY: `raw` points to writable, zeroed memory the size of a uv_loop_t.
        let rc = unsafe { sys::uv_loop_init(raw) };
        if rc < 0 {
            // SAFETY: raw came from Box::into_raw above and uv_loop_init failed,
            // so libuv holds no reference to it.
            drop(unsafe { Box::from_raw(raw as *mut MaybeUninit<sys::uv_loop_t>) });
            return Err(UvError(rc));
        }
        if idle_time_wanted() {
            // SAFETY: the loop was just initialised and has not run: the one
            // time libuv allows UV_METRICS_IDLE_TIME to be set. It takes no
            // argument; on failure idle time simply reads 0.
            unsafe { sys::uv_loop_configure(raw, sys::uv_loop_option_UV_METRICS_IDLE_TIME) };
        }
        accounting::add(Counter::Loop, 1);
        Ok(Loop {
            raw,
            closed: AtomicBool::new(false),
            closed_now: AtomicU64::new(0),
            closed_metrics: parking_lot::Mutex::new(Metrics::default()),
            draining: AtomicBool::new(false),
        })
    }

    /// The loop pointer, for a new handle: EBADF once the loop is closed.
    pub(crate) fn raw(&self) -> Result<*mut sys::uv_loop_t, UvError> {
        if self.is_closed() {
            return Err(UvError(sys::uv_errno_t_UV_EBADF));
        }
        Ok(self.raw)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Close every closing handle's callback, then release libuv's resources
    /// now if no handle is left (true). With handles left (false), drop does it.
    pub fn close(&self) -> bool {
        if self.is_closed() {
            return true;
        }
        if self.draining.load(Ordering::Acquire) {
            // Called from a close callback of the drain below: it finishes.
            return false;
        }
        self.drain_closing();
        if self.has_handles() {
            return false;
        }
        self.closed_now.store(self.now(), Ordering::Relaxed);
        *self.closed_metrics.lock() = self.metrics();
        // SAFETY: the loop is initialised, not running (the caller checks) and
        // has no handle left (has_handles above), so uv_loop_close succeeds
        // unless a request is in flight; then it returns EBUSY and frees nothing.
        let rc = unsafe { sys::uv_loop_close(self.raw) };
        if rc == 0 {
            self.closed.store(true, Ordering::Release);
            accounting::add(Counter::Loop, -1);
        }
        rc == 0
    }

    /// Run the loop. Returns libuv's result (non-zero if handles are still
    /// active, e.g. after `stop()`).
    pub fn run(&self, mode: RunMode) -> i32 {
        if self.is_closed() {
            return 0;
        }
        let m = match mode {
            RunMode::Default => sys::uv_run_mode_UV_RUN_DEFAULT,
            RunMode::Once => sys::uv_run_mode_UV_RUN_ONCE,
            RunMode::NoWait => sys::uv_run_mode_UV_RUN_NOWAIT,
        };
        // SAFETY: the loop is initialised and not yet closed (closing consumes
        // self). Re-entrant uv_run is prevented by the caller (one run at a time).
        unsafe { sys::uv_run(self.raw, m) }
    }

    /// Ask `run` to return after the current iteration.
    pub fn stop(&self) {
        if self.is_closed() {
            return;
        }
        // SAFETY: the loop is initialised; uv_stop only sets a flag.
        unsafe { sys::uv_stop(self.raw) }
    }

    /// libuv's cached loop time in milliseconds.
    pub fn now(&self) -> u64 {
        if self.is_closed() {
            return self.closed_now.load(Ordering::Relaxed);
        }
        // SAFETY: the loop is initialised.
        unsafe { sys::uv_now(self.raw) }
    }

    /// libuv's counters for this loop; their last values once it is closed.
    pub fn metrics(&self) -> Metrics {
        if self.is_closed() {
            return *self.closed_metrics.lock();
        }
        let mut info = MaybeUninit::<sys::uv_metrics_t>::zeroed();
        // SAFETY: the loop is initialised and not closed; info is writable
        // memory of the right type, which uv_metrics_info fills in.
        let rc = unsafe { sys::uv_metrics_info(self.raw, info.as_mut_ptr()) };
        if rc < 0 {
            return Metrics::default();
        }
        // SAFETY: uv_metrics_info succeeded and wrote every field; zeroed
        // memory is a valid uv_metrics_t in any case (integers and pointers).
        let info = unsafe { info.assume_init() };
        // SAFETY: the loop is initialised and not closed.
        let idle_time_ns = unsafe { sys::uv_metrics_idle_time(self.raw) };
        Metrics {
            idle_time_ns,
            loop_count: info.loop_count,
            events: info.events,
            events_waiting: info.events_waiting,
        }
    }

    /// Refresh the cached loop time.
    pub fn update_time(&self) {
        if self.is_closed() {
            return;
        }
        // SAFETY: the loop is initialised.
        unsafe { sys::uv_update_time(self.raw) }
    }

    /// The poll timeout libuv would use now, in ms (-1: infinite, 0: no wait).
    pub fn backend_timeout(&self) -> i32 {
        if self.is_closed() {
            return 0;
        }
        // SAFETY: the loop is initialised.
        unsafe { sys::uv_backend_timeout(self.raw) }
    }

    /// How many referenced handles are active, and how many requests
    /// (threadpool work, DNS, writes...) are in flight.
    pub fn activity(&self) -> (u32, u32) {
        if self.is_closed() {
            return (0, 0);
        }
        // SAFETY: the loop is initialised; active_handles and active_reqs are
        // public counters of uv_loop_t, read on the loop's own thread.
        unsafe { ((*self.raw).active_handles, (*self.raw).active_reqs.count) }
    }

    /// Whether any referenced handle or request is active.
    pub fn alive(&self) -> bool {
        if self.is_closed() {
            return false;
        }
        // SAFETY: the loop is initialised.
        unsafe { sys::uv_loop_alive(self.raw) != 0 }
    }

    /// Run the loop without blocking until every closing handle's close
    /// callback has run. Call after closing the handles, before dropping.
    pub fn drain_closing(&self) {
        if self.is_closed() || self.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        self.drain_passes();
        self.draining.store(false, Ordering::Release);
    }

    fn drain_passes(&self) {
        for _ in 0..64 {
            self.run(RunMode::NoWait);
            // SAFETY: the loop is initialised; uv_loop_close only inspects the
            // handle queue when it fails with EBUSY, and frees nothing then.
            // We do not call it here: walking is enough to know.
            if !self.has_handles() {
                break;
            }
        }
    }

    fn has_handles(&self) -> bool {
        if self.is_closed() {
            return false;
        }
        let mut count: usize = 0;
        unsafe extern "C" fn walk_cb(_h: *mut sys::uv_handle_t, arg: *mut std::ffi::c_void) {
            // SAFETY: arg is the &mut usize passed to uv_walk below, alive for the call.
            unsafe { *(arg as *mut usize) += 1 };
        }
        // SAFETY: the loop is initialised; walk_cb only increments the counter.
        unsafe { sys::uv_walk(self.raw, Some(walk_cb), &mut count as *mut usize as *mut _) };
        count > 0
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if !self.close() {
            // A handle is still open (a bug elsewhere): leak the loop memory
            // rather than free memory libuv still points into.
            return;
        }
        // SAFETY: uv_loop_close has succeeded (close above), so libuv holds no
        // reference to the memory: free the Box allocated in `new`.
        unsafe { drop(Box::from_raw(self.raw as *mut MaybeUninit<sys::uv_loop_t>)) };
    }
}

// SAFETY: a Loop is only driven (run/stop/handles) from the thread that runs it;
// the owner (the Python loop object) may be moved between threads while idle,
// which libuv allows. Cross-thread wakeups go through `Async::send` only.
unsafe impl Send for Loop {}
// SAFETY: see Send. Shared references are used only on the loop's own thread.
unsafe impl Sync for Loop {}
