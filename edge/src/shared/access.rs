//! Who may do what, decided on this node without asking auth on every request:
//!
//! - **Access tokens** (signed JWTs) are verified locally with the keys in [`KeyStore`]: signature,
//!   issuer, audience, expiry, then the revoked-session and deleted-user sets. A token's
//!   signature is checked once: while its key is still published, a token seen before is
//!   recognised by its hash (expiry and the revoked sets are still checked on every use).
//! - **API keys** are opaque, so a key is verified by auth once and the answer cached for
//!   [`API_KEY_CACHE_TTL`]; revoked keys (and every key of a deleted user) are refused from the
//!   revoked sets at once.
//! - **Memberships** (which workspaces a user belongs to, with which role) come from auth once per
//!   user and are cached for [`MEMBERSHIP_CACHE_TTL`]; any change drops the user's entry at once.
//!
//! Auth announces every revocation and membership change on its change feed (Redis, or
//! in-process in the embedded default); [`follow`] applies them here the moment they arrive, and
//! moves this node's sockets accordingly. Whenever the feed may have lost messages (on every
//! (re)subscription) the caches are dropped and the revocation sets rebuilt from auth
//! (`ListRevocations`), and the sets are rebuilt every 30 s anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crawbl_infra::grpc::Channel;
use crawbl_infra::jws;
use crawbl_infra::notify::Notice;
use crawbl_proto::auth::v1::auth_change::Kind;
use crawbl_proto::auth::v1::auth_service_client::AuthServiceClient;
use crawbl_proto::auth::v1::revocation::Subject;
use crawbl_proto::auth::v1::{
    AuthChange, ListMembershipsRequest, ListRevocationsRequest, Revocation, VerifyApiKeyRequest,
    Workspace,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::shared::cluster::{SocketChange, Sockets};
use crate::shared::keys::KeyStore;

/// Who access tokens must be issued by and for.
pub const ISSUER: &str = "crawbl-auth";
pub const AUDIENCE: &str = "crawbl-edge";
pub const API_KEY_PREFIX: &str = "cak_";
/// Longest credential accepted; anything longer is refused before any work.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// How long a verified API key is trusted without asking auth again. Auth keeps announcing a
/// revoked key for 10 minutes (its `REVOCATION_RETENTION`), well past this.
pub const API_KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a user's memberships are trusted without a change announcement.
pub const MEMBERSHIP_CACHE_TTL: Duration = Duration::from_secs(300);
/// Entries kept at most per cache; past this the cache starts over.
const CACHE_CAPACITY: usize = 50_000;
/// How often the revocation sets are rebuilt from auth without being told to.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// How soon a failed rebuild is retried.
const RESYNC_RETRY: Duration = Duration::from_secs(1);
/// How long this node remembers a revocation it made itself, until auth's own announcement (with
/// the exact bound) arrives.
const LOCAL_REVOCATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a credential was refused, in words fit for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("missing credentials: send X-Token or Authorization: Bearer")]
    Missing,
    #[error("invalid or revoked token")]
    Invalid,
    #[error("the access token has expired; refresh it")]
    Expired,
    #[error("authentication is unavailable; retry shortly")]
    Unavailable,
}

/// What authenticated a caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Session(String),
    ApiKey(String),
}

/// A verified caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub credential: Credential,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    sid: String,
    exp: i64,
}

/// What a verified access token says, kept by the token's hash so its signature is checked once
/// (an Ed25519 verification was about a twentieth of the send path's CPU).
#[derive(Clone)]
struct VerifiedToken {
    kid: String,
    user_id: String,
    session_id: String,
    expires_at: i64,
}

struct Cached<T> {
    value: T,
    at: Instant,
}

pub struct Access {
    auth: AuthServiceClient<Channel>,
    keys: Arc<KeyStore>,
    /// Session id → until when (Unix ms) to refuse it.
    revoked_sessions: RwLock<HashMap<String, i64>>,
    /// API key id → until when (Unix ms) to refuse it.
    revoked_api_keys: RwLock<HashMap<String, i64>>,
    /// User id (a deleted account) → until when (Unix ms) to refuse every credential of theirs.
    revoked_users: RwLock<HashMap<String, i64>>,
    /// SHA-256 of the key → whom it belongs to.
    api_keys: Mutex<HashMap<String, Cached<Identity>>>,
    /// SHA-256 of an access token whose signature, issuer and audience were verified → its claims.
    access_tokens: Mutex<HashMap<String, Cached<VerifiedToken>>>,
    /// User id → their workspaces.
    memberships: Mutex<HashMap<String, Cached<Arc<Vec<Workspace>>>>>,
    /// Bumped by every invalidation, so an answer fetched across one is not cached.
    generation: AtomicU64,
}

impl Access {
    pub fn new(auth: AuthServiceClient<Channel>) -> Self {
        Self {
            keys: Arc::new(KeyStore::new(auth.clone())),
            auth,
            revoked_sessions: RwLock::default(),
            revoked_api_keys: RwLock::default(),
            revoked_users: RwLock::default(),
            api_keys: Mutex::default(),
            access_tokens: Mutex::default(),
            memberships: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn keys(&self) -> Arc<KeyStore> {
        self.keys.clone()
    }

    /// Verifies an access token (locally) or an API key (auth once, then cached).
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthFailure> {
        let token = token
            .filter(|token| !token.is_empty())
            .ok_or(AuthFailure::Missing)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::Invalid);
        }
        if token.starts_with(API_KEY_PREFIX) {
            self.verify_api_key(token).await
        } else {
            self.verify_access_token(token).await
        }
    }

    async fn verify_access_token(&self, token: &str) -> Result<Identity, AuthFailure> {
        let hash = credential_hash(token);
        let cached = lock(&self.access_tokens)
            .get(&hash)
            .map(|cached| cached.value.clone())
            // A key auth no longer publishes no longer vouches for its tokens.
            .filter(|verified| self.keys.knows(&verified.kid));
        let verified = match cached {
            Some(verified) => verified,
            None => {
                let generation = self.generation.load(Ordering::Acquire);
                let verified = self.verify_signed_token(token).await?;
                self.remember(&self.access_tokens, hash, verified.clone(), generation);
                verified
            }
        };
        if now_millis().div_euclid(1000) >= verified.expires_at {
            return Err(AuthFailure::Expired);
        }
        if is_listed(&self.revoked_sessions, &verified.session_id)
            || is_listed(&self.revoked_users, &verified.user_id)
        {
            return Err(AuthFailure::Invalid);
        }
        Ok(Identity {
            user_id: verified.user_id,
            credential: Credential::Session(verified.session_id),
        })
    }

    /// The claims of an access token whose signature, issuer and audience check out.
    async fn verify_signed_token(&self, token: &str) -> Result<VerifiedToken, AuthFailure> {
        let parsed = jws::parse(token).map_err(|_| AuthFailure::Invalid)?;
        let Some(key) = self.keys.get(parsed.kid()).await else {
            return Err(if self.keys.is_ready() {
                AuthFailure::Invalid
            } else {
                AuthFailure::Unavailable
            });
        };
        let claims: Claims = parsed.verify(&key).map_err(|_| AuthFailure::Invalid)?;
        if claims.iss != ISSUER || claims.aud != AUDIENCE {
            return Err(AuthFailure::Invalid);
        }
        Ok(VerifiedToken {
            kid: parsed.kid().to_owned(),
            user_id: claims.sub,
            session_id: claims.sid,
            expires_at: claims.exp,
        })
    }

    async fn verify_api_key(&self, key: &str) -> Result<Identity, AuthFailure> {
        let hash = credential_hash(key);
        let cached = lock(&self.api_keys)
            .get(&hash)
            .filter(|cached| cached.at.elapsed() < API_KEY_CACHE_TTL)
            .map(|cached| cached.value.clone());
        let identity = match cached {
            Some(identity) => identity,
            None => {
                let generation = self.generation.load(Ordering::Acquire);
                let request = VerifyApiKeyRequest {
                    key: key.to_owned(),
                };
                let verified = match self.auth.clone().verify_api_key(request).await {
                    Ok(response) => response.into_inner(),
                    Err(status) if status.code() == Code::Unauthenticated => {
                        return Err(AuthFailure::Invalid);
                    }
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), message = status.message(), "api key verification failed");
                        return Err(AuthFailure::Unavailable);
                    }
                };
                let identity = Identity {
                    user_id: verified.user_id,
                    credential: Credential::ApiKey(verified.api_key_id),
                };
                self.remember(&self.api_keys, hash, identity.clone(), generation);
                identity
            }
        };
        if let Credential::ApiKey(id) = &identity.credential
            && is_listed(&self.revoked_api_keys, id)
        {
            return Err(AuthFailure::Invalid);
        }
        if is_listed(&self.revoked_users, &identity.user_id) {
            return Err(AuthFailure::Invalid);
        }
        Ok(identity)
    }

    /// The workspaces `user_id` belongs to, oldest membership first.
    pub async fn memberships(&self, user_id: &str) -> Result<Arc<Vec<Workspace>>, AuthFailure> {
        let cached = lock(&self.memberships)
            .get(user_id)
            .filter(|cached| cached.at.elapsed() < MEMBERSHIP_CACHE_TTL)
            .map(|cached| cached.value.clone());
        if let Some(workspaces) = cached {
            return Ok(workspaces);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let request = ListMembershipsRequest {
            user_id: user_id.to_owned(),
        };
        let workspaces = match self.auth.clone().list_memberships(request).await {
            Ok(response) => Arc::new(response.into_inner().workspaces),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "cannot list memberships");
                return Err(AuthFailure::Unavailable);
            }
        };
        self.remember(
            &self.memberships,
            user_id.to_owned(),
            workspaces.clone(),
            generation,
        );
        Ok(workspaces)
    }

    /// Caches `value` unless something was invalidated since `generation` was read.
    fn remember<T>(
        &self,
        cache: &Mutex<HashMap<String, Cached<T>>>,
        key: String,
        value: T,
        generation: u64,
    ) {
        let mut cache = lock(cache);
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(
            key,
            Cached {
                value,
                at: Instant::now(),
            },
        );
    }

    /// Drops what is cached of `user_id`'s memberships.
    pub fn forget_memberships(&self, user_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.memberships).remove(user_id);
    }

    /// Drops every cached API key and membership (the change feed may have lost messages).
    fn forget_everything(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.memberships).clear();
        lock(&self.api_keys).clear();
    }

    /// Refuses `session_id` from now on on this node (for the revocation this node just made;
    /// auth's announcement brings the exact bound).
    pub fn revoke_session_here(&self, session_id: &str) {
        list(
            &self.revoked_sessions,
            session_id,
            now_millis().saturating_add(millis(LOCAL_REVOCATION_TTL)),
        );
    }

    /// Refuses `api_key_id` from now on on this node.
    pub fn revoke_api_key_here(&self, api_key_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.api_keys).retain(|_, cached| {
            cached.value.credential != Credential::ApiKey(api_key_id.to_owned())
        });
        list(
            &self.revoked_api_keys,
            api_key_id,
            now_millis().saturating_add(millis(LOCAL_REVOCATION_TTL)),
        );
    }

    /// Refuses every credential of `user_id` from now on on this node (for the account deletion
    /// this node just made; auth's announcement brings the exact bound).
    pub fn revoke_user_here(&self, user_id: &str) {
        self.forget_user(user_id);
        list(
            &self.revoked_users,
            user_id,
            now_millis().saturating_add(millis(LOCAL_REVOCATION_TTL)),
        );
    }

    /// Drops the cached memberships and API keys of `user_id`.
    fn forget_user(&self, user_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.memberships).remove(user_id);
        lock(&self.api_keys).retain(|_, cached| cached.value.user_id != user_id);
    }

    /// Applies one announced change; returns what it means for sockets.
    fn apply(&self, change: AuthChange) -> Option<SocketChange> {
        match change.kind? {
            Kind::Revoked(revocation) => self.apply_revocation(&revocation),
            Kind::MembershipChanged(change) => {
                self.forget_memberships(&change.user_id);
                Some(if change.role.is_empty() {
                    SocketChange::LeaveWorkspace {
                        user_id: change.user_id,
                        workspace_id: change.workspace_id,
                    }
                } else {
                    SocketChange::JoinWorkspace {
                        user_id: change.user_id,
                        workspace_id: change.workspace_id,
                    }
                })
            }
        }
    }

    /// Lists a revocation; the socket change if it was new to this node.
    fn apply_revocation(&self, revocation: &Revocation) -> Option<SocketChange> {
        match revocation.subject.as_ref()? {
            Subject::SessionId(session_id) => {
                list(&self.revoked_sessions, session_id, revocation.until)
                    .then(|| SocketChange::DisconnectSession(session_id.clone()))
            }
            Subject::ApiKeyId(api_key_id) => {
                self.generation.fetch_add(1, Ordering::AcqRel);
                lock(&self.api_keys).retain(|_, cached| {
                    cached.value.credential != Credential::ApiKey(api_key_id.clone())
                });
                list(&self.revoked_api_keys, api_key_id, revocation.until)
                    .then(|| SocketChange::DisconnectApiKey(api_key_id.clone()))
            }
            Subject::AllOfUser(user_id) => {
                self.forget_user(user_id);
                list(&self.revoked_users, user_id, revocation.until)
                    .then(|| SocketChange::DisconnectUser(user_id.clone()))
            }
        }
    }

    /// Rebuilds the revocation sets from auth; returns the socket changes of revocations this
    /// node had not heard of.
    async fn resync(&self) -> anyhow::Result<Vec<SocketChange>> {
        let revocations = self
            .auth
            .clone()
            .list_revocations(ListRevocationsRequest {})
            .await?
            .into_inner()
            .revocations;
        let now = now_millis();
        for set in [
            &self.revoked_sessions,
            &self.revoked_api_keys,
            &self.revoked_users,
        ] {
            write(set).retain(|_, until| *until > now);
        }
        Ok(revocations
            .iter()
            .filter(|revocation| revocation.until > now)
            .filter_map(|revocation| self.apply_revocation(revocation))
            .collect())
    }
}

/// Follows auth's change feed until `shutdown`: applies each change here and to this node's
/// sockets, and rebuilds from auth when messages may have been missed and every 30 s.
pub async fn follow(
    access: Arc<Access>,
    sockets: Sockets,
    mut notices: BoxStream<'static, Notice>,
    shutdown: CancellationToken,
) {
    let mut next_resync = Instant::now() + RESYNC_INTERVAL;
    loop {
        let notice = tokio::select! {
            () = shutdown.cancelled() => return,
            notice = notices.next() => notice,
            () = tokio::time::sleep_until(next_resync) => {
                next_resync = Instant::now() + resync(&access, &sockets).await;
                continue;
            }
        };
        match notice {
            None => {
                tracing::error!("the auth change feed ended; relying on periodic resyncs");
                notices = futures::stream::pending().boxed();
            }
            Some(Notice::Resync) => {
                access.forget_everything();
                next_resync = Instant::now() + resync(&access, &sockets).await;
            }
            Some(Notice::Message(bytes)) => match AuthChange::decode(bytes.as_slice()) {
                Ok(change) => {
                    if let Some(change) = access.apply(change) {
                        sockets.apply_locally(&change).await;
                    }
                }
                Err(error) => tracing::warn!(%error, "dropping an undecodable auth change"),
            },
        }
    }
}

/// One rebuild; returns when to do the next one.
async fn resync(access: &Access, sockets: &Sockets) -> Duration {
    match access.resync().await {
        Ok(changes) => {
            for change in changes {
                sockets.apply_locally(&change).await;
            }
            RESYNC_INTERVAL
        }
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot rebuild revocations from auth; retrying"
            );
            RESYNC_RETRY
        }
    }
}

/// Whether `id` is in `set` and still to be refused.
fn is_listed(set: &RwLock<HashMap<String, i64>>, id: &str) -> bool {
    let set = match set.read() {
        Ok(set) => set,
        Err(poisoned) => poisoned.into_inner(),
    };
    set.get(id).is_some_and(|until| *until > now_millis())
}

/// Adds `id` to `set` until `until` (keeping a later bound); true when it was not listed.
fn list(set: &RwLock<HashMap<String, i64>>, id: &str, until: i64) -> bool {
    let mut set = write(set);
    match set.get_mut(id) {
        Some(existing) => {
            *existing = (*existing).max(until);
            false
        }
        None => {
            set.insert(id.to_owned(), until);
            true
        }
    }
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    match lock.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// How a credential is cached: by its SHA-256, so the cache holds no usable secret.
fn credential_hash(credential: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(credential.as_bytes()))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crawbl_proto::auth::v1::MembershipChanged;

    fn access() -> Access {
        let channel =
            crawbl_infra::grpc::channel("http://127.0.0.1:9").expect("a lazy channel never fails");
        Access::new(AuthServiceClient::new(channel))
    }

    fn revoked(subject: Subject, until: i64) -> AuthChange {
        AuthChange {
            kind: Some(Kind::Revoked(Revocation {
                subject: Some(subject),
                user_id: "u".to_owned(),
                until,
            })),
        }
    }

    #[derive(serde::Serialize)]
    struct TestClaims<'a> {
        iss: &'a str,
        aud: &'a str,
        sub: &'a str,
        sid: &'a str,
        exp: i64,
    }

    fn signed(key: &jws::SigningKey, sid: &str, exp: i64) -> String {
        key.sign(&TestClaims {
            iss: ISSUER,
            aud: AUDIENCE,
            sub: "u1",
            sid,
            exp,
        })
        .expect("sign")
    }

    // A lazy channel needs a runtime to exist in.
    #[tokio::test]
    async fn a_token_verified_once_is_still_refused_once_revoked_expired_or_its_key_withdrawn() {
        let access = access();
        let first = jws::SigningKey::generate("k1");
        access.keys.publish_for_test(&[&first]);
        let in_an_hour = now_millis() / 1000 + 3600;
        let token = signed(&first, "s1", in_an_hour);
        for _ in 0..2 {
            let identity = access.authenticate(Some(&token)).await.expect("valid");
            assert_eq!(identity.user_id, "u1");
            assert_eq!(identity.credential, Credential::Session("s1".to_owned()));
        }
        assert_eq!(
            lock(&access.access_tokens).len(),
            1,
            "verified once, then recognised"
        );
        // Another signature over the same claims is not the cached token.
        let mut tampered = token.clone();
        let last = if tampered.ends_with('A') { "B" } else { "A" };
        tampered.replace_range(tampered.len() - 1.., last);
        assert_eq!(
            access.authenticate(Some(&tampered)).await,
            Err(AuthFailure::Invalid)
        );

        // Expiry is checked at every use.
        // At least a second of validity left, however close to a second's end this runs.
        let expiry = now_millis() / 1000 + 2;
        let soon = signed(&first, "s2", expiry);
        access
            .authenticate(Some(&soon))
            .await
            .expect("valid for now");
        let left = u64::try_from(expiry * 1000 - now_millis()).unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(left)).await;
        assert_eq!(
            access.authenticate(Some(&soon)).await,
            Err(AuthFailure::Expired)
        );

        // So are revocations.
        access.revoke_session_here("s1");
        assert_eq!(
            access.authenticate(Some(&token)).await,
            Err(AuthFailure::Invalid)
        );

        // A key auth no longer publishes vouches for nothing, cached or not.
        let kept = signed(&first, "s3", in_an_hour);
        access.authenticate(Some(&kept)).await.expect("valid");
        access
            .keys
            .publish_for_test(&[&jws::SigningKey::generate("k2")]);
        assert_eq!(
            access.authenticate(Some(&kept)).await,
            Err(AuthFailure::Invalid)
        );
    }

    // A lazy channel needs a runtime to exist in.
    #[tokio::test]
    async fn a_revocation_is_refused_until_its_bound_and_acted_on_once() {
        let access = access();
        let later = now_millis() + 60_000;
        let change = access.apply(revoked(Subject::SessionId("s1".to_owned()), later));
        assert_eq!(
            change,
            Some(SocketChange::DisconnectSession("s1".to_owned()))
        );
        assert!(is_listed(&access.revoked_sessions, "s1"));
        // Heard again (from a resync): nothing new to do.
        assert_eq!(
            access.apply(revoked(Subject::SessionId("s1".to_owned()), later)),
            None
        );
        // Past its bound it no longer matters.
        access.apply(revoked(
            Subject::SessionId("s2".to_owned()),
            now_millis() - 1,
        ));
        assert!(!is_listed(&access.revoked_sessions, "s2"));
    }

    // A lazy channel needs a runtime to exist in.
    #[tokio::test]
    async fn a_deleted_user_is_refused_has_nothing_cached_and_is_disconnected_once() {
        let access = access();
        let generation = access.generation.load(Ordering::Acquire);
        access.remember(
            &access.memberships,
            "u1".to_owned(),
            Arc::new(Vec::new()),
            generation,
        );
        let key_of = |user: &str, key: &str| Identity {
            user_id: user.to_owned(),
            credential: Credential::ApiKey(key.to_owned()),
        };
        access.remember(
            &access.api_keys,
            "h1".to_owned(),
            key_of("u1", "k1"),
            generation,
        );
        access.remember(
            &access.api_keys,
            "h2".to_owned(),
            key_of("u2", "k2"),
            generation,
        );
        let later = now_millis() + 60_000;
        let deleted = revoked(Subject::AllOfUser("u1".to_owned()), later);
        assert_eq!(
            access.apply(deleted.clone()),
            Some(SocketChange::DisconnectUser("u1".to_owned()))
        );
        assert!(is_listed(&access.revoked_users, "u1"));
        assert!(lock(&access.memberships).is_empty());
        let keys: Vec<String> = lock(&access.api_keys).keys().cloned().collect();
        assert_eq!(keys, ["h2"]);
        // Heard again (from a resync): nothing new to do.
        assert_eq!(access.apply(deleted), None);
    }

    // A lazy channel needs a runtime to exist in.
    #[tokio::test]
    async fn a_membership_change_drops_the_cached_memberships_and_moves_sockets() {
        let access = access();
        access.remember(
            &access.memberships,
            "u1".to_owned(),
            Arc::new(Vec::new()),
            access.generation.load(Ordering::Acquire),
        );
        let removed = AuthChange {
            kind: Some(Kind::MembershipChanged(MembershipChanged {
                user_id: "u1".to_owned(),
                workspace_id: "w1".to_owned(),
                role: String::new(),
            })),
        };
        assert_eq!(
            access.apply(removed),
            Some(SocketChange::LeaveWorkspace {
                user_id: "u1".to_owned(),
                workspace_id: "w1".to_owned()
            })
        );
        assert!(lock(&access.memberships).is_empty());
    }

    // A lazy channel needs a runtime to exist in.
    #[tokio::test]
    async fn an_answer_fetched_across_an_invalidation_is_not_cached() {
        let access = access();
        let before = access.generation.load(Ordering::Acquire);
        access.forget_memberships("u1");
        access.remember(
            &access.memberships,
            "u1".to_owned(),
            Arc::new(Vec::new()),
            before,
        );
        assert!(lock(&access.memberships).is_empty());
    }

    #[tokio::test]
    async fn garbage_and_oversized_tokens_are_refused_without_asking_anyone() {
        let access = access();
        assert_eq!(access.authenticate(None).await, Err(AuthFailure::Missing));
        assert_eq!(
            access.authenticate(Some("")).await,
            Err(AuthFailure::Missing)
        );
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        for token in ["garbage", "a.b.c", huge.as_str()] {
            assert_eq!(
                access.authenticate(Some(token)).await,
                Err(AuthFailure::Invalid),
                "{token:?}"
            );
        }
    }
}
