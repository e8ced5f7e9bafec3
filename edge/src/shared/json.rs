//! The JSON shapes of the public API (SPEC §4, §5), built from the services' protobuf types.
//! REST bodies and Socket.IO payloads use the same shapes.

use crawbl_proto::auth::v1 as auth;
use crawbl_proto::conversation::v1 as conv;
use crawbl_proto::events::v1 as events;
use crawbl_proto::runtimeproxy::v1::RuntimeState;
use serde::Serialize;
use utoipa::ToSchema;

/// `{"data": …}`
#[derive(Serialize, ToSchema)]
pub struct Data<T> {
    pub data: T,
}

/// `{"data": [...], "nextCursor": …}`; the cursor is `null` on the last page.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
}

impl From<auth::User> for User {
    fn from(user: auth::User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            display_name: user.display_name,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    pub id: String,
    pub name: String,
    /// `owner | member`
    pub role: String,
    /// Only in `GET /v1/workspaces/{workspaceId}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
}

impl From<auth::Workspace> for Workspace {
    fn from(workspace: auth::Workspace) -> Self {
        Self {
            id: workspace.id,
            name: workspace.name,
            role: workspace.role,
            runtime: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Runtime {
    /// `provisioning | ready | failed | stopped`
    pub state: &'static str,
}

impl From<RuntimeState> for Runtime {
    fn from(state: RuntimeState) -> Self {
        Self {
            state: match state {
                RuntimeState::Provisioning => "provisioning",
                RuntimeState::Ready => "ready",
                RuntimeState::Failed => "failed",
                RuntimeState::Stopped | RuntimeState::Unspecified => "stopped",
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub user: Option<User>,
    pub workspaces: Vec<Workspace>,
}

impl From<auth::Session> for Session {
    fn from(session: auth::Session) -> Self {
        Self {
            access_token: session.access_token,
            refresh_token: session.refresh_token,
            expires_in: session.expires_in,
            user: session.user.map(User::from),
            workspaces: session
                .workspaces
                .into_iter()
                .map(Workspace::from)
                .collect(),
        }
    }
}

fn agent_status(status: i32) -> &'static str {
    match conv::AgentStatus::try_from(status).unwrap_or_default() {
        conv::AgentStatus::Busy => "busy",
        conv::AgentStatus::Offline => "offline",
        conv::AgentStatus::Online | conv::AgentStatus::Unspecified => "online",
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: String,
    pub workspace_id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    /// `online | busy | offline`
    pub status: &'static str,
    /// Instructions the model gets before the conversation; empty: the runtime's default persona.
    pub system_prompt: String,
    /// The model to ask; empty: the runtime's configured model.
    pub model: String,
    /// Absent: the provider's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Built-in tools of the runtime the agent may call (`time`, `calculator`).
    pub tools: Vec<String>,
    /// MCP servers (streamable HTTP) whose tools the agent may call, as `{name}__{tool}`.
    pub mcp_servers: Vec<McpServer>,
    pub created_at: String,
    pub updated_at: String,
    /// Present once the agent is archived: it answers no new message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct McpServer {
    pub name: String,
    pub url: String,
}

impl From<conv::Agent> for Agent {
    fn from(agent: conv::Agent) -> Self {
        Self {
            id: agent.id,
            workspace_id: agent.workspace_id,
            slug: agent.slug,
            name: agent.name,
            description: agent.description,
            status: agent_status(agent.status),
            system_prompt: agent.system_prompt,
            model: agent.model,
            temperature: agent.temperature,
            tools: agent.tools,
            mcp_servers: agent
                .mcp_servers
                .into_iter()
                .map(|server| McpServer {
                    name: server.name,
                    url: server.url,
                })
                .collect(),
            created_at: timestamp(agent.created_at_ms),
            updated_at: timestamp(agent.updated_at_ms),
            archived_at: agent.archived_at_ms.map(timestamp),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Content {
    /// `text`
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    /// The agents (ids) the message is addressed to, each of which answers; absent: the
    /// conversation's agent answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub workspace_id: String,
    pub conversation_id: String,
    /// `user | agent | system`
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_id: Option<String>,
    pub content: Content,
    /// `sent | streaming | delivered | incomplete | failed | cancelled`
    pub status: &'static str,
    /// RFC 3339
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// RFC 3339; absent: never edited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    /// RFC 3339; present: the author deleted it, and the content is empty (a tombstone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

/// A tool the agent called: `result` is absent while the tool runs.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolCall {
    pub call_id: String,
    pub name: String,
    pub arguments: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// Tool arguments and results are JSON from the runtime; anything else is passed on as text.
fn json_or_text(raw: String) -> serde_json::Value {
    serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw))
}

impl From<conv::ToolCall> for ToolCall {
    fn from(call: conv::ToolCall) -> Self {
        Self {
            call_id: call.call_id,
            name: call.name,
            arguments: json_or_text(call.arguments_json),
            result: call.result_json.map(json_or_text),
        }
    }
}

impl From<conv::Message> for Message {
    fn from(message: conv::Message) -> Self {
        let role = match message.role() {
            conv::MessageRole::Agent => "agent",
            conv::MessageRole::System => "system",
            conv::MessageRole::User | conv::MessageRole::Unspecified => "user",
        };
        let status = match message.status() {
            conv::MessageStatus::Streaming => "streaming",
            conv::MessageStatus::Delivered => "delivered",
            conv::MessageStatus::Incomplete => "incomplete",
            conv::MessageStatus::Failed => "failed",
            conv::MessageStatus::Cancelled => "cancelled",
            conv::MessageStatus::Sent | conv::MessageStatus::Unspecified => "sent",
        };
        let content = message.content.unwrap_or_default();
        Self {
            id: message.id,
            workspace_id: message.workspace_id,
            conversation_id: message.conversation_id,
            role,
            author_id: message.author_id,
            agent_id: message.agent_id,
            local_id: message.local_id,
            content: Content {
                kind: content.r#type,
                text: content.text,
                mentions: content.mentions,
            },
            status,
            created_at: timestamp(message.created_at_ms),
            updated_at: timestamp(message.updated_at_ms),
            tool_calls: message.tool_calls.into_iter().map(ToolCall::from).collect(),
            edited_at: message.edited_at_ms.map(timestamp),
            deleted_at: message.deleted_at_ms.map(timestamp),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: String,
    pub workspace_id: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message: Option<Message>,
    /// The caller's: messages of others after what they read (deleted ones aside).
    pub unread_count: u64,
    /// The caller's read position; absent: nothing read yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_read_message_id: Option<String>,
}

impl From<conv::Conversation> for Conversation {
    fn from(conversation: conv::Conversation) -> Self {
        Self {
            id: conversation.id,
            workspace_id: conversation.workspace_id,
            title: conversation.title,
            agent_id: conversation.agent_id,
            created_at: timestamp(conversation.created_at_ms),
            updated_at: timestamp(conversation.updated_at_ms),
            last_message: conversation.last_message.map(Message::from),
            unread_count: conversation.unread_count,
            last_read_message_id: conversation.last_read_message_id,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentTyping {
    pub conversation_id: String,
    pub agent_id: String,
    pub is_typing: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatusChanged {
    pub agent_id: String,
    pub status: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageDelta {
    pub message_id: String,
    pub conversation_id: String,
    pub agent_id: String,
    pub delta: String,
    pub index: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentTool {
    pub message_id: String,
    pub conversation_id: String,
    pub agent_id: String,
    #[serde(flatten)]
    pub call: ToolCall,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageUpdate {
    pub workspace_id: String,
    pub used: u64,
    /// Absent: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageDeleted {
    pub id: String,
    pub conversation_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationRead {
    pub conversation_id: String,
    pub user_id: String,
    pub last_read_message_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserTyping {
    pub conversation_id: String,
    pub user_id: String,
    pub is_typing: bool,
}

/// A bus event as a Socket.IO event: its name, its payload, and whether it is durable.
pub struct SocketEvent {
    pub name: &'static str,
    pub payload: serde_json::Value,
    pub durable: bool,
}

impl SocketEvent {
    /// `workspace_id`: the workspace the event belongs to (some payloads name it).
    pub fn from_kind(workspace_id: &str, kind: events::event::Kind) -> serde_json::Result<Self> {
        use events::event::Kind;
        let (name, payload, durable) = match kind {
            Kind::MessageNew(message) => (
                "message.new",
                serde_json::to_value(Message::from(message))?,
                true,
            ),
            Kind::MessageUpdated(message) => (
                "message.updated",
                serde_json::to_value(Message::from(message))?,
                true,
            ),
            Kind::AgentTyping(typing) => (
                "agent.typing",
                serde_json::to_value(AgentTyping {
                    conversation_id: typing.conversation_id,
                    agent_id: typing.agent_id,
                    is_typing: typing.is_typing,
                })?,
                false,
            ),
            Kind::AgentStatus(status) => (
                "agent.status",
                serde_json::to_value(AgentStatusChanged {
                    agent_id: status.agent_id,
                    status: agent_status(status.status),
                })?,
                false,
            ),
            Kind::MessageDelta(delta) => (
                "message.delta",
                serde_json::to_value(MessageDelta {
                    message_id: delta.message_id,
                    conversation_id: delta.conversation_id,
                    agent_id: delta.agent_id,
                    delta: delta.delta,
                    index: delta.index,
                })?,
                false,
            ),
            Kind::UsageUpdate(usage) => (
                "usage.update",
                serde_json::to_value(UsageUpdate {
                    workspace_id: workspace_id.to_owned(),
                    used: usage.used,
                    limit: usage.limit,
                })?,
                false,
            ),
            Kind::AgentUpdated(agent) => (
                "agent.updated",
                serde_json::to_value(Agent::from(agent))?,
                true,
            ),
            Kind::AgentTool(tool) => (
                "agent.tool",
                serde_json::to_value(AgentTool {
                    message_id: tool.message_id,
                    conversation_id: tool.conversation_id,
                    agent_id: tool.agent_id,
                    call: ToolCall::from(tool.call.unwrap_or_default()),
                })?,
                false,
            ),
            Kind::MessageDeleted(deleted) => (
                "message.deleted",
                serde_json::to_value(MessageDeleted {
                    id: deleted.id,
                    conversation_id: deleted.conversation_id,
                })?,
                true,
            ),
            Kind::ConversationRead(read) => (
                "conversation.read",
                serde_json::to_value(ConversationRead {
                    conversation_id: read.conversation_id,
                    user_id: read.user_id,
                    last_read_message_id: read.last_read_message_id,
                })?,
                false,
            ),
            Kind::UserTyping(typing) => (
                "user.typing",
                serde_json::to_value(UserTyping {
                    conversation_id: typing.conversation_id,
                    user_id: typing.user_id,
                    is_typing: typing.is_typing,
                })?,
                false,
            ),
        };
        Ok(Self {
            name,
            payload,
            durable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
