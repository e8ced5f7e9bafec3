//! The durable event log (the transactional outbox): events are appended, unnumbered, in the
//! transaction of the change they describe; once committed, [`number_pending`] gives each
//! workspace's new events the next numbers of its sequence (growing by one, no gaps) in the
//! order they were appended. Publish progress is kept per workspace (`published_seq`: every event
//! numbered up to it reached the bus), so an event row is written twice (appended, numbered), not
//! three times.
//!
//! Numbering after the commit is what lets sends to one workspace commit side by side: when the
//! append took the next number itself, it held the workspace's sequence row until its
//! transaction committed, so every write to the workspace waited for the one before (issue 18).
//! A reader of the log never sees a gap: the numbers of a batch become visible together.

use crawbl_proto::events::v1::{Event, event};
use prost::Message as _;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Connection as _, Row};

use super::{POSTGRES, now_ms};

/// Appends `kind` to the workspace's log inside the caller's transaction, unnumbered (the
/// outbox numbers it once the transaction committed). Returns the event (its `seq` still 0)
/// and its place in the log: appends are placed in the order they happen, and turns queue by
/// their message's place.
pub async fn append_event(
    connection: &mut AnyConnection,
    workspace_id: &str,
    kind: event::Kind,
) -> Result<(Event, i64), sqlx::Error> {
    let event = unnumbered_event(workspace_id, kind);
    let place: i64 = sqlx::query_scalar(
        "INSERT INTO events (workspace_id, envelope, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(workspace_id)
    .bind(event.encode_to_vec())
    .bind(now_ms())
    .fetch_one(&mut *connection)
    .await?;
    Ok((event, place))
}

/// An event to append: unnumbered, in the current trace.
pub(super) fn unnumbered_event(workspace_id: &str, kind: event::Kind) -> Event {
    Event {
        workspace_id: workspace_id.to_owned(),
        trace_context: crawbl_infra::trace::current_context(),
        kind: Some(kind),
        ..Event::default()
    }
}

/// Numbers the workspace's committed unnumbered events in the order they were appended and
/// returns them, oldest first. One short transaction holds the workspace's sequence row, so
/// numberings of one workspace (from any instance) take turns and never give a number twice.
pub async fn number_pending(pool: &AnyPool, workspace_id: &str) -> Result<Vec<Event>, sqlx::Error> {
    let mut connection = pool.acquire().await?;
    if connection.backend_name() == POSTGRES {
        // The same steps in one function (migration 20261210000002): one round trip.
        let rows = sqlx::query("SELECT seq, envelope FROM number_pending_events($1)")
            .bind(workspace_id)
            .fetch_all(&mut *connection)
            .await?;
        return sorted_events(&rows);
    }
    let mut tx = connection.begin().await?;
    let last = match lock_sequence(&mut tx, workspace_id).await? {
        Some(last) => last,
        None => {
            sqlx::query(
                "INSERT INTO workspace_sequences (workspace_id, last_seq) VALUES ($1, 0)
                 ON CONFLICT (workspace_id) DO NOTHING",
            )
            .bind(workspace_id)
            .execute(&mut *tx)
            .await?;
            lock_sequence(&mut tx, workspace_id)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?
        }
    };
    let rows = sqlx::query(
        "UPDATE events SET seq = numbered.seq
         FROM (SELECT id, $2 + ROW_NUMBER() OVER (ORDER BY id) AS seq FROM events
               WHERE workspace_id = $1 AND seq IS NULL) AS numbered
         WHERE events.id = numbered.id
         RETURNING events.seq, events.envelope",
    )
    .bind(workspace_id)
    .bind(last)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(Vec::new());
    }
    sqlx::query("UPDATE workspace_sequences SET last_seq = $2 WHERE workspace_id = $1")
        .bind(workspace_id)
        .bind(last + i64::try_from(rows.len()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    sorted_events(&rows)
}

fn sorted_events(rows: &[AnyRow]) -> Result<Vec<Event>, sqlx::Error> {
    let mut events = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
    events.sort_by_key(|event| event.seq);
    Ok(events)
}

/// Locks the workspace's sequence row for the transaction and reads its last number.
async fn lock_sequence(
    connection: &mut AnyConnection,
    workspace_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE workspace_sequences SET last_seq = last_seq WHERE workspace_id = $1
         RETURNING last_seq",
    )
    .bind(workspace_id)
    .fetch_optional(connection)
    .await
}

/// Workspaces with unnumbered events appended before `created_before` (unix ms): left by an
/// instance that stopped between a commit and its numbering.
pub async fn workspaces_with_unnumbered(
    pool: &AnyPool,
    created_before: i64,
    limit: u32,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT workspace_id FROM events WHERE seq IS NULL AND created_at < $1 LIMIT $2",
    )
    .bind(created_before)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
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

/// Marks the workspace's events `first..=last` published, which moves its publish progress to
/// `last` when everything before `first` is published too. Returns `false` when an earlier event
/// is not marked yet (published by another instance, or waiting for the relay after a failed
/// publish): the caller asks again later.
pub async fn mark_published(
    pool: &AnyPool,
    workspace_id: &str,
    first: u64,
    last: u64,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE workspace_sequences SET published_seq = $3
         WHERE workspace_id = $1 AND published_seq >= $2 - 1 AND published_seq < $3",
    )
    .bind(workspace_id)
    .bind(seq_to_db(first))
    .bind(seq_to_db(last))
    .execute(pool)
    .await?
    .rows_affected();
    if moved > 0 {
        return Ok(true);
    }
    // Already covered (the relay published them again and moved past), or not yet reachable.
    let progress: Option<i64> =
        sqlx::query_scalar("SELECT published_seq FROM workspace_sequences WHERE workspace_id = $1")
            .bind(workspace_id)
            .fetch_optional(pool)
            .await?;
    // No row: the workspace was deleted; nothing is left to mark.
    Ok(progress.is_none_or(|progress| progress >= seq_to_db(last)))
}

/// Numbered events not yet published (above their workspace's publish progress) and created
/// before `created_before` (unix ms), oldest first per workspace, at most `limit`.
///
/// The workspaces first (the partial index of those with something unpublished), then each one's
/// tail by its number: one join let the planner read every event older than the cutoff, the
/// whole log, where only its unpublished tail is wanted.
pub async fn pending_events(
    pool: &AnyPool,
    created_before: i64,
    limit: u32,
) -> Result<Vec<Event>, sqlx::Error> {
    let behind: Vec<(String, i64)> = sqlx::query_as(
        "SELECT workspace_id, published_seq FROM workspace_sequences
         WHERE last_seq > published_seq ORDER BY workspace_id LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut events = Vec::new();
    for (workspace_id, published) in behind {
        let room = limit as usize - events.len();
        if room == 0 {
            break;
        }
        let rows = sqlx::query(
            "SELECT seq, envelope FROM events
             WHERE workspace_id = $1 AND seq > $2 AND created_at < $3 ORDER BY seq LIMIT $4",
        )
        .bind(&workspace_id)
        .bind(published)
        .bind(created_before)
        .bind(i64::try_from(room).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
        for row in &rows {
            events.push(decode_row(row)?);
        }
    }
    Ok(events)
}

/// The workspace's events after `after`, oldest first, at most `limit`, and whether more follow.
pub async fn list_events(
    pool: &AnyPool,
    workspace_id: &str,
    after: u64,
    limit: u32,
) -> Result<(Vec<Event>, bool), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, envelope FROM events WHERE workspace_id = $1 AND seq > $2
         ORDER BY seq LIMIT $3",
    )
    .bind(workspace_id)
    .bind(seq_to_db(after))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let mut events = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
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
    Ok(sqlx::query(
        "DELETE FROM events WHERE created_at < $1 AND seq <= (
             SELECT s.published_seq FROM workspace_sequences s
             WHERE s.workspace_id = events.workspace_id)",
    )
    .bind(created_before)
    .execute(pool)
    .await?
    .rows_affected())
}

/// An event of a `seq, envelope` row: the number is the column's (envelopes written before
/// numbering moved after the commit hold it too).
fn decode_row(row: &AnyRow) -> Result<Event, sqlx::Error> {
    let seq: i64 = row.try_get("seq")?;
    let bytes: Vec<u8> = row.try_get("envelope")?;
    let mut event =
        Event::decode(bytes.as_slice()).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
    event.seq = u64::try_from(seq).unwrap_or_default();
    Ok(event)
}

fn seq_to_db(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
