//! SIGTERM: the stack stops accepting, lets the turn in flight finish, closes sockets so
//! clients reconnect elsewhere, and exits cleanly within its bound.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::api::Api;
use crate::support::{Options, Stack, sio};

/// The longest a stack may take to stop after SIGTERM: the servers' drain bound (20 s) plus the
/// conversation service's grace for turns (10 s), with room to spare on a loaded machine.
const EXIT_BOUND: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_turn_lets_it_finish_and_the_stack_exit_cleanly() {
    // ~10 tokens at 200 ms: the turn is still streaming when SIGTERM arrives and needs about
    // two seconds more, well inside runtime-proxy's 8 s drain.
    let options = || Options {
        token_delay_ms: 200,
        ..Options::default()
    };
    let stack = Stack::embedded_with(options()).await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = sio::connect(stack.edge(0), &[("x-token", &user.token)], None)
        .await
        .expect("connect")
        .expect_connected();
    let (status, body) = api
        .send(
            &user,
            &conversation,
            "t1",
            "a question asked just before the stop",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    socket
        .events_until(Duration::from_secs(30), |event| {
            event.name == "message.delta"
        })
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

    let stack = Stack::embedded_in(dir, options()).await;
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
