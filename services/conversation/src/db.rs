//! Every query of the conversation service: plain functions over an `AnyPool`, written once
//! for Postgres and SQLite (`$n` placeholders work on both).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crawbl_proto::conversation::v1::{
    Agent, AgentStatus, Conversation, Message, MessageContent, MessageRole, MessageStatus,
};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::ConversationError;
use crate::validate::NewUserMessage;

/// The agents every workspace starts with; the first answers conversations that name none.
const DEFAULT_AGENTS: [(&str, &str, &str); 2] = [
    (
        "assistant",
        "Assistant",
        "A general-purpose assistant for everyday questions.",
    ),
    (
        "researcher",
        "Researcher",
        "Digs into a topic and reports what it found, with sources.",
    ),
];

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

// ---- agents ----

/// Creates the workspace's default agents if it has none yet (idempotent, race-safe).
pub async fn ensure_default_agents(pool: &AnyPool, workspace_id: &str) -> Result<(), sqlx::Error> {
    let now = now_ms();
    for (position, (slug, name, description)) in DEFAULT_AGENTS.iter().enumerate() {
        sqlx::query(
            "INSERT INTO agents (id, workspace_id, slug, name, description, status, position, created_at)
             VALUES ($1, $2, $3, $4, $5, 'online', $6, $7)
             ON CONFLICT (workspace_id, slug) DO NOTHING",
        )
        .bind(new_id())
        .bind(workspace_id)
        .bind(*slug)
        .bind(*name)
        .bind(*description)
        .bind(position as i64)
        .bind(now)
        .execute(pool)
        .await?;
    }
    Ok(())
}

const AGENT_COLUMNS: &str = "id, workspace_id, slug, name, description, status";

fn agent_from_row(row: &AnyRow) -> Result<Agent, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Agent {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        status: agent_status_from_db(&status) as i32,
    })
}

pub async fn list_agents(pool: &AnyPool, workspace_id: &str) -> Result<Vec<Agent>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE workspace_id = $1 ORDER BY position, id"
    )))
    .bind(workspace_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(agent_from_row).collect()
}

pub async fn find_agent(
    pool: &AnyPool,
    workspace_id: &str,
    agent_id: &str,
) -> Result<Option<Agent>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE workspace_id = $1 AND id = $2"
    )))
    .bind(workspace_id)
    .bind(agent_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(agent_from_row).transpose()
}

/// The agent that answers a conversation: its own, or the workspace's first.
pub async fn agent_for_conversation(
    pool: &AnyPool,
    conversation: &Conversation,
) -> Result<Agent, ConversationError> {
    if let Some(agent_id) = &conversation.agent_id {
        return find_agent(pool, &conversation.workspace_id, agent_id)
            .await?
            .ok_or(ConversationError::AgentNotFound);
    }
    ensure_default_agents(pool, &conversation.workspace_id).await?;
    list_agents(pool, &conversation.workspace_id)
        .await?
        .into_iter()
        .next()
        .ok_or(ConversationError::AgentNotFound)
}

pub async fn set_agent_status(
    pool: &AnyPool,
    agent_id: &str,
    status: AgentStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE agents SET status = $1 WHERE id = $2")
        .bind(agent_status_to_db(status))
        .bind(agent_id)
        .execute(pool)
        .await?;
    Ok(())
}

// ---- conversations ----

const CONVERSATION_COLUMNS: &str = "id, workspace_id, title, agent_id, created_at, updated_at";

fn conversation_from_row(row: &AnyRow) -> Result<Conversation, sqlx::Error> {
    Ok(Conversation {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        title: row.try_get("title")?,
        agent_id: row.try_get("agent_id")?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        last_message: None,
    })
}

pub async fn create_conversation(
    pool: &AnyPool,
    workspace_id: &str,
    title: &str,
    agent_id: Option<&str>,
) -> Result<Conversation, sqlx::Error> {
    let now = now_ms();
    let conversation = Conversation {
        id: new_id(),
        workspace_id: workspace_id.to_owned(),
        title: title.to_owned(),
        agent_id: agent_id.map(str::to_owned),
        created_at_ms: now,
        updated_at_ms: now,
        last_message: None,
    };
    sqlx::query(
        "INSERT INTO conversations (id, workspace_id, title, agent_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&conversation.id)
    .bind(&conversation.workspace_id)
    .bind(&conversation.title)
    .bind(conversation.agent_id.as_deref())
    .bind(now)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(conversation)
}

pub async fn list_conversations(
    pool: &AnyPool,
    workspace_id: &str,
) -> Result<Vec<Conversation>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE workspace_id = $1
         ORDER BY updated_at DESC, id DESC"
    )))
    .bind(workspace_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(conversation_from_row).collect()
}

pub async fn find_conversation(
    pool: &AnyPool,
    workspace_id: &str,
    conversation_id: &str,
) -> Result<Option<Conversation>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE workspace_id = $1 AND id = $2"
    )))
    .bind(workspace_id)
    .bind(conversation_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut conversation = conversation_from_row(&row)?;
    conversation.last_message = list_messages(pool, conversation_id, None, 1)
        .await?
        .0
        .into_iter()
        .next();
    Ok(Some(conversation))
}

// ---- messages ----

const MESSAGE_COLUMNS: &str = "id, workspace_id, conversation_id, role, author_id, agent_id, \
    local_id, content_type, text, status, created_at, updated_at";

fn message_from_row(row: &AnyRow) -> Result<Message, sqlx::Error> {
    let role: String = row.try_get("role")?;
    let status: String = row.try_get("status")?;
    Ok(Message {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        conversation_id: row.try_get("conversation_id")?,
        role: role_from_db(&role) as i32,
        author_id: row.try_get("author_id")?,
        agent_id: row.try_get("agent_id")?,
        local_id: row.try_get("local_id")?,
        content: Some(MessageContent {
            r#type: row.try_get("content_type")?,
            text: row.try_get("text")?,
        }),
        status: message_status_from_db(&status) as i32,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
    })
}

/// Stores a user message unless one with the same `localId` from the same author is already in
/// the conversation. Returns the stored message and whether this call created it.
pub async fn insert_user_message(
    pool: &AnyPool,
    new: &NewUserMessage,
) -> Result<(Message, bool), sqlx::Error> {
    let now = now_ms();
    let id = new_id();
    let inserted = sqlx::query(
        "INSERT INTO messages (id, workspace_id, conversation_id, role, author_id, agent_id,
             local_id, content_type, text, status, created_at, updated_at)
         VALUES ($1, $2, $3, 'user', $4, NULL, $5, 'text', $6, 'sent', $7, $7)
         ON CONFLICT (conversation_id, author_id, local_id) DO NOTHING",
    )
    .bind(&id)
    .bind(&new.workspace_id)
    .bind(&new.conversation_id)
    .bind(&new.author_id)
    .bind(&new.local_id)
    .bind(&new.text)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        touch_conversation(pool, &new.conversation_id, now).await?;
    }
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE conversation_id = $1 AND author_id = $2 AND local_id = $3"
    )))
    .bind(&new.conversation_id)
    .bind(&new.author_id)
    .bind(&new.local_id)
    .fetch_one(pool)
    .await?;
    Ok((message_from_row(&row)?, inserted))
}

/// Creates the agent's (empty, `streaming`) reply to a turn.
pub async fn insert_agent_message(
    pool: &AnyPool,
    workspace_id: &str,
    conversation_id: &str,
    agent_id: &str,
) -> Result<Message, sqlx::Error> {
    let now = now_ms();
    let message = Message {
        id: new_id(),
        workspace_id: workspace_id.to_owned(),
        conversation_id: conversation_id.to_owned(),
        role: MessageRole::Agent as i32,
        author_id: None,
        agent_id: Some(agent_id.to_owned()),
        local_id: None,
        content: Some(MessageContent {
            r#type: "text".to_owned(),
            text: String::new(),
        }),
        status: MessageStatus::Streaming as i32,
        created_at_ms: now,
        updated_at_ms: now,
    };
    sqlx::query(
        "INSERT INTO messages (id, workspace_id, conversation_id, role, author_id, agent_id,
             local_id, content_type, text, status, created_at, updated_at)
         VALUES ($1, $2, $3, 'agent', NULL, $4, NULL, 'text', '', 'streaming', $5, $5)",
    )
    .bind(&message.id)
    .bind(workspace_id)
    .bind(conversation_id)
    .bind(agent_id)
    .bind(now)
    .execute(pool)
    .await?;
    touch_conversation(pool, conversation_id, now).await?;
    Ok(message)
}

/// Sets a message's final text and status, returning the updated message.
pub async fn finish_message(
    pool: &AnyPool,
    mut message: Message,
    text: String,
    status: MessageStatus,
) -> Result<Message, sqlx::Error> {
    let now = now_ms();
    sqlx::query("UPDATE messages SET text = $1, status = $2, updated_at = $3 WHERE id = $4")
        .bind(&text)
        .bind(message_status_to_db(status))
        .bind(now)
        .bind(&message.id)
        .execute(pool)
        .await?;
    if let Some(content) = message.content.as_mut() {
        content.text = text;
    }
    message.status = status as i32;
    message.updated_at_ms = now;
    Ok(message)
}

async fn touch_conversation(
    pool: &AnyPool,
    conversation_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE conversations SET updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(conversation_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Position of a message in newest-first order; the cursor of the next page is the last one seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageCursor {
    pub created_at_ms: i64,
    pub id: String,
}

impl MessageCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}|{}", self.created_at_ms, self.id))
    }

    pub fn decode(raw: &str) -> Result<Self, ConversationError> {
        let invalid = || ConversationError::invalid("INVALID_CURSOR", "the cursor is not valid");
        if raw.len() > 256 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (created_at, id) = text.split_once('|').ok_or_else(invalid)?;
        Ok(Self {
            created_at_ms: created_at.parse().map_err(|_| invalid())?,
            id: id.to_owned(),
        })
    }
}

/// One page of a conversation's messages, newest first, and the cursor of the next page.
pub async fn list_messages(
    pool: &AnyPool,
    conversation_id: &str,
    before: Option<&MessageCursor>,
    limit: u32,
) -> Result<(Vec<Message>, Option<MessageCursor>), sqlx::Error> {
    // One row more than asked tells whether another page exists.
    let fetch = i64::from(limit) + 1;
    let rows = match before {
        None => {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            )))
            .bind(conversation_id)
            .bind(fetch)
            .fetch_all(pool)
            .await?
        }
        Some(cursor) => {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1
                   AND (created_at < $2 OR (created_at = $2 AND id < $3))
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            )))
            .bind(conversation_id)
            .bind(cursor.created_at_ms)
            .bind(&cursor.id)
            .bind(fetch)
            .fetch_all(pool)
            .await?
        }
    };
    let mut messages = rows
        .iter()
        .map(message_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next = if messages.len() > limit as usize {
        messages.truncate(limit as usize);
        messages.last().map(|last| MessageCursor {
            created_at_ms: last.created_at_ms,
            id: last.id.clone(),
        })
    } else {
        None
    };
    Ok((messages, next))
}

// ---- enum <-> text ----

fn agent_status_to_db(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Busy => "busy",
        AgentStatus::Offline => "offline",
        AgentStatus::Online | AgentStatus::Unspecified => "online",
    }
}

fn agent_status_from_db(text: &str) -> AgentStatus {
    match text {
        "busy" => AgentStatus::Busy,
        "offline" => AgentStatus::Offline,
        _ => AgentStatus::Online,
    }
}

fn role_from_db(text: &str) -> MessageRole {
    match text {
        "user" => MessageRole::User,
        "agent" => MessageRole::Agent,
        "system" => MessageRole::System,
        _ => MessageRole::Unspecified,
    }
}

fn message_status_to_db(status: MessageStatus) -> &'static str {
    match status {
        MessageStatus::Sent | MessageStatus::Unspecified => "sent",
        MessageStatus::Streaming => "streaming",
        MessageStatus::Delivered => "delivered",
        MessageStatus::Incomplete => "incomplete",
        MessageStatus::Failed => "failed",
    }
}

fn message_status_from_db(text: &str) -> MessageStatus {
    match text {
        "sent" => MessageStatus::Sent,
        "streaming" => MessageStatus::Streaming,
        "delivered" => MessageStatus::Delivered,
        "incomplete" => MessageStatus::Incomplete,
        "failed" => MessageStatus::Failed,
        _ => MessageStatus::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_encoding() {
        let cursor = MessageCursor {
            created_at_ms: 1_700_000_000_123,
            id: "0190-abc".into(),
        };
        assert_eq!(MessageCursor::decode(&cursor.encode()).ok(), Some(cursor));
    }

    #[test]
    fn garbage_cursors_are_rejected_not_panicked_on() {
        for raw in ["", "!!!", "bm9waXBl", &"A".repeat(10_000)] {
            assert!(MessageCursor::decode(raw).is_err(), "{raw:?}");
        }
    }
}
