-- Conversations (agent chat) and their messages.
--
-- A conversation belongs to one user (an API key) of one tenant; every query filters on
-- both. A turn adds two rows at once: the user's message and the assistant's (status
-- `streaming`), and the assistant's row is written once more when its answer ends; never
-- per token.
CREATE TABLE conversations (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- The API key the conversation belongs to.
    user_id     TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    title       TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
-- Listing a user's conversations, most recently active first: read backwards, this index
-- gives updated_at DESC with ties in creation (rowid) order, newest first.
CREATE INDEX conversations_owner_recent ON conversations(tenant_id, user_id, updated_at);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    -- Position in the conversation from 1. Timestamps have millisecond precision and a
    -- turn's two rows share one, so order needs its own column.
    seq             INTEGER NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content         TEXT NOT NULL DEFAULT '',
    -- NULL for user messages.
    status          TEXT CHECK (status IS NULL
                                OR status IN ('streaming', 'complete', 'cancelled', 'error', 'interrupted')),
    provider        TEXT,
    model           TEXT,
    ttft_ms         INTEGER,
    tokens          INTEGER,
    error_code      TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
-- Reading a conversation in order (and its latest messages for the prompt's history).
CREATE UNIQUE INDEX messages_conversation_seq ON messages(conversation_id, seq);
-- Finding rows a crash left `streaming`, at start. Partial: it only holds live answers.
CREATE INDEX messages_streaming ON messages(status) WHERE status = 'streaming';
