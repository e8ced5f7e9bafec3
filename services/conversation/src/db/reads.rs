//! Read positions: per user and conversation, the newest message the user has read. Unread
//! counts are computed from it where conversations are read (see `conversations.rs`).

use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::now_ms;

/// A user's read position in a conversation after a [`mark_read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPosition {
    pub last_read_message_id: String,
    pub unread_count: u64,
    /// False: the position was already at or past the message; nothing changed.
    pub moved: bool,
}

/// The messages a reader has not read: of others, not deleted, after the reader's position (a
/// correlated subquery over `c` (conversations) and `r` (the reader's `read_states` row, joined
/// on `$reader`)). `{reader}` is the placeholder of the reader's id.
pub(super) fn unread_count_sql(reader: &str) -> String {
    format!(
        "(SELECT COUNT(*) FROM messages u
          WHERE u.conversation_id = c.id AND u.deleted_at IS NULL
            AND (u.author_id IS NULL OR u.author_id <> {reader})
            AND (r.last_read_at IS NULL OR u.created_at > r.last_read_at
                 OR (u.created_at = r.last_read_at AND u.id > r.last_read_message_id)))"
    )
}

/// Moves `user_id`'s position in the conversation to `message_id` (a message of it), unless it
/// is already there or further. `None`: no such message in the conversation.
pub async fn mark_read(
    pool: &AnyPool,
    workspace_id: &str,
    conversation_id: &str,
    user_id: &str,
    message_id: &str,
) -> Result<Option<ReadPosition>, sqlx::Error> {
    let created_at: Option<i64> = sqlx::query_scalar(
        "SELECT created_at FROM messages
         WHERE id = $1 AND conversation_id = $2 AND workspace_id = $3",
    )
    .bind(message_id)
    .bind(conversation_id)
    .bind(workspace_id)
    .fetch_optional(pool)
    .await?;
    let Some(created_at) = created_at else {
        return Ok(None);
    };
    // Forward only: an older position (by the conversation's order) never replaces a newer one,
    // whichever request arrives last.
    let moved = sqlx::query(
        "INSERT INTO read_states (conversation_id, user_id, workspace_id, last_read_message_id,
                                  last_read_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (conversation_id, user_id) DO UPDATE
           SET last_read_message_id = excluded.last_read_message_id,
               last_read_at = excluded.last_read_at, updated_at = excluded.updated_at
           WHERE read_states.last_read_at < excluded.last_read_at
              OR (read_states.last_read_at = excluded.last_read_at
                  AND read_states.last_read_message_id < excluded.last_read_message_id)",
    )
    .bind(conversation_id)
    .bind(user_id)
    .bind(workspace_id)
    .bind(message_id)
    .bind(created_at)
    .bind(now_ms())
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT r.last_read_message_id, {} AS unread_count
         FROM conversations c JOIN read_states r ON r.conversation_id = c.id AND r.user_id = $1
         WHERE c.id = $2",
        unread_count_sql("$1")
    )))
    .bind(user_id)
    .bind(conversation_id)
    .fetch_optional(pool)
    .await?;
    // Gone between the two statements: the conversation was deleted.
    let Some(row) = row else { return Ok(None) };
    Ok(Some(ReadPosition {
        last_read_message_id: row.try_get("last_read_message_id")?,
        unread_count: u64::try_from(row.try_get::<i64, _>("unread_count")?).unwrap_or_default(),
        moved,
    }))
}
