-- The durable event log: every message.new / message.updated, written in the transaction of the
-- change it describes, numbered per workspace with no gaps, then published.
CREATE TABLE workspace_sequences (
    workspace_id TEXT PRIMARY KEY,
    last_seq     BIGINT NOT NULL
);

CREATE TABLE events (
    workspace_id TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    -- The protobuf-encoded crawbl.events.v1.Event, seq included.
    envelope     BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    -- NULL until the event has reached the bus; the relay publishes what is still NULL.
    published_at BIGINT,
    PRIMARY KEY (workspace_id, seq)
);
CREATE INDEX events_pending ON events (created_at) WHERE published_at IS NULL;
CREATE INDEX events_by_age ON events (created_at);

-- Which user message an agent message answers, so a retried `?wait=true` finds the reply.
ALTER TABLE messages ADD COLUMN reply_to TEXT;
CREATE INDEX messages_by_reply_to ON messages (reply_to);
