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
//!
//! Replicas: every key has a generation (its predecessor's plus one), unique in the table. Replicas
//! that find the newest key due at the same moment all try to store a successor of the same
//! generation; one insert succeeds and the others fail with a unique violation, re-read the keys
//! and adopt the winner's. So a rotation period makes exactly one key however many replicas run,
//! with no lock held and the same code on Postgres and SQLite. `RotateSigningKey` replaces the key
//! that was newest when the request arrived: concurrent requests (on any replicas) that found the
//! same key make one successor between them.

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
        let ring = read_ring(&pool, rotation, access_ttl, now_millis(), Rotation::WhenDue).await?;
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
        self.refresh(Rotation::WhenDue).await
    }

    /// Starts signing with a fresh key now: replaces the key that is newest as this is called,
    /// unless a concurrent rotation (here or on another replica) replaces it first.
    pub async fn rotate(&self) -> anyhow::Result<()> {
        let generation = signing_keys::latest_generation(&self.pool)
            .await
            .context("reading the newest signing key")?;
        self.refresh(Rotation::Replacing(generation)).await
    }

    async fn refresh(&self, rotation: Rotation) -> anyhow::Result<()> {
        let _guard = self.reload.lock().await;
        let ring = read_ring(
            &self.pool,
            self.rotation,
            self.access_ttl,
            now_millis(),
            rotation,
        )
        .await?;
        match self.ring.write() {
            Ok(mut slot) => *slot = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
        Ok(())
    }
}

/// When a refresh makes a new key.
#[derive(Clone, Copy, Debug)]
enum Rotation {
    /// When there is none or the newest is older than the rotation period.
    WhenDue,
    /// Also when the newest key is still of this generation (`None`: there was no key), that is,
    /// no other rotation replaced it since the caller looked.
    Replacing(Option<i64>),
}

/// How often a refresh re-reads after losing a race to store a new key. Once is enough (the
/// winner's key is fresh); more only guards against a loop.
const MAX_ROTATION_RACES: usize = 3;

/// Reads the stored keys, adds one when `rotation` says so, and deletes keys no token can need
/// any more.
async fn read_ring(
    pool: &AnyPool,
    rotation_period: Duration,
    access_ttl: Duration,
    now: i64,
    rotation: Rotation,
) -> anyhow::Result<Ring> {
    for _ in 0..=MAX_ROTATION_RACES {
        let mut rows = signing_keys::list(pool)
            .await
            .context("reading signing keys")?;
        let latest_generation = rows.iter().map(|row| row.generation).max();
        let due = rows.first().is_none_or(|newest| {
            tokens::has_expired(tokens::after(newest.created_at, rotation_period), now)
        });
        let rotate = match rotation {
            Rotation::WhenDue => due,
            Rotation::Replacing(generation) => due || latest_generation == generation,
        };
        if rotate {
            let key = SigningKey::generate(format!("k-{}", uuid::Uuid::now_v7().simple()));
            let row = SigningKeyRow {
                kid: key.kid().to_owned(),
                seed: STANDARD.encode(key.seed()),
                public_key: STANDARD.encode(key.public_key().to_bytes()),
                // Strictly newer than every stored key, even with equal clocks.
                created_at: rows
                    .first()
                    .map_or(now, |newest| now.max(newest.created_at + 1)),
                generation: latest_generation.map_or(1, |generation| generation + 1),
            };
            match signing_keys::insert(pool, &row).await {
                Ok(()) => {
                    tracing::info!(
                        kid = key.kid(),
                        generation = row.generation,
                        "new signing key"
                    );
                    rows.insert(0, row);
                }
                Err(error) if crate::db::is_unique_violation(&error) => {
                    // Another replica stored this generation first: read again and use its key.
                    tracing::debug!(
                        generation = row.generation,
                        "another replica rotated the signing key at the same moment"
                    );
                    continue;
                }
                Err(error) => return Err(error).context("storing a new signing key"),
            }
        }
        return published_ring(pool, &rows, access_ttl, now).await;
    }
    anyhow::bail!("signing keys kept changing while rotating; giving up for now")
}

/// The ring of `rows` (newest first), deleting keys no token can need any more.
async fn published_ring(
    pool: &AnyPool,
    rows: &[SigningKeyRow],
    access_ttl: Duration,
    now: i64,
) -> anyhow::Result<Ring> {
    let retention = access_ttl.saturating_add(CLOCK_SKEW);
    let mut published = Vec::new();
    let mut successor_created_at: Option<i64> = None;
    for row in rows {
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

#[cfg(test)]
mod tests {
    use super::*;

    const ROTATION: Duration = Duration::from_secs(3600);
    const ACCESS_TTL: Duration = Duration::from_secs(60);

    /// A fresh SQLite file, removed when dropped.
    struct TempDatabase(std::path::PathBuf);

    impl TempDatabase {
        fn new() -> Self {
            let name = format!("crawbl-auth-keys-{}.db", uuid::Uuid::new_v4().simple());
            Self(std::env::temp_dir().join(name))
        }

        /// A pool of its own, as one replica has.
        async fn pool(&self) -> anyhow::Result<AnyPool> {
            let url = format!("sqlite://{}?mode=rwc", self.0.display());
            crawbl_infra::db::connect(&url, crate::migrations()).await
        }
    }

    impl Drop for TempDatabase {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = self.0.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    }

    fn kids(ring: &KeyRing) -> Vec<String> {
        ring.published()
            .into_iter()
            .map(|published| published.key.kid().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn rotations_on_two_replicas_replacing_the_same_key_make_one_successor()
    -> anyhow::Result<()> {
        let database = TempDatabase::new();
        let first = KeyRing::load(database.pool().await?, ROTATION, ACCESS_TTL).await?;
        let second = KeyRing::load(database.pool().await?, ROTATION, ACCESS_TTL).await?;
        assert_eq!(kids(&first), kids(&second));
        let seen = signing_keys::latest_generation(&first.pool).await?;
        assert_eq!(seen, Some(1));

        // Both asked to replace generation 1 at the same moment: one successor between them.
        let (on_first, on_second) = tokio::join!(
            first.refresh(Rotation::Replacing(seen)),
            second.refresh(Rotation::Replacing(seen)),
        );
        on_first?;
        on_second?;
        assert_eq!(kids(&first).len(), 2);
        assert_eq!(kids(&first), kids(&second));
        assert_eq!(first.current().kid(), second.current().kid());

        // A request that arrives after that rotation replaces the new key.
        second.rotate().await?;
        first.reload().await?;
        assert_eq!(kids(&first).len(), 3);
        assert_eq!(kids(&first), kids(&second));
        Ok(())
    }

    #[tokio::test]
    async fn a_key_can_have_only_one_successor() -> anyhow::Result<()> {
        let database = TempDatabase::new();
        let pool = database.pool().await?;
        let ring = KeyRing::load(pool.clone(), ROTATION, ACCESS_TTL).await?;
        let successor = |kid: &str| SigningKeyRow {
            kid: kid.to_owned(),
            seed: STANDARD.encode([7u8; 32]),
            public_key: STANDARD.encode(
                SigningKey::from_seed(kid.to_owned(), &[7u8; 32])
                    .public_key()
                    .to_bytes(),
            ),
            created_at: now_millis(),
            generation: 2,
        };
        signing_keys::insert(&pool, &successor("k-a")).await?;
        let second = signing_keys::insert(&pool, &successor("k-b")).await;
        assert!(
            second.as_ref().is_err_and(crate::db::is_unique_violation),
            "{:?}",
            second.err()
        );
        ring.reload().await?;
        assert_eq!(ring.current().kid(), "k-a");
        Ok(())
    }
}
