//! Ownership of libuv handle memory, shared by every handle type.
//!
//! A handle's memory (`uv_xxx_t`) and the Rust callback attached to it live on
//! the heap. They are freed only in libuv's close callback, never before: libuv
//! keeps pointers to a handle until then. Closing consumes the Rust owner, so a
//! handle cannot be closed twice.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};

use libuv_sys2 as sys;

use super::accounting;
use super::error::UvError;

/// What `uv_handle_t.data` points to: a type-erased destructor first, so the
/// close callback can free the payload without knowing its type.
#[repr(C)]
struct Slot<D> {
    drop_fn: unsafe fn(*mut c_void),
    payload: D,
}

unsafe fn drop_slot<D>(p: *mut c_void) {
    // SAFETY: p was produced by Box::into_raw(Box<Slot<D>>) in HandleBox::init
    // and is freed exactly once, here.
    drop(unsafe { Box::from_raw(p as *mut Slot<D>) });
}

/// Owner of one initialised libuv handle of raw type `H` with callback data `D`.
/// Transparent over the pointer, so a `Stream<H>` can be viewed as a
/// `Stream<uv_stream_t>` (see `Stream::erase`).
#[repr(transparent)]
pub(crate) struct HandleBox<H> {
    ptr: *mut H,
}

impl<H> HandleBox<H> {
    /// Allocate zeroed handle memory, attach `data`, and run libuv's init
    /// function on it. On failure everything is freed at once.
    pub(crate) fn init<D>(
        data: D,
        init: impl FnOnce(*mut H) -> i32,
    ) -> Result<HandleBox<H>, UvError> {
        let ptr = Box::into_raw(Box::new(MaybeUninit::<H>::zeroed())) as *mut H;
        let rc = init(ptr);
        if rc < 0 {
            // SAFETY: init failed, so libuv holds no pointer to the memory.
            drop(unsafe { Box::from_raw(ptr as *mut MaybeUninit<H>) });
            return Err(UvError(rc));
        }
        let slot = Box::into_raw(Box::new(Slot {
            drop_fn: drop_slot::<D>,
            payload: data,
        }));
        // SAFETY: ptr is an initialised handle; every uv_xxx_t starts with the
        // uv_handle_t fields, so the cast is valid; data is ours to set.
        unsafe {
            let h = ptr as *mut sys::uv_handle_t;
            (*h).data = slot as *mut c_void;
            accounting::handle_opened((*h).type_);
        }
        Ok(HandleBox { ptr })
    }

    pub(crate) fn raw(&self) -> *mut H {
        self.ptr
    }

    pub(crate) fn as_handle(&self) -> *mut sys::uv_handle_t {
        self.ptr as *mut sys::uv_handle_t
    }

    /// Whether the handle is active (started).
    pub(crate) fn is_active(&self) -> bool {
        // SAFETY: the handle is initialised and not closed (close consumes self).
        unsafe { sys::uv_is_active(self.as_handle()) != 0 }
    }

    /// Stop the handle from keeping the loop alive.
    pub(crate) fn unref(&self) {
        // SAFETY: the handle is initialised and not closed.
        unsafe { sys::uv_unref(self.as_handle()) }
    }
}

// SAFETY: libuv handles are not thread-safe, but a HandleBox may change owner
// between threads: uvrs keeps each loop's handles behind its loop's mutex and
// operates them only from the thread running that loop (or, when the loop is
// not running, from whichever thread holds the loop object). The only
// cross-thread operation, uv_async_send, is thread-safe by libuv's contract.
unsafe impl<H> Send for HandleBox<H> {}

impl<H> Drop for HandleBox<H> {
    fn drop(&mut self) {
        // SAFETY: the handle is initialised and has not been closed (this is the
        // only place that closes it, and it runs once). Memory and payload are
        // freed by close_cb once libuv is done with them.
        unsafe { sys::uv_close(self.as_handle(), Some(close_cb::<H>)) }
    }
}

unsafe extern "C" fn close_cb<H>(h: *mut sys::uv_handle_t) {
    // SAFETY: libuv calls this once, after the last use of the handle. data is
    // the Slot set in init (its first field is the destructor), and h is the
    // Box<MaybeUninit<H>> allocated there.
    unsafe {
        accounting::handle_freed((*h).type_);
        let data = (*h).data;
        if !data.is_null() {
            let drop_fn = *(data as *const unsafe fn(*mut c_void));
            drop_fn(data);
        }
        drop(Box::from_raw(h as *mut MaybeUninit<H>));
    }
}

/// Call the payload of a handle's Slot. Panics must not cross into C: a
/// panicking callback is reported on stderr and otherwise ignored.
///
/// # Safety
/// `h` must be a live handle initialised by `HandleBox::init` with payload `D`.
pub(crate) unsafe fn with_payload<D>(h: *mut sys::uv_handle_t, f: impl FnOnce(&mut D)) {
    // SAFETY: per the contract above data points to a live Slot<D>; libuv does
    // not re-enter a handle's callback, so the &mut is unique.
    let slot = unsafe { &mut *((*h).data as *mut Slot<D>) };
    if catch_unwind(AssertUnwindSafe(|| f(&mut slot.payload))).is_err() {
        eprintln!("uvrs: a panic in a libuv callback was caught");
    }
}

/// Callback type of handles whose callback takes no arguments.
pub type Callback = Box<dyn FnMut()>;

/// Generates a wrapper for a libuv handle whose callback takes no arguments
/// (`uv_timer_t`, `uv_idle_t`, `uv_check_t`, `uv_prepare_t`).
macro_rules! simple_handle {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $init:path, $stop:path) => {
        $(#[$doc])*
        pub struct $name {
            h: $crate::uv::handle::HandleBox<$raw>,
        }

        impl $name {
            /// Initialise the handle on `lp`; `cb` runs each time it fires.
            pub fn new(
                lp: &$crate::uv::Loop,
                cb: $crate::uv::handle::Callback,
            ) -> Result<Self, $crate::uv::UvError> {
                let raw_loop = lp.raw()?;
                // SAFETY: raw_loop is an initialised loop that outlives its handles
                // (the owner closes handles before the loop); p is zeroed memory.
                let h = $crate::uv::handle::HandleBox::init(cb, |p| unsafe { $init(raw_loop, p) })?;
                Ok($name { h })
            }

            unsafe extern "C" fn trampoline(p: *mut $raw) {
                // SAFETY: p is this handle, initialised with a Callback payload.
                unsafe {
                    $crate::uv::handle::with_payload::<$crate::uv::handle::Callback>(
                        p as *mut libuv_sys2::uv_handle_t,
                        |cb| cb(),
                    )
                }
            }

            /// Whether the handle is started.
            pub fn is_active(&self) -> bool {
                self.h.is_active()
            }

            /// Stop the handle from keeping the loop alive.
            pub fn unref(&self) {
                self.h.unref()
            }

            /// Stop the handle (no-op if stopped).
            pub fn stop(&self) {
                // SAFETY: the handle is initialised and not closed.
                unsafe { $stop(self.h.raw()) };
            }
        }
    };
}
pub(crate) use simple_handle;
