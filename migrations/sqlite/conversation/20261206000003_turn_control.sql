-- Turn control and accounting (issue 16).
-- A stop asked for a running turn (unix ms): its owner ends the reply `cancelled`.
ALTER TABLE turns ADD COLUMN cancel_requested_at INTEGER;

-- Every turn's usage, written in the transaction that ends its reply.
CREATE TABLE turn_usage (
    reply_id        TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    -- The author of the message the turn answered.
    user_id         TEXT NOT NULL,
    model           TEXT NOT NULL,
    input_tokens    INTEGER NOT NULL,
    output_tokens   INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    -- UTC, YYYY-MM-DD.
    day             TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX turn_usage_by_day ON turn_usage (workspace_id, day);

-- Tokens per workspace and calendar month (UTC, YYYY-MM), kept with each usage row, so a send
-- checks its quota with one read.
CREATE TABLE workspace_month_usage (
    workspace_id TEXT NOT NULL,
    month        TEXT NOT NULL,
    tokens       INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, month)
);

-- A workspace's plan, set by a billing system; none: the configured default.
CREATE TABLE workspace_plans (
    workspace_id        TEXT PRIMARY KEY,
    plan                TEXT NOT NULL,
    -- Tokens per month; NULL: unlimited.
    monthly_token_quota INTEGER,
    updated_at          INTEGER NOT NULL
);
