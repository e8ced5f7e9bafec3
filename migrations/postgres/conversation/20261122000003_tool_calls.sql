-- Tools the agent called while writing a message: a JSON array of {callId, name, arguments, result}.
ALTER TABLE messages ADD COLUMN tool_calls TEXT;
