//! One agent turn: the agent answers a user message. The turn's events go out in the order the
//! spec fixes: agent busy, typing, the agent message (streaming), deltas, the final message,
//! typing stopped, agent online. Typing always stops and the agent always returns online, even
//! when the runtime fails or the turn is cancelled.

use std::time::Duration;

use crawbl_infra::grpc::Shards;
use crawbl_proto::conversation::v1::{
    Agent, AgentStatus, Conversation, Message, MessageStatus, ToolCall,
};
use crawbl_proto::events::v1::{
    AgentStatusChanged, AgentTool, AgentTyping, Event, MessageDelta, UsageUpdate, event,
};
use crawbl_proto::runtime::v1::{TurnRequest, Usage as RuntimeUsage, turn_event};
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use futures::StreamExt;
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::context::{self, ContextBudget};
use crate::db::{ClaimedTurn, TurnFence};
use crate::outbox::Outbox;
use crate::{ConversationError, db};

/// How long turns still running at shutdown may take to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What a turn needs from the service.
#[derive(Clone)]
pub struct TurnDeps {
    pub pool: AnyPool,
    pub outbox: Outbox,
    /// runtime-proxy instances: a workspace's turns go to the one that owns its runtime.
    pub runtime: Shards,
    pub context_budget: ContextBudget,
    /// The plan of workspaces a billing system set none for.
    pub default_plan: db::Plan,
    /// Whether ended replies are queued for push (some provider is on).
    pub pushes: bool,
}

/// Most attempts a turn gets when each owner died before anything of it reached clients.
const MAX_ATTEMPTS: i64 = 3;
/// How long streamed text may wait to be checkpointed; deltas go out once their text is saved,
/// so an interruption keeps everything clients were shown.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Runs a claimed turn: the agent answers the user message, streaming into its reply (a new one,
/// or the one an earlier owner started and showed nothing of). Errors are logged.
pub async fn run(
    deps: TurnDeps,
    turn: ClaimedTurn,
    cancel: CancellationToken,
    stop: CancellationToken,
) {
    let started = tokio::time::Instant::now();
    let loaded = until_available(&cancel, || async {
        let message = db::find_message(&deps.pool, &turn.user_message_id).await?;
        let conversation =
            db::find_conversation(&deps.pool, &turn.workspace_id, &turn.conversation_id).await?;
        Ok(message.zip(conversation))
    })
    .await;
    let (user_message, conversation) = match loaded {
        Ok(Some(found)) => found,
        // Deleted with its conversation meanwhile: its row went too.
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "cannot load a turn's message; it is taken over later");
            return;
        }
    };
    let agent = match until_available(&cancel, || {
        db::turn_agent(&deps.pool, &conversation, &turn.agent_id)
    })
    .await
    {
        Ok(agent) => agent,
        Err(error) => {
            // Sends to such a conversation are refused; this one raced an archive.
            tracing::warn!(%error, conversation_id = %conversation.id, "a turn has no agent to answer; it ends unanswered");
            end_unanswered(&deps, &turn, &cancel).await;
            return;
        }
    };
    let workspace_id = conversation.workspace_id.as_str();

    set_status(&deps, workspace_id, &agent, AgentStatus::Busy).await;
    set_typing(&deps, &conversation, &agent, true).await;

    let signals = Signals {
        cancel: cancel.clone(),
        stop,
        started,
    };
    let outcome = answer(&deps, &turn, &conversation, &agent, &user_message, &signals).await;
    let (runtime_died, usage) = match outcome {
        Ok((ending, usage)) => (ending == Ending::RuntimeDied, usage),
        Err(error) => {
            tracing::error!(%error, conversation_id = %conversation.id, "agent turn failed");
            (false, None)
        }
    };

    set_typing(&deps, &conversation, &agent, false).await;
    if runtime_died {
        // runtime-proxy announced the agent offline and announces it online once the runtime is
        // back; saying "online" now would contradict it.
        store_status(&deps, &agent, AgentStatus::Offline).await;
    } else {
        set_status(&deps, workspace_id, &agent, AgentStatus::Online).await;
    }
    // After the turn's own events, which the spec keeps together.
    if let Some(usage) = usage {
        announce_usage(&deps, workspace_id, &usage).await;
    }
}

/// Settles a turn taken over from an owner that stopped renewing its lease. A reply that showed
/// clients something (text or a tool call) ends `incomplete` with it: running the turn again
/// would rewrite what they saw. A turn that showed nothing runs again from the start, unless it
/// already had [`MAX_ATTEMPTS`]; then it ends `failed`.
pub async fn settle_orphan(deps: &TurnDeps, turn: ClaimedTurn) {
    let reply = match &turn.reply_id {
        Some(reply_id) => match db::find_message(&deps.pool, reply_id).await {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(%error, "cannot read an orphaned turn's reply; retried later");
                return;
            }
        },
        None => None,
    };
    let text = reply
        .as_ref()
        .and_then(|reply| reply.content.as_ref())
        .map(|content| content.text.clone())
        .unwrap_or_default();
    let shown = reply
        .as_ref()
        .is_some_and(|reply| !text.is_empty() || !reply.tool_calls.is_empty());
    if !shown && turn.attempts < MAX_ATTEMPTS {
        if let Err(error) = db::requeue(&deps.pool, &turn.fence).await {
            tracing::warn!(%error, "cannot requeue an orphaned turn; retried later");
        }
        return;
    }
    let Some(reply) = reply else {
        tracing::error!(turn_id = %turn.fence.turn_id, attempts = turn.attempts, "a turn failed on every attempt before it started a reply; it ends unanswered");
        end_unanswered(deps, &turn, &CancellationToken::new()).await;
        return;
    };
    let status = db::ended_status(&text, &reply.tool_calls);
    let finished = db::finish_message(
        &deps.pool,
        reply.clone(),
        text,
        status,
        Some(&turn.fence),
        None,
        deps.pushes,
    )
    .await;
    match finished {
        Ok(Some((_, updated))) => deps.outbox.publish([updated]).await,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "cannot end an orphaned turn's reply; retried later");
            return;
        }
    }
    // Its owner never said the agent stopped.
    let agent_id = reply.agent_id.clone().unwrap_or_default();
    let agent = Agent {
        id: agent_id,
        workspace_id: reply.workspace_id.clone(),
        ..Agent::default()
    };
    let conversation = Conversation {
        id: reply.conversation_id.clone(),
        workspace_id: reply.workspace_id.clone(),
        ..Conversation::default()
    };
    set_typing(deps, &conversation, &agent, false).await;
    set_status(deps, &reply.workspace_id, &agent, AgentStatus::Online).await;
}

/// Ends a turn that gets no reply.
async fn end_unanswered(deps: &TurnDeps, turn: &ClaimedTurn, cancel: &CancellationToken) {
    let ended = until_available(cancel, || async {
        let mut connection = deps.pool.acquire().await?;
        Ok(db::end_turn(&mut connection, &turn.fence).await?)
    })
    .await;
    if let Err(error) = ended {
        tracing::warn!(%error, "cannot end a turn; it is taken over later");
    }
}

/// What ends a running turn early, and when it started.
struct Signals {
    /// Nothing more is written: the turn was deleted or is no longer this instance's.
    cancel: CancellationToken,
    /// A person stopped it: the reply ends `cancelled`.
    stop: CancellationToken,
    started: tokio::time::Instant,
}

/// How a turn's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// With the runtime's `done`.
    Done,
    /// Stopped at a person's request.
    Stopped,
    /// Early: an error, a broken stream, a refusal or a cancellation.
    Early,
    /// Early because the runtime died (runtime-proxy's `RUNTIME_DIED`).
    RuntimeDied,
    /// The turn is no longer this instance's (deleted, or taken over): write nothing more.
    Lost,
}

/// Creates (or resumes) the agent's reply, streams the runtime's answer into it and stores the
/// outcome, with the turn's usage (also returned, when it was stored).
async fn answer(
    deps: &TurnDeps,
    turn: &ClaimedTurn,
    conversation: &Conversation,
    agent: &Agent,
    user_message: &Message,
    signals: &Signals,
) -> Result<(Ending, Option<db::TurnUsage>), ConversationError> {
    let cancel = &signals.cancel;
    // Read before the reply exists, so a failure here leaves no reply `streaming`.
    let request = until_available(cancel, || async {
        context::turn_request(&deps.pool, deps.context_budget, agent, user_message)
            .await
            .map_err(ConversationError::from)
    })
    .await?;
    let mut retry = false;
    let started = until_available(cancel, || {
        let again = std::mem::replace(&mut retry, true);
        start_reply(deps, turn, conversation, agent, user_message, again)
    })
    .await?;
    let Some((mut reply, created)) = started else {
        return Ok((Ending::Lost, None));
    };
    deps.outbox.publish(created).await;

    let mut text = String::new();
    let streamed = stream_reply(deps, &turn.fence, &mut reply, &mut text, request, signals).await;
    let status = match streamed.ending {
        Ending::Lost => return Ok((Ending::Lost, None)),
        Ending::Done => MessageStatus::Delivered,
        Ending::Stopped => MessageStatus::Cancelled,
        Ending::Early | Ending::RuntimeDied => db::ended_status(&text, &reply.tool_calls),
    };
    let usage = turn_usage(streamed.usage, agent, user_message, &text, signals.started);
    let finish = || async {
        db::finish_message(
            &deps.pool,
            reply.clone(),
            text.clone(),
            status,
            Some(&turn.fence),
            Some(&usage),
            deps.pushes,
        )
        .await
        .map_err(ConversationError::from)
    };
    // Not cancellable: a cancelled turn still ends its reply.
    let Some((_, updated)) = until_available(&CancellationToken::new(), finish).await? else {
        return Ok((Ending::Lost, None)); // Deleted with its conversation, or taken over.
    };
    deps.outbox.publish([updated]).await;
    Ok((streamed.ending, Some(usage)))
}

/// What the turn cost: as the runtime reported it, or, when it reported nothing (the turn was
/// stopped or broke first), the words of the text as output tokens, like the scripted runtime
/// counts them.
fn turn_usage(
    reported: Option<RuntimeUsage>,
    agent: &Agent,
    user_message: &Message,
    text: &str,
    started: tokio::time::Instant,
) -> db::TurnUsage {
    let (input_tokens, output_tokens, model) = match reported {
        Some(usage) => (
            u64::from(usage.input_tokens),
            u64::from(usage.output_tokens),
            usage.model,
        ),
        None => (0, text.split_whitespace().count() as u64, String::new()),
    };
    db::TurnUsage {
        input_tokens,
        output_tokens,
        model: if model.is_empty() {
            agent.model.clone()
        } else {
            model
        },
        agent_id: agent.id.clone(),
        user_id: user_message.author_id.clone().unwrap_or_default(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Counts the turn's tokens and tells the workspace where its month stands (`usage.update`).
async fn announce_usage(deps: &TurnDeps, workspace_id: &str, usage: &db::TurnUsage) {
    let (plan, used) = match db::plan_and_month_tokens(&deps.pool, workspace_id, db::now_ms()).await
    {
        Ok((plan, used)) => (plan.unwrap_or_else(|| deps.default_plan.clone()), used),
        Err(error) => {
            tracing::debug!(%error, "cannot read the workspace's plan and usage");
            crate::metrics::count_tokens(&deps.default_plan.name, &usage.model, usage);
            return;
        }
    };
    crate::metrics::count_tokens(&plan.name, &usage.model, usage);
    deps.outbox
        .publish_volatile(
            workspace_id,
            event::Kind::UsageUpdate(UsageUpdate {
                used,
                limit: plan.monthly_token_quota,
            }),
        )
        .await;
}

/// The agent's `streaming` reply: the one the turn already started (an earlier owner's, or an
/// earlier attempt of this one's that failed, maybe only after its commit), or a new one with its
/// `message.new` event. `None`: the turn is no longer this instance's, or its reply already ended.
async fn start_reply(
    deps: &TurnDeps,
    turn: &ClaimedTurn,
    conversation: &Conversation,
    agent: &Agent,
    user_message: &Message,
    again: bool,
) -> Result<Option<(Message, Option<Event>)>, ConversationError> {
    let earlier = match (&turn.reply_id, again) {
        (Some(reply_id), _) => db::find_message(&deps.pool, reply_id).await?,
        (None, true) => db::find_reply(&deps.pool, &user_message.id, &agent.id).await?,
        (None, false) => None,
    };
    if let Some(mut reply) = earlier {
        if reply.status() != MessageStatus::Streaming {
            return Ok(None);
        }
        // It showed nothing (else it would not run again): start it over.
        reply.tool_calls.clear();
        return Ok(Some((reply, None)));
    }
    let created = db::insert_agent_message(
        &deps.pool,
        &turn.fence,
        &conversation.workspace_id,
        &conversation.id,
        &agent.id,
        &user_message.id,
    )
    .await?;
    Ok(created.map(|(reply, event)| (reply, Some(event))))
}

/// What a turn streamed that clients have not been sent yet: deltas wait until their text is
/// checkpointed.
struct Unsaved {
    deltas: Vec<MessageDelta>,
    last_saved: tokio::time::Instant,
}

impl Unsaved {
    fn new() -> Self {
        Self {
            deltas: Vec::new(),
            last_saved: tokio::time::Instant::now(),
        }
    }

    /// When the pending deltas are due to be saved and sent.
    fn due(&self) -> Option<tokio::time::Instant> {
        (!self.deltas.is_empty()).then(|| self.last_saved + CHECKPOINT_INTERVAL)
    }
}

/// Checkpoints the reply's text and tool calls, then sends the deltas that text covers. `false`:
/// the turn is no longer this instance's. While the database is away the deltas wait.
async fn save(
    deps: &TurnDeps,
    fence: &TurnFence,
    reply: &Message,
    text: &str,
    unsaved: &mut Unsaved,
) -> bool {
    match db::checkpoint_reply(&deps.pool, fence, reply, text).await {
        Ok(true) => {}
        Ok(false) => return false,
        Err(error) => {
            tracing::debug!(%error, "cannot checkpoint a reply; its deltas wait");
            return true;
        }
    }
    unsaved.last_saved = tokio::time::Instant::now();
    for delta in unsaved.deltas.drain(..) {
        deps.outbox
            .publish_volatile(&reply.workspace_id, event::Kind::MessageDelta(delta))
            .await;
    }
    true
}

/// Forwards the turn to runtime-proxy, appending the reply to `text` and recording tool calls
/// on `reply`; deltas and tool calls go out once checkpointed.
async fn stream_reply(
    deps: &TurnDeps,
    fence: &TurnFence,
    reply: &mut Message,
    text: &mut String,
    request: TurnRequest,
    signals: &Signals,
) -> Streamed {
    let (cancel, stop) = (&signals.cancel, &signals.stop);
    let mut usage = None;
    let mut runtime = RuntimeProxyClient::new(deps.runtime.pick(&request.workspace_id));
    let call = runtime.forward_turn(request);
    let mut stream = tokio::select! {
        () = cancel.cancelled() => return Streamed::from(Ending::Early),
        () = stop.cancelled() => return Streamed::from(Ending::Stopped),
        response = call => match response {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "runtime-proxy refused the turn");
                record_failure(deps, reply, failure_code(&status, "RUNTIME_UNAVAILABLE"), status.message());
                return Streamed::from(Ending::Early);
            }
        },
    };
    let mut index = 0u32;
    let mut unsaved = Unsaved::new();
    let ending = loop {
        let due = unsaved.due();
        // Dropping the stream on cancellation cancels the call, and runtime-proxy the runtime's.
        let item = tokio::select! {
            () = cancel.cancelled() => {
                tracing::info!(message_id = %reply.id, "turn cancelled");
                break Ending::Early;
            }
            () = stop.cancelled() => {
                tracing::info!(message_id = %reply.id, "turn stopped on request");
                break Ending::Stopped;
            }
            () = sleep_until(due) => {
                if !save(deps, fence, reply, text, &mut unsaved).await {
                    return Streamed::from(Ending::Lost);
                }
                continue;
            }
            item = stream.next() => item,
        };
        let Some(item) = item else {
            tracing::warn!("turn stream ended without done");
            record_failure(
                deps,
                reply,
                "TURN_STREAM_ENDED",
                "the runtime's stream ended before the reply was done",
            );
            break Ending::Early;
        };
        let event = match item {
            Ok(event) => event.event,
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "turn stream broke");
                record_failure(
                    deps,
                    reply,
                    failure_code(&status, "TURN_STREAM_BROKEN"),
                    status.message(),
                );
                break Ending::Early;
            }
        };
        match event {
            Some(turn_event::Event::Delta(delta)) => {
                text.push_str(&delta.text);
                unsaved.deltas.push(MessageDelta {
                    message_id: reply.id.clone(),
                    conversation_id: reply.conversation_id.clone(),
                    agent_id: reply.agent_id.clone().unwrap_or_default(),
                    delta: delta.text,
                    index,
                });
                index += 1;
                if unsaved.last_saved.elapsed() >= CHECKPOINT_INTERVAL
                    && !save(deps, fence, reply, text, &mut unsaved).await
                {
                    return Streamed::from(Ending::Lost);
                }
            }
            Some(turn_event::Event::Done(_)) => break Ending::Done,
            Some(turn_event::Event::Error(error)) => {
                tracing::warn!(code = %error.code, message = %error.message, "the turn failed");
                record_failure(deps, reply, &error.code, &error.message);
                break if error.code == "RUNTIME_DIED" {
                    Ending::RuntimeDied
                } else {
                    Ending::Early
                };
            }
            Some(turn_event::Event::ToolCall(call)) => {
                let call = ToolCall {
                    call_id: call.call_id,
                    name: call.name,
                    arguments_json: call.arguments_json,
                    result_json: None,
                };
                reply.tool_calls.push(call.clone());
                if !save(deps, fence, reply, text, &mut unsaved).await {
                    return Streamed::from(Ending::Lost);
                }
                publish_tool(deps, reply, call).await;
            }
            Some(turn_event::Event::ToolResult(result)) => {
                let known = reply
                    .tool_calls
                    .iter_mut()
                    .find(|call| call.call_id == result.call_id);
                let Some(call) = known else {
                    tracing::warn!(call_id = %result.call_id, "a tool result for no known call");
                    continue;
                };
                call.result_json = Some(result.result_json);
                let call = call.clone();
                if !save(deps, fence, reply, text, &mut unsaved).await {
                    return Streamed::from(Ending::Lost);
                }
                publish_tool(deps, reply, call).await;
            }
            Some(turn_event::Event::Usage(reported)) => usage = Some(reported),
            None => {}
        }
    };
    // The last deltas go out before the final `message.updated`, which carries the whole text.
    if !unsaved.deltas.is_empty() && !save(deps, fence, reply, text, &mut unsaved).await {
        return Streamed::from(Ending::Lost);
    }
    Streamed { ending, usage }
}

/// How a turn's stream ended, and the usage the runtime reported.
struct Streamed {
    ending: Ending,
    usage: Option<RuntimeUsage>,
}

impl From<Ending> for Streamed {
    fn from(ending: Ending) -> Self {
        Self {
            ending,
            usage: None,
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn publish_tool(deps: &TurnDeps, reply: &Message, call: ToolCall) {
    deps.outbox
        .publish_volatile(
            &reply.workspace_id,
            event::Kind::AgentTool(AgentTool {
                message_id: reply.id.clone(),
                conversation_id: reply.conversation_id.clone(),
                agent_id: reply.agent_id.clone().unwrap_or_default(),
                call: Some(call),
            }),
        )
        .await;
}

async fn store_status(deps: &TurnDeps, agent: &Agent, status: AgentStatus) {
    let store = || async {
        db::set_agent_status(&deps.pool, &agent.id, status)
            .await
            .map_err(ConversationError::from)
    };
    // Not cancellable: an agent left `busy` would stay so.
    if let Err(error) = until_available(&CancellationToken::new(), store).await {
        tracing::warn!(%error, agent_id = %agent.id, "could not store the agent's status");
    }
}

/// Runs a step of the turn until it succeeds, fails for another reason than the database being
/// unavailable, or the turn is cancelled. A turn whose user message was accepted therefore waits
/// out a database outage and ends once it is back, instead of leaving its reply `streaming` or
/// never starting. Each attempt waits at most the pool's acquire timeout.
async fn until_available<T, F, Step>(
    cancel: &CancellationToken,
    mut step: Step,
) -> Result<T, ConversationError>
where
    Step: FnMut() -> F,
    F: Future<Output = Result<T, ConversationError>>,
{
    const PAUSE: Duration = Duration::from_millis(250);
    let mut logged = false;
    loop {
        let error = match step().await {
            Err(ConversationError::Database(error)) if crawbl_infra::db::is_unavailable(&error) => {
                error
            }
            done => return done,
        };
        if !std::mem::replace(&mut logged, true) {
            tracing::warn!(%error, "the database is unavailable; the turn waits for it");
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(error.into()),
            () = tokio::time::sleep(PAUSE) => {}
        }
    }
}

async fn set_status(deps: &TurnDeps, workspace_id: &str, agent: &Agent, status: AgentStatus) {
    store_status(deps, agent, status).await;
    deps.outbox
        .publish_volatile(
            workspace_id,
            event::Kind::AgentStatus(AgentStatusChanged {
                agent_id: agent.id.clone(),
                status: status as i32,
            }),
        )
        .await;
}

async fn set_typing(deps: &TurnDeps, conversation: &Conversation, agent: &Agent, is_typing: bool) {
    deps.outbox
        .publish_volatile(
            &conversation.workspace_id,
            event::Kind::AgentTyping(AgentTyping {
                conversation_id: conversation.id.clone(),
                agent_id: agent.id.clone(),
                is_typing,
            }),
        )
        .await;
}

/// Keeps why a turn failed, for the operations view: best effort, off the turn's path.
fn record_failure(deps: &TurnDeps, reply: &Message, code: &str, message: &str) {
    let pool = deps.pool.clone();
    let workspace_id = reply.workspace_id.clone();
    let failure = db::TurnError {
        conversation_id: reply.conversation_id.clone(),
        message_id: reply.id.clone(),
        code: code.to_owned(),
        message: message.to_owned(),
        at_ms: db::now_ms(),
    };
    tokio::spawn(async move {
        if let Err(error) = db::record_turn_error(&pool, &workspace_id, &failure).await {
            tracing::warn!(%error, "cannot record why a turn failed");
        }
    });
}

/// The stable code a failed call carries, or `fallback`.
fn failure_code<'a>(status: &'a tonic::Status, fallback: &'a str) -> &'a str {
    crawbl_infra::grpc::stable_code(status).unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn unavailable() -> ConversationError {
        ConversationError::Database(sqlx::Error::PoolTimedOut)
    }

    #[tokio::test]
    async fn a_step_is_retried_while_the_database_is_unavailable_and_only_then() {
        let attempts = Cell::new(0);
        let stored = until_available(&CancellationToken::new(), || {
            attempts.set(attempts.get() + 1);
            let attempt = attempts.get();
            async move {
                if attempt < 3 {
                    Err(unavailable())
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(stored.ok(), Some(3));

        attempts.set(0);
        let broken: Result<(), _> = until_available(&CancellationToken::new(), || {
            attempts.set(attempts.get() + 1);
            async { Err(ConversationError::Database(sqlx::Error::RowNotFound)) }
        })
        .await;
        assert!(matches!(
            broken,
            Err(ConversationError::Database(sqlx::Error::RowNotFound))
        ));
        assert_eq!(attempts.get(), 1, "a bad query is not retried");
    }

    #[tokio::test]
    async fn a_cancelled_turn_stops_waiting_for_the_database() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let gave_up: Result<(), _> =
            until_available(&cancel, || async { Err(unavailable()) }).await;
        assert!(matches!(
            gave_up,
            Err(ConversationError::Database(sqlx::Error::PoolTimedOut))
        ));
    }
}
