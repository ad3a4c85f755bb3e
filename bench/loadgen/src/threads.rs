//! Engine: one thread per connection, blocking sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use crate::conn::{fill, io_error_kind, ConnResult, Options, DONE};

pub fn connection(opts: &Options, phase: &AtomicU8) -> ConnResult {
    let timeout = opts.timeout();
    let mut stream = match TcpStream::connect_timeout(&opts.addr, timeout) {
        Ok(s) => s,
        Err(_) => return ConnResult::failed("connect"),
    };
    let setup = stream
        .set_nodelay(true)
        .and_then(|_| stream.set_read_timeout(Some(timeout)))
        .and_then(|_| stream.set_write_timeout(Some(timeout)));
    if setup.is_err() {
        return ConnResult::failed("io");
    }
    let mut res = ConnResult::default();
    let mut msg = vec![0u8; opts.size];
    let mut echo = vec![0u8; opts.size];
    let mut seq = 0u64;
    loop {
        let started_in = phase.load(Ordering::Relaxed);
        if started_in == DONE {
            break;
        }
        fill(&mut msg, seq);
        seq += 1;
        let t0 = Instant::now();
        if let Err(e) = stream.write_all(&msg) {
            res.error = Some(io_error_kind(&e));
            break;
        }
        if let Err(e) = stream.read_exact(&mut echo) {
            res.error = Some(io_error_kind(&e));
            break;
        }
        if echo != msg {
            res.error = Some("mismatch");
            break;
        }
        res.complete(started_in, phase, t0.elapsed().as_micros());
    }
    res
}
