-- Events are numbered after their transaction commits (issue 18). An append no longer locks the
-- workspace's sequence row for the rest of its transaction, which made every send of a
-- workspace wait for the previous one's commit; it inserts the event unnumbered, and the outbox
-- numbers every committed unnumbered event of the workspace in one short transaction, in the
-- order they were appended (`id`), then publishes them.
CREATE TABLE events_numbered_after_commit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    -- NULL until numbered.
    seq          INTEGER,
    -- The protobuf-encoded crawbl.events.v1.Event; its seq is the column's.
    envelope     BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    published_at INTEGER
);
INSERT INTO events_numbered_after_commit (workspace_id, seq, envelope, created_at, published_at)
    SELECT workspace_id, seq, envelope, created_at, published_at FROM events
    ORDER BY workspace_id, seq;
DROP TABLE events;
ALTER TABLE events_numbered_after_commit RENAME TO events;
CREATE UNIQUE INDEX events_by_seq ON events (workspace_id, seq);
CREATE INDEX events_unnumbered ON events (workspace_id, id) WHERE seq IS NULL;
CREATE INDEX events_pending ON events (created_at) WHERE published_at IS NULL;
CREATE INDEX events_by_age ON events (created_at);
-- Turns queue by their message's place in the log (`id` now): start above every place given out
-- so far, so that turns queued before this migration keep their order.
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'events', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events');
UPDATE sqlite_sequence
    SET seq = MAX(seq, (SELECT COALESCE(MAX(seq), 0) FROM turns))
    WHERE name = 'events';

-- A push job names its event by place; its number is read once the event is numbered.
ALTER TABLE push_jobs ADD COLUMN event_id INTEGER;
