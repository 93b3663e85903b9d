-- Web panel sessions, shared by every server process on this database.
-- A session is found by the SHA-256 of its token (the cookie holds the
-- token; the database never does). It belongs to the key it signed in
-- with: revoking the key deletes it. `notice` is a one-time message
-- sealed by the panel with a key derived from the token, opaque here.
-- Bounded: at most 32 per account (the store ends the least recently
-- used), and expired rows are deleted at each sign-in.
CREATE TABLE panel_sessions (
    token_hash    BYTEA PRIMARY KEY,
    key_hash      BYTEA NOT NULL REFERENCES api_keys(hash) ON DELETE CASCADE,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    csrf          TEXT NOT NULL,
    notice        BYTEA,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX panel_sessions_key ON panel_sessions(key_hash);
CREATE INDEX panel_sessions_account ON panel_sessions(account_id);
CREATE INDEX panel_sessions_expiry ON panel_sessions(expires_at);
