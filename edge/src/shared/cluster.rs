//! What edge nodes do to each other's sockets: disconnect every socket of a revoked session or API
//! key or of a deleted account, move a user's sockets in or out of a workspace's room. With `REDIS_URL` these go through
//! the socketioxide-redis adapter to every node; without it (the embedded default) the adapter's
//! driver is [`ClusterDriver::Alone`] and every operation stays on this node.
//!
//! The adapter carries only these operations. Service events are delivered by each node to its
//! own sockets (`realtime::fanout` uses `.local()`): through the adapter every broadcast would go
//! through Redis first, and during an outage local sockets would get nothing either.
//!
//! socketioxide-redis' stock redis-rs driver never recovers after Redis restarts, so
//! [`RedisDriver`] is our own, on a redis-rs `ConnectionManager`: it reconnects by itself, re-issues
//! its subscriptions (RESP3 push messages, automatic resubscription) and pings every few seconds
//! so an idle node notices a lost connection too.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind};
use socketioxide::SocketIo;
use socketioxide::adapter::Emitter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::sync::mpsc;

use crate::shared::rooms::{
    NAMESPACE, api_key_room, following_room, session_room, user_room, workspace_room,
};

/// The Socket.IO adapter of every edge node.
pub type Adapter = CustomRedisAdapter<Emitter, ClusterDriver>;

/// Prefix of the adapter's Redis channels.
const CHANNEL_PREFIX: &str = "crawbl:socket.io";
/// How long an operation waits for Redis before it fails (and falls back to this node).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle connection is checked, so a lost one is replaced (and resubscribed) soon.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The adapter's constructor for `redis_url`, or for this node alone.
pub async fn adapter(redis_url: Option<&str>) -> anyhow::Result<RedisAdapterCtr<ClusterDriver>> {
    let driver = match redis_url {
        Some(url) => ClusterDriver::Redis(RedisDriver::connect(url).await?),
        None => ClusterDriver::Alone,
    };
    let config = RedisAdapterConfig::new()
        .with_prefix(CHANNEL_PREFIX)
        .with_request_timeout(Duration::from_secs(5));
    Ok(RedisAdapterCtr::new_with_driver(driver, config))
}

/// A change to sockets on every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketChange {
    DisconnectSession(String),
    DisconnectApiKey(String),
    /// Every socket of a user (their account was deleted).
    DisconnectUser(String),
    JoinWorkspace {
        user_id: String,
        workspace_id: String,
    },
    LeaveWorkspace {
        user_id: String,
        workspace_id: String,
    },
}

/// The node's Socket.IO server, for changing sockets from REST handlers and background tasks.
/// Set once the Socket.IO layer is built.
#[derive(Clone, Default)]
pub struct Sockets(Arc<OnceLock<Server>>);

/// The Socket.IO server and how it moves this node's sockets between rooms.
type Server = (SocketIo<Adapter>, Arc<dyn RoomMoves>);

/// How this node moves its own sockets of a user into or out of a workspace's room. The socket
/// side implements it (`realtime::Moves`), because joining also makes the node follow the
/// workspace's events.
pub trait RoomMoves: Send + Sync + 'static {
    fn join<'a>(
        &'a self,
        namespace: BroadcastOperators<Adapter>,
        user_id: &'a str,
        workspace_id: &'a str,
    ) -> BoxFuture<'a, ()>;
    fn leave(&self, namespace: BroadcastOperators<Adapter>, user_id: &str, workspace_id: &str);
}

impl Sockets {
    pub fn set(&self, io: SocketIo<Adapter>, moves: Arc<dyn RoomMoves>) {
        if self.0.set((io, moves)).is_err() {
            tracing::warn!("the socket server was set twice; keeping the first");
        }
    }

    pub(crate) fn namespace(&self) -> Option<BroadcastOperators<Adapter>> {
        self.0.get()?.0.of(NAMESPACE)
    }

    /// This node's sockets.
    pub fn local(&self) -> Vec<SocketRef<Adapter>> {
        self.namespace()
            .map(|namespace| namespace.local().sockets())
            .unwrap_or_default()
    }

    /// Closes this node's connections at shutdown without a Socket.IO disconnect: clients see
    /// their transport close, which Socket.IO clients answer by reconnecting (through the load
    /// balancer, to another node), whereas a server disconnect tells them not to come back.
    pub async fn close_for_shutdown(&self) {
        if let Some((io, _)) = self.0.get() {
            io.close().await;
        }
    }

    /// Applies `change` on every edge node through the adapter, then to this node's sockets
    /// directly (which also keeps track of the workspaces they count in). When Redis cannot be
    /// reached the other nodes apply the change when they hear of it from auth (see
    /// `access::follow`).
    pub async fn apply(&self, change: &SocketChange) {
        let Some(namespace) = self.namespace() else {
            return;
        };
        if let Err(error) = apply(namespace, change).await {
            tracing::warn!(%error, ?change, "cannot reach other edge nodes; applying the change here only");
        }
        self.apply_locally(change).await;
    }

    /// Applies `change` to this node's sockets only.
    pub async fn apply_locally(&self, change: &SocketChange) {
        let (Some(namespace), Some((_, moves))) = (self.namespace(), self.0.get()) else {
            return;
        };
        match change {
            SocketChange::JoinWorkspace {
                user_id,
                workspace_id,
            } => moves.join(namespace, user_id, workspace_id).await,
            SocketChange::LeaveWorkspace {
                user_id,
                workspace_id,
            } => moves.leave(namespace, user_id, workspace_id),
            SocketChange::DisconnectSession(_)
            | SocketChange::DisconnectApiKey(_)
            | SocketChange::DisconnectUser(_) => {
                if let Err(error) = apply(namespace.local(), change).await {
                    tracing::warn!(%error, ?change, "cannot apply a socket change");
                }
            }
        }
    }
}

/// The text of whatever went wrong (the adapter's error types differ per operation).
async fn apply(
    namespace: BroadcastOperators<Adapter>,
    change: &SocketChange,
) -> Result<(), String> {
    match change {
        SocketChange::DisconnectSession(session_id) => {
            namespace
                .to(session_room(session_id))
                .disconnect()
                .await
                .map_err(|error| error.to_string())?;
        }
        SocketChange::DisconnectApiKey(api_key_id) => {
            namespace
                .to(api_key_room(api_key_id))
                .disconnect()
                .await
                .map_err(|error| error.to_string())?;
        }
        SocketChange::DisconnectUser(user_id) => {
            namespace
                .to(user_room(user_id))
                .disconnect()
                .await
                .map_err(|error| error.to_string())?;
        }
        SocketChange::JoinWorkspace {
            user_id,
            workspace_id,
        } => {
            namespace
                .to(following_room(user_id))
                .join(workspace_room(workspace_id))
                .await
                .map_err(|error| error.to_string())?;
        }
        SocketChange::LeaveWorkspace {
            user_id,
            workspace_id,
        } => {
            namespace
                .to(user_room(user_id))
                .leave(workspace_room(workspace_id))
                .await
                .map_err(|error| error.to_string())?;
        }
    }
    Ok(())
}

/// The adapter's transport: Redis pub/sub, or nothing when this node is alone.
#[derive(Clone)]
pub enum ClusterDriver {
    /// No other node: publishes go nowhere, subscriptions never yield.
    Alone,
    Redis(RedisDriver),
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

impl Driver for ClusterDriver {
    type Error = ClusterError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        match self {
            Self::Alone => Ok(()),
            Self::Redis(driver) => driver.publish(chan, val).await,
        }
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        match self {
            Self::Alone => Ok(MessageStream::new_empty()),
            Self::Redis(driver) => driver.subscribe(chan, size).await,
        }
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        match self {
            Self::Alone => Ok(()),
            Self::Redis(driver) => driver.unsubscribe(chan).await,
        }
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        match self {
            Self::Alone => Ok(1),
            Self::Redis(driver) => driver.num_serv(chan).await,
        }
    }
}

type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// A socketioxide-redis driver on a redis-rs `ConnectionManager` (RESP3), which survives Redis
/// restarts.
#[derive(Clone)]
pub struct RedisDriver {
    handlers: Handlers,
    connection: ConnectionManager,
}

impl RedisDriver {
    /// Connects to `url` (RESP3 is forced: push messages need it).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let redacted = crawbl_infra::db::redact(url);
        let client = crawbl_infra::redis_client::resp3_client(url)?;
        let handlers = Handlers::default();
        let dispatch_to = handlers.clone();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |push: PushInfo| {
                dispatch(push, &dispatch_to);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .with_context(|| format!("cannot connect to Redis at {redacted:?}; is it running?"))?;
        tokio::spawn(heartbeat(connection.clone()));
        Ok(Self {
            handlers,
            connection,
        })
    }

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), ClusterError> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("PUBLISH");
        command.arg(chan).arg(val);
        timeout(command.query_async::<i64>(&mut connection)).await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, ClusterError> {
        let (sender, receiver) = mpsc::channel(size);
        // Registered first, so nothing published right after the subscription is dropped.
        write(&self.handlers).insert(chan.clone(), sender);
        let mut connection = self.connection.clone();
        if let Err(error) = timeout(connection.subscribe(&chan)).await {
            write(&self.handlers).remove(&chan);
            return Err(error);
        }
        Ok(MessageStream::new(receiver))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), ClusterError> {
        write(&self.handlers).remove(&chan);
        let mut connection = self.connection.clone();
        timeout(connection.unsubscribe(&chan)).await
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, ClusterError> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("PUBSUB");
        command.arg("NUMSUB").arg(chan);
        let (_, count): (String, u16) = timeout(command.query_async(&mut connection)).await?;
        Ok(count)
    }
}

async fn timeout<T>(
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    tokio::time::timeout(REDIS_TIMEOUT, future)
        .await
        .map_err(|_| ClusterError::Timeout(REDIS_TIMEOUT))?
        .map_err(ClusterError::from)
}

/// Hands a pub/sub message to the adapter's stream for its channel.
fn dispatch(push: PushInfo, handlers: &Handlers) {
    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
        return;
    };
    let (Ok(channel), Ok(payload)) = (
        redis::from_redis_value::<String>(channel),
        redis::from_redis_value::<Vec<u8>>(payload),
    ) else {
        tracing::warn!("dropping a malformed adapter message");
        return;
    };
    let sender = match handlers.read() {
        Ok(handlers) => handlers.get(&channel).cloned(),
        Err(poisoned) => poisoned.into_inner().get(&channel).cloned(),
    };
    if let Some(sender) = sender
        && let Err(error) = sender.try_send((channel, payload))
    {
        tracing::warn!(%error, "adapter message buffer full; dropping a message");
    }
}

fn write(
    handlers: &Handlers,
) -> std::sync::RwLockWriteGuard<'_, HashMap<String, mpsc::Sender<ChanItem>>> {
    match handlers.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Pings Redis every few seconds for as long as the driver lives, so a connection lost while idle
/// is replaced (and its subscriptions re-issued) without waiting for the next operation.
async fn heartbeat(connection: ConnectionManager) {
    let mut was_down = false;
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let mut connection = connection.clone();
        match timeout(redis::cmd("PING").query_async::<String>(&mut connection)).await {
            Ok(_) if was_down => {
                tracing::info!("adapter connection to Redis is back");
                crawbl_infra::metrics::redis_reconnected("socket_adapter");
                was_down = false;
            }
            Ok(_) => {}
            Err(error) => {
                if !was_down {
                    tracing::warn!(%error, "adapter connection to Redis lost; reconnecting");
                }
                was_down = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_have_distinct_names() {
        let rooms = [
            user_room("u"),
            following_room("u"),
            session_room("u"),
            api_key_room("u"),
            workspace_room("u"),
        ];
        let unique: std::collections::HashSet<_> = rooms.iter().collect();
        assert_eq!(unique.len(), rooms.len());
    }

    #[tokio::test]
    async fn pub_sub_messages_reach_the_stream_of_their_channel_only() {
        let handlers = Handlers::default();
        let (sender, mut receiver) = mpsc::channel(4);
        write(&handlers).insert("chan-a".to_owned(), sender);
        let message = |channel: &str| PushInfo {
            kind: PushKind::Message,
            data: vec![
                redis::Value::BulkString(channel.as_bytes().to_vec()),
                redis::Value::BulkString(b"payload".to_vec()),
            ],
        };
        dispatch(message("chan-b"), &handlers);
        dispatch(message("chan-a"), &handlers);
        dispatch(
            PushInfo {
                kind: PushKind::Subscribe,
                data: vec![],
            },
            &handlers,
        );
        assert_eq!(
            receiver.recv().await,
            Some(("chan-a".to_owned(), b"payload".to_vec()))
        );
        assert!(receiver.try_recv().is_err());
    }
}
