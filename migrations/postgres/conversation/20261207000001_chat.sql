-- The chat around the agents (issue 17).

-- Edits and deletions of user messages by their authors: a deleted message stays as a tombstone
-- (empty text) so lists and replays keep their places. Mentions: the agent ids a message named
-- (JSON array; NULL: none, the conversation's agent answered).
ALTER TABLE messages ADD COLUMN edited_at BIGINT;
ALTER TABLE messages ADD COLUMN deleted_at BIGINT;
ALTER TABLE messages ADD COLUMN mentions TEXT;

-- Each user's read position per conversation: the newest message they read, with its
-- (created_at, id) place in the conversation's order. It only moves forward.
CREATE TABLE read_states (
    conversation_id      TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id              TEXT NOT NULL,
    workspace_id         TEXT NOT NULL,
    last_read_message_id TEXT NOT NULL,
    last_read_at         BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX read_states_by_user ON read_states (user_id);

-- Several agents in one conversation: each turn names the agent that answers, and turns run one
-- at a time per conversation and agent (agents answer side by side). '' (turns queued before
-- this migration): the conversation's agent.
ALTER TABLE turns ADD COLUMN agent_id TEXT NOT NULL DEFAULT '';
DROP INDEX turns_one_running_per_conversation;
CREATE UNIQUE INDEX turns_one_running_per_agent ON turns (conversation_id, agent_id)
    WHERE state = 'running';
DROP INDEX turns_by_conversation;
CREATE INDEX turns_by_conversation ON turns (conversation_id, agent_id, seq);
