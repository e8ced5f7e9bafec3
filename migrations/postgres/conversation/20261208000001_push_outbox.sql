-- Push notifications (issue 19): the durable outbox of pushes about agent replies.
-- A job is written in the transaction that ends a reply (delivered or failed); the push worker
-- expands it into one delivery per device of each offline member who has not muted the
-- conversation (auth's ListPushTargets), then sends each delivery, retrying with backoff.
CREATE TABLE push_jobs (
    message_id      TEXT NOT NULL PRIMARY KEY,
    workspace_id    TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    -- The reply's message.updated in the event log.
    seq             BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE INDEX push_jobs_next_attempt_at_idx ON push_jobs (next_attempt_at);

-- One push to one device about one message: never two (the unique key), whatever retries or
-- instances do. Kept a day after it ends ('sent', 'failed', 'invalid') for that guarantee.
CREATE TABLE push_deliveries (
    id              TEXT NOT NULL PRIMARY KEY,
    device_id       TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    -- crawbl_push::Target and crawbl_push::Notification as JSON.
    target          TEXT NOT NULL,
    notification    TEXT NOT NULL,
    -- 'pending', 'sent', 'failed' or 'invalid' (the provider refused the token).
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (device_id, message_id)
);

CREATE INDEX push_deliveries_due_idx ON push_deliveries (status, next_attempt_at);
CREATE INDEX push_deliveries_updated_at_idx ON push_deliveries (updated_at);
