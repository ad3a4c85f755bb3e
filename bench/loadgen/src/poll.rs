//! Engine: non-blocking sockets multiplexed with poll(2) on one thread (Unix).
//!
//! With a thread per connection, every request costs the client a sleep and a
//! wake-up; here one `poll` call serves every connection that is ready, so the
//! client needs much less CPU for the same request rate.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use crate::conn::{fill, io_error_kind, ConnResult, Options, DONE};

mod sys {
    use std::os::raw::{c_int, c_short};

    #[repr(C)]
    pub struct PollFd {
        pub fd: c_int,
        pub events: c_short,
        pub revents: c_short,
    }

    // POSIX values, identical on Linux, macOS and the BSDs.
    pub const POLLIN: c_short = 0x1;
    pub const POLLOUT: c_short = 0x4;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    type NFds = std::os::raw::c_ulong;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    type NFds = std::os::raw::c_uint;

    extern "C" {
        fn poll(fds: *mut PollFd, nfds: NFds, timeout: c_int) -> c_int;
    }

    /// poll(2); `Ok(0)` on timeout or EINTR.
    pub fn poll_fds(fds: &mut [PollFd], timeout_ms: c_int) -> std::io::Result<usize> {
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()`
        // `struct pollfd` (same layout: int, short, short) for the whole call.
        let n = unsafe { poll(fds.as_mut_ptr(), fds.len() as NFds, timeout_ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(err)
        }
    }
}

struct Conn {
    stream: TcpStream,
    msg: Vec<u8>,
    echo: Vec<u8>,
    seq: u64,
    written: usize,
    read: usize,
    started: Instant,
    started_in: u8,
    last_progress: Instant,
    res: ConnResult,
}

impl Conn {
    fn start_request(&mut self, phase: &AtomicU8) {
        fill(&mut self.msg, self.seq);
        self.seq += 1;
        self.written = 0;
        self.read = 0;
        self.started = Instant::now();
        self.started_in = phase.load(Ordering::Relaxed);
    }

    /// Make as much progress as the socket allows. Err(kind) ends the connection.
    fn advance(&mut self, phase: &AtomicU8) -> Result<(), &'static str> {
        loop {
            if self.written < self.msg.len() {
                match self.stream.write(&self.msg[self.written..]) {
                    Ok(0) => return Err("eof"),
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_error_kind(&e)),
                }
                self.last_progress = Instant::now();
                continue;
            }
            match self.stream.read(&mut self.echo[self.read..]) {
                Ok(0) => return Err("eof"),
                Ok(n) => self.read += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error_kind(&e)),
            }
            self.last_progress = Instant::now();
            if self.read < self.echo.len() {
                continue;
            }
            if self.echo != self.msg {
                return Err("mismatch");
            }
            let micros = self.started.elapsed().as_micros();
            self.res.complete(self.started_in, phase, micros);
            if phase.load(Ordering::Relaxed) == DONE {
                return Ok(());
            }
            self.start_request(phase);
        }
    }
}

/// Drive `count` connections until the phase is DONE; one result per connection.
pub fn worker(opts: &Options, phase: &AtomicU8, count: usize) -> Vec<ConnResult> {
    let mut done = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..count {
        let stream = match TcpStream::connect_timeout(&opts.addr, opts.timeout()) {
            Ok(s) => s,
            Err(_) => {
                done.push(ConnResult::failed("connect"));
                continue;
            }
        };
        if stream
            .set_nodelay(true)
            .and(stream.set_nonblocking(true))
            .is_err()
        {
            done.push(ConnResult::failed("io"));
            continue;
        }
        let now = Instant::now();
        let mut c = Conn {
            stream,
            msg: vec![0u8; opts.size],
            echo: vec![0u8; opts.size],
            seq: 0,
            written: 0,
            read: 0,
            started: now,
            started_in: DONE,
            last_progress: now,
            res: ConnResult::default(),
        };
        c.start_request(phase);
        conns.push(c);
    }
    let stall = opts.timeout();
    let mut fds: Vec<sys::PollFd> = Vec::with_capacity(conns.len());
    while !conns.is_empty() && phase.load(Ordering::Relaxed) != DONE {
        fds.clear();
        fds.extend(conns.iter().map(|c| sys::PollFd {
            fd: c.stream.as_raw_fd(),
            events: if c.written < c.msg.len() {
                sys::POLLOUT
            } else {
                sys::POLLIN
            },
            revents: 0,
        }));
        // Wake at least every 50 ms to see the phase change and find stalls.
        if sys::poll_fds(&mut fds, 50).is_err() {
            for c in conns.iter_mut() {
                c.res.error = Some("io");
            }
            break;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < conns.len() {
            let mut outcome = Ok(());
            if fds[i].revents != 0 {
                outcome = conns[i].advance(phase);
            } else if now.duration_since(conns[i].last_progress) > stall {
                outcome = Err("stall");
            }
            if let Err(kind) = outcome {
                let mut c = conns.swap_remove(i);
                fds.swap_remove(i);
                c.res.error = Some(kind);
                done.push(c.res);
            } else {
                i += 1;
            }
        }
    }
    done.extend(conns.into_iter().map(|c| c.res));
    done
}
