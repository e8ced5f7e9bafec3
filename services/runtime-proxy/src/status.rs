//! `agent.status` events about runtimes: agents go `offline` when their workspace's runtime dies
//! and `online` when it is ready again.
//!
//! Events are queued (in the order the registry decides them, under its lock) and published by
//! one task, so an `offline` can never overtake the `online` that follows it. Each enqueue returns
//! a [`Published`] that resolves once everything queued so far is on the bus: the proxy waits for
//! it before ending a turn with `RUNTIME_DIED`, so whoever reacts to that error sees the
//! `offline` first.

use std::time::Duration;

use crawbl_infra::bus::EventBus;
use crawbl_proto::conversation::v1::AgentStatus;
use crawbl_proto::events::v1::{AgentStatusChanged, Event, event};
use tokio::sync::{mpsc, oneshot};

struct Batch {
    events: Vec<Event>,
    published: oneshot::Sender<()>,
}

/// The queue in front of the bus. Cheap to clone.
#[derive(Clone)]
pub struct StatusEvents {
    // Unbounded because it is fed under a lock that must not wait; it holds at most a few
    // events per runtime death or recovery.
    queue: mpsc::UnboundedSender<Batch>,
}

impl StatusEvents {
    /// Starts the publishing task; it ends once every handle is dropped and the queue is empty.
    pub fn start(bus: EventBus) -> Self {
        let (queue, mut batches) = mpsc::unbounded_channel::<Batch>();
        tokio::spawn(async move {
            while let Some(batch) = batches.recv().await {
                for event in &batch.events {
                    if let Err(error) = bus.publish(event).await {
                        tracing::warn!(error = format!("{error:#}"), workspace_id = %event.workspace_id, "cannot publish an agent status");
                    }
                }
                let _ = batch.published.send(());
            }
        });
        Self { queue }
    }

    /// Queues `status` for each of `agent_ids` of the workspace. With no agents it queues
    /// nothing but still returns a [`Published`] for what was queued before.
    pub fn enqueue<'a>(
        &self,
        workspace_id: &str,
        agent_ids: impl IntoIterator<Item = &'a String>,
        status: AgentStatus,
    ) -> Published {
        let events: Vec<Event> = agent_ids
            .into_iter()
            .map(|agent_id| Event {
                workspace_id: workspace_id.to_owned(),
                kind: Some(event::Kind::AgentStatus(AgentStatusChanged {
                    agent_id: agent_id.clone(),
                    status: status.into(),
                })),
                ..Event::default()
            })
            .collect();
        if !events.is_empty() {
            tracing::info!(
                workspace_id,
                agents = events.len(),
                status = status.as_str_name(),
                "agent status queued"
            );
        }
        let (published, done) = oneshot::channel();
        if self.queue.send(Batch { events, published }).is_err() {
            tracing::warn!(workspace_id, "agent status publisher is gone");
        }
        Published(done)
    }
}

/// Resolves once the events queued with it (and before it) have been published.
pub struct Published(oneshot::Receiver<()>);

impl Published {
    /// Waits at most `bound`: a slow bus must not hold up the caller for long.
    pub async fn wait(self, bound: Duration) {
        if tokio::time::timeout(bound, self.0).await.is_err() {
            tracing::warn!(
                bound_ms = bound.as_millis(),
                "agent status not published in time; going on"
            );
        }
    }
}
