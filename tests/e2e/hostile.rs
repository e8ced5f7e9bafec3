//! Input from outside that tries to break the edge. Here: property-based tests of every REST
//! route generated from the edge's own OpenAPI document by schemathesis, with the fixed seed
//! and bounds of `tests/schemathesis/schemathesis.toml` and below: no 5xx, every response
//! within its documented schema, status and headers, schema-valid input accepted and invalid
//! input refused.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::api::Api;
use crate::support::{Stack, external_tool, resident_kib, sio};

/// Cases per operation and phase; `SCHEMATHESIS_MAX_EXAMPLES` for a longer run.
const MAX_EXAMPLES: &str = "20";
const SEED: &str = "1";
const RUN_BOUND: Duration = Duration::from_secs(300);
/// The edge's `CONNECT_TIMEOUT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_route_holds_its_openapi_contract_under_generated_input() {
    // scripts/test.sh installs schemathesis and requires it.
    let Some(schemathesis) = external_tool(
        "SCHEMATHESIS",
        "schemathesis",
        "CRAWBL_REQUIRE_SCHEMATHESIS",
        "pip install schemathesis",
    ) else {
        return;
    };
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    // An API key, not a session: the runner calls logout too, which would end a session, and
    // `DELETE /v1/users/me`, which would delete the account (an API key gets 403
    // SESSION_REQUIRED there, so the user and the rest of the run survive).
    let (status, key) = api
        .post(
            "/v1/api-keys",
            Some(&user.token),
            json!({"name": "schemathesis"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let key = key["data"]["key"].as_str().expect("the key").to_owned();
    let conversation = api.create_conversation(&user).await;

    let config_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let examples =
        std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.to_owned());
    let run = tokio::process::Command::new(&schemathesis)
        .current_dir(&config_dir)
        .args(["--config-file", "schemathesis.toml", "run"])
        .arg(format!("{}/v1/openapi.json", api.base))
        .args(["--header", &format!("X-Token: {key}")])
        .args(["--max-examples", &examples, "--seed", SEED])
        .args(["--phases", "examples,coverage,fuzzing", "--no-color"])
        .env("CRAWBL_WORKSPACE_ID", &user.workspace_id)
        .env("CRAWBL_CONVERSATION_ID", &conversation)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_BOUND, run)
        .await
        .expect("schemathesis finished within its bound")
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let summary = report
        .lines()
        .find(|line| line.contains(" generated, "))
        .unwrap_or("no summary line");
    eprintln!("schemathesis: {}", summary.trim());
    assert!(
        output.status.success(),
        "schemathesis found failures (logs in {}):\n{report}\n{}",
        stack.dir().display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, _) = api.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "the edge is still up");
}

/// A raw websocket connected to `/v1` as `user`, to send what no client library would.
async fn raw_socket(edge: &str, token: &str) -> Box<sio::WebSocket> {
    match sio::handshake(None, edge, &[("x-token", token)], None)
        .await
        .expect("handshake")
    {
        sio::Handshake::Connected(socket) => socket,
        sio::Handshake::Refused(message) => panic!("refused: {message}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_socket_traffic_leaves_the_edge_up_its_memory_bounded_and_other_clients_served() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message as Frame;

    let stack = Stack::embedded().await;
    let edge = stack.edge(0);
    let api = Api::new(edge);
    let (victim, attacker) = (api.sign_up().await, api.sign_up().await);
    let conversation = api.create_conversation(&victim).await;
    let mut watcher = sio::connect(edge, &[("x-token", &victim.token)], None)
        .await
        .expect("connect")
        .expect_connected();
    // Warm up what a first turn allocates once (the runtime, caches), then measure.
    api.send_and_wait(&victim, &conversation, "warm-up", "hi")
        .await;
    let pid = stack.pid("crawbl");
    let before = resident_kib(pid);

    // Binary attachments where none are expected: a placeholder with its attachment, one
    // without, attachments with no packet announcing them, and a huge binary frame.
    let announced = r#"451-/v1,["workspace.subscribe",{"_placeholder":true,"num":0}]"#;
    let mut binary = raw_socket(edge, &attacker.token).await;
    let _ = binary.send(Frame::text(announced)).await;
    let _ = binary.send(Frame::binary(vec![7u8; 1024])).await;
    let _ = binary
        .send(Frame::text(
            r#"452-/v1,["x",{"_placeholder":true,"num":1}]"#,
        ))
        .await;
    for _ in 0..100 {
        let _ = binary.send(Frame::binary(vec![0u8; 512])).await;
    }
    let _ = binary.send(Frame::binary(vec![1u8; 1 << 20])).await;
    let _ = binary.as_mut().close(None).await;

    // A flood of events with acks on sockets that never read their answers.
    let subscribe = format!(
        r#"["workspace.subscribe",{{"workspaceIds":["{}"]}}]"#,
        attacker.workspace_id
    );
    let floods = (0..4).map(|_| async {
        let mut flood = raw_socket(edge, &attacker.token).await;
        for ack in 0..5_000 {
            if flood
                .feed(Frame::text(format!("42/v1,{ack}{subscribe}")))
                .await
                .is_err()
            {
                break; // Closed by the edge: also fine.
            }
        }
        let _ = flood.flush().await;
        flood
    });
    let floods = futures::future::join_all(floods).await;

    // Thousands of handshakes with bad tokens, 50 at a time, in two rounds: what a refused
    // connection holds is let go once the edge's connect timeout (10 s) has passed, so the
    // second round reuses the first's memory instead of adding to it.
    let mut after_round = Vec::new();
    for _ in 0..2 {
        let refused = futures::stream::iter(0..2_000)
            .map(|attempt| async move {
                let token = format!("eyJhbGciOiJFZERTQSJ9.{attempt}.forged");
                sio::connect(edge, &[("x-token", &token)], Some(json!({"token": token})))
                    .await
                    .map(|outcome| outcome.expect_refused())
            })
            .buffer_unordered(50)
            .filter(|outcome| std::future::ready(outcome.is_ok()))
            .count()
            .await;
        assert_eq!(refused, 2_000, "every bad handshake got a connect_error");
        tokio::time::sleep(CONNECT_TIMEOUT + Duration::from_secs(1)).await;
        after_round.push(resident_kib(pid));
    }
    eprintln!("after the bad handshakes: {after_round:?} KiB");
    let second_round_mib = after_round[1].saturating_sub(after_round[0]) / 1024;
    assert!(
        second_round_mib < 16,
        "2,000 more bad handshakes kept {second_round_mib} MiB"
    );

    // Other clients are served: a whole turn reaches the victim's socket, in order.
    api.send_and_wait(&victim, &conversation, "after", "still there?")
        .await;
    let events = watcher
        .events_until(Duration::from_secs(20), |event| {
            event.name == "message.updated" && event.payload()["status"] == "delivered"
        })
        .await;
    assert!(
        events.iter().any(|event| event.name == "message.new"),
        "{events:?}"
    );
    let (status, _) = api.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);

    // Memory is bounded: what the attack left behind, with its sockets still open.
    let after = resident_kib(pid);
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("edge RSS {before} KiB before, {after} KiB after the attack");
    assert!(grown_mib < 96, "the edge grew by {grown_mib} MiB");
    drop(floods);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_gets_nothing_of_another_workspace_by_replay_subscription_or_event_log() {
    let stack = Stack::embedded().await;
    let edge = stack.edge(0);
    let api = Api::new(edge);
    let (owner, stranger) = (api.sign_up().await, api.sign_up().await);
    let conversation = api.create_conversation(&owner).await;
    api.send_and_wait(&owner, &conversation, "before", "secret")
        .await;
    let theirs = owner.workspace_id.as_str();
    let token = [("x-token", stranger.token.as_str())];

    // Replay in the handshake, with and without naming the workspace to join.
    for auth in [
        json!({"since": {theirs: 0}}),
        json!({"workspaceId": theirs, "since": {theirs: 0}}),
        json!({"workspaceId": theirs}),
    ] {
        let refused = sio::connect(edge, &token, Some(auth.clone()))
            .await
            .expect("the edge answers")
            .expect_refused();
        assert!(refused.contains("workspace not found"), "{auth}: {refused}");
    }

    // Subscribing afterwards, with and without a replay position.
    let mut socket = sio::connect(edge, &token, None)
        .await
        .expect("connect")
        .expect_connected();
    for request in [
        json!({"workspaceIds": [theirs]}),
        json!({"workspaceIds": [theirs], "since": {theirs: 0}}),
        json!({"workspaceIds": [stranger.workspace_id, theirs]}),
    ] {
        let answer = socket
            .emit_with_ack(
                "workspace.subscribe",
                std::slice::from_ref(&request),
                Duration::from_secs(10),
            )
            .await
            .expect("an ack");
        assert_eq!(answer[0]["ok"], false, "{request}: {answer:?}");
        assert_eq!(
            answer[0]["error"]["code"], "WORKSPACE_NOT_FOUND",
            "{request}: {answer:?}"
        );
    }

    // The log over REST, from the start and from any position.
    for after in [0, 1, 3] {
        let (status, body) = api
            .get(
                &format!("/v1/workspaces/{theirs}/events?after={after}"),
                Some(&stranger.token),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(!body.to_string().contains("secret"), "{body}");
    }

    // And nothing of a new turn reaches the stranger's socket.
    api.send_and_wait(&owner, &conversation, "after", "more secrets")
        .await;
    if let Some(event) = socket.next_event(Duration::from_secs(2)).await {
        panic!("a non-member's socket received {event:?}");
    }
}
