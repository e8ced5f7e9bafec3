//! Socket.IO on namespace `/v1`: handshake authentication, workspace rooms, replay on reconnect,
//! and delivery of bus events to the sockets of this node (see [`fanout`]).

mod ack;
mod agent_typing;
mod cancel;
mod emit;
mod fanout;
mod presence;
mod recent;
mod send;
mod sequencer;
mod since;
mod subscriptions;
mod user_typing;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crawbl_infra::bus::Delivery;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::operators::BroadcastOperators;
use socketioxide_redis::RedisAdapterCtr;
use tokio_util::sync::CancellationToken;

pub use fanout::Fanout;
use presence::Presence;
use since::{Since, SinceError};
pub use user_typing::Typists;

use crate::shared::auth::{AuthFailure, Caller, Credential, token_from_headers, verify};
use crate::shared::cluster::{Adapter, ClusterDriver, RoomMoves};
use crate::shared::limits::Limited;
use crate::shared::rooms::{
    NAMESPACE, WORKSPACE_ROOM_PREFIX, api_key_room, following_room, session_room, user_room,
    workspace_room,
};
use crate::{AppState, Config};

/// Largest packet a client may send; clients send little more than acks and subscriptions.
/// Bounds a long-polling request's body and a websocket message (and frame) alike: socketioxide
/// applies `max_payload` to polling only and lets websocket messages grow to 64 MiB.
const MAX_CLIENT_PACKET_BYTES: usize = 64 * 1024;
/// Longest id a client event may name (a conversation, a message).
const MAX_ID_BYTES: usize = 128;

/// The id a client event's payload holds in `name`: a string of 1 to [`MAX_ID_BYTES`] bytes.
fn id_field(fields: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name) {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID_BYTES => Some(id.clone()),
        _ => None,
    }
}

/// Packets waiting to go out to one socket. A full buffer drops volatile events for that socket
/// and gets it disconnected on the next durable one (see [`emit`]).
pub const MAX_BUFFERED_PACKETS: usize = 128;
/// Bytes waiting to go out to one socket, by default (`SOCKET_BUFFER_BYTES`): the buffer is full
/// at whichever of the two bounds comes first, so a client that stops reading costs at most this
/// (plus one websocket write buffer) until it is let go.
pub const DEFAULT_SOCKET_BUFFER_BYTES: usize = 256 * 1024;
/// How long a closed connection may take to write what was buffered for it before it is dropped
/// outright (a client that stopped reading never takes it).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may stay open without a namespace connected. socketioxide keeps every
/// connection whose handshake was refused for that long (45 s by default), even after the
/// client left: a flood of bad handshakes held ~11 KB each for 45 s. Clients connect the
/// namespace one round trip after the connection opens.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-socket websocket read buffer (socketioxide's default is 4 KiB).
const WS_READ_BUFFER_BYTES: usize = 256;
/// How often every socket's rooms are checked against what the node follows: rooms can change
/// through the adapter (another node adding a member), which this node hears of from auth too,
/// but not if that announcement was lost.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// The Socket.IO layer for the router and the handle to emit through, with `adapter` between
/// edge nodes (see [`crate::shared::cluster`]).
pub async fn layer(
    state: AppState,
    fanout: Arc<Fanout>,
    typists: Arc<Typists>,
    adapter: RedisAdapterCtr<ClusterDriver>,
    config: &Config,
) -> anyhow::Result<(SocketIoLayer<Adapter>, SocketIo<Adapter>)> {
    let (layer, io) = SocketIo::builder()
        .with_state(state)
        .with_state(fanout)
        .with_state(typists)
        .max_payload(MAX_CLIENT_PACKET_BYTES as u64)
        .ws_max_message_size(MAX_CLIENT_PACKET_BYTES)
        .ws_max_frame_size(MAX_CLIENT_PACKET_BYTES)
        .max_buffer_size(MAX_BUFFERED_PACKETS)
        .max_buffer_bytes(config.socket_buffer_bytes)
        .close_timeout(CLOSE_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // Clients send little; the 4 KiB default read buffer per socket is mostly idle memory.
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
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
    /// `{"<workspaceId>": <seq>}`: replay what came after, then join (see [`since`]).
    since: Value,
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error(transparent)]
    Auth(#[from] AuthFailure),
    #[error("invalid auth payload: expected an object like {{\"token\": \"…\"}}")]
    BadPayload,
    #[error("invalid auth payload: {0}")]
    BadSince(#[from] SinceError),
    #[error("invalid auth payload: since names {0}, which is not auth.workspaceId")]
    SinceNotJoined(String),
    #[error("workspace not found")]
    NotAMember,
    #[error("too many failed handshakes from this address; retry in {} s", .0.retry_after_secs())]
    RateLimited(Limited),
}

impl HandshakeError {
    /// Whether the client got something wrong (and it counts against its address); not when
    /// authentication was unavailable, nor for the refusal of the limit itself.
    fn is_clients_fault(&self) -> bool {
        !matches!(
            self,
            Self::Auth(AuthFailure::Unavailable) | Self::RateLimited(_)
        )
    }
}

/// Workspaces whose rooms the socket joins only after its replay, in the connect handler
/// (socketioxide cannot emit before the client is told it is connected).
#[derive(Clone)]
struct PendingReplay(Since);

/// The handshake: refused at once when the client's address has failed too many, else
/// [`admit`], whose failures count against the address.
async fn authenticate(
    socket: SocketRef<Adapter>,
    State(state): State<AppState>,
    State(fanout): State<Arc<Fanout>>,
    TryData(auth): TryData<HandshakeAuth>,
) -> Result<(), HandshakeError> {
    let address = state
        .limits
        .trusted_proxies
        .client_of(socket.req_parts())
        .map(|address| address.to_string());
    let failures = &state.limits.failed_handshakes;
    if let Some(address) = &address {
        failures
            .check(address)
            .map_err(HandshakeError::RateLimited)?;
    }
    let admitted = admit(&socket, &state, fanout, auth).await;
    if let (Err(error), Some(address)) = (&admitted, &address)
        && error.is_clients_fault()
    {
        // Refused or not, the next attempt will be checked against it.
        let _ = failures.take(address);
    }
    if admitted.is_ok() {
        listen(&socket);
    }
    admitted
}

/// The client events a socket answers. Registered before the namespace's connect packet goes
/// out: socketioxide runs the connect handler after sending it, and a client that emits as soon
/// as it is connected (python-socketio does) would otherwise find no handler and never get an
/// ack.
fn listen(socket: &SocketRef<Adapter>) {
    socket.on("workspace.subscribe", subscriptions::subscribe);
    socket.on("workspace.unsubscribe", subscriptions::unsubscribe);
    socket.on("message.cancel", cancel::cancel);
    socket.on("message.send", send::send);
    socket.on("typing", user_typing::typing);
    socket.on_disconnect(
        |socket: SocketRef<Adapter>, State(typists): State<Arc<Typists>>| async move {
            typists.socket_gone(&socket).await;
        },
    );
}

/// Verifies the credential, joins the socket to its rooms and notes what it must replay.
async fn admit(
    socket: &SocketRef<Adapter>,
    state: &AppState,
    fanout: Arc<Fanout>,
    auth: Result<HandshakeAuth, socketioxide::ParserError>,
) -> Result<(), HandshakeError> {
    let auth = auth.map_err(|_| HandshakeError::BadPayload)?;
    let since = since::parse(&auth.since)?;
    let token = token_from_headers(&socket.req_parts().headers)
        .map(str::to_owned)
        .or(auth.token);
    let caller = verify(state, token.as_deref()).await?;
    let user_id = caller.user_id();
    let is_member = |id: &str| caller.workspaces.iter().any(|w| w.id == id);
    if since.keys().any(|id| !is_member(id)) {
        return Err(HandshakeError::NotAMember);
    }
    let (workspaces, mut rooms) = match &auth.workspace_id {
        Some(workspace_id) => {
            if !is_member(workspace_id) {
                return Err(HandshakeError::NotAMember);
            }
            if let Some(other) = since.keys().find(|id| *id != workspace_id) {
                return Err(HandshakeError::SinceNotJoined(other.clone()));
            }
            (vec![workspace_id.clone()], Vec::new())
        }
        None => {
            let workspaces = caller.workspaces.iter().map(|w| w.id.clone()).collect();
            // Follows every workspace of the user, including ones they are added to later.
            (workspaces, vec![following_room(user_id)])
        }
    };
    // Rooms that let logout, key revocation and membership removal reach this socket.
    rooms.push(user_room(user_id));
    rooms.push(match &caller.identity.credential {
        Credential::Session(session_id) => session_room(session_id),
        Credential::ApiKey(api_key_id) => api_key_room(api_key_id),
    });
    let presence = Presence::new(fanout);
    let live: Vec<&String> = workspaces
        .iter()
        .filter(|id| !since.contains_key(*id))
        .collect();
    futures::future::join_all(live.iter().map(|id| presence.track(id))).await;
    for workspace_id in &live {
        rooms.push(workspace_room(workspace_id));
        presence.joined(workspace_id);
    }
    // Joined before the client hears it is connected, so it misses nothing sent after that.
    socket.join(rooms);
    // Counted as online (for push notifications) until the socket is dropped.
    if let Some(online) = &state.online {
        socket
            .extensions
            .insert(Arc::new(online.connected(caller.user_id())));
    }
    socket.extensions.insert(caller);
    socket.extensions.insert(presence);
    if !since.is_empty() {
        socket.extensions.insert(PendingReplay(since));
    }
    Ok(())
}

/// After the connect packet: the replays `auth.since` asked for, then the joins.
async fn on_connect(socket: SocketRef<Adapter>, State(fanout): State<Arc<Fanout>>) {
    let user_id = socket
        .extensions
        .get::<Caller>()
        .map(|caller| caller.identity.user_id)
        .unwrap_or_default();
    tracing::debug!(socket = %socket.id, %user_id, "socket connected");

    let Some(PendingReplay(since)) = socket.extensions.remove::<PendingReplay>() else {
        return;
    };
    let Some(presence) = Presence::of(&socket) else {
        return;
    };
    for (workspace_id, seq) in since {
        if !fanout
            .replay_and_join(&socket, &presence, &workspace_id, seq)
            .await
        {
            return;
        }
    }
}

/// Hands every bus delivery to [`Fanout`] until `shutdown`, and keeps the sockets' rooms and
/// the followed workspaces in step.
pub async fn deliver_events(
    io: SocketIo<Adapter>,
    fanout: Arc<Fanout>,
    mut deliveries: BoxStream<'static, Delivery>,
    shutdown: CancellationToken,
) {
    let mut reconcile = tokio::time::interval(RECONCILE_INTERVAL);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            delivery = deliveries.next() => match delivery {
                Some(delivery) => fanout.route(delivery),
                None => {
                    tracing::error!("the event bus subscription ended; no more live events");
                    deliveries = futures::stream::pending().boxed();
                }
            },
            _ = reconcile.tick() => {
                if let Some(namespace) = io.of(NAMESPACE) {
                    reconcile_all(namespace).await;
                }
            }
        }
    }
}

/// This node's room moves (see [`RoomMoves`]), which keep each socket's [`Presence`] in step.
pub struct Moves;

impl RoomMoves for Moves {
    /// Puts this node's sockets of a user who joined a workspace into its room (they followed
    /// all of the user's workspaces), and tells each (`workspace.joined`), so a client lists the
    /// workspace at once.
    fn join<'a>(
        &'a self,
        namespace: BroadcastOperators<Adapter>,
        user_id: &'a str,
        workspace_id: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let sockets = namespace.local().to(following_room(user_id)).sockets();
            for socket in sockets {
                let Some(presence) = Presence::of(&socket) else {
                    continue;
                };
                // A change can arrive twice (from the handler that made it and from auth's
                // announcement): a socket already in the room is told once.
                if presence.counts_in(workspace_id) {
                    continue;
                }
                presence.track(workspace_id).await;
                socket.join(workspace_room(workspace_id));
                presence.joined(workspace_id);
                tell_membership(&socket, "workspace.joined", workspace_id);
            }
        })
    }

    /// Takes this node's sockets of a user who left a workspace out of its room, and tells
    /// each (`workspace.left`) once.
    fn leave(&self, namespace: BroadcastOperators<Adapter>, user_id: &str, workspace_id: &str) {
        let sockets = namespace.local().to(user_room(user_id)).sockets();
        for socket in sockets {
            let room = workspace_room(workspace_id);
            let in_room = socket.rooms().iter().any(|joined| joined.as_ref() == room);
            socket.leave(room);
            // The node that made the change has every node's adapter take the room away first
            // (so nothing more reaches the socket), and that can come before auth's
            // announcement does: what the socket still counts in says it was in, too.
            let counted =
                Presence::of(&socket).is_some_and(|presence| presence.untrack(workspace_id));
            if in_room || counted {
                tell_membership(&socket, "workspace.left", workspace_id);
            }
        }
    }
}

/// `workspace.joined` / `workspace.left {workspaceId}` to one socket: not durable (the
/// workspace list over REST is the truth after a reconnect), so a full buffer only loses it.
fn tell_membership(socket: &SocketRef<Adapter>, event: &str, workspace_id: &str) {
    let payload = serde_json::json!({ "workspaceId": workspace_id });
    if let Err(error) = socket.emit(event, &payload) {
        tracing::debug!(%error, event, "cannot tell a socket about its membership");
    }
}

/// Makes what each socket counts in match the rooms it is in.
async fn reconcile_all(namespace: BroadcastOperators<Adapter>) {
    for socket in namespace.local().sockets() {
        let Some(presence) = Presence::of(&socket) else {
            continue;
        };
        let rooms: HashSet<String> = socket
            .rooms()
            .iter()
            .filter_map(|room| room.strip_prefix(WORKSPACE_ROOM_PREFIX))
            .map(str::to_owned)
            .collect();
        for workspace_id in &rooms {
            if !presence.counts_in(workspace_id) {
                presence.track(workspace_id).await;
                presence.joined(workspace_id);
            }
        }
        for workspace_id in presence.joined_workspaces() {
            if !rooms.contains(&workspace_id) {
                presence.untrack(&workspace_id);
            }
        }
    }
}
