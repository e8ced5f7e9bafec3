//! Delivery of bus events to this node's sockets, one workspace at a time.
//!
//! The node tracks a workspace while at least one of its sockets counts in it (see
//! [`super::presence`]): the first one makes it follow the workspace's bus channel and read the
//! log's head (`last_seq`), the last one to go unfollows it. Each tracked workspace has a worker
//! task that puts its events through a [`Sequencer`] (durable events once and in `seq` order,
//! gaps filled from the event log after a short wait) and emits them to the workspace's room.
//! The worker holds the workspace's state lock while it emits, and so does a replay while it
//! finishes and joins its socket to the room: no live event of that workspace can slip between a
//! replay's last event and the join.
//!
//! When the bus says events may have been missed (Redis came back, or the node fell behind),
//! every tracked workspace fetches what it missed from the log, so connected sockets get every
//! durable event in order without reconnecting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crawbl_infra::bus::{Delivery, Follows};
use crawbl_infra::grpc::Channel;
use crawbl_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use crawbl_proto::conversation::v1::{ListEventsRequest, ListEventsResponse};
use crawbl_proto::events::v1::Event;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use socketioxide::extract::SocketRef;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::agent_typing::Typing;
use super::emit::{self, Gone};
use super::presence::Presence;
use super::recent::Recent;
use super::sequencer::Sequencer;
use crate::shared::cluster::{Adapter, Sockets};
use crate::shared::rooms::workspace_room;

/// How long an event waits behind a gap for the missing one before the gap is filled from the
/// log (reordering across publishers settles in milliseconds).
const GAP_WAIT: Duration = Duration::from_millis(300);
/// How soon a fill from the log that failed is tried again.
const FILL_RETRY: Duration = Duration::from_secs(1);
/// Events per page read from the log, and pages per fill (more waits for the next round).
const LOG_PAGE: u32 = 1000;
const FILL_PAGES: usize = 10;
/// Events held behind a gap before the node gives up on it (the log is unreachable for long).
const MAX_HELD: usize = 10_000;
/// Bus events queued for one workspace's worker; past this they are dropped, and durable ones
/// come back from the log.
const INBOX: usize = 4096;
/// How long one read of the event log may take.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
/// Events a worker delivers per turn of its lock.
const BATCH: usize = 64;
/// Attempts to read the log for a replay before the socket is told to refetch instead.
const REPLAY_ATTEMPTS: u32 = 3;

pub struct Fanout {
    sockets: Sockets,
    conversations: ConversationServiceClient<Channel>,
    follows: Follows,
    typing_ttl: Duration,
    tracked: Mutex<HashMap<String, Tracked>>,
}

struct Tracked {
    /// Local sockets that count in the workspace.
    sockets: usize,
    workspace: Arc<Workspace>,
}

/// One tracked workspace.
pub struct Workspace {
    id: String,
    room: String,
    state: tokio::sync::Mutex<State>,
    /// The sequencer's `last` as of the last delivery (0: none yet), for replays that run
    /// without the lock.
    delivered: AtomicU64,
    inbox: mpsc::Sender<Event>,
    /// The newest durable events, delivered or read from the log, for replays.
    recent: Mutex<Recent>,
    /// Set once the workspace is followed and its position known, so sockets that join a busy
    /// workspace need not queue for its lock.
    ready: AtomicBool,
    /// Events may have been lost on the way (bus outage, full inbox): fill from the log.
    missed: Notify,
    stop: CancellationToken,
}

struct State {
    /// The bus subscription's confirmation, awaited before the log's head is read.
    subscribed: Option<BoxFuture<'static, bool>>,
    ready: bool,
    sequencer: Sequencer,
    typing: Typing,
    /// Since when events are known to have been missed, until a fill succeeds.
    missed_since: Option<Instant>,
    /// No fill before this (after a failed one).
    retry_after: Option<Instant>,
}

impl State {
    /// When the worker must act next: a fill, or a typing that lapses.
    fn wake_at(&self) -> Option<Instant> {
        let fill = self
            .missed_since
            .or_else(|| self.sequencer.waiting_since().map(|since| since + GAP_WAIT))
            .map(|due| self.retry_after.map_or(due, |retry| due.max(retry)));
        match (fill, self.typing.next_expiry()) {
            (Some(fill), Some(typing)) => Some(fill.min(typing)),
            (fill, typing) => fill.or(typing),
        }
    }

    fn fill_due(&self, now: Instant) -> bool {
        let due = self
            .missed_since
            .or_else(|| self.sequencer.waiting_since().map(|since| since + GAP_WAIT));
        due.is_some_and(|due| due <= now) && self.retry_after.is_none_or(|retry| retry <= now)
    }
}

impl Fanout {
    pub fn new(
        sockets: Sockets,
        conversations: ConversationServiceClient<Channel>,
        follows: Follows,
        typing_ttl: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            sockets,
            conversations,
            follows,
            typing_ttl,
            tracked: Mutex::default(),
        })
    }

    /// Counts one more local socket in `workspace_id`; the first starts following it (see
    /// [`Fanout::ready`]).
    pub fn track(self: &Arc<Self>, workspace_id: &str) -> Arc<Workspace> {
        let mut tracked = lock(&self.tracked);
        if let Some(entry) = tracked.get_mut(workspace_id) {
            entry.sockets += 1;
            return entry.workspace.clone();
        }
        // Followed under the lock, so follows and unfollows reach the bus in the order the
        // counts changed.
        let subscribed = self.follows.follow(workspace_id).boxed();
        let (inbox, events) = mpsc::channel(INBOX);
        let workspace = Arc::new(Workspace {
            id: workspace_id.to_owned(),
            room: workspace_room(workspace_id),
            state: tokio::sync::Mutex::new(State {
                subscribed: Some(subscribed),
                ready: false,
                sequencer: Sequencer::default(),
                typing: Typing::new(self.typing_ttl),
                missed_since: None,
                retry_after: None,
            }),
            delivered: AtomicU64::new(0),
            inbox,
            recent: Mutex::default(),
            ready: AtomicBool::new(false),
            missed: Notify::new(),
            stop: CancellationToken::new(),
        });
        tokio::spawn(work(self.clone(), workspace.clone(), events));
        tracked.insert(
            workspace_id.to_owned(),
            Tracked {
                sockets: 1,
                workspace: workspace.clone(),
            },
        );
        tracing::debug!(workspace_id, "following a workspace");
        workspace
    }

    /// The tracked workspace, if any local socket counts in it.
    pub fn tracked(&self, workspace_id: &str) -> Option<Arc<Workspace>> {
        lock(&self.tracked)
            .get(workspace_id)
            .map(|entry| entry.workspace.clone())
    }

    /// Counts one local socket less in `workspace_id`; the last one unfollows it.
    pub fn untrack(&self, workspace_id: &str) {
        let mut tracked = lock(&self.tracked);
        let Some(entry) = tracked.get_mut(workspace_id) else {
            return;
        };
        entry.sockets = entry.sockets.saturating_sub(1);
        if entry.sockets == 0
            && let Some(entry) = tracked.remove(workspace_id)
        {
            self.follows.unfollow(workspace_id);
            entry.workspace.stop.cancel();
            tracing::debug!(workspace_id, "unfollowed a workspace");
        }
    }

    /// Waits until `workspace` is followed on the bus and its position known.
    pub async fn ready(&self, workspace: &Workspace) {
        if workspace.ready.load(Ordering::Acquire) {
            return;
        }
        let mut state = workspace.state.lock().await;
        self.init(workspace, &mut state).await;
    }

    /// Hands what the bus delivered to its workspace's worker.
    pub fn route(&self, delivery: Delivery) {
        match delivery {
            Delivery::Event(event) => {
                let Some(workspace) = self.tracked(&event.workspace_id) else {
                    return; // No local socket any more.
                };
                match workspace.inbox.try_send(*event) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(workspace_id = %workspace.id, "a workspace's event queue is full; dropping an event and refilling from the log");
                        workspace.missed.notify_one();
                    }
                    // Untracked a moment ago.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
            Delivery::Missed => {
                let workspaces: Vec<Arc<Workspace>> = lock(&self.tracked)
                    .values()
                    .map(|entry| entry.workspace.clone())
                    .collect();
                if !workspaces.is_empty() {
                    tracing::info!(
                        workspaces = workspaces.len(),
                        "events may have been missed; filling every followed workspace from the log"
                    );
                }
                for workspace in workspaces {
                    workspace.missed.notify_one();
                }
            }
        }
    }

    /// First use of a workspace: wait for the bus subscription, then start after the log's
    /// head. Subscribing first means nothing committed after the head is read can be missed:
    /// it is published after this, to a subscribed node.
    async fn init(&self, workspace: &Workspace, state: &mut State) {
        if state.ready {
            return;
        }
        if let Some(subscribed) = state.subscribed.take()
            && !subscribed.await
        {
            // Subscribed when Redis is back, and filled from the log then.
            tracing::debug!(workspace_id = %workspace.id, "following a workspace before the bus is reachable");
        }
        match self.log_head(&workspace.id).await {
            Ok(head) => {
                state
                    .sequencer
                    .skip_to(head, Instant::now(), &mut Vec::new());
                workspace.delivered.store(head, Ordering::Release);
            }
            Err(status) => {
                tracing::warn!(workspace_id = %workspace.id, code = ?status.code(), message = status.message(), "cannot read the event log's head; ordering from the first event");
            }
        }
        state.ready = true;
        workspace.ready.store(true, Ordering::Release);
    }

    async fn accept(&self, workspace: &Workspace, state: &mut State, event: Event) {
        let now = Instant::now();
        let mut out = Vec::new();
        state.sequencer.accept(event, now, &mut out);
        if state.sequencer.held() > MAX_HELD {
            tracing::error!(workspace_id = %workspace.id, "too many events wait behind a gap; giving up on it");
            self.reset_room(workspace, state).await;
            state.sequencer.give_up(now, &mut out);
        }
        self.emit(workspace, state, out).await;
    }

    /// Timers: a gap that waited long enough, missed events, typing that lapsed.
    async fn tick(&self, workspace: &Workspace, state: &mut State) {
        let now = Instant::now();
        if state.fill_due(now) {
            self.fill(workspace, state).await;
        }
        let mut out = Vec::new();
        for lapsed in state.typing.expire(&workspace.id, now) {
            tracing::debug!(workspace_id = %workspace.id, "typing lapsed without a stop");
            state.sequencer.accept(lapsed, now, &mut out);
        }
        self.emit(workspace, state, out).await;
    }

    /// Fetches what this node has not delivered from the log and delivers it.
    async fn fill(&self, workspace: &Workspace, state: &mut State) {
        let now = Instant::now();
        let Some(mut after) = state.sequencer.last() else {
            // The position was never known (the log was unreadable): learn it now.
            match self.log_head(&workspace.id).await {
                Ok(head) => {
                    let mut out = Vec::new();
                    state.sequencer.skip_to(head, now, &mut out);
                    self.emit(workspace, state, out).await;
                    state.missed_since = None;
                    state.retry_after = None;
                }
                Err(_) => state.retry_after = Some(now + FILL_RETRY),
            }
            return;
        };
        let mut more = false;
        for _ in 0..FILL_PAGES {
            match self.list_events(&workspace.id, after, LOG_PAGE).await {
                Ok(page) => {
                    let mut out = Vec::new();
                    for event in page.events {
                        state.sequencer.accept(event, now, &mut out);
                    }
                    self.emit(workspace, state, out).await;
                    after = state.sequencer.last().unwrap_or(after);
                    more = page.has_more;
                    if !more {
                        break;
                    }
                }
                Err(status) if is_expired(&status) => {
                    tracing::warn!(workspace_id = %workspace.id, after, "events this node missed are no longer in the log; telling the room to refetch");
                    self.reset_room(workspace, state).await;
                    break;
                }
                Err(status) => {
                    tracing::warn!(workspace_id = %workspace.id, code = ?status.code(), message = status.message(), "cannot fill from the event log; retrying");
                    state.retry_after = Some(now + FILL_RETRY);
                    return;
                }
            }
        }
        state.missed_since = more.then_some(now);
        // Still waiting with the log read to its end: the missing event is not committed yet
        // where the log was read. Wait again rather than spin.
        state.retry_after = state
            .sequencer
            .waiting_since()
            .is_some()
            .then(|| now + GAP_WAIT);
    }

    /// Gives up on what the room missed: `sync.reset`, then on from the log's head.
    async fn reset_room(&self, workspace: &Workspace, state: &mut State) {
        let Some(namespace) = self.sockets.namespace() else {
            return;
        };
        emit::reset_to_room(&namespace, &workspace.room, &workspace.id).await;
        let now = Instant::now();
        let mut out = Vec::new();
        if let Ok(head) = self.log_head(&workspace.id).await {
            state.sequencer.skip_to(head, now, &mut out);
        }
        state.sequencer.give_up(now, &mut out);
        self.emit(workspace, state, out).await;
    }

    async fn emit(&self, workspace: &Workspace, state: &mut State, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if let Some(namespace) = self.sockets.namespace() {
            let now = Instant::now();
            for event in events {
                state.typing.observe(&event, now);
                lock(&workspace.recent).remember(&event);
                emit::to_room(&namespace, &workspace.room, event).await;
            }
        }
        workspace.delivered.store(
            state.sequencer.last().unwrap_or_default(),
            Ordering::Release,
        );
    }

    /// Sends `socket` every durable event of `workspace_id` after `since` from the log, in order,
    /// then joins it to the room, so its first live event of the workspace follows the last one
    /// replayed. When the log cannot serve `since` (pruned, or ahead of the log), the socket gets
    /// `sync.reset {workspaceId}` and joins. Returns false when the socket went away.
    pub async fn replay_and_join(
        &self,
        socket: &SocketRef<Adapter>,
        presence: &Presence,
        workspace_id: &str,
        since: u64,
    ) -> bool {
        let workspace = presence.track(workspace_id).await;
        let mut replay = Replay {
            fanout: self,
            workspace: &workspace,
            socket,
            workspace_id,
            since,
            sent: since,
            reset: false,
        };
        // Most of the backlog first, without holding up the room's live events: up to what the
        // room has had, which only grows.
        if replay
            .catch_up(|| workspace.delivered.load(Ordering::Acquire))
            .await
            .is_err()
        {
            return false;
        }
        // The rest under the workspace's lock, then the join.
        let mut state = workspace.state.lock().await;
        self.init(&workspace, &mut state).await;
        if !replay.reset {
            if state.sequencer.last().is_none_or(|last| last < since) {
                // The client has seen more than this room: bring the room up to the log, or it
                // would get those events again live.
                self.fill(&workspace, &mut state).await;
            }
            let last = state.sequencer.last().unwrap_or(0);
            if last < since {
                replay.reset = true;
            } else if replay.catch_up(|| last).await.is_err() {
                return false;
            }
        }
        if replay.reset && emit::reset_to_socket(socket, workspace_id).await.is_err() {
            return false;
        }
        if !presence.counts_in(workspace_id) {
            // Taken out of the workspace meanwhile (membership removed, unsubscribed).
            return true;
        }
        socket.join(workspace.room.clone());
        presence.joined(workspace_id);
        drop(state);
        let replayed = replay.sent.saturating_sub(since);
        crawbl_infra::metrics::events().replayed.add(replayed);
        tracing::debug!(socket = %socket.id, workspace_id, since, replayed, reset = replay.reset, "replayed and joined");
        true
    }

    async fn list_events(
        &self,
        workspace_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<ListEventsResponse, tonic::Status> {
        let request = ListEventsRequest {
            workspace_id: workspace_id.to_owned(),
            after,
            limit,
        };
        let mut conversations = self.conversations.clone();
        // A hung service must not hang handshakes and deliveries with it.
        match tokio::time::timeout(LOG_TIMEOUT, conversations.list_events(request)).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "the event log did not answer in time",
            )),
        }
    }

    /// The newest `seq` of the workspace.
    async fn log_head(&self, workspace_id: &str) -> Result<u64, tonic::Status> {
        Ok(self.list_events(workspace_id, u64::MAX, 1).await?.last_seq)
    }
}

/// One socket's replay of one workspace.
struct Replay<'a> {
    fanout: &'a Fanout,
    workspace: &'a Workspace,
    socket: &'a SocketRef<Adapter>,
    workspace_id: &'a str,
    since: u64,
    /// The last `seq` sent.
    sent: u64,
    /// The log cannot serve `since`: the socket gets `sync.reset`.
    reset: bool,
}

impl Replay<'_> {
    /// Sends logged events after `sent` up to `target()` (read before each page), from the
    /// workspace's recent events when it has them all, else from the log.
    async fn catch_up(&mut self, target: impl Fn() -> u64) -> Result<(), Gone> {
        while !self.reset {
            let target = target();
            if self.sent >= target {
                return Ok(());
            }
            let kept = lock(&self.workspace.recent).between(self.sent, target, LOG_PAGE as usize);
            let (events, has_more) = match kept {
                Some(events) => (events, true),
                None => {
                    let Some(page) = self.page().await else {
                        self.reset = true;
                        return Ok(());
                    };
                    if self.since > page.last_seq {
                        // The client is ahead of the log (another deployment, or made up).
                        self.reset = true;
                        return Ok(());
                    }
                    let mut recent = lock(&self.workspace.recent);
                    for event in &page.events {
                        recent.remember(event);
                    }
                    (page.events, page.has_more)
                }
            };
            let before = self.sent;
            for event in events {
                if event.seq <= self.sent || event.seq > target {
                    continue;
                }
                let seq = event.seq;
                emit::to_socket(self.socket, event).await?;
                self.sent = seq;
            }
            if self.sent == before || !has_more {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The next page of the log, retried a few times; `None` when it cannot be had.
    async fn page(&self) -> Option<ListEventsResponse> {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=REPLAY_ATTEMPTS {
            match self
                .fanout
                .list_events(self.workspace_id, self.sent, LOG_PAGE)
                .await
            {
                Ok(page) => return Some(page),
                Err(status) if is_expired(&status) => return None,
                Err(status) => {
                    tracing::warn!(workspace_id = self.workspace_id, attempt, code = ?status.code(), message = status.message(), "cannot read the event log for a replay");
                    if attempt < REPLAY_ATTEMPTS {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
        None
    }
}

/// The worker of one tracked workspace: its events in, through the sequencer, out to the room.
async fn work(fanout: Arc<Fanout>, workspace: Arc<Workspace>, mut events: mpsc::Receiver<Event>) {
    let mut wake_at: Option<Instant> = None;
    loop {
        let timer = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let state = tokio::select! {
            () = workspace.stop.cancelled() => return,
            event = events.recv() => {
                let Some(event) = event else { return };
                let mut state = workspace.state.lock().await;
                fanout.init(&workspace, &mut state).await;
                fanout.accept(&workspace, &mut state, event).await;
                // Some of what queued up meanwhile, under the same lock (bounded, so replays
                // waiting for the lock get their turn).
                for _ in 1..BATCH {
                    let Ok(event) = events.try_recv() else { break };
                    fanout.accept(&workspace, &mut state, event).await;
                }
                state
            }
            () = workspace.missed.notified() => {
                let mut state = workspace.state.lock().await;
                fanout.init(&workspace, &mut state).await;
                state.missed_since.get_or_insert_with(Instant::now);
                fanout.tick(&workspace, &mut state).await;
                state
            }
            () = timer => {
                let mut state = workspace.state.lock().await;
                fanout.tick(&workspace, &mut state).await;
                state
            }
        };
        wake_at = state.wake_at();
        drop(state);
    }
}

fn is_expired(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::OutOfRange
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
