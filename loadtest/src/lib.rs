//! Driving a running Crawbl stack from outside, as apps do: a Socket.IO client ([`sio`]),
//! REST helpers ([`rest`]), latency statistics ([`stats`]) and readings of server processes
//! ([`process`]). The `crawbl-load` binary runs
//! the benchmark scenarios; the end-to-end tests use the same client.

pub mod process;
pub mod rest;
pub mod sio;
pub mod stats;
