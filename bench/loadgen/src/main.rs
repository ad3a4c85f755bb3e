//! Closed-loop TCP echo load generator (std only).
//!
//! Each of `--conns` connections sends one message of `--size` bytes, reads
//! the same number of bytes back, checks them, and repeats. Requests completed
//! during the `--duration` window (after `--warmup`) are counted. One JSON
//! object goes to stdout; the exit status is 2 if any error happened (refused
//! connection, EOF, stall, wrong echo).
//!
//! The run is bounded: a connection without progress for `--timeout` seconds
//! is an error, and the process ends at warmup + duration + timeout + 1 s even
//! if a thread is stuck.

mod conn;
#[cfg(unix)]
mod poll;
mod threads;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use conn::{ConnResult, Engine, Options, DONE, MEASURE, WARMUP};

const USAGE: &str = "\
usage: loadgen --addr HOST:PORT [--conns N] [--size BYTES] [--duration SECS]
               [--warmup SECS] [--timeout SECS] [--engine poll|threads] [--threads N]

Closed-loop TCP echo client: every connection sends a message, reads it back
in full, verifies it, and repeats. Prints one JSON object.

  --addr      server address (required)
  --conns     connections (default 10)
  --size      message size in bytes (default 1024)
  --duration  measured seconds (default 3)
  --warmup    seconds before measuring (default 0.5)
  --timeout   seconds without progress that count as a stall (default 5)
  --engine    poll: few threads multiplexing non-blocking sockets (Unix default)
              threads: one thread per connection, blocking sockets
  --threads   poll engine: threads sharing the connections (default 1)";

fn parse_args() -> Result<Options, String> {
    let mut addr = None;
    let mut opts = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        conns: 10,
        size: 1024,
        duration: 3.0,
        warmup: 0.5,
        timeout: 5.0,
        threads: 1,
        engine: if cfg!(unix) {
            Engine::Poll
        } else {
            Engine::Threads
        },
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let bad = |v: &str| format!("bad value for {name}: {v:?}");
        match name.as_str() {
            "--addr" => {
                let v = value()?;
                let resolved = v
                    .to_socket_addrs()
                    .map_err(|e| format!("--addr {v}: {e}"))?;
                addr = Some(resolved.into_iter().next().ok_or_else(|| bad(&v))?);
            }
            "--conns" | "-c" => {
                let v = value()?;
                opts.conns = v.parse().map_err(|_| bad(&v))?;
            }
            "--size" | "-s" => {
                let v = value()?;
                opts.size = v.parse().map_err(|_| bad(&v))?;
            }
            "--duration" | "-d" => {
                let v = value()?;
                opts.duration = v.parse().map_err(|_| bad(&v))?;
            }
            "--warmup" | "-w" => {
                let v = value()?;
                opts.warmup = v.parse().map_err(|_| bad(&v))?;
            }
            "--timeout" => {
                let v = value()?;
                opts.timeout = v.parse().map_err(|_| bad(&v))?;
            }
            "--threads" => {
                let v = value()?;
                opts.threads = v.parse().map_err(|_| bad(&v))?;
            }
            "--engine" => {
                let v = value()?;
                opts.engine = match v.as_str() {
                    "threads" => Engine::Threads,
                    "poll" if cfg!(unix) => Engine::Poll,
                    _ => return Err(bad(&v)),
                };
            }
            _ => return Err(format!("unknown argument {arg:?}\n\n{USAGE}")),
        }
    }
    opts.addr = addr.ok_or_else(|| format!("--addr is required\n\n{USAGE}"))?;
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if opts.conns == 0 || opts.size == 0 || opts.threads == 0 {
        return Err("--conns, --size and --threads must be > 0".into());
    }
    if !positive(opts.duration) || !positive(opts.timeout) {
        return Err("--duration and --timeout must be > 0".into());
    }
    if !(opts.warmup.is_finite() && opts.warmup >= 0.0) {
        return Err("--warmup must be >= 0".into());
    }
    Ok(opts)
}

/// Start the engine's threads; each sends its connections' results on `tx`.
fn spawn_engine(opts: &Arc<Options>, phase: &Arc<AtomicU8>, tx: mpsc::Sender<ConnResult>) {
    match opts.engine {
        Engine::Threads => {
            for _ in 0..opts.conns {
                let (opts, phase, tx) = (opts.clone(), phase.clone(), tx.clone());
                thread::spawn(move || {
                    let _ = tx.send(threads::connection(&opts, &phase));
                });
            }
        }
        #[cfg(unix)]
        Engine::Poll => {
            let workers = opts.threads.min(opts.conns);
            for w in 0..workers {
                // Spread the connections as evenly as possible.
                let count = opts.conns / workers + usize::from(w < opts.conns % workers);
                let (opts, phase, tx) = (opts.clone(), phase.clone(), tx.clone());
                thread::spawn(move || {
                    for r in poll::worker(&opts, &phase, count) {
                        let _ = tx.send(r);
                    }
                });
            }
        }
        #[cfg(not(unix))]
        Engine::Poll => unreachable!("the poll engine is Unix only"),
    }
}

fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(64);
        }
    };
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let (tx, rx) = mpsc::channel();
    spawn_engine(&opts, &phase, tx);

    thread::sleep(Duration::from_secs_f64(opts.warmup));
    phase.store(MEASURE, Ordering::Relaxed);
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs_f64(opts.duration));
    phase.store(DONE, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();

    // Engines finish their requests in flight; a stuck thread is given up on.
    let deadline = Instant::now() + Duration::from_secs_f64(opts.timeout + 1.0);
    let mut requests = 0u64;
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut finished = 0;
    while finished < opts.conns {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => {
                finished += 1;
                requests += r.requests;
                latencies.extend(r.latencies_us);
                if let Some(kind) = r.error {
                    *errors.entry(kind).or_default() += 1;
                }
            }
            Err(_) => break,
        }
    }
    if finished < opts.conns {
        *errors.entry("stuck").or_default() += (opts.conns - finished) as u64;
    }
    latencies.sort_unstable();
    let total_errors: u64 = errors.values().sum();
    let rps = requests as f64 / elapsed;
    let error_kinds = errors
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "{{\"addr\": \"{}\", \"engine\": \"{}\", \"conns\": {}, \"size\": {}, \
         \"duration_s\": {:.3}, \"requests\": {}, \"rps\": {:.1}, \"mib_per_s\": {:.2}, \
         \"latency_ms\": {{\"p50\": {:.3}, \"p90\": {:.3}, \"p99\": {:.3}, \"max\": {:.3}}}, \
         \"errors\": {}, \"error_kinds\": {{{}}}}}",
        opts.addr,
        match opts.engine {
            Engine::Poll => "poll",
            Engine::Threads => "threads",
        },
        opts.conns,
        opts.size,
        elapsed,
        requests,
        rps,
        rps * opts.size as f64 / (1024.0 * 1024.0),
        percentile_ms(&latencies, 50.0),
        percentile_ms(&latencies, 90.0),
        percentile_ms(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        total_errors,
        error_kinds,
    );
    // Exit now: a stuck thread must not keep the process alive.
    std::process::exit(if total_errors == 0 { 0 } else { 2 });
}
