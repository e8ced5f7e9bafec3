use crawbl_proto::conversation::v1::{
    Message, MessageContent, MessageRole, MessageStatus, ToolCall,
};
use crawbl_proto::events::v1::{Event, event};
use prost::Message as _;
use sqlx::any::AnyArguments;
use sqlx::any::AnyRow;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Connection as _, Row};

use super::usage::usage_to_db;
use super::{
    Cursor, POSTGRES, SendTarget, TurnFence, append_event, day_and_month, insert_turn, new_id,
    now_ms, page, send_target_from_row, turn_trace_context, unnumbered_event,
};
use crate::validate::NewUserMessage;

/// Every column of a message, in the order [`message_from_row`] reads them.
pub(super) const MESSAGE_COLUMN_NAMES: [&str; 16] = [
    "id",
    "workspace_id",
    "conversation_id",
    "role",
    "author_id",
    "agent_id",
    "local_id",
    "content_type",
    "text",
    "status",
    "created_at",
    "updated_at",
    "tool_calls",
    "edited_at",
    "deleted_at",
    "mentions",
];
const MESSAGE_COLUMNS: &str = "id, workspace_id, conversation_id, role, author_id, agent_id, \
    local_id, content_type, text, status, created_at, updated_at, tool_calls, edited_at, \
    deleted_at, mentions";

fn message_from_row(row: &AnyRow) -> Result<Message, sqlx::Error> {
    message_from_prefixed_row(row, "")
}

/// A message from columns named with `prefix` (a query that selects a message beside other
/// rows, as `m.id AS {prefix}id`…).
pub(super) fn message_from_prefixed_row(
    row: &AnyRow,
    prefix: &str,
) -> Result<Message, sqlx::Error> {
    let column = |name: &str| format!("{prefix}{name}");
    let role: String = row.try_get(column("role").as_str())?;
    let status: String = row.try_get(column("status").as_str())?;
    Ok(Message {
        id: row.try_get(column("id").as_str())?,
        workspace_id: row.try_get(column("workspace_id").as_str())?,
        conversation_id: row.try_get(column("conversation_id").as_str())?,
        role: role_from_db(&role) as i32,
        author_id: row.try_get(column("author_id").as_str())?,
        agent_id: row.try_get(column("agent_id").as_str())?,
        local_id: row.try_get(column("local_id").as_str())?,
        content: Some(MessageContent {
            r#type: row.try_get(column("content_type").as_str())?,
            text: row.try_get(column("text").as_str())?,
            mentions: mentions_from_db(row.try_get(column("mentions").as_str())?)?,
        }),
        status: message_status_from_db(&status) as i32,
        created_at_ms: row.try_get(column("created_at").as_str())?,
        updated_at_ms: row.try_get(column("updated_at").as_str())?,
        tool_calls: tool_calls_from_db(row.try_get(column("tool_calls").as_str())?)?,
        edited_at_ms: row.try_get(column("edited_at").as_str())?,
        deleted_at_ms: row.try_get(column("deleted_at").as_str())?,
    })
}

/// Mentions are kept as a JSON array of agent ids; none: NULL.
fn mentions_from_db(raw: Option<String>) -> Result<Vec<String>, sqlx::Error> {
    raw.map(|raw| serde_json::from_str(&raw).map_err(|error| sqlx::Error::Decode(Box::new(error))))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn mentions_to_db(mentions: &[String]) -> Option<String> {
    (!mentions.is_empty())
        .then(|| serde_json::to_string(mentions).ok())
        .flatten()
}

/// How tool calls are kept in the `tool_calls` column: a JSON array.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredToolCall {
    call_id: String,
    name: String,
    arguments_json: String,
    result_json: Option<String>,
}

fn tool_calls_from_db(raw: Option<String>) -> Result<Vec<ToolCall>, sqlx::Error> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let stored: Vec<StoredToolCall> =
        serde_json::from_str(&raw).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
    Ok(stored
        .into_iter()
        .map(|call| ToolCall {
            call_id: call.call_id,
            name: call.name,
            arguments_json: call.arguments_json,
            result_json: call.result_json,
        })
        .collect())
}

fn tool_calls_to_db(calls: &[ToolCall]) -> Option<String> {
    if calls.is_empty() {
        return None;
    }
    let stored: Vec<StoredToolCall> = calls
        .iter()
        .map(|call| StoredToolCall {
            call_id: call.call_id.clone(),
            name: call.name.clone(),
            arguments_json: call.arguments_json.clone(),
            result_json: call.result_json.clone(),
        })
        .collect();
    serde_json::to_string(&stored).ok()
}

/// Stores a user message and its `message.new` event, with a turn for each of `answering` (agent
/// ids), unless the same author already sent one with this `localId` in the conversation.
/// Returns the stored message and, when this call created it, its event. Concurrent retries
/// create exactly one.
pub async fn insert_user_message(
    pool: &AnyPool,
    new: &NewUserMessage,
    answering: &[String],
) -> Result<(Message, Option<Event>), sqlx::Error> {
    let message = user_message(new, now_ms());
    let mut connection = pool.acquire().await?;
    let stored = if connection.backend_name() == POSTGRES {
        store_in_one_statement(&mut connection, new, &message, answering).await?
    } else {
        store_in_transaction(&mut connection, new, &message, answering).await?
    };
    if let Some(event) = stored {
        return Ok((message, Some(event)));
    }
    drop(connection);
    // A retry: the message this author already stored with this local id.
    let stored = find_sent(pool, new)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok((stored, None))
}

/// The message `new` is once stored at `now`.
fn user_message(new: &NewUserMessage, now: i64) -> Message {
    Message {
        id: new_id(),
        workspace_id: new.workspace_id.clone(),
        conversation_id: new.conversation_id.clone(),
        role: MessageRole::User as i32,
        author_id: Some(new.author_id.clone()),
        agent_id: None,
        local_id: Some(new.local_id.clone()),
        content: Some(MessageContent {
            r#type: "text".to_owned(),
            text: new.text.clone(),
            mentions: new.mentions.clone(),
        }),
        status: MessageStatus::Sent as i32,
        created_at_ms: now,
        updated_at_ms: now,
        tool_calls: Vec::new(),
        edited_at_ms: None,
        deleted_at_ms: None,
    }
}

/// The tail of a one-statement write on Postgres (after a CTE `written` that returns the new
/// message's row, or none): the conversation's time, then the `message.new` event (`appended`,
/// its id the event's place). Parameters: `$2` workspace, `$3` conversation, `$7` time, `$9`
/// the event's envelope.
///
/// The event is appended from the conversation's update, so it takes its place in the log only
/// once it holds the conversation's row: writes to one conversation take their places in the
/// order they commit, which is the order they are numbered in, and turns queue by place. (CTEs
/// run in no set order apart from what they read: appended from the message, a send could take
/// its place before an earlier one committed, and its turn ran first.)
macro_rules! touched_then_appended {
    () => {
        "touched AS (
             UPDATE conversations SET updated_at = $7
             WHERE id = $3 AND EXISTS (SELECT 1 FROM written) RETURNING id),
         appended AS (
             INSERT INTO events (workspace_id, envelope, created_at)
             SELECT $2, $9, $7 FROM touched RETURNING id)"
    };
}

/// The first CTE of a one-statement send on Postgres: the user message inserted from `$source`
/// (its columns' values `$1`–`$8`, see [`bind_user_message`]) unless its local id was taken.
macro_rules! written_user_message {
    ($source:literal) => {
        concat!(
            "written AS (
                 INSERT INTO messages (id, workspace_id, conversation_id, role, author_id,
                     agent_id, local_id, content_type, text, status, created_at, updated_at,
                     mentions) ",
            $source,
            "
                 ON CONFLICT (conversation_id, author_id, local_id) DO NOTHING
                 RETURNING id)"
        )
    };
}

/// The CTE of a one-statement send on Postgres that queues its turns: `$select` gives each
/// turn's columns, in the order listed.
macro_rules! queued_turns {
    ($select:literal) => {
        concat!(
            "queued AS (
                 INSERT INTO turns (id, workspace_id, conversation_id, user_message_id, agent_id,
                                    seq, state, attempts, trace_context, created_at, updated_at) ",
            $select,
            ")"
        )
    };
}

/// Binds `$1`–`$8` of a user message's insert: its columns.
fn bind_user_message<'q>(
    query: Query<'q, Any, AnyArguments>,
    new: &'q NewUserMessage,
    message: &'q Message,
) -> Query<'q, Any, AnyArguments> {
    query
        .bind(&message.id)
        .bind(&new.workspace_id)
        .bind(&new.conversation_id)
        .bind(&new.author_id)
        .bind(&new.local_id)
        .bind(&new.text)
        .bind(message.created_at_ms)
        .bind(mentions_to_db(&new.mentions))
}

/// [`insert_user_message`] on Postgres: the message, the conversation's time, the event and
/// the turns in one statement (its own transaction), so a send makes one round trip where a
/// transaction took six; each round trip wakes two processes, which is what a send costs most
/// on a small machine (BENCHMARKS.md, send path). `None`: the local id was taken.
async fn store_in_one_statement(
    connection: &mut AnyConnection,
    new: &NewUserMessage,
    message: &Message,
    answering: &[String],
) -> Result<Option<Event>, sqlx::Error> {
    let event = unnumbered_event(&new.workspace_id, event::Kind::MessageNew(message.clone()));
    // Parallel lists (ids hold no comma): the Any driver binds no arrays.
    let turn_ids: Vec<String> = answering.iter().map(|_| new_id()).collect();
    let query = sqlx::query(concat!(
        "WITH ",
        written_user_message!(
            "VALUES ($1, $2, $3, 'user', $4, NULL, $5, 'text', $6, 'sent', $7, $7, $8)"
        ),
        ", ",
        touched_then_appended!(),
        ", ",
        queued_turns!(
            "SELECT answering.turn_id, $2, $3, $1, answering.agent_id, appended.id, 'queued', 0,
                    $12, $7, $7
             FROM appended, unnest(string_to_array($10, ','), string_to_array($11, ','))
                  AS answering(turn_id, agent_id)"
        ),
        "
         SELECT id FROM appended",
    ));
    let place = bind_user_message(query, new, message)
        .bind(event.encode_to_vec())
        .bind(turn_ids.join(","))
        .bind(answering.join(","))
        .bind(turn_trace_context())
        .fetch_optional(&mut *connection)
        .await?;
    Ok(place.map(|_| event))
}

/// [`insert_user_message`] on SQLite: the same writes in one transaction. `None`: the local id
/// was taken.
async fn store_in_transaction(
    connection: &mut AnyConnection,
    new: &NewUserMessage,
    message: &Message,
    answering: &[String],
) -> Result<Option<Event>, sqlx::Error> {
    let now = message.created_at_ms;
    let mut tx = connection.begin().await?;
    let query = sqlx::query(
        "INSERT INTO messages (id, workspace_id, conversation_id, role, author_id, agent_id,
             local_id, content_type, text, status, created_at, updated_at, mentions)
         VALUES ($1, $2, $3, 'user', $4, NULL, $5, 'text', $6, 'sent', $7, $7, $8)
         ON CONFLICT (conversation_id, author_id, local_id) DO NOTHING",
    );
    let inserted = bind_user_message(query, new, message)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if !inserted {
        tx.rollback().await?;
        return Ok(None);
    }
    touch_conversation(&mut tx, &new.conversation_id, now).await?;
    let (event, place) = append_event(
        &mut tx,
        &new.workspace_id,
        event::Kind::MessageNew(message.clone()),
    )
    .await?;
    // The turns that answer it are committed with it: a stored message always gets its turns.
    for agent_id in answering {
        let turn = super::NewTurn {
            workspace_id: &new.workspace_id,
            conversation_id: &new.conversation_id,
            user_message_id: &message.id,
            agent_id,
            place,
        };
        insert_turn(&mut tx, &turn).await?;
    }
    tx.commit().await?;
    Ok(Some(event))
}

/// What [`send_plain`] did.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per send and taken apart at once"
)]
pub enum PlainSend {
    /// Stored, with its `message.new` event and a turn for `answerer`.
    Stored {
        message: Message,
        event: Event,
        answerer: String,
    },
    /// Not stored: the conversation and what admits a send to it, for the full way, which says
    /// why (no active agent answers it, the quota) or finds a retry's message.
    Declined(SendTarget),
    /// No such conversation in the workspace.
    NotFound,
}

/// On Postgres, a plain send (no agent named, its workspace given) in one statement: the read of
/// its conversation, its answering agent and the quota ([`find_conversation_to_send`]), and
/// when the agent answers and the quota allows, the writes of [`insert_user_message`]. One
/// round trip where a send made two. `None` on SQLite. The caller checked the runtime first.
pub async fn send_plain(
    pool: &AnyPool,
    new: &NewUserMessage,
    default_quota: Option<u64>,
    at_ms: i64,
) -> Result<Option<PlainSend>, sqlx::Error> {
    let mut connection = pool.acquire().await?;
    if connection.backend_name() != POSTGRES {
        return Ok(None);
    }
    let message = user_message(new, at_ms);
    let event = unnumbered_event(&new.workspace_id, event::Kind::MessageNew(message.clone()));
    let query = sqlx::query(concat!(
        "WITH target AS (",
        send_target!("$2", "$3", "$11"),
        "),
         admitted AS (
             SELECT answering_agent_id FROM target
             WHERE answering_agent_id IS NOT NULL
               AND COALESCE(tokens, 0) < COALESCE(
                   CASE WHEN plan IS NULL THEN $13 ELSE monthly_token_quota END,
                   9223372036854775807)), ",
        written_user_message!(
            "SELECT $1, $2, $3, 'user', $4, NULL, $5, 'text', $6, 'sent', $7, $7, $8
             FROM admitted"
        ),
        ", ",
        touched_then_appended!(),
        ", ",
        queued_turns!(
            "SELECT $10, $2, $3, $1, admitted.answering_agent_id, appended.id, 'queued', 0,
                    $12, $7, $7
             FROM appended, admitted"
        ),
        "
         SELECT target.*, (SELECT id FROM appended) AS place FROM target",
    ));
    let row = bind_user_message(query, new, &message)
        .bind(event.encode_to_vec())
        .bind(new_id())
        .bind(day_and_month(at_ms).1)
        .bind(turn_trace_context())
        .bind(default_quota.map(usage_to_db))
        .fetch_optional(&mut *connection)
        .await?;
    let Some(row) = row else {
        return Ok(Some(PlainSend::NotFound));
    };
    let target = send_target_from_row(&row)?;
    Ok(Some(
        match (row.try_get::<Option<i64>, _>("place")?, target.answerer) {
            (Some(_), Some(answerer)) => PlainSend::Stored {
                message,
                event,
                answerer,
            },
            (_, answerer) => PlainSend::Declined(SendTarget { answerer, ..target }),
        },
    ))
}

/// The message this author already sent with this `localId` in the conversation, if any.
pub async fn find_sent(
    pool: &AnyPool,
    new: &NewUserMessage,
) -> Result<Option<Message>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE conversation_id = $1 AND author_id = $2 AND local_id = $3"
    )))
    .bind(&new.conversation_id)
    .bind(&new.author_id)
    .bind(&new.local_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(message_from_row).transpose()
}

/// Creates the agent's (empty, `streaming`) reply to `reply_to` with its `message.new` event,
/// and records it on the turn. `None` when the turn is no longer `fence`'s owner's.
pub async fn insert_agent_message(
    pool: &AnyPool,
    fence: &TurnFence,
    workspace_id: &str,
    conversation_id: &str,
    agent_id: &str,
    reply_to: &str,
) -> Result<Option<(Message, Event)>, sqlx::Error> {
    let reply = EmptyReply {
        workspace_id,
        conversation_id,
        agent_id,
        reply_to,
        status: MessageStatus::Streaming,
    };
    let mut connection = pool.acquire().await?;
    if connection.backend_name() == POSTGRES {
        return start_reply_in_one_statement(&mut connection, fence, &reply).await;
    }
    let mut tx = connection.begin().await?;
    let (message, event) = insert_empty_reply(&mut tx, &reply).await?;
    if !super::set_reply(&mut tx, fence, &message.id).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some((message, event)))
}

/// An agent reply with no text yet (or ever).
struct EmptyReply<'a> {
    workspace_id: &'a str,
    conversation_id: &'a str,
    agent_id: &'a str,
    /// The user message it answers.
    reply_to: &'a str,
    status: MessageStatus,
}

/// [`insert_agent_message`] on Postgres: the turn's row (fenced), the reply, the
/// conversation's time and the event in one statement, as [`store_in_one_statement`] does for a
/// send.
async fn start_reply_in_one_statement(
    connection: &mut AnyConnection,
    fence: &TurnFence,
    reply: &EmptyReply<'_>,
) -> Result<Option<(Message, Event)>, sqlx::Error> {
    let message = empty_reply(reply);
    let event = unnumbered_event(reply.workspace_id, event::Kind::MessageNew(message.clone()));
    let place: Option<i64> = sqlx::query_scalar(concat!(
        "WITH fenced AS (
             UPDATE turns SET reply_id = $1, updated_at = $7
             WHERE id = $8 AND owner = $10 AND state = 'running' RETURNING id),
         written AS (
             INSERT INTO messages (id, workspace_id, conversation_id, role, author_id, agent_id,
                 local_id, content_type, text, status, created_at, updated_at, reply_to)
             SELECT $1, $2, $3, 'agent', NULL, $4, NULL, 'text', '', $5, $7, $7, $6 FROM fenced
             RETURNING id),
         ",
        touched_then_appended!(),
        "
         SELECT id FROM appended",
    ))
    .bind(&message.id)
    .bind(reply.workspace_id)
    .bind(reply.conversation_id)
    .bind(reply.agent_id)
    .bind(message_status_to_db(reply.status))
    .bind(reply.reply_to)
    .bind(message.created_at_ms)
    .bind(&fence.turn_id)
    .bind(event.encode_to_vec())
    .bind(&fence.owner)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(place.map(|_| (message, event)))
}

/// `reply` as a message, before it is stored.
fn empty_reply(reply: &EmptyReply<'_>) -> Message {
    let now = now_ms();
    Message {
        id: new_id(),
        workspace_id: reply.workspace_id.to_owned(),
        conversation_id: reply.conversation_id.to_owned(),
        role: MessageRole::Agent as i32,
        author_id: None,
        agent_id: Some(reply.agent_id.to_owned()),
        local_id: None,
        content: Some(MessageContent {
            r#type: "text".to_owned(),
            text: String::new(),
            mentions: Vec::new(),
        }),
        status: reply.status as i32,
        created_at_ms: now,
        updated_at_ms: now,
        tool_calls: Vec::new(),
        edited_at_ms: None,
        deleted_at_ms: None,
    }
}

/// Stores `reply` with its `message.new` event, inside the caller's transaction.
async fn insert_empty_reply(
    connection: &mut AnyConnection,
    reply: &EmptyReply<'_>,
) -> Result<(Message, Event), sqlx::Error> {
    let message = empty_reply(reply);
    let now = message.created_at_ms;
    sqlx::query(
        "INSERT INTO messages (id, workspace_id, conversation_id, role, author_id, agent_id,
             local_id, content_type, text, status, created_at, updated_at, reply_to)
         VALUES ($1, $2, $3, 'agent', NULL, $4, NULL, 'text', '', $5, $6, $6, $7)",
    )
    .bind(&message.id)
    .bind(reply.workspace_id)
    .bind(reply.conversation_id)
    .bind(reply.agent_id)
    .bind(message_status_to_db(reply.status))
    .bind(now)
    .bind(reply.reply_to)
    .execute(&mut *connection)
    .await?;
    touch_conversation(connection, reply.conversation_id, now).await?;
    let (event, _) = append_event(
        connection,
        reply.workspace_id,
        event::Kind::MessageNew(message.clone()),
    )
    .await?;
    Ok((message, event))
}

/// Ends a reply that is still `streaming`: its final text, status and tool calls, and its
/// `message.updated`. With `fence`, the turn's row goes in the same transaction, and nothing is
/// written unless the turn is still the fence's owner's. `None` when nothing was written: the
/// reply already ended (a compare-and-set on `streaming`: a delivered reply is never rewritten),
/// its conversation was deleted, or the turn is no longer this owner's. `push`: queue the reply
/// for push notifications.
pub async fn finish_message(
    pool: &AnyPool,
    mut message: Message,
    text: String,
    status: MessageStatus,
    fence: Option<&TurnFence>,
    usage: Option<&super::TurnUsage>,
    push: bool,
) -> Result<Option<(Message, Event)>, sqlx::Error> {
    let now = now_ms();
    if let Some(content) = message.content.as_mut() {
        content.text = text;
    }
    message.status = status as i32;
    message.updated_at_ms = now;
    // The members who are not looking are told, through the push outbox (`push.rs`): of an
    // answer, and of one that failed (with what it said before: `incomplete`, or nothing).
    // Nothing is queued while no provider is on: it could never be sent.
    let push = push
        && matches!(
            status,
            MessageStatus::Delivered | MessageStatus::Failed | MessageStatus::Incomplete
        );
    let ending = Ending {
        message: &message,
        fence,
        usage,
        push,
        now,
    };
    let mut connection = pool.acquire().await?;
    let event = if connection.backend_name() == POSTGRES {
        finish_in_one_statement(&mut connection, &ending).await?
    } else {
        finish_in_transaction(&mut connection, &ending).await?
    };
    Ok(event.map(|event| (message, event)))
}

/// A reply's end, as [`finish_message`] writes it: `message` as it is to be stored.
struct Ending<'a> {
    message: &'a Message,
    fence: Option<&'a TurnFence>,
    usage: Option<&'a super::TurnUsage>,
    push: bool,
    now: i64,
}

impl Ending<'_> {
    /// The reply's final text.
    fn text(&self) -> &str {
        self.message
            .content
            .as_ref()
            .map_or("", |content| &content.text)
    }
}

/// [`finish_message`] on Postgres: the turn's row, the reply, its usage, the event and the push
/// job in one statement, where a transaction took seven round trips (as a send's, see
/// [`store_in_one_statement`]). `None`: nothing written.
async fn finish_in_one_statement(
    connection: &mut AnyConnection,
    ending: &Ending<'_>,
) -> Result<Option<Event>, sqlx::Error> {
    let message = ending.message;
    let event = unnumbered_event(
        &message.workspace_id,
        event::Kind::MessageUpdated(message.clone()),
    );
    let (day, month) = super::day_and_month(ending.now);
    let usage = ending.usage;
    // With a fence, the reply is written only if the turn's row was this owner's (and went);
    // the usage and the push job only with the reply; the event from the reply's update, after
    // it holds the reply's row (see `touched_then_appended!`).
    let place: Option<i64> = sqlx::query_scalar(
        "WITH ended AS (
             DELETE FROM turns WHERE id = $6 AND owner = $7 RETURNING id),
         finished AS (
             UPDATE messages SET text = $1, status = $2, updated_at = $3, tool_calls = $4
             WHERE id = $5 AND status = 'streaming'
               AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM ended))
             RETURNING workspace_id, conversation_id),
         used AS (
             INSERT INTO turn_usage (reply_id, workspace_id, conversation_id, agent_id, user_id,
                                     model, input_tokens, output_tokens, duration_ms, day,
                                     created_at)
             SELECT $5, workspace_id, conversation_id, $10, $11, $12, $13, $14, $15, $16, $3
             FROM finished WHERE $10::text IS NOT NULL
             ON CONFLICT (reply_id) DO NOTHING
             RETURNING workspace_id),
         counted AS (
             INSERT INTO workspace_month_usage (workspace_id, month, tokens)
             SELECT workspace_id, $17, $18 FROM used
             ON CONFLICT (workspace_id, month)
             DO UPDATE SET tokens = workspace_month_usage.tokens + excluded.tokens),
         appended AS (
             INSERT INTO events (workspace_id, envelope, created_at)
             SELECT workspace_id, $8, $3 FROM finished RETURNING id),
         pushed AS (
             INSERT INTO push_jobs (message_id, workspace_id, conversation_id, seq, event_id,
                                    next_attempt_at, created_at)
             SELECT $5, finished.workspace_id, finished.conversation_id, 0, appended.id, $3, $3
             FROM finished, appended WHERE $9
             ON CONFLICT (message_id) DO NOTHING)
         SELECT id FROM appended",
    )
    .bind(ending.text())
    .bind(message_status_to_db(message.status()))
    .bind(ending.now)
    .bind(tool_calls_to_db(&message.tool_calls))
    .bind(&message.id)
    .bind(ending.fence.map(|fence| &fence.turn_id))
    .bind(ending.fence.map(|fence| &fence.owner))
    .bind(event.encode_to_vec())
    .bind(ending.push)
    .bind(usage.map(|usage| &usage.agent_id))
    .bind(usage.map(|usage| &usage.user_id))
    .bind(usage.map(|usage| &usage.model))
    .bind(usage.map(|usage| super::usage_to_db(usage.input_tokens)))
    .bind(usage.map(|usage| super::usage_to_db(usage.output_tokens)))
    .bind(usage.map(|usage| super::usage_to_db(usage.duration_ms)))
    .bind(day)
    .bind(month)
    .bind(usage.map(|usage| super::usage_to_db(usage.tokens())))
    .fetch_optional(&mut *connection)
    .await?;
    Ok(place.map(|_| event))
}

/// [`finish_message`] on SQLite: the same writes in one transaction.
async fn finish_in_transaction(
    connection: &mut AnyConnection,
    ending: &Ending<'_>,
) -> Result<Option<Event>, sqlx::Error> {
    let message = ending.message;
    let mut tx = connection.begin().await?;
    if let Some(fence) = ending.fence
        && !super::end_turn(&mut tx, fence).await?
    {
        tx.rollback().await?;
        return Ok(None);
    }
    let updated = sqlx::query(
        "UPDATE messages SET text = $1, status = $2, updated_at = $3, tool_calls = $4
         WHERE id = $5 AND status = 'streaming'",
    )
    .bind(ending.text())
    .bind(message_status_to_db(message.status()))
    .bind(ending.now)
    .bind(tool_calls_to_db(&message.tool_calls))
    .bind(&message.id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !updated {
        // The turn (if fenced) is over all the same.
        tx.commit().await?;
        return Ok(None);
    }
    if let Some(usage) = ending.usage {
        super::record_usage(&mut tx, message, usage).await?;
    }
    let (event, place) = append_event(
        &mut tx,
        &message.workspace_id,
        event::Kind::MessageUpdated(message.clone()),
    )
    .await?;
    if ending.push {
        super::insert_push_job(&mut tx, message, place, ending.now).await?;
    }
    tx.commit().await?;
    Ok(Some(event))
}

/// Ends a turn that had not started (still queued) with a `cancelled` reply of `agent_id`, and
/// that reply's `message.new`. `None`: the turn is no longer queued (it started, or ended).
pub async fn cancel_queued_turn(
    pool: &AnyPool,
    turn_id: &str,
    user_message: &Message,
    agent_id: &str,
) -> Result<Option<(Message, Event)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let removed = sqlx::query("DELETE FROM turns WHERE id = $1 AND state = 'queued'")
        .bind(turn_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed != 1 {
        tx.rollback().await?;
        return Ok(None);
    }
    let reply = EmptyReply {
        workspace_id: &user_message.workspace_id,
        conversation_id: &user_message.conversation_id,
        agent_id,
        reply_to: &user_message.id,
        status: MessageStatus::Cancelled,
    };
    let stored = insert_empty_reply(&mut tx, &reply).await?;
    tx.commit().await?;
    Ok(Some(stored))
}

/// The user message an agent reply answers.
pub async fn reply_to(pool: &AnyPool, reply_id: &str) -> Result<Option<String>, sqlx::Error> {
    let answered: Option<Option<String>> =
        sqlx::query_scalar("SELECT reply_to FROM messages WHERE id = $1")
            .bind(reply_id)
            .fetch_optional(pool)
            .await?;
    Ok(answered.flatten())
}

/// Saves what a streaming reply has so far (text and tool calls), so an interruption keeps what
/// clients were shown. `false`: the turn is no longer `fence`'s owner's or the reply ended (or
/// was deleted), and the owner must stop.
pub async fn checkpoint_reply(
    pool: &AnyPool,
    fence: &TurnFence,
    reply: &Message,
    text: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !super::still_owned(&mut tx, fence).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    let saved = sqlx::query(
        "UPDATE messages SET text = $1, tool_calls = $2, updated_at = $3
         WHERE id = $4 AND status = 'streaming'",
    )
    .bind(text)
    .bind(tool_calls_to_db(&reply.tool_calls))
    .bind(now_ms())
    .bind(&reply.id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(saved)
}

/// Ends every message left `streaming` that no turn row owns: only a version from before durable
/// turns could leave one (every reply since is recorded on its turn, and a turn whose owner died
/// is taken over by another instance instead). `incomplete` with the text it had, or `failed`
/// when it had none. Returns their `message.updated` events.
pub async fn recover_streaming_messages(pool: &AnyPool) -> Result<Vec<Event>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE status = 'streaming'
           AND NOT EXISTS (SELECT 1 FROM turns WHERE turns.reply_id = messages.id)
         ORDER BY created_at"
    )))
    .fetch_all(pool)
    .await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let message = message_from_row(row)?;
        let text = message
            .content
            .as_ref()
            .map(|content| content.text.clone())
            .unwrap_or_default();
        let status = ended_status(&text, &message.tool_calls);
        // Replies of a version from before push: not pushed now.
        if let Some((_, event)) =
            finish_message(pool, message, text, status, None, None, false).await?
        {
            events.push(event);
        }
    }
    Ok(events)
}

/// How a reply that was cut short ends: `incomplete` when it had shown something (text or a
/// tool call), `failed` when it had not.
pub fn ended_status(text: &str, tool_calls: &[ToolCall]) -> MessageStatus {
    if text.is_empty() && tool_calls.is_empty() {
        MessageStatus::Failed
    } else {
        MessageStatus::Incomplete
    }
}

/// A message by id.
pub async fn find_message(
    pool: &AnyPool,
    message_id: &str,
) -> Result<Option<Message>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1"
    )))
    .bind(message_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(message_from_row).transpose()
}

/// The reply of `agent_id` to a user message, if one was started.
pub async fn find_reply(
    pool: &AnyPool,
    user_message_id: &str,
    agent_id: &str,
) -> Result<Option<Message>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE reply_to = $1 AND agent_id = $2
         ORDER BY created_at DESC LIMIT 1"
    )))
    .bind(user_message_id)
    .bind(agent_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(message_from_row).transpose()
}

/// Every agent's reply to a user message, oldest first.
pub async fn find_replies(
    pool: &AnyPool,
    user_message_id: &str,
) -> Result<Vec<Message>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE reply_to = $1 ORDER BY created_at, id"
    )))
    .bind(user_message_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(message_from_row).collect()
}

/// Why an author's change to a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorChange {
    NotFound,
    /// An agent's message, or another person's.
    NotAuthor,
    Deleted,
}

/// What a change an author asked for did: the message as it now is and its durable event.
pub type Changed = Result<(Message, Event), AuthorChange>;

/// The author replaces the text of their own user message: `edited_at` set, `message.updated`.
pub async fn edit_message(
    pool: &AnyPool,
    workspace_id: &str,
    conversation_id: &str,
    message_id: &str,
    author_id: &str,
    text: &str,
) -> Result<Changed, sqlx::Error> {
    change_own_message(
        pool,
        (workspace_id, conversation_id, message_id, author_id),
        "text = $5, edited_at = $6, updated_at = $6",
        text,
        |message| event::Kind::MessageUpdated(message.clone()),
    )
    .await
}

/// The author deletes their own user message: it stays as a tombstone (no text, `deleted_at`),
/// and `message.deleted` tells clients.
pub async fn delete_message(
    pool: &AnyPool,
    workspace_id: &str,
    conversation_id: &str,
    message_id: &str,
    author_id: &str,
) -> Result<Changed, sqlx::Error> {
    change_own_message(
        pool,
        (workspace_id, conversation_id, message_id, author_id),
        "text = $5, mentions = NULL, deleted_at = $6, updated_at = $6",
        "",
        |message| {
            event::Kind::MessageDeleted(crawbl_proto::events::v1::MessageDeleted {
                id: message.id.clone(),
                conversation_id: message.conversation_id.clone(),
            })
        },
    )
    .await
}

/// Applies `set` (with `$5` = `text`, `$6` = now) to a user message of `author_id` that is not
/// deleted, and logs the event `kind_of` makes of the result, in one transaction.
async fn change_own_message(
    pool: &AnyPool,
    (workspace_id, conversation_id, message_id, author_id): (&str, &str, &str, &str),
    set: &str,
    text: &str,
    kind_of: impl Fn(&Message) -> event::Kind,
) -> Result<Changed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE messages SET {set}
         WHERE id = $1 AND workspace_id = $2 AND conversation_id = $3 AND role = 'user'
           AND author_id = $4 AND deleted_at IS NULL
         RETURNING {MESSAGE_COLUMNS}"
    )))
    .bind(message_id)
    .bind(workspace_id)
    .bind(conversation_id)
    .bind(author_id)
    .bind(text)
    .bind(now_ms())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        tx.rollback().await?;
        let found = find_message(pool, message_id)
            .await?
            .filter(|m| m.workspace_id == workspace_id && m.conversation_id == conversation_id);
        return Ok(Err(match found {
            None => AuthorChange::NotFound,
            Some(m)
                if m.role() != MessageRole::User || m.author_id.as_deref() != Some(author_id) =>
            {
                AuthorChange::NotAuthor
            }
            Some(_) => AuthorChange::Deleted,
        }));
    };
    let message = message_from_row(&row)?;
    let (event, _) = append_event(&mut tx, workspace_id, kind_of(&message)).await?;
    tx.commit().await?;
    Ok(Ok((message, event)))
}

async fn touch_conversation(
    connection: &mut AnyConnection,
    conversation_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE conversations SET updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(conversation_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// One page of a conversation's messages, newest first, and the cursor of the next page.
pub async fn list_messages(
    pool: &AnyPool,
    conversation_id: &str,
    before: Option<&Cursor>,
    limit: u32,
) -> Result<(Vec<Message>, Option<Cursor>), sqlx::Error> {
    // One row more than asked tells whether another page exists.
    let fetch = i64::from(limit) + 1;
    // No cursor reads from the newest: every row is "before" the end of time.
    let newest = Cursor {
        at_ms: i64::MAX,
        id: String::new(),
    };
    let before = before.unwrap_or(&newest);
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1
           AND (created_at < $2 OR (created_at = $2 AND id < $3))
         ORDER BY created_at DESC, id DESC LIMIT $4"
    )))
    .bind(conversation_id)
    .bind(before.at_ms)
    .bind(&before.id)
    .bind(fetch)
    .fetch_all(pool)
    .await?;
    let messages = rows
        .iter()
        .map(message_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page(messages, limit, |message| Cursor {
        at_ms: message.created_at_ms,
        id: message.id.clone(),
    }))
}

/// What a turn may show the model of its conversation: the newest `limit` messages up to and
/// including `through` (the user message the turn answers), newest first. Replies still
/// streaming, replies that failed with no text and deleted messages are left out; they say
/// nothing (yet).
pub async fn context_messages(
    pool: &AnyPool,
    through: &Message,
    limit: u32,
) -> Result<Vec<Message>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1
           AND (created_at < $2 OR (created_at = $2 AND id <= $3))
           AND status <> 'streaming' AND NOT (status = 'failed' AND text = '')
           AND deleted_at IS NULL
         ORDER BY created_at DESC, id DESC LIMIT $4"
    )))
    .bind(&through.conversation_id)
    .bind(through.created_at_ms)
    .bind(&through.id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(message_from_row).collect()
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
        MessageStatus::Cancelled => "cancelled",
    }
}

fn message_status_from_db(text: &str) -> MessageStatus {
    match text {
        "sent" => MessageStatus::Sent,
        "streaming" => MessageStatus::Streaming,
        "delivered" => MessageStatus::Delivered,
        "incomplete" => MessageStatus::Incomplete,
        "failed" => MessageStatus::Failed,
        "cancelled" => MessageStatus::Cancelled,
        _ => MessageStatus::Unspecified,
    }
}
