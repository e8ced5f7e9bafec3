//! Getting events from the database to the bus. Right after a transaction that appended events
//! commits, [`Outbox::publish`] numbers its workspace's new events (`db::number_pending`),
//! publishes them and marks them published. Writers to one workspace that commit at the same time
//! share one numbering: while one runs, the others wait and the next covers all of them (group
//! commit, as a database does with its log). Marking them published is left to a background
//! marker, which moves each workspace's publish progress over what was published every
//! [`MARK_INTERVAL`], one statement per workspace, off the writers' path. What could not be
//! numbered or published (the process stopped, the bus was down) is left for the relay, which
//! numbers and publishes it, in order, once it can. The pruner drops published events older than the retention.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
/// How often published events are marked published. Well within [`RELAY_GRACE_MS`], so the
/// relay does not publish them again.
const MARK_INTERVAL: Duration = Duration::from_millis(50);
/// How long a published range waits for the events before it to be marked (by another instance,
/// or by the relay after a failed publish). Past it, the relay publishes it again (edges drop
/// the duplicates) and moves the progress past it.
const MARK_WAIT: Duration = Duration::from_secs(5);
/// Workspaces with events left unnumbered that one relay pass numbers.
const RELAY_WORKSPACES: u32 = 100;
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct Outbox {
    pool: AnyPool,
    bus: EventBus,
    /// Other instances may relay from the same database (Postgres): relays take turns.
    shared_store: bool,
    /// The workspaces being numbered on this instance right now.
    numbering: Arc<Mutex<HashMap<String, Arc<Numbering>>>>,
    /// Published ranges the marker has yet to mark.
    published: Arc<Mutex<Vec<Published>>>,
}

/// Events `first..=last` of a workspace, published since `at`.
#[derive(Debug, PartialEq)]
struct Published {
    workspace_id: String,
    first: u64,
    last: u64,
    at: tokio::time::Instant,
}

/// One workspace's numbering, shared by the writers that wait for it.
#[derive(Default)]
struct Numbering {
    /// Tickets handed out: a writer takes one after its commit.
    asked: AtomicU64,
    /// Held while numbering; the tickets the last numbering covered.
    covered: tokio::sync::Mutex<u64>,
}

impl Outbox {
    pub fn new(pool: AnyPool, bus: EventBus, shared_store: bool) -> Self {
        Self {
            pool,
            bus,
            shared_store,
            numbering: Arc::default(),
            published: Arc::default(),
        }
    }

    /// Numbers and publishes the workspaces' events appended by transactions that committed
    /// (`events` as they were appended, unnumbered), with whatever else of those workspaces
    /// is waiting. Returns once they are numbered and published, or left to the relay.
    pub async fn publish(&self, events: impl IntoIterator<Item = Event>) {
        let mut workspaces: Vec<String> =
            events.into_iter().map(|event| event.workspace_id).collect();
        workspaces.sort_unstable();
        workspaces.dedup();
        for workspace_id in workspaces {
            self.number_and_publish(&workspace_id).await;
        }
    }

    /// Numbers and publishes what the workspace has pending, once for every writer that asked
    /// while a numbering ran.
    async fn number_and_publish(&self, workspace_id: &str) {
        let numbering = lock(&self.numbering)
            .entry(workspace_id.to_owned())
            .or_default()
            .clone();
        // Everything committed before this ticket is covered by a numbering that starts after it.
        let ticket = numbering.asked.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut covered = numbering.covered.lock().await;
            if *covered < ticket {
                let asked = numbering.asked.load(Ordering::SeqCst);
                match db::number_pending(&self.pool, workspace_id).await {
                    Ok(events) => self.publish_numbered(events).await,
                    Err(error) => tracing::warn!(
                        %error,
                        workspace_id,
                        "events not numbered; the relay will retry"
                    ),
                }
                *covered = asked;
            }
        }
        let mut numbering_of = lock(&self.numbering);
        // The map's and this one: nobody else waits for this workspace.
        if Arc::strong_count(&numbering) == 2 {
            numbering_of.remove(workspace_id);
        }
    }

    /// Publishes numbered events in order (per workspace) and hands them to the marker. At the
    /// first failure the rest stay pending, in order, for the relay.
    async fn publish_numbered(&self, events: Vec<Event>) {
        let at = tokio::time::Instant::now();
        let mut published: Vec<Published> = Vec::new();
        for event in &events {
            if let Err(error) = self.bus.publish(event).await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    workspace_id = %event.workspace_id,
                    seq = event.seq,
                    "event not published; the relay will retry"
                );
                break;
            }
            let range = Published {
                workspace_id: event.workspace_id.clone(),
                first: event.seq,
                last: event.seq,
                at,
            };
            extend_ranges(&mut published, range);
        }
        lock(&self.published).extend(published);
    }

    /// Marks what was published, every [`MARK_INTERVAL`], until `shutdown` (then once more).
    pub async fn run_marker(self, shutdown: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                () = shutdown.cancelled() => true,
                () = tokio::time::sleep(MARK_INTERVAL) => false,
            };
            self.mark_published().await;
            if stopping {
                return;
            }
        }
    }

    /// Moves each workspace's publish progress over what was published. A range that does not
    /// follow the progress yet waits for the next pass, up to [`MARK_WAIT`].
    async fn mark_published(&self) {
        let mut taken = std::mem::take(&mut *lock(&self.published));
        taken.sort_by(|a, b| (&a.workspace_id, a.first).cmp(&(&b.workspace_id, b.first)));
        let mut ranges: Vec<Published> = Vec::new();
        for range in taken {
            extend_ranges(&mut ranges, range);
        }
        let mut waiting: Vec<Published> = Vec::new();
        for range in ranges {
            // A later range of a workspace cannot follow while an earlier one waits.
            let behind = waiting
                .last()
                .is_some_and(|earlier| earlier.workspace_id == range.workspace_id);
            let marked = !behind
                && db::mark_published(&self.pool, &range.workspace_id, range.first, range.last)
                    .await
                    .unwrap_or_else(|error| {
                        tracing::warn!(
                            %error,
                            workspace_id = range.workspace_id,
                            "could not mark events published"
                        );
                        false
                    });
            // Past the wait, left to the relay: it publishes them again; edges drop duplicates.
            if !marked && range.at.elapsed() < MARK_WAIT {
                waiting.push(range);
            }
        }
        let mut published = lock(&self.published);
        waiting.append(&mut published);
        *published = waiting;
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

    /// Numbers and publishes what is pending, unless another instance's relay is at it: on a shared
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
        for workspace_id in
            db::workspaces_with_unnumbered(&self.pool, cutoff, RELAY_WORKSPACES).await?
        {
            tracing::info!(workspace_id, "numbering events left unnumbered");
            self.number_and_publish(&workspace_id).await;
        }
        // What was just published (old events among it) is not to be read as pending.
        self.mark_published().await;
        let pending = db::pending_events(&self.pool, cutoff, RELAY_BATCH).await?;
        if !pending.is_empty() {
            tracing::info!(count = pending.len(), "relaying pending events");
            self.publish_numbered(pending).await;
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

/// Adds `range` to `ranges`: to the last range when it continues it (ranges of one workspace come
/// in order; a gap, where a publish failed, starts a new one).
fn extend_ranges(ranges: &mut Vec<Published>, range: Published) {
    match ranges.last_mut() {
        Some(last) if last.workspace_id == range.workspace_id && last.last + 1 == range.first => {
            last.last = range.last;
            last.at = last.at.min(range.at);
        }
        _ => ranges.push(range),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use crawbl_proto::conversation::v1::Message;
    use futures::StreamExt as _;

    use super::*;

    async fn append(pool: &AnyPool, message_id: &str) -> Event {
        let mut tx = pool.begin().await.expect("begin");
        let message = Message {
            id: message_id.to_owned(),
            ..Message::default()
        };
        let (event, _) = db::append_event(&mut tx, "w", event::Kind::MessageNew(message))
            .await
            .expect("append");
        tx.commit().await.expect("commit");
        event
    }

    fn message_id(event: &Event) -> &str {
        match &event.kind {
            Some(event::Kind::MessageNew(message)) => &message.id,
            other => panic!("not a message.new: {other:?}"),
        }
    }

    /// Events above their workspace's publish progress.
    async fn unpublished(pool: &AnyPool) -> i64 {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM events e
             LEFT JOIN workspace_sequences s ON s.workspace_id = e.workspace_id
             WHERE e.seq IS NULL OR s.published_seq IS NULL OR e.seq > s.published_seq",
        )
        .fetch_one(pool)
        .await
        .expect("count")
    }

    /// A fresh SQLite database in its own folder (removed by the caller).
    async fn database() -> (AnyPool, std::path::PathBuf) {
        let folder = std::env::temp_dir().join(format!("outbox-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/c.db?mode=rwc", folder.display());
        let pool = crawbl_infra::db::connect(&url, crate::migrations())
            .await
            .expect("database");
        (pool, folder)
    }

    fn range(first: u64, last: u64, at: tokio::time::Instant) -> Published {
        Published {
            workspace_id: "w".to_owned(),
            first,
            last,
            at,
        }
    }

    #[tokio::test]
    async fn events_left_unnumbered_are_numbered_in_append_order_and_published_once_old_enough() {
        let (pool, folder) = database().await;
        let bus = EventBus::in_process();
        let mut published = bus.subscribe();
        let outbox = Outbox::new(pool.clone(), bus, false);

        // An instance that stopped between its commits and their numbering.
        for id in ["m1", "m2", "m3"] {
            append(&pool, id).await;
        }
        outbox.relay_once().await.expect("relay");
        let nothing = tokio::time::timeout(Duration::from_millis(200), published.next()).await;
        assert!(nothing.is_err(), "left to their writer while young");

        sqlx::query("UPDATE events SET created_at = created_at - 10000")
            .execute(&pool)
            .await
            .expect("age");
        outbox.relay_once().await.expect("relay");
        // A writer's publish numbers whatever else of its workspace committed before it.
        let late = append(&pool, "m4").await;
        append(&pool, "m5").await;
        outbox.publish([late]).await;

        let mut seen = Vec::new();
        for _ in 0..5 {
            let event = tokio::time::timeout(Duration::from_secs(5), published.next())
                .await
                .expect("published")
                .expect("open");
            seen.push((event.seq, message_id(&event).to_owned()));
        }
        let expected: Vec<(u64, String)> = (1..=5).map(|n| (n, format!("m{n}"))).collect();
        assert_eq!(seen, expected);

        let (logged, _) = db::list_events(&pool, "w", 0, 10).await.expect("list");
        let logged: Vec<u64> = logged.iter().map(|event| event.seq).collect();
        assert_eq!(logged, [1, 2, 3, 4, 5]);
        assert_eq!(
            db::sequence_bounds(&pool, "w").await.expect("bounds"),
            (1, 5)
        );
        // The relay marked what it published; the writer's are the marker's to mark.
        assert_eq!(unpublished(&pool).await, 2);
        outbox.mark_published().await;
        assert_eq!(unpublished(&pool).await, 0);
        let _ = std::fs::remove_dir_all(folder);
    }

    #[tokio::test]
    async fn a_range_published_ahead_of_an_earlier_one_waits_for_it_then_for_the_relay() {
        let (pool, folder) = database().await;
        let outbox = Outbox::new(pool.clone(), EventBus::in_process(), false);
        for id in ["m1", "m2", "m3", "m4"] {
            append(&pool, id).await;
        }
        db::number_pending(&pool, "w").await.expect("number");
        let now = tokio::time::Instant::now();

        // Another instance published 1..=2 and has not marked them yet; this one published 3.
        lock(&outbox.published).push(range(3, 3, now));
        outbox.mark_published().await;
        assert_eq!(
            unpublished(&pool).await,
            4,
            "3 does not follow the progress"
        );
        assert_eq!(*lock(&outbox.published), [range(3, 3, now)]);
        assert!(db::mark_published(&pool, "w", 1, 2).await.expect("mark"));
        outbox.mark_published().await;
        assert_eq!(unpublished(&pool).await, 1);
        assert!(lock(&outbox.published).is_empty());

        // A range behind a gap no one fills (a failed publish) waits at most MARK_WAIT; the
        // progress never passes the gap.
        let long_ago = now.checked_sub(MARK_WAIT * 2).expect("an instant long ago");
        lock(&outbox.published).push(range(5, 5, long_ago));
        outbox.mark_published().await;
        assert!(lock(&outbox.published).is_empty(), "left to the relay");
        assert_eq!(unpublished(&pool).await, 1);
        // Already passed (the relay published it again): nothing to wait for.
        assert!(db::mark_published(&pool, "w", 4, 4).await.expect("mark"));
        lock(&outbox.published).push(range(4, 4, now));
        outbox.mark_published().await;
        assert!(lock(&outbox.published).is_empty());
        assert_eq!(unpublished(&pool).await, 0);
        let _ = std::fs::remove_dir_all(folder);
    }

    #[test]
    fn published_ranges_join_only_where_they_continue() {
        let at = tokio::time::Instant::now();
        let published = |workspace: &str, first, last| Published {
            workspace_id: workspace.to_owned(),
            first,
            last,
            at,
        };
        let mut ranges = Vec::new();
        for (workspace, first, last) in [("a", 1, 2), ("a", 3, 3), ("a", 5, 6), ("b", 7, 7)] {
            extend_ranges(&mut ranges, published(workspace, first, last));
        }
        let expected = [("a", 1, 3), ("a", 5, 6), ("b", 7, 7)]
            .map(|(workspace, first, last)| published(workspace, first, last));
        assert_eq!(ranges, expected);
    }
}
