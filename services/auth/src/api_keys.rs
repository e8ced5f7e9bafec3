//! API keys: long-lived credentials for programmatic access, shown once, stored hashed, revoked
//! at once everywhere.

use std::time::Duration;

use crate::db::api_keys::{self, NewApiKey};
use crate::domain::{ApiKey, ApiKeyIdentity, ApiKeyName, CreatedApiKey, Revocation, Revoked};
use crate::error::AuthError;
use crate::service::{Auth, millis, now_millis};
use crate::tokens;

/// How long after revocation edges keep refusing a key they may have cached. Edges cache a
/// verified key for at most a minute (see the edge's `API_KEY_CACHE_TTL`); this leaves margin.
pub const REVOCATION_RETENTION: Duration = Duration::from_secs(10 * 60);
/// Live keys a user may have at once.
pub const MAX_KEYS_PER_USER: i64 = 100;
/// `last_used_at` is written at most this often per key, so verification stays read-mostly.
const LAST_USED_PRECISION: Duration = Duration::from_secs(60);

impl Auth {
    #[tracing::instrument(name = "create_api_key", skip_all)]
    pub async fn create_api_key(
        &self,
        actor_user_id: &str,
        name: &str,
    ) -> Result<CreatedApiKey, AuthError> {
        let name = ApiKeyName::parse(name)?;
        if api_keys::count_active(&self.pool, actor_user_id).await? >= MAX_KEYS_PER_USER {
            return Err(AuthError::TooManyApiKeys);
        }
        let (key, key_hash) = tokens::new_api_key();
        let api_key = ApiKey {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.as_str().to_owned(),
            prefix: key.chars().take(tokens::API_KEY_DISPLAY_CHARS).collect(),
            created_at: now_millis(),
            last_used_at: None,
        };
        api_keys::insert(
            &self.pool,
            &NewApiKey {
                id: &api_key.id,
                user_id: actor_user_id,
                name: &api_key.name,
                key_hash: &key_hash,
                prefix: &api_key.prefix,
                created_at: api_key.created_at,
            },
        )
        .await?;
        tracing::info!(user_id = actor_user_id, api_key_id = %api_key.id, "api key created");
        Ok(CreatedApiKey { api_key, key })
    }

    pub async fn list_api_keys(&self, actor_user_id: &str) -> Result<Vec<ApiKey>, AuthError> {
        Ok(api_keys::list_active(&self.pool, actor_user_id).await?)
    }

    /// Revokes one of the actor's keys; [`AuthError::ApiKeyNotFound`] for anyone else's.
    #[tracing::instrument(name = "revoke_api_key", skip_all)]
    pub async fn revoke_api_key(
        &self,
        actor_user_id: &str,
        api_key_id: &str,
    ) -> Result<(), AuthError> {
        let now = now_millis();
        if !api_keys::revoke(&self.pool, actor_user_id, api_key_id, now).await? {
            return Err(AuthError::ApiKeyNotFound);
        }
        tracing::info!(user_id = actor_user_id, api_key_id, "api key revoked");
        self.changes
            .revoked(Revocation {
                revoked: Revoked::ApiKey {
                    api_key_id: api_key_id.to_owned(),
                },
                user_id: actor_user_id.to_owned(),
                until: tokens::after(now, REVOCATION_RETENTION),
            })
            .await;
        Ok(())
    }

    /// Whom a live API key belongs to; unknown, malformed and revoked keys alike fail with
    /// [`AuthError::InvalidToken`].
    pub async fn verify_api_key(&self, key: &str) -> Result<ApiKeyIdentity, AuthError> {
        let hash = tokens::api_key_lookup_key(key).ok_or(AuthError::InvalidToken)?;
        let row = api_keys::find_by_hash(&self.pool, &hash)
            .await?
            .filter(|row| row.revoked_at.is_none())
            .ok_or(AuthError::InvalidToken)?;
        let now = now_millis();
        let stale = row
            .last_used_at
            .is_none_or(|used| tokens::has_expired(tokens::after(used, LAST_USED_PRECISION), now));
        if stale {
            api_keys::touch(&self.pool, &row.id, now).await?;
        }
        Ok(ApiKeyIdentity {
            api_key_id: row.id,
            user_id: row.user_id,
        })
    }

    pub(crate) async fn api_key_revocations(&self, now: i64) -> Result<Vec<Revocation>, AuthError> {
        let since = now.saturating_sub(millis(REVOCATION_RETENTION));
        Ok(api_keys::revoked_since(&self.pool, since)
            .await?
            .into_iter()
            .map(|(api_key_id, user_id, revoked_at)| Revocation {
                revoked: Revoked::ApiKey { api_key_id },
                user_id,
                until: tokens::after(revoked_at, REVOCATION_RETENTION),
            })
            .collect())
    }
}
