//! A workspace's agents: seeded on first use, then workspace data that owners and admins edit.
//! Every change is logged as a durable `agent.updated` event in the same transaction, so every
//! device learns of it and a reconnecting one replays it.

use crawbl_proto::conversation::v1::{Agent, AgentStatus, Conversation, McpServer};
use crawbl_proto::events::v1::{Event, event};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Row};

use super::{append_event, new_id, now_ms};
use crate::ConversationError;
use crate::validate::{AgentChanges, NewAgent};

/// One seeded agent.
struct DefaultAgent {
    slug: &'static str,
    name: &'static str,
    description: &'static str,
    tools: &'static str,
}

/// The agents every workspace starts with; the first answers conversations that name none.
const DEFAULT_AGENTS: [DefaultAgent; 2] = [
    DefaultAgent {
        slug: "assistant",
        name: "Assistant",
        description: "A general-purpose assistant for everyday questions.",
        tools: r#"["time","calculator"]"#,
    },
    DefaultAgent {
        slug: "researcher",
        name: "Researcher",
        description: "Digs into a topic and reports what it found, with sources.",
        tools: "[]",
    },
];

const AGENT_COLUMNS: &str = "id, workspace_id, slug, name, description, status, system_prompt, \
    model, temperature, tools, mcp_servers, created_at, updated_at, archived_at";

/// Creates the workspace's default agents if it has none yet (idempotent, race-safe).
pub async fn ensure_default_agents(pool: &AnyPool, workspace_id: &str) -> Result<(), sqlx::Error> {
    let now = now_ms();
    for (position, agent) in DEFAULT_AGENTS.iter().enumerate() {
        sqlx::query(
            "INSERT INTO agents (id, workspace_id, slug, name, description, status, position,
                                 created_at, updated_at, tools)
             VALUES ($1, $2, $3, $4, $5, 'online', $6, $7, $7, $8)
             ON CONFLICT (workspace_id, slug) DO NOTHING",
        )
        .bind(new_id())
        .bind(workspace_id)
        .bind(agent.slug)
        .bind(agent.name)
        .bind(agent.description)
        .bind(position as i64)
        .bind(now)
        .bind(agent.tools)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// How an agent's MCP servers are kept in the `mcp_servers` column: a JSON array.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredMcpServer {
    name: String,
    url: String,
}

fn decode_json<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(raw).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

fn tools_to_db(tools: &[String]) -> String {
    serde_json::Value::from(tools.to_vec()).to_string()
}

fn mcp_servers_to_db(servers: &[McpServer]) -> String {
    let stored: Vec<serde_json::Value> = servers
        .iter()
        .map(|server| serde_json::json!({"name": server.name, "url": server.url}))
        .collect();
    serde_json::Value::from(stored).to_string()
}

fn agent_from_row(row: &AnyRow) -> Result<Agent, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let tools: String = row.try_get("tools")?;
    let mcp_servers: String = row.try_get("mcp_servers")?;
    let mcp_servers: Vec<StoredMcpServer> = decode_json(&mcp_servers)?;
    let temperature: Option<f64> = row.try_get("temperature")?;
    Ok(Agent {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        status: agent_status_from_db(&status) as i32,
        system_prompt: row.try_get("system_prompt")?,
        model: row.try_get("model")?,
        #[allow(clippy::cast_possible_truncation)] // stored from an f32
        temperature: temperature.map(|value| value as f32),
        tools: decode_json(&tools)?,
        mcp_servers: mcp_servers
            .into_iter()
            .map(|server| McpServer {
                name: server.name,
                url: server.url,
            })
            .collect(),
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        archived_at_ms: row.try_get("archived_at")?,
    })
}

/// The workspace's agents in their order; archived ones only with `include_archived`.
pub async fn list_agents(
    pool: &AnyPool,
    workspace_id: &str,
    include_archived: bool,
) -> Result<Vec<Agent>, sqlx::Error> {
    let archived = if include_archived {
        ""
    } else {
        "AND archived_at IS NULL"
    };
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE workspace_id = $1 {archived}
         ORDER BY position, id"
    )))
    .bind(workspace_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(agent_from_row).collect()
}

/// An agent of the workspace, archived or not.
pub async fn find_agent(
    pool: &AnyPool,
    workspace_id: &str,
    agent_id: &str,
) -> Result<Option<Agent>, sqlx::Error> {
    find_agent_in(&mut *pool.acquire().await?, workspace_id, agent_id).await
}

async fn find_agent_in(
    connection: &mut AnyConnection,
    workspace_id: &str,
    agent_id: &str,
) -> Result<Option<Agent>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE workspace_id = $1 AND id = $2"
    )))
    .bind(workspace_id)
    .bind(agent_id)
    .fetch_optional(&mut *connection)
    .await?;
    row.as_ref().map(agent_from_row).transpose()
}

/// Stores a new agent after the workspace's others, with its `agent.updated` event.
/// A taken slug is a unique violation ([`is_unique_violation`]).
pub async fn create_agent(pool: &AnyPool, new: &NewAgent) -> Result<(Agent, Event), sqlx::Error> {
    let now = now_ms();
    let id = new_id();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO agents (id, workspace_id, slug, name, description, status, position,
                             created_at, updated_at, system_prompt, model, temperature, tools,
                             mcp_servers)
         VALUES ($1, $2, $3, $4, $5, 'online',
                 (SELECT COALESCE(MAX(position), -1) + 1 FROM agents WHERE workspace_id = $2),
                 $6, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(&new.workspace_id)
    .bind(&new.slug)
    .bind(&new.name)
    .bind(&new.description)
    .bind(now)
    .bind(&new.system_prompt)
    .bind(&new.model)
    .bind(new.temperature.map(f64::from))
    .bind(tools_to_db(&new.tools))
    .bind(mcp_servers_to_db(&new.mcp_servers))
    .execute(&mut *tx)
    .await?;
    let (agent, event) = log_change(&mut tx, &new.workspace_id, &id).await?;
    tx.commit().await?;
    Ok((agent, event))
}

/// Applies `changes` to an agent of the workspace (archived ones too) with its `agent.updated`
/// event; `None` when there is no such agent.
pub async fn update_agent(
    pool: &AnyPool,
    workspace_id: &str,
    agent_id: &str,
    changes: &AgentChanges,
) -> Result<Option<(Agent, Event)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // COALESCE keeps what a change leaves unset; the temperature is set as a whole.
    let updated = sqlx::query(
        "UPDATE agents SET
            slug = COALESCE($1, slug),
            name = COALESCE($2, name),
            description = COALESCE($3, description),
            system_prompt = COALESCE($4, system_prompt),
            model = COALESCE($5, model),
            temperature = CASE WHEN $6 THEN $7 ELSE temperature END,
            tools = COALESCE($8, tools),
            mcp_servers = COALESCE($9, mcp_servers),
            updated_at = $10
         WHERE workspace_id = $11 AND id = $12",
    )
    .bind(changes.slug.as_deref())
    .bind(changes.name.as_deref())
    .bind(changes.description.as_deref())
    .bind(changes.system_prompt.as_deref())
    .bind(changes.model.as_deref())
    .bind(changes.temperature.is_some())
    .bind(changes.temperature.flatten().map(f64::from))
    .bind(changes.tools.as_deref().map(tools_to_db))
    .bind(changes.mcp_servers.as_deref().map(mcp_servers_to_db))
    .bind(now_ms())
    .bind(workspace_id)
    .bind(agent_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !updated {
        tx.rollback().await?;
        return Ok(None);
    }
    let changed = log_change(&mut tx, workspace_id, agent_id).await?;
    tx.commit().await?;
    Ok(Some(changed))
}

/// Archives an agent (it answers no new message). `None` when there is no such agent; an agent
/// already archived is returned as it is, with no event.
pub async fn archive_agent(
    pool: &AnyPool,
    workspace_id: &str,
    agent_id: &str,
) -> Result<Option<(Agent, Option<Event>)>, sqlx::Error> {
    let now = now_ms();
    let mut tx = pool.begin().await?;
    let archived = sqlx::query(
        "UPDATE agents SET archived_at = $1, updated_at = $1
         WHERE workspace_id = $2 AND id = $3 AND archived_at IS NULL",
    )
    .bind(now)
    .bind(workspace_id)
    .bind(agent_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !archived {
        let agent = find_agent_in(&mut tx, workspace_id, agent_id).await?;
        tx.rollback().await?;
        return Ok(agent.map(|agent| (agent, None)));
    }
    let (agent, event) = log_change(&mut tx, workspace_id, agent_id).await?;
    tx.commit().await?;
    Ok(Some((agent, Some(event))))
}

/// Reads the agent as the transaction left it and logs it as `agent.updated`.
async fn log_change(
    connection: &mut AnyConnection,
    workspace_id: &str,
    agent_id: &str,
) -> Result<(Agent, Event), sqlx::Error> {
    let agent = find_agent_in(connection, workspace_id, agent_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let (event, _) = append_event(
        connection,
        workspace_id,
        event::Kind::AgentUpdated(agent.clone()),
    )
    .await?;
    Ok((agent, event))
}

/// The agent that answers a conversation: its own, or the workspace's first that is not
/// archived.
pub async fn agent_for_conversation(
    pool: &AnyPool,
    conversation: &Conversation,
) -> Result<Agent, ConversationError> {
    if let Some(agent_id) = &conversation.agent_id {
        let agent = find_agent(pool, &conversation.workspace_id, agent_id)
            .await?
            .ok_or(ConversationError::AgentNotFound)?;
        if agent.archived_at_ms.is_some() {
            return Err(ConversationError::AgentArchived);
        }
        return Ok(agent);
    }
    active_agents(pool, &conversation.workspace_id)
        .await?
        .into_iter()
        .next()
        .ok_or(ConversationError::NoActiveAgent)
}

/// The workspace's agents that are not archived, in order; a workspace with none yet is seeded
/// with the default agents first. (Seeding only then keeps every send and turn from writing
/// the defaults again; a workspace whose agents are all archived stays without.)
pub async fn active_agents(pool: &AnyPool, workspace_id: &str) -> Result<Vec<Agent>, sqlx::Error> {
    let agents = list_agents(pool, workspace_id, false).await?;
    if !agents.is_empty() {
        return Ok(agents);
    }
    ensure_default_agents(pool, workspace_id).await?;
    list_agents(pool, workspace_id, false).await
}

/// The agent a turn names (`agent_id`; empty: the conversation's), unless it was archived.
pub async fn turn_agent(
    pool: &AnyPool,
    conversation: &Conversation,
    agent_id: &str,
) -> Result<Agent, ConversationError> {
    if agent_id.is_empty() {
        return agent_for_conversation(pool, conversation).await;
    }
    let agent = find_agent(pool, &conversation.workspace_id, agent_id)
        .await?
        .ok_or(ConversationError::AgentNotFound)?;
    if agent.archived_at_ms.is_some() {
        return Err(ConversationError::AgentArchived);
    }
    Ok(agent)
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

/// Agents left `busy` by an instance that stopped mid-turn, in workspaces where no turn runs any
/// more. An agent of a workspace with a running turn (another instance's, or one about to be
/// taken over) is left alone: that turn's end sets it online.
pub async fn reset_busy_agents(pool: &AnyPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE agents SET status = 'online' WHERE status = 'busy'
           AND NOT EXISTS (SELECT 1 FROM turns
                           WHERE turns.workspace_id = agents.workspace_id
                             AND turns.state = 'running')",
    )
    .execute(pool)
    .await?
    .rows_affected())
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
