//! Live-object accounting: how many libuv handles (by type), requests and
//! loops exist right now, across every loop of the process.
//!
//! The counters are always on (a relaxed atomic add where memory is
//! allocated or freed, next to a syscall) so the test suite can check after
//! every test that everything it opened is gone (`_uvrs._live_counts()`,
//! used by `tests/conftest.py`).

use std::sync::atomic::{AtomicIsize, Ordering};

use libuv_sys2 as sys;

/// One counter per libuv handle type (indexed by `uv_handle_type`).
const HANDLE_SLOTS: usize = 32;
static HANDLES: [AtomicIsize; HANDLE_SLOTS] = [const { AtomicIsize::new(0) }; HANDLE_SLOTS];

/// Request and loop counters.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    WriteReq = 0,
    ShutdownReq = 1,
    ConnectReq = 2,
    Loop = 3,
}
const COUNTER_NAMES: [&str; 4] = ["write_req", "shutdown_req", "connect_req", "loop"];
static COUNTERS: [AtomicIsize; 4] = [const { AtomicIsize::new(0) }; 4];

fn handle_slot(kind: sys::uv_handle_type) -> usize {
    (kind as usize).min(HANDLE_SLOTS - 1)
}

/// A handle of libuv type `kind` was initialised.
pub(crate) fn handle_opened(kind: sys::uv_handle_type) {
    HANDLES[handle_slot(kind)].fetch_add(1, Ordering::Relaxed);
}

/// A handle of libuv type `kind` was freed (its close callback ran).
pub(crate) fn handle_freed(kind: sys::uv_handle_type) {
    HANDLES[handle_slot(kind)].fetch_sub(1, Ordering::Relaxed);
}

pub(crate) fn add(c: Counter, delta: isize) {
    COUNTERS[c as usize].fetch_add(delta, Ordering::Relaxed);
}

/// Every non-zero counter, by name: `handle.<libuv type name>` for handles
/// (`handle.tcp`, `handle.poll`...), then the request and loop counters.
pub fn live_counts() -> Vec<(String, isize)> {
    let mut out = Vec::new();
    for (i, n) in HANDLES.iter().enumerate() {
        let n = n.load(Ordering::Relaxed);
        if n != 0 {
            out.push((format!("handle.{}", handle_type_name(i)), n));
        }
    }
    for (name, n) in COUNTER_NAMES.iter().zip(COUNTERS.iter()) {
        let n = n.load(Ordering::Relaxed);
        if n != 0 {
            out.push((name.to_string(), n));
        }
    }
    out
}

fn handle_type_name(i: usize) -> String {
    // SAFETY: uv_handle_type_name accepts any value and returns either NULL or
    // a pointer to a static NUL-terminated string.
    let p = unsafe { sys::uv_handle_type_name(i as sys::uv_handle_type) };
    if p.is_null() {
        return format!("type{i}");
    }
    // SAFETY: p is non-null and points to a static C string (see above).
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}
