-- Hubs own the rows they write. Several hubs may share one database (PostgreSQL; on SQLite,
-- processes on one host): each registers here with a random id at start and renews its
-- heartbeat every few seconds. Rows still `streaming` (answers) or `loading`/`deleting`
-- (uploads, deletes) whose hub's heartbeat lapsed are cleaned up by any live hub, never a
-- live hub's. Times are Unix milliseconds of the database's clock, so hubs' clocks need
-- not agree.
CREATE TABLE hubs (
    id           TEXT PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

-- The hub that runs the answer (NULL: rows of versions before hubs, owned by nobody alive).
ALTER TABLE messages ADD COLUMN hub_id TEXT;
-- The hub writing (or deleting) the document; rows `ready` keep the last one, unused.
ALTER TABLE documents ADD COLUMN hub_id TEXT;
-- The clean-up looks at unfinished uploads and deletes only (few rows, often none).
CREATE INDEX documents_unfinished ON documents(hub_id) WHERE status <> 'ready';
