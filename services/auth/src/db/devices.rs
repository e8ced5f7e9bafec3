//! Devices (push notification targets) and what their users muted.

use sqlx::{Any, Executor, Row};

/// A registered device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRow {
    pub id: String,
    pub user_id: String,
    pub platform: String,
    /// The normalized target as JSON (`crawbl_push::Target`).
    pub target: String,
    pub app_id: Option<String>,
    pub created_at: i64,
}

fn device(row: &sqlx::any::AnyRow) -> sqlx::Result<DeviceRow> {
    Ok(DeviceRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        platform: row.try_get("platform")?,
        target: row.try_get("target")?,
        app_id: row.try_get("app_id")?,
        created_at: row.try_get("created_at")?,
    })
}

pub struct NewDevice<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub session_id: &'a str,
    pub platform: &'a str,
    pub token: &'a str,
    pub target: &'a str,
    pub app_id: Option<&'a str>,
    pub now: i64,
}

/// Registers `device`, or, when its token is registered already, gives that registration to
/// this user and session (keeping its id). The answer: the device, and whether it is new.
pub async fn upsert<'c>(
    executor: impl Executor<'c, Database = Any>,
    device: &NewDevice<'_>,
) -> sqlx::Result<(DeviceRow, bool)> {
    let row = sqlx::query(
        "INSERT INTO devices (id, user_id, session_id, platform, token, target, app_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (platform, token) DO UPDATE
           SET user_id = excluded.user_id, session_id = excluded.session_id,
               target = excluded.target, app_id = excluded.app_id
         RETURNING id, user_id, platform, target, app_id, created_at",
    )
    .bind(device.id)
    .bind(device.user_id)
    .bind(device.session_id)
    .bind(device.platform)
    .bind(device.token)
    .bind(device.target)
    .bind(device.app_id)
    .bind(device.now)
    .fetch_one(executor)
    .await?;
    let found = self::device(&row)?;
    let created = found.id == device.id;
    Ok((found, created))
}

/// A user's devices, oldest first.
pub async fn list_of_user<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> sqlx::Result<Vec<DeviceRow>> {
    sqlx::query(
        "SELECT id, user_id, platform, target, app_id, created_at
         FROM devices WHERE user_id = $1 ORDER BY created_at, id",
    )
    .bind(user_id)
    .fetch_all(executor)
    .await?
    .iter()
    .map(device)
    .collect()
}

/// Deletes a device (of `user_id`, unless `None`); false when there was none.
pub async fn delete<'c>(
    executor: impl Executor<'c, Database = Any>,
    device_id: &str,
    user_id: Option<&str>,
) -> sqlx::Result<bool> {
    let result = match user_id {
        Some(user_id) => {
            sqlx::query("DELETE FROM devices WHERE id = $1 AND user_id = $2")
                .bind(device_id)
                .bind(user_id)
                .execute(executor)
                .await?
        }
        None => {
            sqlx::query("DELETE FROM devices WHERE id = $1")
                .bind(device_id)
                .execute(executor)
                .await?
        }
    };
    Ok(result.rows_affected() > 0)
}

/// Deletes the devices a session registered (it was logged out or revoked).
pub async fn delete_of_session<'c>(
    executor: impl Executor<'c, Database = Any>,
    session_id: &str,
) -> sqlx::Result<u64> {
    Ok(sqlx::query("DELETE FROM devices WHERE session_id = $1")
        .bind(session_id)
        .execute(executor)
        .await?
        .rows_affected())
}

/// Deletes every device and mute of a user (the account is deleted).
pub async fn delete_of_user(
    connection: &mut sqlx::AnyConnection,
    user_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM devices WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *connection)
        .await?;
    sqlx::query("DELETE FROM push_mutes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// The devices a push about `conversation_id` of `workspace_id` goes to: those of members who
/// muted neither the conversation nor every push.
pub async fn push_targets<'c>(
    executor: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    conversation_id: &str,
) -> sqlx::Result<Vec<DeviceRow>> {
    sqlx::query(
        "SELECT d.id, d.user_id, d.platform, d.target, d.app_id, d.created_at
         FROM devices d JOIN memberships m ON m.user_id = d.user_id
         WHERE m.workspace_id = $1
           AND NOT EXISTS (SELECT 1 FROM push_mutes p WHERE p.user_id = d.user_id
                           AND (p.conversation_id = '' OR p.conversation_id = $2))
         ORDER BY d.user_id, d.created_at, d.id",
    )
    .bind(workspace_id)
    .bind(conversation_id)
    .fetch_all(executor)
    .await?
    .iter()
    .map(device)
    .collect()
}

/// What `user_id` muted: conversation ids, `""` for every push.
pub async fn mutes<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT conversation_id FROM push_mutes WHERE user_id = $1 ORDER BY conversation_id",
    )
    .bind(user_id)
    .fetch_all(executor)
    .await
}

/// Mutes (or unmutes) a conversation, or with `""` every push.
pub async fn set_mute<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
    conversation_id: &str,
    muted: bool,
) -> sqlx::Result<()> {
    let query = if muted {
        "INSERT INTO push_mutes (user_id, conversation_id) VALUES ($1, $2)
         ON CONFLICT (user_id, conversation_id) DO NOTHING"
    } else {
        "DELETE FROM push_mutes WHERE user_id = $1 AND conversation_id = $2"
    };
    sqlx::query(query)
        .bind(user_id)
        .bind(conversation_id)
        .execute(executor)
        .await?;
    Ok(())
}
