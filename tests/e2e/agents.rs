//! Agents that remember and act (issue 14): agents are workspace data with roles, validation,
//! isolation and durable `agent.updated` events; every turn carries the agent's configuration and
//! the conversation so far.

use std::time::Duration;

use crawbl_proto::runtime::v1::context_message::Role;
use crawbl_proto::runtime::v1::{ContextMessage, ToolExchange};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::api::{Api, User, unique_email};
use crate::support::sio::{self, ServerEvent};
use crate::support::{Backend, Options, Stack, TempDir};

#[path = "../../runtime-stub/tests/support/fake_openai.rs"]
mod fake_openai;

const WAIT: Duration = Duration::from_secs(60);

on_both_backends!(
    owners_and_admins_write_agents_members_read_them_and_every_change_is_an_event,
    an_archived_agent_leaves_its_conversation_readable_and_refuses_new_messages_clearly,
);

fn agents_path(user: &User) -> String {
    format!("/v1/workspaces/{}/agents", user.workspace_id)
}

/// The `agent.updated` events of the workspace's log after `after`.
async fn agent_events(api: &Api, user: &User, after: u64) -> Vec<Value> {
    api.all_events(user, after)
        .await
        .into_iter()
        .filter(|event| event["type"] == "agent.updated")
        .collect()
}

async fn owners_and_admins_write_agents_members_read_them_and_every_change_is_an_event(
    backend: Backend,
) {
    let stack = Stack::embedded_with(backend.options().await).await;
    let api = Api::new(stack.edge(0));
    let owner = api.sign_up().await;
    let path = agents_path(&owner);

    // The seeded agents, the assistant with its tools.
    let (status, listed) = api.get(&path, Some(&owner.token)).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let slugs: Vec<&str> = listed["data"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|agent| agent["slug"].as_str())
        .collect();
    assert_eq!(slugs, ["assistant", "researcher"]);
    assert_eq!(listed["data"][0]["tools"], json!(["time", "calculator"]));
    assert!(listed["data"][0]["archivedAt"].is_null());

    let mut socket = sio::connect(stack.edge(0), &[("x-token", &owner.token)], None)
        .await
        .expect("connect")
        .expect_connected();

    let scout = json!({
        "slug": "scout",
        "name": "Scout",
        "description": "Looks ahead.",
        "systemPrompt": "You are Scout.\nBe brief.",
        "model": "gpt-4o-mini",
        "temperature": 0.25,
        "tools": ["time"],
        "mcpServers": [{"name": "docs", "url": "http://127.0.0.1:9/mcp"}],
    });
    let (status, created) = api.post(&path, Some(&owner.token), scout.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let agent = &created["data"];
    let agent_id = agent["id"].as_str().expect("id").to_owned();
    for field in [
        "slug",
        "name",
        "description",
        "systemPrompt",
        "model",
        "temperature",
        "tools",
        "mcpServers",
    ] {
        assert_eq!(agent[field], scout[field], "{field}");
    }
    assert_eq!(agent["status"], "online");
    assert_eq!(agent["workspaceId"], owner.workspace_id.as_str());

    // Every device hears of it: a durable event with its sequence number.
    let event = socket
        .events_until(WAIT, |event| event.name == "agent.updated")
        .await
        .pop()
        .expect("agent.updated");
    assert_eq!(event.payload()["id"], agent_id.as_str());
    assert_eq!(event.payload()["systemPrompt"], scout["systemPrompt"]);
    assert!(
        event.args[1]["seq"].as_u64().is_some_and(|seq| seq > 0),
        "{event:?}"
    );

    // Slugs are unique in the workspace, the seeded ones included.
    for slug in ["scout", "assistant"] {
        let (status, body) = api
            .post(
                &path,
                Some(&owner.token),
                json!({"slug": slug, "name": "Again"}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "AGENT_SLUG_TAKEN");
    }

    // Bad fields: 422 with a code that names the field; a malformed body: 400.
    let bad = [
        (json!({"slug": "Bad Slug", "name": "x"}), "INVALID_SLUG"),
        (json!({"slug": "ok", "name": " "}), "INVALID_NAME"),
        (
            json!({"slug": "ok", "name": "x", "temperature": 5}),
            "INVALID_TEMPERATURE",
        ),
        (
            json!({"slug": "ok", "name": "x", "tools": ["time", "time"]}),
            "INVALID_TOOLS",
        ),
        (
            json!({"slug": "ok", "name": "x", "tools": ["rm -rf"]}),
            "INVALID_TOOLS",
        ),
        (
            json!({"slug": "ok", "name": "x", "model": "two words"}),
            "INVALID_MODEL",
        ),
        (
            json!({"slug": "ok", "name": "x", "systemPrompt": "a\u{0}b"}),
            "INVALID_SYSTEM_PROMPT",
        ),
        (
            json!({"slug": "ok", "name": "x", "mcpServers": [{"name": "a", "url": "file:///etc/passwd"}]}),
            "INVALID_MCP_SERVERS",
        ),
        (
            json!({"slug": "ok", "name": "x", "mcpServers": [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]}),
            "INVALID_MCP_SERVERS",
        ),
    ];
    for (body, code) in bad {
        let (status, answer) = api.post(&path, Some(&owner.token), body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {answer}"
        );
        assert_eq!(answer["error"]["code"], code, "{body}");
    }
    for body in [
        json!({"slug": "ok", "name": "x", "tools": "time"}),
        json!({"slug": "ok", "name": "x", "mcpServers": [["a", "http://x"]]}),
        json!({"slug": "ok", "name": "x", "colour": "red"}),
        json!({"name": "no slug"}),
    ] {
        let (status, answer) = api.post(&path, Some(&owner.token), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
    }

    // A member reads but does not write; an admin writes.
    let member_email = unique_email();
    let member = api.sign_up_as(&member_email).await;
    api.add_member(&owner, &member_email, "member").await;
    let admin_email = unique_email();
    let admin = api.sign_up_as(&admin_email).await;
    api.add_member(&owner, &admin_email, "admin").await;
    let agent_path = format!("{path}/{agent_id}");
    let (status, seen) = api.get(&agent_path, Some(&member.token)).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["data"]["slug"], "scout");
    let (status, refused) = api
        .patch(&agent_path, &member.token, json!({"name": "Mine"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["error"]["code"], "ADMIN_REQUIRED");
    let (status, _) = api
        .post(
            &path,
            Some(&member.token),
            json!({"slug": "mine", "name": "Mine"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api.delete(&agent_path, &member.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, changed) = api
        .patch(
            &agent_path,
            &admin.token,
            json!({"name": "Scout II", "temperature": null, "tools": ["calculator", "time"], "mcpServers": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let changed = &changed["data"];
    assert_eq!(changed["name"], "Scout II");
    assert!(changed["temperature"].is_null());
    assert_eq!(changed["tools"], json!(["calculator", "time"]));
    assert_eq!(changed["mcpServers"], json!([]));
    // What the update did not name stays.
    assert_eq!(changed["systemPrompt"], scout["systemPrompt"]);
    assert_eq!(changed["model"], "gpt-4o-mini");
    let (status, taken) = api
        .patch(&agent_path, &admin.token, json!({"slug": "researcher"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{taken}");

    // Nobody outside the workspace reaches its agents, not even by id through their own.
    let stranger = api.sign_up().await;
    let (status, _) = api.get(&agent_path, Some(&stranger.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let through_own = format!("{}/{agent_id}", agents_path(&stranger));
    let (status, body) = api.get(&through_own, Some(&stranger.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "AGENT_NOT_FOUND");
    let (status, _) = api
        .patch(&through_own, &stranger.token, json!({"name": "Mine"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.delete(&through_own, &stranger.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The log holds every change, in order, for devices that were away.
    let logged = agent_events(&api, &owner, 0).await;
    let names: Vec<&str> = logged
        .iter()
        .filter_map(|event| event["payload"]["name"].as_str())
        .collect();
    assert_eq!(names, ["Scout", "Scout II"], "{logged:#?}");
}

async fn an_archived_agent_leaves_its_conversation_readable_and_refuses_new_messages_clearly(
    backend: Backend,
) {
    let stack = Stack::embedded_with(backend.options().await).await;
    let api = Api::new(stack.edge(0));
    let owner = api.sign_up().await;
    let path = agents_path(&owner);
    let (status, created) = api
        .post(
            &path,
            Some(&owner.token),
            json!({"slug": "scout", "name": "Scout"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let agent_id = created["data"]["id"].as_str().expect("id").to_owned();
    let conversations = format!("/v1/workspaces/{}/conversations", owner.workspace_id);
    let (status, conversation) = api
        .post(
            &conversations,
            Some(&owner.token),
            json!({"agentId": agent_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{conversation}");
    let conversation_id = conversation["data"]["id"].as_str().expect("id").to_owned();
    let exchange = api
        .send_and_wait(&owner, &conversation_id, "l1", "hello")
        .await;
    assert_eq!(exchange["reply"]["agentId"], agent_id.as_str());
    assert_eq!(
        exchange["reply"]["content"]["text"],
        "[scout] You said: hello"
    );

    let agent_path = format!("{path}/{agent_id}");
    let (status, _) = api.delete(&agent_path, &owner.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let after_first = agent_events(&api, &owner, 0).await.len();
    // Idempotent: archiving again changes nothing and tells nobody again.
    let (status, _) = api.delete(&agent_path, &owner.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(agent_events(&api, &owner, 0).await.len(), after_first);

    let (_, listed) = api.get(&path, Some(&owner.token)).await;
    assert!(
        listed["data"]
            .as_array()
            .expect("agents")
            .iter()
            .all(|agent| agent["id"] != agent_id.as_str()),
        "{listed}"
    );
    let (_, with_archived) = api
        .get(&format!("{path}?includeArchived=true"), Some(&owner.token))
        .await;
    let archived = with_archived["data"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|agent| agent["id"] == agent_id.as_str())
        .expect("the archived agent is listed on request")
        .clone();
    assert!(archived["archivedAt"].is_string(), "{archived}");
    let (status, got) = api.get(&agent_path, Some(&owner.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(got["data"]["archivedAt"].is_string());

    // The conversation stays readable; a new message gets a clear error, not a crash or silence.
    let messages = api.all_messages(&owner, &conversation_id, 10).await;
    assert_eq!(messages.len(), 2);
    let (status, refused) = api
        .send(&owner, &conversation_id, "l2", "still there?")
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "AGENT_ARCHIVED");
    assert_eq!(
        api.all_messages(&owner, &conversation_id, 10).await.len(),
        2
    );
    let (status, refused) = api
        .post(
            &conversations,
            Some(&owner.token),
            json!({"agentId": agent_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "AGENT_ARCHIVED");

    // Conversations without an agent of their own go to the first agent still active.
    let (status, _) = api
        .delete(
            &format!("{path}/{}", first_agent_id(&api, &owner).await),
            &owner.token,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let default_conversation = api.create_conversation(&owner).await;
    let exchange = api
        .send_and_wait(&owner, &default_conversation, "l1", "hi")
        .await;
    assert!(
        exchange["reply"]["content"]["text"]
            .as_str()
            .is_some_and(|text| text.starts_with("[researcher]")),
        "{exchange}"
    );
}

async fn first_agent_id(api: &Api, user: &User) -> String {
    let (_, listed) = api.get(&agents_path(user), Some(&user.token)).await;
    listed["data"][0]["id"].as_str().expect("id").to_owned()
}

/// A stored message (as REST returns it) as the runtime's context shows it.
fn as_context(message: &Value, agent_names: &[(String, String)]) -> ContextMessage {
    let agent_id = message["agentId"].as_str().unwrap_or_default().to_owned();
    let agent_name = agent_names
        .iter()
        .find(|(id, _)| *id == agent_id)
        .map(|(_, name)| name.clone())
        .unwrap_or_default();
    let tool_calls = message["toolCalls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|call| ToolExchange {
            call_id: call["callId"].as_str().unwrap_or_default().to_owned(),
            name: call["name"].as_str().unwrap_or_default().to_owned(),
            arguments_json: call["arguments"].to_string(),
            result_json: call.get("result").map(Value::to_string).unwrap_or_default(),
        })
        .collect();
    ContextMessage {
        role: if message["role"] == "agent" {
            Role::Agent
        } else {
            Role::User
        } as i32,
        message_id: message["id"].as_str().unwrap_or_default().to_owned(),
        text: message["content"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        author_id: message["authorId"].as_str().unwrap_or_default().to_owned(),
        agent_id,
        agent_name,
        tool_calls,
    }
}

async fn agent_names(api: &Api, user: &User) -> Vec<(String, String)> {
    let (_, listed) = api
        .get(
            &format!("{}?includeArchived=true", agents_path(user)),
            Some(&user.token),
        )
        .await;
    listed["data"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|agent| {
            let field = |name: &str| agent[name].as_str().unwrap_or_default().to_owned();
            (field("id"), field("name"))
        })
        .collect()
}

/// What the scripted `/context` reply must say when the turn answering `current` saw `earlier`
/// (oldest first) before it.
fn expected_context(earlier: &[Value], current: &Value, names: &[(String, String)]) -> String {
    let history: Vec<ContextMessage> = earlier
        .iter()
        .chain(std::iter::once(current))
        .map(|message| as_context(message, names))
        .collect();
    format!(
        "[assistant] {}",
        crawbl_runtime_stub::describe_context(&history)
    )
}

/// Every message of the conversation, oldest first.
async fn oldest_first(api: &Api, user: &User, conversation: &str) -> Vec<Value> {
    let mut messages = api.all_messages(user, conversation, 100).await;
    messages.reverse();
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_is_remembered_with_its_tool_calls_even_across_a_runtime_restart() {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let names = agent_names(&api, &user).await;

    let first = api.send_and_wait(&user, &conversation, "l1", "hi").await;
    assert_eq!(reply_text(&first), "[assistant] You said: hi");
    // The seeded assistant has the calculator: the scripted `/tool` runs the real one.
    let tool = api
        .send_and_wait(
            &user,
            &conversation,
            "l2",
            "/tool calculator {\"expression\":\"6*7\"}\nand?",
        )
        .await;
    let call = &tool["reply"]["toolCalls"][0];
    assert_eq!(call["name"], "calculator");
    assert!(call["result"].to_string().contains("42"), "{call}");

    let recall = api
        .send_and_wait(&user, &conversation, "l3", "/context")
        .await;
    let messages = oldest_first(&api, &user, &conversation).await;
    assert_eq!(messages.len(), 6);
    assert_eq!(
        reply_text(&recall),
        expected_context(&messages[..4], &messages[4], &names)
    );

    // The runtime dies mid-turn and is restarted; it kept nothing, and loses nothing.
    let died = api.send_and_wait(&user, &conversation, "l4", "/die").await;
    assert_eq!(died["reply"]["status"], "incomplete", "{died}");
    let again = loop {
        let (status, body) = api
            .send_waiting(&user, &conversation, "l5", "/context")
            .await;
        if status == StatusCode::CREATED {
            break body["data"].clone();
        }
        // The runtime is still coming back.
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let messages = oldest_first(&api, &user, &conversation).await;
    assert_eq!(messages.len(), 10);
    assert_eq!(
        reply_text(&again),
        expected_context(&messages[..8], &messages[8], &names)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_carries_at_most_the_budget_newest_first_and_always_its_own_message() {
    let stack = Stack::embedded_with(Options {
        env: vec![
            ("CONTEXT_MAX_MESSAGES", "3".to_owned()),
            ("CONTEXT_MAX_BYTES", "200".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let names = agent_names(&api, &user).await;
    for (index, text) in ["one", "two"].into_iter().enumerate() {
        api.send_and_wait(&user, &conversation, &format!("l{index}"), text)
            .await;
    }
    let recall = api
        .send_and_wait(&user, &conversation, "l9", "/context")
        .await;
    let messages = oldest_first(&api, &user, &conversation).await;
    assert_eq!(
        reply_text(&recall),
        expected_context(&messages[2..4], &messages[4], &names),
        "the three newest, the current one last"
    );
    // Past the byte budget only the current message goes, however many would fit by count.
    let long = format!("/context\n{}", "x".repeat(300));
    let alone = api.send_and_wait(&user, &conversation, "l10", &long).await;
    let messages = oldest_first(&api, &user, &conversation).await;
    assert_eq!(
        reply_text(&alone),
        expected_context(&[], &messages[6], &names)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_real_provider_over_tls_calls_a_tool_and_remembers_the_exchange() {
    use fake_openai::{FakeOpenAi, TestCa, answer, calls};
    let ca = TestCa::new();
    let model = FakeOpenAi::start_tls(
        vec![
            calls(&[("call-7", "calculator", r#"{"expression":"6*7"}"#)]),
            answer(&["The", " answer", " is 42."]),
            answer(&["You", " asked", " about", " 6*7."]),
        ],
        &ca,
    )
    .await;
    let dir = TempDir::new();
    let ca_file = dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write the CA");
    let stack = Stack::embedded_with(Options {
        env: vec![
            ("RUNTIME_PROVIDER", "openai".to_owned()),
            ("OPENAI_BASE_URL", model.base_url.clone()),
            ("OPENAI_MODEL", "default-model".to_owned()),
            ("SSL_CERT_FILE", ca_file.display().to_string()),
        ],
        ..Options::default()
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let (status, created) = api
        .post(
            &agents_path(&user),
            Some(&user.token),
            json!({"slug": "mathy", "name": "Mathy", "systemPrompt": "You are Mathy.",
                   "model": "mathy-1", "temperature": 0.5, "tools": ["calculator"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let agent_id = created["data"]["id"].as_str().expect("id").to_owned();
    let (_, conversation) = api
        .post(
            &format!("/v1/workspaces/{}/conversations", user.workspace_id),
            Some(&user.token),
            json!({"agentId": agent_id}),
        )
        .await;
    let conversation = conversation["data"]["id"].as_str().expect("id").to_owned();
    let mut socket = sio::connect(stack.edge(0), &[("x-token", &user.token)], None)
        .await
        .expect("connect")
        .expect_connected();

    let first = api
        .send_and_wait(&user, &conversation, "l1", "what is 6*7?")
        .await;
    assert_eq!(first["reply"]["status"], "delivered", "{first}");
    assert_eq!(reply_text(&first), "The answer is 42.");
    let call = &first["reply"]["toolCalls"][0];
    assert_eq!(call["callId"], "call-7");
    assert_eq!(call["arguments"], json!({"expression": "6*7"}));
    assert!(call["result"].to_string().contains("42"), "{call}");
    // Clients saw the call, then its result, before the answer's text.
    let events = socket
        .events_until(WAIT, |event| {
            event.name == "message.updated" && event.payload()["role"] == "agent"
        })
        .await;
    let names: Vec<&str> = events
        .iter()
        .filter(|event| event.name != "agent.typing" && event.name != "agent.status")
        .map(|event: &ServerEvent| event.name.as_str())
        .collect();
    let tool_events: Vec<&ServerEvent> = events
        .iter()
        .filter(|event| event.name == "agent.tool")
        .collect();
    assert_eq!(tool_events.len(), 2, "{names:?}");
    assert!(tool_events[0].payload().get("result").is_none());
    assert!(
        tool_events[1].payload()["result"]
            .to_string()
            .contains("42")
    );
    let first_delta = names
        .iter()
        .position(|name| *name == "message.delta")
        .expect("deltas");
    let last_tool = names
        .iter()
        .rposition(|name| *name == "agent.tool")
        .expect("tools");
    assert!(last_tool < first_delta, "{names:?}");

    let second = api
        .send_and_wait(&user, &conversation, "l2", "what did I ask?")
        .await;
    assert_eq!(reply_text(&second), "You asked about 6*7.");

    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    let body = &requests[0].body;
    assert_eq!(body["model"], "mathy-1");
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "You are Mathy."})
    );
    assert_eq!(body["messages"][1]["content"], "what is 6*7?");
    let offered: Vec<&str> = body["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|tool| tool["function"]["name"].as_str())
        .collect();
    assert_eq!(offered, ["calculator"]);
    // The tool's result went back to the model before its answer.
    let roles = |body: &Value| -> Vec<String> {
        body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|message| message["role"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        roles(&requests[1].body),
        ["system", "user", "assistant", "tool"]
    );
    assert_eq!(requests[1].body["messages"][3]["tool_call_id"], "call-7");
    assert!(
        requests[1].body["messages"][3]["content"]
            .to_string()
            .contains("42")
    );
    // The second turn holds the first exchange, tool call and result included.
    let second_body = &requests[2].body;
    assert_eq!(
        roles(second_body),
        ["system", "user", "assistant", "tool", "assistant", "user"]
    );
    assert_eq!(second_body["messages"][2]["tool_calls"][0]["id"], "call-7");
    assert_eq!(second_body["messages"][4]["content"], "The answer is 42.");
    assert_eq!(second_body["messages"][5]["content"], "what did I ask?");
}

/// The text of the agent's reply in a `?wait=true` exchange.
fn reply_text(exchange: &Value) -> &str {
    exchange["reply"]["content"]["text"]
        .as_str()
        .unwrap_or_default()
}
