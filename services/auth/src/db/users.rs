//! Users and their credentials.

use sqlx::{Any, Executor};

use crate::domain::User;

/// A user together with their stored password hash.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// Fails with a unique violation (see [`super::is_unique_violation`]) when the email is taken.
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

pub async fn find_user<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> sqlx::Result<Option<User>> {
    let row: Option<(String, String, String)> =
        sqlx::query_as("SELECT id, email, display_name FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(executor)
            .await?;
    Ok(row.map(|(id, email, display_name)| User {
        id,
        email,
        display_name,
    }))
}

/// `email` must already be normalized.
pub async fn find_user_id_by_email<'c>(
    executor: impl Executor<'c, Database = Any>,
    email: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(executor)
        .await
}

/// Whether a user was updated (false: no such user).
pub async fn update_display_name<'c>(
    executor: impl Executor<'c, Database = Any>,
    user_id: &str,
    display_name: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query("UPDATE users SET display_name = $1 WHERE id = $2")
        .bind(display_name)
        .bind(user_id)
        .execute(executor)
        .await?;
    Ok(result.rows_affected() > 0)
}
