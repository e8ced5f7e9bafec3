use crawbl_proto::conversation::v1::Conversation;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::usage::plan_and_month_tokens_of;
use super::{
    Cursor, MESSAGE_COLUMN_NAMES, Plan, day_and_month, message_from_prefixed_row, new_id, now_ms,
    page, unread_count_sql,
};

/// Selects conversations (`c`) with, in the same row, their last message (columns `m_…`) and
/// the read state of the reader bound as `$1` (empty: none, and no unread count): one query for
/// a whole page, however many conversations.
fn select_conversations(condition: &str) -> String {
    let message_columns = MESSAGE_COLUMN_NAMES
        .iter()
        .map(|name| format!("m.{name} AS m_{name}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT c.id, c.workspace_id, c.title, c.agent_id, c.created_at, c.updated_at,
                r.last_read_message_id,
                CASE WHEN $1 = '' THEN 0 ELSE {unread} END AS unread_count,
                {message_columns}
         FROM conversations c
         LEFT JOIN read_states r ON r.conversation_id = c.id AND r.user_id = $1
         LEFT JOIN messages m ON m.id = (SELECT x.id FROM messages x
                                         WHERE x.conversation_id = c.id
                                         ORDER BY x.created_at DESC, x.id DESC LIMIT 1)
         WHERE {condition}",
        unread = unread_count_sql("$1"),
    )
}

fn conversation_from_row(row: &AnyRow) -> Result<Conversation, sqlx::Error> {
    let has_message = row.try_get::<Option<String>, _>("m_id")?.is_some();
    Ok(Conversation {
        last_message: has_message
            .then(|| message_from_prefixed_row(row, "m_"))
            .transpose()?,
        unread_count: u64::try_from(row.try_get::<i64, _>("unread_count")?).unwrap_or_default(),
        last_read_message_id: row.try_get("last_read_message_id")?,
        ..own_fields_from_row(row)?
    })
}

/// The conversation's own columns only.
fn own_fields_from_row(row: &AnyRow) -> Result<Conversation, sqlx::Error> {
    Ok(Conversation {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        title: row.try_get("title")?,
        agent_id: row.try_get("agent_id")?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        ..Conversation::default()
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
        unread_count: 0,
        last_read_message_id: None,
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
/// message and, for `reader` (a user id, or empty), the unread count and read position.
pub async fn list_conversations(
    pool: &AnyPool,
    workspace_id: &str,
    reader: &str,
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
        "{} ORDER BY c.updated_at DESC, c.id DESC LIMIT $5",
        select_conversations(
            "c.workspace_id = $2 AND (c.updated_at < $3 OR (c.updated_at = $3 AND c.id < $4))"
        )
    )))
    .bind(reader)
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
    Ok(page(conversations, limit, |conversation| Cursor {
        at_ms: conversation.updated_at_ms,
        id: conversation.id.clone(),
    }))
}

/// The conversation, in `workspace_id` (empty: in any workspace, for a caller who then checks
/// it is one of theirs), without its last message or a reader's state: what a send, a turn or a
/// scope check needs, in one indexed read.
pub async fn find_conversation(
    pool: &AnyPool,
    workspace_id: &str,
    conversation_id: &str,
) -> Result<Option<Conversation>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, workspace_id, title, agent_id, created_at, updated_at FROM conversations
         WHERE ($1 = '' OR workspace_id = $1) AND id = $2",
    )
    .bind(workspace_id)
    .bind(conversation_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(own_fields_from_row).transpose()
}

/// What a send reads before it stores anything (see [`find_conversation_to_send`]).
pub struct SendTarget {
    pub conversation: Conversation,
    /// The agent that answers a message naming none, when one read can tell.
    pub answerer: Option<String>,
    /// The workspace's plan (`None`: the default) and the tokens it used in the month.
    pub plan: Option<Plan>,
    pub month_tokens: u64,
}

/// The read of a send's target (see [`find_conversation_to_send`]), its parameters given by
/// place: the workspace (empty: any), the conversation, the month of the usage counted.
macro_rules! send_target {
    ($workspace:literal, $conversation:literal, $month:literal) => {
        concat!(
            "SELECT c.id, c.workspace_id, c.title, c.agent_id, c.created_at, c.updated_at,
                    CASE WHEN c.agent_id IS NULL
                         THEN (SELECT a.id FROM agents a
                               WHERE a.workspace_id = c.workspace_id AND a.archived_at IS NULL
                               ORDER BY a.position, a.id LIMIT 1)
                         ELSE (SELECT a.id FROM agents a
                               WHERE a.workspace_id = c.workspace_id AND a.id = c.agent_id
                                 AND a.archived_at IS NULL)
                    END AS answering_agent_id,
                    p.plan, p.monthly_token_quota, u.tokens
             FROM conversations c
             LEFT JOIN workspace_plans p ON p.workspace_id = c.workspace_id
             LEFT JOIN workspace_month_usage u ON u.workspace_id = c.workspace_id AND u.month = ",
            $month,
            "
             WHERE (",
            $workspace,
            " = '' OR c.workspace_id = ",
            $workspace,
            ") AND c.id = ",
            $conversation
        )
    };
}

/// [`find_conversation`] for a send, with what admits it: the agent that answers a message
/// naming none, when one read can tell (the conversation's own agent while it is active, or,
/// when it has none, the workspace's first active one; `None` there:
/// [`super::agent_for_conversation`] says why, or seeds the default agents), and the
/// workspace's plan and its tokens in the month of `at_ms`, for the quota. One round trip where
/// a send made three.
pub async fn find_conversation_to_send(
    pool: &AnyPool,
    workspace_id: &str,
    conversation_id: &str,
    at_ms: i64,
) -> Result<Option<SendTarget>, sqlx::Error> {
    let row = sqlx::query(send_target!("$1", "$2", "$3"))
        .bind(workspace_id)
        .bind(conversation_id)
        .bind(day_and_month(at_ms).1)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(send_target_from_row).transpose()
}

/// A row read by [`send_target!`].
pub(super) fn send_target_from_row(row: &AnyRow) -> Result<SendTarget, sqlx::Error> {
    let (plan, month_tokens) = plan_and_month_tokens_of(row)?;
    Ok(SendTarget {
        conversation: own_fields_from_row(row)?,
        answerer: row.try_get("answering_agent_id")?,
        plan,
        month_tokens,
    })
}

/// The conversation, in `workspace_id` (empty: in any workspace, for a caller who then checks
/// it is one of theirs), with `reader`'s unread count and read position (empty: none).
pub async fn find_conversation_for(
    pool: &AnyPool,
    workspace_id: &str,
    conversation_id: &str,
    reader: &str,
) -> Result<Option<Conversation>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(select_conversations(
        "($2 = '' OR c.workspace_id = $2) AND c.id = $3",
    )))
    .bind(reader)
    .bind(workspace_id)
    .bind(conversation_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(conversation_from_row).transpose()
}

/// Deletes the conversation and its messages; false when it did not exist in the workspace.
pub async fn delete_conversation(
    pool: &AnyPool,
    workspace_id: &str,
    conversation_id: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM read_states WHERE conversation_id = $1 AND workspace_id = $2")
        .bind(conversation_id)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
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
