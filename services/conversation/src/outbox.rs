//! Getting events from the database to the bus. Durable events are published right after their
//! transaction commits and marked published; what could not be published (the bus was down)
//! stays pending and the relay publishes it, in sequence order, once the bus is back. The
//! pruner drops published events older than the retention.

use std::time::Duration;

use crawbl_infra::bus::EventBus;
use crawbl_proto::events::v1::{Event, event};
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::db;

/// How often the relay looks for pending events.
const RELAY_INTERVAL: Duration = Duration::from_secs(1);
/// Pending events younger than this are left to the publisher that wrote them.
const RELAY_GRACE_MS: i64 = 2_000;
const RELAY_BATCH: u32 = 500;
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct Outbox {
    pool: AnyPool,
    bus: EventBus,
    /// Other instances may relay from the same database (Postgres): relays take turns.
    shared_store: bool,
}

impl Outbox {
    pub fn new(pool: AnyPool, bus: EventBus, shared_store: bool) -> Self {
        Self {
            pool,
            bus,
            shared_store,
        }
    }

    /// Publishes committed durable events in order. At the first failure the rest stay pending
    /// (in order) for the relay.
    pub async fn publish(&self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            if !self.publish_one(&event).await {
                return;
            }
        }
    }

    /// Publishes an event that is not logged (typing, status, deltas): lost if the bus is down.
    pub async fn publish_volatile(&self, workspace_id: &str, kind: event::Kind) {
        self.publish_volatile_to(workspace_id, "", kind).await;
    }

    /// [`Outbox::publish_volatile`] for the sockets of one user (`to_user_id`; empty: all).
    pub async fn publish_volatile_to(
        &self,
        workspace_id: &str,
        to_user_id: &str,
        kind: event::Kind,
    ) {
        let event = Event {
            workspace_id: workspace_id.to_owned(),
            seq: 0,
            trace_context: crawbl_infra::trace::current_context(),
            to_user_id: to_user_id.to_owned(),
            kind: Some(kind),
            ..Event::default()
        };
        if let Err(error) = self.bus.publish(&event).await {
            tracing::debug!(
                error = format!("{error:#}"),
                workspace_id,
                "volatile event not published"
            );
        }
    }

    async fn publish_one(&self, event: &Event) -> bool {
        if let Err(error) = self.bus.publish(event).await {
            tracing::warn!(
                error = format!("{error:#}"),
                workspace_id = %event.workspace_id,
                seq = event.seq,
                "event not published; the relay will retry"
            );
            return false;
        }
        if let Err(error) = db::mark_published(&self.pool, event).await {
            // Published but not marked: the relay may publish it again; edges drop duplicates.
            tracing::warn!(%error, seq = event.seq, "could not mark an event published");
        }
        true
    }

    /// Publishes pending events until `shutdown`.
    pub async fn run_relay(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RELAY_INTERVAL) => {}
            }
            if let Err(error) = self.relay_once().await {
                tracing::warn!(%error, "cannot relay pending events");
            }
        }
    }

    /// Publishes what is pending, unless another instance's relay is at it: on a shared
    /// database one relay runs at a time (a transaction-scoped advisory lock), so the same
    /// events are not read and published by every instance.
    async fn relay_once(&self) -> Result<(), sqlx::Error> {
        let lock = if self.shared_store {
            let mut lock = self.pool.begin().await?;
            if !db::try_relay_lock(&mut lock).await? {
                return Ok(());
            }
            Some(lock)
        } else {
            None
        };
        let cutoff = db::now_ms() - RELAY_GRACE_MS;
        let pending = db::pending_events(&self.pool, cutoff, RELAY_BATCH).await?;
        if !pending.is_empty() {
            tracing::info!(count = pending.len(), "relaying pending events");
            self.publish(pending).await;
        }
        // Ending the transaction releases the lock.
        match lock {
            Some(lock) => lock.commit().await,
            None => Ok(()),
        }
    }

    /// Deletes published events older than `retention`, every few minutes until `shutdown`.
    pub async fn run_pruner(self, retention: Duration, shutdown: CancellationToken) {
        loop {
            let cutoff = db::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            match db::prune_events(&self.pool, cutoff).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "pruned old events"),
                Err(error) => tracing::warn!(%error, "cannot prune events"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(PRUNE_INTERVAL) => {}
            }
        }
    }
}
