//! Putting events on this node's sockets, and what happens to a socket that cannot keep up.
//!
//! Every socket has a bounded buffer of outgoing packets ([`super::MAX_BUFFERED_PACKETS`]);
//! socketioxide refuses a packet when it is full instead of growing it. Volatile events are
//! broadcast to the room, and a socket whose buffer is full simply misses them. A durable event
//! is emitted to each socket of the room separately, because a broadcast does not say which
//! socket refused it: a socket that refuses one would have a hole in its sequence, so it is
//! evicted ([`evict`]): it leaves its rooms, is told why (`sync.lagged`) and is disconnected, and
//! reconnects with `auth.since` to get what it missed from the log.

use std::time::Duration;

use crawbl_proto::events::v1::Event;
use serde::Serialize;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide::{BroadcastError, SendError, SocketError};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::presence::Presence;
use crate::shared::auth::Caller;
use crate::shared::cluster::Adapter;
use crate::shared::json::SocketEvent;
use crate::shared::metrics;
use crate::shared::rooms::user_room;

/// How long a replay waits for a socket's full buffer to drain before giving up on the socket.
const STALL_LIMIT: Duration = Duration::from_secs(10);
const STALL_POLL: Duration = Duration::from_millis(10);
/// How long an evicted socket is waited for to take its last two packets (and then to close
/// its connection); past that its connection is closed without them.
const EVICTION_LIMIT: Duration = Duration::from_secs(5);

/// The second argument of every durable event, for replay on reconnect.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DurablePosition<'a> {
    workspace_id: &'a str,
    seq: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkspaceRef<'a> {
    workspace_id: &'a str,
}

/// Why a socket is disconnected for being slow.
#[derive(Serialize)]
struct Lagged {
    code: &'static str,
    message: &'static str,
}

/// Emits `event` to `room` on this node (`namespace` is `/v1`, not yet narrowed to a room).
pub async fn to_room(namespace: &BroadcastOperators<Adapter>, room: &str, event: Event) {
    let span = tracing::info_span!(
        "socket.emit",
        otel.kind = "producer",
        workspace_id = %event.workspace_id,
        seq = event.seq,
    );
    crawbl_infra::trace::continue_from_map(&span, &event.trace_context);
    emit_to_room(namespace, room, event).instrument(span).await;
}

async fn emit_to_room(namespace: &BroadcastOperators<Adapter>, room: &str, event: Event) {
    let workspace_id = event.workspace_id.clone();
    let seq = event.seq;
    let audience = (event.to_user_id.clone(), event.except_user_id.clone());
    let Some(socket_event) = encode(event) else {
        return;
    };
    // This node's sockets only: every node receives the event from the bus itself, and going
    // through the adapter would send it through Redis first (spec §6).
    let mut room = namespace.clone().local().to(room.to_owned());
    let (to_user_id, except_user_id) = audience;
    if !except_user_id.is_empty() {
        room = room.except(user_room(&except_user_id));
    }
    if !to_user_id.is_empty() {
        // Only that user's sockets of the room (an event about the user's own state).
        for socket in room.sockets() {
            let is_theirs = socket
                .extensions
                .get::<Caller>()
                .is_some_and(|caller| caller.user_id() == to_user_id);
            if is_theirs
                && socket
                    .emit(socket_event.name, &socket_event.payload)
                    .is_ok()
            {
                crawbl_infra::metrics::events()
                    .delivered
                    .with(&[socket_event.name])
                    .inc();
            }
        }
        return;
    }
    if !socket_event.durable || seq == 0 {
        // Emitted like the others, not `volatile()`: socketioxide's volatile flag uses a side
        // channel that reorders them against durable ones, and the spec fixes a turn's order.
        match room.emit(socket_event.name, &socket_event.payload).await {
            Ok(()) => crawbl_infra::metrics::events()
                .delivered
                .with(&[socket_event.name])
                .inc(),
            Err(BroadcastError::Socket(errors)) => {
                let full = errors
                    .iter()
                    .filter(|error| matches!(error, SocketError::InternalChannelFull))
                    .count();
                crawbl_infra::metrics::events_dropped("buffer_full", full as u64);
                tracing::debug!(
                    sockets = full,
                    event = socket_event.name,
                    "dropped a volatile event for sockets with a full buffer"
                );
            }
            Err(error) => {
                tracing::warn!(%error, event = socket_event.name, "emitting an event failed");
            }
        }
        return;
    }
    let position = DurablePosition {
        workspace_id: &workspace_id,
        seq,
    };
    let arguments = (&socket_event.payload, &position);
    for socket in room.sockets() {
        match socket.emit(socket_event.name, &arguments) {
            Ok(()) => crawbl_infra::metrics::events()
                .delivered
                .with(&[socket_event.name])
                .inc(),
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                crawbl_infra::metrics::events_dropped("socket_evicted", 1);
                evict(&socket, &workspace_id, seq);
            }
            // Not connected yet (still in its handshake) or already going.
            Err(SendError::Socket(SocketError::Closed)) => {}
            Err(error) => {
                tracing::warn!(%error, event = socket_event.name, "emitting an event failed");
            }
        }
    }
}

/// Emits a logged event to one socket (a replay), waiting while its buffer is full. An error
/// means the socket is gone or evicted: stop replaying to it.
pub async fn to_socket(socket: &SocketRef<Adapter>, event: Event) -> Result<(), Gone> {
    let workspace_id = event.workspace_id.clone();
    let seq = event.seq;
    let Some(socket_event) = encode(event) else {
        return Ok(());
    };
    let position = DurablePosition {
        workspace_id: &workspace_id,
        seq,
    };
    send_paced(
        socket,
        socket_event.name,
        &(&socket_event.payload, &position),
    )
    .await
    .inspect_err(|_| evict(socket, &workspace_id, seq))
}

/// `sync.reset {workspaceId}` to one socket: its position cannot be served from the log.
pub async fn reset_to_socket(socket: &SocketRef<Adapter>, workspace_id: &str) -> Result<(), Gone> {
    send_paced(socket, "sync.reset", &WorkspaceRef { workspace_id })
        .await
        .inspect_err(|_| evict(socket, workspace_id, 0))
}

/// `sync.reset {workspaceId}` to a room on this node: events it should have had are lost.
pub async fn reset_to_room(
    namespace: &BroadcastOperators<Adapter>,
    room: &str,
    workspace_id: &str,
) {
    let room = namespace.clone().local().to(room.to_owned());
    if let Err(error) = room
        .emit("sync.reset", &WorkspaceRef { workspace_id })
        .await
    {
        tracing::warn!(%error, "emitting sync.reset failed");
    }
}

/// The socket is gone, or could not keep up and is being disconnected.
#[derive(Debug)]
pub struct Gone;

async fn send_paced<T: Serialize + ?Sized>(
    socket: &SocketRef<Adapter>,
    name: &str,
    data: &T,
) -> Result<(), Gone> {
    let deadline = Instant::now() + STALL_LIMIT;
    loop {
        match socket.emit(name, data) {
            Ok(()) => return Ok(()),
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                if Instant::now() >= deadline {
                    return Err(Gone);
                }
                tokio::time::sleep(STALL_POLL).await;
            }
            Err(SendError::Socket(SocketError::Closed)) => return Err(Gone),
            Err(error) => {
                tracing::warn!(%error, event = name, "emitting an event failed");
                return Err(Gone);
            }
        }
    }
}

fn encode(event: Event) -> Option<SocketEvent> {
    let kind = event.kind?;
    match SocketEvent::from_kind(&event.workspace_id, kind) {
        Ok(socket_event) => Some(socket_event),
        Err(error) => {
            tracing::warn!(%error, "cannot encode an event for sockets");
            None
        }
    }
}

/// Disconnects a socket that could not take a durable event: it leaves every room at once (it
/// would otherwise go on with a hole in its sequence), then, as soon as its buffer has room, gets
/// `sync.lagged {code: "SLOW_CONSUMER", message}` and a disconnect. A client that takes nothing
/// for [`EVICTION_LIMIT`] (it stopped reading) has its connection closed outright, and what was
/// buffered for it is freed.
pub fn evict(socket: &SocketRef<Adapter>, workspace_id: &str, seq: u64) {
    if let Some(presence) = Presence::of(socket) {
        if !presence.evict() {
            return; // Already on its way out.
        }
        presence.untrack_all();
    }
    socket.leave_all();
    tracing::info!(socket = %socket.id, workspace_id, seq, "disconnecting a socket that cannot keep up");
    let socket = socket.clone();
    tokio::spawn(async move {
        let reason = Lagged {
            code: "SLOW_CONSUMER",
            message: "events were coming faster than this connection took them; reconnect with \
                      auth.since to get what was missed",
        };
        let deadline = Instant::now() + EVICTION_LIMIT;
        let mut told = false;
        while socket.connected() && Instant::now() < deadline {
            if !told {
                match socket.emit("sync.lagged", &reason) {
                    Ok(()) => told = true,
                    Err(SendError::Socket(SocketError::InternalChannelFull)) => {}
                    Err(_) => return,
                }
            }
            if told && socket.clone().disconnect().is_ok() {
                metrics::socket_evicted("told");
                // socket.io-client then closes the connection itself; one that stopped reading
                // never sees the disconnect.
                tokio::time::sleep_until(deadline).await;
                socket.close_connection();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if socket.connected() {
            metrics::socket_evicted("dropped");
            socket.close_connection();
        }
    });
}
