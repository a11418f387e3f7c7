-- Uploads written in several short transactions, and a full-text index per tenant.
--
-- A document is inserted `loading`, its chunks follow in batches, and it turns `ready` in
-- the last one: searches and listings see only `ready` documents, so a document still
-- appears at once. A deleted document turns `deleting` first and then loses its chunks in
-- batches. Rows left `loading` or `deleting` by a crash are removed at the next start.
ALTER TABLE documents ADD COLUMN status TEXT NOT NULL DEFAULT 'ready'
    CHECK (status IN ('loading', 'ready', 'deleting'));
-- UTF-8 bytes of the document's text, for the per-tenant byte quota. Earlier rows did not
-- record it: their character count is the closest figure there is (exact for ASCII).
ALTER TABLE documents ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE documents SET bytes = chars;

-- A batch of chunks is indexed with one statement that finds each chunk by its ordinal.
CREATE UNIQUE INDEX chunks_document_ordinal ON chunks(document_id, ordinal);
DROP INDEX chunks_document;

-- Each tenant's chunks are indexed in a full-text table of its own, `chunks_fts_<id>`, so
-- BM25's statistics (document count, average length, term frequencies) and the cost of a
-- search come from the tenant's own documents only. The name is made from this integer id,
-- never from text a client sent; AUTOINCREMENT never hands out an id twice, so a table of a
-- deleted tenant can never be mistaken for a new tenant's. The table is created with the
-- tenant's first document; the shared `chunks_fts` of earlier versions is split into these
-- tables at the first start after this migration (see `store::tenant_index`).
CREATE TABLE tenant_fts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL UNIQUE REFERENCES tenants(id) ON DELETE CASCADE
);
