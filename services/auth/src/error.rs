//! What can go wrong, and how each failure reaches gRPC clients: a status code plus a stable,
//! machine-readable code in the `crawbl-error-code` metadata (see `crawbl_infra::grpc`).

use crawbl_infra::grpc::{status_with_code, with_retry_after};
use tonic::Code;

/// Input that breaks a rule; the client can fix it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("the email address is not valid")]
    InvalidEmail,
    #[error("the password must have at least 8 characters")]
    WeakPassword,
    #[error("the password must have at most 256 characters")]
    InvalidPassword,
    #[error("the display name must have between 1 and 100 characters")]
    InvalidDisplayName,
    #[error("the workspace name must have between 1 and 100 characters")]
    InvalidWorkspaceName,
    #[error("the API key name must have between 1 and 100 characters")]
    InvalidApiKeyName,
    #[error("the role must be \"owner\", \"admin\" or \"member\"")]
    InvalidRole,
}

impl ValidationError {
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidEmail => "INVALID_EMAIL",
            Self::WeakPassword => "WEAK_PASSWORD",
            Self::InvalidPassword => "INVALID_PASSWORD",
            Self::InvalidDisplayName => "INVALID_DISPLAY_NAME",
            Self::InvalidWorkspaceName => "INVALID_WORKSPACE_NAME",
            Self::InvalidApiKeyName => "INVALID_API_KEY_NAME",
            Self::InvalidRole => "INVALID_ROLE",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("an account with this email address already exists")]
    EmailTaken,
    /// Unknown email and wrong password alike, so callers cannot probe for accounts.
    #[error("the email or password is incorrect")]
    InvalidCredentials,
    /// Unknown, malformed, expired or revoked token alike.
    #[error("the token is invalid or has expired")]
    InvalidToken,
    /// A refresh token presented after it was exchanged: someone else may hold it, so the whole
    /// session was revoked.
    #[error("this refresh token was already used; the session is revoked, sign in again")]
    RefreshTokenReused,
    #[error("too many failed sign-ins; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Also what a non-member gets, so workspace ids do not leak.
    #[error("workspace not found")]
    WorkspaceNotFound,
    #[error("no user has this email address")]
    UserNotFound,
    #[error("this user is not a member of the workspace")]
    MemberNotFound,
    #[error("API key not found")]
    ApiKeyNotFound,
    #[error("only an owner of the workspace may do this")]
    OwnerRequired,
    #[error("this user is already a member of the workspace")]
    AlreadyMember,
    #[error("a workspace must keep at least one owner")]
    LastOwner,
    #[error("too many API keys; revoke one first")]
    TooManyApiKeys,
    /// Account deletion: the user now solely owns a workspace whose data the caller has not
    /// deleted (ownership changed in between); ask again which, and retry.
    #[error("the workspaces the user alone owns changed; list them again and retry")]
    WorkspacesChanged,
    /// A device registration that cannot be used (unknown platform, malformed token or
    /// subscription).
    #[error(transparent)]
    InvalidDevice(#[from] crawbl_push::InvalidTarget),
    #[error("appId must have between 1 and 255 characters, no control characters")]
    InvalidAppId,
    #[error("device not found")]
    DeviceNotFound,
    /// A bug or a failing dependency. Logged; clients only learn that something went wrong.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AuthError {
    /// The stable code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(error) => error.code(),
            Self::EmailTaken => "EMAIL_TAKEN",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::InvalidToken => "INVALID_TOKEN",
            Self::RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::WorkspaceNotFound => "WORKSPACE_NOT_FOUND",
            Self::UserNotFound => "USER_NOT_FOUND",
            Self::MemberNotFound => "MEMBER_NOT_FOUND",
            Self::ApiKeyNotFound => "API_KEY_NOT_FOUND",
            Self::OwnerRequired => "OWNER_REQUIRED",
            Self::AlreadyMember => "ALREADY_MEMBER",
            Self::LastOwner => "LAST_OWNER",
            Self::TooManyApiKeys => "TOO_MANY_API_KEYS",
            Self::WorkspacesChanged => "WORKSPACES_CHANGED",
            Self::InvalidDevice(invalid) => invalid.code(),
            Self::InvalidAppId => "INVALID_APP_ID",
            Self::DeviceNotFound => "DEVICE_NOT_FOUND",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

impl From<sqlx::Error> for AuthError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(error).context("database error"))
    }
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        let code = match &error {
            AuthError::Validation(_) => Code::InvalidArgument,
            AuthError::EmailTaken => Code::AlreadyExists,
            AuthError::InvalidCredentials
            | AuthError::InvalidToken
            | AuthError::RefreshTokenReused => Code::Unauthenticated,
            AuthError::RateLimited { retry_after_secs } => {
                let status =
                    status_with_code(Code::ResourceExhausted, error.code(), error.to_string());
                return with_retry_after(status, *retry_after_secs);
            }
            AuthError::WorkspaceNotFound
            | AuthError::UserNotFound
            | AuthError::MemberNotFound
            | AuthError::ApiKeyNotFound => Code::NotFound,
            AuthError::OwnerRequired => Code::PermissionDenied,
            AuthError::AlreadyMember => Code::AlreadyExists,
            AuthError::LastOwner | AuthError::TooManyApiKeys => Code::FailedPrecondition,
            AuthError::WorkspacesChanged => Code::Aborted,
            // An unknown platform is a malformed request (400); a token or subscription that
            // cannot be used is well-formed but unusable (422).
            AuthError::InvalidDevice(crawbl_push::InvalidTarget::UnknownPlatform)
            | AuthError::InvalidAppId => Code::InvalidArgument,
            AuthError::InvalidDevice(_) => Code::FailedPrecondition,
            AuthError::DeviceNotFound => Code::NotFound,
            AuthError::Internal(internal) => {
                tracing::error!(error = ?internal, "internal error");
                if database_unavailable(internal) {
                    return status_with_code(
                        Code::Unavailable,
                        "DATABASE_UNAVAILABLE",
                        "the database is unavailable; retry shortly",
                    );
                }
                return status_with_code(Code::Internal, error.code(), "internal error");
            }
        };
        status_with_code(code, error.code(), error.to_string())
    }
}

/// Whether a database outage (not a bug) caused `error`: the client should retry, not report it.
fn database_unavailable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .is_some_and(crawbl_infra::db::is_unavailable)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_reveal_their_cause() {
        let status = tonic::Status::from(AuthError::Internal(anyhow::anyhow!(
            "connection to 10.0.0.7 refused"
        )));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert_eq!(crawbl_infra::grpc::stable_code(&status), Some("INTERNAL"));
    }

    #[test]
    fn a_database_outage_is_unavailable_not_internal() {
        let status = tonic::Status::from(AuthError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            crawbl_infra::grpc::stable_code(&status),
            Some("DATABASE_UNAVAILABLE")
        );
        let status = tonic::Status::from(AuthError::from(sqlx::Error::RowNotFound));
        assert_eq!(status.code(), Code::Internal);
    }

    #[test]
    fn rate_limits_carry_the_seconds_to_wait() {
        let status = tonic::Status::from(AuthError::RateLimited {
            retry_after_secs: 17,
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            crawbl_infra::grpc::stable_code(&status),
            Some("RATE_LIMITED")
        );
        assert_eq!(crawbl_infra::grpc::retry_after(&status), Some(17));
    }

    #[test]
    fn validation_errors_are_invalid_arguments_with_their_code() {
        let status = tonic::Status::from(AuthError::from(ValidationError::WeakPassword));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            crawbl_infra::grpc::stable_code(&status),
            Some("WEAK_PASSWORD")
        );
    }
}
