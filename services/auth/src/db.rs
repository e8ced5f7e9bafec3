//! Database access: plain functions over any executor (the pool, a connection or a transaction),
//! with runtime-checked queries that run unchanged on Postgres and SQLite through sqlx's `Any`
//! driver. Ids are UUID v7 strings and timestamps Unix milliseconds.

use sqlx::{Any, Executor};

use crate::domain::{Membership, Role, User};
use crate::tokens::NewSession;

/// A user together with their stored password hash.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// The session an access token belongs to, with its user.
pub struct SessionOwner {
    pub user: User,
    pub access_expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// Fails with a unique violation (see [`is_unique_violation`]) when the email is taken.
pub async fn insert_user<'c>(
    executor: impl Executor<'c, Database = Any>,
    user: &User,
    password_hash: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(password_hash)
    .bind(&user.display_name)
    .bind(now)
    .execute(executor)
    .await?;
    Ok(())
}

pub async fn insert_workspace<'c>(
    executor: impl Executor<'c, Database = Any>,
    id: &str,
    name: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(now)
        .execute(executor)
        .await?;
    Ok(())
}

pub async fn insert_membership<'c>(
    executor: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    user_id: &str,
    role: Role,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO memberships (workspace_id, user_id, role, created_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(workspace_id)
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .execute(executor)
    .await?;
    Ok(())
}

pub async fn insert_session<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
    session: &NewSession,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, access_token_hash, refresh_token_hash,
                               access_expires_at, refresh_expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&session.id)
    .bind(user_id)
    .bind(&session.access_token_hash)
    .bind(&session.refresh_token_hash)
    .bind(session.access_expires_at)
    .bind(session.refresh_expires_at)
    .bind(session.created_at)
    .execute(executor)
    .await?;
    Ok(())
}

/// `email` must already be normalized (trimmed, lowercased), as stored.
pub async fn find_credentials_by_email<'c>(
    executor: impl Executor<'c, Database = Any>,
    email: &str,
) -> sqlx::Result<Option<Credentials>> {
    let row: Option<(String, String, String, String)> =
        sqlx::query_as("SELECT id, email, display_name, password_hash FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(executor)
            .await?;
    Ok(
        row.map(|(id, email, display_name, password_hash)| Credentials {
            user: User {
                id,
                email,
                display_name,
            },
            password_hash,
        }),
    )
}

pub async fn find_session_by_access_token_hash<'c>(
    executor: impl Executor<'c, Database = Any>,
    access_token_hash: &str,
) -> sqlx::Result<Option<SessionOwner>> {
    let row: Option<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT u.id, u.email, u.display_name, s.access_expires_at, s.revoked_at
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.access_token_hash = $1",
    )
    .bind(access_token_hash)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(
        |(id, email, display_name, access_expires_at, revoked_at)| SessionOwner {
            user: User {
                id,
                email,
                display_name,
            },
            access_expires_at,
            revoked_at,
        },
    ))
}

/// Every workspace the user belongs to, oldest membership first.
pub async fn list_memberships<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> sqlx::Result<Vec<Membership>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT w.id, w.name, m.role
         FROM memberships m JOIN workspaces w ON w.id = m.workspace_id
         WHERE m.user_id = $1
         ORDER BY m.created_at, w.id",
    )
    .bind(user_id)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(workspace_id, workspace_name, role)| Membership {
            workspace_id,
            workspace_name,
            role,
        })
        .collect())
}

/// Whether `error` is a unique-constraint violation, on either backend.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|error| error.is_unique_violation())
}
