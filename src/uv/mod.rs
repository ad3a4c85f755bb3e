//! Safe wrappers over libuv. This module knows nothing about Python.
//!
//! Every libuv FFI call of the project lives under `src/uv`, and each `unsafe`
//! block carries a `// SAFETY:` comment naming the invariant it relies on.
//! One module per libuv handle type, as libuv and uvloop arrange theirs.

pub mod accounting;
pub mod check;
pub mod error;
pub mod handle;
pub mod idle;
pub mod pipe;
pub mod poll;
pub mod prepare;
pub mod stream;
#[cfg(unix)]
pub mod sys;
pub mod tcp;
pub mod timer;
pub mod uv_async;
pub mod uv_loop;

pub use check::Check;
pub use error::UvError;
pub use idle::Idle;
pub use pipe::Pipe;
pub use poll::Poll;
pub use prepare::Prepare;
pub use stream::{AnyStream, Stream, StreamHandler};
pub use tcp::{SockAddr, Tcp};
pub use timer::Timer;
pub use uv_async::Async;
pub use uv_loop::{Loop, RunMode};

/// libuv's monotonic high-resolution clock, in nanoseconds.
#[cfg_attr(any(windows, target_vendor = "apple"), allow(dead_code))]
pub fn hrtime() -> u64 {
    // SAFETY: uv_hrtime has no preconditions; it reads the OS monotonic clock.
    unsafe { libuv_sys2::uv_hrtime() }
}

/// The libuv version compiled in, as (major, minor, patch).
pub fn version() -> (u32, u32, u32) {
    // SAFETY: uv_version has no preconditions.
    let v = unsafe { libuv_sys2::uv_version() };
    ((v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
}
