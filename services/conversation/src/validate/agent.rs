//! An agent's fields as owners and admins send them: checked once here, so what is stored (and
//! handed to runtimes) is always well formed. Every refusal is a 422 with a code naming the field.

use crawbl_proto::conversation::v1::{CreateAgentRequest, McpServer, UpdateAgentRequest};

use crate::ConversationError;

pub const MAX_SLUG_CHARS: usize = 32;
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
pub const MAX_SYSTEM_PROMPT_CHARS: usize = 16 * 1024;
pub const MAX_MODEL_CHARS: usize = 200;
pub const MAX_TEMPERATURE: f32 = 2.0;
pub const MAX_TOOLS: usize = 32;
pub const MAX_TOOL_NAME_CHARS: usize = 64;
pub const MAX_MCP_SERVERS: usize = 8;
pub const MAX_MCP_NAME_CHARS: usize = 32;
pub const MAX_URL_CHARS: usize = 2048;

/// A new agent that passed validation.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub workspace_id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub system_prompt: String,
    pub model: String,
    pub temperature: Option<f32>,
    pub tools: Vec<String>,
    pub mcp_servers: Vec<McpServer>,
}

/// The fields an update changes (`None`: left as they are).
#[derive(Debug, Clone, Default)]
pub struct AgentChanges {
    pub slug: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub system_prompt: Option<String>,
    pub model: Option<String>,
    /// `Some(None)` clears the temperature.
    pub temperature: Option<Option<f32>>,
    pub tools: Option<Vec<String>>,
    pub mcp_servers: Option<Vec<McpServer>>,
}

impl TryFrom<CreateAgentRequest> for NewAgent {
    type Error = ConversationError;

    fn try_from(request: CreateAgentRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            workspace_id: request.workspace_id,
            slug: slug(&request.slug)?,
            name: name(&request.name)?,
            description: description(&request.description)?,
            system_prompt: system_prompt(request.system_prompt)?,
            model: model(&request.model)?,
            temperature: request.temperature.map(temperature).transpose()?,
            tools: tools(request.tools)?,
            mcp_servers: mcp_servers(request.mcp_servers)?,
        })
    }
}

impl TryFrom<&UpdateAgentRequest> for AgentChanges {
    type Error = ConversationError;

    fn try_from(request: &UpdateAgentRequest) -> Result<Self, Self::Error> {
        let temperature = if request.clear_temperature {
            Some(None)
        } else {
            request.temperature.map(temperature).transpose()?.map(Some)
        };
        Ok(Self {
            slug: request.slug.as_deref().map(slug).transpose()?,
            name: request.name.as_deref().map(name).transpose()?,
            description: request
                .description
                .as_deref()
                .map(description)
                .transpose()?,
            system_prompt: request
                .system_prompt
                .clone()
                .map(system_prompt)
                .transpose()?,
            model: request.model.as_deref().map(model).transpose()?,
            temperature,
            tools: request
                .tools
                .clone()
                .map(|list| tools(list.names))
                .transpose()?,
            mcp_servers: request
                .mcp_servers
                .clone()
                .map(|list| mcp_servers(list.servers))
                .transpose()?,
        })
    }
}

fn refuse<T>(code: &'static str, message: impl Into<String>) -> Result<T, ConversationError> {
    Err(ConversationError::unprocessable(code, message))
}

/// `a`–`z` first, then `a`–`z`, `0`–`9`, `_`, `-`; at most `max` characters.
fn is_identifier(text: &str, max: usize, extra: &[char]) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|first| first.is_ascii_lowercase())
        && text.chars().count() <= max
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c))
}

/// Text that may span lines: no control characters but newlines and tabs (Postgres refuses NUL).
fn is_multiline_text(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

fn slug(raw: &str) -> Result<String, ConversationError> {
    let slug = raw.trim();
    if !is_identifier(slug, MAX_SLUG_CHARS, &['_', '-']) {
        return refuse(
            "INVALID_SLUG",
            format!(
                "slug must be 1 to {MAX_SLUG_CHARS} of a-z, 0-9, '-' and '_', starting with a letter"
            ),
        );
    }
    Ok(slug.to_owned())
}

fn name(raw: &str) -> Result<String, ConversationError> {
    let name = raw.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return refuse(
            "INVALID_NAME",
            format!("name must be 1 to {MAX_NAME_CHARS} characters on one line"),
        );
    }
    Ok(name.to_owned())
}

fn description(raw: &str) -> Result<String, ConversationError> {
    let description = raw.trim();
    if description.chars().count() > MAX_DESCRIPTION_CHARS || !is_multiline_text(description) {
        return refuse(
            "INVALID_DESCRIPTION",
            format!("description must be at most {MAX_DESCRIPTION_CHARS} characters of text"),
        );
    }
    Ok(description.to_owned())
}

fn system_prompt(raw: String) -> Result<String, ConversationError> {
    if raw.chars().count() > MAX_SYSTEM_PROMPT_CHARS || !is_multiline_text(&raw) {
        return refuse(
            "INVALID_SYSTEM_PROMPT",
            format!("systemPrompt must be at most {MAX_SYSTEM_PROMPT_CHARS} characters of text"),
        );
    }
    Ok(raw)
}

fn model(raw: &str) -> Result<String, ConversationError> {
    let model = raw.trim();
    if model.chars().count() > MAX_MODEL_CHARS
        || model.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return refuse(
            "INVALID_MODEL",
            format!(
                "model must be at most {MAX_MODEL_CHARS} characters with no spaces (empty: the runtime's default)"
            ),
        );
    }
    Ok(model.to_owned())
}

fn temperature(value: f32) -> Result<f32, ConversationError> {
    if !(0.0..=MAX_TEMPERATURE).contains(&value) {
        return refuse(
            "INVALID_TEMPERATURE",
            format!("temperature must be between 0 and {MAX_TEMPERATURE}"),
        );
    }
    Ok(value)
}

fn tools(names: Vec<String>) -> Result<Vec<String>, ConversationError> {
    let invalid = || {
        refuse(
            "INVALID_TOOLS",
            format!(
                "tools must be at most {MAX_TOOLS} distinct names of 1 to {MAX_TOOL_NAME_CHARS} of a-z, 0-9 and '_', starting with a letter"
            ),
        )
    };
    if names.len() > MAX_TOOLS {
        return invalid();
    }
    let mut checked: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        if !is_identifier(name, MAX_TOOL_NAME_CHARS, &['_']) || checked.iter().any(|n| n == name) {
            return invalid();
        }
        checked.push(name.to_owned());
    }
    Ok(checked)
}

fn mcp_servers(servers: Vec<McpServer>) -> Result<Vec<McpServer>, ConversationError> {
    if servers.len() > MAX_MCP_SERVERS {
        return refuse(
            "INVALID_MCP_SERVERS",
            format!("an agent may have at most {MAX_MCP_SERVERS} MCP servers"),
        );
    }
    let mut checked: Vec<McpServer> = Vec::with_capacity(servers.len());
    for server in servers {
        let name = server.name.trim();
        // No '_': a tool is offered as `{server}__{tool}`, which must split one way only.
        if !is_identifier(name, MAX_MCP_NAME_CHARS, &['-'])
            || checked.iter().any(|other| other.name == name)
        {
            return refuse(
                "INVALID_MCP_SERVERS",
                format!(
                    "each MCP server needs a distinct name of 1 to {MAX_MCP_NAME_CHARS} of a-z, 0-9 and '-', starting with a letter"
                ),
            );
        }
        let url = server.url.trim();
        if !is_http_url(url) {
            return refuse(
                "INVALID_MCP_SERVERS",
                format!(
                    "MCP server {name:?}: url must be an http:// or https:// address of at most {MAX_URL_CHARS} characters"
                ),
            );
        }
        checked.push(McpServer {
            name: name.to_owned(),
            url: url.to_owned(),
        });
    }
    Ok(checked)
}

/// `http://host…` or `https://host…` with no spaces or control characters.
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    url.chars().count() <= MAX_URL_CHARS
        && !host.is_empty()
        && !url.chars().any(|c| c.is_control() || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(slug: &str) -> CreateAgentRequest {
        CreateAgentRequest {
            workspace_id: "w".into(),
            slug: slug.into(),
            name: "Scout".into(),
            ..CreateAgentRequest::default()
        }
    }

    fn code_of<T: std::fmt::Debug>(result: Result<T, ConversationError>) -> &'static str {
        match result {
            Err(ConversationError::Unprocessable { code, .. }) => code,
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_agent_is_accepted_trimmed() {
        let agent = NewAgent::try_from(CreateAgentRequest {
            slug: " scout-2 ".into(),
            name: " Scout ".into(),
            tools: vec!["time".into(), " calculator".into()],
            mcp_servers: vec![McpServer {
                name: "docs".into(),
                url: "https://mcp.example.com/mcp".into(),
            }],
            temperature: Some(0.2),
            ..create("x")
        })
        .expect("valid");
        assert_eq!(agent.slug, "scout-2");
        assert_eq!(agent.name, "Scout");
        assert_eq!(agent.tools, ["time", "calculator"]);
    }

    #[test]
    fn bad_slugs_are_refused() {
        for slug in ["", "Scout", "1st", "a b", "ä", "-x", &"a".repeat(33)] {
            assert_eq!(
                code_of(NewAgent::try_from(create(slug))),
                "INVALID_SLUG",
                "{slug:?}"
            );
        }
        assert!(NewAgent::try_from(create(&"a".repeat(32))).is_ok());
    }

    #[test]
    fn bad_fields_are_refused_with_their_own_code() {
        let cases: Vec<(CreateAgentRequest, &str)> = vec![
            (
                CreateAgentRequest {
                    name: " ".into(),
                    ..create("a")
                },
                "INVALID_NAME",
            ),
            (
                CreateAgentRequest {
                    name: "a\nb".into(),
                    ..create("a")
                },
                "INVALID_NAME",
            ),
            (
                CreateAgentRequest {
                    system_prompt: "a\0b".into(),
                    ..create("a")
                },
                "INVALID_SYSTEM_PROMPT",
            ),
            (
                CreateAgentRequest {
                    system_prompt: "x".repeat(MAX_SYSTEM_PROMPT_CHARS + 1),
                    ..create("a")
                },
                "INVALID_SYSTEM_PROMPT",
            ),
            (
                CreateAgentRequest {
                    model: "gpt 4".into(),
                    ..create("a")
                },
                "INVALID_MODEL",
            ),
            (
                CreateAgentRequest {
                    temperature: Some(2.5),
                    ..create("a")
                },
                "INVALID_TEMPERATURE",
            ),
            (
                CreateAgentRequest {
                    temperature: Some(f32::NAN),
                    ..create("a")
                },
                "INVALID_TEMPERATURE",
            ),
            (
                CreateAgentRequest {
                    tools: vec!["time".into(), "time".into()],
                    ..create("a")
                },
                "INVALID_TOOLS",
            ),
            (
                CreateAgentRequest {
                    tools: vec!["Time!".into()],
                    ..create("a")
                },
                "INVALID_TOOLS",
            ),
            (
                CreateAgentRequest {
                    mcp_servers: vec![McpServer {
                        name: "a_b".into(),
                        url: "http://x".into(),
                    }],
                    ..create("a")
                },
                "INVALID_MCP_SERVERS",
            ),
            (
                CreateAgentRequest {
                    mcp_servers: vec![McpServer {
                        name: "a".into(),
                        url: "file:///etc".into(),
                    }],
                    ..create("a")
                },
                "INVALID_MCP_SERVERS",
            ),
            (
                CreateAgentRequest {
                    mcp_servers: vec![McpServer {
                        name: "a".into(),
                        url: "http:///x".into(),
                    }],
                    ..create("a")
                },
                "INVALID_MCP_SERVERS",
            ),
        ];
        for (request, code) in cases {
            assert_eq!(code_of(NewAgent::try_from(request)), code);
        }
    }

    #[test]
    fn an_update_changes_only_what_it_names_and_can_clear_the_temperature() {
        let changes = AgentChanges::try_from(&UpdateAgentRequest {
            name: Some("New".into()),
            clear_temperature: true,
            temperature: Some(1.0),
            ..UpdateAgentRequest::default()
        })
        .expect("valid");
        assert_eq!(changes.name.as_deref(), Some("New"));
        assert_eq!(changes.temperature, Some(None));
        assert!(changes.slug.is_none() && changes.tools.is_none());
        assert_eq!(
            code_of(AgentChanges::try_from(&UpdateAgentRequest {
                slug: Some("Bad".into()),
                ..UpdateAgentRequest::default()
            })),
            "INVALID_SLUG"
        );
    }
}
