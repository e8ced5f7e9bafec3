//! The gRPC face of the conversation service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crawbl_infra::grpc::{Shards, status_with_code};
use crawbl_proto::conversation::v1::conversation_service_server::ConversationService;
use crawbl_proto::conversation::v1::{
    Agent, AgentStatus, ArchiveAgentRequest, CancelTurnRequest, CancelTurnResponse,
    CreateAgentRequest, DeleteWorkspaceDataRequest, DeleteWorkspaceDataResponse, GetAgentRequest,
    GetPushKeysRequest, GetWorkspaceActivityRequest, GetWorkspaceUsageRequest, Message,
    MessageRole, MessageStatus, PushKeys, Quota, SetWorkspacePlanRequest, TurnError,
    UpdateAgentRequest, WorkspaceActivity, WorkspacePlan, WorkspaceUsage,
};
use crawbl_proto::conversation::v1::{
    Conversation, CreateConversationRequest, DeleteConversationRequest, DeleteConversationResponse,
    GetConversationRequest, ListAgentsRequest, ListAgentsResponse, ListConversationsRequest,
    ListConversationsResponse, ListEventsRequest, ListEventsResponse, ListMessagesRequest,
    ListMessagesResponse, SendMessageRequest, SendMessageResponse,
};
use crawbl_proto::conversation::v1::{
    DeleteMessageRequest, EditMessageRequest, MarkReadRequest, ReadState,
};
use crawbl_proto::events::v1::{ConversationRead, Event, event};
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use crawbl_proto::runtimeproxy::v1::{EnsureRuntimeRequest, GetRuntimeRequest, RuntimeState};
use sqlx::AnyPool;
use tonic::{Code, Request, Response, Status};

use crate::outbox::Outbox;
use crate::scheduler::{Scheduler, TurnSettings};
use crate::turn::TurnDeps;
use crate::validate::{self, AgentChanges, NewAgent, NewUserMessage};
use crate::{ConversationError, db, mentions};

pub struct Conversations {
    pool: AnyPool,
    outbox: Outbox,
    /// runtime-proxy instances, each owning the runtimes of its share of the workspaces.
    runtime: Shards,
    scheduler: Scheduler,
    /// How long a send waits for the workspace's runtime to become ready.
    runtime_wait: Duration,
    /// When each workspace's runtime last answered ready, so that a burst of sends asks once.
    runtime_ready: Arc<Mutex<HashMap<String, Instant>>>,
    /// The plan of workspaces a billing system set none for.
    default_plan: db::Plan,
    /// The VAPID public key browsers subscribe with; `None` while Web Push is off.
    vapid_public_key: Option<String>,
}

/// How long `?wait=true` waits for a reply at most, so a send never waits unboundedly.
const WAIT_LIMIT: Duration = Duration::from_secs(300);
/// How long a cancel waits for the running turn to end before answering with the reply as it is.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How often a cancel looks whether the turn it stopped has ended.
const STOP_POLL: Duration = Duration::from_millis(25);
/// How long a runtime's "ready" is trusted for sends without asking runtime-proxy again. A
/// runtime lost meanwhile costs no message: the turn asks runtime-proxy for it again (which
/// provisions it), and fails like any turn whose runtime is away if it cannot.
const RUNTIME_READY_TTL: Duration = Duration::from_secs(2);
/// Workspaces whose "ready" is remembered at most; past this the oldest answers are dropped.
const RUNTIME_READY_CAPACITY: usize = 10_000;

impl Conversations {
    /// This service answering `GetPushKeys` with `key`.
    pub fn with_vapid_public_key(self, key: Option<String>) -> Self {
        Self {
            vapid_public_key: key,
            ..self
        }
    }

    /// `sole_instance`: only this instance uses the database (SQLite). `pushes`: some push
    /// provider is on, so ended replies are queued for push.
    pub fn new(
        pool: AnyPool,
        outbox: Outbox,
        runtime: Shards,
        stops: crawbl_infra::notify::Notifier,
        config: &crate::Config,
        sole_instance: bool,
        pushes: bool,
    ) -> Self {
        let scheduler = Scheduler::new(
            TurnDeps {
                pool: pool.clone(),
                outbox: outbox.clone(),
                runtime: runtime.clone(),
                context_budget: config.context_budget,
                default_plan: config.default_plan.clone(),
                pushes,
            },
            TurnSettings {
                sole_instance,
                ..config.turns
            },
            stops,
        );
        Self {
            pool,
            outbox,
            runtime,
            scheduler,
            runtime_wait: config.runtime_wait,
            runtime_ready: Arc::default(),
            default_plan: config.default_plan.clone(),
            vapid_public_key: None,
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
        if self.runtime_known_ready(workspace_id) {
            return Ok(());
        }
        let mut request = Request::new(EnsureRuntimeRequest {
            workspace_id: workspace_id.to_owned(),
        });
        request.set_timeout(self.runtime_wait);
        let mut client = RuntimeProxyClient::new(self.runtime.pick(workspace_id));
        match client.ensure_runtime(request).await {
            Ok(_) => {
                let mut ready = self.ready_lock();
                if ready.len() >= RUNTIME_READY_CAPACITY {
                    ready.retain(|_, at| at.elapsed() < RUNTIME_READY_TTL);
                }
                ready.insert(workspace_id.to_owned(), Instant::now());
                Ok(())
            }
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
    /// Whether runtime-proxy said the workspace's runtime was ready within the last
    /// [`RUNTIME_READY_TTL`].
    fn runtime_known_ready(&self, workspace_id: &str) -> bool {
        let ready_at = self.ready_lock().get(workspace_id).copied();
        ready_at.is_some_and(|at| at.elapsed() < RUNTIME_READY_TTL)
    }

    fn ready_lock(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.runtime_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The workspace's plan (its own, or the default) and the tokens it used in the month of
    /// `at_ms`.
    async fn plan_and_usage(
        &self,
        workspace_id: &str,
        at_ms: i64,
    ) -> Result<(db::Plan, u64), Status> {
        let (plan, used) = db::plan_and_month_tokens(&self.pool, workspace_id, at_ms)
            .await
            .map_err(db_error)?;
        Ok((plan.unwrap_or_else(|| self.default_plan.clone()), used))
    }

    /// Refuses a send from a workspace that used `used` tokens of the month of `now` on `plan`
    /// (`None`: the default) once it is at or over its monthly quota, until the month ends.
    fn check_quota(&self, plan: Option<&db::Plan>, used: u64, now: i64) -> Result<(), Status> {
        let Some(limit) = plan.unwrap_or(&self.default_plan).monthly_token_quota else {
            return Ok(());
        };
        if used < limit {
            return Ok(());
        }
        let reset_in = (db::month_end_ms(now) - now).max(0) / 1000 + 1;
        Err(crawbl_infra::grpc::with_retry_after(
            status_with_code(
                Code::ResourceExhausted,
                "QUOTA_EXCEEDED",
                format!(
                    "the workspace used {used} of its {limit} tokens this month; sends are refused until the month ends"
                ),
            ),
            u64::try_from(reset_in).unwrap_or(u64::MAX),
        ))
    }

    /// The conversation, from its workspace, or when none is named, from the caller's
    /// (`member_of`): one lookup by id either way. With `reader`, as a client sees it: its last
    /// message and the reader's read state (an empty reader: no read state); without, its own
    /// fields only.
    async fn conversation_among(
        &self,
        workspace_id: &str,
        member_of: &[String],
        conversation_id: &str,
        reader: Option<&str>,
    ) -> Result<Conversation, ConversationError> {
        let found = match reader {
            Some(reader) => {
                db::find_conversation_for(&self.pool, workspace_id, conversation_id, reader).await?
            }
            None => db::find_conversation(&self.pool, workspace_id, conversation_id).await?,
        };
        found
            .filter(|found| in_scope(found, workspace_id, member_of))
            .ok_or(ConversationError::ConversationNotFound)
    }

    /// The user message a cancel names: itself (every agent's turn), or the one the named agent
    /// reply answers (that agent's turn only, whose id comes second).
    async fn answered_message(
        &self,
        conversation: &Conversation,
        message_id: &str,
    ) -> Result<(Message, Option<String>), ConversationError> {
        let not_found = || ConversationError::MessageNotFound;
        let named = db::find_message(&self.pool, message_id)
            .await?
            .filter(|message| message.conversation_id == conversation.id)
            .ok_or_else(not_found)?;
        match named.role() {
            MessageRole::User => Ok((named, None)),
            MessageRole::Agent => {
                let answered = db::reply_to(&self.pool, &named.id)
                    .await?
                    .ok_or_else(not_found)?;
                let user_message = db::find_message(&self.pool, &answered)
                    .await?
                    .ok_or_else(not_found)?;
                Ok((user_message, named.agent_id))
            }
            MessageRole::System | MessageRole::Unspecified => Err(not_found()),
        }
    }

    /// What a new message must pass before it is stored: the agents that answer it (its
    /// mentions resolved), the workspace's quota (as read at `now`), its runtime.
    async fn admit(
        &self,
        target: &db::SendTarget,
        now: i64,
        new: &mut NewUserMessage,
    ) -> Result<Vec<String>, Status> {
        let answering = self
            .addressed_agents(&target.conversation, target.answerer.clone(), new)
            .await?;
        self.check_quota(target.plan.as_ref(), target.month_tokens, now)?;
        self.ensure_runtime(&new.workspace_id).await?;
        Ok(answering)
    }

    /// A send in one round trip where it can be: a message that names no agent, to a named
    /// workspace whose runtime is known ready, on Postgres. `None`: the full way.
    async fn send_plain(
        &self,
        new: &NewUserMessage,
        now: i64,
    ) -> Result<Option<db::PlainSend>, Status> {
        if may_name_agents(new)
            || new.workspace_id.is_empty()
            || !self.runtime_known_ready(&new.workspace_id)
        {
            return Ok(None);
        }
        db::send_plain(&self.pool, new, self.default_plan.monthly_token_quota, now)
            .await
            .map_err(db_error)
    }

    /// A send checked step by step ([`Self::admit`]) to `target`, then stored; or, when
    /// something refuses it, the message a retry already stored.
    async fn send_fully(
        &self,
        target: db::SendTarget,
        mut new: NewUserMessage,
        now: i64,
    ) -> Result<Message, Status> {
        new.workspace_id
            .clone_from(&target.conversation.workspace_id);
        match self.admit(&target, now, &mut new).await {
            Ok(answering) => {
                // A retry of a stored message meets its own row here (the unique local id)
                // and is answered with it.
                let (message, created) = db::insert_user_message(&self.pool, &new, &answering)
                    .await
                    .map_err(db_error)?;
                if let Some(event) = created {
                    self.announce_sent(event, &new, answering).await;
                }
                Ok(message)
            }
            // A retry of a message already stored is answered with it, whatever refuses a new
            // one now (the quota, the runtime, an agent archived since). Looked up only then,
            // so a send makes no read for it.
            Err(refusal) => Ok(db::find_sent(&self.pool, &new)
                .await
                .map_err(db_error)?
                .ok_or(refusal)?),
        }
    }

    /// Publishes a stored message's `message.new` and starts the turns queued with it
    /// (`answering`) if they may start.
    async fn announce_sent(&self, event: Event, new: &NewUserMessage, answering: Vec<String>) {
        self.outbox.publish([event]).await;
        self.scheduler
            .start_next(&new.workspace_id, &new.conversation_id, answering);
    }

    /// The agents a new message is addressed to: those it mentions (ids, `@slug`s), which it
    /// then carries as its `content.mentions`; without any, the conversation's agent
    /// (`answerer`, when the conversation's read found it).
    async fn addressed_agents(
        &self,
        conversation: &Conversation,
        answerer: Option<String>,
        new: &mut NewUserMessage,
    ) -> Result<Vec<String>, ConversationError> {
        if may_name_agents(new) {
            let active = db::active_agents(&self.pool, &conversation.workspace_id).await?;
            new.mentions = mentions::resolve(&new.mentions, &new.text, &active)?;
            if !new.mentions.is_empty() {
                return Ok(new.mentions.clone());
            }
        }
        if let Some(answerer) = answerer {
            return Ok(vec![answerer]);
        }
        // A conversation whose agent was archived stays readable but takes no new message
        // that does not name another agent.
        Ok(vec![
            db::agent_for_conversation(&self.pool, conversation)
                .await?
                .id,
        ])
    }

    /// Stops the turns answering `user_message` (only `agent`'s, when given): queued ones end
    /// at once with a `cancelled` reply, running ones are asked to stop and waited for (up to
    /// [`STOP_WAIT`]).
    async fn stop_turns(
        &self,
        conversation: &Conversation,
        user_message: &Message,
        agent: Option<&str>,
    ) -> Result<(), Status> {
        // A queued turn may start while it is being cancelled: look again, a few times at most.
        for _ in 0..3 {
            let open = db::open_turns(&self.pool, &user_message.id, agent)
                .await
                .map_err(db_error)?;
            let (mut running, mut started_meanwhile) = (false, false);
            for turn in open {
                if turn.running {
                    if db::request_cancel(&self.pool, &turn.id)
                        .await
                        .map_err(db_error)?
                    {
                        self.scheduler.stop_turn(&turn.id).await;
                    }
                    running = true;
                    continue;
                }
                let agent_id = if turn.agent_id.is_empty() {
                    self.answering_agent_id(conversation).await?
                } else {
                    turn.agent_id
                };
                match db::cancel_queued_turn(&self.pool, &turn.id, user_message, &agent_id)
                    .await
                    .map_err(db_error)?
                {
                    Some((_, created)) => self.outbox.publish([created]).await,
                    None => started_meanwhile = true,
                }
            }
            if running {
                // Looked for often: the turns end within moments, maybe on another instance.
                let _ = tokio::time::timeout(
                    STOP_WAIT,
                    self.scheduler
                        .wait_for_replies_polling(&user_message.id, agent, STOP_POLL),
                )
                .await;
                break;
            }
            if !started_meanwhile {
                break;
            }
        }
        Ok(())
    }

    /// The agent whose reply a turn cancelled before it started is: the conversation's, archived
    /// or not, or the workspace's first.
    async fn answering_agent_id(
        &self,
        conversation: &Conversation,
    ) -> Result<String, ConversationError> {
        if let Some(agent_id) = &conversation.agent_id {
            return Ok(agent_id.clone());
        }
        match db::agent_for_conversation(&self.pool, conversation).await {
            Ok(agent) => Ok(agent.id),
            Err(_) => Ok(
                db::list_agents(&self.pool, &conversation.workspace_id, true)
                    .await?
                    .into_iter()
                    .next()
                    .map(|agent| agent.id)
                    .unwrap_or_default(),
            ),
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

/// Whether a new message may name the agents that answer it (mention ids, or an `@` that may
/// start a slug); otherwise its conversation's agent answers.
fn may_name_agents(new: &NewUserMessage) -> bool {
    !new.mentions.is_empty() || new.text.contains('@')
}

/// Whether a conversation found by id is the caller's: in the named workspace (found there), or,
/// when none was named, in one of the caller's (`member_of`).
fn in_scope(found: &Conversation, workspace_id: &str, member_of: &[String]) -> bool {
    !workspace_id.is_empty() || member_of.contains(&found.workspace_id)
}

/// Why an author's edit or delete was refused, for the caller.
fn author_change_error(refusal: db::AuthorChange) -> ConversationError {
    match refusal {
        db::AuthorChange::NotFound => ConversationError::MessageNotFound,
        db::AuthorChange::NotAuthor => ConversationError::Forbidden {
            code: "NOT_MESSAGE_AUTHOR",
            message: "only the author of a user message may change it; agents' messages cannot be changed".to_owned(),
        },
        db::AuthorChange::Deleted => ConversationError::Conflict {
            code: "MESSAGE_DELETED",
            message: "the message was deleted".to_owned(),
        },
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
        let (conversations, next) = db::list_conversations(
            &self.pool,
            &request.workspace_id,
            &request.reader_id,
            before.as_ref(),
            limit,
        )
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
            .conversation_among(
                &request.workspace_id,
                &request.member_of,
                &request.conversation_id,
                Some(&request.reader_id),
            )
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
        let mut request = request.into_inner();
        let wait = request.wait;
        let member_of = std::mem::take(&mut request.member_of);
        let new = NewUserMessage::try_from(request)?;
        let now = db::now_ms();
        let message = match self.send_plain(&new, now).await? {
            Some(db::PlainSend::Stored {
                message,
                event,
                answerer,
            }) => {
                self.announce_sent(event, &new, vec![answerer]).await;
                message
            }
            Some(db::PlainSend::NotFound) => {
                return Err(ConversationError::ConversationNotFound.into());
            }
            Some(db::PlainSend::Declined(target)) => self.send_fully(target, new, now).await?,
            None => {
                let target = db::find_conversation_to_send(
                    &self.pool,
                    &new.workspace_id,
                    &new.conversation_id,
                    now,
                )
                .await
                .map_err(db_error)?
                .filter(|target| in_scope(&target.conversation, &new.workspace_id, &member_of))
                .ok_or(ConversationError::ConversationNotFound)?;
                self.send_fully(target, new, now).await?
            }
        };
        let replies = if wait {
            let replies = self.scheduler.wait_for_replies(&message.id, None);
            match tokio::time::timeout(WAIT_LIMIT, replies).await {
                Ok(replies) => replies.map_err(db_error)?,
                // Still queued or running: the replies come as events, and in the list.
                Err(_) => Vec::new(),
            }
        } else {
            Vec::new()
        };
        Ok(Response::new(SendMessageResponse {
            message: Some(message),
            reply: replies.first().cloned(),
            replies,
        }))
    }

    async fn cancel_turn(
        &self,
        request: Request<CancelTurnRequest>,
    ) -> Result<Response<CancelTurnResponse>, Status> {
        let request = request.into_inner();
        let conversation = self
            .conversation_among(
                &request.workspace_id,
                &request.member_of,
                &request.conversation_id,
                None,
            )
            .await?;
        let (user_message, agent) = self
            .answered_message(&conversation, &request.message_id)
            .await?;
        self.stop_turns(&conversation, &user_message, agent.as_deref())
            .await?;
        // The reply as it is now (the named agent's, or the first agent's); the message itself
        // when none was started.
        let replies = db::find_replies(&self.pool, &user_message.id)
            .await
            .map_err(db_error)?;
        let reply = match &agent {
            Some(agent) => replies
                .into_iter()
                .find(|reply| reply.agent_id.as_ref() == Some(agent)),
            None => replies.into_iter().next(),
        };
        let message = reply.unwrap_or(user_message);
        Ok(Response::new(CancelTurnResponse {
            already_finished: message.status() != MessageStatus::Cancelled,
            message: Some(message),
        }))
    }

    async fn mark_read(
        &self,
        request: Request<MarkReadRequest>,
    ) -> Result<Response<ReadState>, Status> {
        let request = request.into_inner();
        self.conversation(&request.workspace_id, &request.conversation_id)
            .await?;
        let position = db::mark_read(
            &self.pool,
            &request.workspace_id,
            &request.conversation_id,
            &request.user_id,
            &request.message_id,
        )
        .await
        .map_err(db_error)?
        .ok_or(ConversationError::MessageNotFound)?;
        if position.moved {
            let read = ConversationRead {
                conversation_id: request.conversation_id.clone(),
                user_id: request.user_id.clone(),
                last_read_message_id: position.last_read_message_id.clone(),
            };
            self.outbox
                .publish_volatile_to(
                    &request.workspace_id,
                    &request.user_id,
                    event::Kind::ConversationRead(read),
                )
                .await;
        }
        Ok(Response::new(ReadState {
            conversation_id: request.conversation_id,
            user_id: request.user_id,
            last_read_message_id: position.last_read_message_id,
            unread_count: position.unread_count,
            moved: position.moved,
        }))
    }

    async fn edit_message(
        &self,
        request: Request<EditMessageRequest>,
    ) -> Result<Response<Message>, Status> {
        let request = request.into_inner();
        let content = request.content.unwrap_or_default();
        validate::message_text(&content)?;
        self.conversation(&request.workspace_id, &request.conversation_id)
            .await?;
        let changed = db::edit_message(
            &self.pool,
            &request.workspace_id,
            &request.conversation_id,
            &request.message_id,
            &request.user_id,
            &content.text,
        )
        .await
        .map_err(db_error)?;
        let (message, event) = changed.map_err(author_change_error)?;
        self.outbox.publish([event]).await;
        Ok(Response::new(message))
    }

    async fn delete_message(
        &self,
        request: Request<DeleteMessageRequest>,
    ) -> Result<Response<Message>, Status> {
        let request = request.into_inner();
        let conversation = self
            .conversation(&request.workspace_id, &request.conversation_id)
            .await?;
        let changed = db::delete_message(
            &self.pool,
            &request.workspace_id,
            &request.conversation_id,
            &request.message_id,
            &request.user_id,
        )
        .await
        .map_err(db_error)?;
        let (message, event) = changed.map_err(author_change_error)?;
        self.outbox.publish([event]).await;
        // Nobody is to answer a message that is gone.
        self.stop_turns(&conversation, &message, None).await?;
        Ok(Response::new(message))
    }

    async fn set_workspace_plan(
        &self,
        request: Request<SetWorkspacePlanRequest>,
    ) -> Result<Response<WorkspacePlan>, Status> {
        let request = request.into_inner();
        let plan = validate::plan(&request.plan, request.monthly_token_quota)?;
        if request.workspace_id.trim().is_empty() {
            return Err(ConversationError::invalid(
                "INVALID_WORKSPACE",
                "workspace_id is required",
            )
            .into());
        }
        db::set_plan(&self.pool, &request.workspace_id, &plan)
            .await
            .map_err(db_error)?;
        tracing::info!(workspace_id = %request.workspace_id, plan = %plan.name, quota = ?plan.monthly_token_quota, "plan set");
        Ok(Response::new(WorkspacePlan {
            workspace_id: request.workspace_id,
            plan: plan.name,
            monthly_token_quota: plan.monthly_token_quota,
        }))
    }

    async fn get_workspace_usage(
        &self,
        request: Request<GetWorkspaceUsageRequest>,
    ) -> Result<Response<WorkspaceUsage>, Status> {
        let request = request.into_inner();
        let now = db::now_ms();
        let (from_day, to_day) = validate::usage_days(&request.from_day, &request.to_day, now)?;
        let workspace_id = request.workspace_id;
        let totals =
            |column| db::usage_totals(&self.pool, &workspace_id, &from_day, &to_day, column);
        let total = totals(None).await.map_err(db_error)?.into_iter().next();
        let by_day = totals(Some("day")).await.map_err(db_error)?;
        let by_agent = totals(Some("agent_id")).await.map_err(db_error)?;
        let by_user = totals(Some("user_id")).await.map_err(db_error)?;
        let (plan, used) = self.plan_and_usage(&workspace_id, now).await?;
        Ok(Response::new(WorkspaceUsage {
            workspace_id,
            plan: plan.name,
            from_day,
            to_day,
            total,
            by_day,
            by_agent,
            by_user,
            quota: Some(Quota {
                limit: plan.monthly_token_quota,
                used,
                resets_at_ms: db::month_end_ms(now),
            }),
        }))
    }

    async fn get_push_keys(
        &self,
        _request: Request<GetPushKeysRequest>,
    ) -> Result<Response<PushKeys>, Status> {
        Ok(Response::new(PushKeys {
            vapid_public_key: self.vapid_public_key.clone(),
        }))
    }

    async fn get_workspace_activity(
        &self,
        request: Request<GetWorkspaceActivityRequest>,
    ) -> Result<Response<WorkspaceActivity>, Status> {
        let request = request.into_inner();
        let (window_ms, error_limit) =
            validate::activity_bounds(request.window_seconds, request.error_limit)?;
        let activity =
            db::workspace_activity(&self.pool, &request.workspace_id, window_ms, error_limit)
                .await
                .map_err(db_error)?;
        Ok(Response::new(WorkspaceActivity {
            events: activity.events,
            turns: activity.turns,
            recent_errors: activity
                .recent_errors
                .into_iter()
                .map(|error| TurnError {
                    conversation_id: error.conversation_id,
                    message_id: error.message_id,
                    code: error.code,
                    message: error.message,
                    at_ms: error.at_ms,
                })
                .collect(),
        }))
    }

    async fn delete_workspace_data(
        &self,
        request: Request<DeleteWorkspaceDataRequest>,
    ) -> Result<Response<DeleteWorkspaceDataResponse>, Status> {
        let workspace_id = request.into_inner().workspace_id;
        if workspace_id.trim().is_empty() {
            return Err(ConversationError::invalid(
                "INVALID_WORKSPACE",
                "workspace_id is required",
            )
            .into());
        }
        let conversations = db::conversation_ids(&self.pool, &workspace_id)
            .await
            .map_err(db_error)?;
        // Turns first, on their own: from then on no running turn writes anything more (its
        // writes are fenced by its row), wherever it runs. Those running here stop now; those
        // on other instances when their next lease renewal finds the row gone.
        let turns = db::delete_workspace_turns(&self.pool, &workspace_id)
            .await
            .map_err(db_error)?;
        for conversation_id in &conversations {
            self.scheduler.cancel_conversation(conversation_id);
        }
        let deleted = db::delete_workspace_data(&self.pool, &workspace_id)
            .await
            .map_err(db_error)?;
        tracing::info!(
            workspace_id,
            conversations = deleted.conversations,
            messages = deleted.messages,
            turns,
            "workspace data deleted"
        );
        Ok(Response::new(DeleteWorkspaceDataResponse {
            conversations: deleted.conversations,
            messages: deleted.messages,
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
