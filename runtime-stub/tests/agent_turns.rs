//! Agents that remember and act, with the OpenAI-compatible provider: the history a turn carries,
//! the tool loop and its bound, built-in and MCP tools, retries, and https with a private CA.
//!
//! What stands in for what: a local chat-completions server speaking the real streaming protocol
//! stands in for the model (`support/fake_openai.rs`), an rmcp streamable-HTTP server for an
//! agent's MCP server (`support/mcp_server.rs`), and a throwaway CA made with rcgen for a private
//! CA. Everything else is real: the runtime's gRPC service, its HTTP client, rustls, rmcp's client.

#[path = "support/fake_openai.rs"]
mod fake_openai;
#[path = "support/mcp_server.rs"]
mod mcp_server;
#[path = "support/runtime.rs"]
mod runtime;

use std::time::Duration;

use crawbl_proto::runtime::v1::turn_event::Event;
use crawbl_proto::runtime::v1::{AgentConfig, McpServer, ToolExchange};
use crawbl_runtime_stub::{Config, PROVIDER_ERROR, TOOL_ROUNDS_EXCEEDED};
use fake_openai::{FakeOpenAi, Reply, TestCa, answer, calls, done, finish, text, tool_call, usage};
use mcp_server::McpTestServer;
use runtime::{
    agent_message, error_of, openai, request, request_with, start, text_of, turn_events, user,
};
use serde_json::{Value, json};

fn calculator_agent() -> AgentConfig {
    AgentConfig {
        name: "Assistant".into(),
        tools: vec!["calculator".into()],
        ..AgentConfig::default()
    }
}

fn tool_events(events: &[Event]) -> Vec<(String, String, String)> {
    let mut exchanges = Vec::new();
    for event in events {
        match event {
            Event::ToolCall(call) => exchanges.push((
                call.name.clone(),
                call.arguments_json.clone(),
                String::new(),
            )),
            Event::ToolResult(result) => {
                if let Some(last) = exchanges.last_mut() {
                    last.2 = result.result_json.clone();
                }
            }
            _ => {}
        }
    }
    exchanges
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

fn messages_of(body: &Value) -> Vec<Value> {
    body["messages"].as_array().cloned().expect("messages")
}

fn tool_names(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|tool| tool["function"]["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_request_holds_the_history_with_earlier_tool_calls_in_chat_completions_shape() {
    let fake = FakeOpenAi::start(vec![answer(&["12."])]).await;
    let (address, _runtime) = start(openai(&fake.base_url)).await;
    let agent = AgentConfig {
        system_prompt: "You are terse.".into(),
        model: "agent-model".into(),
        temperature: Some(0.2),
        ..calculator_agent()
    };
    let history = vec![
        user("what is 2+2?"),
        agent_message(
            "agent-1",
            "Assistant",
            "It is 4.",
            vec![ToolExchange {
                call_id: "call_1".into(),
                name: "calculator".into(),
                arguments_json: r#"{"expression":"2+2"}"#.into(),
                result_json: r#"{"expression":"2+2","result":4}"#.into(),
            }],
        ),
        agent_message("agent-2", "Researcher", "I checked: 4.", vec![]),
    ];

    let events = turn_events(&address, request_with(agent, history, "and times 3?")).await;

    assert_eq!(text_of(&events), "12.");
    let requests = fake.requests();
    let body = &requests[0].body;
    assert_eq!(body["model"], "agent-model");
    assert_eq!(body["temperature"], json!(0.2));
    assert_eq!(tool_names(body), vec!["calculator"]);
    assert_eq!(
        messages_of(body),
        vec![
            json!({"role": "system", "content": "You are terse."}),
            json!({"role": "user", "content": "what is 2+2?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "calculator", "arguments": "{\"expression\":\"2+2\"}"}
            }]}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "{\"expression\":\"2+2\",\"result\":4}"}),
            json!({"role": "assistant", "content": "It is 4."}),
            json!({"role": "assistant", "content": "[Researcher] I checked: 4."}),
            json!({"role": "user", "content": "and times 3?"}),
        ]
    );
}

#[tokio::test]
async fn a_calculator_call_is_run_and_its_result_sent_back_before_the_final_answer() {
    let fake = FakeOpenAi::start(vec![
        calls(&[("call_1", "calculator", r#"{"expression":"6*7"}"#)]),
        answer(&["The answer", " is 42."]),
    ])
    .await;
    let (address, _runtime) = start(openai(&fake.base_url)).await;

    let events = turn_events(
        &address,
        request_with(calculator_agent(), vec![], "what is 6*7?"),
    )
    .await;

    assert!(
        matches!(&events[..2], [Event::ToolCall(call), Event::ToolResult(result)]
            if call.call_id == "call_1" && call.name == "calculator"
                && call.arguments_json == r#"{"expression":"6*7"}"#
                && result.call_id == "call_1"
                && json_of(&result.result_json) == json!({"expression": "6*7", "result": 42})),
        "{events:?}"
    );
    assert_eq!(text_of(&events), "The answer is 42.");
    assert!(
        matches!(&events[events.len() - 2..], [Event::Usage(usage), Event::Done(_)]
            if usage.input_tokens == 30 && usage.output_tokens == 12),
        "one usage summed over both rounds: {events:?}"
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let second = messages_of(&requests[1].body);
    let tail = &second[second.len() - 2..];
    assert_eq!(tail[0]["role"], "assistant");
    assert_eq!(tail[0]["tool_calls"][0]["id"], "call_1");
    assert_eq!(tail[0]["tool_calls"][0]["function"]["name"], "calculator");
    assert_eq!(
        tail[0]["tool_calls"][0]["function"]["arguments"],
        r#"{"expression":"6*7"}"#
    );
    assert_eq!(tail[1]["role"], "tool");
    assert_eq!(tail[1]["tool_call_id"], "call_1");
    assert_eq!(
        json_of(tail[1]["content"].as_str().expect("content")),
        json!({"expression": "6*7", "result": 42})
    );
}

#[tokio::test]
async fn a_model_that_always_calls_tools_stops_at_the_round_bound() {
    let mut chunks = vec![text("Checking. ")];
    chunks.extend(tool_call(0, "", "calculator", r#"{"expression":"1+1"}"#, 2));
    chunks.extend([finish("tool_calls"), usage(5, 1), done()]);
    let fake = FakeOpenAi::start(vec![Reply::Stream(chunks)]).await;
    let (address, _runtime) = start(Config {
        max_tool_rounds: 2,
        ..openai(&fake.base_url)
    })
    .await;

    let events = turn_events(&address, request_with(calculator_agent(), vec![], "loop")).await;

    assert_eq!(
        fake.requests().len(),
        3,
        "two rounds of tools, then the bound"
    );
    assert_eq!(tool_events(&events).len(), 2);
    assert_eq!(text_of(&events), "Checking. ".repeat(3));
    let (code, message) = error_of(&events);
    assert_eq!(code, TOOL_ROUNDS_EXCEEDED);
    assert!(message.contains("2 rounds"), "{message}");
    assert!(
        matches!(&events[events.len() - 2], Event::Usage(usage) if usage.input_tokens == 15),
        "{events:?}"
    );
    // Ids the model left out are made up, unique per call.
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|event| match event {
            Event::ToolCall(call) => Some(call.call_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec!["call-1-0", "call-2-0"]);
}

#[tokio::test]
async fn a_provider_failing_mid_stream_keeps_the_streamed_text_and_ends_with_provider_error() {
    let fake = FakeOpenAi::start(vec![Reply::Cut(vec![text("partial "), text("answer ")])]).await;
    let (address, _runtime) = start(openai(&fake.base_url)).await;

    let events = turn_events(&address, request("assistant", "hi")).await;

    assert_eq!(text_of(&events), "partial answer ");
    let (code, message) = error_of(&events);
    assert_eq!(code, PROVIDER_ERROR);
    assert!(message.contains("stream broke"), "{message}");
    assert_eq!(fake.requests().len(), 1, "text was streamed: not retried");
}

#[tokio::test]
async fn a_429_and_a_stream_cut_before_any_text_are_retried_then_the_turn_succeeds() {
    let fake = FakeOpenAi::start(vec![
        Reply::Status {
            status: 429,
            headers: vec![("retry-after", "0".to_owned())],
            body: json!({"error": {"message": "slow down"}}).to_string(),
        },
        Reply::Cut(vec![]),
        answer(&["third", " time lucky"]),
    ])
    .await;
    let (address, _runtime) = start(openai(&fake.base_url)).await;

    let events = turn_events(&address, request("assistant", "hi")).await;

    assert_eq!(text_of(&events), "third time lucky");
    assert!(matches!(events.last(), Some(Event::Done(_))), "{events:?}");
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn retries_are_bounded_and_other_client_errors_are_not_retried() {
    let unavailable = Reply::Status {
        status: 503,
        headers: vec![],
        body: "upstream unavailable".to_owned(),
    };
    let fake = FakeOpenAi::start(vec![unavailable]).await;
    let (address, _runtime) = start(Config {
        provider_retries: 1,
        ..openai(&fake.base_url)
    })
    .await;
    let events = turn_events(&address, request("assistant", "hi")).await;
    let (code, message) = error_of(&events);
    assert_eq!(code, PROVIDER_ERROR);
    assert!(
        message.contains("503") && message.contains("gave up after 2 attempts"),
        "{message}"
    );
    assert_eq!(fake.requests().len(), 2);

    let bad_request = Reply::Status {
        status: 400,
        headers: vec![],
        body: json!({"error": {"message": "unknown model"}}).to_string(),
    };
    let fake = FakeOpenAi::start(vec![bad_request]).await;
    let (address, _runtime) = start(openai(&fake.base_url)).await;
    let events = turn_events(&address, request("assistant", "hi")).await;
    assert!(error_of(&events).1.contains("unknown model"));
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn https_with_the_test_ca_works_and_without_it_is_refused_with_a_clear_provider_error() {
    let ca = TestCa::new();
    let fake = FakeOpenAi::start_tls(vec![answer(&["over", " tls"])], &ca).await;
    assert!(fake.base_url.starts_with("https://"));

    let (trusting, _trusting) = start(Config {
        extra_root_certificates: vec![ca.der.clone()],
        ..openai(&fake.base_url)
    })
    .await;
    let events = turn_events(&trusting, request("assistant", "hi")).await;
    assert_eq!(text_of(&events), "over tls");
    assert!(matches!(events.last(), Some(Event::Done(_))), "{events:?}");

    let (refusing, _refusing) = start(Config {
        provider_retries: 0,
        ..openai(&fake.base_url)
    })
    .await;
    let events = turn_events(&refusing, request("assistant", "hi")).await;
    let (code, message) = error_of(&events);
    assert_eq!(code, PROVIDER_ERROR);
    assert!(
        message.contains("cannot reach the provider") && message.contains("certificate"),
        "{message}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "the untrusting runtime never got through"
    );
}

#[tokio::test]
async fn the_binary_trusts_the_ca_named_by_ssl_cert_file() {
    let ca = TestCa::new();
    let fake = FakeOpenAi::start_tls(vec![answer(&["trusted"])], &ca).await;
    let dir = std::env::temp_dir().join(format!("crawbl-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write the CA");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawbl-runtime-stub"))
        .env("RUNTIME_STUB_LISTEN", "127.0.0.1:0")
        .env("RUNTIME_PROVIDER", "openai")
        .env("OPENAI_BASE_URL", &fake.base_url)
        .env("OPENAI_MODEL", "m")
        .env("SSL_CERT_FILE", &ca_file)
        .env_remove("SSL_CERT_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the binary");
    use tokio::io::AsyncBufReadExt;
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(runtime::WAIT, stdout.next_line())
        .await
        .expect("address in time")
        .expect("read")
        .expect("line");
    let address = line.split_whitespace().nth(1).expect("address");

    let events = turn_events(&format!("http://{address}"), request("assistant", "hi")).await;

    assert_eq!(text_of(&events), "trusted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_model_calls_a_tool_of_the_agents_mcp_server_and_a_down_server_costs_only_its_tools() {
    let mcp = McpTestServer::start().await;
    let closed_port = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let fake = FakeOpenAi::start(vec![
        calls(&[("c1", "math__add", r#"{"a":2,"b":3}"#)]),
        answer(&["Five."]),
    ])
    .await;
    let (address, _runtime) = start(openai(&fake.base_url)).await;
    let agent = AgentConfig {
        tools: vec!["time".into()],
        mcp_servers: vec![
            McpServer {
                name: "math".into(),
                url: mcp.url.clone(),
            },
            McpServer {
                name: "gone".into(),
                url: format!("http://127.0.0.1:{closed_port}/mcp"),
            },
        ],
        ..AgentConfig::default()
    };

    let events = turn_events(&address, request_with(agent, vec![], "2+3?")).await;

    assert_eq!(text_of(&events), "Five.");
    let exchanges = tool_events(&events);
    assert_eq!(exchanges.len(), 1, "{events:?}");
    assert_eq!(exchanges[0].0, "math__add");
    assert_eq!(json_of(&exchanges[0].2), json!({"sum": 5.0}));
    assert_eq!(mcp.calls("add"), 1);
    let requests = fake.requests();
    assert_eq!(
        tool_names(&requests[0].body),
        vec![
            "time",
            "math__add",
            "math__shout",
            "math__broken",
            "math__slow"
        ]
    );
    let tool_message = messages_of(&requests[1].body)
        .into_iter()
        .find(|message| message["role"] == "tool")
        .expect("a tool message");
    assert_eq!(
        json_of(tool_message["content"].as_str().expect("text")),
        json!({"sum": 5.0})
    );
}

#[tokio::test]
async fn mcp_tool_errors_and_timeouts_become_error_results_and_the_turn_goes_on() {
    let mcp = McpTestServer::start().await;
    let fake = FakeOpenAi::start(vec![
        calls(&[
            ("c1", "math__broken", "{}"),
            ("c2", "math__slow", "{}"),
            ("c3", "math__shout", r#"{"text":"quiet"}"#),
        ]),
        answer(&["Done."]),
    ])
    .await;
    let (address, _runtime) = start(Config {
        tool_timeout: Duration::from_millis(500),
        ..openai(&fake.base_url)
    })
    .await;
    let agent = AgentConfig {
        mcp_servers: vec![McpServer {
            name: "math".into(),
            url: mcp.url.clone(),
        }],
        ..AgentConfig::default()
    };

    let events = turn_events(&address, request_with(agent, vec![], "go")).await;

    let exchanges = tool_events(&events);
    assert_eq!(
        json_of(&exchanges[0].2),
        json!({"error": "the disk is on fire"})
    );
    let timeout = json_of(&exchanges[1].2);
    assert!(
        timeout["error"]
            .as_str()
            .is_some_and(|error| error.contains("did not answer within 500 ms")),
        "{timeout}"
    );
    assert_eq!(json_of(&exchanges[2].2), json!({"text": "QUIET"}));
    assert_eq!(text_of(&events), "Done.");
    assert!(matches!(events.last(), Some(Event::Done(_))));
}

#[tokio::test]
async fn bad_tool_arguments_and_unknown_tools_become_error_results_and_the_turn_goes_on() {
    let fake = FakeOpenAi::start(vec![
        calls(&[
            ("c1", "calculator", "{not json"),
            ("c2", "calculator", "[1]"),
            ("c3", "calculator", r#"{"expression":"1/0"}"#),
            ("c4", "web_search", "{}"),
        ]),
        answer(&["Sorry."]),
    ])
    .await;
    let (address, _runtime) = start(openai(&fake.base_url)).await;

    let events = turn_events(
        &address,
        request_with(calculator_agent(), vec![], "break it"),
    )
    .await;

    let errors: Vec<String> = tool_events(&events)
        .iter()
        .map(|(_, _, result)| {
            json_of(result)["error"]
                .as_str()
                .expect("an error result")
                .to_owned()
        })
        .collect();
    assert_eq!(errors.len(), 4, "{events:?}");
    assert!(errors[0].contains("not valid JSON"), "{}", errors[0]);
    assert!(errors[1].contains("must be a JSON object"), "{}", errors[1]);
    assert!(errors[2].contains("division by zero"), "{}", errors[2]);
    assert!(
        errors[3].contains("unknown tool \"web_search\""),
        "{}",
        errors[3]
    );
    assert_eq!(text_of(&events), "Sorry.");
    assert!(matches!(events.last(), Some(Event::Done(_))));
    // The model saw every error.
    let tool_messages = messages_of(&fake.requests()[1].body)
        .into_iter()
        .filter(|message| message["role"] == "tool")
        .count();
    assert_eq!(tool_messages, 4);
}
