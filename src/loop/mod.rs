//! The asyncio-facing core: the `LoopCore` Python class, its ready queue,
//! timer heap, handle dispatch and GIL hand-off.

pub mod callback_check;
pub mod capi;
pub mod core;
pub mod fdwatch;
pub mod gil;
pub mod handles;
pub mod sockops;
pub mod timers;
