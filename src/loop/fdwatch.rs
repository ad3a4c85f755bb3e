//! `add_reader` / `add_writer` / `remove_reader` / `remove_writer`: one libuv
//! poll handle per watched fd, carrying asyncio handles for its reader and
//! writer. When the fd is ready, the handle is queued on the ready queue, as
//! asyncio's selector loop does, so it runs in the next batch.
//!
//! A native `sock_recv` (see `sockops`) that finishes *parks* its watch: the
//! poll keeps running, with no reader, so the socket's next `sock_recv` takes
//! it over without a single `epoll_ctl` (libuv implements `uv_poll_start` as
//! a DEL and an ADD, and closing as another DEL). A parked watch is torn down
//! after a loop iteration without a new op, as soon as its socket is seen
//! closed, and before uvrs opens any libuv handle on the same fd number
//! (`evict`): a closed socket's number can be reused, and libuv keeps one
//! watcher per fd number. The socket itself is never held open.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use pyo3::prelude::*;

use super::core::State;
use super::handles;
use crate::uv::{self, poll};

/// A finished native op's socket, still watched for a next op.
struct Parked {
    sock: Py<PyAny>,
    /// `FdWatchers::epoch` when parked.
    epoch: u64,
}

struct Watch {
    poll: uv::Poll,
    reader: Option<Py<PyAny>>,
    writer: Option<Py<PyAny>>,
    parked: Option<Parked>,
    /// The events the poll was last started with.
    started: i32,
    /// The identity of the file behind the fd when the poll was last
    /// (re)started (Unix), checked by `verify_pending`.
    ident: Option<(u64, u64)>,
}

impl Watch {
    fn events(&self) -> i32 {
        let mut ev = 0;
        if self.reader.is_some() || self.parked.is_some() {
            ev |= poll::READABLE | poll::DISCONNECT;
        }
        if self.writer.is_some() {
            ev |= poll::WRITABLE;
        }
        ev
    }

    /// Start (or restart) the poll if the wanted events changed. libuv
    /// applies the change at its next poll (Linux batches the epoll_ctl
    /// calls), so `fd` goes on the `pending` list for `verify_pending`.
    #[cfg_attr(not(unix), allow(unused_variables))]
    fn sync(&mut self, fd: i64, pending: &Mutex<Vec<i64>>) -> Result<(), uv::UvError> {
        let ev = self.events();
        if ev != self.started {
            self.poll.start(ev)?;
            self.started = ev;
            if ev != 0 {
                #[cfg(unix)]
                {
                    self.ident = uv::sys::file_identity(fd as i32);
                }
                pending.lock().push(fd);
            }
        }
        Ok(())
    }
}

/// The fds a loop watches.
#[derive(Default)]
pub struct FdWatchers {
    map: Mutex<HashMap<i64, Watch>>,
    /// Loop iterations seen by `sweep`.
    epoch: Mutex<u64>,
    parked: Mutex<usize>,
    /// fds whose poll was (re)started since the last `verify_pending`.
    pending: Mutex<Vec<i64>>,
}

/// Which side of a watch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Reader,
    Writer,
}

impl FdWatchers {
    /// Register `handle` as the reader or writer of `fd`, replacing (and
    /// cancelling) a previous one, as asyncio does.
    pub fn add(
        &self,
        st: &Arc<State>,
        fd: i64,
        side: Side,
        handle: Py<PyAny>,
    ) -> Result<(), uv::UvError> {
        Python::attach(|py| self.add_op(py, st, fd, side, handle, None))
    }

    /// `add`, for a native op on socket `sock`: a watch parked by an earlier
    /// op on the same, still open socket is taken over as it is.
    pub fn add_op(
        &self,
        py: Python<'_>,
        st: &Arc<State>,
        fd: i64,
        side: Side,
        handle: Py<PyAny>,
        sock: Option<&Bound<'_, PyAny>>,
    ) -> Result<(), uv::UvError> {
        // Python (fileno()) runs before the map is locked: it could call
        // back into the watchers.
        let sock_open = sock.is_some_and(|s| fileno(s) == fd);
        let mut map = self.map.lock();
        let watch = match map.entry(fd) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let w: Weak<State> = Arc::downgrade(st);
                let poll = uv::Poll::new(
                    st.uv(),
                    fd as poll::OsSock,
                    Box::new(move |status, events| {
                        if let Some(st) = w.upgrade() {
                            if !st.closed() {
                                st.on_fd_ready(fd, status, events);
                            }
                        }
                    }),
                )?;
                e.insert(Watch {
                    poll,
                    reader: None,
                    writer: None,
                    parked: None,
                    started: 0,
                    ident: None,
                })
            }
        };
        let mut unparked = None;
        if let Some(p) = watch.parked.take() {
            *self.parked.lock() -= 1;
            let same = sock_open && sock.is_some_and(|s| s.as_ptr() == p.sock.as_ptr());
            if !same {
                // Another file may have this number now: register afresh.
                watch.started = 0;
            }
            unparked = Some(p);
        }
        let old = match side {
            Side::Reader => watch.reader.replace(handle),
            Side::Writer => watch.writer.replace(handle),
        };
        if let Err(e) = watch.sync(fd, &self.pending) {
            // Leave no half-registered watch behind.
            match side {
                Side::Reader => watch.reader = old,
                Side::Writer => watch.writer = old,
            }
            if watch.events() == 0 {
                map.remove(&fd);
            }
            return Err(e);
        }
        drop(map);
        drop(unparked);
        if let Some(old) = old {
            cancel(py, old);
        }
        Ok(())
    }

    /// Unregister the reader or writer of `fd`; returns whether one was there.
    pub fn remove(&self, fd: i64, side: Side) -> bool {
        let mut map = self.map.lock();
        let Some(watch) = map.get_mut(&fd) else {
            return false;
        };
        let old = match side {
            Side::Reader => watch.reader.take(),
            Side::Writer => watch.writer.take(),
        };
        let Some(old) = old else {
            return false;
        };
        let gone = if watch.events() == 0 {
            map.remove(&fd)
        } else {
            let _ = watch.sync(fd, &self.pending);
            None
        };
        drop(map);
        drop(gone);
        Python::attach(|py| cancel(py, old));
        true
    }

    /// `remove(fd, side)` if `obj` is what is registered there.
    pub fn remove_if(&self, fd: i64, side: Side, obj: &Bound<'_, PyAny>) -> bool {
        {
            let map = self.map.lock();
            let Some(watch) = map.get(&fd) else {
                return false;
            };
            let cur = match side {
                Side::Reader => &watch.reader,
                Side::Writer => &watch.writer,
            };
            if cur.as_ref().map(|c| c.as_ptr()) != Some(obj.as_ptr()) {
                return false;
            }
        }
        self.remove(fd, side)
    }

    /// A native op `obj` on `sock` finished: if it is still the reader of
    /// `fd`, park the watch instead of tearing it down.
    pub fn park(&self, fd: i64, obj: &Bound<'_, PyAny>, sock: &Bound<'_, PyAny>) -> bool {
        let old = {
            let mut map = self.map.lock();
            let Some(watch) = map.get_mut(&fd) else {
                return false;
            };
            if watch.reader.as_ref().map(|c| c.as_ptr()) != Some(obj.as_ptr()) {
                return false;
            }
            let epoch = *self.epoch.lock();
            watch.parked = Some(Parked {
                sock: sock.clone().unbind(),
                epoch,
            });
            *self.parked.lock() += 1;
            watch.reader.take()
        };
        drop(old);
        true
    }

    /// Once per loop iteration: tear down parked watches left unused for a
    /// whole iteration or whose socket was closed.
    pub fn sweep(&self, py: Python<'_>) {
        let epoch = {
            let mut e = self.epoch.lock();
            *e += 1;
            *e
        };
        if *self.parked.lock() == 0 {
            return;
        }
        let parked: Vec<(i64, u64, Py<PyAny>)> = self
            .map
            .lock()
            .iter()
            .filter_map(|(fd, w)| {
                w.parked
                    .as_ref()
                    .map(|p| (*fd, p.epoch, p.sock.clone_ref(py)))
            })
            .collect();
        // fileno() outside the lock (see add_op).
        for (fd, parked_at, sock) in parked {
            if parked_at + 1 < epoch || fileno(sock.bind(py)) != fd {
                self.unpark(fd);
            }
        }
    }

    /// uvrs is about to open a libuv handle on `fd`: a watch parked on that
    /// number belongs to a socket closed since, and must go first.
    pub fn evict(&self, fd: i64) {
        if *self.parked.lock() > 0 {
            self.unpark(fd);
        }
    }

    /// Right before libuv polls (the prepare phase): every poll (re)started
    /// since the last poll has an epoll_ctl pending in libuv, which libuv
    /// aborts the process on if it fails. It fails when the fd was closed
    /// meanwhile (a user may close a socket whenever they like, e.g. right
    /// after a `sock_sendall` that waited for writability). Such a poll is
    /// stopped, which drops the pending change.
    #[cfg(unix)]
    pub fn verify_pending(&self) {
        let fds = std::mem::take(&mut *self.pending.lock());
        if fds.is_empty() {
            return;
        }
        let mut map = self.map.lock();
        for fd in fds {
            let Some(watch) = map.get_mut(&fd) else {
                continue;
            };
            if watch.started == 0 {
                continue;
            }
            let now = uv::sys::file_identity(fd as i32);
            if now.is_some() && now == watch.ident {
                continue;
            }
            // As with a selector, the closed file's registration is gone and
            // a new file with the same number is not watched until the watch
            // changes again (then it is registered afresh: started is 0).
            watch.poll.stop();
            watch.started = 0;
        }
    }

    /// Windows polls sockets through AFD, with no deferred registration.
    #[cfg(not(unix))]
    pub fn verify_pending(&self) {
        self.pending.lock().clear();
    }

    fn unpark(&self, fd: i64) {
        let (gone, parked) = {
            let mut map = self.map.lock();
            let Some(watch) = map.get_mut(&fd) else {
                return;
            };
            let Some(p) = watch.parked.take() else {
                return;
            };
            *self.parked.lock() -= 1;
            if watch.events() == 0 {
                (map.remove(&fd), Some(p))
            } else {
                watch.started = 0;
                let _ = watch.sync(fd, &self.pending);
                (None, Some(p))
            }
        };
        drop(gone);
        drop(parked);
    }

    /// The handles to run for a readiness event on `fd` (events is a libuv
    /// mask; an error status wakes both sides so they see the error).
    pub fn ready(&self, py: Python<'_>, fd: i64, status: i32, events: i32) -> Vec<Py<PyAny>> {
        let mut map = self.map.lock();
        let Some(watch) = map.get_mut(&fd) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(2);
        let err = status < 0;
        if err {
            // libuv stops a poll handle that saw POLLERR (e.g. a UDP socket's
            // ICMP error); a selector keeps watching, and the callbacks
            // consume the error. Watch again.
            watch.started = 0;
            let _ = watch.sync(fd, &self.pending);
        }
        if let Some(r) = &watch.reader {
            if err || events & (poll::READABLE | poll::DISCONNECT) != 0 {
                out.push(r.clone_ref(py));
            }
        }
        if let Some(w) = &watch.writer {
            if err || events & poll::WRITABLE != 0 {
                out.push(w.clone_ref(py));
            }
        }
        out
    }

    /// Drop every watch (loop close): the handles are cancelled.
    pub fn clear(&self, py: Python<'_>) {
        let all: Vec<Watch> = self.map.lock().drain().map(|(_, w)| w).collect();
        *self.parked.lock() = 0;
        for w in all {
            let Watch {
                poll,
                reader,
                writer,
                parked,
                ..
            } = w;
            drop(poll);
            drop(parked);
            for h in [reader, writer].into_iter().flatten() {
                cancel(py, h);
            }
        }
    }

    /// Every handle held (GC traversal); None if the lock is busy.
    pub fn for_each_handle(&self, mut f: impl FnMut(&Py<PyAny>)) {
        if let Some(map) = self.map.try_lock() {
            for w in map.values() {
                for h in [&w.reader, &w.writer].into_iter().flatten() {
                    f(h);
                }
                if let Some(p) = &w.parked {
                    f(&p.sock);
                }
            }
        }
    }
}

/// The socket's fd number now (-1 once closed or detached).
fn fileno(sock: &Bound<'_, PyAny>) -> i64 {
    sock.call_method0(pyo3::intern!(sock.py(), "fileno"))
        .and_then(|f| f.extract())
        .unwrap_or(-1)
}

fn cancel(py: Python<'_>, h: Py<PyAny>) {
    if let Ok(op) = h.bind(py).cast::<super::sockops::SockRecv>() {
        // A native sock op: its future stays pending, as asyncio's does;
        // the socket gets its I/O reference back.
        let _ = op.get().release(py);
        return;
    }
    let _ = handles::_cancel_handle(h.bind(py));
}
