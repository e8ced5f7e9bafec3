//! The business logic behind each RPC, independent of gRPC: sign-up, sign-in, sessions and their
//! tokens here; API keys, users and workspaces in the sibling modules.

use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use tracing::Instrument as _;

use crate::changes::Changes;
use crate::db::{devices, sessions, users, workspaces};
use crate::domain::{
    DisplayName, Email, IssuedSession, MAX_PASSWORD_CHARS, Membership, Password, Principal,
    Revocation, Revoked, Role, User,
};
use crate::error::AuthError;
use crate::keys::{CLOCK_SKEW, KeyRing};
use crate::password;
use crate::throttle::{SignInLimits, Subjects, Throttle};
use crate::tokens;

/// How long issued tokens stay valid.
#[derive(Clone, Copy, Debug)]
pub struct TokenLifetimes {
    pub access: Duration,
    pub refresh: Duration,
}

/// Why a session was revoked, as stored.
const REVOKED_BY_LOGOUT: &str = "logout";
const REVOKED_BY_REUSE: &str = "refresh_token_reused";

#[derive(Clone)]
pub struct Auth {
    pub(crate) pool: AnyPool,
    pub(crate) lifetimes: TokenLifetimes,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) throttle: Arc<Throttle>,
    pub(crate) changes: Changes,
    /// How device registrations are checked (tests allow loopback Web Push endpoints).
    pub(crate) push_validation: crawbl_push::ValidationOptions,
}

impl Auth {
    pub fn new(
        pool: AnyPool,
        lifetimes: TokenLifetimes,
        keys: Arc<KeyRing>,
        limits: SignInLimits,
        changes: Changes,
    ) -> Self {
        Self {
            throttle: Arc::new(Throttle::new(pool.clone(), limits)),
            pool,
            lifetimes,
            keys,
            changes,
            push_validation: crawbl_push::ValidationOptions::default(),
        }
    }

    /// This service checking device registrations with `options`.
    pub fn with_push_validation(self, options: crawbl_push::ValidationOptions) -> Self {
        Self {
            push_validation: options,
            ..self
        }
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Creates the user, their first workspace (which they own) and a session, all or nothing.
    #[tracing::instrument(name = "sign_up", skip_all)]
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<IssuedSession, AuthError> {
        let email = Email::parse(email)?;
        let password = Password::parse(password)?;
        let display_name = DisplayName::parse(display_name)?;
        let password_hash = password::hash(password).await?;

        let now = now_millis();
        let user = User {
            id: uuid::Uuid::now_v7().to_string(),
            email: email.as_str().to_owned(),
            display_name: display_name.as_str().to_owned(),
        };
        let workspace = Membership {
            workspace_id: uuid::Uuid::now_v7().to_string(),
            workspace_name: format!("{}'s workspace", display_name.as_str()),
            role: Role::Owner.as_str().to_owned(),
        };
        let session_id = uuid::Uuid::now_v7().to_string();
        let (refresh_token, refresh_hash) = tokens::new_refresh_token();

        let mut transaction = self.pool.begin().await?;
        users::insert_user(&mut *transaction, &user, &password_hash, now)
            .await
            .map_err(|error| {
                if crate::db::is_unique_violation(&error) {
                    AuthError::EmailTaken
                } else {
                    error.into()
                }
            })?;
        workspaces::insert_workspace(
            &mut *transaction,
            &workspace.workspace_id,
            &workspace.workspace_name,
            now,
        )
        .await?;
        workspaces::insert_membership(
            &mut *transaction,
            &workspace.workspace_id,
            &user.id,
            Role::Owner,
            now,
        )
        .await?;
        self.insert_session(&mut transaction, &session_id, &user.id, &refresh_hash, now)
            .await?;
        transaction.commit().await?;

        tracing::info!(user_id = %user.id, workspace_id = %workspace.workspace_id, "user signed up");
        self.issued(session_id, refresh_token, user, vec![workspace], now)
    }

    /// Starts a new session. Unknown email and wrong password fail the same way, after the same
    /// amount of hashing work; failures are rate limited per account and per `client_address`.
    #[tracing::instrument(name = "sign_in", skip_all)]
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        client_address: &str,
    ) -> Result<IssuedSession, AuthError> {
        if email.len() > 4 * crate::domain::MAX_EMAIL_CHARS {
            // No account can have such an email; do not let it into the database as a subject.
            return Err(AuthError::InvalidCredentials);
        }
        // On a task of its own, so that an attempt whose client goes away still settles its
        // rate-limit reservation (a dropped request would leave it held until the window ends).
        let auth = self.clone();
        let (email, password, client_address) = (
            email.to_owned(),
            password.to_owned(),
            client_address.to_owned(),
        );
        let now = now_millis();
        let attempt = async move {
            auth.throttled_password_check(&email, &password, &client_address, now)
                .await
        };
        let user = tokio::spawn(attempt.in_current_span())
            .await
            .map_err(|error| anyhow::Error::new(error).context("the sign-in task failed"))??;

        let session_id = uuid::Uuid::now_v7().to_string();
        let (refresh_token, refresh_hash) = tokens::new_refresh_token();
        let mut transaction = self.pool.begin().await?;
        self.insert_session(&mut transaction, &session_id, &user.id, &refresh_hash, now)
            .await?;
        transaction.commit().await?;
        let memberships = workspaces::list_memberships(&self.pool, &user.id).await?;
        tracing::info!(user_id = %user.id, session_id, "user signed in");
        self.issued(session_id, refresh_token, user, memberships, now)
    }

    /// The user whose email and password these are, with the attempt counted against the
    /// rate limits before the password is checked (so concurrent guesses cannot overtake them).
    async fn throttled_password_check(
        &self,
        email: &str,
        password: &str,
        client_address: &str,
        now: i64,
    ) -> Result<User, AuthError> {
        let normalized = crate::domain::normalize_email(email);
        let subjects = Subjects::new(&normalized, client_address);
        let reservation = self.throttle.reserve(&subjects, now).await?;
        match self.check_password(email, password).await {
            Ok(Some(user)) => {
                self.throttle.succeeded(reservation).await?;
                Ok(user)
            }
            Ok(None) => {
                self.throttle.failed(reservation).await?;
                Err(AuthError::InvalidCredentials)
            }
            Err(error) => {
                self.throttle.release(reservation).await;
                Err(error)
            }
        }
    }

    /// The user whose email and password these are, if they are.
    async fn check_password(&self, email: &str, password: &str) -> Result<Option<User>, AuthError> {
        let credentials = match Email::parse(email) {
            Ok(email) if password.chars().count() <= MAX_PASSWORD_CHARS => {
                users::find_credentials_by_email(&self.pool, email.as_str()).await?
            }
            _ => None,
        };
        let (user, stored_hash) = match credentials {
            Some(credentials) => (Some(credentials.user), Some(credentials.password_hash)),
            None => (None, None),
        };
        // An oversized password cannot match; verify a bounded prefix so the work stays bounded
        // and the timing the same.
        let candidate: String = password.chars().take(MAX_PASSWORD_CHARS + 1).collect();
        let matches = password::verify(candidate, stored_hash).await?;
        Ok(user.filter(|_| matches))
    }

    /// Exchanges a refresh token for a new access token and a new refresh token. A refresh token
    /// presented a second time revokes the whole session: either the client or an attacker holds
    /// a copy, and the server cannot tell which.
    #[tracing::instrument(name = "refresh", skip_all)]
    pub async fn refresh(&self, refresh_token: &str) -> Result<IssuedSession, AuthError> {
        let hash =
            tokens::refresh_token_lookup_key(refresh_token).ok_or(AuthError::InvalidToken)?;
        let now = now_millis();
        let mut transaction = self.pool.begin().await?;
        // Write first: the conditional update takes the write lock (SQLite) or the row lock
        // (Postgres) before anything is read, so of concurrent exchanges exactly one sees the
        // token unused, and the others see it used, as reuse.
        let first_use = sessions::mark_refresh_token_used(&mut *transaction, &hash, now).await?;
        let row = sessions::find_refresh_token(&mut *transaction, &hash)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if row.session_revoked_at.is_some() {
            return Err(AuthError::InvalidToken);
        }
        if !first_use {
            sessions::revoke_session(&mut *transaction, &row.session_id, REVOKED_BY_REUSE, now)
                .await?;
            devices::delete_of_session(&mut *transaction, &row.session_id).await?;
            transaction.commit().await?;
            tracing::warn!(session_id = %row.session_id, user_id = %row.user_id, "refresh token reused; session revoked");
            self.announce_session_revoked(&row.session_id, &row.user_id, now)
                .await;
            return Err(AuthError::RefreshTokenReused);
        }
        if tokens::has_expired(row.refresh_expires_at, now) {
            return Err(AuthError::InvalidToken);
        }
        let (new_token, new_hash) = tokens::new_refresh_token();
        sessions::insert_refresh_token(&mut *transaction, &new_hash, &row.session_id, now).await?;
        sessions::extend_session(
            &mut *transaction,
            &row.session_id,
            tokens::after(now, self.lifetimes.refresh),
        )
        .await?;
        transaction.commit().await?;

        let user = users::find_user(&self.pool, &row.user_id)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let memberships = workspaces::list_memberships(&self.pool, &user.id).await?;
        self.issued(row.session_id, new_token, user, memberships, now)
    }

    /// Revokes the session of `access_token`, which may have expired (it still proves which
    /// session it belongs to). Returns `(session id, user id)`; logging out twice is not an error.
    #[tracing::instrument(name = "logout", skip_all)]
    pub async fn logout(&self, access_token: &str) -> Result<(String, String), AuthError> {
        let now = now_millis();
        let claims = tokens::authentic_access_token(access_token, &self.keys.public_keys())
            .map_err(|_| AuthError::InvalidToken)?;
        // The session's push devices go with it: nobody signed in there any more.
        let mut transaction = self.pool.begin().await?;
        let revoked =
            sessions::revoke_session(&mut *transaction, &claims.sid, REVOKED_BY_LOGOUT, now)
                .await?;
        devices::delete_of_session(&mut *transaction, &claims.sid).await?;
        transaction.commit().await?;
        if revoked {
            tracing::info!(session_id = %claims.sid, user_id = %claims.sub, "session logged out");
            self.announce_session_revoked(&claims.sid, &claims.sub, now)
                .await;
        }
        Ok((claims.sid, claims.sub))
    }

    /// The user an access token or API key belongs to and their workspaces, with revocation
    /// checked in the database. Unknown, malformed, expired and revoked credentials all fail
    /// with [`AuthError::InvalidToken`].
    #[tracing::instrument(name = "verify_token", skip_all)]
    pub async fn verify_token(&self, token: &str) -> Result<Principal, AuthError> {
        let user_id = if tokens::is_api_key(token) {
            self.verify_api_key(token).await?.user_id
        } else {
            let claims = tokens::verify_access_token(token, &self.keys.public_keys(), now_millis())
                .map_err(|_| AuthError::InvalidToken)?;
            let session = sessions::find_session(&self.pool, &claims.sid)
                .await?
                .ok_or(AuthError::InvalidToken)?;
            if session.revoked_at.is_some() || session.user_id != claims.sub {
                return Err(AuthError::InvalidToken);
            }
            claims.sub
        };
        let user = users::find_user(&self.pool, &user_id)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let workspaces = workspaces::list_memberships(&self.pool, &user.id).await?;
        Ok(Principal { user, workspaces })
    }

    /// Sessions and API keys whose revocation edges must still enforce.
    pub async fn list_revocations(&self) -> Result<Vec<Revocation>, AuthError> {
        let now = now_millis();
        let session_window = self.session_revocation_window();
        let mut revocations: Vec<Revocation> =
            sessions::revoked_since(&self.pool, now.saturating_sub(millis(session_window)))
                .await?
                .into_iter()
                .map(|(session_id, user_id, revoked_at)| Revocation {
                    revoked: Revoked::Session { session_id },
                    user_id,
                    until: tokens::after(revoked_at, session_window),
                })
                .collect();
        revocations.extend(self.api_key_revocations(now).await?);
        revocations.extend(self.deleted_user_revocations(now).await?);
        Ok(revocations)
    }

    /// Forgets ended sign-in rate-limit windows.
    pub async fn prune_sign_in_failures(&self) -> Result<(), AuthError> {
        self.throttle.prune(now_millis()).await
    }

    /// How long after a session's revocation one of its access tokens may still be unexpired.
    fn session_revocation_window(&self) -> Duration {
        self.lifetimes.access.saturating_add(CLOCK_SKEW)
    }

    async fn announce_session_revoked(&self, session_id: &str, user_id: &str, now: i64) {
        self.changes
            .revoked(Revocation {
                revoked: Revoked::Session {
                    session_id: session_id.to_owned(),
                },
                user_id: user_id.to_owned(),
                until: tokens::after(now, self.session_revocation_window()),
            })
            .await;
    }

    async fn insert_session(
        &self,
        transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
        session_id: &str,
        user_id: &str,
        refresh_hash: &str,
        now: i64,
    ) -> Result<(), AuthError> {
        sessions::insert_session(
            &mut **transaction,
            session_id,
            user_id,
            now,
            tokens::after(now, self.lifetimes.refresh),
        )
        .await?;
        sessions::insert_refresh_token(&mut **transaction, refresh_hash, session_id, now).await?;
        Ok(())
    }

    fn issued(
        &self,
        session_id: String,
        refresh_token: String,
        user: User,
        workspaces: Vec<Membership>,
        now: i64,
    ) -> Result<IssuedSession, AuthError> {
        let access = tokens::issue_access_token(
            &self.keys.current(),
            &user.id,
            &session_id,
            now,
            self.lifetimes.access,
        )?;
        Ok(IssuedSession {
            session_id,
            access_token: access.token,
            refresh_token,
            expires_in: access.expires_in,
            user,
            workspaces,
        })
    }
}

pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
