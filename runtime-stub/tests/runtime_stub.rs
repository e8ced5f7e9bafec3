//! runtime-stub against real gRPC clients: in-process servers on 127.0.0.1:0 and the real binary.
//! The OpenAI-compatible provider has its own files, `openai_provider.rs` and `agent_turns.rs`.

#[path = "support/mcp_server.rs"]
mod mcp_server;
#[path = "support/runtime.rs"]
mod runtime;

use runtime::events_of;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crawbl_proto::runtime::v1::agent_runtime_client::AgentRuntimeClient;
use crawbl_proto::runtime::v1::context_message::Role;
use crawbl_proto::runtime::v1::{
    AgentConfig, ContextMessage, McpServer, ToolExchange, TurnEvent, TurnRequest, turn_event::Event,
};
use crawbl_runtime_stub::{
    Config, DIE_AFTER_TOKENS, DIE_EXIT_CODE, LISTENING_PREFIX, PROVIDER_ERROR, Step, StubRuntime,
    context_reply, describe_context, script, scripted_reply, scripted_tool_result,
};
use mcp_server::McpTestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const WAIT: Duration = Duration::from_secs(10);

fn turn(slug: &str, text: &str) -> TurnRequest {
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

/// Starts `run` in-process on an OS-chosen port; the guard stops it when dropped.
async fn start_in_process(token_delay: Duration) -> (String, tokio_util::sync::DropGuard) {
    start_with(Config {
        token_delay,
        ..Config::default()
    })
    .await
}

async fn start_with(config: Config) -> (String, tokio_util::sync::DropGuard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    tokio::spawn(crawbl_runtime_stub::run(config, listener, shutdown.clone()));
    (address, shutdown.drop_guard())
}

async fn client(address: &str) -> AgentRuntimeClient<Channel> {
    let channel = crawbl_infra::grpc::channel_without_credential(address).expect("channel");
    AgentRuntimeClient::new(channel)
}

/// Events of a turn up to the end of its stream, or up to the stream failing (then `true`).
async fn collect_until_broken(
    client: &mut AgentRuntimeClient<Channel>,
    request: TurnRequest,
) -> (Vec<Event>, bool) {
    let mut stream = client.turn(request).await.expect("turn").into_inner();
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("next event in time")
        {
            Ok(Some(TurnEvent { event })) => events.push(event.expect("event set")),
            Ok(None) => return (events, false),
            Err(_) => return (events, true),
        }
    }
}

fn concatenated_deltas(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Delta(delta) => Some(delta.text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_turn_streams_the_scripted_reply_then_usage_then_done() {
    let (address, _server) = start_in_process(Duration::from_millis(1)).await;
    let mut client = client(&address).await;

    let events = events_of(&mut client, turn("helper", "hello there,  friend")).await;

    assert_eq!(
        concatenated_deltas(&events),
        scripted_reply("helper", "hello there,  friend")
    );
    let deltas = events
        .iter()
        .filter(|e| matches!(e, Event::Delta(_)))
        .count();
    assert!(deltas > 1, "the reply is streamed in several deltas");
    let tail = &events[deltas..];
    assert!(
        matches!(tail, [Event::Usage(usage), Event::Done(_)] if usage.input_tokens == 3 && usage.output_tokens == 6),
        "deltas are followed by usage and done, got {tail:?}"
    );
}

#[tokio::test]
async fn a_cancelled_turn_stops_streaming_at_once() {
    // 200 tokens at 50 ms would keep the turn alive for ten seconds if cancellation were ignored.
    let runtime = StubRuntime::from_config(&Config {
        token_delay: Duration::from_millis(50),
        ..Config::default()
    })
    .expect("runtime");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    let _server = shutdown.clone().drop_guard();
    tokio::spawn(crawbl_infra::grpc::serve_without_credential(
        listener,
        runtime.clone().into_service(),
        shutdown,
    ));
    let mut client = client(&address).await;

    let mut stream = client
        .turn(turn("helper", &"word ".repeat(200)))
        .await
        .expect("turn")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("stream ok")
        .expect("an event");
    assert!(matches!(first.event, Some(Event::Delta(_))));
    assert_eq!(runtime.active_turns(), 1);

    drop(stream);
    tokio::time::timeout(Duration::from_secs(2), async {
        while runtime.active_turns() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the turn stops soon after the caller goes away");
}

#[tokio::test]
async fn health_reports_the_server_and_the_runtime_service_as_serving() {
    let (address, _server) = start_in_process(Duration::from_millis(1)).await;
    let mut health = HealthClient::new(
        crawbl_infra::grpc::channel_without_credential(&address).expect("channel"),
    );
    for service in ["", "crawbl.runtime.v1.AgentRuntime"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
}

#[tokio::test]
async fn the_binary_announces_its_address_on_stdout_answers_and_exits_when_stdin_closes() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawbl-runtime-stub"))
        .env("RUNTIME_STUB_LISTEN", "127.0.0.1:0")
        .env("RUNTIME_STUB_TOKEN_DELAY_MS", "1")
        .env("RUNTIME_STUB_EXIT_WITH_PARENT", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the runtime-stub binary");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .expect("the address line in time")
        .expect("read stdout")
        .expect("a line");
    let address = line
        .strip_prefix(&format!("{LISTENING_PREFIX} "))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(address.starts_with("127.0.0.1:") && !address.ends_with(":0"));

    let mut client = client(&format!("http://{address}")).await;
    let events = events_of(&mut client, turn("scout", "ping")).await;
    assert_eq!(
        concatenated_deltas(&events),
        scripted_reply("scout", "ping")
    );
    assert!(matches!(events.last(), Some(Event::Done(_))));

    drop(child.stdin.take());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the runtime exits once its stdin closes")
        .expect("wait");
    assert!(status.success(), "clean exit, got {status}");
    let rest = stdout.next_line().await.expect("read stdout");
    assert_eq!(rest, None, "nothing but the address line goes to stdout");
}

#[tokio::test]
async fn each_agent_of_a_workspace_answers_with_its_own_persona() {
    let (address, _server) = start_in_process(Duration::from_millis(1)).await;
    let mut client = client(&address).await;

    let assistant = events_of(&mut client, turn("assistant", "what is new?")).await;
    let researcher = events_of(&mut client, turn("researcher", "what is new?")).await;

    assert_eq!(
        concatenated_deltas(&assistant),
        scripted_reply("assistant", "what is new?")
    );
    assert_eq!(
        concatenated_deltas(&researcher),
        scripted_reply("researcher", "what is new?")
    );
    assert_ne!(
        concatenated_deltas(&assistant),
        concatenated_deltas(&researcher)
    );
    assert!(concatenated_deltas(&researcher).starts_with("[researcher] "));
}

#[tokio::test]
async fn a_tool_directive_yields_a_tool_call_then_its_result_then_the_text() {
    let (address, _server) = start_in_process(Duration::from_millis(1)).await;
    let mut client = client(&address).await;
    let text = "/tool weather {\"city\":\"Paris\"}";

    let events = events_of(&mut client, turn("assistant", text)).await;

    let expected = script("assistant", text);
    let [
        Step::ToolCall {
            call_id,
            name,
            arguments_json,
        },
        Step::ToolResult { result_json, .. },
        Step::Text(reply),
    ] = expected.steps.as_slice()
    else {
        panic!("unexpected script");
    };
    assert!(
        matches!(&events[0], Event::ToolCall(call)
            if call.call_id == *call_id && call.name == "weather" && call.name == *name
                && call.arguments_json == *arguments_json
                && call.arguments_json == r#"{"city":"Paris"}"#),
        "{:?}",
        events[0]
    );
    assert!(
        matches!(&events[1], Event::ToolResult(result)
            if result.call_id == *call_id && result.result_json == *result_json),
        "{:?}",
        events[1]
    );
    assert_eq!(concatenated_deltas(&events[2..]), *reply);
    assert!(matches!(events.last(), Some(Event::Done(_))));
}

#[tokio::test]
async fn a_fail_directive_ends_the_turn_with_a_provider_error_after_some_text() {
    let (address, _server) = start_in_process(Duration::from_millis(1)).await;
    let mut client = client(&address).await;

    let events = events_of(&mut client, turn("assistant", "please /fail\n/fail")).await;

    let said = concatenated_deltas(&events);
    assert!(!said.is_empty());
    assert_eq!(said, scripted_reply("assistant", "please /fail\n/fail"));
    assert!(
        matches!(events.last(), Some(Event::Error(error)) if error.code == PROVIDER_ERROR),
        "{:?}",
        events.last()
    );
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, Event::Done(_) | Event::Usage(_)))
    );
}

#[tokio::test]
async fn the_first_token_waits_for_the_configured_latency_or_for_slow() {
    let (address, _server) = start_with(Config {
        token_delay: Duration::from_millis(1),
        first_token_latency: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let mut client = client(&address).await;

    let started = Instant::now();
    let mut stream = client
        .turn(turn("assistant", "hi"))
        .await
        .expect("turn")
        .into_inner();
    stream.message().await.expect("stream ok").expect("event");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // `/slow` replaces the configured latency for its turn, longer or shorter.
    for (pause, at_least, below) in [(600, 600, 10_000), (0, 0, 290)] {
        let started = Instant::now();
        let mut stream = client
            .turn(turn("assistant", &format!("/slow {pause}")))
            .await
            .expect("turn")
            .into_inner();
        stream.message().await.expect("stream ok").expect("event");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(at_least) && elapsed < Duration::from_millis(below),
            "/slow {pause}: first event after {elapsed:?}"
        );
    }
}

#[tokio::test]
async fn tokens_are_paced_by_the_token_delay() {
    let (address, _server) = start_in_process(Duration::from_millis(30)).await;
    let mut client = client(&address).await;

    let started = Instant::now();
    let events = events_of(&mut client, turn("assistant", "one two three four five")).await;
    let deltas = events
        .iter()
        .filter(|event| matches!(event, Event::Delta(_)))
        .count();
    assert_eq!(deltas, 8);
    assert!(started.elapsed() >= Duration::from_millis(30) * 8);
}

/// Spawns the real binary with `env`; returns it and the address it announced.
async fn spawn_binary(env: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawbl-runtime-stub"))
        .env("RUNTIME_STUB_LISTEN", "127.0.0.1:0")
        .env("RUNTIME_STUB_EXIT_WITH_PARENT", "true")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the runtime-stub binary");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .expect("the address line in time")
        .expect("read stdout")
        .expect("a line");
    let address = line
        .strip_prefix(&format!("{LISTENING_PREFIX} "))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, format!("http://{address}"))
}

#[tokio::test]
async fn a_die_directive_makes_the_process_exit_mid_turn_after_a_few_tokens() {
    let (mut child, address) = spawn_binary(&[("RUNTIME_STUB_TOKEN_DELAY_MS", "1")]).await;
    let mut client = client(&address).await;

    let (events, broken) = collect_until_broken(&mut client, turn("assistant", "/die")).await;

    assert!(broken, "the stream fails rather than ending: {events:?}");
    assert!(events.iter().all(|event| matches!(event, Event::Delta(_))));
    assert_eq!(events.len(), DIE_AFTER_TOKENS);
    assert_eq!(
        concatenated_deltas(&events),
        scripted_reply("assistant", "/die")
    );
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the runtime exits")
        .expect("wait");
    assert_eq!(status.code(), Some(DIE_EXIT_CODE));
}

#[tokio::test]
async fn the_binary_refuses_to_start_with_a_contradictory_pace() {
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawbl-runtime-stub"))
        .env("RUNTIME_STUB_TOKEN_DELAY_MS", "5")
        .env("RUNTIME_STUB_TOKENS_PER_SECOND", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .expect("run the binary");
    assert!(!status.success());
}

fn message(
    role: Role,
    text: &str,
    agent_name: &str,
    tool_calls: Vec<ToolExchange>,
) -> ContextMessage {
    ContextMessage {
        role: role.into(),
        text: text.into(),
        agent_id: if role == Role::Agent {
            "agent-1".into()
        } else {
            String::new()
        },
        agent_name: agent_name.into(),
        tool_calls,
        ..ContextMessage::default()
    }
}

#[tokio::test]
async fn context_replies_with_the_history_the_turn_received() {
    let (address, _server) = start_in_process(Duration::from_millis(1)).await;
    let mut client = client(&address).await;
    let history = vec![
        message(Role::User, "hi", "", vec![]),
        message(
            Role::Agent,
            "[assistant] You said: hi",
            "Assistant",
            vec![ToolExchange {
                call_id: "call-1".into(),
                name: "calculator".into(),
                arguments_json: r#"{"expression":"1+1"}"#.into(),
                result_json: r#"{"expression":"1+1","result":2}"#.into(),
            }],
        ),
        message(Role::User, "/context", "", vec![]),
    ];
    let request = TurnRequest {
        history: history.clone(),
        ..turn("assistant", "/context")
    };

    let events = events_of(&mut client, request).await;

    let reply = concatenated_deltas(&events);
    assert_eq!(reply, context_reply("assistant", &history));
    assert_eq!(
        reply,
        "[assistant] Context (3): user: hi | assistant(Assistant) [tool calculator {\"expression\":\"1+1\"} -> {\"expression\":\"1+1\",\"result\":2}]: [assistant] You said: hi | user: /context"
    );
    assert_eq!(reply, format!("[assistant] {}", describe_context(&history)));
    assert!(matches!(events.last(), Some(Event::Done(_))));

    // An older caller sends no history: the text is the one message.
    let events = events_of(&mut client, turn("researcher", "/context")).await;
    assert_eq!(
        concatenated_deltas(&events),
        "[researcher] Context (1): user: /context"
    );
}

#[tokio::test]
async fn a_tool_directive_runs_the_agents_real_tools_and_scripts_the_rest() {
    let mcp = McpTestServer::start().await;
    let (address, _server) = start_in_process(Duration::from_millis(1)).await;
    let mut client = client(&address).await;
    let text = "/tool calculator {\"expression\": \"2^10\"}\n/tool math__shout {\"text\": \"hey\"}\n/tool weather {\"city\": \"Paris\"}\n/tool time";
    let request = TurnRequest {
        agent: Some(AgentConfig {
            tools: vec!["calculator".into()],
            mcp_servers: vec![McpServer {
                name: "math".into(),
                url: mcp.url.clone(),
            }],
            ..AgentConfig::default()
        }),
        ..turn("assistant", text)
    };

    let events = events_of(&mut client, request).await;

    let results: Vec<&str> = events
        .iter()
        .filter_map(|event| match event {
            Event::ToolResult(result) => Some(result.result_json.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 4, "{events:?}");
    let real: Value = serde_json::from_str(results[0]).expect("json");
    assert_eq!(real, json!({"expression": "2^10", "result": 1024}));
    let shouted: Value = serde_json::from_str(results[1]).expect("json");
    assert_eq!(shouted, json!({"text": "HEY"}));
    assert_eq!(mcp.calls("shout"), 1);
    // Not the agent's tools: scripted, exactly as before.
    assert_eq!(
        results[2],
        scripted_tool_result("weather", r#"{"city":"Paris"}"#)
    );
    assert_eq!(results[3], scripted_tool_result("time", "{}"));
    assert_eq!(
        concatenated_deltas(&events),
        scripted_reply("assistant", text)
    );
    assert!(matches!(events.last(), Some(Event::Done(_))));
}
