//! The Ed25519 keys access tokens are signed with.

use sqlx::{Any, Executor};

pub struct SigningKeyRow {
    pub kid: String,
    /// Base64 of the 32-byte private seed.
    pub seed: String,
    /// Base64 of the 32-byte public key.
    pub public_key: String,
    pub created_at: i64,
}

/// Every stored key, newest first.
pub async fn list<'c>(
    executor: impl Executor<'c, Database = Any>,
) -> sqlx::Result<Vec<SigningKeyRow>> {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT kid, seed, public_key, created_at FROM signing_keys
         ORDER BY created_at DESC, kid DESC",
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kid, seed, public_key, created_at)| SigningKeyRow {
            kid,
            seed,
            public_key,
            created_at,
        })
        .collect())
}

pub async fn insert<'c>(
    executor: impl Executor<'c, Database = Any>,
    key: &SigningKeyRow,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, seed, public_key, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&key.kid)
    .bind(&key.seed)
    .bind(&key.public_key)
    .bind(key.created_at)
    .execute(executor)
    .await?;
    Ok(())
}

pub async fn delete<'c>(
    executor: impl Executor<'c, Database = Any>,
    kid: &str,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
        .bind(kid)
        .execute(executor)
        .await?;
    Ok(())
}
