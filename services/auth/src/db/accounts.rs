//! Deleting an account: the workspaces it alone owns, everything of the user, and the tombstone
//! that keeps edges refusing the user's tokens until they have expired.

use sqlx::{Any, Executor};

/// Takes the user's row lock on Postgres (a no-op update), so two deletions of one account run
/// one after the other. False when there is no such user.
pub async fn lock_user<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query("UPDATE users SET email = email WHERE id = $1")
        .bind(user_id)
        .execute(executor)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// The workspaces `user_id` owns, in id order (the order they are locked in).
pub async fn owned_workspaces<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT workspace_id FROM memberships WHERE user_id = $1 AND role = 'owner'
         ORDER BY workspace_id",
    )
    .bind(user_id)
    .fetch_all(executor)
    .await
}

/// The workspaces `user_id` owns with no other owner, in id order.
pub async fn sole_owned_workspaces<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT m.workspace_id FROM memberships m
         WHERE m.user_id = $1 AND m.role = 'owner'
           AND NOT EXISTS (
             SELECT 1 FROM memberships o
             WHERE o.workspace_id = m.workspace_id AND o.role = 'owner' AND o.user_id <> $1)
         ORDER BY m.workspace_id",
    )
    .bind(user_id)
    .fetch_all(executor)
    .await
}

/// The members of a workspace other than `user_id`.
pub async fn other_members<'c>(
    executor: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    user_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT user_id FROM memberships WHERE workspace_id = $1 AND user_id <> $2
         ORDER BY user_id",
    )
    .bind(workspace_id)
    .bind(user_id)
    .fetch_all(executor)
    .await
}

/// Deletes a workspace and every membership of it.
pub async fn delete_workspace(
    connection: &mut sqlx::AnyConnection,
    workspace_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM memberships WHERE workspace_id = $1")
        .bind(workspace_id)
        .execute(&mut *connection)
        .await?;
    sqlx::query("DELETE FROM workspaces WHERE id = $1")
        .bind(workspace_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Deletes the user and everything that is theirs alone: refresh tokens, sessions, API keys,
/// memberships, the rate-limit window of their email. (The foreign keys cascade too; the
/// statements say what goes without relying on `PRAGMA foreign_keys`.)
pub async fn delete_user(
    connection: &mut sqlx::AnyConnection,
    user_id: &str,
    email: &str,
) -> sqlx::Result<()> {
    for statement in [
        "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE user_id = $1)",
        "DELETE FROM sessions WHERE user_id = $1",
        "DELETE FROM api_keys WHERE user_id = $1",
        "DELETE FROM memberships WHERE user_id = $1",
        "DELETE FROM users WHERE id = $1",
    ] {
        sqlx::query(statement)
            .bind(user_id)
            .execute(&mut *connection)
            .await?;
    }
    sqlx::query("DELETE FROM sign_in_failures WHERE subject = $1")
        .bind(format!("account:{email}"))
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Records that `user_id` was deleted at `now` (kept while their tokens may live).
pub async fn insert_tombstone<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO deleted_users (user_id, deleted_at) VALUES ($1, $2)
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(now)
    .execute(executor)
    .await?;
    Ok(())
}

/// `(user id, deleted at)` of users deleted after `since`.
pub async fn deleted_since<'c>(
    executor: impl Executor<'c, Database = Any>,
    since: i64,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT user_id, deleted_at FROM deleted_users WHERE deleted_at > $1")
        .bind(since)
        .fetch_all(executor)
        .await
}

/// Forgets users deleted at or before `before`; returns how many.
pub async fn prune_tombstones<'c>(
    executor: impl Executor<'c, Database = Any>,
    before: i64,
) -> sqlx::Result<u64> {
    let result = sqlx::query("DELETE FROM deleted_users WHERE deleted_at <= $1")
        .bind(before)
        .execute(executor)
        .await?;
    Ok(result.rows_affected())
}
