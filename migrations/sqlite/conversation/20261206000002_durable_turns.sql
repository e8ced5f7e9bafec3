-- Agent turns as durable rows (issue 15): queued in the transaction of the user message they
-- answer, claimed by one conversation instance under a lease that it renews, one running at a
-- time per conversation in send order (`seq`: the user message's event sequence), deleted in the
-- transaction that ends their reply. See services/conversation/src/db/turns.rs.
CREATE TABLE turns (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_message_id TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    -- queued | running
    state           TEXT NOT NULL,
    -- The agent message the turn streams into, once started.
    reply_id        TEXT,
    -- The instance running it, and until when its lease holds (unix ms).
    owner           TEXT,
    lease_until     INTEGER,
    attempts        INTEGER NOT NULL,
    -- W3C trace context of the send (JSON object), so the turn continues its trace on any instance.
    trace_context   TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX turns_one_running_per_conversation ON turns (conversation_id)
    WHERE state = 'running';
CREATE INDEX turns_by_conversation ON turns (conversation_id, seq);
CREATE INDEX turns_by_state ON turns (state, seq);
CREATE INDEX turns_by_user_message ON turns (user_message_id);
CREATE INDEX turns_by_reply ON turns (reply_id);
