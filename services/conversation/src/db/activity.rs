//! What the operations view shows of a workspace: how many events and turns it had lately, and
//! why its latest turns failed.

use sqlx::{AnyPool, Row};

use super::{day_and_month, new_id, now_ms};

/// Turn failures kept per workspace; older ones are deleted as new ones come.
const KEPT_ERRORS: i64 = 100;
/// Longest error message kept (characters).
const MAX_ERROR_MESSAGE: usize = 500;

/// One failed turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnError {
    pub conversation_id: String,
    pub message_id: String,
    pub code: String,
    pub message: String,
    pub at_ms: i64,
}

/// A workspace's recent activity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    pub events: u64,
    pub turns: u64,
    pub recent_errors: Vec<TurnError>,
}

/// Records why a turn of `workspace_id` failed, keeping the newest [`KEPT_ERRORS`].
pub async fn record_turn_error(
    pool: &AnyPool,
    workspace_id: &str,
    error: &TurnError,
) -> Result<(), sqlx::Error> {
    let message: String = error.message.chars().take(MAX_ERROR_MESSAGE).collect();
    sqlx::query(
        "INSERT INTO turn_errors (id, workspace_id, conversation_id, message_id, code, message, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id())
    .bind(workspace_id)
    .bind(&error.conversation_id)
    .bind(&error.message_id)
    .bind(&error.code)
    .bind(message)
    .bind(error.at_ms)
    .execute(pool)
    .await?;
    sqlx::query(
        "DELETE FROM turn_errors WHERE workspace_id = $1 AND id NOT IN
           (SELECT id FROM turn_errors WHERE workspace_id = $1
            ORDER BY created_at DESC, id DESC LIMIT $2)",
    )
    .bind(workspace_id)
    .bind(KEPT_ERRORS)
    .execute(pool)
    .await?;
    Ok(())
}

/// Events and ended turns of `workspace_id` in the last `window_ms`, and its `error_limit`
/// latest turn failures, newest first.
pub async fn workspace_activity(
    pool: &AnyPool,
    workspace_id: &str,
    window_ms: i64,
    error_limit: i64,
) -> Result<Activity, sqlx::Error> {
    let since = now_ms() - window_ms;
    let events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE workspace_id = $1 AND created_at >= $2",
    )
    .bind(workspace_id)
    .bind(since)
    .fetch_one(pool)
    .await?;
    // Every ended turn has a usage row; `day` narrows the scan to the index's last day or two.
    let (since_day, _) = day_and_month(since);
    let turns: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM turn_usage WHERE workspace_id = $1 AND day >= $2 AND created_at >= $3",
    )
    .bind(workspace_id)
    .bind(since_day)
    .bind(since)
    .fetch_one(pool)
    .await?;
    let recent_errors = sqlx::query(
        "SELECT conversation_id, message_id, code, message, created_at FROM turn_errors
         WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(workspace_id)
    .bind(error_limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(TurnError {
            conversation_id: row.try_get("conversation_id")?,
            message_id: row.try_get("message_id")?,
            code: row.try_get("code")?,
            message: row.try_get("message")?,
            at_ms: row.try_get("created_at")?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    Ok(Activity {
        events: u64::try_from(events).unwrap_or_default(),
        turns: u64::try_from(turns).unwrap_or_default(),
        recent_errors,
    })
}
