//! The event bus between services (publishers) and edges (subscribers).
//!
//! With `REDIS_URL`, events go through Redis pub/sub, one channel per workspace
//! (`crawbl:events:{workspaceId}`), or through sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, which Redis
//! Cluster keeps on the shard that owns the channel) with `REDIS_SHARDED_PUBSUB=true`. Without it,
//! through an in-process broadcast channel (the embedded default, where every component runs in
//! one process). Events are protobuf-encoded [`Event`] envelopes.
//!
//! A subscriber ([`EventBus::subscriber`]) follows workspaces one by one ([`Follows`]), so an edge
//! node receives only the traffic of the workspaces it has sockets for. Delivery is at most once:
//! the stream says [`Delivery::Missed`] whenever events may have been lost (resubscribed after
//! Redis came back, fell behind), and the subscriber then fetches durable events from the log.
//!
//! With Redis, what a process publishes is also handed at once to the subscribers of the same
//! process (and the copy that comes back from Redis skipped), so a process that both publishes and
//! delivers (the all-in-one stack with Redis) keeps delivering its own events while Redis is down.

mod redis_subscriber;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use crawbl_proto::events::v1::Event;
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message as _;
use redis::aio::ConnectionManager;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream, UnboundedReceiverStream};

use crate::config;

/// Events an in-process subscriber may fall behind by before it starts losing them.
const IN_PROCESS_CAPACITY: usize = 4096;
/// Events read from Redis and not yet taken by an every-workspace subscriber.
const SUBSCRIBER_BUFFER: usize = 4096;
const CHANNEL_PREFIX: &str = "crawbl:events:";
/// A publish that takes longer fails, so a Redis outage cannot stall the publisher; durable
/// events stay in the log and are published again later.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed publish, publishes fail at once for this long instead of each waiting for
/// Redis: an outage must not slow every turn down (durable events are retried from the log).
const BACKOFF_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The Redis channel that carries a workspace's events.
pub fn workspace_channel(workspace_id: &str) -> String {
    format!("{CHANNEL_PREFIX}{workspace_id}")
}

/// Which Redis pub/sub carries events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Channels {
    /// `PUBLISH`/`SUBSCRIBE`: every message goes to every node of a Redis Cluster.
    #[default]
    Classic,
    /// `SPUBLISH`/`SSUBSCRIBE`: a message stays on the shard that owns its channel.
    Sharded,
}

impl Channels {
    /// `REDIS_SHARDED_PUBSUB=true` selects sharded pub/sub; every component must agree.
    pub fn from_env() -> anyhow::Result<Self> {
        let sharded: bool = config::parse_or("REDIS_SHARDED_PUBSUB", false)?;
        Ok(if sharded {
            Self::Sharded
        } else {
            Self::Classic
        })
    }

    fn publish_command(self) -> &'static str {
        match self {
            Self::Classic => "PUBLISH",
            Self::Sharded => "SPUBLISH",
        }
    }
}

#[derive(Clone)]
pub enum EventBus {
    InProcess(broadcast::Sender<Event>),
    Redis(Arc<RedisBus>),
}

pub struct RedisBus {
    client: redis::Client,
    publisher: ConnectionManager,
    channels: Channels,
    /// Stamped on every event this bus publishes.
    origin: String,
    /// This process's own subscribers.
    local: broadcast::Sender<Event>,
    /// Unix ms until which publishes fail fast (0: Redis is believed up).
    failing_until_ms: AtomicU64,
}

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    Event(Box<Event>),
    /// Events of followed workspaces may have been lost before this point: fetch durable ones
    /// from the log.
    Missed,
}

type Followed = Arc<RwLock<HashSet<String>>>;

/// Which workspaces a subscriber receives events of. Cheap to clone.
#[derive(Clone)]
pub struct Follows {
    followed: Followed,
    /// The Redis subscription's task; `None` in-process.
    commands: Option<mpsc::UnboundedSender<redis_subscriber::Command>>,
}

impl Follows {
    /// Starts receiving `workspace_id`'s events. The answer says whether the subscription is in
    /// place; `false` when Redis cannot be reached, in which case it is made when Redis is back
    /// (followed by [`Delivery::Missed`]). Calls take effect in the order they are made.
    pub fn follow(&self, workspace_id: &str) -> impl Future<Output = bool> + Send + 'static {
        write(&self.followed).insert(workspace_id.to_owned());
        let (reply, answer) = oneshot::channel();
        match &self.commands {
            None => {
                let _ = reply.send(true);
            }
            Some(commands) => {
                let command = redis_subscriber::Command::Follow(workspace_id.to_owned(), reply);
                if commands.send(command).is_err() {
                    tracing::warn!("the event subscription has stopped; cannot follow");
                }
            }
        }
        async move { answer.await.unwrap_or(false) }
    }

    /// Stops receiving `workspace_id`'s events.
    pub fn unfollow(&self, workspace_id: &str) {
        write(&self.followed).remove(workspace_id);
        if let Some(commands) = &self.commands {
            let _ = commands.send(redis_subscriber::Command::Unfollow(workspace_id.to_owned()));
        }
    }

    fn follows(followed: &Followed, workspace_id: &str) -> bool {
        match followed.read() {
            Ok(set) => set.contains(workspace_id),
            Err(poisoned) => poisoned.into_inner().contains(workspace_id),
        }
    }
}

impl EventBus {
    pub fn in_process() -> Self {
        Self::InProcess(broadcast::channel(IN_PROCESS_CAPACITY).0)
    }

    /// Connects to Redis at `url`; fails when it cannot be reached.
    pub async fn redis(url: &str, channels: Channels) -> anyhow::Result<Self> {
        let client = crate::redis_client::resp3_client(url)?;
        let publisher = crate::redis_client::connection_manager(&client, url).await?;
        Ok(Self::Redis(Arc::new(RedisBus {
            client,
            publisher,
            channels,
            origin: random_origin(),
            local: broadcast::channel(IN_PROCESS_CAPACITY).0,
            failing_until_ms: AtomicU64::new(0),
        })))
    }

    /// Redis when `url` is given, in-process otherwise.
    pub async fn from_url(url: Option<&str>, channels: Channels) -> anyhow::Result<Self> {
        match url {
            Some(url) => Self::redis(url, channels).await,
            None => Ok(Self::in_process()),
        }
    }

    /// The bus of a component run alone: Redis when `url` is given; otherwise in-process,
    /// saying once that events then do not cross process boundaries.
    pub async fn for_standalone(
        url: Option<&str>,
        channels: Channels,
        component: &str,
    ) -> anyhow::Result<Self> {
        if url.is_none() {
            tracing::warn!(
                component,
                "REDIS_URL is not set: live events stay inside this process (no other component \
                 sends or receives them); everything else works"
            );
        }
        Self::from_url(url, channels).await
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::InProcess(_) => "in-process",
            Self::Redis(bus) => match bus.channels {
                Channels::Classic => "redis",
                Channels::Sharded => "redis-sharded",
            },
        }
    }

    /// Publishes `event` on its workspace's channel. Events of one publisher arrive in the
    /// order they were published.
    #[tracing::instrument(name = "bus.publish", skip_all, fields(bus = self.kind(), workspace_id = %event.workspace_id, seq = event.seq))]
    pub async fn publish(&self, event: &Event) -> anyhow::Result<()> {
        let published = match self {
            Self::InProcess(sender) => {
                // No subscriber yet is not an error: nobody is listening.
                let _ = sender.send(event.clone());
                Ok(())
            }
            Self::Redis(bus) => bus.publish(event).await,
        };
        let metrics = crate::metrics::events();
        match &published {
            Ok(()) => metrics.published.inc(),
            Err(_) => metrics.publish_failures.inc(),
        }
        published
    }

    /// Every event of every workspace published from now on, for as long as the stream is held
    /// (tools and tests; edges follow workspaces with [`EventBus::subscriber`]). On Redis this is
    /// a pattern subscription, which sees classic pub/sub only.
    pub fn subscribe(&self) -> BoxStream<'static, Event> {
        match self {
            Self::InProcess(sender) => BroadcastStream::new(sender.subscribe())
                .filter_map(|item| async move { item.ok() })
                .boxed(),
            Self::Redis(bus) => {
                let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
                tokio::spawn(redis_subscriber::every_workspace(
                    bus.client.clone(),
                    sender,
                ));
                ReceiverStream::new(receiver).boxed()
            }
        }
    }

    /// A subscriber that receives the events of the workspaces it follows, starting with none.
    /// Its Redis subscription (if any) lives as long as the [`Follows`] handle.
    pub fn subscriber(&self) -> (Follows, BoxStream<'static, Delivery>) {
        let followed = Followed::default();
        match self {
            Self::InProcess(sender) => {
                let deliveries = own_events(sender.subscribe(), followed.clone());
                let follows = Follows {
                    followed,
                    commands: None,
                };
                (follows, deliveries)
            }
            Self::Redis(bus) => {
                let (commands, command_receiver) = mpsc::unbounded_channel();
                let (output, remote) = mpsc::unbounded_channel();
                tokio::spawn(redis_subscriber::run(
                    redis_subscriber::Subscription {
                        client: bus.client.clone(),
                        channels: bus.channels,
                        origin: bus.origin.clone(),
                        followed: followed.clone(),
                        output,
                    },
                    command_receiver,
                ));
                let own = own_events(bus.local.subscribe(), followed.clone());
                let deliveries =
                    futures::stream::select(own, UnboundedReceiverStream::new(remote)).boxed();
                let follows = Follows {
                    followed,
                    commands: Some(commands),
                };
                (follows, deliveries)
            }
        }
    }
}

impl RedisBus {
    async fn publish(&self, event: &Event) -> anyhow::Result<()> {
        let mut event = event.clone();
        event.origin.clone_from(&self.origin);
        // This process's own subscribers first, so they keep getting its events while Redis is
        // down; they skip the copy that comes back from Redis.
        let _ = self.local.send(event.clone());
        let now = unix_ms();
        if now < self.failing_until_ms.load(Ordering::Relaxed) {
            anyhow::bail!(
                "Redis failed a moment ago; not publishing until it has had time to recover"
            );
        }
        let mut connection = self.publisher.clone();
        let mut command = redis::cmd(self.channels.publish_command());
        command
            .arg(workspace_channel(&event.workspace_id))
            .arg(event.encode_to_vec());
        let publish = command.query_async::<i64>(&mut connection);
        let outcome = match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(result) => result.context("publishing an event to Redis").map(drop),
            Err(_) => Err(anyhow::anyhow!("publishing an event to Redis timed out")),
        };
        if outcome.is_err() {
            let backoff = u64::try_from(BACKOFF_AFTER_FAILURE.as_millis()).unwrap_or(u64::MAX);
            self.failing_until_ms
                .store(unix_ms() + backoff, Ordering::Relaxed);
        }
        outcome
    }
}

/// The events of followed workspaces from an in-process channel; falling behind is `Missed`.
fn own_events(
    receiver: broadcast::Receiver<Event>,
    followed: Followed,
) -> BoxStream<'static, Delivery> {
    BroadcastStream::new(receiver)
        .filter_map(move |item| {
            let followed = followed.clone();
            async move {
                match item {
                    Ok(event) if Follows::follows(&followed, &event.workspace_id) => {
                        Some(Delivery::Event(Box::new(event)))
                    }
                    Ok(_) => None,
                    Err(error) => {
                        tracing::warn!(%error, "in-process event subscriber fell behind");
                        Some(Delivery::Missed)
                    }
                }
            }
        })
        .boxed()
}

/// A random id for this bus instance (process and construction), for [`Event::origin`].
fn random_origin() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes[..]);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn write(followed: &Followed) -> std::sync::RwLockWriteGuard<'_, HashSet<String>> {
    match followed.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crawbl_proto::events::v1::{AgentTyping, event};

    fn typing(workspace_id: &str) -> Event {
        Event {
            workspace_id: workspace_id.to_owned(),
            kind: Some(event::Kind::AgentTyping(AgentTyping::default())),
            ..Event::default()
        }
    }

    #[tokio::test]
    async fn an_in_process_subscriber_gets_the_events_of_followed_workspaces_only() {
        let bus = EventBus::in_process();
        let (follows, mut deliveries) = bus.subscriber();
        let mut next_workspace = async || match deliveries.next().await {
            Some(Delivery::Event(event)) => event.workspace_id,
            other => panic!("unexpected {other:?}"),
        };
        assert!(follows.follow("w1").await);
        bus.publish(&typing("w2")).await.expect("publish");
        bus.publish(&typing("w1")).await.expect("publish");
        assert_eq!(next_workspace().await, "w1");
        follows.unfollow("w1");
        bus.publish(&typing("w1")).await.expect("publish");
        follows.follow("w2").await;
        bus.publish(&typing("w2")).await.expect("publish");
        let workspaces = [next_workspace().await];
        assert_eq!(workspaces, ["w2"]);
    }
}
