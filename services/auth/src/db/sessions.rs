//! Sessions and the refresh tokens each has been given.

use sqlx::{Any, Executor};

pub async fn insert_session<'c>(
    executor: impl Executor<'c, Database = Any>,
    session_id: &str,
    user_id: &str,
    now: i64,
    refresh_expires_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, refresh_expires_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(now)
    .bind(refresh_expires_at)
    .execute(executor)
    .await?;
    Ok(())
}

pub async fn insert_refresh_token<'c>(
    executor: impl Executor<'c, Database = Any>,
    token_hash: &str,
    session_id: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
    )
    .bind(token_hash)
    .bind(session_id)
    .bind(now)
    .execute(executor)
    .await?;
    Ok(())
}

/// A refresh token as found by its hash, with its session.
pub struct RefreshTokenRow {
    pub session_id: String,
    pub user_id: String,
    pub session_revoked_at: Option<i64>,
    pub refresh_expires_at: i64,
}

pub async fn find_refresh_token<'c>(
    executor: impl Executor<'c, Database = Any>,
    token_hash: &str,
) -> sqlx::Result<Option<RefreshTokenRow>> {
    let row: Option<(String, String, Option<i64>, i64)> = sqlx::query_as(
        "SELECT s.id, s.user_id, s.revoked_at, s.refresh_expires_at
         FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id
         WHERE r.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(
        |(session_id, user_id, session_revoked_at, refresh_expires_at)| RefreshTokenRow {
            session_id,
            user_id,
            session_revoked_at,
            refresh_expires_at,
        },
    ))
}

/// Marks a refresh token exchanged; false when it already was (someone else got there first).
pub async fn mark_refresh_token_used<'c>(
    executor: impl Executor<'c, Database = Any>,
    token_hash: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
    )
    .bind(now)
    .bind(token_hash)
    .execute(executor)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn extend_session<'c>(
    executor: impl Executor<'c, Database = Any>,
    session_id: &str,
    refresh_expires_at: i64,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE sessions SET refresh_expires_at = $1 WHERE id = $2")
        .bind(refresh_expires_at)
        .bind(session_id)
        .execute(executor)
        .await?;
    Ok(())
}

/// Revokes a live session; false when it was already revoked or does not exist.
pub async fn revoke_session<'c>(
    executor: impl Executor<'c, Database = Any>,
    session_id: &str,
    reason: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2
         WHERE id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(session_id)
    .execute(executor)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A session's user and whether (when) it was revoked.
pub struct SessionState {
    pub user_id: String,
    pub revoked_at: Option<i64>,
}

pub async fn find_session<'c>(
    executor: impl Executor<'c, Database = Any>,
    session_id: &str,
) -> sqlx::Result<Option<SessionState>> {
    let row: Option<(String, Option<i64>)> =
        sqlx::query_as("SELECT user_id, revoked_at FROM sessions WHERE id = $1")
            .bind(session_id)
            .fetch_optional(executor)
            .await?;
    Ok(row.map(|(user_id, revoked_at)| SessionState {
        user_id,
        revoked_at,
    }))
}

/// `(session id, user id, revoked at)` of sessions revoked after `since`.
pub async fn revoked_since<'c>(
    executor: impl Executor<'c, Database = Any>,
    since: i64,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT id, user_id, revoked_at FROM sessions
         WHERE revoked_at IS NOT NULL AND revoked_at > $1",
    )
    .bind(since)
    .fetch_all(executor)
    .await
}
