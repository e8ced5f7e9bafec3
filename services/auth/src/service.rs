//! The business logic behind each RPC, independent of gRPC.

use std::time::Duration;

use sqlx::AnyPool;

use crate::db;
use crate::domain::{
    DisplayName, Email, IssuedSession, MAX_PASSWORD_CHARS, Membership, Password, Principal, Role,
    User,
};
use crate::error::AuthError;
use crate::password;
use crate::tokens::{self, NewSession};

/// How long issued tokens stay valid.
#[derive(Clone, Copy, Debug)]
pub struct TokenLifetimes {
    pub access: Duration,
    pub refresh: Duration,
}

#[derive(Clone)]
pub struct Auth {
    pool: AnyPool,
    lifetimes: TokenLifetimes,
}

impl Auth {
    pub fn new(pool: AnyPool, lifetimes: TokenLifetimes) -> Self {
        Self { pool, lifetimes }
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
        let session = NewSession::issue(now, self.lifetimes.access, self.lifetimes.refresh);

        let mut transaction = self.pool.begin().await?;
        db::insert_user(&mut *transaction, &user, &password_hash, now)
            .await
            .map_err(|error| {
                if db::is_unique_violation(&error) {
                    AuthError::EmailTaken
                } else {
                    error.into()
                }
            })?;
        db::insert_workspace(
            &mut *transaction,
            &workspace.workspace_id,
            &workspace.workspace_name,
            now,
        )
        .await?;
        db::insert_membership(
            &mut *transaction,
            &workspace.workspace_id,
            &user.id,
            Role::Owner,
            now,
        )
        .await?;
        db::insert_session(&mut *transaction, &user.id, &session).await?;
        transaction.commit().await?;

        tracing::info!(user_id = %user.id, workspace_id = %workspace.workspace_id, "user signed up");
        Ok(issued(session, user, vec![workspace]))
    }

    /// Starts a new session. Unknown email and wrong password fail the same way, after the same
    /// amount of hashing work.
    #[tracing::instrument(name = "sign_in", skip_all)]
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<IssuedSession, AuthError> {
        if password.chars().count() > MAX_PASSWORD_CHARS {
            // No account can have such a password; do not spend a hash on it.
            return Err(AuthError::InvalidCredentials);
        }
        let credentials = match Email::parse(email) {
            Ok(email) => db::find_credentials_by_email(&self.pool, email.as_str()).await?,
            Err(_) => None,
        };
        let (user, stored_hash) = match credentials {
            Some(credentials) => (Some(credentials.user), Some(credentials.password_hash)),
            None => (None, None),
        };
        let matches = password::verify(password.to_owned(), stored_hash).await?;
        let user = match user {
            Some(user) if matches => user,
            _ => return Err(AuthError::InvalidCredentials),
        };

        let session =
            NewSession::issue(now_millis(), self.lifetimes.access, self.lifetimes.refresh);
        db::insert_session(&self.pool, &user.id, &session).await?;
        let workspaces = db::list_memberships(&self.pool, &user.id).await?;
        tracing::info!(user_id = %user.id, "user signed in");
        Ok(issued(session, user, workspaces))
    }

    /// The user an access token belongs to and their workspaces. Unknown, malformed, expired and
    /// revoked tokens all fail with [`AuthError::InvalidToken`].
    #[tracing::instrument(name = "verify_token", skip_all)]
    pub async fn verify_token(&self, token: &str) -> Result<Principal, AuthError> {
        let key = tokens::access_token_lookup_key(token).ok_or(AuthError::InvalidToken)?;
        let owner = db::find_session_by_access_token_hash(&self.pool, &key)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if owner.revoked_at.is_some() || tokens::has_expired(owner.access_expires_at, now_millis())
        {
            return Err(AuthError::InvalidToken);
        }
        let workspaces = db::list_memberships(&self.pool, &owner.user.id).await?;
        Ok(Principal {
            user: owner.user,
            workspaces,
        })
    }
}

fn issued(session: NewSession, user: User, workspaces: Vec<Membership>) -> IssuedSession {
    IssuedSession {
        access_token: session.access_token,
        refresh_token: session.refresh_token,
        expires_in: session.expires_in,
        user,
        workspaces,
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
