//! The gRPC face of the conversation service.

use std::time::Duration;

use crawbl_infra::grpc::{Shards, status_with_code};
use crawbl_proto::conversation::v1::conversation_service_server::ConversationService;
use crawbl_proto::conversation::v1::{
    Agent, AgentStatus, ArchiveAgentRequest, CreateAgentRequest, GetAgentRequest,
    UpdateAgentRequest,
};
use crawbl_proto::conversation::v1::{
    Conversation, CreateConversationRequest, DeleteConversationRequest, DeleteConversationResponse,
    GetConversationRequest, ListAgentsRequest, ListAgentsResponse, ListConversationsRequest,
    ListConversationsResponse, ListEventsRequest, ListEventsResponse, ListMessagesRequest,
    ListMessagesResponse, SendMessageRequest, SendMessageResponse,
};
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use crawbl_proto::runtimeproxy::v1::{EnsureRuntimeRequest, GetRuntimeRequest, RuntimeState};
use sqlx::AnyPool;
use tonic::{Code, Request, Response, Status};

use crate::context::ContextBudget;
use crate::outbox::Outbox;
use crate::scheduler::{Scheduler, TurnSettings};
use crate::turn::TurnDeps;
use crate::validate::{self, AgentChanges, NewAgent, NewUserMessage};
use crate::{ConversationError, db};

pub struct Conversations {
    pool: AnyPool,
    outbox: Outbox,
    /// runtime-proxy instances, each owning the runtimes of its share of the workspaces.
    runtime: Shards,
    scheduler: Scheduler,
    /// How long a send waits for the workspace's runtime to become ready.
    runtime_wait: Duration,
}

impl Conversations {
    pub fn new(
        pool: AnyPool,
        outbox: Outbox,
        runtime: Shards,
        runtime_wait: Duration,
        context_budget: ContextBudget,
        turn_settings: TurnSettings,
    ) -> Self {
        let scheduler = Scheduler::new(
            TurnDeps {
                pool: pool.clone(),
                outbox: outbox.clone(),
                runtime: runtime.clone(),
                context_budget,
            },
            turn_settings,
        );
        Self {
            pool,
            outbox,
            runtime,
            scheduler,
            runtime_wait,
        }
    }

    pub fn scheduler(&self) -> Scheduler {
        self.scheduler.clone()
    }

    async fn conversation(
        &self,
        workspace_id: &str,
        conversation_id: &str,
    ) -> Result<Conversation, ConversationError> {
        db::find_conversation(&self.pool, workspace_id, conversation_id)
            .await?
            .ok_or(ConversationError::ConversationNotFound)
    }

    /// Waits (up to the bound) until the workspace's runtime is ready, so a send is refused
    /// with `RUNTIME_NOT_READY` instead of accepted and failed. Provisioning goes on after a
    /// refusal, so a retry soon succeeds.
    async fn ensure_runtime(&self, workspace_id: &str) -> Result<(), Status> {
        let mut request = Request::new(EnsureRuntimeRequest {
            workspace_id: workspace_id.to_owned(),
        });
        request.set_timeout(self.runtime_wait);
        let mut client = RuntimeProxyClient::new(self.runtime.pick(workspace_id));
        match client.ensure_runtime(request).await {
            Ok(_) => Ok(()),
            Err(status) => {
                tracing::info!(code = ?status.code(), message = status.message(), workspace_id, "runtime not ready for a send");
                Err(status_with_code(
                    Code::Unavailable,
                    "RUNTIME_NOT_READY",
                    "the workspace's agent runtime is starting; retry shortly",
                ))
            }
        }
    }
}

impl Conversations {
    /// Agents stored `offline` (their runtime died during a turn) are online again once
    /// runtime-proxy has the workspace's runtime ready; it announces that, this stores it.
    async fn refresh_offline_agents(&self, workspace_id: &str, agents: &mut [Agent]) {
        let offline = AgentStatus::Offline as i32;
        if !agents.iter().any(|agent| agent.status == offline) {
            return;
        }
        let request = GetRuntimeRequest {
            workspace_id: workspace_id.to_owned(),
        };
        let mut client = RuntimeProxyClient::new(self.runtime.pick(workspace_id));
        let ready = match client.get_runtime(request).await {
            Ok(info) => info.into_inner().state() == RuntimeState::Ready,
            Err(status) => {
                tracing::debug!(code = ?status.code(), "cannot ask runtime-proxy for the runtime's state");
                false
            }
        };
        if !ready {
            return;
        }
        for agent in agents.iter_mut().filter(|agent| agent.status == offline) {
            agent.status = AgentStatus::Online as i32;
            if let Err(error) =
                db::set_agent_status(&self.pool, &agent.id, AgentStatus::Online).await
            {
                tracing::warn!(%error, agent_id = %agent.id, "could not store the agent's status");
            }
        }
    }
}

fn db_error(error: sqlx::Error) -> Status {
    ConversationError::from(error).into()
}

/// A write that named a slug another agent of the workspace has is a 409.
fn agent_write_error(error: sqlx::Error) -> Status {
    if db::is_unique_violation(&error) {
        return ConversationError::Conflict {
            code: "AGENT_SLUG_TAKEN",
            message: "another agent of the workspace has this slug".to_owned(),
        }
        .into();
    }
    db_error(error)
}

#[tonic::async_trait]
impl ConversationService for Conversations {
    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let request = request.into_inner();
        let workspace_id = request.workspace_id;
        db::ensure_default_agents(&self.pool, &workspace_id)
            .await
            .map_err(db_error)?;
        let mut agents = db::list_agents(&self.pool, &workspace_id, request.include_archived)
            .await
            .map_err(db_error)?;
        self.refresh_offline_agents(&workspace_id, &mut agents)
            .await;
        Ok(Response::new(ListAgentsResponse { agents }))
    }

    async fn create_agent(
        &self,
        request: Request<CreateAgentRequest>,
    ) -> Result<Response<Agent>, Status> {
        let new = NewAgent::try_from(request.into_inner())?;
        // Seed first: a workspace's first agent write must not take a default agent's slug
        // before the defaults exist.
        db::ensure_default_agents(&self.pool, &new.workspace_id)
            .await
            .map_err(db_error)?;
        let (agent, event) = db::create_agent(&self.pool, &new)
            .await
            .map_err(agent_write_error)?;
        self.outbox.publish([event]).await;
        Ok(Response::new(agent))
    }

    async fn get_agent(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<Agent>, Status> {
        let request = request.into_inner();
        let agent = db::find_agent(&self.pool, &request.workspace_id, &request.agent_id)
            .await
            .map_err(db_error)?
            .ok_or(ConversationError::AgentNotFound)?;
        Ok(Response::new(agent))
    }

    async fn update_agent(
        &self,
        request: Request<UpdateAgentRequest>,
    ) -> Result<Response<Agent>, Status> {
        let request = request.into_inner();
        let changes = AgentChanges::try_from(&request)?;
        let (agent, event) = db::update_agent(
            &self.pool,
            &request.workspace_id,
            &request.agent_id,
            &changes,
        )
        .await
        .map_err(agent_write_error)?
        .ok_or(ConversationError::AgentNotFound)?;
        self.outbox.publish([event]).await;
        Ok(Response::new(agent))
    }

    async fn archive_agent(
        &self,
        request: Request<ArchiveAgentRequest>,
    ) -> Result<Response<Agent>, Status> {
        let request = request.into_inner();
        let (agent, event) =
            db::archive_agent(&self.pool, &request.workspace_id, &request.agent_id)
                .await
                .map_err(db_error)?
                .ok_or(ConversationError::AgentNotFound)?;
        self.outbox.publish(event).await;
        Ok(Response::new(agent))
    }

    async fn create_conversation(
        &self,
        request: Request<CreateConversationRequest>,
    ) -> Result<Response<Conversation>, Status> {
        let request = request.into_inner();
        let title = validate::title(request.title)?;
        db::ensure_default_agents(&self.pool, &request.workspace_id)
            .await
            .map_err(db_error)?;
        if let Some(agent_id) = &request.agent_id {
            let agent = db::find_agent(&self.pool, &request.workspace_id, agent_id)
                .await
                .map_err(db_error)?
                .ok_or(ConversationError::AgentNotFound)?;
            if agent.archived_at_ms.is_some() {
                return Err(ConversationError::AgentArchived.into());
            }
        }
        let conversation = db::create_conversation(
            &self.pool,
            &request.workspace_id,
            &title,
            request.agent_id.as_deref(),
        )
        .await
        .map_err(db_error)?;
        Ok(Response::new(conversation))
    }

    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        let request = request.into_inner();
        let limit = validate::page_size(request.limit)?;
        let before = db::Cursor::decode(&request.before)?;
        let (conversations, next) =
            db::list_conversations(&self.pool, &request.workspace_id, before.as_ref(), limit)
                .await
                .map_err(db_error)?;
        Ok(Response::new(ListConversationsResponse {
            conversations,
            next_cursor: next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
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

    async fn delete_conversation(
        &self,
        request: Request<DeleteConversationRequest>,
    ) -> Result<Response<DeleteConversationResponse>, Status> {
        let request = request.into_inner();
        // Scope first, so a conversation of another workspace is neither cancelled nor deleted.
        self.conversation(&request.workspace_id, &request.conversation_id)
            .await?;
        // Delete first, then cancel: the cancelled turn then finds its reply gone and reports
        // nothing more about it.
        if !db::delete_conversation(&self.pool, &request.workspace_id, &request.conversation_id)
            .await
            .map_err(db_error)?
        {
            return Err(ConversationError::ConversationNotFound.into());
        }
        self.scheduler.cancel_conversation(&request.conversation_id);
        Ok(Response::new(DeleteConversationResponse {}))
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let request = request.into_inner();
        let wait = request.wait;
        let new = NewUserMessage::try_from(request)?;
        let conversation = self
            .conversation(&new.workspace_id, &new.conversation_id)
            .await?;
        // A conversation whose agent was archived stays readable but takes no new message.
        db::agent_for_conversation(&self.pool, &conversation).await?;
        self.ensure_runtime(&new.workspace_id).await?;
        let (message, created) = db::insert_user_message(&self.pool, &new)
            .await
            .map_err(db_error)?;
        if let Some(event) = created {
            self.outbox.publish([event]).await;
            // Its turn was queued with it; run it here now if it may start.
            self.scheduler.start_next(&conversation.id);
        }
        let reply = if wait {
            self.scheduler
                .wait_for_reply(&message.id)
                .await
                .map_err(db_error)?
        } else {
            None
        };
        Ok(Response::new(SendMessageResponse {
            message: Some(message),
            reply,
        }))
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let request = request.into_inner();
        let limit = validate::page_size(request.limit)?;
        let before = db::Cursor::decode(&request.before)?;
        // Scopes the conversation to the workspace before reading its messages.
        self.conversation(&request.workspace_id, &request.conversation_id)
            .await?;
        let (messages, next) =
            db::list_messages(&self.pool, &request.conversation_id, before.as_ref(), limit)
                .await
                .map_err(db_error)?;
        Ok(Response::new(ListMessagesResponse {
            messages,
            next_cursor: next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let request = request.into_inner();
        let limit = validate::event_page_size(request.limit)?;
        let (oldest_seq, last_seq) = db::sequence_bounds(&self.pool, &request.workspace_id)
            .await
            .map_err(db_error)?;
        if missed_pruned_events(request.after, oldest_seq, last_seq) {
            return Err(status_with_code(
                Code::OutOfRange,
                "EVENTS_EXPIRED",
                format!(
                    "events after {} are no longer kept (oldest kept: {oldest_seq}); refetch over REST",
                    request.after
                ),
            ));
        }
        let (events, has_more) =
            db::list_events(&self.pool, &request.workspace_id, request.after, limit)
                .await
                .map_err(db_error)?;
        Ok(Response::new(ListEventsResponse {
            events,
            has_more,
            oldest_seq,
            last_seq,
        }))
    }
}

/// Whether a reader who has seen everything up to `after` missed events that were pruned:
/// the log keeps `oldest..=last` (nothing when `oldest` is 0) and the reader needs
/// `after + 1..=last`.
fn missed_pruned_events(after: u64, oldest: u64, last: u64) -> bool {
    if after >= last {
        return false;
    }
    oldest == 0 || oldest > after.saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::missed_pruned_events;

    #[test]
    fn a_reader_is_told_when_the_events_it_needs_were_pruned() {
        // Nothing happened yet, or the reader is up to date.
        assert!(!missed_pruned_events(0, 0, 0));
        assert!(!missed_pruned_events(7, 3, 7));
        // Everything it needs is kept.
        assert!(!missed_pruned_events(0, 1, 5));
        assert!(!missed_pruned_events(2, 3, 5));
        // 3 was pruned (oldest kept is 4) and the reader has seen only up to 2.
        assert!(missed_pruned_events(2, 4, 5));
        // Everything was pruned.
        assert!(missed_pruned_events(2, 0, 5));
    }
}
