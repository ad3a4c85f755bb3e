//! `add_reader` / `add_writer` / `remove_reader` / `remove_writer`: one libuv
//! poll handle per watched fd, carrying asyncio handles for its reader and
//! writer. When the fd is ready, the handle is queued on the ready queue, as
//! asyncio's selector loop does, so it runs in the next batch.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use pyo3::prelude::*;

use super::core::State;
use super::handles;
use crate::uv::{self, poll};

struct Watch {
    poll: uv::Poll,
    reader: Option<Py<PyAny>>,
    writer: Option<Py<PyAny>>,
}

impl Watch {
    fn events(&self) -> i32 {
        let mut ev = 0;
        if self.reader.is_some() {
            ev |= poll::READABLE | poll::DISCONNECT;
        }
        if self.writer.is_some() {
            ev |= poll::WRITABLE;
        }
        ev
    }
}

/// The fds a loop watches.
#[derive(Default)]
pub struct FdWatchers {
    map: Mutex<HashMap<i64, Watch>>,
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
                            st.on_fd_ready(fd, status, events);
                        }
                    }),
                )?;
                e.insert(Watch {
                    poll,
                    reader: None,
                    writer: None,
                })
            }
        };
        let old = match side {
            Side::Reader => watch.reader.replace(handle),
            Side::Writer => watch.writer.replace(handle),
        };
        let res = watch.poll.start(watch.events());
        if res.is_err() {
            // Leave no half-registered watch behind.
            match side {
                Side::Reader => watch.reader = old,
                Side::Writer => watch.writer = old,
            }
            if watch.events() == 0 {
                map.remove(&fd);
            }
            return res;
        }
        drop(map);
        if let Some(old) = old {
            Python::attach(|py| cancel(py, old));
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
        let ev = watch.events();
        let gone = if ev == 0 {
            map.remove(&fd)
        } else {
            let _ = watch.poll.start(ev);
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

    /// The handles to run for a readiness event on `fd` (events is a libuv
    /// mask; an error status wakes both sides so they see the error).
    pub fn ready(&self, py: Python<'_>, fd: i64, status: i32, events: i32) -> Vec<Py<PyAny>> {
        let map = self.map.lock();
        let Some(watch) = map.get(&fd) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(2);
        let err = status < 0;
        if err {
            // libuv stops a poll handle that saw POLLERR (e.g. a UDP socket's
            // ICMP error); a selector keeps watching, and the callbacks
            // consume the error. Watch again.
            let _ = watch.poll.start(watch.events());
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
        for w in all {
            let Watch {
                poll,
                reader,
                writer,
            } = w;
            drop(poll);
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
            }
        }
    }
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
