//! API keys, stored by hash.

use sqlx::{Any, Executor};

use crate::domain::ApiKey;

pub struct NewApiKey<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub name: &'a str,
    pub key_hash: &'a str,
    pub prefix: &'a str,
    pub created_at: i64,
}

pub async fn insert<'c>(
    executor: impl Executor<'c, Database = Any>,
    key: &NewApiKey<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, user_id, name, key_hash, prefix, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(key.id)
    .bind(key.user_id)
    .bind(key.name)
    .bind(key.key_hash)
    .bind(key.prefix)
    .bind(key.created_at)
    .execute(executor)
    .await?;
    Ok(())
}

pub async fn count_active<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .fetch_one(executor)
        .await
}

/// A user's keys that are not revoked, newest first.
pub async fn list_active<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> sqlx::Result<Vec<ApiKey>> {
    let rows: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, name, prefix, created_at, last_used_at FROM api_keys
         WHERE user_id = $1 AND revoked_at IS NULL
         ORDER BY created_at DESC, id DESC",
    )
    .bind(user_id)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, prefix, created_at, last_used_at)| ApiKey {
            id,
            name,
            prefix,
            created_at,
            last_used_at,
        })
        .collect())
}

/// Revokes one of `user_id`'s live keys; false when there is no such live key of theirs.
pub async fn revoke<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
    api_key_id: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1
         WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(api_key_id)
    .bind(user_id)
    .execute(executor)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A key found by its hash.
pub struct ApiKeyRow {
    pub id: String,
    pub user_id: String,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

pub async fn find_by_hash<'c>(
    executor: impl Executor<'c, Database = Any>,
    key_hash: &str,
) -> sqlx::Result<Option<ApiKeyRow>> {
    let row: Option<(String, String, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT id, user_id, revoked_at, last_used_at FROM api_keys WHERE key_hash = $1",
    )
    .bind(key_hash)
    .fetch_optional(executor)
    .await?;
    Ok(
        row.map(|(id, user_id, revoked_at, last_used_at)| ApiKeyRow {
            id,
            user_id,
            revoked_at,
            last_used_at,
        }),
    )
}

pub async fn touch<'c>(
    executor: impl Executor<'c, Database = Any>,
    api_key_id: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(api_key_id)
        .execute(executor)
        .await?;
    Ok(())
}

/// `(key id, user id, revoked at)` of keys revoked after `since`.
pub async fn revoked_since<'c>(
    executor: impl Executor<'c, Database = Any>,
    since: i64,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT id, user_id, revoked_at FROM api_keys
         WHERE revoked_at IS NOT NULL AND revoked_at > $1",
    )
    .bind(since)
    .fetch_all(executor)
    .await
}
