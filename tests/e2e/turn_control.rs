//! Turn control and accounting (issue 16): stopping a reply wherever its turn runs, usage per
//! workspace, monthly quotas set over gRPC, and at most N turns at once per workspace.

use std::time::{Duration, Instant};

use crawbl_proto::conversation::v1::SetWorkspacePlanRequest;
use crawbl_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::Stack;
use crate::support::api::{Api, User, socket};
use crate::support::sio::{ServerEvent, SioClient};

const WAIT: Duration = Duration::from_secs(60);

fn cancel_path(user: &User, conversation: &str, message: &str) -> String {
    format!(
        "/v1/workspaces/{}/conversations/{conversation}/messages/{message}/cancel",
        user.workspace_id
    )
}

fn is_agent_message(event: &ServerEvent, name: &str) -> bool {
    event.name == name && event.payload()["role"] == "agent"
}

/// Every event for the next `quiet`, as long as events keep coming.
async fn drain(socket: &mut SioClient, quiet: Duration) -> Vec<ServerEvent> {
    let mut events = Vec::new();
    while let Some(event) = socket.next_event(quiet).await {
        events.push(event);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_stopped_through_the_other_edge_ends_cancelled_with_its_text_and_the_runtime_stops()
{
    let stack = Stack::replicated(2, 2, &[("RUNTIME_STUB_TOKEN_DELAY_MS", "30")]).await;
    let user = Api::new(stack.edge(0)).sign_up().await;
    let apis = [Api::new(stack.edge(0)), Api::new(stack.edge(1))];
    let conversation = apis[0].create_conversation(&user).await;
    let mut watcher = socket(stack.edge(1), &user).await;
    let long: String = (0..300).map(|n| format!("w{n} ")).collect();
    let (status, sent) = apis[0].send(&user, &conversation, "c1", &long).await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let user_message = sent["data"]["id"].as_str().expect("id").to_owned();
    let started = watcher
        .events_until(WAIT, |event| is_agent_message(event, "message.new"))
        .await;
    let reply_id = started.last().expect("reply").payload()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    watcher
        .events_until(WAIT, |event| event.name == "message.delta")
        .await;

    // Through the other edge, and so (most likely) the other conversation instance.
    let asked = Instant::now();
    let (status, stopped) = apis[1]
        .post(
            &cancel_path(&user, &conversation, &reply_id),
            Some(&user.token),
            json!({}),
        )
        .await;
    let took = asked.elapsed();
    eprintln!("a cancel through the other edge answered in {took:?}");
    assert_eq!(status, StatusCode::OK, "{stopped}");
    let reply = &stopped["data"];
    assert_eq!(reply["status"], "cancelled", "{reply}");
    assert_eq!(reply["id"], reply_id.as_str());
    let kept = reply["content"]["text"].as_str().expect("text");
    let whole = crawbl_runtime_stub::scripted_reply("assistant", &long);
    assert!(
        !kept.is_empty() && whole.starts_with(kept) && kept.len() < whole.len(),
        "{kept:?}"
    );
    // The bound is 500 ms (about 80 ms here, the reply's end included); the check leaves room
    // for a test machine loaded by the other tests.
    assert!(
        took < Duration::from_millis(1500),
        "the cancel took {took:?}"
    );

    // Clients see it end, typing stop and the agent come back; then nothing more streams.
    let after = watcher
        .events_until(WAIT, |event| {
            event.name == "agent.status" && event.payload()["status"] == "online"
        })
        .await;
    let ended = after
        .iter()
        .position(|event| is_agent_message(event, "message.updated"))
        .expect("the reply's end");
    assert_eq!(after[ended].payload()["status"], "cancelled");
    assert_eq!(after[ended].payload()["content"]["text"], kept);
    assert!(
        after[ended..]
            .iter()
            .any(|event| event.name == "agent.typing" && event.payload()["isTyping"] == false)
    );
    let late = drain(&mut watcher, Duration::from_millis(1000)).await;
    assert!(
        late.iter().all(|event| event.name != "message.delta"),
        "deltas after the stop: {late:#?}"
    );

    // Idempotent, by either message; the stored reply is the cancelled one.
    for message in [&reply_id, &user_message] {
        let (status, again) = apis[0]
            .post(
                &cancel_path(&user, &conversation, message),
                Some(&user.token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["data"]["status"], "cancelled");
        assert_eq!(again["data"]["content"]["text"], kept);
    }
    // The runtime itself stopped: its caller went away mid-turn.
    let logs = ["runtime-proxy-0", "runtime-proxy-1"]
        .iter()
        .map(|name| {
            std::fs::read_to_string(stack.dir().join(format!("{name}.log"))).unwrap_or_default()
        })
        .collect::<String>();
    assert!(
        logs.contains("cancelled by the caller"),
        "the runtime never saw the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_turns_answer_409_with_the_message_and_other_workspaces_turns_are_not_found() {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let exchange = api.send_and_wait(&user, &conversation, "f1", "hello").await;
    let reply_id = exchange["reply"]["id"].as_str().expect("id");
    let (status, body) = api
        .post(
            &cancel_path(&user, &conversation, reply_id),
            Some(&user.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "TURN_FINISHED");
    assert_eq!(body["data"]["status"], "delivered");
    assert_eq!(
        body["data"]["content"]["text"],
        "[assistant] You said: hello"
    );
    // Its tokens are counted by plan and model (the scripted runtime names no model).
    let metrics = crawbl_loadtest::rest::http_client()
        .get(format!("{}/metrics", stack.edge(0)))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let output = format!(
        "crawbl_tokens_total{{plan=\"default\",model=\"unknown\",direction=\"output\"}} {}",
        crawbl_runtime_stub::count_tokens("[assistant] You said: hello")
    );
    assert!(metrics.contains(&output), "no {output:?} in {metrics}");

    // Another workspace's member: not found, by REST and by socket.
    let stranger = api.sign_up().await;
    for path in [
        cancel_path(&stranger, &conversation, reply_id),
        cancel_path(&user, &conversation, reply_id),
    ] {
        let (status, body) = api.post(&path, Some(&stranger.token), json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (status, _) = api
        .post(
            &cancel_path(&user, &conversation, "no-such-message"),
            Some(&user.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stranger_socket = socket(stack.edge(0), &stranger).await;
    let ack = stranger_socket
        .emit_with_ack(
            "message.cancel",
            &[json!({"conversationId": conversation, "messageId": reply_id})],
            WAIT,
        )
        .await
        .expect("ack");
    assert_eq!(ack[0]["error"]["code"], "CONVERSATION_NOT_FOUND", "{ack:?}");

    // The owner's socket: a finished turn is refused with the message; bad payloads get errors.
    let own = socket(stack.edge(0), &user).await;
    let ack = own
        .emit_with_ack(
            "message.cancel",
            &[json!({"conversationId": conversation, "messageId": reply_id})],
            WAIT,
        )
        .await
        .expect("ack");
    assert_eq!(ack[0]["error"]["code"], "TURN_FINISHED", "{ack:?}");
    assert_eq!(ack[0]["data"]["status"], "delivered");
    for bad in [
        json!(null),
        json!({"conversationId": conversation}),
        json!("x"),
        json!({"conversationId": 1, "messageId": []}),
    ] {
        let ack = own
            .emit_with_ack("message.cancel", std::slice::from_ref(&bad), WAIT)
            .await
            .expect("ack");
        assert_eq!(ack[0]["error"]["code"], "INVALID_PAYLOAD", "{bad}: {ack:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_stops_a_reply_and_a_turn_stopped_before_it_starts_ends_with_an_empty_cancelled_reply()
 {
    let stack = Stack::embedded_with(crate::support::Options {
        token_delay_ms: 30,
        ..crate::support::Options::default()
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut own = socket(stack.edge(0), &user).await;
    let long: String = (0..200).map(|n| format!("w{n} ")).collect();
    let (status, _) = api.send(&user, &conversation, "s1", &long).await;
    assert_eq!(status, StatusCode::CREATED);
    // Queued behind the first.
    let (status, queued) = api.send(&user, &conversation, "s2", "and then").await;
    assert_eq!(status, StatusCode::CREATED);
    let queued_id = queued["data"]["id"].as_str().expect("id").to_owned();
    let started = own
        .events_until(WAIT, |event| is_agent_message(event, "message.new"))
        .await;
    let reply_id = started.last().expect("reply").payload()["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // The queued one first: it never runs, and gets an empty cancelled reply.
    let (status, body) = api
        .post(
            &cancel_path(&user, &conversation, &queued_id),
            Some(&user.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "cancelled");
    assert_eq!(body["data"]["content"]["text"], "");
    // Then the running one, over the socket.
    own.events_until(WAIT, |event| event.name == "message.delta")
        .await;
    let ack = own
        .emit_with_ack(
            "message.cancel",
            &[json!({"conversationId": conversation, "messageId": reply_id})],
            WAIT,
        )
        .await
        .expect("ack");
    assert!(ack[0]["error"].is_null(), "{ack:?}");
    assert_eq!(ack[0]["data"]["status"], "cancelled");
    drain(&mut own, Duration::from_millis(500)).await;

    // Two messages, two replies, both cancelled; nothing else ran.
    let messages = api.all_messages(&user, &conversation, 100).await;
    let replies: Vec<&Value> = messages.iter().filter(|m| m["role"] == "agent").collect();
    assert_eq!(replies.len(), 2, "{messages:#?}");
    assert!(
        replies.iter().all(|reply| reply["status"] == "cancelled"),
        "{replies:#?}"
    );
}

fn totals(usage: &Value) -> (u64, u64) {
    let total = &usage["total"];
    (
        total["inputTokens"].as_u64().expect("input"),
        total["outputTokens"].as_u64().expect("output"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_adds_up_across_a_restart_and_a_quota_set_over_grpc_refuses_the_next_send() {
    let mut stack = Stack::separate_processes(1).await;
    let internals = stack.internals.clone().expect("separate processes");
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut own = socket(stack.edge(0), &user).await;
    let usage_path = format!("/v1/workspaces/{}/usage", user.workspace_id);

    let texts = ["one two three", "four five"];
    let mut expected = (0u64, 0u64);
    for (n, text) in texts.iter().enumerate() {
        api.send_and_wait(&user, &conversation, &format!("u{n}"), text)
            .await;
        let said = crawbl_runtime_stub::scripted_reply("assistant", text);
        expected.0 += u64::from(crawbl_runtime_stub::count_tokens(text));
        expected.1 += u64::from(crawbl_runtime_stub::count_tokens(&said));
    }
    // Every turn tells the workspace where its month stands.
    let update = own
        .events_until(WAIT, |event| event.name == "usage.update")
        .await
        .pop()
        .expect("usage.update");
    assert_eq!(update.payload()["workspaceId"], user.workspace_id.as_str());
    assert!(update.payload()["limit"].is_null());

    let (status, usage) = api.get(&usage_path, Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    let usage = usage["data"].clone();
    assert_eq!(totals(&usage), expected, "{usage:#}");
    assert_eq!(usage["days"].as_array().map(Vec::len), Some(1));
    assert_eq!(usage["users"][0]["key"], user.user_id.as_str());
    assert_eq!(usage["agents"].as_array().map(Vec::len), Some(1));
    assert_eq!(usage["quota"]["used"], expected.0 + expected.1);
    assert!(usage["quota"]["resetsAt"].is_string());

    // Kept across a restart of the conversation service.
    stack
        .restart_process("conversation", &internals.conversation_url)
        .await;
    let (_, after) = api.get(&usage_path, Some(&user.token)).await;
    assert_eq!(totals(&after["data"]), expected, "{after:#}");

    // Billing sets a quota the workspace already reached: the next send is refused until the
    // month ends.
    let channel = crawbl_infra::grpc::channel_with_token(
        &internals.conversation_url,
        crawbl_infra::grpc::ServiceToken::new(&internals.service_token).expect("token"),
    )
    .expect("channel");
    let used = expected.0 + expected.1;
    let plan = ConversationServiceClient::new(channel)
        .set_workspace_plan(SetWorkspacePlanRequest {
            workspace_id: user.workspace_id.clone(),
            plan: "tiny".to_owned(),
            monthly_token_quota: Some(used),
        })
        .await
        .expect("set the plan")
        .into_inner();
    assert_eq!(plan.monthly_token_quota, Some(used));
    let response = crawbl_loadtest::rest::http_client()
        .post(format!(
            "{}/v1/workspaces/{}/conversations/{conversation}/messages",
            stack.edge(0),
            user.workspace_id
        ))
        .header("x-token", &user.token)
        .json(&json!({"localId": "over", "content": {"type": "text", "text": "more?"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: i64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "QUOTA_EXCEEDED", "{body}");
    let until_month_end = {
        use chrono::{Datelike as _, Utc};
        let now = Utc::now();
        let (year, month) = if now.month() == 12 {
            (now.year() + 1, 1)
        } else {
            (now.year(), now.month() + 1)
        };
        let next = chrono::NaiveDate::from_ymd_opt(year, month, 1)
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .expect("a date")
            .and_utc();
        (next - now).num_seconds()
    };
    assert!(
        (retry_after - until_month_end).abs() <= 5,
        "{retry_after} vs {until_month_end}"
    );
    // A retry of a message stored before the quota was reached is still answered with it.
    let (status, first) = api.send(&user, &conversation, "u0", texts[0]).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["data"]["content"]["text"], texts[0], "{first}");
    let stored = api.all_messages(&user, &conversation, 100).await;
    assert_eq!(stored.len(), 4, "a retry stored a message: {stored:#?}");
    assert!(
        stored
            .iter()
            .any(|message| message["id"] == first["data"]["id"])
    );
    let (_, usage) = api.get(&usage_path, Some(&user.token)).await;
    assert_eq!(usage["data"]["quota"]["limit"], used);
    assert_eq!(usage["data"]["plan"], "tiny");
    // A day that does not exist is refused.
    let (status, _) = api
        .get(&format!("{usage_path}?from=2026-13-01"), Some(&user.token))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_runs_at_most_its_share_of_turns_at_once_and_the_rest_wait_in_order() {
    one_turn_of_the_workspace_at_a_time(
        Stack::separate_processes_with(1, &ONE_TURN_AT_A_TIME).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_share_of_turns_holds_across_two_conversation_instances() {
    one_turn_of_the_workspace_at_a_time(Stack::replicated(2, 2, &ONE_TURN_AT_A_TIME).await).await;
}

const ONE_TURN_AT_A_TIME: [(&str, &str); 2] = [
    ("TURNS_PER_WORKSPACE", "1"),
    ("RUNTIME_STUB_TOKEN_DELAY_MS", "10"),
];

/// Three conversations of one workspace whose share is one turn: each is answered, and the log
/// never shows two replies streaming at once.
async fn one_turn_of_the_workspace_at_a_time(stack: Stack) {
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversations = [
        api.create_conversation(&user).await,
        api.create_conversation(&user).await,
        api.create_conversation(&user).await,
    ];
    let sends = conversations.iter().enumerate().map(|(n, conversation)| {
        let (api, user) = (&api, &user);
        async move {
            api.send_waiting(user, conversation, "p", &format!("p{n} a b c d e"))
                .await
        }
    });
    for (status, body) in futures::future::join_all(sends).await {
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["data"]["reply"]["status"], "delivered", "{body}");
    }
    // In the log: never two replies of the workspace streaming at once.
    let mut open = 0;
    for event in api.all_events(&user, 0).await {
        if event["payload"]["role"] != "agent" {
            continue;
        }
        match event["type"].as_str() {
            Some("message.new") => open += 1,
            Some("message.updated") => open -= 1,
            _ => {}
        }
        assert!(open <= 1, "two turns of one workspace ran at once");
    }
}
