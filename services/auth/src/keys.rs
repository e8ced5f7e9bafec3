//! The signing keys of access tokens, and their rotation.
//!
//! Keys live in the `signing_keys` table, so every auth replica signs with the same key and a
//! restart invalidates nothing. The newest key signs. A key stays published (verifiable) for as
//! long as tokens it signed can be unexpired: until its successor is older than the access token
//! lifetime plus a minute of clock skew. Keys past that are deleted.
//!
//! Rotation: a new key is made when the newest is older than the rotation period (checked at
//! start, every minute, and on every `GetSigningKeys`), or on `RotateSigningKey`. Edges learn new
//! keys when they refresh (every minute) or at once when a token names a `kid` they do not know.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crawbl_infra::jws::{PublicKey, SigningKey};
use sqlx::AnyPool;

use crate::db::signing_keys::{self, SigningKeyRow};
use crate::tokens;

/// Slack for clocks that disagree between auth and the edges.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A published key.
#[derive(Clone, Debug)]
pub struct Published {
    pub key: PublicKey,
    pub created_at: i64,
}

struct Ring {
    current: Arc<SigningKey>,
    /// Newest first; the first is `current`'s.
    published: Vec<Published>,
}

pub struct KeyRing {
    pool: AnyPool,
    rotation: Duration,
    access_ttl: Duration,
    ring: RwLock<Ring>,
    /// One reload or rotation at a time in this process.
    reload: tokio::sync::Mutex<()>,
}

impl KeyRing {
    /// Loads the keys, making the first one (or a fresh one, if the newest is due) as needed.
    pub async fn load(
        pool: AnyPool,
        rotation: Duration,
        access_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let ring = read_ring(&pool, rotation, access_ttl, now_millis(), false).await?;
        Ok(Self {
            pool,
            rotation,
            access_ttl,
            ring: RwLock::new(ring),
            reload: tokio::sync::Mutex::new(()),
        })
    }

    /// The key new tokens are signed with.
    pub fn current(&self) -> Arc<SigningKey> {
        match self.ring.read() {
            Ok(ring) => ring.current.clone(),
            Err(poisoned) => poisoned.into_inner().current.clone(),
        }
    }

    /// The keys tokens may be verified with, newest first.
    pub fn published(&self) -> Vec<Published> {
        match self.ring.read() {
            Ok(ring) => ring.published.clone(),
            Err(poisoned) => poisoned.into_inner().published.clone(),
        }
    }

    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.published().into_iter().map(|key| key.key).collect()
    }

    /// Re-reads the keys (another replica may have rotated), rotating when the newest is due.
    pub async fn reload(&self) -> anyhow::Result<()> {
        self.refresh(false).await
    }

    /// Starts signing with a fresh key now.
    pub async fn rotate(&self) -> anyhow::Result<()> {
        self.refresh(true).await
    }

    async fn refresh(&self, force_rotation: bool) -> anyhow::Result<()> {
        let _guard = self.reload.lock().await;
        let ring = read_ring(
            &self.pool,
            self.rotation,
            self.access_ttl,
            now_millis(),
            force_rotation,
        )
        .await?;
        match self.ring.write() {
            Ok(mut slot) => *slot = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
        Ok(())
    }
}

/// Reads the stored keys, adds one when there is none, the newest is older than `rotation` or
/// `force_rotation`, and deletes keys no token can need any more.
async fn read_ring(
    pool: &AnyPool,
    rotation: Duration,
    access_ttl: Duration,
    now: i64,
    force_rotation: bool,
) -> anyhow::Result<Ring> {
    let mut rows = signing_keys::list(pool)
        .await
        .context("reading signing keys")?;
    let due = rows
        .first()
        .is_none_or(|newest| tokens::has_expired(tokens::after(newest.created_at, rotation), now));
    if due || force_rotation {
        let key = SigningKey::generate(format!("k-{}", uuid::Uuid::now_v7().simple()));
        let row = SigningKeyRow {
            kid: key.kid().to_owned(),
            seed: STANDARD.encode(key.seed()),
            public_key: STANDARD.encode(key.public_key().to_bytes()),
            // Strictly newer than every stored key, even with equal clocks.
            created_at: rows
                .first()
                .map_or(now, |newest| now.max(newest.created_at + 1)),
        };
        signing_keys::insert(pool, &row)
            .await
            .context("storing a new signing key")?;
        tracing::info!(kid = key.kid(), "new signing key");
        rows.insert(0, row);
    }

    let retention = access_ttl.saturating_add(CLOCK_SKEW);
    let mut published = Vec::new();
    let mut successor_created_at: Option<i64> = None;
    for row in &rows {
        // The newest key is always kept; an older one while its successor is young enough that
        // tokens it signed may still be unexpired.
        let needed = successor_created_at
            .is_none_or(|successor| !tokens::has_expired(tokens::after(successor, retention), now));
        if needed {
            let public = STANDARD
                .decode(&row.public_key)
                .map_err(|error| anyhow!("signing key {} is malformed: {error}", row.kid))
                .and_then(|bytes| {
                    PublicKey::from_bytes(row.kid.clone(), &bytes)
                        .map_err(|error| anyhow!("signing key {} is invalid: {error}", row.kid))
                })?;
            published.push(Published {
                key: public,
                created_at: row.created_at,
            });
        } else {
            signing_keys::delete(pool, &row.kid)
                .await
                .context("deleting an old signing key")?;
            tracing::info!(kid = %row.kid, "old signing key deleted");
        }
        successor_created_at = Some(row.created_at);
    }

    let newest = rows
        .first()
        .ok_or_else(|| anyhow!("no signing key after creating one"))?;
    let seed: [u8; 32] = STANDARD
        .decode(&newest.seed)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| anyhow!("signing key {} has a malformed seed", newest.kid))?;
    Ok(Ring {
        current: Arc::new(SigningKey::from_seed(newest.kid.clone(), &seed)),
        published,
    })
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
