//! Safe with replicas (issue 15): two instances of every service and two edges on one Postgres
//! and Redis, as a deployment behind load balancers runs them. Each scenario here broke before:
//! turns ran twice or out of order, a starting instance rewrote another's delivered reply, two
//! runtime-proxies each started a runtime for one workspace, and concurrent wrong passwords got
//! past the sign-in limit.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::Stack;
use crate::support::api::{Api, User, socket, unique_email};
use crate::support::sio::ServerEvent;

const WAIT: Duration = Duration::from_secs(60);
/// Short leases, so a dead instance's turn is taken over within the test.
const LEASES: [(&str, &str); 2] = [("TURN_LEASE_MS", "1500"), ("TURN_POLL_MS", "100")];

async fn replicated(extra: &[(&'static str, &'static str)]) -> Stack {
    let mut env = LEASES.to_vec();
    env.extend_from_slice(extra);
    Stack::replicated(2, 2, &env).await
}

/// The conversation's durable events from the log, oldest first, as (type, message).
/// The conversation's log once it holds the final `message.updated` of `replies` agent replies.
/// A reply's end is numbered into the log just after it commits, so a reader that saw the reply
/// ended may get there first.
async fn logged(
    api: &Api,
    user: &User,
    conversation: &str,
    replies: usize,
) -> Vec<(String, Value)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events: Vec<(String, Value)> = api
            .all_events(user, 0)
            .await
            .into_iter()
            .filter(|event| event["payload"]["conversationId"] == conversation)
            .map(|event| {
                let kind = event["type"].as_str().unwrap_or_default().to_owned();
                (kind, event["payload"].clone())
            })
            .collect();
        if final_updates(&events).len() >= replies {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log never held {replies} replies' ends: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every agent reply of the conversation has ended and there are `replies` of them.
async fn settled(api: &Api, user: &User, conversation: &str, replies: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let messages = api.all_messages(user, conversation, 100).await;
        let agent: Vec<&Value> = messages.iter().filter(|m| m["role"] == "agent").collect();
        if agent.len() >= replies && agent.iter().all(|m| m["status"] != "streaming") {
            return messages;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replies did not settle: {messages:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every agent reply's final `message.updated` events in the log: exactly one each, or a reply
/// was rewritten.
fn final_updates(events: &[(String, Value)]) -> BTreeMap<String, Vec<Value>> {
    let mut finals: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (kind, message) in events {
        if kind == "message.updated" && message["role"] == "agent" {
            let id = message["id"].as_str().unwrap_or_default().to_owned();
            finals.entry(id).or_default().push(message.clone());
        }
    }
    finals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_one_conversation_through_both_edges_are_answered_once_each_in_send_order() {
    let stack = replicated(&[]).await;
    let user = Api::new(stack.edge(0)).sign_up().await;
    let apis = [Api::new(stack.edge(0)), Api::new(stack.edge(1))];
    let conversation = apis[0].create_conversation(&user).await;
    let mut watcher = socket(stack.edge(1), &user).await;

    // Ten sends at once, alternating edges (so both conversation instances take them).
    let sends = (0..10).map(|n| {
        let (api, user, conversation) = (&apis[n % 2], &user, &conversation);
        async move {
            api.send(user, conversation, &format!("l{n}"), &format!("m{n}"))
                .await
        }
    });
    for (status, body) in futures::future::join_all(sends).await {
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    settled(&apis[1], &user, &conversation, 10).await;

    let events = logged(&apis[0], &user, &conversation, 10).await;
    // The send order: the order of the user messages in the log.
    let sent: Vec<String> = events
        .iter()
        .filter(|(kind, message)| kind == "message.new" && message["role"] == "user")
        .map(|(_, message)| {
            message["content"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(sent.len(), 10);
    // One turn at a time: each reply starts after the previous one ended, in send order.
    let mut answered = Vec::new();
    let mut open: Option<String> = None;
    for (kind, message) in &events {
        if message["role"] != "agent" {
            continue;
        }
        let id = message["id"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "message.new" => {
                assert!(
                    open.is_none(),
                    "two turns of one conversation at once: {events:#?}"
                );
                open = Some(id);
            }
            _ => {
                assert_eq!(open.as_ref(), Some(&id), "{events:#?}");
                open = None;
                assert_eq!(message["status"], "delivered", "{message}");
                let text = message["content"]["text"].as_str().unwrap_or_default();
                let asked = text
                    .strip_prefix("[assistant] You said: ")
                    .expect("an echo");
                answered.push(asked.to_owned());
            }
        }
    }
    assert_eq!(answered, sent, "every send answered once, in send order");
    assert!(
        final_updates(&events)
            .values()
            .all(|finals| finals.len() == 1)
    );

    // A client on the other edge got every durable event of the log, once, in order.
    let logged_seqs: Vec<u64> = apis[0]
        .all_events(&user, 0)
        .await
        .iter()
        .filter_map(|event| event["seq"].as_u64())
        .collect();
    let last = *logged_seqs.last().expect("events");
    let seen_seqs: Vec<u64> = watcher
        .events_until(WAIT, |event| {
            event
                .args
                .get(1)
                .and_then(|position| position["seq"].as_u64())
                == Some(last)
        })
        .await
        .iter()
        .filter_map(|event| {
            event
                .args
                .get(1)
                .and_then(|position| position["seq"].as_u64())
        })
        .collect();
    assert_eq!(
        seen_seqs, logged_seqs,
        "durable events lost or repeated on the way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_instance_killed_mid_turn_leaves_other_turns_alone_and_ends_its_own_with_what_clients_saw()
 {
    // 60 words at 40 ms: a turn of about 2.4 s.
    let mut stack = replicated(&[("RUNTIME_STUB_TOKEN_DELAY_MS", "40")]).await;
    let user = Api::new(stack.edge(0)).sign_up().await;
    let apis = [Api::new(stack.edge(0)), Api::new(stack.edge(1))];
    let doomed = apis[0].create_conversation(&user).await;
    let survivor = apis[1].create_conversation(&user).await;
    let mut watcher = socket(stack.edge(1), &user).await;
    let long: String = (0..58).map(|n| format!("w{n} ")).collect();

    // Each edge's conversation instance claims the turn sent through it.
    let (status, _) = apis[0].send(&user, &doomed, "d1", &long).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = apis[1].send(&user, &survivor, "s1", &long).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut seen: Vec<ServerEvent> = watcher
        .events_until(WAIT, |event| {
            event.name == "message.delta" && event.payload()["conversationId"] == doomed.as_str()
        })
        .await;
    stack.kill_process("conversation-0").await;
    // It comes back at once, as a pod would; starting must not touch the survivor's turn.
    stack.respawn("conversation-0");
    let internals = stack.internals.clone().expect("separate processes");
    crate::support::wait_for_grpc_health(&internals.conversation_url).await;

    let doomed_reply = settled(&apis[1], &user, &doomed, 1).await[0].clone();
    let survivor_reply = settled(&apis[1], &user, &survivor, 1).await[0].clone();
    seen.extend(
        watcher
            .events_until(WAIT, |event| {
                event.name == "message.updated" && event.payload()["id"] == doomed_reply["id"]
            })
            .await,
    );

    // The other instance's turn is whole.
    let expected = crawbl_runtime_stub::scripted_reply("assistant", &long);
    assert_eq!(survivor_reply["status"], "delivered", "{survivor_reply}");
    assert_eq!(survivor_reply["content"]["text"], expected.as_str());
    // The interrupted one ends incomplete, keeping at least what clients were shown.
    let shown: String = seen
        .iter()
        .filter(|event| {
            event.name == "message.delta" && event.payload()["messageId"] == doomed_reply["id"]
        })
        .map(|event| {
            event.payload()["delta"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let kept = doomed_reply["content"]["text"].as_str().unwrap_or_default();
    assert_eq!(doomed_reply["status"], "incomplete", "{doomed_reply}");
    assert!(!shown.is_empty());
    assert!(kept.starts_with(&shown), "kept {kept:?}, shown {shown:?}");
    assert!(expected.starts_with(kept), "kept {kept:?}");
    assert!(kept.len() < expected.len());

    // Nothing was rewritten, and the next message is answered, through either edge.
    for conversation in [&doomed, &survivor] {
        let events = logged(&apis[0], &user, conversation, 1).await;
        assert!(
            final_updates(&events)
                .values()
                .all(|finals| finals.len() == 1),
            "{events:#?}"
        );
    }
    let next = apis[0]
        .send_and_wait(&user, &doomed, "d2", "still there?")
        .await;
    assert_eq!(next["reply"]["status"], "delivered", "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_a_conversation_instance_never_rewrites_what_the_other_instance_delivers() {
    let mut stack = replicated(&[("RUNTIME_STUB_TOKEN_DELAY_MS", "30")]).await;
    let user = Api::new(stack.edge(0)).sign_up().await;
    let api = Api::new(stack.edge(1));
    let conversation = api.create_conversation(&user).await;
    let mut watcher = socket(stack.edge(1), &user).await;
    let long: String = (0..40).map(|n| format!("w{n} ")).collect();
    let (status, _) = api.send(&user, &conversation, "r1", &long).await;
    assert_eq!(status, StatusCode::CREATED);
    watcher
        .events_until(WAIT, |event| event.name == "message.delta")
        .await;
    // A rolling restart of the other instance while this turn streams.
    let url = stack
        .internals
        .clone()
        .expect("separate processes")
        .conversation_url;
    stack.restart_process("conversation-0", &url).await;

    let reply = settled(&api, &user, &conversation, 1).await[0].clone();
    assert_eq!(reply["status"], "delivered", "{reply}");
    assert_eq!(
        reply["content"]["text"],
        crawbl_runtime_stub::scripted_reply("assistant", &long).as_str()
    );
    let events = logged(&api, &user, &conversation, 1).await;
    let finals = final_updates(&events);
    assert_eq!(finals.len(), 1);
    assert!(
        finals.values().all(|finals| finals.len() == 1),
        "{events:#?}"
    );
}

/// The runtime processes each process of the stack started, by process name.
fn runtime_children(stack: &Stack, proxies: &[&str]) -> HashMap<String, usize> {
    let mut children = HashMap::new();
    for proxy in proxies {
        let pid = stack.pid(proxy).to_string();
        let count = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
            .filter(|stat| {
                // `pid (comm) state ppid …`; comm may hold spaces, so read after the last ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    == Some(pid.as_str())
            })
            .count();
        children.insert((*proxy).to_owned(), count);
    }
    children
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runtime_per_workspace_across_both_proxies_with_the_same_state_through_every_edge() {
    let stack = replicated(&[]).await;
    let apis = [Api::new(stack.edge(0)), Api::new(stack.edge(1))];
    let mut users = Vec::new();
    for n in 0..6 {
        users.push(apis[n % 2].sign_up().await);
    }
    // Every workspace sends through both edges, so both conversation instances ask for its
    // runtime.
    let sends = users.iter().map(|user| {
        let apis = &apis;
        async move {
            let conversation = apis[0].create_conversation(user).await;
            let first = apis[0].send_waiting(user, &conversation, "a", "one");
            let second = apis[1].send_waiting(user, &conversation, "b", "two");
            let ((first, _), (second, _)) = tokio::join!(first, second);
            assert_eq!((first, second), (StatusCode::CREATED, StatusCode::CREATED));
        }
    });
    futures::future::join_all(sends).await;

    let children = runtime_children(&stack, &["runtime-proxy-0", "runtime-proxy-1"]);
    assert_eq!(
        children.values().sum::<usize>(),
        users.len(),
        "{children:?}"
    );
    for user in &users {
        let path = format!("/v1/workspaces/{}", user.workspace_id);
        for api in &apis {
            let (status, body) = api.get(&path, Some(&user.token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["data"]["runtime"]["state"], "ready", "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_wrong_passwords_through_two_edges_and_two_auths_get_at_most_the_limit_checked()
 {
    let stack = Stack::replicated(2, 2, &[]).await;
    let apis = [Api::new(stack.edge(0)), Api::new(stack.edge(1))];
    let email = unique_email();
    apis[0].sign_up_as(&email).await;
    let guesses = (0..40).map(|n| {
        let (api, email) = (&apis[n % 2], &email);
        async move {
            api.post(
                "/v1/auth/sign-in",
                None,
                json!({"email": email, "password": format!("wrong guess {n}")}),
            )
            .await
            .0
        }
    });
    let answers = futures::future::join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|status| **status == StatusCode::UNAUTHORIZED)
        .count();
    let refused = answers
        .iter()
        .filter(|status| **status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // SIGN_IN_MAX_FAILURES_PER_ACCOUNT's default.
    assert!(checked <= 5, "{checked} guesses were checked: {answers:?}");
    assert_eq!(checked + refused, 40, "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_and_delete_reach_a_turn_whichever_instance_runs_it() {
    let stack = replicated(&[("RUNTIME_STUB_TOKEN_DELAY_MS", "30")]).await;
    let user = Api::new(stack.edge(0)).sign_up().await;
    let apis = [Api::new(stack.edge(0)), Api::new(stack.edge(1))];
    let conversation = apis[0].create_conversation(&user).await;
    let long: String = (0..30).map(|n| format!("w{n} ")).collect();

    // The first turn runs on conversation-0; the second is sent (and waited for) through the
    // other instance and queued behind it, so whichever instance runs it, the wait must end with
    // its reply, not at once with nothing.
    let (status, _) = apis[0].send(&user, &conversation, "w1", &long).await;
    assert_eq!(status, StatusCode::CREATED);
    let waited = apis[1]
        .send_and_wait(&user, &conversation, "w2", "after that")
        .await;
    assert_eq!(waited["reply"]["status"], "delivered", "{waited}");
    assert_eq!(
        waited["reply"]["content"]["text"],
        "[assistant] You said: after that"
    );

    // A long turn on conversation-0, deleted through edge-1 (conversation-1): it stops.
    let doomed = apis[0].create_conversation(&user).await;
    let mut watcher = socket(stack.edge(1), &user).await;
    let endless: String = (0..400).map(|n| format!("w{n} ")).collect();
    let (status, _) = apis[0].send(&user, &doomed, "d1", &endless).await;
    assert_eq!(status, StatusCode::CREATED);
    watcher
        .events_until(WAIT, |event| {
            event.name == "message.delta" && event.payload()["conversationId"] == doomed.as_str()
        })
        .await;
    let (status, _) = apis[1]
        .delete(
            &format!(
                "/v1/workspaces/{}/conversations/{doomed}",
                user.workspace_id
            ),
            &user.token,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Deltas already on their way may still arrive for a moment; then nothing more.
    let settle = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut events = Vec::new();
    while let Some(event) = watcher
        .next_event(settle.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        events.push(event);
    }
    let mut late = Vec::new();
    while let Some(event) = watcher.next_event(Duration::from_millis(1500)).await {
        late.push(event);
    }
    let deltas = late
        .iter()
        .filter(|event| event.name == "message.delta")
        .count();
    assert_eq!(
        deltas, 0,
        "the turn went on after its conversation was deleted: {late:#?}"
    );
    events.extend(late);
    assert!(
        events
            .iter()
            .any(|event| event.name == "agent.typing" && event.payload()["isTyping"] == false),
        "typing never ended: {events:#?}"
    );
}
