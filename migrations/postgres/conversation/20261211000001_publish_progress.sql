-- Publish progress is kept per workspace (issue 18): every event of the workspace numbered up to
-- `published_seq` has reached the bus. Marking each event row published rewrote it (a new row
-- version and new entries in all of the table's indexes, never a HOT update) once per event;
-- the marker now moves one small row per workspace. The relay publishes what lies above it.
ALTER TABLE workspace_sequences ADD COLUMN published_seq BIGINT NOT NULL DEFAULT 0;
-- Everything below a workspace's oldest unpublished event is published (the relay publishes in
-- order); where it is not, it is published again and edges drop the duplicate.
UPDATE workspace_sequences s SET published_seq = COALESCE(
    (SELECT MIN(e.seq) - 1 FROM events e
     WHERE e.workspace_id = s.workspace_id AND e.seq IS NOT NULL AND e.published_at IS NULL),
    s.last_seq);
-- The relay's pass finds the workspaces with something to publish without reading them all.
CREATE INDEX workspace_sequences_unpublished ON workspace_sequences (workspace_id)
    WHERE last_seq > published_seq;
-- `events.published_at` is no longer written or read. It stays, unindexed, while an instance of
-- the previous version may still run beside this one during a rolling upgrade (it still names
-- the column); a later migration drops it.
DROP INDEX events_pending;
