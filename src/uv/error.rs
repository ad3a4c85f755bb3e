//! libuv error codes as a Rust error type.

use std::ffi::CStr;
use std::fmt;

/// A negative libuv status code (`UV_E*`), which maps to an errno on Unix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UvError(pub i32);

impl UvError {
    /// Turn a libuv return value into a `Result`: negative values are errors.
    pub fn check(code: i32) -> Result<i32, UvError> {
        if code < 0 {
            Err(UvError(code))
        } else {
            Ok(code)
        }
    }

    /// End of stream (`UV_EOF`).
    pub fn is_eof(&self) -> bool {
        self.0 == libuv_sys2::uv_errno_t_UV_EOF
    }

    /// The operation was cancelled (`UV_ECANCELED`), e.g. a write pending
    /// when its handle was closed.
    pub fn is_cancelled(&self) -> bool {
        self.0 == libuv_sys2::uv_errno_t_UV_ECANCELED
    }

    /// The symbolic name, e.g. `EBADF`.
    pub fn name(&self) -> String {
        // SAFETY: uv_err_name returns a pointer to a static NUL-terminated string
        // for known codes, and a leaked heap string for unknown ones; never null.
        unsafe { CStr::from_ptr(libuv_sys2::uv_err_name(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    /// The human-readable message, e.g. `bad file descriptor`.
    pub fn message(&self) -> String {
        // SAFETY: as for uv_err_name, uv_strerror never returns null.
        unsafe { CStr::from_ptr(libuv_sys2::uv_strerror(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    /// The OS errno equivalent (libuv's codes are `-errno` on Unix).
    pub fn errno(&self) -> i32 {
        // SAFETY: uv_translate_sys_error is not needed here: on Unix UV_E* = -errno;
        // on Windows libuv defines its own negative values, which we also negate.
        -self.0
    }
}

impl fmt::Display for UvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.message())
    }
}

impl std::error::Error for UvError {}
