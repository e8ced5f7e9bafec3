-- Publish progress is kept per workspace (issue 18): every event of the workspace numbered up to
-- `published_seq` has reached the bus. Marking each event row published rewrote it once per
-- event; the marker now moves one small row per workspace. The relay publishes what lies above.
ALTER TABLE workspace_sequences ADD COLUMN published_seq INTEGER NOT NULL DEFAULT 0;
-- Everything below a workspace's oldest unpublished event is published (the relay publishes in
-- order); where it is not, it is published again and edges drop the duplicate.
UPDATE workspace_sequences SET published_seq = COALESCE(
    (SELECT MIN(e.seq) - 1 FROM events e
     WHERE e.workspace_id = workspace_sequences.workspace_id
       AND e.seq IS NOT NULL AND e.published_at IS NULL),
    last_seq);
-- The relay's pass finds the workspaces with something to publish without reading them all.
CREATE INDEX workspace_sequences_unpublished ON workspace_sequences (workspace_id)
    WHERE last_seq > published_seq;
-- `events.published_at` is no longer written or read; a later migration drops it, as on Postgres.
DROP INDEX events_pending;
