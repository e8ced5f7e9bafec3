-- Admins manage a workspace's agents (issue 14); owners still manage its members.
-- SQLite cannot change a CHECK constraint, so the table is rebuilt (nothing references it).
CREATE TABLE memberships_new (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
INSERT INTO memberships_new (workspace_id, user_id, role, created_at)
    SELECT workspace_id, user_id, role, created_at FROM memberships;
DROP TABLE memberships;
ALTER TABLE memberships_new RENAME TO memberships;
CREATE INDEX memberships_user_id_idx ON memberships (user_id);
