//! `uv_tcp_t`: TCP sockets (listening, accepted and connecting).

use std::ffi::CString;
use std::ops::Deref;

use libuv_sys2 as sys;

use super::accounting::Counter;
use super::error::UvError;
use super::handle::HandleBox;
use super::stream::{new_req, run_done, take_req, Done, Handler, Stream};
use super::Loop;

/// A TCP handle: a `Stream` plus the TCP-only operations.
pub struct Tcp {
    s: Stream<sys::uv_tcp_t>,
}

impl Deref for Tcp {
    type Target = Stream<sys::uv_tcp_t>;
    fn deref(&self) -> &Self::Target {
        &self.s
    }
}

/// An IPv4 or IPv6 socket address in libuv's (C) form.
pub struct SockAddr {
    storage: sys::sockaddr_storage,
}

impl SockAddr {
    /// Parse a numeric host (`127.0.0.1`, `::1`) with port, and for IPv6 the
    /// flow info and scope id of Python's 4-tuple addresses.
    pub fn new(host: &str, port: u16, flowinfo: u32, scope_id: u32) -> Result<SockAddr, UvError> {
        let c = CString::new(host).map_err(|_| UvError(sys::uv_errno_t_UV_EINVAL))?;
        // SAFETY: sockaddr_storage is plain old data, valid when zeroed.
        let mut storage: sys::sockaddr_storage = unsafe { std::mem::zeroed() };
        let p = &mut storage as *mut sys::sockaddr_storage;
        if host.contains(':') {
            // SAFETY: p points to storage large enough for a sockaddr_in6; c is a
            // NUL-terminated string; the fields written are sockaddr_in6's own.
            unsafe {
                let a = p as *mut sys::sockaddr_in6;
                UvError::check(sys::uv_ip6_addr(c.as_ptr(), port as i32, a))?;
                (*a).sin6_flowinfo = flowinfo.to_be();
                #[cfg(unix)]
                {
                    (*a).sin6_scope_id = scope_id;
                }
                // Windows' SOCKADDR_IN6 keeps the scope id in a union.
                #[cfg(windows)]
                {
                    (*a).__bindgen_anon_1.sin6_scope_id = scope_id;
                }
            }
        } else {
            // SAFETY: as above, for a sockaddr_in.
            UvError::check(unsafe {
                sys::uv_ip4_addr(c.as_ptr(), port as i32, p as *mut sys::sockaddr_in)
            })?;
        }
        Ok(SockAddr { storage })
    }

    fn as_ptr(&self) -> *const sys::sockaddr {
        &self.storage as *const sys::sockaddr_storage as *const sys::sockaddr
    }
}

impl Tcp {
    /// A new, unopened TCP handle on `lp`; `handler` receives its events.
    pub fn new(lp: &Loop, handler: Handler) -> Result<Tcp, UvError> {
        let raw_loop = lp.raw()?;
        // SAFETY: raw_loop is initialised and outlives the handle; p is zeroed.
        let h = HandleBox::init(handler, |p| unsafe { sys::uv_tcp_init(raw_loop, p) })?;
        Ok(Tcp { s: Stream { h } })
    }

    /// Adopt an existing socket. The handle owns it from now on and closes it
    /// when the handle is closed.
    pub fn open(&self, sock: super::poll::OsSock) -> Result<(), UvError> {
        // SAFETY: the handle is initialised and has no socket yet.
        UvError::check(unsafe { sys::uv_tcp_open(self.s.h.raw(), sock) }).map(|_| ())
    }

    /// Set or clear TCP_NODELAY.
    pub fn nodelay(&self, on: bool) -> Result<(), UvError> {
        // SAFETY: the handle is initialised and open.
        UvError::check(unsafe { sys::uv_tcp_nodelay(self.s.h.raw(), on as i32) }).map(|_| ())
    }

    /// Connect to `addr`; `done` runs with the outcome.
    pub fn connect(&self, addr: &SockAddr, done: Done) -> Result<(), UvError> {
        let req = new_req::<sys::uv_connect_t>(done, Counter::ConnectReq);
        // SAFETY: req is a fresh request from new_req, reclaimed once: in
        // connect_cb, or here on failure. addr is copied by libuv during the call.
        unsafe {
            let rc = sys::uv_tcp_connect(req, self.s.h.raw(), addr.as_ptr(), Some(connect_cb));
            if rc < 0 {
                drop(take_req(req, Counter::ConnectReq));
                return Err(UvError(rc));
            }
        }
        Ok(())
    }
}

unsafe extern "C" fn connect_cb(req: *mut sys::uv_connect_t, st: i32) {
    // SAFETY: req was made by new_req in Tcp::connect; libuv is done with it.
    let done = unsafe { take_req(req, Counter::ConnectReq) };
    run_done(done, st);
}
