//! Socket.IO on namespace `/v1`: handshake authentication, workspace rooms, and delivery of
//! bus events to the sockets of this node.

use crawbl_proto::events::v1::Event;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide_redis::RedisAdapterCtr;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::AppState;
use crate::auth::{AuthFailure, Caller, Credential, token_from_headers, verify};
use crate::cluster::{
    Adapter, ClusterDriver, api_key_room, following_room, session_room, user_room,
};
use crate::json::SocketEvent;

pub const NAMESPACE: &str = "/v1";
/// Largest packet a client may send; clients send little more than acks and subscriptions.
const MAX_CLIENT_PAYLOAD_BYTES: u64 = 64 * 1024;

/// The room of a workspace's sockets.
pub fn workspace_room(workspace_id: &str) -> String {
    format!("workspace:{workspace_id}")
}

/// The Socket.IO layer for the router and the handle to emit through, with `adapter` between
/// edge nodes (see [`crate::cluster`]).
pub async fn layer(
    state: AppState,
    adapter: RedisAdapterCtr<ClusterDriver>,
) -> anyhow::Result<(SocketIoLayer<Adapter>, SocketIo<Adapter>)> {
    let (layer, io) = SocketIo::builder()
        .with_state(state)
        .max_payload(MAX_CLIENT_PAYLOAD_BYTES)
        .with_adapter::<Adapter>(adapter)
        .build_layer();
    io.ns(NAMESPACE, on_connect.with(authenticate))
        .await
        .map_err(|error| anyhow::anyhow!("starting the Socket.IO namespace: {error}"))?;
    Ok((layer, io))
}

/// The handshake's `auth` payload (browsers cannot set headers on a WebSocket).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct HandshakeAuth {
    token: Option<String>,
    /// Join only this workspace's room instead of every workspace of the user.
    workspace_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error(transparent)]
    Auth(#[from] AuthFailure),
    #[error("invalid auth payload: expected an object like {{\"token\": \"…\"}}")]
    BadPayload,
    #[error("workspace not found")]
    NotAMember,
}

async fn authenticate(
    socket: SocketRef<Adapter>,
    State(state): State<AppState>,
    TryData(auth): TryData<HandshakeAuth>,
) -> Result<(), HandshakeError> {
    let auth = auth.map_err(|_| HandshakeError::BadPayload)?;
    let token = token_from_headers(&socket.req_parts().headers)
        .map(str::to_owned)
        .or(auth.token);
    let caller = verify(&state, token.as_deref()).await?;
    let user_id = caller.user_id();
    let mut rooms = match &auth.workspace_id {
        Some(workspace_id) => {
            if !caller.workspaces.iter().any(|w| &w.id == workspace_id) {
                return Err(HandshakeError::NotAMember);
            }
            vec![workspace_room(workspace_id)]
        }
        None => {
            let mut rooms: Vec<String> = caller
                .workspaces
                .iter()
                .map(|workspace| workspace_room(&workspace.id))
                .collect();
            // Follows every workspace of the user, including ones they are added to later.
            rooms.push(following_room(user_id));
            rooms
        }
    };
    // Rooms that let logout, key revocation and membership removal reach this socket.
    rooms.push(user_room(user_id));
    rooms.push(match &caller.identity.credential {
        Credential::Session(session_id) => session_room(session_id),
        Credential::ApiKey(api_key_id) => api_key_room(api_key_id),
    });
    // Joined before the client hears it is connected, so it misses nothing sent after that.
    socket.join(rooms);
    socket.extensions.insert(caller);
    Ok(())
}

async fn on_connect(socket: SocketRef<Adapter>) {
    let user_id = socket
        .extensions
        .get::<Caller>()
        .map(|caller| caller.identity.user_id)
        .unwrap_or_default();
    tracing::debug!(socket = %socket.id, %user_id, "socket connected");
}

/// The second argument of every durable event, for replay on reconnect.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DurablePosition<'a> {
    workspace_id: &'a str,
    seq: u64,
}

/// Emits every bus event to its workspace's room on this node, in the order received.
pub async fn deliver_events(
    io: SocketIo<Adapter>,
    mut events: BoxStream<'static, Event>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            next = events.next() => match next {
                Some(event) => event,
                None => return,
            },
        };
        deliver(&io, event).await;
    }
}

async fn deliver(io: &SocketIo<Adapter>, event: Event) {
    let span = tracing::info_span!(
        "socket.emit",
        otel.kind = "producer",
        workspace_id = %event.workspace_id,
        seq = event.seq,
    );
    crawbl_infra::trace::continue_from_map(&span, &event.trace_context);
    emit(io, event).instrument(span).await;
}

async fn emit(io: &SocketIo<Adapter>, event: Event) {
    let Some(kind) = event.kind else { return };
    let socket_event = match SocketEvent::from_kind(kind) {
        Ok(socket_event) => socket_event,
        Err(error) => {
            tracing::warn!(%error, "cannot encode an event for sockets");
            crawbl_infra::metrics::events_dropped("unencodable", 1);
            return;
        }
    };
    let Some(namespace) = io.of(NAMESPACE) else {
        return;
    };
    // This node's sockets only: every node receives the event from the bus itself, and going
    // through the adapter would send it through Redis first (spec §6).
    let room = namespace.local().to(workspace_room(&event.workspace_id));
    // Volatile events are emitted like the others: socketioxide's volatile flag uses a side
    // channel that reorders them against durable ones, and the spec fixes a turn's order.
    let result = if !socket_event.durable || event.seq == 0 {
        room.emit(socket_event.name, &socket_event.payload).await
    } else {
        let position = DurablePosition {
            workspace_id: &event.workspace_id,
            seq: event.seq,
        };
        room.emit(socket_event.name, &(&socket_event.payload, position))
            .await
    };
    match result {
        Ok(()) => crawbl_infra::metrics::events()
            .delivered
            .with(&[socket_event.name])
            .inc(),
        Err(error) => {
            tracing::warn!(%error, event = socket_event.name, "emitting an event failed");
            crawbl_infra::metrics::events_dropped("emit_failed", 1);
        }
    }
}
