-- The schema of migrations/sqlite (0001 to 0006) in one step, with the same tables, columns
-- and meaning. Differences, all of dialect: timestamps are the same ISO 8601 text made by
-- `now_text()`; booleans are BOOLEAN, blobs BYTEA, integers BIGINT; chunks hold their own
-- text, searched through a generated `tsvector` (see the end) instead of FTS5 tables.

-- A composite GIN index (tenant_id, tsv) needs the btree operator classes for GIN.
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- The text form of timestamps SQLite writes with strftime('%Y-%m-%dT%H:%M:%fZ', 'now'):
-- fixed width, so text order is time order.
CREATE FUNCTION now_text() RETURNS TEXT LANGUAGE sql VOLATILE AS $$
    SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- Unix milliseconds of the database's clock (hub heartbeats).
CREATE FUNCTION now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE AS $$
    SELECT CAST(floor(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)
$$;

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL DEFAULT now_text()
);

-- Keys are stored only as SHA-256 digests; the plain key is shown once when created.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    key_hash    BYTEA NOT NULL UNIQUE,
    is_admin    BOOLEAN NOT NULL DEFAULT FALSE,
    is_operator BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TEXT NOT NULL DEFAULT now_text(),
    revoked_at  TEXT
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    title       TEXT NOT NULL,
    chars       BIGINT NOT NULL,
    chunk_count BIGINT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT now_text(),
    status      TEXT NOT NULL DEFAULT 'ready' CHECK (status IN ('loading', 'ready', 'deleting')),
    bytes       BIGINT NOT NULL DEFAULT 0,
    hub_id      TEXT
);
CREATE INDEX documents_tenant ON documents(tenant_id, created_at);
-- The clean-up after dead hubs looks at unfinished uploads and deletes only.
CREATE INDEX documents_unfinished ON documents(hub_id) WHERE status <> 'ready';

CREATE TABLE conversations (
    -- Ties in updated_at are listed in creation order, as SQLite's rowid gives them.
    rowid       BIGINT GENERATED ALWAYS AS IDENTITY,
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    title       TEXT,
    created_at  TEXT NOT NULL DEFAULT now_text(),
    updated_at  TEXT NOT NULL DEFAULT now_text()
);
CREATE INDEX conversations_owner_recent ON conversations(tenant_id, user_id, updated_at, rowid);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content         TEXT NOT NULL DEFAULT '',
    status          TEXT CHECK (status IS NULL
                                OR status IN ('streaming', 'complete', 'cancelled', 'error', 'interrupted')),
    provider        TEXT,
    model           TEXT,
    ttft_ms         BIGINT,
    tokens          BIGINT,
    error_code      TEXT,
    created_at      TEXT NOT NULL DEFAULT now_text(),
    updated_at      TEXT NOT NULL DEFAULT now_text(),
    hub_id          TEXT
);
CREATE UNIQUE INDEX messages_conversation_seq ON messages(conversation_id, seq);
CREATE INDEX messages_streaming ON messages(hub_id) WHERE status = 'streaming';

CREATE TABLE sessions (
    id_hash      BYTEA PRIMARY KEY,
    key_id       TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX sessions_key ON sessions(key_id);
CREATE INDEX sessions_expires ON sessions(expires_at);

CREATE TABLE hubs (
    id           TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- Full-text search. The stemmer of SQLite's `porter` tokenizer has no stopword list, and
-- neither has this configuration: English snowball stemming of every word, numbers as they
-- are. A search reads one tenant's chunks only: the GIN index leads with tenant_id, so the
-- match is found inside the tenant's postings, and ts_rank uses no corpus-wide statistics,
-- so one tenant's documents never move another's scores.
CREATE TEXT SEARCH DICTIONARY ragstream_stem (TEMPLATE = snowball, LANGUAGE = english);
CREATE TEXT SEARCH CONFIGURATION ragstream (COPY = pg_catalog.english);
ALTER TEXT SEARCH CONFIGURATION ragstream
    ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
    WITH ragstream_stem;

CREATE TABLE chunks (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL,
    ordinal     BIGINT NOT NULL,
    -- The document's title is indexed with each chunk (weight A, the text B) so a question
    -- naming a document finds it.
    title       TEXT NOT NULL,
    text        TEXT NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('ragstream', title), 'A')
                    || setweight(to_tsvector('ragstream', text), 'B')) STORED
);
CREATE UNIQUE INDEX chunks_document_ordinal ON chunks(document_id, ordinal);
CREATE INDEX chunks_tenant_search ON chunks USING gin (tenant_id, tsv);
