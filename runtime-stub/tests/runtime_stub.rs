//! runtime-stub against real gRPC clients: in-process servers on 127.0.0.1:0 and the real binary.

use std::process::Stdio;
use std::time::Duration;

use crawbl_infra::grpc::Channel;
use crawbl_proto::runtime::v1::agent_runtime_client::AgentRuntimeClient;
use crawbl_proto::runtime::v1::{TurnEvent, TurnRequest, turn_event::Event};
use crawbl_runtime_stub::{Config, LISTENING_PREFIX, ScriptedRuntime, scripted_reply};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
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
    }
}

/// Starts `run` in-process on an OS-chosen port; the guard stops it when dropped.
async fn start_in_process(token_delay: Duration) -> (String, tokio_util::sync::DropGuard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    let config = Config {
        token_delay,
        ..Config::default()
    };
    tokio::spawn(crawbl_runtime_stub::run(config, listener, shutdown.clone()));
    (address, shutdown.drop_guard())
}

async fn client(address: &str) -> AgentRuntimeClient<Channel> {
    let channel = crawbl_infra::grpc::channel(address).expect("channel");
    AgentRuntimeClient::new(channel)
}

/// Every event of a turn, in order.
async fn collect(client: &mut AgentRuntimeClient<Channel>, request: TurnRequest) -> Vec<Event> {
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

    let events = collect(&mut client, turn("helper", "hello there,  friend")).await;

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
    let runtime = ScriptedRuntime::new(Duration::from_millis(50));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    let _server = shutdown.clone().drop_guard();
    tokio::spawn(crawbl_infra::grpc::serve(
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
    let mut health = HealthClient::new(crawbl_infra::grpc::channel(&address).expect("channel"));
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
    let events = collect(&mut client, turn("scout", "ping")).await;
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
