use crawbl_proto::conversation::v1::Conversation;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::{Cursor, list_messages, new_id, now_ms, page};

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

/// One page of the workspace's conversations, most recently active first, each with its last
/// message.
pub async fn list_conversations(
    pool: &AnyPool,
    workspace_id: &str,
    before: Option<&Cursor>,
    limit: u32,
) -> Result<(Vec<Conversation>, Option<Cursor>), sqlx::Error> {
    let fetch = i64::from(limit) + 1;
    // No cursor reads from the newest: every row is "before" the end of time.
    let newest = Cursor {
        at_ms: i64::MAX,
        id: String::new(),
    };
    let before = before.unwrap_or(&newest);
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE workspace_id = $1
           AND (updated_at < $2 OR (updated_at = $2 AND id < $3))
         ORDER BY updated_at DESC, id DESC LIMIT $4"
    )))
    .bind(workspace_id)
    .bind(before.at_ms)
    .bind(&before.id)
    .bind(fetch)
    .fetch_all(pool)
    .await?;
    let conversations = rows
        .iter()
        .map(conversation_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let (mut conversations, next) = page(conversations, limit, |conversation| Cursor {
        at_ms: conversation.updated_at_ms,
        id: conversation.id.clone(),
    });
    for conversation in &mut conversations {
        conversation.last_message = last_message(pool, &conversation.id).await?;
    }
    Ok((conversations, next))
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
    conversation.last_message = last_message(pool, conversation_id).await?;
    Ok(Some(conversation))
}

async fn last_message(
    pool: &AnyPool,
    conversation_id: &str,
) -> Result<Option<crawbl_proto::conversation::v1::Message>, sqlx::Error> {
    Ok(list_messages(pool, conversation_id, None, 1)
        .await?
        .0
        .into_iter()
        .next())
}

/// Deletes the conversation and its messages; false when it did not exist in the workspace.
pub async fn delete_conversation(
    pool: &AnyPool,
    workspace_id: &str,
    conversation_id: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM messages WHERE conversation_id = $1 AND workspace_id = $2")
        .bind(conversation_id)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query("DELETE FROM conversations WHERE id = $1 AND workspace_id = $2")
        .bind(conversation_id)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(deleted)
}
