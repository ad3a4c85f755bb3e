//! The few plain OS calls uvrs makes itself, beside libuv (Unix only):
//! accepting connections on a listening socket, and telling whether an fd
//! still refers to the same open file.
//!
//! uvrs accepts on its own instead of through `uv_listen` because libuv,
//! when `accept()` fails with EMFILE, accepts and closes the pending
//! connections to stop the busy loop. asyncio leaves them in the backlog and
//! retries a second later, so no client loses its connection; uvrs does the
//! same.

use super::error::UvError;

/// An accepted socket: non-blocking and close-on-exec.
///
/// `Err` carries the libuv form of the errno (`EAGAIN` when nothing is
/// pending).
pub fn accept(listen_fd: i32) -> Result<i32, UvError> {
    loop {
        let fd = raw_accept(listen_fd);
        if fd >= 0 {
            return Ok(fd);
        }
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if errno == libc::EINTR {
            continue;
        }
        return Err(UvError(-errno));
    }
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
    target_os = "illumos",
    target_os = "solaris"
))]
fn raw_accept(listen_fd: i32) -> i32 {
    // SAFETY: accept4 with null address pointers only reads listen_fd; an
    // invalid fd makes it fail with EBADF, it cannot corrupt memory.
    unsafe {
        libc::accept4(
            listen_fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
    target_os = "illumos",
    target_os = "solaris"
)))]
fn raw_accept(listen_fd: i32) -> i32 {
    // SAFETY: as above; fcntl on the fd accept just returned is valid. The fd
    // is made non-blocking later by uv_tcp_open / uv_pipe_open.
    unsafe {
        let fd = libc::accept(listen_fd, std::ptr::null_mut(), std::ptr::null_mut());
        if fd >= 0 {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        fd
    }
}

/// Close an fd this process owns (one libuv never saw).
pub fn close(fd: i32) {
    // SAFETY: the caller owns fd and does not use it afterwards.
    unsafe { libc::close(fd) };
}

/// `recv(fd, buf, MSG_DONTWAIT)`: bytes read (0 at EOF), or the libuv form
/// of the errno (`EAGAIN` when nothing is there). Never blocks, whatever the
/// socket's mode.
pub fn recv(fd: i32, buf: &mut [u8]) -> Result<usize, UvError> {
    loop {
        // SAFETY: buf is valid for writes of buf.len() bytes for the call; an
        // invalid fd makes recv fail with EBADF.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if errno != libc::EINTR {
            return Err(UvError(-errno));
        }
    }
}

/// The identity (device, inode) of the open file `fd` refers to, or None if
/// `fd` is not open. Two different sockets never share one while both exist.
pub fn file_identity(fd: i32) -> Option<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: st is writable memory of the right type; fstat only writes it.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: fstat succeeded and filled the struct (zeroed memory is valid too).
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((st.st_dev as u64, st.st_ino as u64))
}
