//! The Redis side of a bus subscriber: one RESP3 connection whose subscriptions follow the
//! workspaces the subscriber follows. Subscribing and unsubscribing happen on the connection that
//! messages arrive on (RESP3 push messages), so both go on while messages are read.
//!
//! The connection is replaced when it breaks (a disconnection push, a failed command, a heartbeat
//! without answer); the new one subscribes to every followed workspace again and the subscriber
//! is told [`Delivery::Missed`]: what was published in between is gone from pub/sub and must come
//! from the log.

use std::time::Duration;

use crawbl_proto::events::v1::Event;
use prost::Message as _;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use tokio::sync::{mpsc, oneshot};

use super::{CHANNEL_PREFIX, Channels, Delivery, Followed, Follows, workspace_channel};

/// How long one Redis command may take before the connection is considered broken.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle connection is checked, so a lost one is noticed without traffic.
const HEARTBEAT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Channels per `SUBSCRIBE` when subscribing to everything again.
const SUBSCRIBE_BATCH: usize = 100;

pub(super) enum Command {
    /// Subscribe; answer whether the subscription is in place.
    Follow(String, oneshot::Sender<bool>),
    Unfollow(String),
}

pub(super) struct Subscription {
    pub client: redis::Client,
    pub channels: Channels,
    /// Events stamped with it were published by this process and delivered in-process already.
    pub origin: String,
    pub followed: Followed,
    pub output: mpsc::UnboundedSender<Delivery>,
}

/// A live connection and the push messages it receives.
struct Link {
    connection: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

/// Keeps the subscription in step with the followed workspaces until the [`Follows`] handles
/// are all dropped.
pub(super) async fn run(
    subscription: Subscription,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut link: Option<Link> = None;
    let mut backoff = MIN_BACKOFF;
    let mut outage_reported = false;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(current) = link.as_mut() else {
            match connect(&subscription).await {
                Ok(new_link) => {
                    let followed = subscription_count(&subscription.followed);
                    if outage_reported {
                        crate::metrics::redis_reconnected("events");
                        tracing::info!(
                            workspaces = followed,
                            "event subscription to Redis is back"
                        );
                    } else {
                        tracing::info!(
                            workspaces = followed,
                            "subscribed to workspace events on Redis"
                        );
                    }
                    outage_reported = false;
                    backoff = MIN_BACKOFF;
                    link = Some(new_link);
                    if subscription.output.send(Delivery::Missed).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    if !outage_reported {
                        tracing::warn!(%error, "cannot subscribe to workspace events on Redis; retrying");
                        outage_reported = true;
                    }
                    // Commands keep coming while Redis is away: they change what the next
                    // connection subscribes to.
                    let retry = tokio::time::sleep(backoff);
                    tokio::pin!(retry);
                    loop {
                        tokio::select! {
                            () = &mut retry => break,
                            command = commands.recv() => match command {
                                None => return,
                                Some(Command::Follow(_, reply)) => {
                                    let _ = reply.send(false);
                                }
                                Some(Command::Unfollow(_)) => {}
                            },
                        }
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        let healthy = tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(command) => apply(current, subscription.channels, command).await,
            },
            push = current.pushes.recv() => match push {
                Some(push) => forward(push, &subscription),
                None => false,
            },
            _ = heartbeat.tick() => ping(current).await,
        };
        if !healthy {
            tracing::warn!("lost the event subscription to Redis; reconnecting");
            outage_reported = true;
            link = None;
        }
    }
}

/// A new connection subscribed to every followed workspace.
async fn connect(subscription: &Subscription) -> redis::RedisResult<Link> {
    let (sender, pushes) = mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_push_sender(sender)
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    let mut connection = subscription
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let channels: Vec<String> = match subscription.followed.read() {
        Ok(set) => set.iter().map(|id| workspace_channel(id)).collect(),
        Err(poisoned) => poisoned
            .into_inner()
            .iter()
            .map(|id| workspace_channel(id))
            .collect(),
    };
    match subscription.channels {
        Channels::Classic => {
            for batch in channels.chunks(SUBSCRIBE_BATCH) {
                connection.subscribe(batch).await?;
            }
        }
        // Sharded channels of one command must share a hash slot: one at a time.
        Channels::Sharded => {
            for channel in &channels {
                sharded(&mut connection, "SSUBSCRIBE", channel).await?;
            }
        }
    }
    Ok(Link { connection, pushes })
}

/// Applies a command; false when the connection failed.
async fn apply(link: &mut Link, channels: Channels, command: Command) -> bool {
    let connection = &mut link.connection;
    match command {
        Command::Follow(workspace_id, reply) => {
            let channel = workspace_channel(&workspace_id);
            let result = match channels {
                Channels::Classic => connection.subscribe(&channel).await,
                Channels::Sharded => sharded(connection, "SSUBSCRIBE", &channel).await,
            };
            let _ = reply.send(result.is_ok());
            if let Err(error) = result {
                tracing::warn!(%error, %channel, "cannot subscribe to a workspace's events");
                return false;
            }
        }
        Command::Unfollow(workspace_id) => {
            let channel = workspace_channel(&workspace_id);
            let result = match channels {
                Channels::Classic => connection.unsubscribe(&channel).await,
                Channels::Sharded => sharded(connection, "SUNSUBSCRIBE", &channel).await,
            };
            if let Err(error) = result {
                tracing::warn!(%error, %channel, "cannot unsubscribe from a workspace's events");
                return false;
            }
        }
    }
    true
}

/// `SSUBSCRIBE`/`SUNSUBSCRIBE` of one channel. redis-rs has no method for them outside its
/// cluster client; on RESP3 the single confirmation push is the command's reply.
async fn sharded(
    connection: &mut MultiplexedConnection,
    command: &str,
    channel: &str,
) -> redis::RedisResult<()> {
    redis::cmd(command)
        .arg(channel)
        .query_async::<()>(connection)
        .await
}

async fn ping(link: &mut Link) -> bool {
    redis::cmd("PING")
        .query_async::<()>(&mut link.connection)
        .await
        .is_ok()
}

/// Hands a pub/sub message to the subscriber; false when the connection ended.
fn forward(push: PushInfo, subscription: &Subscription) -> bool {
    match push.kind {
        PushKind::Message | PushKind::SMessage => {}
        PushKind::Disconnection => return false,
        _ => return true,
    }
    let mut data = push.data.into_iter();
    let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
        return true;
    };
    let Ok(payload) = redis::from_redis_value::<Vec<u8>>(payload) else {
        tracing::warn!("dropping a malformed pub/sub message");
        return true;
    };
    match Event::decode(payload.as_slice()) {
        Ok(event) => {
            let own = !event.origin.is_empty() && event.origin == subscription.origin;
            if !own && Follows::follows(&subscription.followed, &event.workspace_id) {
                let _ = subscription.output.send(Delivery::Event(Box::new(event)));
            }
        }
        Err(error) => {
            let channel = redis::from_redis_value::<String>(channel).unwrap_or_default();
            tracing::warn!(%error, %channel, "dropping an undecodable event");
        }
    }
    true
}

fn subscription_count(followed: &Followed) -> usize {
    match followed.read() {
        Ok(set) => set.len(),
        Err(poisoned) => poisoned.into_inner().len(),
    }
}

/// Every workspace's events through a pattern subscription, reconnecting after Redis restarts
/// (see [`super::EventBus::subscribe`]).
pub(super) async fn every_workspace(client: redis::Client, sender: mpsc::Sender<Event>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let (push_sender, mut pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_push_sender(push_sender)
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(mut connection) => match connection.psubscribe(format!("{CHANNEL_PREFIX}*")).await {
                Ok(()) => {
                    backoff = MIN_BACKOFF;
                    while let Some(push) = pushes.recv().await {
                        if push.kind == PushKind::Disconnection {
                            break;
                        }
                        if push.kind != PushKind::PMessage {
                            continue;
                        }
                        // [pattern, channel, payload]
                        let Some(payload) = push.data.into_iter().nth(2) else {
                            continue;
                        };
                        let Ok(payload) = redis::from_redis_value::<Vec<u8>>(payload) else {
                            continue;
                        };
                        match Event::decode(payload.as_slice()) {
                            Ok(event) => {
                                if sender.send(event).await.is_err() {
                                    return; // The subscriber is gone.
                                }
                            }
                            Err(error) => tracing::warn!(%error, "dropping an undecodable event"),
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
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
