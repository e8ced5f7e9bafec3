-- Signed access tokens (issue 3): the edge verifies them with the public signing keys, so sessions
-- keep no access token hash; each refresh token is recorded so one presented twice is recognised
-- (reuse revokes the session). Sessions of the opaque-token era are dropped: sign in again.
-- Timestamps are Unix milliseconds.

DROP TABLE sessions;

CREATE TABLE sessions (
    id                 TEXT NOT NULL PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at         INTEGER NOT NULL,
    -- The current refresh token's expiry; every exchange moves it.
    refresh_expires_at INTEGER NOT NULL,
    revoked_at         INTEGER,
    -- 'logout' or 'refresh_token_reused'.
    revoked_reason     TEXT
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at);

-- Every refresh token ever issued, by SHA-256 hash. used_at is set when it is exchanged.
CREATE TABLE refresh_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
);

CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

-- Ed25519 keys access tokens are signed with; the newest signs, the one before still verifies.
-- Shared by every auth replica through this table, so it is as sensitive as the password hashes.
CREATE TABLE signing_keys (
    kid        TEXT NOT NULL PRIMARY KEY,
    -- Base64 of the 32-byte private seed and of the 32-byte public key.
    seed       TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX signing_keys_created_at_idx ON signing_keys (created_at);

CREATE TABLE api_keys (
    id           TEXT NOT NULL PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    -- SHA-256 of the key (high-entropy random, so a fast hash is enough); the key itself is
    -- shown once at creation.
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);

CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);
CREATE INDEX api_keys_revoked_at_idx ON api_keys (revoked_at);

-- Failed sign-ins per subject ('account:<email>' or 'address:<ip>') in the current window.
CREATE TABLE sign_in_failures (
    subject           TEXT NOT NULL PRIMARY KEY,
    window_started_at INTEGER NOT NULL,
    failures          INTEGER NOT NULL
);
