//! The conversation service as the durable heart (issue 4): idempotent sends, pagination, the
//! per-workspace event log, queued turns, `?wait=true`, deletes and restarts, on both backends.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::api::{Api, User};
use crate::support::redis_server::RedisServer;
use crate::support::sio::{self, ServerEvent, SioClient};
use crate::support::{Backend, Options, Stack, TempDir};

const WAIT: Duration = Duration::from_secs(60);

on_both_backends!(
    concurrent_retries_of_one_send_store_one_message_and_start_one_turn,
    pages_of_a_long_conversation_return_every_message_once_newest_first,
    sequence_numbers_have_no_gaps_under_concurrent_sends,
    a_message_sent_while_the_agent_answers_waits_for_that_answer,
);

async fn connected(stack: &Stack, user: &User) -> SioClient {
    sio::connect(stack.edge(0), &[("x-token", &user.token)], None)
        .await
        .expect("connect")
        .expect_connected()
}

fn is_reply_done(event: &ServerEvent) -> bool {
    event.name == "message.updated" && event.payload()["role"] == "agent"
}

async fn concurrent_retries_of_one_send_store_one_message_and_start_one_turn(backend: Backend) {
    let stack = Stack::embedded_with(backend.options().await).await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = connected(&stack, &user).await;

    let retries = (0..10).map(|_| api.send(&user, &conversation, "same-local-id", "hello"));
    let answers = futures::future::join_all(retries).await;
    let ids: HashSet<&str> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::CREATED, "{body}");
            body["data"]["id"].as_str().expect("id")
        })
        .collect();
    assert_eq!(ids.len(), 1, "every retry returns the same message");

    let events = socket.events_until(WAIT, is_reply_done).await;
    // Nothing more comes: no second user message, no second turn.
    let mut late = Vec::new();
    while let Some(event) = socket.next_event(Duration::from_millis(700)).await {
        late.push(event);
    }
    let created: Vec<&Value> = events
        .iter()
        .chain(&late)
        .filter(|event| event.name == "message.new")
        .map(ServerEvent::payload)
        .collect();
    assert_eq!(
        created.len(),
        2,
        "one user message and one reply: {created:#?}"
    );
    assert!(
        late.iter().all(|event| !event.name.starts_with("message.")),
        "{late:#?}"
    );
    assert_eq!(api.all_messages(&user, &conversation, 100).await.len(), 2);
}

async fn pages_of_a_long_conversation_return_every_message_once_newest_first(backend: Backend) {
    let stack = Stack::embedded_with(Options {
        token_delay_ms: 0,
        ..backend.options().await
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;

    let sends = 150;
    for index in 0..sends {
        let (status, body) = api
            .send(
                &user,
                &conversation,
                &format!("l{index}"),
                &format!("message {index}"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Each send gets a reply; wait until every turn has ended.
    let expected = sends * 2;
    let deadline = tokio::time::Instant::now() + WAIT;
    let everything = loop {
        let all = api.all_messages(&user, &conversation, 100).await;
        if all.len() == expected && all.iter().all(|message| message["status"] != "streaming") {
            break all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {expected} messages",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let paged = api.all_messages(&user, &conversation, 7).await;
    let ids: Vec<&str> = paged
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), expected, "each message once");
    assert_eq!(unique.len(), expected, "no message twice");
    assert_eq!(paged, everything, "pages of 7 and of 100 agree");
    let order: Vec<(&str, &str)> = paged
        .iter()
        .map(|m| {
            (
                m["createdAt"].as_str().expect("createdAt"),
                m["id"].as_str().expect("id"),
            )
        })
        .collect();
    let mut newest_first = order.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, newest_first, "newest first");

    let (status, body) = api
        .get(
            &format!(
                "/v1/workspaces/{}/conversations/{conversation}/messages?limit=101",
                user.workspace_id
            ),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_LIMIT");
    let (status, body) = api
        .get(
            &format!(
                "/v1/workspaces/{}/conversations/{conversation}/messages?before=garbage",
                user.workspace_id
            ),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_CURSOR");
}

async fn sequence_numbers_have_no_gaps_under_concurrent_sends(backend: Backend) {
    let stack = Stack::embedded_with(Options {
        token_delay_ms: 0,
        ..backend.options().await
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let mut conversations = Vec::new();
    for _ in 0..4 {
        conversations.push(api.create_conversation(&user).await);
    }

    let clients = 16;
    let sends_per_client = 5;
    let clients = (0..clients).map(|client| {
        let (api, user, conversation) = (&api, &user, &conversations[client % 4]);
        async move {
            for send in 0..sends_per_client {
                let (status, body) = api
                    .send(user, conversation, &format!("c{client}-{send}"), "hi")
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
            }
        }
    });
    futures::future::join_all(clients).await;

    // Every send logs three durable events: its message.new, the reply's message.new and the
    // reply's final message.updated.
    let expected = 16 * sends_per_client * 3;
    let deadline = tokio::time::Instant::now() + WAIT;
    let events = loop {
        let events = api.all_events(&user, 0).await;
        if events.len() >= expected {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {expected} events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=expected as u64).collect::<Vec<_>>(),
        "1, 2, 3… with no gap"
    );
    let names: BTreeSet<&str> = events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(names, BTreeSet::from(["message.new", "message.updated"]));

    // Paging from the middle returns the rest.
    let tail = api.all_events(&user, 100).await;
    assert_eq!(tail.first().and_then(|e| e["seq"].as_u64()), Some(101));
    assert_eq!(tail.len(), expected - 100);
}

async fn a_message_sent_while_the_agent_answers_waits_for_that_answer(backend: Backend) {
    let stack = Stack::embedded_with(Options {
        token_delay_ms: 30,
        ..backend.options().await
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = connected(&stack, &user).await;

    for (local_id, text) in [("a", "first question"), ("b", "second question")] {
        let (status, body) = api.send(&user, &conversation, local_id, text).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut replies_done = 0;
    let events = socket
        .events_until(WAIT, |event| {
            replies_done += usize::from(is_reply_done(event));
            replies_done == 2
        })
        .await;
    let agent_messages: Vec<(&str, &str, &str)> = events
        .iter()
        .filter(|event| event.name.starts_with("message.") && event.payload()["role"] == "agent")
        .map(|event| {
            let payload = event.payload();
            (
                event.name.as_str(),
                payload["status"].as_str().unwrap_or_default(),
                payload["content"]["text"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let slug = "assistant";
    let first = crawbl_runtime_stub::scripted_reply(slug, "first question");
    let second = crawbl_runtime_stub::scripted_reply(slug, "second question");
    assert_eq!(
        agent_messages,
        [
            ("message.new", "streaming", ""),
            ("message.updated", "delivered", first.as_str()),
            ("message.new", "streaming", ""),
            ("message.updated", "delivered", second.as_str()),
        ],
        "the second reply starts only after the first ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_with_wait_answers_with_the_finished_reply() {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let path = format!(
        "/v1/workspaces/{}/conversations/{conversation}/messages?wait=true",
        user.workspace_id
    );
    let body = json!({"localId": "w1", "content": {"type": "text", "text": "are you there"}});
    let (status, answer) = api.post(&path, Some(&user.token), body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["data"]["message"]["localId"], "w1");
    let reply = &answer["data"]["reply"];
    assert_eq!(reply["status"], "delivered");
    assert_eq!(
        reply["content"]["text"],
        crawbl_runtime_stub::scripted_reply("assistant", "are you there").as_str()
    );

    // A retry with wait finds the same reply instead of starting another turn.
    let (status, again) = api.post(&path, Some(&user.token), body).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["data"]["reply"]["id"], reply["id"]);
    assert_eq!(api.all_messages(&user, &conversation, 100).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_conversation_mid_turn_stops_its_turn() {
    let stack = Stack::embedded_with(Options {
        token_delay_ms: 150,
        ..Options::default()
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = connected(&stack, &user).await;
    let long_text = "please answer with many words so that the reply takes a while to stream";
    let (status, body) = api.send(&user, &conversation, "d1", long_text).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Wait until the reply is streaming, then delete.
    socket
        .events_until(WAIT, |event| event.name == "message.delta")
        .await;
    let path = format!(
        "/v1/workspaces/{}/conversations/{conversation}",
        user.workspace_id
    );
    let (status, body) = api.delete(&path, &user.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Typing stops and the agent is back online, without a final message.
    let events = socket
        .events_until(Duration::from_secs(10), |event| {
            event.name == "agent.status" && event.payload()["status"] == "online"
        })
        .await;
    assert!(
        events.iter().all(|event| event.name != "message.updated"),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|event| event.name == "agent.typing" && event.payload()["isTyping"] == false)
    );
    let deltas_after_delete = events.iter().filter(|e| e.name == "message.delta").count();
    assert!(
        deltas_after_delete <= 1,
        "the turn kept streaming: {events:#?}"
    );
    if let Some(event) = socket.next_event(Duration::from_millis(800)).await {
        panic!("the cancelled turn still sends {event:?}");
    }
    let (status, _) = api.get(&path, Some(&user.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.delete(&path, &user.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_interrupted_by_a_crash_is_ended_at_restart() {
    let options = || Options {
        token_delay_ms: 300,
        ..Options::default()
    };
    let stack = Stack::embedded_with(options()).await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = connected(&stack, &user).await;
    let (status, body) = api
        .send(
            &user,
            &conversation,
            "r1",
            "a question whose answer is cut short",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    socket
        .events_until(WAIT, |event| event.name == "message.delta")
        .await;

    let dir: TempDir = stack.kill().await;
    let stack = Stack::embedded_in(dir, options()).await;
    let api = Api::new(stack.edge(0));
    let messages = api.all_messages(&user, &conversation, 100).await;
    let reply = messages
        .iter()
        .find(|message| message["role"] == "agent")
        .expect("the reply survived the crash");
    assert!(
        reply["status"] == "incomplete" || reply["status"] == "failed",
        "left as {reply:#}"
    );
    // The change is in the log like any other.
    let events = api.all_events(&user, 0).await;
    let last = events.last().expect("events");
    assert_eq!(last["type"], "message.updated");
    assert_eq!(last["payload"]["id"], reply["id"]);
    let (_, agents) = api
        .get(
            &format!("/v1/workspaces/{}/agents", user.workspace_id),
            Some(&user.token),
        )
        .await;
    assert!(
        agents["data"]
            .as_array()
            .expect("agents")
            .iter()
            .all(|a| a["status"] == "online")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_logged_while_redis_is_down_are_published_when_it_returns() {
    let mut redis = RedisServer::start().await;
    let stack = Stack::embedded_with(Options {
        redis_url: Some(redis.url()),
        token_delay_ms: 0,
        ..Options::default()
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = connected(&stack, &user).await;
    let (status, body) = api
        .send(&user, &conversation, "before", "before the outage")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    socket.events_until(WAIT, is_reply_done).await;
    let seen_before = api.all_events(&user, 0).await.len() as u64;

    redis.stop().await;
    for index in 0..3 {
        let (status, body) = api
            .send(
                &user,
                &conversation,
                &format!("down-{index}"),
                "during the outage",
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "sends work without Redis: {body}"
        );
    }
    // The turns finish without Redis; their events are only in the log.
    let expected_seqs: Vec<u64> = (seen_before + 1..=seen_before + 9).collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    while (api.all_events(&user, seen_before).await.len() as u64) < 9 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "turns did not finish without Redis"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    redis.start_again().await;
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut pubsub = client.get_async_pubsub().await.expect("subscribe");
    pubsub
        .subscribe(format!("crawbl:events:{}", user.workspace_id))
        .await
        .expect("subscribe");
    let mut published = Vec::new();
    let mut messages = pubsub.into_on_message();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while published.len() < expected_seqs.len() {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = tokio::time::timeout(remaining, messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {published:?} were published after Redis returned"))
            .expect("subscription open");
        let event = crawbl_proto::events::v1::Event::decode(message.get_payload_bytes())
            .expect("an event envelope");
        if event.seq > 0 {
            published.push(event.seq);
        }
    }
    assert_eq!(
        published, expected_seqs,
        "every logged event, in order, once"
    );
}
