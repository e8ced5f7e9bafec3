//! SIGTERM: the stack stops accepting, lets the turn in flight finish (and starts no other: the
//! queued ones wait for the next start), closes sockets so clients reconnect elsewhere, and
//! exits cleanly within its bound.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::api::{Api, User, socket};
use crate::support::sio::SioClient;
use crate::support::{Options, Stack};

/// The longest a stack may take to stop after SIGTERM: the servers' drain bound (20 s) plus the
/// conversation service's grace for turns (10 s), with room to spare on a loaded machine.
const EXIT_BOUND: Duration = Duration::from_secs(40);

/// ~10 tokens at 200 ms: a turn is still streaming when SIGTERM arrives and needs about two
/// seconds more, well inside runtime-proxy's 8 s drain.
fn slow() -> Options {
    Options {
        token_delay_ms: 200,
        ..Options::default()
    }
}

/// An embedded stack answering [`slow`]ly, a user with a conversation, and their socket.
async fn slow_stack() -> (Stack, Api, User, String, SioClient) {
    let stack = Stack::embedded_with(slow()).await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let socket = socket(stack.edge(0), &user).await;
    (stack, api, user, conversation, socket)
}

/// Sends each `(local id, text)` and waits until the first answer streams (a `message.delta`).
async fn ask_until_streaming(
    api: &Api,
    user: &User,
    conversation: &str,
    socket: &mut SioClient,
    questions: &[(&str, &str)],
) {
    for (local_id, text) in questions {
        let (status, body) = api.send(user, conversation, local_id, text).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    socket
        .events_until(Duration::from_secs(30), |event| {
            event.name == "message.delta"
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_turn_lets_it_finish_and_the_stack_exit_cleanly() {
    let (stack, api, user, conversation, mut socket) = slow_stack().await;
    ask_until_streaming(
        &api,
        &user,
        &conversation,
        &mut socket,
        &[("t1", "a question asked just before the stop")],
    )
    .await;

    let started = tokio::time::Instant::now();
    let edge = stack.edge(0).to_owned();
    let (statuses, dir) = stack.terminate(EXIT_BOUND).await;
    let took = started.elapsed();
    assert!(
        statuses.iter().all(std::process::ExitStatus::success),
        "{statuses:?}"
    );
    assert!(took < EXIT_BOUND, "took {took:?}");
    // The socket was closed by the server (the client would reconnect to another node).
    assert!(socket.disconnected_within(Duration::from_secs(1)).await);
    assert!(
        crawbl_loadtest::rest::http_client()
            .get(format!("{edge}/healthz"))
            .send()
            .await
            .is_err(),
        "still listening"
    );

    let stack = Stack::embedded_in(dir, slow()).await;
    let api = Api::new(stack.edge(0));
    let messages = api.all_messages(&user, &conversation, 100).await;
    assert!(
        messages
            .iter()
            .all(|message| message["status"] != "streaming"),
        "{messages:#?}"
    );
    let reply = messages
        .iter()
        .find(|message| message["role"] == "agent")
        .expect("the reply was stored");
    assert_eq!(
        reply["status"], "delivered",
        "the turn finished during the drain: {reply:#}"
    );
    assert_eq!(
        reply["content"]["text"],
        "[assistant] You said: a question asked just before the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_still_queued_at_sigterm_wait_for_the_next_start() {
    // Three questions to one agent run one after another; the first is streaming when SIGTERM
    // arrives. Its turn finishes in the grace; the other two must not start in a stopping stack
    // (they would fail against runtime-proxy stopping too, or outlive the grace): they wait and
    // are answered after the restart.
    let (stack, api, user, conversation, mut socket) = slow_stack().await;
    let asked = [
        ("q0", "the first question"),
        ("q1", "the second question"),
        ("q2", "the third question"),
    ];
    ask_until_streaming(&api, &user, &conversation, &mut socket, &asked).await;
    let questions = asked.map(|(_, question)| question);

    let (statuses, dir) = stack.terminate(EXIT_BOUND).await;
    assert!(
        statuses.iter().all(std::process::ExitStatus::success),
        "{statuses:?}"
    );
    let restarted_at = chrono::Utc::now().timestamp_millis();
    let stack = Stack::embedded_in(dir, slow()).await;
    let api = Api::new(stack.edge(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let replies = loop {
        let messages = api.all_messages(&user, &conversation, 100).await;
        let replies: Vec<Value> = messages
            .into_iter()
            .filter(|message| message["role"] == "agent" && message["status"] != "streaming")
            .collect();
        if replies.len() == questions.len() {
            break replies;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every question was answered after the restart: {replies:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (n, question) in questions.iter().enumerate() {
        let reply = replies
            .iter()
            .find(|reply| reply["content"]["text"] == format!("[assistant] You said: {question}"))
            .unwrap_or_else(|| panic!("no delivered answer to {question:?}: {replies:#?}"));
        assert_eq!(reply["status"], "delivered", "{reply:#}");
        let created = reply["createdAt"].as_str().and_then(|at| {
            chrono::DateTime::parse_from_rfc3339(at)
                .ok()
                .map(|at| at.timestamp_millis())
        });
        let after_restart = created.is_some_and(|at| at >= restarted_at);
        // The first was answered before the stop; the others only by the restarted stack.
        assert_eq!(after_restart, n > 0, "{question:?}: {reply:#}");
    }
}
