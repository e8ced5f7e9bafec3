-- Account deletion (issue 17). The user row goes, and its sessions, refresh tokens, API keys and
-- memberships with it; what stays is this tombstone: the id of a user deleted recently enough
-- that an access token of theirs may still be unexpired somewhere. Edges rebuild their
-- revocation sets from it (ListRevocations) and refuse every token of the user until then; it is
-- pruned after that (no email, no name: nothing here identifies the person).
CREATE TABLE deleted_users (
    user_id    TEXT NOT NULL PRIMARY KEY,
    deleted_at INTEGER NOT NULL
);

CREATE INDEX deleted_users_deleted_at_idx ON deleted_users (deleted_at);
