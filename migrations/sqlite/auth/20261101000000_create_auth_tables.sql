-- Users, their workspaces and memberships, and sessions (opaque tokens, stored as SHA-256 hashes).
-- Ids are UUID v7 strings; timestamps are Unix milliseconds.
-- SQLite flavour: INTEGER for timestamps (same columns as the Postgres migration).

CREATE TABLE users (
    id            TEXT NOT NULL PRIMARY KEY,
    -- Trimmed and lowercased before it is stored, so uniqueness is case-insensitive.
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT NOT NULL PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE memberships (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'member')),
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

CREATE INDEX memberships_user_id_idx ON memberships (user_id);

CREATE TABLE sessions (
    id                 TEXT NOT NULL PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    access_token_hash  TEXT NOT NULL UNIQUE,
    refresh_token_hash TEXT NOT NULL UNIQUE,
    access_expires_at  INTEGER NOT NULL,
    refresh_expires_at INTEGER NOT NULL,
    revoked_at         INTEGER,
    created_at         INTEGER NOT NULL
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
