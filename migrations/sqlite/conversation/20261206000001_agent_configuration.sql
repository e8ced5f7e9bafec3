-- Agents are workspace data (issue 14): what the runtime is told about each agent, kept here so
-- runtimes stay stateless. Lists are JSON arrays; an archived agent answers no new message but
-- stays for the conversations and messages that name it.
ALTER TABLE agents ADD COLUMN system_prompt TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN temperature REAL;
-- Built-in tool names: ["time", "calculator"].
ALTER TABLE agents ADD COLUMN tools TEXT NOT NULL DEFAULT '[]';
-- MCP servers: [{"name": "…", "url": "…"}].
ALTER TABLE agents ADD COLUMN mcp_servers TEXT NOT NULL DEFAULT '[]';
ALTER TABLE agents ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN archived_at INTEGER;
UPDATE agents SET updated_at = created_at;
-- The seeded assistant may tell the time and calculate, as new workspaces' assistants do.
UPDATE agents SET tools = '["time","calculator"]' WHERE slug = 'assistant';
