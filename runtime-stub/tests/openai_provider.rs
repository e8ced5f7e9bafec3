//! The OpenAI-compatible provider against a small HTTP server (axum, 127.0.0.1:0) that speaks the
//! chat-completions streaming API, through a real runtime-stub gRPC server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use crawbl_proto::runtime::v1::agent_runtime_client::AgentRuntimeClient;
use crawbl_proto::runtime::v1::{TurnEvent, TurnRequest, turn_event::Event};
use crawbl_runtime_stub::{Config, OpenAiConfig, PROVIDER_ERROR, ProviderConfig};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

/// What the fake provider answers to every request.
#[derive(Clone)]
enum Answer {
    /// 200 with `text/event-stream`, these chunks sent one by one with a short pause between.
    Stream(Vec<String>),
    /// This status with this body.
    Error(StatusCode, String),
}

#[derive(Clone)]
struct FakeProvider {
    answer: Answer,
    /// Every request received: its headers and JSON body.
    requests: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

/// Starts the fake provider; returns its base URL (`http://127.0.0.1:port/v1`).
async fn start_fake_provider(answer: Answer) -> (String, FakeProvider) {
    let fake = FakeProvider {
        answer,
        requests: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(fake.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/v1"), fake)
}

async fn chat_completions(
    State(fake): State<FakeProvider>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    fake.requests
        .lock()
        .expect("requests")
        .push((headers, body));
    match fake.answer {
        Answer::Error(status, body) => Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("response"),
        Answer::Stream(chunks) => {
            let chunks = futures::stream::iter(chunks).then(|chunk| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, std::convert::Infallible>(chunk)
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(chunks))
                .expect("response")
        }
    }
}

fn data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

fn content(text: &str) -> String {
    data(&json!({"choices":[{"index":0,"delta":{"content":text},"finish_reason":null}]}))
}

/// Starts runtime-stub with the OpenAI-compatible provider at `base_url`.
async fn start_runtime(base_url: &str, api_key: Option<&str>) -> (String, DropGuard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let config = Config {
        provider: ProviderConfig::OpenAi(OpenAiConfig {
            base_url: base_url.to_owned(),
            model: "test-model".to_owned(),
            api_key: api_key.map(str::to_owned),
        }),
        ..Config::default()
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(crawbl_runtime_stub::run(config, listener, shutdown.clone()));
    (address, shutdown.drop_guard())
}

async fn turn_events(address: &str, slug: &str, text: &str) -> Vec<Event> {
    let channel = crawbl_infra::grpc::channel_without_credential(address).expect("channel");
    let mut client: AgentRuntimeClient<Channel> = AgentRuntimeClient::new(channel);
    let request = TurnRequest {
        workspace_id: "ws-1".into(),
        conversation_id: "conv-1".into(),
        agent_id: "agent-1".into(),
        agent_slug: slug.into(),
        message_id: "msg-1".into(),
        text: text.into(),
    };
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

fn deltas(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Delta(delta) => Some(delta.text.as_str()),
            _ => None,
        })
        .collect()
}

fn assert_provider_error(events: &[Event], needles: &[&str]) {
    let Some(Event::Error(error)) = events.last() else {
        panic!("expected an error event last, got {events:?}");
    };
    assert_eq!(error.code, PROVIDER_ERROR);
    for needle in needles {
        assert!(error.message.contains(needle), "{needle:?} in {error:?}");
    }
    assert!(!events.iter().any(|event| matches!(event, Event::Done(_))));
}

#[tokio::test]
async fn deltas_tool_calls_and_usage_stream_from_an_openai_compatible_server() {
    let tool_call = |fragment: Value| {
        data(
            &json!({"choices":[{"index":0,"delta":{"tool_calls":[fragment]},"finish_reason":null}]}),
        )
    };
    let mut chunks = vec![
        data(&json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})),
        content("Hel"),
        ": keep-alive comment\n\n".to_owned(),
    ];
    // One event split across two chunks, another two in one chunk.
    let split = content("lo");
    chunks.push(split[..17].to_owned());
    chunks.push(format!("{}{}", &split[17..], content(" world")));
    chunks.extend([
        tool_call(
            json!({"index":0,"id":"call_abc","type":"function","function":{"name":"weather","arguments":""}}),
        ),
        tool_call(json!({"index":0,"function":{"arguments":"{\"city\":"}})),
        tool_call(json!({"index":0,"function":{"arguments":"\"Paris\"}"}})),
        data(&json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})),
        data(&json!({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}})),
        "data: [DONE]\n\n".to_owned(),
    ]);
    let (base_url, fake) = start_fake_provider(Answer::Stream(chunks)).await;
    let (address, _runtime) = start_runtime(&base_url, Some("sk-test")).await;

    let events = turn_events(&address, "researcher", "weather in Paris?").await;

    assert_eq!(deltas(&events), vec!["Hel", "lo", " world"]);
    let tail = &events[3..];
    assert!(
        matches!(tail, [Event::ToolCall(call), Event::Usage(usage), Event::Done(_)]
            if call.call_id == "call_abc" && call.name == "weather"
                && call.arguments_json == r#"{"city":"Paris"}"#
                && usage.input_tokens == 12 && usage.output_tokens == 3),
        "{tail:?}"
    );

    let requests = fake.requests.lock().expect("requests");
    let [(headers, body)] = requests.as_slice() else {
        panic!("expected one request, got {}", requests.len());
    };
    assert_eq!(headers[header::AUTHORIZATION], "Bearer sk-test");
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["role"], "system");
    assert!(
        messages[0]["content"]
            .as_str()
            .is_some_and(|prompt| prompt.contains("Researcher"))
    );
    assert_eq!(
        messages[1],
        json!({"role": "user", "content": "weather in Paris?"})
    );
}

#[tokio::test]
async fn without_usage_from_the_server_words_are_counted_and_no_key_sends_no_authorization() {
    let chunks = vec![
        content("two words"),
        data(&json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})),
        "data: [DONE]\n\n".to_owned(),
    ];
    let (base_url, fake) = start_fake_provider(Answer::Stream(chunks)).await;
    let (address, _runtime) = start_runtime(&base_url, None).await;

    let events = turn_events(&address, "assistant", "one two three").await;

    assert!(
        matches!(&events[..], [Event::Delta(_), Event::Usage(usage), Event::Done(_)]
            if usage.input_tokens == 3 && usage.output_tokens == 2),
        "{events:?}"
    );
    let requests = fake.requests.lock().expect("requests");
    assert!(!requests[0].0.contains_key(header::AUTHORIZATION));
}

#[tokio::test]
async fn an_error_response_ends_the_turn_with_a_provider_error_carrying_its_message() {
    let body =
        json!({"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}});
    let (base_url, _fake) =
        start_fake_provider(Answer::Error(StatusCode::UNAUTHORIZED, body.to_string())).await;
    let (address, _runtime) = start_runtime(&base_url, Some("sk-wrong")).await;

    let events = turn_events(&address, "assistant", "hi").await;

    assert_eq!(events.len(), 1, "{events:?}");
    assert_provider_error(&events, &["401", "Incorrect API key provided"]);
}

#[tokio::test]
async fn an_error_in_the_middle_of_the_stream_keeps_the_text_so_far_then_fails() {
    let chunks = vec![
        content("partial "),
        data(&json!({"error":{"message":"the model is overloaded"}})),
    ];
    let (base_url, _fake) = start_fake_provider(Answer::Stream(chunks)).await;
    let (address, _runtime) = start_runtime(&base_url, None).await;

    let events = turn_events(&address, "assistant", "hi").await;

    assert_eq!(deltas(&events), vec!["partial "]);
    assert_provider_error(&events, &["overloaded"]);
}

#[tokio::test]
async fn a_stream_cut_before_done_is_a_provider_error() {
    let (base_url, _fake) = start_fake_provider(Answer::Stream(vec![content("cut ")])).await;
    let (address, _runtime) = start_runtime(&base_url, None).await;

    let events = turn_events(&address, "assistant", "hi").await;

    assert_eq!(deltas(&events), vec!["cut "]);
    assert_provider_error(&events, &["[DONE]"]);
}

#[tokio::test]
async fn an_unreachable_provider_is_a_provider_error() {
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let (address, _runtime) =
        start_runtime(&format!("http://127.0.0.1:{closed_port}/v1"), None).await;

    let events = turn_events(&address, "assistant", "hi").await;

    assert_provider_error(&events, &["cannot reach the provider"]);
}

#[tokio::test]
async fn the_binary_selects_the_openai_provider_from_its_environment() {
    let chunks = vec![content("from the model"), "data: [DONE]\n\n".to_owned()];
    let (base_url, fake) = start_fake_provider(Answer::Stream(chunks)).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawbl-runtime-stub"))
        .env("RUNTIME_STUB_LISTEN", "127.0.0.1:0")
        .env("RUNTIME_PROVIDER", "openai")
        .env("OPENAI_BASE_URL", &base_url)
        .env("OPENAI_MODEL", "env-model")
        .env("OPENAI_API_KEY", "sk-env")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the binary");
    use tokio::io::AsyncBufReadExt;
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .expect("address in time")
        .expect("read")
        .expect("line");
    let address = line.split_whitespace().nth(1).expect("address");

    let events = turn_events(&format!("http://{address}"), "assistant", "hi").await;

    assert_eq!(deltas(&events), vec!["from the model"]);
    assert!(matches!(events.last(), Some(Event::Done(_))));
    let requests = fake.requests.lock().expect("requests");
    assert_eq!(requests[0].1["model"], "env-model");
    assert_eq!(requests[0].0[header::AUTHORIZATION], "Bearer sk-env");
}
