//! Counters of sign-in attempts per subject (`account:<email>`, `address:<ip>`), one fixed window
//! each: `failures` (wrong passwords) and `pending` (attempts whose password is being checked).
//! Kept in the database so every auth replica counts together; each change is one statement,
//! atomic on both backends (Postgres locks the row, SQLite has one writer).

use sqlx::{Any, Executor};

/// A subject's window as one attempt found it, that attempt's reservation included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub started_at: i64,
    pub failures: i64,
    pub pending: i64,
}

/// Reserves a place for one attempt and returns the window with it. The window starts over at
/// `now` when it started at or before `window_start_cutoff` (it has ended) or holds nothing.
pub async fn reserve<'c>(
    executor: impl Executor<'c, Database = Any>,
    subject: &str,
    now: i64,
    window_start_cutoff: i64,
) -> sqlx::Result<Window> {
    let (started_at, failures, pending): (i64, i64, i64) = sqlx::query_as(
        "INSERT INTO sign_in_failures (subject, window_started_at, failures, pending)
         VALUES ($1, $2, 0, 1)
         ON CONFLICT (subject) DO UPDATE SET
           failures = CASE WHEN sign_in_failures.window_started_at <= $3 THEN 0
                           ELSE sign_in_failures.failures END,
           pending = CASE WHEN sign_in_failures.window_started_at <= $3 THEN 1
                          ELSE sign_in_failures.pending + 1 END,
           window_started_at = CASE
             WHEN sign_in_failures.window_started_at <= $3
               OR (sign_in_failures.failures = 0 AND sign_in_failures.pending = 0) THEN $2
             ELSE sign_in_failures.window_started_at END
         RETURNING window_started_at, failures, pending",
    )
    .bind(subject)
    .bind(now)
    .bind(window_start_cutoff)
    .fetch_one(executor)
    .await?;
    Ok(Window {
        started_at,
        failures,
        pending,
    })
}

/// Gives back a reservation made in the window that started at `window_started_at` (nothing when
/// that window has been replaced: its reservations went with it).
pub async fn release<'c>(
    executor: impl Executor<'c, Database = Any>,
    subject: &str,
    window_started_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE sign_in_failures SET pending = pending - 1
         WHERE subject = $1 AND window_started_at = $2 AND pending > 0",
    )
    .bind(subject)
    .bind(window_started_at)
    .execute(executor)
    .await?;
    Ok(())
}

/// Turns a reservation into a failure.
pub async fn fail<'c>(
    executor: impl Executor<'c, Database = Any>,
    subject: &str,
    window_started_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE sign_in_failures SET
           failures = failures + 1,
           pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END
         WHERE subject = $1 AND window_started_at = $2",
    )
    .bind(subject)
    .bind(window_started_at)
    .execute(executor)
    .await?;
    Ok(())
}

/// Forgets a subject's failures (in whatever window) and gives back the reservation made in the
/// window that started at `window_started_at`.
pub async fn succeed<'c>(
    executor: impl Executor<'c, Database = Any>,
    subject: &str,
    window_started_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE sign_in_failures SET
           failures = 0,
           pending = CASE WHEN window_started_at = $2 AND pending > 0 THEN pending - 1
                          ELSE pending END
         WHERE subject = $1",
    )
    .bind(subject)
    .bind(window_started_at)
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
