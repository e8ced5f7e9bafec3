//! Agent turns as durable rows, so that any number of conversation instances run each turn
//! exactly once, one at a time per conversation, in send order:
//!
//! - a turn is written in the transaction of the user message it answers, with the `seq` of that
//!   message's `message.new` (the workspace's send order), so a committed message always gets
//!   its turn, even when the instance that stored it dies at once;
//! - a message that names several agents gets a turn for each; turns of one agent in one
//!   conversation run one at a time in send order, so several agents answer side by side;
//! - an instance *claims* a queued turn (a conditional update) only when no earlier turn of the
//!   conversation's same agent is still open, and a unique index allows one `running` turn per
//!   conversation and agent;
//! - the owner holds a lease that it renews; a turn whose lease expired is *taken over* by
//!   another instance;
//! - every write of the owner (the reply's creation, its checkpoints, its end) is fenced by the
//!   ownership, and the turn's row is deleted in the transaction that ends its reply.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Row};

use super::{POSTGRES, new_id, now_ms};

/// Proof of ownership every write of a running turn carries: the turn and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnFence {
    pub turn_id: String,
    pub owner: String,
}

/// A turn this instance now owns.
#[derive(Debug, Clone)]
pub struct ClaimedTurn {
    pub fence: TurnFence,
    pub workspace_id: String,
    pub conversation_id: String,
    pub user_message_id: String,
    /// The agent that answers; empty (a turn queued before agents were named per turn): the
    /// conversation's.
    pub agent_id: String,
    /// The reply an earlier owner started, if any.
    pub reply_id: Option<String>,
    /// How many owners (this one included) have run the turn.
    pub attempts: i64,
    /// The trace context of the send that queued the turn.
    pub trace_context: HashMap<String, String>,
}

const TURN_COLUMNS: &str = "id, workspace_id, conversation_id, user_message_id, agent_id, \
    reply_id, attempts, owner, trace_context";

fn claimed_from_row(row: &AnyRow) -> Result<ClaimedTurn, sqlx::Error> {
    Ok(ClaimedTurn {
        fence: TurnFence {
            turn_id: row.try_get("id")?,
            owner: row
                .try_get::<Option<String>, _>("owner")?
                .unwrap_or_default(),
        },
        workspace_id: row.try_get("workspace_id")?,
        conversation_id: row.try_get("conversation_id")?,
        user_message_id: row.try_get("user_message_id")?,
        agent_id: row.try_get("agent_id")?,
        reply_id: row.try_get("reply_id")?,
        attempts: row.try_get("attempts")?,
        // A context that does not parse only costs the trace its parent.
        trace_context: serde_json::from_str(&row.try_get::<String, _>("trace_context")?)
            .unwrap_or_default(),
    })
}

/// A turn to queue: `agent_id` answers the user message.
pub struct NewTurn<'a> {
    pub workspace_id: &'a str,
    pub conversation_id: &'a str,
    pub user_message_id: &'a str,
    pub agent_id: &'a str,
    /// The place in the event log of the user message's `message.new`: turns queue by it
    /// (the `seq` column).
    pub place: i64,
}

/// Queues a turn that answers a user message, inside the message's transaction.
pub async fn insert_turn(
    connection: &mut AnyConnection,
    turn: &NewTurn<'_>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO turns (id, workspace_id, conversation_id, user_message_id, agent_id, seq,
                            state, attempts, trace_context, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, $8, $8)",
    )
    .bind(new_id())
    .bind(turn.workspace_id)
    .bind(turn.conversation_id)
    .bind(turn.user_message_id)
    .bind(turn.agent_id)
    .bind(turn.place)
    .bind(turn_trace_context())
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// The current trace, as a queued turn keeps it to continue it when it runs.
pub(super) fn turn_trace_context() -> String {
    serde_json::to_string(&crawbl_infra::trace::current_context()).unwrap_or_default()
}

/// Which queued turns a claim looks at.
#[derive(Debug, Clone, Copy)]
pub enum Queued<'a> {
    /// Turns queued before this time (unix ms), in every conversation: a poll, which leaves
    /// younger turns to the instance that stored them.
    Before(i64),
    /// The next turn of each of these agents in one conversation, however young. One indexed
    /// read per agent: while sends outpace turns a conversation's queue grows long, and a claim
    /// that looked at every queued turn cost more with each send (BENCHMARKS.md, send path).
    Heads {
        conversation_id: &'a str,
        agent_ids: &'a [String],
    },
}

/// Claims up to `limit` queued turns that may run now: the first open turn of their
/// conversation's agent, while their workspace runs fewer than `per_workspace` turns. A turn another
/// instance claims first is skipped.
pub async fn claim_queued(
    pool: &AnyPool,
    owner: &str,
    lease_ms: i64,
    which: Queued<'_>,
    limits: (u32, i64),
) -> Result<Vec<ClaimedTurn>, sqlx::Error> {
    let (limit, per_workspace) = limits;
    let candidates = match which {
        Queued::Before(at) => {
            let mut connection = pool.acquire().await?;
            let statement = if connection.backend_name() == POSTGRES {
                // The head of each queue, skipping from one queue to the next along
                // `turns_by_conversation`: one index descent per queue, however long the
                // queues. Reading every queued turn to find the queues (below) took 20-57 ms a
                // poll with a backlog of 23,000 turns: a stall of one of two cores
                // (BENCHMARKS.md, send path).
                "WITH RECURSIVE heads AS (
                     (SELECT id, workspace_id, conversation_id, agent_id, seq, state, created_at
                      FROM turns ORDER BY conversation_id, agent_id, seq LIMIT 1)
                     UNION ALL
                     SELECT next.* FROM heads h, LATERAL (
                         SELECT id, workspace_id, conversation_id, agent_id, seq, state, created_at
                         FROM turns t
                         WHERE (t.conversation_id, t.agent_id) > (h.conversation_id, h.agent_id)
                         ORDER BY t.conversation_id, t.agent_id, t.seq LIMIT 1) next)
                 SELECT id, workspace_id FROM heads
                 WHERE state = 'queued' AND created_at < $1
                 ORDER BY seq LIMIT $2"
            } else {
                // SQLite has no LATERAL: the head of each queue with a queued turn, found once
                // per queue (not probed for every queued turn).
                "SELECT t.id, t.workspace_id FROM turns t
                 WHERE t.id IN (SELECT (SELECT o.id FROM turns o
                                        WHERE o.conversation_id = q.conversation_id
                                          AND o.agent_id = q.agent_id
                                        ORDER BY o.seq LIMIT 1)
                                FROM (SELECT DISTINCT conversation_id, agent_id FROM turns
                                      WHERE state = 'queued') q)
                   AND t.state = 'queued' AND t.created_at < $1
                 ORDER BY t.seq LIMIT $2"
            };
            sqlx::query(statement)
                .bind(at)
                .bind(i64::from(limit))
                .fetch_all(&mut *connection)
                .await?
        }
        Queued::Heads {
            conversation_id,
            agent_ids,
        } => {
            let mut heads = Vec::new();
            for agent_id in agent_ids {
                let head = sqlx::query(
                    "SELECT id, workspace_id, state FROM turns
                     WHERE conversation_id = $1 AND agent_id = $2 ORDER BY seq LIMIT 1",
                )
                .bind(conversation_id)
                .bind(agent_id)
                .fetch_optional(pool)
                .await?;
                if let Some(head) = head
                    && head.try_get::<String, _>("state")? == "queued"
                {
                    heads.push(head);
                }
            }
            heads.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            heads
        }
    };
    let mut claimed = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let id: String = candidate.try_get("id")?;
        let workspace_id: String = candidate.try_get("workspace_id")?;
        if let Some(turn) =
            claim_one(pool, owner, lease_ms, &id, &workspace_id, per_workspace).await?
        {
            claimed.push(turn);
        }
    }
    Ok(claimed)
}

/// Claims one queued turn unless its workspace already runs `per_workspace` turns. Claims in one
/// workspace take turns (a lock of the workspace), so the bound holds across instances.
async fn claim_one(
    pool: &AnyPool,
    owner: &str,
    lease_ms: i64,
    id: &str,
    workspace_id: &str,
    per_workspace: i64,
) -> Result<Option<ClaimedTurn>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // On Postgres an advisory lock, apart from the sequence row that numbering the workspace's
    // events holds (sharing it made claims and sends wait on each other). SQLite writes one
    // transaction at a time: this first write takes that lock.
    let lock = if tx.backend_name() == POSTGRES {
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
    } else {
        "UPDATE workspace_sequences SET last_seq = last_seq WHERE workspace_id = $1"
    };
    sqlx::query(lock)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
    // The workspace's running turns are counted in the claim's own statement: it starts after
    // the lock is granted, so it sees every claim committed before (one round trip fewer than
    // counting first).
    let now = now_ms();
    let taken = sqlx::query(AssertSqlSafe(format!(
        "UPDATE turns SET state = 'running', owner = $1, lease_until = $2,
                          attempts = attempts + 1, updated_at = $3
         WHERE id = $4 AND state = 'queued'
           AND (SELECT COUNT(*) FROM turns r
                WHERE r.workspace_id = $5 AND r.state = 'running') < $6
         RETURNING {TURN_COLUMNS}"
    )))
    .bind(owner)
    .bind(now + lease_ms)
    .bind(now)
    .bind(id)
    .bind(workspace_id)
    .bind(per_workspace)
    .fetch_optional(&mut *tx)
    .await;
    match taken {
        Ok(Some(row)) => {
            let turn = claimed_from_row(&row)?;
            tx.commit().await?;
            Ok(Some(turn))
        }
        Ok(None) => {
            tx.rollback().await?;
            Ok(None)
        }
        // Another instance started a turn of this conversation in between.
        Err(error) if super::is_unique_violation(&error) => {
            tx.rollback().await?;
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Takes over up to `limit` running turns whose lease ran out before `expired_before` (unix ms;
/// `i64::MAX` takes every running turn, for a store only this instance uses).
pub async fn take_over_expired(
    pool: &AnyPool,
    owner: &str,
    lease_ms: i64,
    expired_before: i64,
    limit: u32,
) -> Result<Vec<ClaimedTurn>, sqlx::Error> {
    let now = now_ms();
    let candidates: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM turns WHERE state = 'running' AND lease_until < $1
         ORDER BY seq LIMIT $2",
    )
    .bind(expired_before)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut taken = Vec::with_capacity(candidates.len());
    for id in candidates {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE turns SET owner = $1, lease_until = $2, attempts = attempts + 1,
                              updated_at = $3
             WHERE id = $4 AND state = 'running' AND lease_until < $5
             RETURNING {TURN_COLUMNS}"
        )))
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(&id)
        .bind(expired_before)
        .fetch_optional(pool)
        .await?;
        if let Some(row) = row {
            taken.push(claimed_from_row(&row)?);
        }
    }
    Ok(taken)
}

/// What a lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Held,
    /// Held, and someone asked for the turn to stop.
    CancelRequested,
    /// The turn is no longer this owner's to run (it ended, its conversation was deleted, or
    /// another instance took it over after the lease lapsed).
    Lost,
}

/// Extends the owner's lease.
pub async fn renew_lease(
    pool: &AnyPool,
    fence: &TurnFence,
    lease_ms: i64,
) -> Result<Lease, sqlx::Error> {
    let now = now_ms();
    let renewed = sqlx::query(
        "UPDATE turns SET lease_until = $1, updated_at = $2
         WHERE id = $3 AND owner = $4 AND state = 'running'
         RETURNING cancel_requested_at",
    )
    .bind(now + lease_ms)
    .bind(now)
    .bind(&fence.turn_id)
    .bind(&fence.owner)
    .fetch_optional(pool)
    .await?;
    Ok(match renewed {
        None => Lease::Lost,
        Some(row)
            if row
                .try_get::<Option<i64>, _>("cancel_requested_at")?
                .is_some() =>
        {
            Lease::CancelRequested
        }
        Some(_) => Lease::Held,
    })
}

/// A turn that is queued or running.
#[derive(Debug, Clone)]
pub struct OpenTurn {
    pub id: String,
    pub agent_id: String,
    pub running: bool,
}

/// The open turns answering a user message (only `agent_id`'s, when given).
pub async fn open_turns(
    pool: &AnyPool,
    user_message_id: &str,
    agent_id: Option<&str>,
) -> Result<Vec<OpenTurn>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, agent_id, state FROM turns
         WHERE user_message_id = $1 AND ($2 = '' OR agent_id = $2) ORDER BY created_at, id",
    )
    .bind(user_message_id)
    .bind(agent_id.unwrap_or_default())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let state: String = row.try_get("state")?;
            Ok(OpenTurn {
                id: row.try_get("id")?,
                agent_id: row.try_get("agent_id")?,
                running: state == "running",
            })
        })
        .collect()
}

/// Asks a running turn's owner to stop it. `false`: it is not running (any more).
pub async fn request_cancel(pool: &AnyPool, turn_id: &str) -> Result<bool, sqlx::Error> {
    let marked = sqlx::query(
        "UPDATE turns SET cancel_requested_at = COALESCE(cancel_requested_at, $1)
         WHERE id = $2 AND state = 'running'",
    )
    .bind(now_ms())
    .bind(turn_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(marked == 1)
}

/// Which of `turn_ids` someone asked to stop.
pub async fn cancel_requested(
    pool: &AnyPool,
    turn_ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let mut requested = Vec::new();
    for turn_id in turn_ids {
        let asked: Option<Option<i64>> =
            sqlx::query_scalar("SELECT cancel_requested_at FROM turns WHERE id = $1")
                .bind(turn_id)
                .fetch_optional(pool)
                .await?;
        if asked.flatten().is_some() {
            requested.push(turn_id.clone());
        }
    }
    Ok(requested)
}

/// Whether the fenced turn is still its owner's, inside a transaction: locks its row until the
/// transaction ends, so a take-over cannot slip between this check and the caller's write.
pub async fn still_owned(
    connection: &mut AnyConnection,
    fence: &TurnFence,
) -> Result<bool, sqlx::Error> {
    let touched = sqlx::query(
        "UPDATE turns SET updated_at = $1 WHERE id = $2 AND owner = $3 AND state = 'running'",
    )
    .bind(now_ms())
    .bind(&fence.turn_id)
    .bind(&fence.owner)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(touched == 1)
}

/// Records the reply a turn started, inside the reply's transaction. `false`: not owned.
pub async fn set_reply(
    connection: &mut AnyConnection,
    fence: &TurnFence,
    reply_id: &str,
) -> Result<bool, sqlx::Error> {
    let set = sqlx::query(
        "UPDATE turns SET reply_id = $1, updated_at = $2
         WHERE id = $3 AND owner = $4 AND state = 'running'",
    )
    .bind(reply_id)
    .bind(now_ms())
    .bind(&fence.turn_id)
    .bind(&fence.owner)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(set == 1)
}

/// Ends a turn: its row goes. `false`: it was not (or no longer) this owner's.
pub async fn end_turn(
    connection: &mut AnyConnection,
    fence: &TurnFence,
) -> Result<bool, sqlx::Error> {
    let ended = sqlx::query("DELETE FROM turns WHERE id = $1 AND owner = $2")
        .bind(&fence.turn_id)
        .bind(&fence.owner)
        .execute(connection)
        .await?
        .rows_affected();
    Ok(ended == 1)
}

/// Puts a turn taken over back in the queue, to run again from the start (nothing of it reached
/// clients). `false`: not this owner's.
pub async fn requeue(pool: &AnyPool, fence: &TurnFence) -> Result<bool, sqlx::Error> {
    let requeued = sqlx::query(
        "UPDATE turns SET state = 'queued', owner = NULL, lease_until = NULL, updated_at = $1
         WHERE id = $2 AND owner = $3 AND state = 'running'",
    )
    .bind(now_ms())
    .bind(&fence.turn_id)
    .bind(&fence.owner)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(requeued == 1)
}

/// Whether a turn answering a user message (of `agent_id`, when given) is still queued or
/// running anywhere.
pub async fn turn_open(
    pool: &AnyPool,
    user_message_id: &str,
    agent_id: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let open: Option<String> = sqlx::query_scalar(
        "SELECT id FROM turns WHERE user_message_id = $1 AND ($2 = '' OR agent_id = $2) LIMIT 1",
    )
    .bind(user_message_id)
    .bind(agent_id.unwrap_or_default())
    .fetch_optional(pool)
    .await?;
    Ok(open.is_some())
}
