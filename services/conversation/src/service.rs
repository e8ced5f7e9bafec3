//! The gRPC face of the conversation service.

use crawbl_infra::bus::EventBus;
use crawbl_proto::conversation::v1::conversation_service_server::ConversationService;
use crawbl_proto::conversation::v1::{
    Conversation, CreateConversationRequest, GetConversationRequest, ListAgentsRequest,
    ListAgentsResponse, ListConversationsRequest, ListConversationsResponse, ListMessagesRequest,
    ListMessagesResponse, SendMessageRequest, SendMessageResponse,
};
use crawbl_proto::events::v1::event;
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use sqlx::AnyPool;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::turn::{self, TurnDeps};
use crate::validate::{self, NewUserMessage};
use crate::{ConversationError, db};

pub struct Conversations {
    deps: TurnDeps,
    turns: TaskTracker,
}

impl Conversations {
    pub fn new(pool: AnyPool, bus: EventBus, runtime: RuntimeProxyClient<Channel>) -> Self {
        Self {
            deps: TurnDeps { pool, bus, runtime },
            turns: TaskTracker::new(),
        }
    }

    /// The running agent turns, so shutdown can wait for them.
    pub fn turns(&self) -> TaskTracker {
        self.turns.clone()
    }

    fn pool(&self) -> &AnyPool {
        &self.deps.pool
    }

    async fn conversation(
        &self,
        workspace_id: &str,
        conversation_id: &str,
    ) -> Result<Conversation, ConversationError> {
        db::find_conversation(self.pool(), workspace_id, conversation_id)
            .await?
            .ok_or(ConversationError::ConversationNotFound)
    }
}

#[tonic::async_trait]
impl ConversationService for Conversations {
    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let workspace_id = request.into_inner().workspace_id;
        db::ensure_default_agents(self.pool(), &workspace_id)
            .await
            .map_err(ConversationError::from)?;
        let agents = db::list_agents(self.pool(), &workspace_id)
            .await
            .map_err(ConversationError::from)?;
        Ok(Response::new(ListAgentsResponse { agents }))
    }

    async fn create_conversation(
        &self,
        request: Request<CreateConversationRequest>,
    ) -> Result<Response<Conversation>, Status> {
        let request = request.into_inner();
        let title = validate::title(request.title)?;
        db::ensure_default_agents(self.pool(), &request.workspace_id)
            .await
            .map_err(ConversationError::from)?;
        if let Some(agent_id) = &request.agent_id
            && db::find_agent(self.pool(), &request.workspace_id, agent_id)
                .await
                .map_err(ConversationError::from)?
                .is_none()
        {
            return Err(ConversationError::AgentNotFound.into());
        }
        let conversation = db::create_conversation(
            self.pool(),
            &request.workspace_id,
            &title,
            request.agent_id.as_deref(),
        )
        .await
        .map_err(ConversationError::from)?;
        Ok(Response::new(conversation))
    }

    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        let conversations = db::list_conversations(self.pool(), &request.into_inner().workspace_id)
            .await
            .map_err(ConversationError::from)?;
        Ok(Response::new(ListConversationsResponse { conversations }))
    }

    async fn get_conversation(
        &self,
        request: Request<GetConversationRequest>,
    ) -> Result<Response<Conversation>, Status> {
        let request = request.into_inner();
        let conversation = self
            .conversation(&request.workspace_id, &request.conversation_id)
            .await?;
        Ok(Response::new(conversation))
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let new = NewUserMessage::try_from(request.into_inner())?;
        let conversation = self
            .conversation(&new.workspace_id, &new.conversation_id)
            .await?;
        let (message, created) = db::insert_user_message(self.pool(), &new)
            .await
            .map_err(ConversationError::from)?;
        if created {
            turn::publish(
                &self.deps.bus,
                &message.workspace_id,
                event::Kind::MessageNew(message.clone()),
            )
            .await;
            self.turns
                .spawn(turn::run(self.deps.clone(), conversation, message.clone()));
        }
        Ok(Response::new(SendMessageResponse {
            message: Some(message),
        }))
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let request = request.into_inner();
        let limit = validate::page_size(request.limit)?;
        let before = match request.before.as_str() {
            "" => None,
            raw => Some(db::MessageCursor::decode(raw)?),
        };
        // Scopes the conversation to the workspace before reading its messages.
        self.conversation(&request.workspace_id, &request.conversation_id)
            .await?;
        let (messages, next) = db::list_messages(
            self.pool(),
            &request.conversation_id,
            before.as_ref(),
            limit,
        )
        .await
        .map_err(ConversationError::from)?;
        Ok(Response::new(ListMessagesResponse {
            messages,
            next_cursor: next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
    }
}
