//! Deleting everything of a workspace (its account's deletion took it).

use sqlx::AnyPool;

/// Every table of this service keyed by workspace, in the order they are emptied: messages
/// before their conversations, conversations before the agents they name, the event log and its
/// sequence last (the writes of a turn still running were fenced off by deleting its row first).
/// A new table with a `workspace_id` belongs here.
/// Messages and turns are found through their conversations (the indexes they have).
const WORKSPACE_TABLES: [(&str, &str); 11] = [
    ("turns", BY_CONVERSATION),
    ("read_states", BY_WORKSPACE),
    ("messages", BY_CONVERSATION),
    ("conversations", BY_WORKSPACE),
    ("agents", BY_WORKSPACE),
    ("turn_usage", BY_WORKSPACE),
    ("turn_errors", BY_WORKSPACE),
    ("workspace_month_usage", BY_WORKSPACE),
    ("workspace_plans", BY_WORKSPACE),
    ("events", BY_WORKSPACE),
    ("workspace_sequences", BY_WORKSPACE),
];
const BY_WORKSPACE: &str = "workspace_id = $1";
const BY_CONVERSATION: &str =
    "conversation_id IN (SELECT id FROM conversations WHERE workspace_id = $1)";

/// What [`delete_workspace_data`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeletedWorkspaceData {
    pub conversations: u64,
    pub messages: u64,
}

/// The ids of the workspace's conversations.
pub async fn conversation_ids(
    pool: &AnyPool,
    workspace_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM conversations WHERE workspace_id = $1")
        .bind(workspace_id)
        .fetch_all(pool)
        .await
}

/// Deletes the workspace's turns, so that every write of a turn still running (fenced by its
/// row) is refused from now on. Its own transaction, before the rest: it waits for a turn that
/// is writing right now to commit, holding no other lock that such a write needs.
pub async fn delete_workspace_turns(
    pool: &AnyPool,
    workspace_id: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM turns WHERE {BY_CONVERSATION}"
    )))
    .bind(workspace_id)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Deletes every row of the workspace in one transaction. Idempotent.
pub async fn delete_workspace_data(
    pool: &AnyPool,
    workspace_id: &str,
) -> Result<DeletedWorkspaceData, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut deleted = DeletedWorkspaceData::default();
    // Turns again: one queued by a send that raced the first step.
    for (table, rows_of_workspace) in WORKSPACE_TABLES {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE {rows_of_workspace}"
        )))
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        match table {
            "messages" => deleted.messages = rows,
            "conversations" => deleted.conversations = rows,
            _ => {}
        }
    }
    tx.commit().await?;
    Ok(deleted)
}
