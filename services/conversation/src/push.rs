//! Push notifications to offline members (SPEC §9), from the durable outbox in this service's
//! database. Ending an agent reply (delivered or failed) writes a push job in the same
//! transaction (`db::finish_message`), so a reply is never delivered without its job. The worker
//! here, on every instance:
//!
//! 1. **expands** each job: asks auth for the devices of the workspace's members who muted
//!    neither the conversation nor every push (`ListPushTargets`), drops the members who have a
//!    socket on some edge node ([`Presence`]), and replaces the job by one delivery per device,
//!    unique per (device, message) so nothing is pushed twice for one message;
//! 2. **sends** each delivery with [`Providers::send`]: sent, or retried with backoff (429, 5xx
//!    and network errors, honouring `Retry-After`), or failed; a token the provider calls
//!    invalid or unregistered has its device deleted (auth's `DeleteDevice`).
//!
//! Rows are claimed with a lease (compare-and-set), so instances sharing a database never send
//! the same delivery at once, and a delivery whose sender died is taken up again after the
//! lease: a push is sent at most once per (device, message) unless a sender dies between the
//! provider's answer and recording it.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crawbl_infra::grpc::Channel;
use crawbl_infra::metrics::CounterVec;
use crawbl_infra::presence::Presence;
use crawbl_proto::auth::v1::auth_service_client::AuthServiceClient;
use crawbl_proto::auth::v1::{DeleteDeviceRequest, ListPushTargetsRequest};
use crawbl_proto::conversation::v1::MessageStatus;
use crawbl_push::{Notification, Outcome, Providers, Target};
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::db;

/// How often the worker looks for due jobs and deliveries.
const POLL: Duration = Duration::from_millis(250);
/// How long a claimed job or delivery is this worker's before another may take it.
const LEASE_MS: i64 = 30_000;
const BATCH: i64 = 100;
/// Sends (and job expansions) tried before giving up.
const MAX_ATTEMPTS: i64 = 8;
/// The first retry waits this long, doubling up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: i64 = 1_000;
const MAX_BACKOFF_MS: i64 = 300_000;
/// How long ended deliveries are kept (the never-twice guarantee needs them only that long).
const KEEP_ENDED_MS: i64 = 24 * 3600 * 1000;
/// The longest preview of a reply's text in a notification.
const PREVIEW_CHARS: usize = 180;

static PUSHES: LazyLock<CounterVec> = LazyLock::new(|| {
    crawbl_infra::metrics::registry().counter_vec(
        "crawbl_push_notifications_total",
        "Push notifications by provider (fcm, apns, webpush) and result: sent, failed (given up), \
         retried (an attempt to be repeated) or token_removed (the provider refused the token; \
         the device was deleted).",
        &["provider", "result"],
    )
});

fn count(target: &Target, result: &str) {
    PUSHES.with(&[target.platform().as_str(), result]).inc();
}

/// Sends the pushes of this service's outbox.
#[derive(Clone)]
pub struct Pusher {
    pool: AnyPool,
    auth: AuthServiceClient<Channel>,
    presence: Presence,
    providers: Arc<Providers>,
}

impl Pusher {
    pub fn new(
        pool: AnyPool,
        auth: AuthServiceClient<Channel>,
        presence: Presence,
        providers: Providers,
    ) -> Self {
        Self {
            pool,
            auth,
            presence,
            providers: Arc::new(providers),
        }
    }

    /// Works the outbox until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(POLL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            if let Err(error) = self.expand_due_jobs().await {
                tracing::warn!(%error, "cannot read the push jobs; retried");
            }
            if let Err(error) = self.send_due_deliveries(&shutdown).await {
                tracing::warn!(%error, "cannot read the push deliveries; retried");
            }
            let now = db::now_ms();
            if now - last_prune > 600_000 {
                last_prune = now;
                if let Err(error) = db::prune_push_deliveries(&self.pool, now - KEEP_ENDED_MS).await
                {
                    tracing::warn!(%error, "cannot prune ended push deliveries");
                }
            }
        }
    }

    async fn expand_due_jobs(&self) -> Result<(), sqlx::Error> {
        let now = db::now_ms();
        for job in db::due_push_jobs(&self.pool, now, BATCH).await? {
            if !db::claim_push_job(&self.pool, &job, now + LEASE_MS).await? {
                continue;
            }
            if let Err(error) = self.expand(&job).await {
                let attempts = job.attempts + 1;
                if attempts >= MAX_ATTEMPTS {
                    tracing::error!(message_id = %job.message_id, error = format!("{error:#}"), "giving up the pushes of a reply");
                    db::expand_push_job(&self.pool, &job.message_id, &[], now).await?;
                } else {
                    tracing::warn!(message_id = %job.message_id, error = format!("{error:#}"), "cannot work out a reply's pushes; retried");
                    db::retry_push_job(&self.pool, &job.message_id, now + backoff(attempts))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// One delivery per device of each offline member who has not muted the conversation.
    async fn expand(&self, job: &db::PushJob) -> anyhow::Result<()> {
        let Some(message) = db::find_message(&self.pool, &job.message_id).await? else {
            // Deleted with its conversation since: nothing to tell.
            db::expand_push_job(&self.pool, &job.message_id, &[], db::now_ms()).await?;
            return Ok(());
        };
        let agent_id = message.agent_id.clone().unwrap_or_default();
        let agent_name = db::find_agent(&self.pool, &job.workspace_id, &agent_id)
            .await?
            .map(|agent| agent.name)
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "Agent".to_owned());
        let text = message
            .content
            .as_ref()
            .map(|content| content.text.as_str())
            .unwrap_or_default();
        let failed = message.status == MessageStatus::Failed as i32;
        let notification = Notification::new(agent_name, preview(text, failed))
            .with_data("workspaceId", &job.workspace_id)
            .with_data("conversationId", &job.conversation_id)
            .with_data("messageId", &job.message_id)
            .with_data("seq", job.seq.to_string());
        let notification = Notification {
            collapse_key: Some(job.conversation_id.clone()),
            ..notification
        };
        let notification_json = serde_json::to_string(&notification)?;
        let targets = self
            .auth
            .clone()
            .list_push_targets(ListPushTargetsRequest {
                workspace_id: job.workspace_id.clone(),
                conversation_id: job.conversation_id.clone(),
            })
            .await?
            .into_inner()
            .targets;
        let mut deliveries = Vec::new();
        let mut online = std::collections::HashMap::new();
        for target in targets {
            let Some(device) = target.device else {
                continue;
            };
            let is_online = match online.get(&target.user_id) {
                Some(known) => *known,
                None => {
                    let known = self
                        .presence
                        .is_online(&target.user_id)
                        .await
                        .unwrap_or_else(|error| {
                            // Better a push to someone looking than none to someone away.
                            tracing::warn!(
                                error = format!("{error:#}"),
                                "cannot read presence; pushing"
                            );
                            false
                        });
                    online.insert(target.user_id.clone(), known);
                    known
                }
            };
            if is_online {
                continue;
            }
            deliveries.push(db::NewDelivery {
                device_id: device.id,
                user_id: target.user_id,
                target: device.target_json,
                notification: notification_json.clone(),
            });
        }
        tracing::debug!(message_id = %job.message_id, devices = deliveries.len(), "pushes of a reply");
        db::expand_push_job(&self.pool, &job.message_id, &deliveries, db::now_ms()).await?;
        Ok(())
    }

    async fn send_due_deliveries(&self, shutdown: &CancellationToken) -> Result<(), sqlx::Error> {
        let now = db::now_ms();
        let due = db::due_push_deliveries(&self.pool, now, BATCH).await?;
        let mut sends = tokio::task::JoinSet::new();
        for delivery in due {
            if shutdown.is_cancelled() {
                break;
            }
            if !db::claim_push_delivery(&self.pool, &delivery, now + LEASE_MS).await? {
                continue;
            }
            let pusher = self.clone();
            sends.spawn(async move {
                if let Err(error) = pusher.send(&delivery).await {
                    tracing::warn!(%error, delivery_id = %delivery.id, "cannot record a push's outcome; it is retried after its lease");
                }
            });
        }
        while sends.join_next().await.is_some() {}
        Ok(())
    }

    async fn send(&self, delivery: &db::PushDelivery) -> Result<(), sqlx::Error> {
        let now = db::now_ms();
        let (Ok(target), Ok(notification)) = (
            serde_json::from_str::<Target>(&delivery.target),
            serde_json::from_str::<Notification>(&delivery.notification),
        ) else {
            tracing::error!(delivery_id = %delivery.id, "an unreadable push delivery; dropped");
            return db::end_push_delivery(&self.pool, &delivery.id, "failed", now).await;
        };
        let outcome = self.providers.send(&target, &notification).await;
        let now = db::now_ms();
        match outcome {
            Outcome::Sent => {
                count(&target, "sent");
                db::end_push_delivery(&self.pool, &delivery.id, "sent", now).await
            }
            Outcome::InvalidToken => {
                count(&target, "token_removed");
                db::end_push_deliveries_to(&self.pool, &delivery.device_id, now).await?;
                let removed = self
                    .auth
                    .clone()
                    .delete_device(DeleteDeviceRequest {
                        actor_user_id: String::new(),
                        device_id: delivery.device_id.clone(),
                    })
                    .await;
                match removed {
                    Ok(_) => {
                        tracing::info!(device_id = %delivery.device_id, "the provider refused a device's token; the device is removed")
                    }
                    Err(status) if status.code() == tonic::Code::NotFound => {}
                    Err(status) => {
                        tracing::warn!(device_id = %delivery.device_id, code = ?status.code(), "cannot remove a device whose token the provider refused")
                    }
                }
                Ok(())
            }
            Outcome::Retry { after } => {
                let attempts = delivery.attempts + 1;
                if attempts >= MAX_ATTEMPTS {
                    count(&target, "failed");
                    tracing::warn!(delivery_id = %delivery.id, attempts, "giving up a push");
                    return db::end_push_delivery(&self.pool, &delivery.id, "failed", now).await;
                }
                count(&target, "retried");
                let wait = after
                    .map(|after| i64::try_from(after.as_millis()).unwrap_or(MAX_BACKOFF_MS))
                    .unwrap_or(0)
                    .max(backoff(attempts));
                db::retry_push_delivery(&self.pool, &delivery.id, now + wait, now).await
            }
            Outcome::Rejected(_) => {
                // Logged by the sender with the provider's reason.
                count(&target, "failed");
                db::end_push_delivery(&self.pool, &delivery.id, "failed", now).await
            }
        }
    }
}

/// The wait before attempt `attempts + 1`: 1 s, 2 s, 4 s, … up to 5 minutes.
fn backoff(attempts: i64) -> i64 {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    FIRST_BACKOFF_MS
        .saturating_mul(1_i64 << exponent)
        .min(MAX_BACKOFF_MS)
}

/// What the notification says: the start of the reply's text.
fn preview(text: &str, failed: bool) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return if failed {
            "The reply failed.".to_owned()
        } else {
            "Replied.".to_owned()
        };
    }
    if text.chars().count() <= PREVIEW_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(PREVIEW_CHARS).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        assert_eq!(backoff(1), 1_000);
        assert_eq!(backoff(2), 2_000);
        assert_eq!(backoff(4), 8_000);
        assert_eq!(backoff(30), MAX_BACKOFF_MS);
    }

    #[test]
    fn previews_are_short_and_on_one_line() {
        assert_eq!(preview("Hello\n  world", false), "Hello world");
        assert_eq!(preview("", true), "The reply failed.");
        let long = "é".repeat(500);
        let shown = preview(&long, false);
        assert_eq!(shown.chars().count(), PREVIEW_CHARS + 1);
        assert!(shown.ends_with('…'));
    }
}
