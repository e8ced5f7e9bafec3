//! The Ed25519 keys access tokens are signed with.

use sqlx::{Any, Executor};

pub struct SigningKeyRow {
    pub kid: String,
    /// Base64 of the 32-byte private seed.
    pub seed: String,
    /// Base64 of the 32-byte public key.
    pub public_key: String,
    pub created_at: i64,
    /// The key's place in the rotation chain; unique, so two replicas rotating at once cannot
    /// both store a successor of the same key (the second insert is a unique violation).
    pub generation: i64,
}

/// Every stored key, newest first.
pub async fn list<'c>(
    executor: impl Executor<'c, Database = Any>,
) -> sqlx::Result<Vec<SigningKeyRow>> {
    let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT kid, seed, public_key, created_at, generation FROM signing_keys
         ORDER BY created_at DESC, kid DESC",
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(kid, seed, public_key, created_at, generation)| SigningKeyRow {
                kid,
                seed,
                public_key,
                created_at,
                generation,
            },
        )
        .collect())
}

/// The highest generation stored (`None` before the first key).
pub async fn latest_generation<'c>(
    executor: impl Executor<'c, Database = Any>,
) -> sqlx::Result<Option<i64>> {
    let (generation,): (Option<i64>,) = sqlx::query_as("SELECT MAX(generation) FROM signing_keys")
        .fetch_one(executor)
        .await?;
    Ok(generation)
}

/// Stores `key`; fails with a unique violation when a key of its generation exists already.
pub async fn insert<'c>(
    executor: impl Executor<'c, Database = Any>,
    key: &SigningKeyRow,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, seed, public_key, created_at, generation)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&key.kid)
    .bind(&key.seed)
    .bind(&key.public_key)
    .bind(key.created_at)
    .bind(key.generation)
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
