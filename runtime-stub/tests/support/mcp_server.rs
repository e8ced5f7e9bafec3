//! An MCP server for tests, built with rmcp's streamable HTTP server (the real transport an
//! agent's MCP server speaks) on 127.0.0.1, port 0. Its tools:
//!
//! | tool | arguments | result |
//! |---|---|---|
//! | `add` | `{"a": number, "b": number}` | text `{"sum": a + b}` (JSON) |
//! | `shout` | `{"text": string}` | text, upper-cased |
//! | `broken` | `{}` | an error result, "the disk is on fire" |
//! | `slow` | `{}` | answers after 30 s (for timeouts) |
//!
//! Every call is counted per tool ([`McpTestServer::calls`]). Reusable from other test crates
//! with `#[path]`, like `fake_openai.rs`; needs `rmcp` with the `server` and
//! `transport-streamable-http-server` features, `axum`, `serde_json` and `tokio`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running MCP server; dropping it stops the server.
pub struct McpTestServer {
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    calls: Arc<Mutex<BTreeMap<String, usize>>>,
    _stop: tokio_util::sync::DropGuard,
}

impl McpTestServer {
    pub async fn start() -> Self {
        let calls: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let stop = CancellationToken::new();
        let handler = TestTools {
            calls: Arc::clone(&calls),
        };
        let service: StreamableHttpService<TestTools, LocalSessionManager> =
            StreamableHttpService::new(
                move || Ok(handler.clone()),
                Arc::default(),
                StreamableHttpServerConfig::default()
                    .with_sse_keep_alive(None)
                    .with_cancellation_token(stop.child_token()),
            );
        let app = axum::Router::new().nest_service("/mcp", service);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let shutdown = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
                .await
        });
        Self {
            url: format!("http://{address}/mcp"),
            calls,
            _stop: stop.drop_guard(),
        }
    }

    /// How many times `tool` was called.
    pub fn calls(&self, tool: &str) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tool)
            .copied()
            .unwrap_or(0)
    }
}

#[derive(Clone)]
struct TestTools {
    calls: Arc<Mutex<BTreeMap<String, usize>>>,
}

fn schema(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn tools() -> Vec<Tool> {
    let number = json!({"type": "number"});
    vec![
        Tool::new(
            "add",
            "Adds two numbers.",
            schema(json!({
                "type": "object",
                "properties": {"a": number, "b": number},
                "required": ["a", "b"],
            })),
        ),
        Tool::new(
            "shout",
            "Upper-cases a text.",
            schema(json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            })),
        ),
        Tool::new("broken", "Always fails.", schema(json!({"type": "object"}))),
        Tool::new(
            "slow",
            "Answers after 30 seconds.",
            schema(json!({"type": "object"})),
        ),
    ]
}

impl ServerHandler for TestTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        *self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(request.name.to_string())
            .or_default() += 1;
        let arguments = request.arguments.unwrap_or_default();
        let result = match request.name.as_ref() {
            "add" => {
                let a = arguments.get("a").and_then(Value::as_f64);
                let b = arguments.get("b").and_then(Value::as_f64);
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(ErrorData::invalid_params("add needs numbers a and b", None));
                };
                CallToolResult::success(vec![ContentBlock::text(
                    json!({ "sum": a + b }).to_string(),
                )])
            }
            "shout" => {
                let text = arguments.get("text").and_then(Value::as_str).unwrap_or("");
                CallToolResult::success(vec![ContentBlock::text(text.to_uppercase())])
            }
            "broken" => CallToolResult::error(vec![ContentBlock::text("the disk is on fire")]),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                CallToolResult::success(vec![ContentBlock::text("finally")])
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool {other:?}"),
                    None,
                ));
            }
        };
        Ok(CallToolResponse::Complete(result))
    }
}
