use crawbl_proto::conversation::v1::{Agent, AgentStatus, Conversation};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::{new_id, now_ms};
use crate::ConversationError;

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

const AGENT_COLUMNS: &str = "id, workspace_id, slug, name, description, status";

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

/// After a restart no turn is running, so no agent is busy.
pub async fn reset_busy_agents(pool: &AnyPool) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("UPDATE agents SET status = 'online' WHERE status = 'busy'")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

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
