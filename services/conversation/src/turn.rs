//! One agent turn: the agent answers a user message. The turn's events go out in the order the
//! spec fixes: agent busy, typing, the agent message (streaming), deltas, the final message,
//! typing stopped, agent online. Typing always stops and the agent always returns online, even
//! when the runtime fails.

use std::time::Duration;

use crawbl_infra::bus::EventBus;
use crawbl_proto::conversation::v1::{Agent, AgentStatus, Conversation, Message, MessageStatus};
use crawbl_proto::events::v1::{AgentStatusChanged, AgentTyping, Event, MessageDelta, event};
use crawbl_proto::runtime::v1::{TurnRequest, turn_event};
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use futures::StreamExt;
use sqlx::AnyPool;
use tonic::transport::Channel;

use crate::{ConversationError, db};

/// How long turns still running at shutdown may take to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What a turn needs from the service.
#[derive(Clone)]
pub struct TurnDeps {
    pub pool: AnyPool,
    pub bus: EventBus,
    pub runtime: RuntimeProxyClient<Channel>,
}

/// Publishes `kind` as an event of `workspace_id`. A failed publish is logged, not fatal: the
/// database already holds the change.
pub async fn publish(bus: &EventBus, workspace_id: &str, kind: event::Kind) {
    let event = Event {
        workspace_id: workspace_id.to_owned(),
        seq: 0,
        trace_context: Default::default(),
        kind: Some(kind),
    };
    if let Err(error) = bus.publish(&event).await {
        tracing::warn!(%error, workspace_id, "could not publish an event");
    }
}

/// Runs the agent's turn in answer to `user_message`; errors are logged.
pub async fn run(deps: TurnDeps, conversation: Conversation, user_message: Message) {
    let agent = match db::agent_for_conversation(&deps.pool, &conversation).await {
        Ok(agent) => agent,
        Err(error) => {
            tracing::error!(%error, conversation_id = %conversation.id, "cannot start a turn: no agent");
            return;
        }
    };
    let workspace_id = conversation.workspace_id.as_str();

    set_status(&deps, workspace_id, &agent, AgentStatus::Busy).await;
    set_typing(&deps, &conversation, &agent, true).await;

    if let Err(error) = answer(&deps, &conversation, &agent, &user_message).await {
        tracing::error!(%error, conversation_id = %conversation.id, "agent turn failed");
    }

    set_typing(&deps, &conversation, &agent, false).await;
    set_status(&deps, workspace_id, &agent, AgentStatus::Online).await;
}

/// Creates the agent's message, streams the runtime's reply into it and stores the outcome.
async fn answer(
    deps: &TurnDeps,
    conversation: &Conversation,
    agent: &Agent,
    user_message: &Message,
) -> Result<(), ConversationError> {
    let workspace_id = conversation.workspace_id.as_str();
    let reply =
        db::insert_agent_message(&deps.pool, workspace_id, &conversation.id, &agent.id).await?;
    publish(
        &deps.bus,
        workspace_id,
        event::Kind::MessageNew(reply.clone()),
    )
    .await;

    let request = TurnRequest {
        workspace_id: workspace_id.to_owned(),
        conversation_id: conversation.id.clone(),
        agent_id: agent.id.clone(),
        agent_slug: agent.slug.clone(),
        message_id: user_message.id.clone(),
        text: user_message
            .content
            .as_ref()
            .map(|content| content.text.clone())
            .unwrap_or_default(),
    };
    let (text, status) = stream_reply(deps, &reply, request).await;
    let finished = db::finish_message(&deps.pool, reply, text, status).await?;
    publish(
        &deps.bus,
        workspace_id,
        event::Kind::MessageUpdated(finished),
    )
    .await;
    Ok(())
}

/// Forwards the turn to runtime-proxy and collects the reply, publishing each delta.
/// Returns the text received and the status the message ends with.
async fn stream_reply(
    deps: &TurnDeps,
    reply: &Message,
    request: TurnRequest,
) -> (String, MessageStatus) {
    let mut text = String::new();
    let ended_early = |text: &String| {
        if text.is_empty() {
            MessageStatus::Failed
        } else {
            MessageStatus::Incomplete
        }
    };
    let mut stream = match deps.runtime.clone().forward_turn(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "runtime-proxy refused the turn");
            return (text, MessageStatus::Failed);
        }
    };
    let mut index = 0u32;
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event.event,
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "turn stream broke");
                return (text.clone(), ended_early(&text));
            }
        };
        match event {
            Some(turn_event::Event::Delta(delta)) => {
                text.push_str(&delta.text);
                publish(
                    &deps.bus,
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
            Some(turn_event::Event::Done(_)) => return (text, MessageStatus::Delivered),
            Some(turn_event::Event::Error(error)) => {
                tracing::warn!(message = %error.message, "the runtime reported a failed turn");
                return (text.clone(), ended_early(&text));
            }
            Some(
                turn_event::Event::ToolCall(_)
                | turn_event::Event::ToolResult(_)
                | turn_event::Event::Usage(_),
            )
            | None => {}
        }
    }
    tracing::warn!("turn stream ended without done");
    (text.clone(), ended_early(&text))
}

async fn set_status(deps: &TurnDeps, workspace_id: &str, agent: &Agent, status: AgentStatus) {
    if let Err(error) = db::set_agent_status(&deps.pool, &agent.id, status).await {
        tracing::warn!(%error, agent_id = %agent.id, "could not store the agent's status");
    }
    publish(
        &deps.bus,
        workspace_id,
        event::Kind::AgentStatus(AgentStatusChanged {
            agent_id: agent.id.clone(),
            status: status as i32,
        }),
    )
    .await;
}

async fn set_typing(deps: &TurnDeps, conversation: &Conversation, agent: &Agent, is_typing: bool) {
    publish(
        &deps.bus,
        &conversation.workspace_id,
        event::Kind::AgentTyping(AgentTyping {
            conversation_id: conversation.id.clone(),
            agent_id: agent.id.clone(),
            is_typing,
        }),
    )
    .await;
}
