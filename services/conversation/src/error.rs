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
    #[error("message not found")]
    MessageNotFound,
    /// The conversation's agent was archived: its conversation stays readable, but takes no new
    /// message until it is moved to another agent.
    #[error("the conversation's agent was archived")]
    AgentArchived,
    /// Every agent of the workspace is archived, so a conversation without one has nobody to ask.
    #[error("the workspace has no active agent")]
    NoActiveAgent,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A member may see the thing but not do this to it (another person's message).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
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
            ConversationError::MessageNotFound => {
                status_with_code(Code::NotFound, "MESSAGE_NOT_FOUND", "message not found")
            }
            ConversationError::AgentArchived => status_with_code(
                Code::AlreadyExists,
                "AGENT_ARCHIVED",
                "the conversation's agent was archived; start a conversation with another agent",
            ),
            ConversationError::NoActiveAgent => status_with_code(
                Code::FailedPrecondition,
                "NO_ACTIVE_AGENT",
                "every agent of the workspace is archived; create one first",
            ),
            ConversationError::Conflict { code, message } => {
                status_with_code(Code::AlreadyExists, code, message)
            }
            ConversationError::Forbidden { code, message } => {
                status_with_code(Code::PermissionDenied, code, message)
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
