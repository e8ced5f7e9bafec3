//! Tools of an agent's MCP servers, over the streamable HTTP transport (rmcp's client on the
//! runtime's reqwest client, so https trusts the same roots as the providers).
//!
//! The runtime is stateless: every turn connects to each of the agent's servers, lists their
//! tools, calls them as the model asks, and closes the connections when the turn ends. A server
//! that cannot be reached or listed within the tool timeout costs the turn only that server's
//! tools (one warning); the turn goes on.
//!
//! A server's tool `t` is offered to the model as `{server}__{t}`. OpenAI function names must
//! match `^[a-zA-Z0-9_-]{1,64}$`: other characters become `_` (logged), and a name still too long,
//! or taken by an earlier tool, is skipped (logged).

use std::time::Duration;

use anyhow::{Context, anyhow};
use crawbl_proto::runtime::v1::McpServer;
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    Implementation,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Map, Value, json};

/// The longest function name OpenAI-compatible APIs accept.
pub const MAX_TOOL_NAME: usize = 64;
/// How long closing a server's session may take when the turn ends.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One connected MCP server of a turn.
pub(crate) struct McpConnection {
    /// The server's name as the agent configures it.
    pub(crate) name: String,
    /// The name's OpenAI-safe form, the prefix of its tools' names.
    pub(crate) prefix: String,
    client: RunningService<RoleClient, ClientConfig>,
    pub(crate) tools: Vec<rmcp::model::Tool>,
}

impl std::fmt::Debug for McpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpConnection")
            .field("name", &self.name)
            .field("tools", &self.tools.len())
            .finish_non_exhaustive()
    }
}

impl McpConnection {
    /// Connects to `server` and lists its tools, each step within `timeout`.
    pub(crate) async fn open(
        server: &McpServer,
        http: reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let url = server.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(anyhow!("its url {url:?} is not http:// or https://"));
        }
        let transport = StreamableHttpClientTransport::with_client(
            http,
            StreamableHttpClientTransportConfig::with_uri(url.to_owned()),
        );
        let client = tokio::time::timeout(timeout, client_info().serve(transport))
            .await
            .map_err(|_| anyhow!("connecting took longer than {timeout:?}"))?
            .context("connecting")?;
        let tools = match tokio::time::timeout(timeout, client.list_all_tools()).await {
            Ok(Ok(tools)) => tools,
            Ok(Err(error)) => {
                close(client, &server.name).await;
                return Err(anyhow::Error::new(error).context("listing its tools"));
            }
            Err(_) => {
                close(client, &server.name).await;
                return Err(anyhow!("listing its tools took longer than {timeout:?}"));
            }
        };
        Ok(Self {
            name: server.name.clone(),
            prefix: openai_safe(&server.name),
            client,
            tools,
        })
    }

    /// Calls the server's tool `tool`; the result as the JSON the model gets.
    pub(crate) async fn call(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> Result<Value, String> {
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let result =
            self.client.call_tool(request).await.map_err(|error| {
                format!("the MCP server {:?} failed the call: {error}", self.name)
            })?;
        result_json(&result)
    }

    /// Ends the session (the streamable HTTP transport says goodbye to the server).
    pub(crate) async fn close(self) {
        close(self.client, &self.name).await;
    }
}

async fn close(mut client: RunningService<RoleClient, ClientConfig>, server: &str) {
    match client.close_with_timeout(CLOSE_TIMEOUT).await {
        Ok(Some(_)) => {}
        Ok(None) => tracing::debug!(server, "closing the MCP session timed out"),
        Err(error) => tracing::debug!(server, %error, "closing the MCP session failed"),
    }
}

fn client_info() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("crawbl-runtime-stub", env!("CARGO_PKG_VERSION")),
    )
}

/// A tool's result as the JSON value the model reads:
/// - the server flagged an error: `{"error": "<its text>"}`;
/// - structured content: that value;
/// - a single text block that is JSON: that JSON;
/// - otherwise `{"text": "<the text blocks, joined by newlines>"}` (other kinds of content are
///   named, e.g. `[image/png image]`, since the model cannot see them here).
pub(crate) fn result_json(result: &CallToolResult) -> Result<Value, String> {
    let text = content_text(&result.content);
    if result.is_error == Some(true) {
        let message = if text.is_empty() {
            "the tool failed without saying why".to_owned()
        } else {
            text
        };
        return Err(message);
    }
    if let Some(structured) = &result.structured_content {
        return Ok(structured.clone());
    }
    if let [ContentBlock::Text(only)] = result.content.as_slice()
        && let Ok(value) = serde_json::from_str::<Value>(&only.text)
    {
        return Ok(value);
    }
    Ok(json!({ "text": text }))
}

fn content_text(content: &[ContentBlock]) -> String {
    content
        .iter()
        .map(|block| match block {
            ContentBlock::Text(text) => text.text.clone(),
            ContentBlock::Image(image) => format!("[{} image]", image.mime_type),
            ContentBlock::Audio(audio) => format!("[{} audio]", audio.mime_type),
            ContentBlock::Resource(_) => "[embedded resource]".to_owned(),
            ContentBlock::ResourceLink(link) => format!("[resource {}]", link.uri),
            _ => "[content of an unknown kind]".to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `name` with every character outside `[a-zA-Z0-9_-]` replaced by `_` (an empty name reads
/// `mcp`).
pub(crate) fn openai_safe(name: &str) -> String {
    let safe: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() {
        "mcp".to_owned()
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe_for_openai() {
        assert_eq!(openai_safe("files"), "files");
        assert_eq!(openai_safe("my server.v2"), "my_server_v2");
        assert_eq!(openai_safe("wé"), "w_");
        assert_eq!(openai_safe(" "), "mcp");
    }

    #[test]
    fn results_become_json_for_the_model() {
        let text = CallToolResult::success(vec![ContentBlock::text("plain words")]);
        assert_eq!(result_json(&text), Ok(json!({"text": "plain words"})));
        let json_text = CallToolResult::success(vec![ContentBlock::text(r#"{"a":1}"#)]);
        assert_eq!(result_json(&json_text), Ok(json!({"a": 1})));
        let two = CallToolResult::success(vec![ContentBlock::text("a"), ContentBlock::text("b")]);
        assert_eq!(result_json(&two), Ok(json!({"text": "a\nb"})));
        let failed = CallToolResult::error(vec![ContentBlock::text("no such file")]);
        assert_eq!(result_json(&failed), Err("no such file".to_owned()));
    }
}
