-- Why recent turns failed, for the operations view (issue 20): the runtime's error code and
-- message, which the reply itself does not keep. Diagnostic only: written outside the turn's
-- transactions, the newest 100 kept per workspace.
CREATE TABLE turn_errors (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    code            TEXT NOT NULL,
    message         TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX turn_errors_by_workspace ON turn_errors (workspace_id, created_at);
