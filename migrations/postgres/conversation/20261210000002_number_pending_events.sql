-- Numbering a workspace's committed unnumbered events (see 20261210000001) in one round trip:
-- the outbox calls this once per group of writers instead of running five statements in a
-- transaction of its own. Each statement of a volatile function sees what committed before it
-- started, so once the sequence row is locked (after any numbering ahead of this one committed)
-- the events it numbers are exactly those still unnumbered.
CREATE FUNCTION number_pending_events(ws TEXT) RETURNS TABLE (seq BIGINT, envelope BYTEA)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    base BIGINT;
    numbered BIGINT;
BEGIN
    SELECT s.last_seq INTO base FROM workspace_sequences s WHERE s.workspace_id = ws FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO workspace_sequences (workspace_id, last_seq) VALUES (ws, 0)
            ON CONFLICT (workspace_id) DO NOTHING;
        SELECT s.last_seq INTO base FROM workspace_sequences s
            WHERE s.workspace_id = ws FOR UPDATE;
    END IF;
    RETURN QUERY
        UPDATE events e SET seq = base + pending.n
        FROM (SELECT p.id, ROW_NUMBER() OVER (ORDER BY p.id) AS n FROM events p
              WHERE p.workspace_id = ws AND p.seq IS NULL) AS pending
        WHERE e.id = pending.id
        RETURNING e.seq, e.envelope;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    IF numbered > 0 THEN
        UPDATE workspace_sequences s SET last_seq = base + numbered WHERE s.workspace_id = ws;
    END IF;
END
$$;
