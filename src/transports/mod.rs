//! Native transports: the per-byte, per-write work of asyncio's transports.
//! The Python wrappers (python/uvrs/_tcp.py) do the per-connection work.

pub mod errors;
pub mod server;
pub mod tcp;
pub mod tls;
