//! The chat around the agents (issue 17): read state and unread counts, edits and deletions,
//! sends over the socket, user typing, and several agents in one conversation, with real
//! sockets on two edge nodes where it matters.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::api::{Api, User, socket, unique_email};
use crate::support::sio::{self, ServerEvent, SioClient};
use crate::support::{Backend, Stack};

const WAIT: Duration = Duration::from_secs(60);
const QUIET: Duration = Duration::from_millis(1500);

on_both_backends!(
    read_state_edits_and_deletions_follow_their_rules,
    a_socket_send_follows_the_rest_rules_and_a_retry_after_a_lost_ack_makes_one_message,
);

fn conversation_path(workspace_id: &str, conversation: &str) -> String {
    format!("/v1/workspaces/{workspace_id}/conversations/{conversation}")
}

/// The events that arrive within `quiet` (as long as they keep coming).
async fn drain(socket: &mut SioClient, quiet: Duration) -> Vec<ServerEvent> {
    let mut events = Vec::new();
    while let Some(event) = socket.next_event(quiet).await {
        events.push(event);
    }
    events
}

/// A member added to `owner`'s workspace (their own `workspace_id` stays theirs).
async fn member_of(api: &Api, owner: &User) -> User {
    let email = unique_email();
    let member = api.sign_up_as(&email).await;
    api.add_member(owner, &email, "member").await;
    member
}

/// `conversation` of `workspace_id` as `user` sees it.
async fn conversation_of(api: &Api, user: &User, workspace_id: &str, conversation: &str) -> Value {
    let (status, body) = api
        .get(
            &conversation_path(workspace_id, conversation),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

async fn read_state_edits_and_deletions_follow_their_rules(backend: Backend) {
    let stack = Stack::embedded_with(backend.options().await).await;
    let api = Api::new(stack.edge(0));
    let owner = api.sign_up().await;
    let member = member_of(&api, &owner).await;
    let conversation = api.create_conversation(&owner).await;
    let path = conversation_path(&owner.workspace_id, &conversation);
    let first = api
        .send_and_wait(&owner, &conversation, "l1", "first")
        .await;
    let second = api
        .send_and_wait(&owner, &conversation, "l2", "second")
        .await;
    let first_id = first["message"]["id"].as_str().expect("id").to_owned();
    let second_reply = second["reply"]["id"].as_str().expect("reply").to_owned();

    // The owner's own messages are not unread; the agent's two replies are. The member has
    // read nothing of four.
    let listed = api
        .get(
            &format!("/v1/workspaces/{}/conversations", owner.workspace_id),
            Some(&owner.token),
        )
        .await
        .1;
    let listed = &listed["data"][0];
    assert_eq!(listed["id"], conversation.as_str());
    assert_eq!(listed["unreadCount"], 2, "{listed}");
    assert!(listed.get("lastReadMessageId").is_none(), "{listed}");
    let as_member = api
        .get(
            &format!("/v1/workspaces/{}/conversations", owner.workspace_id),
            Some(&member.token),
        )
        .await
        .1;
    assert_eq!(as_member["data"][0]["unreadCount"], 4, "{as_member}");

    // Reading moves forward only.
    let read = |message: &str| json!({"messageId": message});
    let (status, body) = api
        .post(
            &format!("{path}/read"),
            Some(&owner.token),
            read(&second_reply),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["unreadCount"], 0);
    assert_eq!(body["data"]["lastReadMessageId"], second_reply.as_str());
    let (status, body) = api
        .post(&format!("{path}/read"), Some(&owner.token), read(&first_id))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["lastReadMessageId"], second_reply.as_str());
    let got = conversation_of(&api, &owner, &owner.workspace_id, &conversation).await;
    assert_eq!(got["unreadCount"], 0);
    assert_eq!(got["lastReadMessageId"], second_reply.as_str());
    let got = conversation_of(&api, &member, &owner.workspace_id, &conversation).await;
    assert_eq!(got["unreadCount"], 4);

    // Bad reads.
    for (body, expected) in [
        (json!({}), StatusCode::BAD_REQUEST),
        (json!({"messageId": 5}), StatusCode::BAD_REQUEST),
        (json!({"messageId": ""}), StatusCode::BAD_REQUEST),
        (json!({"messageId": "nope"}), StatusCode::NOT_FOUND),
    ] {
        let (status, answer) = api
            .post(&format!("{path}/read"), Some(&owner.token), body.clone())
            .await;
        assert_eq!(status, expected, "{body} → {answer}");
    }
    let outsider = api.sign_up().await;
    let (status, _) = api
        .post(
            &format!("{path}/read"),
            Some(&outsider.token),
            read(&first_id),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Edits: the author's own user message only.
    let message_path = format!("{path}/messages/{first_id}");
    let edit = json!({"content": {"type": "text", "text": "first, fixed"}});
    let (status, edited) = api.patch(&message_path, &owner.token, edit.clone()).await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["data"]["content"]["text"], "first, fixed");
    assert!(edited["data"]["editedAt"].is_string(), "{edited}");
    let (status, refused) = api.patch(&message_path, &member.token, edit.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["error"]["code"], "NOT_MESSAGE_AUTHOR");
    let (status, refused) = api
        .patch(
            &format!("{path}/messages/{second_reply}"),
            &owner.token,
            edit.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    for bad in [
        json!({"content": {"type": "text", "text": "  "}}),
        json!({"content": {"type": "image", "text": "x"}}),
        json!({"content": ["text", "x"]}),
        json!({"text": "x"}),
    ] {
        let (status, answer) = api.patch(&message_path, &owner.token, bad.clone()).await;
        assert!(status.is_client_error(), "{bad} → {status} {answer}");
    }

    // Deletion leaves a tombstone in place; a deleted message takes no more changes.
    let (status, _) = api.delete(&message_path, &member.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = api.delete(&message_path, &owner.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, again) = api.delete(&message_path, &owner.token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["error"]["code"], "MESSAGE_DELETED");
    let (status, _) = api.patch(&message_path, &owner.token, edit).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let messages = api.all_messages(&owner, &conversation, 100).await;
    assert_eq!(messages.len(), 4);
    let tombstone = messages
        .iter()
        .find(|message| message["id"] == first_id.as_str())
        .expect("the deleted message is listed");
    assert_eq!(tombstone["content"]["text"], "");
    assert!(tombstone["deletedAt"].is_string(), "{tombstone}");
    // The member's unread count leaves the deleted message out.
    assert_eq!(
        conversation_of(&api, &member, &owner.workspace_id, &conversation).await["unreadCount"],
        3
    );

    // Both changes are durable events, in order.
    let events = api.all_events(&owner, 0).await;
    let updated = events
        .iter()
        .position(|event| {
            event["type"] == "message.updated"
                && event["payload"]["content"]["text"] == "first, fixed"
        })
        .expect("the edit is in the log");
    let deleted = events
        .iter()
        .position(|event| event["type"] == "message.deleted")
        .expect("the deletion is in the log");
    assert!(updated < deleted);
    assert_eq!(
        events[deleted]["payload"],
        json!({"id": first_id, "conversationId": conversation})
    );
}

async fn a_socket_send_follows_the_rest_rules_and_a_retry_after_a_lost_ack_makes_one_message(
    backend: Backend,
) {
    let stack = Stack::embedded_with(backend.options().await).await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let client = socket(stack.edge(0), &user).await;
    let send = |local_id: &str, text: &str| {
        json!({"conversationId": conversation, "localId": local_id,
               "content": {"type": "text", "text": text}})
    };

    // The first ack is never waited for (as if it were lost); the retry gets the same message.
    client.emit("message.send", &[send("s1", "over the socket")]);
    let ack = client
        .emit_with_ack("message.send", &[send("s1", "over the socket")], WAIT)
        .await
        .expect("ack");
    let message = &ack[0]["data"];
    assert_eq!(message["role"], "user", "{ack:?}");
    assert_eq!(message["localId"], "s1");
    assert_eq!(message["conversationId"], conversation.as_str());

    // Bad payloads and refusals are error acks, and the socket stays.
    for (payload, code) in [
        (json!(null), "INVALID_PAYLOAD"),
        (json!({"conversationId": conversation}), "INVALID_PAYLOAD"),
        (send("", "x"), "INVALID_LOCAL_ID"),
        (send("s2", "   "), "EMPTY_MESSAGE"),
        (send("s3", &"x".repeat(33 * 1024)), "MESSAGE_TOO_LONG"),
        (
            json!({"conversationId": "no-such", "localId": "s4", "content": {"type": "text", "text": "x"}}),
            "CONVERSATION_NOT_FOUND",
        ),
        (
            json!({"conversationId": conversation, "localId": "s5",
                   "content": {"type": "text", "text": "x", "mentions": ["nobody"]}}),
            "UNKNOWN_MENTION",
        ),
    ] {
        let ack = client
            .emit_with_ack("message.send", std::slice::from_ref(&payload), WAIT)
            .await
            .expect("an ack");
        assert_eq!(ack[0]["error"]["code"], code, "{payload} → {ack:?}");
        assert!(ack[0]["error"]["message"].is_string());
    }
    let outsider = api.sign_up().await;
    let stranger = socket(stack.edge(0), &outsider).await;
    let ack = stranger
        .emit_with_ack("message.send", &[send("x1", "not mine")], WAIT)
        .await
        .expect("ack");
    assert_eq!(ack[0]["error"]["code"], "CONVERSATION_NOT_FOUND", "{ack:?}");

    // One message, one turn, one reply.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waited = api
        .send_and_wait(&user, &conversation, "after", "after")
        .await;
    assert_eq!(waited["reply"]["status"], "delivered");
    let messages = api.all_messages(&user, &conversation, 100).await;
    let sent: Vec<&Value> = messages
        .iter()
        .filter(|message| message["localId"] == "s1")
        .collect();
    assert_eq!(sent.len(), 1, "{messages:#?}");
    assert_eq!(sent[0]["id"], message["id"]);
    let replies = messages
        .iter()
        .filter(|reply| reply["role"] == "agent")
        .count();
    assert_eq!(
        replies, 2,
        "one reply to s1, one to the last send: {messages:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_badge_clears_on_the_readers_other_devices_on_every_node_and_only_theirs() {
    let stack = Stack::separate_processes(2).await;
    let apis = [Api::new(stack.edge(0)), Api::new(stack.edge(1))];
    let owner = apis[0].sign_up().await;
    let member = member_of(&apis[0], &owner).await;
    let conversation = apis[0].create_conversation(&owner).await;
    let waited = apis[0]
        .send_and_wait(&owner, &conversation, "l1", "hello")
        .await;
    let reply = waited["reply"]["id"].as_str().expect("reply").to_owned();

    let mut phone = socket(stack.edge(0), &owner).await;
    let mut tablet = socket(stack.edge(1), &owner).await;
    let mut other = socket(stack.edge(1), &member).await;
    let (status, body) = apis[1]
        .post(
            &format!(
                "{}/read",
                conversation_path(&owner.workspace_id, &conversation)
            ),
            Some(&owner.token),
            json!({"messageId": reply}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for device in [&mut phone, &mut tablet] {
        let events = device
            .events_until(WAIT, |event| event.name == "conversation.read")
            .await;
        let read = events.last().expect("read").payload();
        assert_eq!(read["conversationId"], conversation.as_str());
        assert_eq!(read["userId"], owner.user_id.as_str());
        assert_eq!(read["lastReadMessageId"], reply.as_str());
    }
    let seen = drain(&mut other, QUIET).await;
    assert!(
        seen.iter().all(|event| event.name != "conversation.read"),
        "another member saw the owner's read: {seen:#?}"
    );
    // Reading the same again moves nothing and announces nothing.
    apis[0]
        .post(
            &format!(
                "{}/read",
                conversation_path(&owner.workspace_id, &conversation)
            ),
            Some(&owner.token),
            json!({"messageId": reply}),
        )
        .await;
    let seen = drain(&mut phone, QUIET).await;
    assert!(seen.iter().all(|event| event.name != "conversation.read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_and_a_delete_replay_to_a_socket_that_was_offline() {
    let stack = Stack::separate_processes(2).await;
    let apis = [Api::new(stack.edge(0)), Api::new(stack.edge(1))];
    let user = apis[0].sign_up().await;
    let conversation = apis[0].create_conversation(&user).await;
    let waited = apis[0]
        .send_and_wait(&user, &conversation, "l1", "typo here")
        .await;
    let message_id = waited["message"]["id"].as_str().expect("id").to_owned();
    let last_seq = apis[0]
        .all_events(&user, 0)
        .await
        .last()
        .and_then(|event| event["seq"].as_u64())
        .expect("a seq");

    // Offline meanwhile: the edit and the delete go through the other node.
    let message_path = format!(
        "{}/messages/{message_id}",
        conversation_path(&user.workspace_id, &conversation)
    );
    let (status, body) = apis[1]
        .patch(
            &message_path,
            &user.token,
            json!({"content": {"type": "text", "text": "no typo"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = apis[1].delete(&message_path, &user.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let mut back = sio::connect(
        stack.edge(0),
        &[("x-token", &user.token)],
        Some(json!({"since": {user.workspace_id.clone(): last_seq}})),
    )
    .await
    .expect("connect")
    .expect_connected();
    let replayed = back
        .events_until(WAIT, |event| event.name == "message.deleted")
        .await;
    let names: Vec<&str> = replayed.iter().map(|event| event.name.as_str()).collect();
    assert_eq!(
        names,
        ["message.updated", "message.deleted"],
        "{replayed:#?}"
    );
    let edited = &replayed[0];
    assert_eq!(edited.payload()["content"]["text"], "no typo");
    assert!(edited.payload()["editedAt"].is_string());
    assert_eq!(edited.args[1]["seq"], last_seq + 1);
    let deleted = &replayed[1];
    assert_eq!(
        deleted.payload(),
        &json!({"id": message_id, "conversationId": conversation})
    );
    assert_eq!(deleted.args[1]["seq"], last_seq + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_typing_reaches_the_other_members_on_every_node_is_throttled_and_ends_with_the_socket()
{
    let stack = Stack::separate_processes(2).await;
    let api = Api::new(stack.edge(0));
    let owner = api.sign_up().await;
    let member = member_of(&api, &owner).await;
    let conversation = api.create_conversation(&owner).await;
    let typist = socket(stack.edge(0), &owner).await;
    let mut own_other = socket(stack.edge(1), &owner).await;
    let mut watchers = [
        socket(stack.edge(0), &member).await,
        socket(stack.edge(1), &member).await,
    ];
    let typing = |is_typing: bool| json!({"conversationId": conversation, "isTyping": is_typing});

    let ack = typist
        .emit_with_ack("typing", &[typing(true)], WAIT)
        .await
        .expect("ack");
    assert_eq!(ack[0]["data"]["isTyping"], true, "{ack:?}");
    for watcher in &mut watchers {
        let events = watcher
            .events_until(WAIT, |event| event.name == "user.typing")
            .await;
        let typed = events.last().expect("typing").payload();
        assert_eq!(
            typed,
            &json!({"conversationId": conversation, "userId": owner.user_id, "isTyping": true})
        );
    }
    // Repeated at once: acknowledged, not sent again.
    typist
        .emit_with_ack("typing", &[typing(true)], WAIT)
        .await
        .expect("ack");
    let seen = drain(&mut watchers[1], QUIET).await;
    assert!(
        seen.iter().all(|event| event.name != "user.typing"),
        "{seen:#?}"
    );
    // Never to the typist's own sockets.
    let own = drain(&mut own_other, Duration::from_millis(200)).await;
    assert!(
        own.iter().all(|event| event.name != "user.typing"),
        "{own:#?}"
    );

    // Bad payloads and strangers' conversations: error acks, and the socket stays.
    for (payload, code) in [
        (json!({"conversationId": conversation}), "INVALID_PAYLOAD"),
        (json!("typing"), "INVALID_PAYLOAD"),
        (
            json!({"conversationId": "no-such", "isTyping": true}),
            "CONVERSATION_NOT_FOUND",
        ),
    ] {
        let ack = typist
            .emit_with_ack("typing", std::slice::from_ref(&payload), WAIT)
            .await
            .expect("ack");
        assert_eq!(ack[0]["error"]["code"], code, "{payload} → {ack:?}");
    }

    // The typist's socket goes away: the edge ends the typing on every node.
    drop(typist);
    for watcher in &mut watchers {
        let events = watcher
            .events_until(WAIT, |event| event.name == "user.typing")
            .await;
        assert_eq!(events.last().expect("end").payload()["isTyping"], false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mentioned_agents_answer_side_by_side_and_each_sees_the_others_earlier_replies() {
    let stack = Stack::separate_processes_with(2, &[("RUNTIME_STUB_TOKEN_DELAY_MS", "20")]).await;
    let apis = [Api::new(stack.edge(0)), Api::new(stack.edge(1))];
    let user = apis[0].sign_up().await;
    let conversation = apis[0].create_conversation(&user).await;
    let mut watcher = socket(stack.edge(1), &user).await;
    let (status, agents) = apis[0]
        .get(
            &format!("/v1/workspaces/{}/agents", user.workspace_id),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id_of = |slug: &str| {
        agents["data"]
            .as_array()
            .expect("agents")
            .iter()
            .find(|agent| agent["slug"] == slug)
            .and_then(|agent| agent["id"].as_str())
            .expect("seeded agent")
            .to_owned()
    };
    let (assistant, researcher) = (id_of("assistant"), id_of("researcher"));

    // One by id, one by @slug.
    let text = format!(
        "@researcher compare these two {}",
        (0..60)
            .map(|n| format!("w{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (status, sent) = apis[0]
        .post(
            &format!(
                "{}/messages",
                conversation_path(&user.workspace_id, &conversation)
            ),
            Some(&user.token),
            json!({"localId": "m1", "content": {"type": "text", "text": text, "mentions": [assistant]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_eq!(
        sent["data"]["content"]["mentions"],
        json!([assistant, researcher])
    );

    let mut ended = 0;
    let events = watcher
        .events_until(WAIT, |event| {
            if event.name == "message.updated" && event.payload()["role"] == "agent" {
                ended += 1;
            }
            ended == 2
        })
        .await;
    let deltas: Vec<&str> = events
        .iter()
        .filter(|event| event.name == "message.delta")
        .map(|event| event.payload()["agentId"].as_str().expect("agentId"))
        .collect();
    let switches = deltas.windows(2).filter(|pair| pair[0] != pair[1]).count();
    assert!(
        switches >= 2,
        "the two replies' deltas do not interleave: {deltas:?}"
    );
    let endings: Vec<&Value> = events
        .iter()
        .filter(|event| event.name == "message.updated")
        .map(ServerEvent::payload)
        .collect();
    assert!(
        endings.iter().all(|reply| reply["status"] == "delivered"),
        "{endings:#?}"
    );

    // In the list (newest first): both replies, each with its agent, after the message.
    let messages = apis[1].all_messages(&user, &conversation, 100).await;
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert_eq!(messages[2]["role"], "user");
    let mut answering: Vec<&str> = messages[..2]
        .iter()
        .map(|reply| reply["agentId"].as_str().expect("agentId"))
        .collect();
    answering.sort_unstable();
    let mut expected = vec![assistant.as_str(), researcher.as_str()];
    expected.sort_unstable();
    assert_eq!(answering, expected);

    // A later turn of one agent sees the other's reply in its context (the scripted runtime
    // answers a `/context` line with what the turn got).
    let waited = apis[0]
        .send_and_wait(&user, &conversation, "m2", "@researcher\n/context")
        .await;
    let context = waited["reply"]["content"]["text"].as_str().expect("text");
    assert_eq!(waited["reply"]["agentId"], researcher.as_str());
    assert!(
        context.contains("assistant(Assistant):") && context.contains("assistant(Researcher):"),
        "{context}"
    );

    // Unknown agents are refused; an @word that names nobody is only text.
    let (status, refused) = apis[0]
        .post(
            &format!(
                "{}/messages",
                conversation_path(&user.workspace_id, &conversation)
            ),
            Some(&user.token),
            json!({"localId": "m3", "content": {"type": "text", "text": "x", "mentions": ["nobody"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "UNKNOWN_MENTION");
    let plain = apis[0]
        .send_and_wait(&user, &conversation, "m4", "mail me@example.com or @nobody")
        .await;
    assert!(
        plain["message"]["content"].get("mentions").is_none(),
        "{plain}"
    );
    assert!(plain["reply"]["agentId"].is_string());
}
