//! Running durable turns (see [`crate::db::ClaimedTurn`]) on this instance: a loop claims queued
//! turns that may run now (one per conversation, in send order, across every instance), takes
//! over turns whose owner's lease lapsed, and runs each claimed turn while renewing its lease.
//!
//! The instance that stored a message starts its turn at once when it may run, and an instance
//! that ends a turn starts the conversation's next one, so turns run where they are queued and
//! ended, without waiting. Beyond that the loop polls: for turns whose instance could not start
//! them (it died right after the commit) once they are [`QUEUE_GRACE`] old, and for turns whose
//! owner stopped renewing its lease. A turn whose lease cannot be renewed (it was deleted with
//! its conversation, or another instance took it over) is cancelled here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crawbl_proto::conversation::v1::Message;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crawbl_infra::notify::{Notice, Notifier};
use futures::StreamExt as _;

use crate::db::{self, ClaimedTurn, Lease, Queued, TurnFence};
use crate::turn::{self, TurnDeps};

/// How long a polling instance leaves a queued turn to the instance that stored it.
pub const QUEUE_GRACE: Duration = Duration::from_secs(1);

/// How turns are leased and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnSettings {
    /// `TURN_LEASE_MS`: how long a turn stays its owner's without a renewal; renewed every third
    /// of it. A turn of an instance that died is taken over this long after its last renewal.
    pub lease: Duration,
    /// `TURN_POLL_MS`: how often turns queued or orphaned elsewhere are looked for.
    pub poll: Duration,
    /// `TURNS_PER_INSTANCE`: turns this instance runs at once at most.
    pub max_running: usize,
    /// `TURNS_PER_WORKSPACE`: turns one workspace runs at once at most, across every instance;
    /// more wait, in send order.
    pub per_workspace: u32,
    /// Only this instance uses the database (SQLite): every running turn found at start is an
    /// orphan of a previous run (see [`Scheduler::settle_orphans_of_a_previous_run`]).
    pub sole_instance: bool,
}

impl Default for TurnSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(10),
            poll: Duration::from_millis(500),
            max_running: 256,
            per_workspace: 4,
            sole_instance: false,
        }
    }
}

/// A turn running on this instance.
struct Running {
    workspace_id: String,
    conversation_id: String,
    /// Ends the turn with nothing more written (deleted, or no longer ours).
    cancel: CancellationToken,
    /// Stops the turn at a person's request: its reply ends `cancelled`.
    stop: CancellationToken,
}

#[derive(Clone)]
pub struct Scheduler {
    deps: TurnDeps,
    settings: TurnSettings,
    /// This instance, as turn owner.
    instance: Arc<str>,
    /// User message ids whose turn ended here, for `?wait=true` callers on this instance.
    ended: broadcast::Sender<String>,
    /// The turns running here, by turn id.
    running: Arc<Mutex<HashMap<String, Running>>>,
    /// Asks every instance to stop a turn (its id), so the cancel reaches whichever runs it.
    stops: Notifier,
    tracker: TaskTracker,
}

impl Scheduler {
    pub fn new(deps: TurnDeps, settings: TurnSettings, stops: Notifier) -> Self {
        let instance = format!("conversation-{}", uuid::Uuid::new_v4().simple());
        Self {
            deps,
            settings,
            instance: Arc::from(instance),
            ended: broadcast::channel(1024).0,
            running: Arc::default(),
            stops,
            tracker: TaskTracker::new(),
        }
    }

    /// Asks the instance running `turn_id` (any, this one included) to stop it now. The turn's
    /// row already says so, which its owner also reads at its next lease renewal: a stop is not
    /// lost when the notice is.
    pub async fn stop_turn(&self, turn_id: &str) {
        self.stop_here(turn_id);
        if let Err(error) = self.stops.publish(turn_id.as_bytes().to_vec()).await {
            tracing::warn!(
                error = format!("{error:#}"),
                turn_id,
                "cannot announce a stop; its owner sees it at its next renewal"
            );
        }
    }

    fn stop_here(&self, turn_id: &str) {
        if let Some(running) = self.lock().get(turn_id) {
            running.stop.cancel();
        }
    }

    /// Stops the turns running here that someone asked to stop, as announced; after a gap in
    /// the announcements, from the database.
    pub async fn follow_stops(self, shutdown: CancellationToken) {
        let mut notices = self.stops.subscribe();
        loop {
            let notice = tokio::select! {
                () = shutdown.cancelled() => return,
                notice = notices.next() => notice,
            };
            match notice {
                Some(Notice::Message(turn_id)) => {
                    self.stop_here(&String::from_utf8_lossy(&turn_id));
                }
                Some(Notice::Resync) => self.stop_requested_here().await,
                None => return,
            }
        }
    }

    async fn stop_requested_here(&self) {
        let here: Vec<String> = self.lock().keys().cloned().collect();
        match db::cancel_requested(&self.deps.pool, &here).await {
            Ok(requested) => requested.iter().for_each(|turn_id| self.stop_here(turn_id)),
            Err(error) => tracing::debug!(%error, "cannot read requested stops"),
        }
    }

    /// The running turns, so shutdown can wait for them.
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// Starts the next turn here of each of `agent_ids` in the conversation, those that may run
    /// now (no earlier turn of their agent in the conversation is open) and no other instance
    /// took first.
    pub fn start_next(&self, workspace_id: &str, conversation_id: &str, agent_ids: Vec<String>) {
        if self.tracker.is_closed() {
            // Shutting down: what is queued waits for the next instance (see `run`).
            return;
        }
        let capacity = self.capacity();
        if capacity == 0 {
            return; // A poll will find it.
        }
        // The workspace is known to be full without asking the database: the end of one of
        // its turns here starts the next.
        let running_here = (self.lock().values())
            .filter(|running| running.workspace_id == workspace_id)
            .count();
        if running_here >= self.settings.per_workspace as usize {
            return;
        }
        let scheduler = self.clone();
        let conversation_id = conversation_id.to_owned();
        self.tracker.spawn(async move {
            let claimed = db::claim_queued(
                &scheduler.deps.pool,
                &scheduler.instance,
                scheduler.lease_ms(),
                Queued::Heads {
                    conversation_id: &conversation_id,
                    agent_ids: &agent_ids,
                },
                (capacity, i64::from(scheduler.settings.per_workspace)),
            )
            .await;
            match claimed {
                Ok(claimed) => claimed.into_iter().for_each(|turn| scheduler.start(turn)),
                Err(error) => tracing::debug!(%error, "cannot claim a queued turn; a poll will"),
            }
        });
    }

    /// Cancels the conversation's turn running on this instance (its queued turns went with its
    /// rows; a turn running on another instance stops when its lease renewal finds it gone).
    pub fn cancel_conversation(&self, conversation_id: &str) {
        for running in self.lock().values() {
            if running.conversation_id == conversation_id {
                running.cancel.cancel();
            }
        }
    }

    /// Waits until the turns answering `user_message_id` (only `agent_id`'s, when given) have
    /// ended, wherever they run, and returns their replies, oldest first. Ends of turns here
    /// wake it at once; turns elsewhere are polled for.
    pub async fn wait_for_replies(
        &self,
        user_message_id: &str,
        agent_id: Option<&str>,
    ) -> Result<Vec<Message>, sqlx::Error> {
        self.wait_for_replies_polling(user_message_id, agent_id, self.settings.poll)
            .await
    }

    /// [`Scheduler::wait_for_replies`], looking at turns elsewhere every `poll`.
    pub async fn wait_for_replies_polling(
        &self,
        user_message_id: &str,
        agent_id: Option<&str>,
        poll: Duration,
    ) -> Result<Vec<Message>, sqlx::Error> {
        let mut ended = self.ended.subscribe();
        let pool = &self.deps.pool;
        loop {
            if !db::turn_open(pool, user_message_id, agent_id).await? {
                return match agent_id {
                    Some(agent_id) => Ok(db::find_reply(pool, user_message_id, agent_id)
                        .await?
                        .into_iter()
                        .collect()),
                    None => db::find_replies(pool, user_message_id).await,
                };
            }
            let poll = tokio::time::sleep(poll);
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    () = &mut poll => break,
                    id = ended.recv() => match id {
                        Ok(id) if id != user_message_id => continue,
                        // This one, or missed ends (lagged): look again.
                        _ => break,
                    },
                }
            }
        }
    }

    /// Claims and runs turns until `shutdown`; turns already running are left to finish (the
    /// caller waits for them through [`Scheduler::tracker`]). From then on no turn starts here,
    /// not even the next of a conversation whose turn ends during the grace: started, it would
    /// outlive the grace or fail against services stopping too (a shutdown with runtime-proxy
    /// going down failed every queued turn of a busy instance, one after another); queued, it
    /// runs on the next instance.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.tracker.close();
                    return;
                }
                () = tokio::time::sleep(self.settings.poll) => {}
            }
            self.take_over(db::now_ms()).await;
            self.claim().await;
        }
    }

    /// With a database only this instance uses, every turn still running is an orphan of a
    /// previous run: settle them now, before serving, rather than when their leases lapse.
    pub async fn settle_orphans_of_a_previous_run(&self) {
        if self.settings.sole_instance {
            self.take_over(i64::MAX).await;
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX)
    }

    fn capacity(&self) -> u32 {
        let free = self.settings.max_running.saturating_sub(self.lock().len());
        u32::try_from(free).unwrap_or(u32::MAX)
    }

    /// Settles turns whose owner is gone: see [`turn::settle_orphan`].
    async fn take_over(&self, expired_before: i64) {
        let capacity = self.capacity();
        if capacity == 0 {
            return;
        }
        let pool = &self.deps.pool;
        match db::take_over_expired(
            pool,
            &self.instance,
            self.lease_ms(),
            expired_before,
            capacity,
        )
        .await
        {
            Ok(orphans) => {
                for orphan in orphans {
                    tracing::warn!(
                        turn_id = %orphan.fence.turn_id,
                        conversation_id = %orphan.conversation_id,
                        attempts = orphan.attempts,
                        "took over a turn whose owner stopped renewing its lease"
                    );
                    turn::settle_orphan(&self.deps, orphan).await;
                }
                // Requeued turns run through the claim that follows.
            }
            Err(error) => tracing::debug!(%error, "cannot look for orphaned turns"),
        }
    }

    async fn claim(&self) {
        let capacity = self.capacity();
        if capacity == 0 {
            return;
        }
        let grace = i64::try_from(QUEUE_GRACE.as_millis()).unwrap_or(i64::MAX);
        let before = Queued::Before(db::now_ms() - grace);
        match db::claim_queued(
            &self.deps.pool,
            &self.instance,
            self.lease_ms(),
            before,
            (capacity, i64::from(self.settings.per_workspace)),
        )
        .await
        {
            Ok(claimed) => {
                for turn in claimed {
                    self.start(turn);
                }
            }
            Err(error) => tracing::debug!(%error, "cannot claim queued turns"),
        }
    }

    fn start(&self, turn: ClaimedTurn) {
        let cancel = CancellationToken::new();
        let stop = CancellationToken::new();
        self.lock().insert(
            turn.fence.turn_id.clone(),
            Running {
                workspace_id: turn.workspace_id.clone(),
                conversation_id: turn.conversation_id.clone(),
                cancel: cancel.clone(),
                stop: stop.clone(),
            },
        );
        let span = tracing::info_span!(
            "agent.turn",
            conversation_id = %turn.conversation_id,
            message_id = %turn.user_message_id,
            attempt = turn.attempts,
        );
        crawbl_infra::trace::continue_from_map(&span, &turn.trace_context);
        let scheduler = self.clone();
        self.tracker.spawn(
            async move {
                let renewal =
                    scheduler.keep_leased(turn.fence.clone(), cancel.clone(), stop.clone());
                let user_message_id = turn.user_message_id.clone();
                let workspace_id = turn.workspace_id.clone();
                let conversation_id = turn.conversation_id.clone();
                let agent_id = turn.agent_id.clone();
                let turn_id = turn.fence.turn_id.clone();
                // A stop asked for between the claim and now was announced to nobody.
                if let Ok(requested) =
                    db::cancel_requested(&scheduler.deps.pool, std::slice::from_ref(&turn_id)).await
                    && !requested.is_empty()
                {
                    stop.cancel();
                }
                tokio::select! {
                    () = turn::run(scheduler.deps.clone(), turn, cancel.clone(), stop) => {}
                    () = renewal => {}
                }
                scheduler.lock().remove(&turn_id);
                let _ = scheduler.ended.send(user_message_id);
                scheduler.start_next(&workspace_id, &conversation_id, vec![agent_id]);
            }
            .instrument(span),
        );
    }

    /// Renews the turn's lease until it ends; when the turn is found no longer this instance's,
    /// cancels it and waits for it to stop. Never returns before the turn is cancelled, so the
    /// `select!` in [`Scheduler::start`] ends with the turn.
    async fn keep_leased(
        &self,
        fence: TurnFence,
        cancel: CancellationToken,
        stop: CancellationToken,
    ) {
        let every = self.settings.lease / 3;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
            match db::renew_lease(&self.deps.pool, &fence, self.lease_ms()).await {
                Ok(Lease::Held) => {}
                Ok(Lease::CancelRequested) => stop.cancel(),
                Ok(Lease::Lost) => {
                    tracing::info!(
                        turn_id = %fence.turn_id,
                        "the turn is no longer this instance's (deleted or taken over); stopping it"
                    );
                    cancel.cancel();
                    break;
                }
                // The database is away: keep running; the turn's writes wait for it, and a
                // take-over meanwhile is caught by their fence.
                Err(error) => tracing::debug!(%error, "cannot renew a turn's lease"),
            }
        }
        std::future::pending::<()>().await;
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        // Every update is one map call, so the map stays consistent even if a holder panicked.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
