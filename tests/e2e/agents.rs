//! Agents that remember and act (issue 14): agents are workspace data with roles, validation,
//! isolation and durable `agent.updated` events; every turn carries the agent's configuration and
//! the conversation so far.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::api::{Api, User, unique_email};
use crate::support::sio;
use crate::support::{Backend, Stack};

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
