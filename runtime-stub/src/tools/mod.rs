//! The tools an agent may call during a turn: the built-ins named in its `tools` ([`builtin`])
//! and the tools of its MCP servers (`mcp.rs`). `TurnTools` is opened per turn (the runtime
//! keeps nothing between turns), offers the tools to the model as OpenAI function definitions,
//! runs calls under the tool timeout, and is closed when the turn ends.
//!
//! A call never fails the turn: bad arguments (not JSON, not an object, the wrong shape), an
//! unknown tool, a tool error or a timeout all become a result `{"error": "…"}` that the model
//! reads, and the turn goes on.

pub mod builtin;
pub mod calculator;
mod mcp;

use std::collections::HashSet;
use std::time::Duration;

use crawbl_proto::runtime::v1::AgentConfig;
use serde_json::{Map, Value, json};

pub use builtin::Builtin;
pub use mcp::MAX_TOOL_NAME;
use mcp::McpConnection;

/// How tools run; shared by every turn of a runtime.
#[derive(Debug, Clone)]
pub(crate) struct ToolSettings {
    /// The longest a call (or connecting to and listing one MCP server) may take.
    pub(crate) timeout: Duration,
    /// The HTTP client for MCP servers (`None` only if it could not be built: then no MCP
    /// server is reachable).
    pub(crate) http: Option<reqwest::Client>,
}

/// A tool offered to the model.
#[derive(Debug, Clone)]
struct Offered {
    /// The function name the model calls.
    name: String,
    description: String,
    /// JSON schema of the arguments.
    parameters: Value,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Builtin(Builtin),
    /// The `tool` of `servers[server]`.
    Mcp {
        server: usize,
        tool: String,
    },
}

/// The tools of one turn, with its MCP connections open.
#[derive(Debug)]
pub(crate) struct TurnTools {
    offered: Vec<Offered>,
    servers: Vec<McpConnection>,
    /// Name prefixes (`{server}__`) of every MCP server the agent names, reachable or not.
    mcp_prefixes: Vec<String>,
    timeout: Duration,
}

impl TurnTools {
    /// Tools of no agent: every call is an unknown tool.
    pub(crate) fn none(timeout: Duration) -> Self {
        Self {
            offered: Vec::new(),
            servers: Vec::new(),
            mcp_prefixes: Vec::new(),
            timeout,
        }
    }

    /// The tools of `agent`: its known built-ins, then the tools of every MCP server that could
    /// be reached and listed (connected at once, each within the tool timeout).
    pub(crate) async fn open(agent: &AgentConfig, settings: &ToolSettings) -> Self {
        let mut tools = Self::none(settings.timeout);
        tools.offer_builtins(&agent.tools);
        tools.mcp_prefixes = agent
            .mcp_servers
            .iter()
            .map(|server| format!("{}__", mcp::openai_safe(&server.name)))
            .collect();
        let connections = futures::future::join_all(agent.mcp_servers.iter().map(|server| {
            let http = settings.http.clone();
            async move {
                let connection = match http {
                    Some(http) => McpConnection::open(server, http, settings.timeout).await,
                    None => Err(anyhow::anyhow!("the runtime has no HTTP client")),
                };
                (server, connection)
            }
        }))
        .await;
        for (server, connection) in connections {
            match connection {
                Ok(connection) => tools.offer_server(connection),
                Err(error) => tracing::warn!(
                    server = %server.name,
                    url = %server.url,
                    error = format!("{error:#}"),
                    "MCP server unavailable; the turn goes on without its tools"
                ),
            }
        }
        tools
    }

    fn offer_builtins(&mut self, names: &[String]) {
        let mut unknown = Vec::new();
        for name in names {
            match Builtin::from_name(name.trim()) {
                Some(tool) => self.offer(Offered {
                    name: tool.name().to_owned(),
                    description: tool.description().to_owned(),
                    parameters: tool.parameters(),
                    kind: Kind::Builtin(tool),
                }),
                None => unknown.push(name.as_str()),
            }
        }
        if !unknown.is_empty() {
            tracing::warn!(
                ?unknown,
                known = ?Builtin::ALL.map(Builtin::name),
                "the agent names built-in tools this runtime does not have; skipping them"
            );
        }
    }

    fn offer_server(&mut self, connection: McpConnection) {
        let server = self.servers.len();
        for tool in &connection.tools {
            let name = format!("{}__{}", connection.prefix, mcp::openai_safe(&tool.name));
            if name.len() > MAX_TOOL_NAME {
                tracing::warn!(
                    server = %connection.name,
                    tool = %tool.name,
                    %name,
                    "MCP tool name longer than {MAX_TOOL_NAME} characters; skipping it"
                );
                continue;
            }
            if name != format!("{}__{}", connection.name, tool.name) {
                tracing::info!(
                    server = %connection.name,
                    tool = %tool.name,
                    %name,
                    "MCP tool renamed to fit OpenAI function names"
                );
            }
            self.offer(Offered {
                name,
                description: tool.description.as_deref().unwrap_or_default().to_owned(),
                parameters: Value::Object((*tool.input_schema).clone()),
                kind: Kind::Mcp {
                    server,
                    tool: tool.name.to_string(),
                },
            });
        }
        tracing::debug!(server = %connection.name, tools = connection.tools.len(), "MCP server connected");
        self.servers.push(connection);
    }

    fn offer(&mut self, tool: Offered) {
        if self.offered.iter().any(|offered| offered.name == tool.name) {
            tracing::warn!(name = %tool.name, "two tools share a name; offering the first only");
            return;
        }
        self.offered.push(tool);
    }

    /// The names offered, in order.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.offered.iter().map(|tool| tool.name.as_str()).collect()
    }

    /// Whether a call to `name` is this turn's business: an offered tool, or a name under one of
    /// the agent's MCP servers (whose server may be down: the call then gets an error result).
    pub(crate) fn claims(&self, name: &str) -> bool {
        self.offered.iter().any(|tool| tool.name == name)
            || self
                .mcp_prefixes
                .iter()
                .any(|prefix| name.starts_with(prefix.as_str()))
    }

    /// The OpenAI `tools` of a chat-completions request.
    pub(crate) fn definitions(&self) -> Vec<Value> {
        self.offered
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    }
                })
            })
            .collect()
    }

    /// Runs the call; the result JSON for the model (`{"error": "…"}` when it failed).
    pub(crate) async fn call(&self, name: &str, arguments_json: &str) -> String {
        let outcome = match tokio::time::timeout(self.timeout, self.run(name, arguments_json)).await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "the tool {name:?} did not answer within {} ms",
                self.timeout.as_millis()
            )),
        };
        match outcome {
            Ok(value) => value.to_string(),
            Err(message) => {
                tracing::info!(tool = name, %message, "tool call failed");
                error_result(&message)
            }
        }
    }

    async fn run(&self, name: &str, arguments_json: &str) -> Result<Value, String> {
        let Some(tool) = self.offered.iter().find(|tool| tool.name == name) else {
            let offered = if self.offered.is_empty() {
                "this agent has no tools".to_owned()
            } else {
                format!("the tools are: {}", self.names().join(", "))
            };
            return Err(format!("unknown tool {name:?}; {offered}"));
        };
        let arguments = parse_arguments(arguments_json)?;
        match &tool.kind {
            Kind::Builtin(builtin) => builtin.call(arguments),
            Kind::Mcp { server, tool } => match self.servers.get(*server) {
                Some(connection) => connection.call(tool, arguments).await,
                None => Err(format!("the MCP server of {name:?} is not connected")),
            },
        }
    }

    /// Closes every MCP connection.
    pub(crate) async fn close(self) {
        futures::future::join_all(self.servers.into_iter().map(McpConnection::close)).await;
    }
}

/// A call's arguments: a JSON object (an empty string reads as `{}`).
fn parse_arguments(arguments_json: &str) -> Result<Map<String, Value>, String> {
    if arguments_json.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(arguments_json) {
        Ok(Value::Object(arguments)) => Ok(arguments),
        Ok(other) => Err(format!(
            "the arguments must be a JSON object, got {}",
            kind_of(&other)
        )),
        Err(error) => Err(format!("the arguments are not valid JSON: {error}")),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `{"error": message}` as JSON text.
pub(crate) fn error_result(message: &str) -> String {
    json!({ "error": message }).to_string()
}

/// A set of unique tool-call ids: a repeated or empty id gets a fresh one.
#[derive(Debug, Default)]
pub(crate) struct CallIds(HashSet<String>);

impl CallIds {
    pub(crate) fn unique(&mut self, id: &str, fallback: impl Fn() -> String) -> String {
        let mut id = if id.is_empty() {
            fallback()
        } else {
            id.to_owned()
        };
        let base = id.clone();
        let mut n = 1;
        while !self.0.insert(id.clone()) {
            n += 1;
            id = format!("{base}-{n}");
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ToolSettings {
        ToolSettings {
            timeout: Duration::from_secs(1),
            http: Some(crate::tls::HttpClients::new(&[]).expect("clients").mcp),
        }
    }

    fn agent(tools: &[&str]) -> AgentConfig {
        AgentConfig {
            tools: tools.iter().map(|&tool| tool.to_owned()).collect(),
            ..AgentConfig::default()
        }
    }

    #[tokio::test]
    async fn only_known_builtins_named_by_the_agent_are_offered() {
        let tools = TurnTools::open(&agent(&["calculator", "web_search"]), &settings()).await;
        assert_eq!(tools.names(), vec!["calculator"]);
        let definitions = tools.definitions();
        assert_eq!(definitions[0]["type"], "function");
        assert_eq!(definitions[0]["function"]["name"], "calculator");
        assert_eq!(
            definitions[0]["function"]["parameters"]["required"][0],
            "expression"
        );
        assert!(
            TurnTools::open(&agent(&[]), &settings())
                .await
                .names()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn bad_arguments_and_unknown_tools_become_error_results() {
        let tools = TurnTools::open(&agent(&["calculator"]), &settings()).await;
        let ok: Value =
            serde_json::from_str(&tools.call("calculator", r#"{"expression":"6*7"}"#).await)
                .expect("json");
        assert_eq!(ok["result"], 42);
        for (name, arguments, needle) in [
            ("calculator", "{not json", "not valid JSON"),
            (
                "calculator",
                "[1, 2]",
                "must be a JSON object, got an array",
            ),
            ("calculator", r#"{"expr": "1"}"#, "bad arguments"),
            ("calculator", r#"{"expression": "1/0"}"#, "division by zero"),
            ("time", "{}", "unknown tool \"time\""),
        ] {
            let result: Value =
                serde_json::from_str(&tools.call(name, arguments).await).expect("json");
            let error = result["error"].as_str().unwrap_or_default();
            assert!(error.contains(needle), "{name} {arguments}: {result}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_mcp_server_costs_only_its_own_tools() {
        let closed_port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let agent = AgentConfig {
            tools: vec!["time".into()],
            mcp_servers: vec![crawbl_proto::runtime::v1::McpServer {
                name: "files".into(),
                url: format!("http://127.0.0.1:{closed_port}/mcp"),
            }],
            ..AgentConfig::default()
        };
        let tools = TurnTools::open(&agent, &settings()).await;
        assert_eq!(tools.names(), vec!["time"]);
        assert!(tools.claims("files__read") && tools.claims("time") && !tools.claims("other"));
        let result = tools.call("files__read", "{}").await;
        assert!(result.contains("unknown tool"), "{result}");
        tools.close().await;
    }

    #[test]
    fn call_ids_are_made_unique() {
        let mut ids = CallIds::default();
        assert_eq!(ids.unique("call-1", || "x".into()), "call-1");
        assert_eq!(ids.unique("call-1", || "x".into()), "call-1-2");
        assert_eq!(ids.unique("", || "generated".into()), "generated");
    }
}
