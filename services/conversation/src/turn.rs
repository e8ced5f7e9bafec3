//! One agent turn: the agent answers a user message. The turn's events go out in the order the
//! spec fixes: agent busy, typing, the agent message (streaming), deltas, the final message,
//! typing stopped, agent online. Typing always stops and the agent always returns online, even
//! when the runtime fails or the turn is cancelled.

use std::time::Duration;

use crawbl_infra::grpc::Channel;
use crawbl_proto::conversation::v1::{
    Agent, AgentStatus, Conversation, Message, MessageStatus, ToolCall,
};
use crawbl_proto::events::v1::{
    AgentStatusChanged, AgentTool, AgentTyping, Event, MessageDelta, event,
};
use crawbl_proto::runtime::v1::{TurnRequest, turn_event};
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use futures::StreamExt;
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::context::{self, ContextBudget};
use crate::outbox::Outbox;
use crate::{ConversationError, db};

/// How long turns still running at shutdown may take to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What a turn needs from the service.
#[derive(Clone)]
pub struct TurnDeps {
    pub pool: AnyPool,
    pub outbox: Outbox,
    pub runtime: RuntimeProxyClient<Channel>,
    pub context_budget: ContextBudget,
}

/// Runs the agent's turn in answer to `user_message` and returns the agent's final message
/// (`None` when the turn could not start or its conversation was deleted). Errors are logged.
pub async fn run(
    deps: TurnDeps,
    conversation: Conversation,
    user_message: Message,
    cancel: CancellationToken,
) -> Option<Message> {
    let agent = match until_available(&cancel, || {
        db::agent_for_conversation(&deps.pool, &conversation)
    })
    .await
    {
        Ok(agent) => agent,
        Err(error) => {
            tracing::error!(%error, conversation_id = %conversation.id, "cannot start a turn: no agent");
            return None;
        }
    };
    let workspace_id = conversation.workspace_id.as_str();

    set_status(&deps, workspace_id, &agent, AgentStatus::Busy).await;
    set_typing(&deps, &conversation, &agent, true).await;

    let outcome = answer(&deps, &conversation, &agent, &user_message, &cancel).await;
    let (reply, runtime_died) = match outcome {
        Ok(Some((reply, ending))) => (Some(reply), ending == Ending::RuntimeDied),
        Ok(None) => (None, false),
        Err(error) => {
            tracing::error!(%error, conversation_id = %conversation.id, "agent turn failed");
            (None, false)
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
    reply
}

/// How a turn's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// With the runtime's `done`.
    Done,
    /// Early: an error, a broken stream, a refusal or a cancellation.
    Early,
    /// Early because the runtime died (runtime-proxy's `RUNTIME_DIED`).
    RuntimeDied,
}

/// Creates the agent's message, streams the runtime's reply into it and stores the outcome.
async fn answer(
    deps: &TurnDeps,
    conversation: &Conversation,
    agent: &Agent,
    user_message: &Message,
    cancel: &CancellationToken,
) -> Result<Option<(Message, Ending)>, ConversationError> {
    // Read before the reply exists, so a failure here leaves no reply `streaming`.
    let request = until_available(cancel, || async {
        context::turn_request(&deps.pool, deps.context_budget, agent, user_message)
            .await
            .map_err(ConversationError::from)
    })
    .await?;
    let mut retry = false;
    let (mut reply, created) = until_available(cancel, || {
        let again = std::mem::replace(&mut retry, true);
        start_reply(deps, conversation, agent, user_message, again)
    })
    .await?;
    deps.outbox.publish(created).await;
    let mut text = String::new();
    let ending = stream_reply(deps, &mut reply, &mut text, request, cancel).await;
    let status = match ending {
        Ending::Done => MessageStatus::Delivered,
        Ending::Early | Ending::RuntimeDied if text.is_empty() => MessageStatus::Failed,
        Ending::Early | Ending::RuntimeDied => MessageStatus::Incomplete,
    };
    let finish = || async {
        db::finish_message(&deps.pool, reply.clone(), text.clone(), status)
            .await
            .map_err(ConversationError::from)
    };
    let Some((finished, updated)) = until_available(cancel, finish).await? else {
        return Ok(None); // The conversation was deleted meanwhile.
    };
    deps.outbox.publish([updated]).await;
    Ok(Some((finished, ending)))
}

/// Creates the agent's empty `streaming` reply to `user_message` with its `message.new` event.
/// `again`: an earlier attempt failed, maybe only after its commit, so a reply already stored
/// is taken instead of a second one started (its event is then in the log, for the relay).
async fn start_reply(
    deps: &TurnDeps,
    conversation: &Conversation,
    agent: &Agent,
    user_message: &Message,
    again: bool,
) -> Result<(Message, Option<Event>), ConversationError> {
    if again && let Some(reply) = db::find_reply(&deps.pool, &user_message.id).await? {
        return Ok((reply, None));
    }
    let (reply, created) = db::insert_agent_message(
        &deps.pool,
        &conversation.workspace_id,
        &conversation.id,
        &agent.id,
        &user_message.id,
    )
    .await?;
    Ok((reply, Some(created)))
}

/// Forwards the turn to runtime-proxy, appending the reply to `text` and recording tool calls
/// on `reply`, and publishing each delta and tool call as it comes.
async fn stream_reply(
    deps: &TurnDeps,
    reply: &mut Message,
    text: &mut String,
    request: TurnRequest,
    cancel: &CancellationToken,
) -> Ending {
    let mut runtime = deps.runtime.clone();
    let call = runtime.forward_turn(request);
    let mut stream = tokio::select! {
        () = cancel.cancelled() => return Ending::Early,
        response = call => match response {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "runtime-proxy refused the turn");
                return Ending::Early;
            }
        },
    };
    let mut index = 0u32;
    loop {
        // Dropping the stream on cancellation cancels the call, and runtime-proxy the runtime's.
        let item = tokio::select! {
            () = cancel.cancelled() => {
                tracing::info!(message_id = %reply.id, "turn cancelled");
                return Ending::Early;
            }
            item = stream.next() => item,
        };
        let Some(item) = item else { break };
        let event = match item {
            Ok(event) => event.event,
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "turn stream broke");
                return Ending::Early;
            }
        };
        match event {
            Some(turn_event::Event::Delta(delta)) => {
                text.push_str(&delta.text);
                deps.outbox
                    .publish_volatile(
                        &reply.workspace_id,
                        event::Kind::MessageDelta(MessageDelta {
                            message_id: reply.id.clone(),
                            conversation_id: reply.conversation_id.clone(),
                            agent_id: reply.agent_id.clone().unwrap_or_default(),
                            delta: delta.text,
                            index,
                        }),
                    )
                    .await;
                index += 1;
            }
            Some(turn_event::Event::Done(_)) => return Ending::Done,
            Some(turn_event::Event::Error(error)) => {
                tracing::warn!(code = %error.code, message = %error.message, "the turn failed");
                return if error.code == "RUNTIME_DIED" {
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
                publish_tool(deps, reply, call).await;
            }
            Some(turn_event::Event::Usage(_)) | None => {}
        }
    }
    tracing::warn!("turn stream ended without done");
    Ending::Early
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
