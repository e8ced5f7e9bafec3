//! The event bus between services (publishers) and edges (subscribers).
//!
//! With `REDIS_URL`, events go through Redis pub/sub, one channel per workspace, so every edge
//! node receives them; without it, through an in-process broadcast channel (the embedded default,
//! where every component runs in one process). Events are protobuf-encoded [`Event`] envelopes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use crawbl_proto::events::v1::Event;
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message as _;
use redis::aio::ConnectionManager;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};

/// Events an in-process subscriber may fall behind by before it starts losing them.
const IN_PROCESS_CAPACITY: usize = 4096;
/// Events read from Redis and not yet taken by the subscriber.
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

#[derive(Clone)]
pub enum EventBus {
    InProcess(broadcast::Sender<Event>),
    Redis {
        client: redis::Client,
        publisher: ConnectionManager,
        /// Unix ms until which publishes fail fast (0: Redis is believed up).
        failing_until_ms: Arc<AtomicU64>,
    },
}

impl EventBus {
    pub fn in_process() -> Self {
        Self::InProcess(broadcast::channel(IN_PROCESS_CAPACITY).0)
    }

    /// Connects to Redis at `url`; fails when it cannot be reached.
    pub async fn redis(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .with_context(|| format!("invalid REDIS_URL {:?}", crate::db::redact(url)))?;
        let publisher = ConnectionManager::new(client.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot connect to Redis at {:?}; is it running?",
                    crate::db::redact(url)
                )
            })?;
        Ok(Self::Redis {
            client,
            publisher,
            failing_until_ms: Arc::default(),
        })
    }

    /// Redis when `url` is given, in-process otherwise.
    pub async fn from_url(url: Option<&str>) -> anyhow::Result<Self> {
        match url {
            Some(url) => Self::redis(url).await,
            None => Ok(Self::in_process()),
        }
    }

    /// The bus of a component run alone: Redis when `url` is given; otherwise in-process,
    /// saying once that events then do not cross process boundaries.
    pub async fn for_standalone(url: Option<&str>, component: &str) -> anyhow::Result<Self> {
        if url.is_none() {
            tracing::warn!(
                component,
                "REDIS_URL is not set: live events stay inside this process (no other component \
                 sends or receives them); everything else works"
            );
        }
        Self::from_url(url).await
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::InProcess(_) => "in-process",
            Self::Redis { .. } => "redis",
        }
    }

    /// Publishes `event` on its workspace's channel. Events of one publisher arrive in the
    /// order they were published.
    #[tracing::instrument(name = "bus.publish", skip_all, fields(bus = self.kind(), workspace_id = %event.workspace_id, seq = event.seq))]
    pub async fn publish(&self, event: &Event) -> anyhow::Result<()> {
        let published = self.publish_unmetered(event).await;
        let metrics = crate::metrics::events();
        match &published {
            Ok(()) => metrics.published.inc(),
            Err(_) => metrics.publish_failures.inc(),
        }
        published
    }

    async fn publish_unmetered(&self, event: &Event) -> anyhow::Result<()> {
        match self {
            Self::InProcess(sender) => {
                // No subscriber yet is not an error: nobody is listening.
                let _ = sender.send(event.clone());
                Ok(())
            }
            Self::Redis {
                publisher,
                failing_until_ms,
                ..
            } => {
                let now = unix_ms();
                if now < failing_until_ms.load(Ordering::Relaxed) {
                    anyhow::bail!(
                        "Redis failed a moment ago; not publishing until it has had time to recover"
                    );
                }
                let mut connection = publisher.clone();
                let mut command = redis::cmd("PUBLISH");
                command
                    .arg(workspace_channel(&event.workspace_id))
                    .arg(event.encode_to_vec());
                let publish = command.query_async::<i64>(&mut connection);
                let outcome = match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
                    Ok(result) => result.context("publishing an event to Redis").map(drop),
                    Err(_) => Err(anyhow::anyhow!("publishing an event to Redis timed out")),
                };
                if outcome.is_err() {
                    let backoff =
                        u64::try_from(BACKOFF_AFTER_FAILURE.as_millis()).unwrap_or(u64::MAX);
                    failing_until_ms.store(unix_ms() + backoff, Ordering::Relaxed);
                }
                outcome
            }
        }
    }

    /// Every event published from now on, for as long as the stream is held. A Redis
    /// subscription reconnects by itself after Redis restarts.
    pub fn subscribe(&self) -> BoxStream<'static, Event> {
        match self {
            Self::InProcess(sender) => BroadcastStream::new(sender.subscribe())
                .filter_map(|item| async move {
                    match item {
                        Ok(event) => Some(event),
                        Err(error) => {
                            tracing::warn!(%error, "in-process event subscriber fell behind");
                            let BroadcastStreamRecvError::Lagged(missed) = error;
                            crate::metrics::events_dropped("lagged", missed);
                            None
                        }
                    }
                })
                .boxed(),
            Self::Redis { client, .. } => {
                let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
                tokio::spawn(relay_from_redis(client.clone(), sender));
                ReceiverStream::new(receiver).boxed()
            }
        }
    }
}

async fn relay_from_redis(client: redis::Client, sender: mpsc::Sender<Event>) {
    let mut backoff = Duration::from_millis(100);
    let mut subscribed_before = false;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.psubscribe(format!("{CHANNEL_PREFIX}*")).await {
                Ok(()) => {
                    tracing::info!("subscribed to workspace events on Redis");
                    if std::mem::replace(&mut subscribed_before, true) {
                        crate::metrics::redis_reconnected("events");
                    }
                    backoff = Duration::from_millis(100);
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        match Event::decode(message.get_payload_bytes()) {
                            Ok(event) => {
                                if sender.send(event).await.is_err() {
                                    return; // The subscriber is gone.
                                }
                            }
                            Err(error) => {
                                crate::metrics::events_dropped("undecodable", 1);
                                tracing::warn!(%error, channel = message.get_channel_name(), "dropping an undecodable event");
                            }
                        }
                    }
                    tracing::warn!("lost the Redis event subscription; reconnecting");
                }
                Err(error) => tracing::warn!(%error, "cannot subscribe to Redis events; retrying"),
            },
            Err(error) => tracing::warn!(%error, "cannot reach Redis for events; retrying"),
        }
        if sender.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}
