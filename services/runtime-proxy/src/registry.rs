//! The runtimes of all workspaces and their lifecycle: provisioning → ready → failed/stopped.
//!
//! Each workspace has at most one provisioning attempt in flight. It runs in its own task, so it
//! finishes even if the caller that started it goes away, and every concurrent caller awaits the
//! same attempt (a shared future) and gets the same outcome: concurrent first messages provision
//! once, and a failure is reported to all of them at once instead of being retried by each in
//! turn. A later call after a failure starts a new attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crawbl_proto::runtimeproxy::v1::RuntimeState;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio_util::sync::CancellationToken;

use crate::config::Driver;
use crate::driver::{ProvisionError, Runtime};

type Attempt = Shared<BoxFuture<'static, Result<Arc<Runtime>, ProvisionError>>>;

/// A workspace's runtime. A workspace with no entry has never been started (STOPPED).
enum Slot {
    Provisioning(Attempt),
    Ready(Arc<Runtime>),
    Failed(ProvisionError),
}

/// Shared handle to every workspace's runtime.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    driver: Driver,
    ready_timeout: Duration,
    /// Never held across an await.
    slots: Mutex<HashMap<String, Slot>>,
    /// Cancelled when the proxy shuts down: aborts provisioning and refuses new attempts.
    shutdown: CancellationToken,
}

impl Registry {
    pub fn new(driver: Driver, ready_timeout: Duration, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                driver,
                ready_timeout,
                slots: Mutex::new(HashMap::new()),
                shutdown,
            }),
        }
    }

    /// The workspace's ready runtime, provisioning it first if needed (idempotent).
    pub async fn ensure(&self, workspace_id: &str) -> Result<Arc<Runtime>, ProvisionError> {
        let attempt = {
            let mut slots = self.inner.lock_slots();
            if self.inner.shutdown.is_cancelled() {
                return Err(shutting_down());
            }
            let in_flight = match slots.get(workspace_id) {
                Some(Slot::Ready(runtime)) => match runtime.exit_status() {
                    None => return Ok(Arc::clone(runtime)),
                    Some(status) => {
                        tracing::warn!(workspace_id, %status, "runtime process exited; provisioning a new one");
                        None
                    }
                },
                // Someone else's attempt is under way: wait for the same outcome.
                Some(Slot::Provisioning(attempt)) => Some(attempt.clone()),
                Some(Slot::Failed(previous)) => {
                    tracing::info!(workspace_id, %previous, "retrying after a failed provisioning");
                    None
                }
                None => None,
            };
            in_flight.unwrap_or_else(|| {
                let attempt = self.start(workspace_id);
                slots.insert(workspace_id.to_owned(), Slot::Provisioning(attempt.clone()));
                attempt
            })
        };
        attempt.await
    }

    /// The workspace's state, without starting anything.
    pub fn state(&self, workspace_id: &str) -> RuntimeState {
        match self.inner.lock_slots().get(workspace_id) {
            None => RuntimeState::Stopped,
            Some(Slot::Provisioning(_)) => RuntimeState::Provisioning,
            Some(Slot::Ready(runtime)) if runtime.exit_status().is_none() => RuntimeState::Ready,
            Some(Slot::Ready(_) | Slot::Failed(_)) => RuntimeState::Failed,
        }
    }

    /// Forgets `runtime` (if it is still the workspace's current one) because it cannot be
    /// reached, and stops it; the next `ensure` provisions afresh (or re-checks a static one).
    pub fn discard(&self, workspace_id: &str, runtime: &Arc<Runtime>, reason: &str) {
        {
            let mut slots = self.inner.lock_slots();
            let current = matches!(slots.get(workspace_id), Some(Slot::Ready(ready)) if Arc::ptr_eq(ready, runtime));
            if !current {
                return;
            }
            slots.insert(
                workspace_id.to_owned(),
                Slot::Failed(ProvisionError(reason.to_owned())),
            );
        }
        tracing::warn!(workspace_id, address = %runtime.address, reason, "runtime discarded");
        let runtime = Arc::clone(runtime);
        tokio::spawn(async move { runtime.stop().await });
    }

    /// Aborts provisioning, refuses new attempts and stops every runtime (killing its process).
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let slots: Vec<Slot> = self
            .inner
            .lock_slots()
            .drain()
            .map(|(_, slot)| slot)
            .collect();
        tracing::info!(runtimes = slots.len(), "stopping runtimes");
        for slot in slots {
            match slot {
                Slot::Ready(runtime) => runtime.stop().await,
                // Returns promptly: the attempt sees the cancelled token and drops its child.
                Slot::Provisioning(attempt) => drop(attempt.await),
                Slot::Failed(_) => {}
            }
        }
    }

    /// Spawns a provisioning attempt that records its own outcome in the registry.
    fn start(&self, workspace_id: &str) -> Attempt {
        let inner = Arc::clone(&self.inner);
        let workspace_id = workspace_id.to_owned();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            tracing::info!(%workspace_id, "provisioning runtime");
            let result = tokio::select! {
                result = inner.driver.provision(&workspace_id, inner.ready_timeout) => result.map(Arc::new),
                () = inner.shutdown.cancelled() => Err(shutting_down()),
            };
            let elapsed_ms = started.elapsed().as_millis();
            let mut slots = inner.lock_slots();
            if inner.shutdown.is_cancelled() {
                // Shutdown has already drained the registry; dropping the runtime kills it.
                return Err(shutting_down());
            }
            match &result {
                Ok(runtime) => {
                    tracing::info!(%workspace_id, address = %runtime.address, elapsed_ms, "runtime ready");
                    slots.insert(workspace_id, Slot::Ready(Arc::clone(runtime)));
                }
                Err(error) => {
                    tracing::warn!(%workspace_id, %error, elapsed_ms, "runtime provisioning failed");
                    slots.insert(workspace_id, Slot::Failed(error.clone()));
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
}

impl Inner {
    fn lock_slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // The map stays consistent even if a holder panicked: every update is a single insert.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn shutting_down() -> ProvisionError {
    ProvisionError("the runtime proxy is shutting down".to_owned())
}
