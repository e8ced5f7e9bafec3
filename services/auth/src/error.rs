//! What can go wrong, and how each failure reaches gRPC clients: a status code plus a stable,
//! machine-readable code in the `crawbl-error-code` metadata (see `crawbl_infra::grpc`).

use crawbl_infra::grpc::status_with_code;
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
}

impl ValidationError {
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidEmail => "INVALID_EMAIL",
            Self::WeakPassword => "WEAK_PASSWORD",
            Self::InvalidPassword => "INVALID_PASSWORD",
            Self::InvalidDisplayName => "INVALID_DISPLAY_NAME",
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
            AuthError::InvalidCredentials | AuthError::InvalidToken => Code::Unauthenticated,
            AuthError::Internal(internal) => {
                tracing::error!(error = ?internal, "internal error");
                return status_with_code(Code::Internal, error.code(), "internal error");
            }
        };
        status_with_code(code, error.code(), error.to_string())
    }
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
    fn validation_errors_are_invalid_arguments_with_their_code() {
        let status = tonic::Status::from(AuthError::from(ValidationError::WeakPassword));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            crawbl_infra::grpc::stable_code(&status),
            Some("WEAK_PASSWORD")
        );
    }
}
