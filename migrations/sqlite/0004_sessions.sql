-- Browser sign-in sessions: an HttpOnly cookie that stands for one API key.
--
-- Only the SHA-256 digest of the cookie's value is stored, so a copy of the database signs
-- nobody in. Times are Unix milliseconds, compared with the hub's clock. A session is live
-- while its key is not revoked (checked by a join on every lookup), it was seen within the
-- idle timeout, and its absolute end has not passed.
CREATE TABLE sessions (
    id_hash      BLOB PRIMARY KEY,
    key_id       TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    -- Moved forward at most once a minute, not on every request.
    last_seen_at INTEGER NOT NULL,
    -- created_at + the absolute maximum; never moved.
    expires_at   INTEGER NOT NULL
);
CREATE INDEX sessions_key ON sessions(key_id);
CREATE INDEX sessions_expires ON sessions(expires_at);
