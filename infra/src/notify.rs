//! Small control messages broadcast on one named channel to every subscriber, in any process:
//! Redis pub/sub with `REDIS_URL`, an in-process broadcast otherwise (the embedded default).
//!
//! Delivery is at most once, like Redis pub/sub: a subscriber is told [`Notice::Resync`] whenever
//! it may have missed messages (when it first subscribes, after every reconnect to Redis, after
//! falling behind in-process), and must then rebuild what it derives from the messages from the
//! source of truth. Payloads are opaque bytes (the callers use protobuf).

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::aio::ConnectionManager;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};

const IN_PROCESS_CAPACITY: usize = 1024;
const SUBSCRIBER_BUFFER: usize = 1024;
/// A publish that takes longer fails, so a Redis outage cannot stall the publisher.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Messages may have been missed before this point: rebuild derived state.
    Resync,
    Message(Vec<u8>),
}

#[derive(Clone)]
pub enum Notifier {
    InProcess(broadcast::Sender<Vec<u8>>),
    Redis {
        client: redis::Client,
        publisher: ConnectionManager,
        channel: String,
    },
}

impl Notifier {
    pub fn in_process() -> Self {
        Self::InProcess(broadcast::channel(IN_PROCESS_CAPACITY).0)
    }

    /// The Redis channel `channel` at `url`; fails when Redis cannot be reached.
    pub async fn redis(url: &str, channel: &str) -> anyhow::Result<Self> {
        let client = crate::redis_client::client(url)?;
        let publisher = crate::redis_client::connection_manager(&client, url).await?;
        Ok(Self::Redis {
            client,
            publisher,
            channel: channel.to_owned(),
        })
    }

    /// Redis when `url` is given, in-process otherwise.
    pub async fn from_url(url: Option<&str>, channel: &str) -> anyhow::Result<Self> {
        match url {
            Some(url) => Self::redis(url, channel).await,
            None => Ok(Self::in_process()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::InProcess(_) => "in-process",
            Self::Redis { .. } => "redis",
        }
    }

    /// Sends `payload` to every current subscriber.
    pub async fn publish(&self, payload: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Self::InProcess(sender) => {
                // No subscriber is not an error: nobody is listening.
                let _ = sender.send(payload);
                Ok(())
            }
            Self::Redis {
                publisher, channel, ..
            } => {
                let mut connection = publisher.clone();
                let mut command = redis::cmd("PUBLISH");
                command.arg(channel).arg(payload);
                let publish = command.query_async::<i64>(&mut connection);
                tokio::time::timeout(PUBLISH_TIMEOUT, publish)
                    .await
                    .context("publishing to Redis timed out")?
                    .context("publishing to Redis")?;
                Ok(())
            }
        }
    }

    /// [`Notice::Resync`], then every message published from now on, for as long as the stream
    /// is held. A Redis subscription reconnects by itself, with a `Resync` each time.
    pub fn subscribe(&self) -> BoxStream<'static, Notice> {
        match self {
            Self::InProcess(sender) => {
                let messages = BroadcastStream::new(sender.subscribe()).map(|item| match item {
                    Ok(payload) => Notice::Message(payload),
                    Err(error) => {
                        tracing::warn!(%error, "in-process subscriber fell behind; resyncing");
                        Notice::Resync
                    }
                });
                futures::stream::once(async { Notice::Resync })
                    .chain(messages)
                    .boxed()
            }
            Self::Redis {
                client, channel, ..
            } => {
                let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
                tokio::spawn(relay_from_redis(client.clone(), channel.clone(), sender));
                ReceiverStream::new(receiver).boxed()
            }
        }
    }
}

async fn relay_from_redis(client: redis::Client, channel: String, sender: mpsc::Sender<Notice>) {
    let mut backoff = Duration::from_millis(100);
    let mut subscribed_before = false;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    tracing::info!(%channel, "subscribed on Redis");
                    if std::mem::replace(&mut subscribed_before, true) {
                        crate::metrics::redis_reconnected("notifier");
                    }
                    backoff = Duration::from_millis(100);
                    if sender.send(Notice::Resync).await.is_err() {
                        return;
                    }
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let notice = Notice::Message(message.get_payload_bytes().to_vec());
                        if sender.send(notice).await.is_err() {
                            return; // The subscriber is gone.
                        }
                    }
                    tracing::warn!(%channel, "lost the Redis subscription; reconnecting");
                }
                Err(error) => {
                    tracing::warn!(%error, %channel, "cannot subscribe on Redis; retrying")
                }
            },
            Err(error) => tracing::warn!(%error, %channel, "cannot reach Redis; retrying"),
        }
        if sender.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_subscribers_start_with_a_resync_then_get_every_message() {
        let notifier = Notifier::in_process();
        let mut first = notifier.subscribe();
        let mut second = notifier.subscribe();
        notifier.publish(b"one".to_vec()).await.expect("publish");
        notifier.publish(b"two".to_vec()).await.expect("publish");
        for stream in [&mut first, &mut second] {
            assert_eq!(stream.next().await, Some(Notice::Resync));
            assert_eq!(stream.next().await, Some(Notice::Message(b"one".to_vec())));
            assert_eq!(stream.next().await, Some(Notice::Message(b"two".to_vec())));
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_resync() {
        let notifier = Notifier::in_process();
        let mut slow = notifier.subscribe();
        for index in 0..IN_PROCESS_CAPACITY + 10 {
            notifier
                .publish(index.to_le_bytes().to_vec())
                .await
                .expect("publish");
        }
        assert_eq!(slow.next().await, Some(Notice::Resync));
        assert_eq!(slow.next().await, Some(Notice::Resync));
    }
}
