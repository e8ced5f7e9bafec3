//! The durable event log (the transactional outbox): events are appended in the transaction of
//! the change they describe, with a per-workspace sequence that grows by one, and marked
//! published once they reached the bus.

use crawbl_proto::events::v1::{Event, event};
use prost::Message as _;
use sqlx::{AnyConnection, AnyPool, Row};

use super::now_ms;

/// Appends `kind` to the workspace's log inside the caller's transaction and returns the event
/// with its sequence number. The sequence row is locked until the transaction ends, so
/// concurrent appends to one workspace are numbered one after the other with no gaps.
pub async fn append_event(
    connection: &mut AnyConnection,
    workspace_id: &str,
    kind: event::Kind,
) -> Result<Event, sqlx::Error> {
    sqlx::query(
        "INSERT INTO workspace_sequences (workspace_id, last_seq) VALUES ($1, 0)
         ON CONFLICT (workspace_id) DO NOTHING",
    )
    .bind(workspace_id)
    .execute(&mut *connection)
    .await?;
    let seq: i64 = sqlx::query(
        "UPDATE workspace_sequences SET last_seq = last_seq + 1 WHERE workspace_id = $1
         RETURNING last_seq",
    )
    .bind(workspace_id)
    .fetch_one(&mut *connection)
    .await?
    .try_get("last_seq")?;
    let event = Event {
        workspace_id: workspace_id.to_owned(),
        seq: u64::try_from(seq).unwrap_or_default(),
        trace_context: crawbl_infra::trace::current_context(),
        kind: Some(kind),
        ..Event::default()
    };
    sqlx::query(
        "INSERT INTO events (workspace_id, seq, envelope, created_at, published_at)
         VALUES ($1, $2, $3, $4, NULL)",
    )
    .bind(workspace_id)
    .bind(seq)
    .bind(event.encode_to_vec())
    .bind(now_ms())
    .execute(&mut *connection)
    .await?;
    Ok(event)
}

/// Takes the relay's lock for the caller's transaction (Postgres only: `false` when another
/// instance's relay holds it).
pub async fn try_relay_lock(connection: &mut AnyConnection) -> Result<bool, sqlx::Error> {
    /// Any fixed number: the lock's name among the database's advisory locks.
    const RELAY_LOCK: i64 = 0x6372_6177_626c_7231; // "crawblr1"
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(RELAY_LOCK)
        .fetch_one(connection)
        .await
}

pub async fn mark_published(pool: &AnyPool, event: &Event) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE events SET published_at = $1 WHERE workspace_id = $2 AND seq = $3")
        .bind(now_ms())
        .bind(&event.workspace_id)
        .bind(seq_to_db(event.seq))
        .execute(pool)
        .await?;
    Ok(())
}

/// Unpublished events created before `created_before` (unix ms), oldest first per workspace.
pub async fn pending_events(
    pool: &AnyPool,
    created_before: i64,
    limit: u32,
) -> Result<Vec<Event>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT envelope FROM events WHERE published_at IS NULL AND created_at < $1
         ORDER BY workspace_id, seq LIMIT $2",
    )
    .bind(created_before)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_envelope).collect()
}

/// The workspace's events after `after`, oldest first, at most `limit`, and whether more follow.
pub async fn list_events(
    pool: &AnyPool,
    workspace_id: &str,
    after: u64,
    limit: u32,
) -> Result<(Vec<Event>, bool), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT envelope FROM events WHERE workspace_id = $1 AND seq > $2
         ORDER BY seq LIMIT $3",
    )
    .bind(workspace_id)
    .bind(seq_to_db(after))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let mut events = rows
        .iter()
        .map(decode_envelope)
        .collect::<Result<Vec<_>, _>>()?;
    let has_more = events.len() > limit as usize;
    events.truncate(limit as usize);
    Ok((events, has_more))
}

/// The oldest sequence still kept and the newest one given out (0 when none).
pub async fn sequence_bounds(
    pool: &AnyPool,
    workspace_id: &str,
) -> Result<(u64, u64), sqlx::Error> {
    let oldest: Option<i64> =
        sqlx::query("SELECT MIN(seq) AS oldest FROM events WHERE workspace_id = $1")
            .bind(workspace_id)
            .fetch_one(pool)
            .await?
            .try_get("oldest")?;
    let last: Option<i64> =
        sqlx::query("SELECT last_seq FROM workspace_sequences WHERE workspace_id = $1")
            .bind(workspace_id)
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("last_seq"))
            .transpose()?;
    let to_u64 = |value: Option<i64>| value.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    Ok((to_u64(oldest), to_u64(last)))
}

/// Deletes published events created before `created_before`; returns how many.
pub async fn prune_events(pool: &AnyPool, created_before: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM events WHERE created_at < $1 AND published_at IS NOT NULL")
            .bind(created_before)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

fn decode_envelope(row: &sqlx::any::AnyRow) -> Result<Event, sqlx::Error> {
    let bytes: Vec<u8> = row.try_get("envelope")?;
    Event::decode(bytes.as_slice()).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

fn seq_to_db(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
