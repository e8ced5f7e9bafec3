-- Push notifications (issue 19): the devices a user registered, each tied to the session that
-- registered it (logging out of that session, or its revocation, removes it; so does deleting
-- the account), and what the user muted. One row per token: registering a token another user
-- holds moves it (the app signed in as someone else on that device).
CREATE TABLE devices (
    id         TEXT NOT NULL PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- 'fcm', 'apns' or 'webpush'.
    platform   TEXT NOT NULL,
    -- The FCM or APNs token, or the Web Push endpoint: what identifies the device.
    token      TEXT NOT NULL,
    -- The normalized target as JSON (with a Web Push subscription's keys).
    target     TEXT NOT NULL,
    app_id     TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (platform, token)
);

CREATE INDEX devices_user_id_idx ON devices (user_id);
CREATE INDEX devices_session_id_idx ON devices (session_id);

-- A muted conversation, or with conversation_id '' every push of the user.
CREATE TABLE push_mutes (
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
);
