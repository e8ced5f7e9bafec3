//! Starting runtime-stub in-process on 127.0.0.1:0 and running turns through its gRPC service,
//! as runtime-proxy does.

#![allow(dead_code)]

use std::time::Duration;

use crawbl_proto::runtime::v1::agent_runtime_client::AgentRuntimeClient;
use crawbl_proto::runtime::v1::context_message::Role;
use crawbl_proto::runtime::v1::{
    AgentConfig, ContextMessage, ToolExchange, TurnEvent, TurnRequest, turn_event::Event,
};
use crawbl_runtime_stub::{Config, OpenAiConfig, ProviderConfig};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(20);

/// Starts the runtime with `config`; returns its address and a guard that stops it.
pub async fn start(config: Config) -> (String, DropGuard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    tokio::spawn(crawbl_runtime_stub::run(config, listener, shutdown.clone()));
    (address, shutdown.drop_guard())
}

/// A configuration with the OpenAI-compatible provider at `base_url` (model `test-model`) and
/// fast retries and tools.
pub fn openai(base_url: &str) -> Config {
    Config {
        provider: ProviderConfig::OpenAi(OpenAiConfig {
            base_url: base_url.to_owned(),
            model: "test-model".to_owned(),
            api_key: None,
        }),
        tool_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// A turn of agent `slug` whose user message is `text`, without history or configuration (as
/// an older platform sends it).
pub fn request(slug: &str, text: &str) -> TurnRequest {
    TurnRequest {
        workspace_id: "ws-1".into(),
        conversation_id: "conv-1".into(),
        agent_id: "agent-1".into(),
        agent_slug: slug.into(),
        message_id: "msg-1".into(),
        text: text.into(),
        ..TurnRequest::default()
    }
}

/// A turn of `agent-1` with `agent` as its configuration and `history` ending with `text`.
pub fn request_with(
    agent: AgentConfig,
    mut history: Vec<ContextMessage>,
    text: &str,
) -> TurnRequest {
    history.push(user(text));
    TurnRequest {
        agent: Some(agent),
        history,
        ..request("assistant", text)
    }
}

pub fn user(text: &str) -> ContextMessage {
    ContextMessage {
        role: Role::User.into(),
        message_id: format!("user-{}", text.len()),
        text: text.into(),
        author_id: "user-1".into(),
        ..ContextMessage::default()
    }
}

pub fn agent_message(
    agent_id: &str,
    name: &str,
    text: &str,
    tool_calls: Vec<ToolExchange>,
) -> ContextMessage {
    ContextMessage {
        role: Role::Agent.into(),
        message_id: format!("agent-{}", text.len()),
        text: text.into(),
        agent_id: agent_id.into(),
        agent_name: name.into(),
        tool_calls,
        ..ContextMessage::default()
    }
}

/// Every event of the turn, in order.
pub async fn turn_events(address: &str, request: TurnRequest) -> Vec<Event> {
    let channel = crawbl_infra::grpc::channel_without_credential(address).expect("channel");
    let mut client: AgentRuntimeClient<Channel> = AgentRuntimeClient::new(channel);
    events_of(&mut client, request).await
}

/// Every event of a turn run through `client`, in order.
pub async fn events_of(
    client: &mut AgentRuntimeClient<Channel>,
    request: TurnRequest,
) -> Vec<Event> {
    let mut stream = client.turn(request).await.expect("turn").into_inner();
    let mut events = Vec::new();
    while let Some(TurnEvent { event }) = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("next event in time")
        .expect("stream ok")
    {
        events.push(event.expect("event set"));
    }
    events
}

/// The text deltas, concatenated.
pub fn text_of(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Delta(delta) => Some(delta.text.as_str()),
            _ => None,
        })
        .collect()
}

/// The last event's error code and message; panics when the turn did not end with an error.
pub fn error_of(events: &[Event]) -> (String, String) {
    match events.last() {
        Some(Event::Error(error)) => (error.code.clone(), error.message.clone()),
        other => panic!("expected an error event last, got {other:?} in {events:?}"),
    }
}
