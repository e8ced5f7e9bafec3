//! Counters of failed sign-ins per subject (`account:<email>`, `address:<ip>`), one fixed window
//! each. Kept in the database so every auth replica counts together.

use sqlx::{Any, Executor};

/// `(window started at, failures)` of a subject, if it has failed before.
pub async fn find<'c>(
    executor: impl Executor<'c, Database = Any>,
    subject: &str,
) -> sqlx::Result<Option<(i64, i64)>> {
    sqlx::query_as("SELECT window_started_at, failures FROM sign_in_failures WHERE subject = $1")
        .bind(subject)
        .fetch_optional(executor)
        .await
}

/// Counts one failure: in the current window if it started after `window_start_cutoff`, else in
/// a new window starting `now`.
pub async fn record_failure<'c>(
    executor: impl Executor<'c, Database = Any>,
    subject: &str,
    now: i64,
    window_start_cutoff: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sign_in_failures (subject, window_started_at, failures) VALUES ($1, $2, 1)
         ON CONFLICT (subject) DO UPDATE SET
           failures = CASE WHEN sign_in_failures.window_started_at <= $3 THEN 1
                           ELSE sign_in_failures.failures + 1 END,
           window_started_at = CASE WHEN sign_in_failures.window_started_at <= $3 THEN $2
                                    ELSE sign_in_failures.window_started_at END",
    )
    .bind(subject)
    .bind(now)
    .bind(window_start_cutoff)
    .execute(executor)
    .await?;
    Ok(())
}

pub async fn clear<'c>(
    executor: impl Executor<'c, Database = Any>,
    subject: &str,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sign_in_failures WHERE subject = $1")
        .bind(subject)
        .execute(executor)
        .await?;
    Ok(())
}

/// Forgets windows that ended; returns how many.
pub async fn prune<'c>(
    executor: impl Executor<'c, Database = Any>,
    window_start_cutoff: i64,
) -> sqlx::Result<u64> {
    let result = sqlx::query("DELETE FROM sign_in_failures WHERE window_started_at <= $1")
        .bind(window_start_cutoff)
        .execute(executor)
        .await?;
    Ok(result.rows_affected())
}
