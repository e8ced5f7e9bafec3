//! The few REST calls a load scenario needs.

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// A plain-HTTP client for the load tool and the tests.
///
/// reqwest 0.13 brings no crypto of its own in this workspace (runtime-stub turns on
/// `rustls-no-provider` and feature unification shares it), and a client cannot even be built
/// without a rustls provider installed, so the first call installs ring as the process default.
pub fn http_client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::new()
}

/// Installs rustls's ring provider as the process default, once; calling it again is harmless.
/// Anything that builds `reqwest::Client::new()` in a process of this workspace needs it first.
pub fn install_tls_provider() {
    // ring's provider is deprecated for lacking post-quantum key exchange; aws-lc-rs is kept out
    // of the build on purpose (see the root Cargo.toml).
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    // Err only means a provider is installed already, which is all this wants.
    let _ = provider.install_default();
}

/// A signed-up user with the id of their first workspace.
#[derive(Debug, Clone)]
pub struct Account {
    pub token: String,
    pub workspace_id: String,
}

pub async fn sign_up(http: &reqwest::Client, edge: &str) -> anyhow::Result<Account> {
    let email = format!("load-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = json!({"email": email, "password": "correct horse battery", "displayName": "Load"});
    let response: Value = expect_created(
        http.post(format!("{edge}/v1/auth/sign-up"))
            .json(&body)
            .send()
            .await?,
    )
    .await?;
    Ok(Account {
        token: string(&response["data"]["accessToken"])?,
        workspace_id: string(&response["data"]["workspaces"][0]["id"])?,
    })
}

pub async fn create_conversation(
    http: &reqwest::Client,
    edge: &str,
    account: &Account,
) -> anyhow::Result<String> {
    let response = expect_created(
        http.post(format!(
            "{edge}/v1/workspaces/{}/conversations",
            account.workspace_id
        ))
        .header("x-token", &account.token)
        .json(&json!({}))
        .send()
        .await?,
    )
    .await?;
    string(&response["data"]["id"])
}

/// Sends a text message; the id of the message created.
pub async fn send_message(
    http: &reqwest::Client,
    edge: &str,
    account: &Account,
    conversation_id: &str,
    local_id: &str,
    text: &str,
) -> anyhow::Result<String> {
    let response = expect_created(
        http.post(format!(
            "{edge}/v1/workspaces/{}/conversations/{conversation_id}/messages",
            account.workspace_id
        ))
        .header("x-token", &account.token)
        .json(&json!({"localId": local_id, "content": {"type": "text", "text": text}}))
        .send()
        .await?,
    )
    .await?;
    string(&response["data"]["id"])
}

async fn expect_created(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.context("reading the response body")?;
    if status != reqwest::StatusCode::CREATED {
        bail!("expected 201, got {status}: {body}");
    }
    Ok(body)
}

fn string(value: &Value) -> anyhow::Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("expected a string, got {value}"))
}
