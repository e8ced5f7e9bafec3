//! The OpenAI-compatible provider's streaming and failures, against a local chat-completions
//! server (`support/fake_openai.rs`, 127.0.0.1:0), through a real runtime-stub gRPC server.
//! Tools, history, retries and https have their own file, `agent_turns.rs`.

#[path = "support/fake_openai.rs"]
mod fake_openai;
#[path = "support/runtime.rs"]
mod runtime;

use axum::http::header;
use crawbl_proto::runtime::v1::turn_event::Event;
use crawbl_runtime_stub::{Config, OpenAiConfig, PROVIDER_ERROR, ProviderConfig};
use fake_openai::{FakeOpenAi, Reply, done, finish, sse, text, tool_call, usage};
use runtime::{WAIT, error_of, request, start, text_of, turn_events};
use serde_json::json;
use tokio::net::TcpListener;

fn with_key(base_url: &str, api_key: Option<&str>) -> Config {
    Config {
        provider: ProviderConfig::OpenAi(OpenAiConfig {
            base_url: base_url.to_owned(),
            model: "test-model".to_owned(),
            api_key: api_key.map(str::to_owned),
        }),
        ..runtime::openai(base_url)
    }
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
    let (code, message) = error_of(events);
    assert_eq!(code, PROVIDER_ERROR);
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} in {message:?}");
    }
    assert!(!events.iter().any(|event| matches!(event, Event::Done(_))));
}

#[tokio::test]
async fn deltas_tool_calls_and_usage_stream_from_an_openai_compatible_server() {
    let mut chunks = vec![
        sse(&json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})),
        text("Hel"),
        ": keep-alive comment\n\n".to_owned(),
    ];
    // One event split across two chunks, another two in one chunk.
    let split = text("lo");
    chunks.push(split[..17].to_owned());
    chunks.push(format!("{}{}", &split[17..], text(" world")));
    chunks.extend(tool_call(
        0,
        "call_abc",
        "weather",
        r#"{"city":"Paris"}"#,
        2,
    ));
    chunks.extend([finish("tool_calls"), usage(12, 3), done()]);
    let second = Reply::Stream(vec![text("!"), finish("stop"), usage(20, 1), done()]);
    let fake = FakeOpenAi::start(vec![Reply::Stream(chunks), second]).await;
    let (address, _runtime) = start(with_key(&fake.base_url, Some("sk-test"))).await;

    let events = turn_events(&address, request("researcher", "weather in Paris?")).await;

    assert_eq!(deltas(&events), vec!["Hel", "lo", " world", "!"]);
    // The agent has no tool called weather: the model is told so, and answers again.
    assert!(
        matches!(&events[3..5], [Event::ToolCall(call), Event::ToolResult(result)]
            if call.call_id == "call_abc" && call.name == "weather"
                && call.arguments_json == r#"{"city":"Paris"}"#
                && result.call_id == "call_abc" && result.result_json.contains("unknown tool")),
        "{events:?}"
    );
    assert!(
        matches!(&events[6..], [Event::Usage(usage), Event::Done(_)]
            if usage.input_tokens == 32 && usage.output_tokens == 4),
        "usage is summed over the rounds: {events:?}"
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.headers[header::AUTHORIZATION], "Bearer sk-test");
    assert_eq!(first.body["model"], "test-model");
    assert_eq!(first.body["stream"], true);
    assert_eq!(first.body["stream_options"]["include_usage"], true);
    let messages = first.body["messages"].as_array().expect("messages");
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
    let chunks = vec![text("two words"), finish("stop"), done()];
    let fake = FakeOpenAi::start(vec![Reply::Stream(chunks)]).await;
    let (address, _runtime) = start(with_key(&fake.base_url, None)).await;

    let events = turn_events(&address, request("assistant", "one two three")).await;

    assert!(
        matches!(&events[..], [Event::Delta(_), Event::Usage(usage), Event::Done(_)]
            if usage.input_tokens == 3 && usage.output_tokens == 2),
        "{events:?}"
    );
    let requests = fake.requests();
    assert!(!requests[0].headers.contains_key(header::AUTHORIZATION));
    assert!(requests[0].body.get("tools").is_none());
}

#[tokio::test]
async fn an_error_response_ends_the_turn_with_a_provider_error_carrying_its_message() {
    let body =
        json!({"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}});
    let fake = FakeOpenAi::start(vec![Reply::Status {
        status: 401,
        headers: vec![],
        body: body.to_string(),
    }])
    .await;
    let (address, _runtime) = start(with_key(&fake.base_url, Some("sk-wrong"))).await;

    let events = turn_events(&address, request("assistant", "hi")).await;

    assert_eq!(events.len(), 1, "{events:?}");
    assert_provider_error(&events, &["401", "Incorrect API key provided"]);
    assert_eq!(fake.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn an_error_in_the_middle_of_the_stream_keeps_the_text_so_far_then_fails() {
    let chunks = vec![
        text("partial "),
        sse(&json!({"error":{"message":"the model is overloaded"}})),
    ];
    let fake = FakeOpenAi::start(vec![Reply::Stream(chunks)]).await;
    let (address, _runtime) = start(runtime::openai(&fake.base_url)).await;

    let events = turn_events(&address, request("assistant", "hi")).await;

    assert_eq!(deltas(&events), vec!["partial "]);
    assert_provider_error(&events, &["overloaded"]);
}

#[tokio::test]
async fn a_stream_cut_before_done_is_a_provider_error() {
    let fake = FakeOpenAi::start(vec![Reply::Stream(vec![text("cut ")])]).await;
    let (address, _runtime) = start(runtime::openai(&fake.base_url)).await;

    let events = turn_events(&address, request("assistant", "hi")).await;

    assert_eq!(deltas(&events), vec!["cut "]);
    assert_provider_error(&events, &["[DONE]"]);
    assert_eq!(fake.requests().len(), 1, "text was streamed: no retry");
}

#[tokio::test]
async fn an_unreachable_provider_is_a_provider_error_after_the_retries() {
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let base_url = format!("http://127.0.0.1:{closed_port}/v1");
    let (address, _runtime) = start(runtime::openai(&base_url)).await;

    let events = turn_events(&address, request("assistant", "hi")).await;

    assert_eq!(events.len(), 1, "{events:?}");
    assert_provider_error(
        &events,
        &["cannot reach the provider", "gave up after 3 attempts"],
    );
}

#[tokio::test]
async fn the_binary_selects_the_openai_provider_from_its_environment() {
    let fake = FakeOpenAi::start(vec![Reply::Stream(vec![text("from the model"), done()])]).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawbl-runtime-stub"))
        .env("RUNTIME_STUB_LISTEN", "127.0.0.1:0")
        .env("RUNTIME_PROVIDER", "openai")
        .env("OPENAI_BASE_URL", &fake.base_url)
        .env("OPENAI_MODEL", "env-model")
        .env("OPENAI_API_KEY", "sk-env")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the binary");
    let address = announced_address(&mut child).await;

    let events = turn_events(&format!("http://{address}"), request("assistant", "hi")).await;

    assert_eq!(deltas(&events), vec!["from the model"]);
    assert!(matches!(events.last(), Some(Event::Done(_))));
    let requests = fake.requests();
    assert_eq!(requests[0].body["model"], "env-model");
    assert_eq!(requests[0].headers[header::AUTHORIZATION], "Bearer sk-env");
    assert_eq!(text_of(&events), "from the model");
}

/// The `ip:port` the runtime binary announces on its first line of stdout.
async fn announced_address(child: &mut tokio::process::Child) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .expect("address in time")
        .expect("read")
        .expect("line");
    line.split_whitespace().nth(1).expect("address").to_owned()
}
