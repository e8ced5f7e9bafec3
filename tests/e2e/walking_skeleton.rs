//! One message through every component: REST → edge → conversation → runtime-proxy →
//! runtime-stub and back as events to every socket of the workspace.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::Stack;
use crate::support::api::{Api, User};
use crate::support::sio::{self, ServerEvent, SioClient};

const TURN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a socket must stay quiet to show that nothing more (no duplicate, no leak) arrives.
const QUIET: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_crosses_separate_service_processes_on_postgres_and_redis_to_sockets_on_two_edges()
 {
    let stack = Stack::separate_processes(2).await;
    full_turn_reaches_every_socket_of_the_workspace_and_no_other(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_crosses_the_embedded_all_in_one_stack() {
    let stack = Stack::embedded().await;
    full_turn_reaches_every_socket_of_the_workspace_and_no_other(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_without_a_valid_token_get_connect_error() {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let stranger = api.sign_up().await;

    let no_token = sio::connect(stack.edge(0), &[], None)
        .await
        .expect("connect");
    assert!(no_token.expect_refused().contains("missing credentials"));

    let wrong = sio::connect(stack.edge(0), &[("x-token", "cat_not-a-real-token")], None)
        .await
        .expect("connect");
    assert!(wrong.expect_refused().contains("invalid"));

    let wrong_bearer = sio::connect(stack.edge(0), &[("authorization", "Bearer nope")], None)
        .await
        .expect("connect");
    assert!(wrong_bearer.expect_refused().contains("invalid"));

    let other_workspace = sio::connect(
        stack.edge(0),
        &[("x-token", &user.token)],
        Some(json!({"workspaceId": stranger.workspace_id})),
    )
    .await
    .expect("connect");
    assert!(
        other_workspace
            .expect_refused()
            .contains("workspace not found")
    );

    // Browsers cannot set headers: the token may come in the auth payload instead.
    sio::connect(stack.edge(0), &[], Some(json!({"token": user.token})))
        .await
        .expect("connect")
        .expect_connected();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_errors_carry_stable_codes_and_the_right_status() {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let stranger = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let messages = format!(
        "/v1/workspaces/{}/conversations/{conversation}/messages",
        user.workspace_id
    );

    let cases: Vec<(&str, StatusCode, &str)> = vec![
        ("no token", StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        ("bad json", StatusCode::BAD_REQUEST, "INVALID_JSON"),
        ("empty text", StatusCode::BAD_REQUEST, "EMPTY_MESSAGE"),
        ("too long", StatusCode::BAD_REQUEST, "MESSAGE_TOO_LONG"),
        (
            "unknown type",
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNSUPPORTED_CONTENT_TYPE",
        ),
        (
            "body over 1 MiB",
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
        ),
        ("not a member", StatusCode::NOT_FOUND, "WORKSPACE_NOT_FOUND"),
        (
            "unknown conversation",
            StatusCode::NOT_FOUND,
            "CONVERSATION_NOT_FOUND",
        ),
    ];
    for (case, expected_status, expected_code) in cases {
        let text = |text: &str| json!({"localId": "l1", "content": {"type": "text", "text": text}});
        let (status, body) = match case {
            "no token" => api.post(&messages, None, text("hi")).await,
            "bad json" => {
                api.post_raw(&messages, Some(&user.token), "{nope".into())
                    .await
            }
            "empty text" => api.post(&messages, Some(&user.token), text("   ")).await,
            "too long" => {
                api.post(
                    &messages,
                    Some(&user.token),
                    text(&"a".repeat(32 * 1024 + 1)),
                )
                .await
            }
            "unknown type" => {
                let body = json!({"localId": "l1", "content": {"type": "image", "text": "x"}});
                api.post(&messages, Some(&user.token), body).await
            }
            "body over 1 MiB" => {
                api.post(
                    &messages,
                    Some(&user.token),
                    text(&"a".repeat(1024 * 1024 + 1)),
                )
                .await
            }
            "not a member" => api.post(&messages, Some(&stranger.token), text("hi")).await,
            "unknown conversation" => {
                let path = format!(
                    "/v1/workspaces/{}/conversations/nope/messages",
                    user.workspace_id
                );
                api.post(&path, Some(&user.token), text("hi")).await
            }
            _ => unreachable!(),
        };
        assert_eq!(status, expected_status, "{case}: {body}");
        assert_eq!(body["error"]["code"], expected_code, "{case}: {body}");
        assert!(body["error"]["message"].is_string(), "{case}: {body}");
        assert!(body["error"]["requestId"].is_string(), "{case}: {body}");
    }

    let (status, body) = api.get("/v1/no-such-route", Some(&user.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ROUTE_NOT_FOUND");
}

/// Signs up two users, connects sockets (`X-Token` on the first edge, `Bearer` on the last, and
/// one of another workspace), sends one message over REST, and checks what each socket receives.
async fn full_turn_reaches_every_socket_of_the_workspace_and_no_other(stack: &Stack) {
    let first_edge = stack.edge(0);
    let last_edge = stack.edge(stack.edges.len() - 1);
    let api = Api::new(first_edge);
    let user = api.sign_up().await;
    let stranger = api.sign_up().await;

    let mut by_x_token = sio::connect(first_edge, &[("x-token", &user.token)], None)
        .await
        .expect("connect")
        .expect_connected();
    let bearer = format!("Bearer {}", user.token);
    let mut by_bearer = sio::connect(last_edge, &[("authorization", &bearer)], None)
        .await
        .expect("connect")
        .expect_connected();
    let mut outsider = sio::connect(last_edge, &[("x-token", &stranger.token)], None)
        .await
        .expect("connect")
        .expect_connected();

    let conversation_id = api.create_conversation(&user).await;
    let path = format!(
        "/v1/workspaces/{}/conversations/{conversation_id}/messages",
        user.workspace_id
    );
    let (status, sent) = api
        .post(
            &path,
            Some(&user.token),
            json!({"localId": "local-1", "content": {"type": "text", "text": "hello there"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let user_message = sent["data"].clone();
    assert_eq!(user_message["status"], "sent");
    assert_eq!(user_message["localId"], "local-1");

    let (agents_status, agents) = api
        .get(
            &format!("/v1/workspaces/{}/agents", user.workspace_id),
            Some(&user.token),
        )
        .await;
    assert_eq!(agents_status, StatusCode::OK, "{agents}");
    let default_agent = agents["data"][0].clone();
    let expected_text = crawbl_runtime_stub::scripted_reply(
        default_agent["slug"].as_str().expect("slug"),
        "hello there",
    );

    for socket in [&mut by_x_token, &mut by_bearer] {
        let events = turn_events(socket).await;
        assert_turn(
            &events,
            &user,
            &user_message,
            &default_agent,
            &expected_text,
        );
        // Then where the workspace's month stands, and nothing more.
        let usage = socket.next_event(QUIET).await.expect("usage.update");
        assert_eq!(usage.name, "usage.update", "{usage:?}");
        assert_eq!(usage.payload()["workspaceId"], user.workspace_id.as_str());
        assert!(
            usage.payload()["used"]
                .as_u64()
                .is_some_and(|used| used > 0)
        );
        assert_quiet(socket).await;
    }
    if let Some(event) = outsider.next_event(QUIET).await {
        panic!("a socket of another workspace received {event:?}");
    }

    // Both messages are stored, newest first.
    let (status, listed) = api.get(&path, Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let listed = listed["data"].as_array().expect("data").clone();
    assert_eq!(listed.len(), 2, "{listed:#?}");
    assert_eq!(listed[0]["role"], "agent");
    assert_eq!(listed[0]["status"], "delivered");
    assert_eq!(listed[0]["content"]["text"], expected_text.as_str());
    assert_eq!(listed[1], user_message);

    // A retry with the same localId returns the same message and starts no second turn.
    let (status, retried) = api
        .post(
            &path,
            Some(&user.token),
            json!({"localId": "local-1", "content": {"type": "text", "text": "hello there"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{retried}");
    assert_eq!(retried["data"], user_message);
    assert_quiet(&mut by_x_token).await;
}

/// The events of one turn, up to the agent going back online.
async fn turn_events(socket: &mut SioClient) -> Vec<ServerEvent> {
    let mut seen_update = false;
    socket
        .events_until(TURN_TIMEOUT, move |event| {
            seen_update |= event.name == "message.updated";
            seen_update && event.name == "agent.status" && event.payload()["status"] == "online"
        })
        .await
}

fn assert_turn(
    events: &[ServerEvent],
    user: &User,
    user_message: &Value,
    agent: &Value,
    expected_text: &str,
) {
    let (deltas, events): (Vec<_>, Vec<_>) = events
        .iter()
        .partition(|event| event.name == "message.delta");
    let names: Vec<&str> = events.iter().map(|event| event.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "message.new",
            "agent.status",
            "agent.typing",
            "message.new",
            "message.updated",
            "agent.typing",
            "agent.status"
        ],
        "{events:#?}"
    );
    let agent_id = agent["id"].as_str().expect("agent id");
    let conversation_id = user_message["conversationId"]
        .as_str()
        .expect("conversation");

    // message.new (user): exactly what the REST call returned.
    assert_eq!(events[0].payload(), user_message);
    assert_message_shape(events[0].payload(), "user");
    assert_eq!(events[0].payload()["authorId"], user.user_id.as_str());

    assert_eq!(
        events[1].payload(),
        &json!({"agentId": agent_id, "status": "busy"})
    );
    assert_eq!(
        events[2].payload(),
        &json!({"conversationId": conversation_id, "agentId": agent_id, "isTyping": true})
    );

    let streaming = events[3].payload();
    assert_message_shape(streaming, "agent");
    assert_eq!(streaming["status"], "streaming");
    assert_eq!(streaming["agentId"], agent_id);
    assert_eq!(streaming["content"], json!({"type": "text", "text": ""}));

    let delivered = events[4].payload();
    assert_message_shape(delivered, "agent");
    assert_eq!(delivered["id"], streaming["id"]);
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(
        delivered["content"],
        json!({"type": "text", "text": expected_text})
    );

    assert_eq!(
        events[5].payload(),
        &json!({"conversationId": conversation_id, "agentId": agent_id, "isTyping": false})
    );
    assert_eq!(
        events[6].payload(),
        &json!({"agentId": agent_id, "status": "online"})
    );

    // Durable events carry their place in the workspace's log; the others carry nothing more.
    let position = |event: &ServerEvent| event.args.get(1).cloned();
    let first_seq = position(events[0]).expect("message.new has a position")["seq"]
        .as_u64()
        .expect("seq");
    for (index, offset) in [(0, 0), (3, 1), (4, 2)] {
        assert_eq!(
            position(events[index]),
            Some(json!({"workspaceId": user.workspace_id, "seq": first_seq + offset})),
            "{:#?}",
            events[index]
        );
    }
    for index in [1, 2, 5, 6] {
        assert_eq!(events[index].args.len(), 1, "{:#?}", events[index]);
    }

    // The deltas, in order, spell the final text.
    let mut streamed = String::new();
    for (index, delta) in deltas.iter().enumerate() {
        let payload = delta.payload();
        assert_eq!(payload["index"], index as u64, "{deltas:#?}");
        assert_eq!(payload["messageId"], streaming["id"]);
        streamed.push_str(payload["delta"].as_str().expect("delta text"));
    }
    assert_eq!(streamed, expected_text);
}

/// The exact set of fields of a message object (SPEC §4).
fn assert_message_shape(message: &Value, role: &str) {
    let keys: BTreeSet<&str> = message
        .as_object()
        .expect("a message is an object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected: BTreeSet<&str> = [
        "id",
        "workspaceId",
        "conversationId",
        "role",
        "content",
        "status",
        "createdAt",
        "updatedAt",
    ]
    .into();
    match role {
        "user" => expected.extend(["authorId", "localId"]),
        _ => expected.extend(["agentId"]),
    }
    assert_eq!(keys, expected, "{message:#}");
    assert_eq!(message["role"], role);
    for field in ["createdAt", "updatedAt"] {
        let text = message[field].as_str().expect("timestamp");
        assert!(
            chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            "{field} is not RFC 3339: {text}"
        );
    }
}

async fn assert_quiet(socket: &mut SioClient) {
    if let Some(event) = socket.next_event(QUIET).await {
        panic!("unexpected extra event {event:?}");
    }
}
