//! What users see of the agent runtime's lifecycle (issue 5): tool calls, a runtime dying
//! mid-turn, slow provisioning and turn deadlines.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::api::Api;
use crate::support::sio::{self, ServerEvent};
use crate::support::{Options, Stack};

const WAIT: Duration = Duration::from_secs(30);

fn reply_finished(event: &ServerEvent) -> bool {
    event.name == "message.updated" && event.payload()["role"] == "agent"
}

fn with_env(env: Vec<(&'static str, String)>) -> Options {
    Options {
        env,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_reaches_sockets_and_is_stored_with_the_reply() {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = sio::connect(stack.edge(0), &[("x-token", &user.token)], None)
        .await
        .expect("connect")
        .expect_connected();

    let text = "/tool weather {\"city\":\"Paris\"}\nwhat is the weather like?";
    let (status, body) = api.send(&user, &conversation, "t1", text).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let events = socket.events_until(WAIT, reply_finished).await;

    let tools: Vec<&ServerEvent> = events.iter().filter(|e| e.name == "agent.tool").collect();
    assert_eq!(tools.len(), 2, "the call, then its result: {events:#?}");
    let call = tools[0].payload();
    assert_eq!(call["name"], "weather");
    assert_eq!(call["arguments"], json!({"city": "Paris"}));
    assert!(call.get("result").is_none(), "{call:#}");
    let done = tools[1].payload();
    assert_eq!(done["callId"], call["callId"]);
    assert!(done.get("result").is_some(), "{done:#}");

    let reply = events.last().expect("reply").payload();
    assert_eq!(reply["status"], "delivered");
    assert_eq!(reply["toolCalls"][0]["name"], "weather");
    assert_eq!(reply["toolCalls"][0]["result"], done["result"]);

    // Stored with the message.
    let messages = api.all_messages(&user, &conversation, 10).await;
    assert_eq!(messages[0]["toolCalls"], reply["toolCalls"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_dies_mid_turn_leaves_the_reply_incomplete_and_the_agent_comes_back() {
    let stack = Stack::embedded_with(Options {
        token_delay_ms: 50,
        ..Options::default()
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = sio::connect(stack.edge(0), &[("x-token", &user.token)], None)
        .await
        .expect("connect")
        .expect_connected();

    let text = "/die\nplease write a long answer that never gets finished";
    let (status, body) = api.send(&user, &conversation, "d1", text).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let started = tokio::time::Instant::now();
    let events = socket
        .events_until(Duration::from_secs(10), |event| {
            event.name == "agent.typing" && event.payload()["isTyping"] == false
        })
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let reply = events
        .iter()
        .rev()
        .find(|event| reply_finished(event))
        .expect("the reply was ended")
        .payload();
    assert_eq!(reply["status"], "incomplete", "{reply:#}");
    assert!(
        !reply["content"]["text"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );

    // The agent went offline with its runtime and comes back online when it is restarted.
    let agent_id = reply["agentId"].clone();
    let statuses = |events: &[ServerEvent]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.name == "agent.status" && e.payload()["agentId"] == agent_id)
            .map(|e| {
                e.payload()["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let mut seen = statuses(&events);
    let mut received = events.clone();
    if !seen.contains(&"online".to_owned()) || seen.last().map(String::as_str) != Some("online") {
        let more = socket
            .events_until(WAIT, |event| {
                event.name == "agent.status" && event.payload()["status"] == "online"
            })
            .await;
        seen.extend(statuses(&more));
        received.extend(more);
    }
    let offline = seen
        .iter()
        .position(|s| s == "offline")
        .expect("offline announced");
    assert!(seen[offline..].contains(&"online".to_owned()), "{seen:?}");

    // And the next message is answered.
    let (status, body) = api
        .send_waiting(&user, &conversation, "d2", "still there?")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["reply"]["status"], "delivered", "{body}");

    // The socket got every durable event of the log, once and in order, the runtime's death
    // notwithstanding.
    let seq_of = |event: &ServerEvent| {
        event
            .args
            .get(1)
            .and_then(|position| position["seq"].as_u64())
    };
    let last = api
        .all_events(&user, 0)
        .await
        .last()
        .and_then(|event| event["seq"].as_u64())
        .expect("logged events");
    if received.iter().filter_map(seq_of).max() < Some(last) {
        received.extend(
            socket
                .events_until(WAIT, |event| seq_of(event) == Some(last))
                .await,
        );
    }
    let seqs: Vec<u64> = received.iter().filter_map(seq_of).collect();
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "durable events lost or repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_slower_than_the_bound_gives_503_with_retry_after_then_the_send_succeeds() {
    let stack = Stack::embedded_with(with_env(vec![
        ("RUNTIME_WAIT_MS", "1".to_owned()),
        ("RUNTIME_READY_TIMEOUT_MS", "1".to_owned()),
    ]))
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let path = format!(
        "/v1/workspaces/{}/conversations/{conversation}/messages",
        user.workspace_id
    );
    let client = crawbl_loadtest::rest::http_client();
    let send = || {
        client
            .post(format!("{}{path}", stack.edge(0)))
            .header("x-token", &user.token)
            .json(&json!({"localId": "p1", "content": {"type": "text", "text": "hi"}}))
            .send()
    };
    let first = send().await.expect("send");
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(first.headers().contains_key("retry-after"));
    let body: serde_json::Value = first.json().await.expect("json");
    assert_eq!(body["error"]["code"], "RUNTIME_NOT_READY", "{body}");

    // Provisioning went on; a retry soon succeeds.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let retry = send().await.expect("send");
        if retry.status() == StatusCode::CREATED {
            break;
        }
        assert_eq!(retry.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runtime never became ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_past_its_deadline_is_failed() {
    let stack = Stack::embedded_with(with_env(vec![(
        "RUNTIME_TURN_TIMEOUT_MS",
        "500".to_owned(),
    )]))
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let (status, body) = api
        .post(
            &format!(
                "/v1/workspaces/{}/conversations/{conversation}/messages?wait=true",
                user.workspace_id
            ),
            Some(&user.token),
            json!({"localId": "s1", "content": {"type": "text", "text": "/slow 3000\nhello"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["reply"]["status"], "failed", "{body}");
}
