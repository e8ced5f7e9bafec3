-- Agents, conversations and messages of every workspace. Ids are UUIDv7 text; times are unix ms.
CREATE TABLE agents (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    slug         TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'online',
    position     BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (workspace_id, slug)
);

CREATE TABLE conversations (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    title        TEXT NOT NULL,
    agent_id     TEXT REFERENCES agents (id),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX conversations_by_workspace ON conversations (workspace_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role            TEXT NOT NULL,
    author_id       TEXT,
    agent_id        TEXT,
    local_id        TEXT,
    content_type    TEXT NOT NULL,
    text            TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    -- A client retry with the same localId finds the message it already sent.
    UNIQUE (conversation_id, author_id, local_id)
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at DESC, id DESC);
