//! The push outbox: jobs (one per ended agent reply) and deliveries (one per device and
//! message). Claims are compare-and-set on `next_attempt_at`, so several instances sharing a
//! Postgres database never work on the same row at once.

use crawbl_proto::conversation::v1::Message;
use sqlx::{AnyConnection, AnyPool, Row};

/// A reply whose pushes are still to be worked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushJob {
    pub message_id: String,
    pub workspace_id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
}

/// One push to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushDelivery {
    pub id: String,
    pub device_id: String,
    pub message_id: String,
    pub target: String,
    pub notification: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
}

/// Notes that `message` (an agent reply that just ended) is to be pushed.
pub async fn insert_push_job(
    connection: &mut AnyConnection,
    message: &Message,
    event_place: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO push_jobs (message_id, workspace_id, conversation_id, seq, event_id, next_attempt_at, created_at)
         VALUES ($1, $2, $3, 0, $4, $5, $5)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&message.id)
    .bind(&message.workspace_id)
    .bind(&message.conversation_id)
    .bind(event_place)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Jobs due at `now` whose event is numbered, oldest first. (A job's `seq` column is from before
/// events were numbered after commit; its `event_id` names the event since. A pruned event's
/// number is 0: the device refetches.)
pub async fn due_push_jobs(
    pool: &AnyPool,
    now: i64,
    limit: i64,
) -> Result<Vec<PushJob>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT j.message_id, j.workspace_id, j.conversation_id, COALESCE(e.seq, j.seq) AS seq,
                j.attempts, j.next_attempt_at
         FROM push_jobs j LEFT JOIN events e ON e.id = j.event_id
         WHERE j.next_attempt_at <= $1 AND (e.id IS NULL OR e.seq IS NOT NULL)
         ORDER BY j.next_attempt_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PushJob {
                message_id: row.try_get("message_id")?,
                workspace_id: row.try_get("workspace_id")?,
                conversation_id: row.try_get("conversation_id")?,
                seq: row.try_get("seq")?,
                attempts: row.try_get("attempts")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
            })
        })
        .collect()
}

/// Takes `job` until `until` (unless another worker took it first), counting the attempt.
pub async fn claim_push_job(
    pool: &AnyPool,
    job: &PushJob,
    until: i64,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query(
        "UPDATE push_jobs SET next_attempt_at = $1, attempts = attempts + 1
         WHERE message_id = $2 AND next_attempt_at = $3",
    )
    .bind(until)
    .bind(&job.message_id)
    .bind(job.next_attempt_at)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Puts a claimed job off until `at`.
pub async fn retry_push_job(pool: &AnyPool, message_id: &str, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE push_jobs SET next_attempt_at = $1 WHERE message_id = $2")
        .bind(at)
        .bind(message_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// A delivery to add when a job is expanded.
pub struct NewDelivery {
    pub device_id: String,
    pub user_id: String,
    pub target: String,
    pub notification: String,
}

/// Replaces `message_id`'s job by its deliveries, in one transaction. A delivery already there
/// for the same device and message stays as it is.
pub async fn expand_push_job(
    pool: &AnyPool,
    message_id: &str,
    deliveries: &[NewDelivery],
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for delivery in deliveries {
        sqlx::query(
            "INSERT INTO push_deliveries (id, device_id, message_id, user_id, target, notification,
                                          status, next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $7)
             ON CONFLICT (device_id, message_id) DO NOTHING",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&delivery.device_id)
        .bind(message_id)
        .bind(&delivery.user_id)
        .bind(&delivery.target)
        .bind(&delivery.notification)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM push_jobs WHERE message_id = $1")
        .bind(message_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Pending deliveries due at `now`, oldest first.
pub async fn due_push_deliveries(
    pool: &AnyPool,
    now: i64,
    limit: i64,
) -> Result<Vec<PushDelivery>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, device_id, message_id, target, notification, attempts, next_attempt_at
         FROM push_deliveries WHERE status = 'pending' AND next_attempt_at <= $1
         ORDER BY next_attempt_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PushDelivery {
                id: row.try_get("id")?,
                device_id: row.try_get("device_id")?,
                message_id: row.try_get("message_id")?,
                target: row.try_get("target")?,
                notification: row.try_get("notification")?,
                attempts: row.try_get("attempts")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
            })
        })
        .collect()
}

/// Takes a pending delivery until `until` (unless another worker took it first), counting the
/// attempt.
pub async fn claim_push_delivery(
    pool: &AnyPool,
    delivery: &PushDelivery,
    until: i64,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query(
        "UPDATE push_deliveries SET next_attempt_at = $1, attempts = attempts + 1
         WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3",
    )
    .bind(until)
    .bind(&delivery.id)
    .bind(delivery.next_attempt_at)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Ends a delivery: `sent`, `failed` or `invalid`.
pub async fn end_push_delivery(
    pool: &AnyPool,
    id: &str,
    status: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE push_deliveries SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status)
        .bind(now)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends every pending delivery to a device whose token the provider refused.
pub async fn end_push_deliveries_to(
    pool: &AnyPool,
    device_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE push_deliveries SET status = 'invalid', updated_at = $1
         WHERE device_id = $2 AND status = 'pending'",
    )
    .bind(now)
    .bind(device_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Puts a claimed delivery off until `at`.
pub async fn retry_push_delivery(
    pool: &AnyPool,
    id: &str,
    at: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE push_deliveries SET next_attempt_at = $1, updated_at = $2 WHERE id = $3")
        .bind(at)
        .bind(now)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Forgets deliveries that ended before `before`.
pub async fn prune_push_deliveries(pool: &AnyPool, before: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM push_deliveries WHERE status <> 'pending' AND updated_at < $1")
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
