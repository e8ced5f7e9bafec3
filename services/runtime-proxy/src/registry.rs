//! The runtimes of all workspaces and their lifecycle: provisioning → ready → failed/stopped.
//!
//! Each workspace has at most one provisioning attempt in flight. It runs in its own task, so it
//! finishes even if the caller that started it goes away, and every concurrent caller awaits the
//! same attempt (a shared future) and gets the same outcome: concurrent first messages provision
//! once. A caller waits for the attempt at most `ready_timeout` (then `RUNTIME_NOT_READY`, retry
//! later), while the attempt itself may take up to `provision_timeout`, so a slow start still
//! ends in a ready runtime for the next call. A later call after a failure starts a new attempt.
//!
//! A ready runtime that dies (its process exits, or a broken turn finds it unhealthy) turns
//! `failed`; its agents are announced `offline`, and it is provisioned again at once — unless it
//! was already restarted that way within [`RESTART_INTERVAL`] (a crash loop) or is idle, in which
//! case the next call restarts it. Once a runtime is ready again its agents are announced
//! `online`. A ready runtime without turns for `idle_timeout` is stopped.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use crawbl_proto::conversation::v1::AgentStatus;
use crawbl_proto::runtimeproxy::v1::RuntimeState;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::driver::{ProvisionError, Provisioner, Runtime};
use crate::status::{Published, StatusEvents};

/// A runtime that died is restarted at once at most this often per workspace; more frequent
/// deaths wait for the next call, so a runtime that crashes on start cannot spin.
pub const RESTART_INTERVAL: Duration = Duration::from_secs(30);
/// Agent ids remembered per workspace; a bound, so a client inventing ids cannot grow it forever.
const MAX_AGENTS_PER_WORKSPACE: usize = 256;

type Attempt = Shared<BoxFuture<'static, Result<Arc<Runtime>, ProvisionError>>>;

/// A workspace's runtime.
enum Slot {
    /// Never started, stopped for being idle, or stopped at shutdown.
    Stopped,
    Provisioning(Attempt),
    Ready(Arc<Runtime>),
    Failed(ProvisionError),
}

/// Everything the registry knows of one workspace.
struct Workspace {
    slot: Slot,
    /// Agents seen in the workspace's turns: the ones told about `offline` and `online`.
    agents: BTreeSet<String>,
    /// Turns being forwarded now: a runtime with turns in flight is never idle.
    active_turns: usize,
    last_used: Instant,
    /// Its agents were announced offline and not yet online again.
    offline: bool,
    last_restart: Option<Instant>,
}

impl Workspace {
    fn new() -> Self {
        Self {
            slot: Slot::Stopped,
            agents: BTreeSet::new(),
            active_turns: 0,
            last_used: Instant::now(),
            offline: false,
            last_restart: None,
        }
    }
}

/// How long provisioning and idling may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long a caller waits for its workspace's runtime.
    pub ready: Duration,
    /// How long one provisioning attempt may take.
    pub provision: Duration,
    /// How long a ready runtime may go without turns; `None` keeps it forever.
    pub idle: Option<Duration>,
}

/// Workspaces by their runtime's state, and the turns in flight.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub provisioning: usize,
    pub ready: usize,
    pub failed: usize,
    pub stopped: usize,
    pub turns: usize,
}

/// A [`Registry`] that may be gone.
pub struct WeakRegistry(Weak<Inner>);

impl WeakRegistry {
    pub fn upgrade(&self) -> Option<Registry> {
        self.0.upgrade().map(|inner| Registry { inner })
    }
}

fn slot_state(slot: Option<&Slot>) -> RuntimeState {
    match slot {
        None | Some(Slot::Stopped) => RuntimeState::Stopped,
        Some(Slot::Provisioning(_)) => RuntimeState::Provisioning,
        Some(Slot::Ready(runtime)) if runtime.exit_status().is_none() => RuntimeState::Ready,
        Some(Slot::Ready(_) | Slot::Failed(_)) => RuntimeState::Failed,
    }
}

/// Shared handle to every workspace's runtime.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    driver: Provisioner,
    timeouts: Timeouts,
    /// Never held across an await.
    workspaces: Mutex<HashMap<String, Workspace>>,
    status: StatusEvents,
    /// Cancelled when the proxy shuts down: aborts provisioning and refuses new attempts.
    shutdown: CancellationToken,
}

impl Registry {
    /// A registry; with an idle timeout, also starts the task that stops idle runtimes.
    pub fn new(
        driver: Provisioner,
        timeouts: Timeouts,
        status: StatusEvents,
        shutdown: CancellationToken,
    ) -> Self {
        let registry = Self {
            inner: Arc::new(Inner {
                driver,
                timeouts,
                workspaces: Mutex::new(HashMap::new()),
                status,
                shutdown,
            }),
        };
        if let Some(idle) = timeouts.idle {
            tokio::spawn(stop_idle_runtimes(Arc::downgrade(&registry.inner), idle));
        }
        registry
    }

    /// The workspace's ready runtime, provisioning it first if needed (idempotent). Waits at
    /// most the ready timeout; provisioning goes on after that for the next call to find.
    pub async fn ensure(&self, workspace_id: &str) -> Result<Arc<Runtime>, ProvisionError> {
        let attempt = {
            let mut workspaces = self.inner.lock();
            if self.inner.shutdown.is_cancelled() {
                return Err(shutting_down());
            }
            let workspace = workspaces
                .entry(workspace_id.to_owned())
                .or_insert_with(Workspace::new);
            workspace.last_used = Instant::now();
            if let Slot::Ready(runtime) = &workspace.slot
                && let Some(status) = runtime.exit_status()
            {
                // Died a moment ago; the watcher has not reported it yet.
                let runtime = Arc::clone(runtime);
                let reason = format!("its process exited ({status})");
                drop(self.died(workspace_id, workspace, &runtime, &reason));
            }
            match &workspace.slot {
                Slot::Ready(runtime) => return Ok(Arc::clone(runtime)),
                // Someone else's attempt is under way: wait for the same outcome.
                Slot::Provisioning(attempt) => attempt.clone(),
                Slot::Failed(_) | Slot::Stopped => {
                    if let Slot::Failed(previous) = &workspace.slot {
                        tracing::info!(workspace_id, %previous, "retrying after a failure");
                    }
                    let attempt = self.start(workspace_id);
                    workspace.slot = Slot::Provisioning(attempt.clone());
                    attempt
                }
            }
        };
        let ready = self.inner.timeouts.ready;
        tokio::time::timeout(ready, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(ProvisionError(format!(
                    "the runtime is still starting after {} ms",
                    ready.as_millis()
                )))
            })
    }

    /// The workspace's state, without starting anything.
    pub fn state(&self, workspace_id: &str) -> RuntimeState {
        let workspaces = self.inner.lock();
        slot_state(
            workspaces
                .get(workspace_id)
                .map(|workspace| &workspace.slot),
        )
    }

    /// How many known workspaces are in each state, and how many turns are in flight.
    pub fn census(&self) -> Census {
        let workspaces = self.inner.lock();
        let mut census = Census::default();
        for workspace in workspaces.values() {
            let count = match slot_state(Some(&workspace.slot)) {
                RuntimeState::Provisioning => &mut census.provisioning,
                RuntimeState::Ready => &mut census.ready,
                RuntimeState::Failed => &mut census.failed,
                RuntimeState::Stopped | RuntimeState::Unspecified => &mut census.stopped,
            };
            *count += 1;
            census.turns += workspace.active_turns;
        }
        census
    }

    /// A handle that does not keep the registry alive (for metrics).
    pub fn downgrade(&self) -> WeakRegistry {
        WeakRegistry(Arc::downgrade(&self.inner))
    }

    /// Counts a turn of `agent_id` in the workspace until the guard is dropped: remembers the
    /// agent (for status events) and keeps the runtime from being stopped as idle meanwhile.
    pub fn begin_turn(&self, workspace_id: &str, agent_id: &str) -> TurnGuard {
        let mut workspaces = self.inner.lock();
        let workspace = workspaces
            .entry(workspace_id.to_owned())
            .or_insert_with(Workspace::new);
        workspace.active_turns += 1;
        workspace.last_used = Instant::now();
        if !agent_id.is_empty() && !workspace.agents.contains(agent_id) {
            if workspace.agents.len() < MAX_AGENTS_PER_WORKSPACE {
                workspace.agents.insert(agent_id.to_owned());
            } else {
                tracing::warn!(
                    workspace_id,
                    agent_id,
                    "too many agents to track in one workspace"
                );
            }
        }
        TurnGuard {
            registry: self.clone(),
            workspace_id: workspace_id.to_owned(),
        }
    }

    /// Records that `runtime` died (if it is still the workspace's current one): marks it failed,
    /// announces its agents offline, stops what is left of it and restarts it if allowed.
    /// Returns once the offline events (and any queued before) are published, within `bound`.
    pub async fn runtime_died(
        &self,
        workspace_id: &str,
        runtime: &Arc<Runtime>,
        reason: &str,
        bound: Duration,
    ) {
        self.mark_dead(workspace_id, runtime, reason)
            .wait(bound)
            .await;
    }

    /// [`Registry::runtime_died`] without waiting for the events.
    fn mark_dead(&self, workspace_id: &str, runtime: &Arc<Runtime>, reason: &str) -> Published {
        let mut workspaces = self.inner.lock();
        match workspaces.get_mut(workspace_id) {
            Some(workspace) => self.died(workspace_id, workspace, runtime, reason),
            None => self
                .inner
                .status
                .enqueue(workspace_id, [], AgentStatus::Offline),
        }
    }

    /// Stops accepting work, aborts provisioning and stops every runtime (killing its process;
    /// pods are left for the next proxy to adopt).
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let slots: Vec<Slot> = self
            .inner
            .lock()
            .values_mut()
            .map(|workspace| std::mem::replace(&mut workspace.slot, Slot::Stopped))
            .collect();
        tracing::info!(workspaces = slots.len(), "stopping runtimes");
        let stops = slots.into_iter().map(|slot| async move {
            match slot {
                Slot::Ready(runtime) => runtime.stop_at_shutdown().await,
                // Returns promptly: the attempt sees the cancelled token and drops its runtime.
                Slot::Provisioning(attempt) => drop(attempt.await),
                Slot::Failed(_) | Slot::Stopped => {}
            }
        });
        futures::future::join_all(stops).await;
    }

    /// The part of [`Registry::runtime_died`] done under the lock.
    fn died(
        &self,
        workspace_id: &str,
        workspace: &mut Workspace,
        runtime: &Arc<Runtime>,
        reason: &str,
    ) -> Published {
        let current = matches!(&workspace.slot, Slot::Ready(ready) if Arc::ptr_eq(ready, runtime));
        if !current {
            // Already handled (or replaced): just wait for what is queued.
            return self
                .inner
                .status
                .enqueue(workspace_id, [], AgentStatus::Offline);
        }
        tracing::warn!(workspace_id, address = %runtime.address, reason, "runtime died");
        workspace.slot = Slot::Failed(ProvisionError(format!("the runtime died: {reason}")));
        let already_offline = std::mem::replace(&mut workspace.offline, true);
        let agents = if already_offline {
            None
        } else {
            Some(&workspace.agents)
        };
        let published = self.inner.status.enqueue(
            workspace_id,
            agents.into_iter().flatten(),
            AgentStatus::Offline,
        );
        // Whatever is left of it (an unhealthy process) goes; a no-op for an exited one.
        let dead = Arc::clone(runtime);
        tokio::spawn(async move { dead.stop().await });

        let recently_restarted = workspace
            .last_restart
            .is_some_and(|at| at.elapsed() < RESTART_INTERVAL);
        let idle = self.is_idle(workspace);
        if self.inner.shutdown.is_cancelled() || recently_restarted || idle {
            tracing::info!(
                workspace_id,
                recently_restarted,
                idle,
                "not restarting the runtime until it is needed"
            );
        } else {
            tracing::info!(workspace_id, "restarting the runtime");
            workspace.last_restart = Some(Instant::now());
            workspace.slot = Slot::Provisioning(self.start(workspace_id));
        }
        published
    }

    fn is_idle(&self, workspace: &Workspace) -> bool {
        self.inner.timeouts.idle.is_some_and(|idle| {
            workspace.active_turns == 0 && workspace.last_used.elapsed() >= idle
        })
    }

    /// Spawns a provisioning attempt that records its own outcome in the registry.
    fn start(&self, workspace_id: &str) -> Attempt {
        let registry = self.clone();
        let workspace_id = workspace_id.to_owned();
        let task = tokio::spawn(async move {
            let inner = &registry.inner;
            let started = Instant::now();
            tracing::info!(%workspace_id, "provisioning runtime");
            let result = tokio::select! {
                result = inner.driver.provision(&workspace_id, inner.timeouts.provision) => result.map(Arc::new),
                () = inner.shutdown.cancelled() => Err(shutting_down()),
            };
            let elapsed_ms = started.elapsed().as_millis();
            let mut workspaces = inner.lock();
            if inner.shutdown.is_cancelled() {
                // Shutdown has already emptied the registry; dropping the runtime kills it.
                return Err(shutting_down());
            }
            let workspace = workspaces
                .entry(workspace_id.clone())
                .or_insert_with(Workspace::new);
            match &result {
                Ok(runtime) => {
                    tracing::info!(%workspace_id, address = %runtime.address, elapsed_ms, "runtime ready");
                    workspace.slot = Slot::Ready(Arc::clone(runtime));
                    if std::mem::take(&mut workspace.offline) {
                        drop(inner.status.enqueue(
                            &workspace_id,
                            &workspace.agents,
                            AgentStatus::Online,
                        ));
                    }
                    registry.watch(&workspace_id, runtime);
                }
                Err(error) => {
                    tracing::warn!(%workspace_id, %error, elapsed_ms, "runtime provisioning failed");
                    workspace.slot = Slot::Failed(error.clone());
                }
            }
            result
        });
        async move {
            task.await.unwrap_or_else(|error| {
                Err(ProvisionError(format!("provisioning task failed: {error}")))
            })
        }
        .boxed()
        .shared()
    }

    /// Notices the death of `runtime` as soon as its driver can tell (its process exits).
    fn watch(&self, workspace_id: &str, runtime: &Arc<Runtime>) {
        let Some(exited) = runtime.exited() else {
            return;
        };
        // Weak: a runtime that has been replaced and dropped must not be kept alive by this.
        let runtime = Arc::downgrade(runtime);
        let registry = Arc::downgrade(&self.inner);
        let workspace_id = workspace_id.to_owned();
        tokio::spawn(async move {
            let status = exited.await;
            let (Some(runtime), Some(inner)) = (runtime.upgrade(), registry.upgrade()) else {
                return;
            };
            let registry = Registry { inner };
            let reason = format!("its process exited ({status})");
            drop(registry.mark_dead(&workspace_id, &runtime, &reason));
        });
    }

    /// Stops every ready runtime that has been idle for `idle`.
    async fn stop_idle(&self, idle: Duration) {
        let idle_runtimes: Vec<(String, Arc<Runtime>)> = {
            let mut workspaces = self.inner.lock();
            workspaces
                .iter_mut()
                .filter(|(_, workspace)| {
                    workspace.active_turns == 0 && workspace.last_used.elapsed() >= idle
                })
                .filter_map(|(workspace_id, workspace)| {
                    let Slot::Ready(runtime) = &workspace.slot else {
                        return None;
                    };
                    let runtime = Arc::clone(runtime);
                    workspace.slot = Slot::Stopped;
                    Some((workspace_id.clone(), runtime))
                })
                .collect()
        };
        for (workspace_id, runtime) in idle_runtimes {
            tracing::info!(%workspace_id, idle_ms = idle.as_millis(), "stopping an idle runtime");
            runtime.stop().await;
        }
    }
}

/// Checks for idle runtimes a few times per idle period until the registry is gone or shut down.
async fn stop_idle_runtimes(registry: Weak<Inner>, idle: Duration) {
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = registry.upgrade() else {
            return;
        };
        if inner.shutdown.is_cancelled() {
            return;
        }
        Registry { inner }.stop_idle(idle).await;
    }
}

/// A turn in flight in a workspace; see [`Registry::begin_turn`].
pub struct TurnGuard {
    registry: Registry,
    workspace_id: String,
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        let mut workspaces = self.registry.inner.lock();
        if let Some(workspace) = workspaces.get_mut(&self.workspace_id) {
            workspace.active_turns = workspace.active_turns.saturating_sub(1);
            workspace.last_used = Instant::now();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Workspace>> {
        // The map stays consistent even if a holder panicked: every update is a few assignments
        // that cannot panic halfway.
        self.workspaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn shutting_down() -> ProvisionError {
    ProvisionError("the runtime proxy is shutting down".to_owned())
}
