//! (Crawbl patch.) Heartbeats of every socket, checked by one task per engine.
//!
//! Upstream runs a task per socket with its own interval and a channel for pongs (~1.9 KB per
//! socket, most sockets being idle). Here each socket keeps three atomics, and the engine's one
//! task ([`crate::engine::EngineIo`]) walks the sockets a few times per ping interval: it sends the
//! pings that are due (v4) and closes the sockets whose client was not heard in time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use engineioxide_core::{Packet, ProtocolVersion};

use crate::socket::Socket;

/// Times are milliseconds since the engine's epoch (see `EngineIo::now`), never 0.
#[derive(Debug, Default)]
pub(crate) struct Heartbeat {
    /// When the next ping is due (v4), or by when the client must have pinged (v3); 0 until the
    /// heartbeat starts.
    next_at: AtomicU64,
    /// By when the pong to the last ping must have come (v4); 0 when none is awaited.
    pong_due_at: AtomicU64,
    /// The client was heard (a pong in v4, a ping in v3) since the last ping or check.
    heard: AtomicBool,
}

impl Heartbeat {
    /// Starts the heartbeat at `now`: the first ping (v4) or the client's first ping (v3) is
    /// due after `first`.
    pub(crate) fn start(&self, now: u64, first: u64) {
        self.next_at.store(now + first, Ordering::Release);
    }

    pub(crate) fn received(&self) {
        self.heard.store(true, Ordering::Release);
    }
}

/// What a check found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Alive,
    /// The client was not heard in time, or a ping could not be queued.
    Dead,
}

/// Checks `socket` at `now`, sending a ping if one is due (v4). `interval` and `timeout` are the
/// configured ping interval and timeout in milliseconds.
pub(crate) fn check<D>(socket: &Socket<D>, now: u64, interval: u64, timeout: u64) -> Verdict
where
    D: Default + Send + Sync + 'static,
{
    let heartbeat = &socket.heartbeat;
    let next_at = heartbeat.next_at.load(Ordering::Acquire);
    // Not started yet, or paused while the transport upgrades.
    if next_at == 0 || socket.is_upgrading() {
        return Verdict::Alive;
    }
    if socket.protocol == ProtocolVersion::V3 {
        // The client pings; it must do so every `interval`, answered within `timeout`.
        if now < next_at {
            return Verdict::Alive;
        }
        if heartbeat.heard.swap(false, Ordering::AcqRel) {
            heartbeat
                .next_at
                .store(now + interval + timeout, Ordering::Release);
            return Verdict::Alive;
        }
        return Verdict::Dead;
    }
    let pong_due_at = heartbeat.pong_due_at.load(Ordering::Acquire);
    if pong_due_at != 0 {
        if !heartbeat.heard.load(Ordering::Acquire) {
            return if now >= pong_due_at {
                Verdict::Dead
            } else {
                Verdict::Alive
            };
        }
        heartbeat.pong_due_at.store(0, Ordering::Release);
    }
    if now < next_at {
        return Verdict::Alive;
    }
    // Armed before the ping goes, so that a pong however quick is not missed.
    heartbeat.heard.store(false, Ordering::Release);
    heartbeat
        .pong_due_at
        .store(now + timeout, Ordering::Release);
    heartbeat.next_at.store(now + interval, Ordering::Release);
    match socket.send(Packet::Ping) {
        Ok(()) => Verdict::Alive,
        // A client that does not take what is sent is not heard either (as upstream).
        Err(_) => Verdict::Dead,
    }
}
