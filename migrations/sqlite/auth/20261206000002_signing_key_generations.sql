-- Safe with replicas (issue 15).

-- Each key's place in the rotation chain (the first key is 1, its successor 2, …). Unique, so of
-- concurrent rotations that start from the same newest key (on any replica) exactly one stores
-- its successor; the others get a unique violation and adopt that key.
ALTER TABLE signing_keys ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
UPDATE signing_keys SET generation = (
    SELECT COUNT(*) FROM signing_keys AS older
    WHERE older.created_at < signing_keys.created_at
       OR (older.created_at = signing_keys.created_at AND older.kid <= signing_keys.kid)
);
CREATE UNIQUE INDEX signing_keys_generation_idx ON signing_keys (generation);
