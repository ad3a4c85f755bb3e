//! What every engine shares: options, the run phase, per-connection results.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// Run phases, stored in one `AtomicU8` that the main thread advances.
pub const WARMUP: u8 = 0;
pub const MEASURE: u8 = 1;
pub const DONE: u8 = 2;

pub struct Options {
    pub addr: SocketAddr,
    pub conns: usize,
    pub size: usize,
    pub duration: f64,
    pub warmup: f64,
    pub timeout: f64,
    pub threads: usize,
    pub engine: Engine,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One thread per connection, blocking sockets (portable).
    Threads,
    /// Few threads, non-blocking sockets multiplexed with poll(2) (Unix):
    /// far fewer context switches, so the client stays off the critical path.
    Poll,
}

impl Options {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }
}

/// What one connection did.
#[derive(Default)]
pub struct ConnResult {
    pub requests: u64,
    pub latencies_us: Vec<u32>,
    pub error: Option<&'static str>,
}

impl ConnResult {
    pub fn failed(kind: &'static str) -> Self {
        ConnResult {
            error: Some(kind),
            ..Default::default()
        }
    }

    /// Record a finished request if it started and ended inside the window.
    pub fn complete(&mut self, started_in: u8, phase: &AtomicU8, micros: u128) {
        if started_in == MEASURE && phase.load(Ordering::Relaxed) == MEASURE {
            self.requests += 1;
            self.latencies_us.push(micros.min(u32::MAX as u128) as u32);
        }
    }
}

pub fn io_error_kind(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::UnexpectedEof => "eof",
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "stall",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "reset"
        }
        _ => "io",
    }
}

/// The message for request `seq`: a byte pattern that differs between requests.
pub fn fill(buf: &mut [u8], seq: u64) {
    let start = (seq % 251) as usize;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = ((start + i) % 251) as u8;
    }
}
