//! Typed helpers for the REST API.

use reqwest::StatusCode;
use serde_json::{Value, json};

/// A signed-up user of one edge.
#[derive(Debug, Clone)]
pub struct User {
    pub token: String,
    pub user_id: String,
    pub workspace_id: String,
}

pub struct Api {
    pub base: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: crawbl_loadtest::rest::http_client(),
        }
    }

    /// Signs up a new user with a unique email; panics unless it answers 201.
    pub async fn sign_up(&self) -> User {
        self.sign_up_as(&unique_email()).await
    }

    /// Signs up a new user with `email`; panics unless it answers 201.
    pub async fn sign_up_as(&self, email: &str) -> User {
        let (status, body) = self
            .post(
                "/v1/auth/sign-up",
                None,
                json!({"email": email, "password": "correct horse battery", "displayName": "Test User"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "sign-up failed: {body}");
        let data = &body["data"];
        User {
            token: data["accessToken"]
                .as_str()
                .expect("accessToken")
                .to_owned(),
            user_id: data["user"]["id"].as_str().expect("user.id").to_owned(),
            workspace_id: data["workspaces"][0]["id"]
                .as_str()
                .expect("workspaces[0].id")
                .to_owned(),
        }
    }

    /// Adds the user with `email` to `owner`'s workspace as `role`; panics unless it answers 201.
    pub async fn add_member(&self, owner: &User, email: &str, role: &str) {
        let (status, body) = self
            .post(
                &format!("/v1/workspaces/{}/members", owner.workspace_id),
                Some(&owner.token),
                json!({"email": email, "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "add member: {body}");
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let request = self
            .client
            .patch(format!("{}{path}", self.base))
            .header("x-token", token)
            .json(&body);
        read(request.send().await.expect("PATCH")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("x-token", token);
        }
        read(request.send().await.expect("GET")).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.post_raw(path, token, body.to_string()).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: String,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        read(request.send().await.expect("POST")).await
    }

    /// Creates a conversation in the user's workspace and returns its id.
    pub async fn create_conversation(&self, user: &User) -> String {
        let (status, body) = self
            .post(
                &format!("/v1/workspaces/{}/conversations", user.workspace_id),
                Some(&user.token),
                json!({"title": "Test"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create conversation: {body}");
        body["data"]["id"].as_str().expect("id").to_owned()
    }

    /// Sends a text message; returns the status and body.
    pub async fn send(
        &self,
        user: &User,
        conversation_id: &str,
        local_id: &str,
        text: &str,
    ) -> (StatusCode, Value) {
        self.post(
            &format!(
                "/v1/workspaces/{}/conversations/{conversation_id}/messages",
                user.workspace_id
            ),
            Some(&user.token),
            json!({"localId": local_id, "content": {"type": "text", "text": text}}),
        )
        .await
    }

    /// Sends a text message and waits until the agent's reply has ended (`?wait=true`); panics
    /// unless it answers 201.
    pub async fn send_and_wait(
        &self,
        user: &User,
        conversation_id: &str,
        local_id: &str,
        text: &str,
    ) -> Value {
        let (status, body) = self
            .send_waiting(user, conversation_id, local_id, text)
            .await;
        assert_eq!(status, StatusCode::CREATED, "send {local_id}: {body}");
        body["data"].clone()
    }

    /// Sends a text message with `?wait=true`; returns the status and body.
    pub async fn send_waiting(
        &self,
        user: &User,
        conversation_id: &str,
        local_id: &str,
        text: &str,
    ) -> (StatusCode, Value) {
        self.post(
            &format!(
                "/v1/workspaces/{}/conversations/{conversation_id}/messages?wait=true",
                user.workspace_id
            ),
            Some(&user.token),
            json!({"localId": local_id, "content": {"type": "text", "text": text}}),
        )
        .await
    }

    /// Creates another workspace of `user`; returns its id.
    pub async fn create_workspace(&self, user: &User, name: &str) -> String {
        let (status, body) = self
            .post("/v1/workspaces", Some(&user.token), json!({"name": name}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "create workspace: {body}");
        body["data"]["id"].as_str().expect("id").to_owned()
    }

    /// Every message of a conversation, following `nextCursor` with pages of `limit`.
    pub async fn all_messages(&self, user: &User, conversation_id: &str, limit: u32) -> Vec<Value> {
        let base = format!(
            "/v1/workspaces/{}/conversations/{conversation_id}/messages?limit={limit}",
            user.workspace_id
        );
        let mut messages = Vec::new();
        let mut path = base.clone();
        loop {
            let (status, body) = self.get(&path, Some(&user.token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let page = body["data"].as_array().expect("data").clone();
            assert!(page.len() <= limit as usize);
            messages.extend(page);
            match body["nextCursor"].as_str() {
                Some(cursor) => path = format!("{base}&before={cursor}"),
                None => return messages,
            }
        }
    }

    /// Every durable event of the workspace after `after`, following `nextCursor`.
    pub async fn all_events(&self, user: &User, after: u64) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = after.to_string();
        loop {
            let path = format!(
                "/v1/workspaces/{}/events?after={after}&limit=100",
                user.workspace_id
            );
            let (status, body) = self.get(&path, Some(&user.token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            events.extend(body["data"].as_array().expect("data").clone());
            match body["nextCursor"].as_str() {
                Some(cursor) => after = cursor.to_owned(),
                None => return events,
            }
        }
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let request = self
            .client
            .put(format!("{}{path}", self.base))
            .header("x-token", token)
            .json(&body);
        read(request.send().await.expect("PUT")).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .delete(format!("{}{path}", self.base))
            .header("x-token", token)
            .send()
            .await
            .expect("DELETE");
        read(response).await
    }
}

/// An email no other test uses.
pub fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// A Socket.IO client of `user` connected to `edge` (`http://…`), past its handshake.
pub async fn socket(edge: &str, user: &User) -> crate::support::sio::SioClient {
    crate::support::sio::connect(edge, &[("x-token", &user.token)], None)
        .await
        .expect("connect")
        .expect_connected()
}
