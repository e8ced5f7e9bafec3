use crawbl_infra::grpc::status_with_code;
use tonic::Code;

/// What can go wrong in the conversation service, as the caller should hear it.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("{message}")]
    InvalidInput { code: &'static str, message: String },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("conversation not found")]
    ConversationNotFound,
    #[error("agent not found")]
    AgentNotFound,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl ConversationError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            code,
            message: message.into(),
        }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            message: message.into(),
        }
    }
}

impl From<ConversationError> for tonic::Status {
    fn from(error: ConversationError) -> Self {
        match error {
            ConversationError::InvalidInput { code, message } => {
                status_with_code(Code::InvalidArgument, code, message)
            }
            ConversationError::Unprocessable { code, message } => {
                status_with_code(Code::FailedPrecondition, code, message)
            }
            ConversationError::ConversationNotFound => status_with_code(
                Code::NotFound,
                "CONVERSATION_NOT_FOUND",
                "conversation not found",
            ),
            ConversationError::AgentNotFound => {
                status_with_code(Code::NotFound, "AGENT_NOT_FOUND", "agent not found")
            }
            ConversationError::Database(error) => {
                tracing::error!(%error, "database error");
                if crawbl_infra::db::is_unavailable(&error) {
                    status_with_code(
                        Code::Unavailable,
                        "DATABASE_UNAVAILABLE",
                        "the database is unavailable; retry shortly",
                    )
                } else {
                    status_with_code(Code::Internal, "INTERNAL", "internal error")
                }
            }
        }
    }
}
