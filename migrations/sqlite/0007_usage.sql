-- Usage accounting: one row per answer, written in batches by the usage writer (never on
-- the answer's own task), and read back grouped by tenant, key, provider, model, day and
-- transport over a range. One row per answer rather than daily totals only, so any grouping
-- and any range is exact, and a per-day figure is one indexed GROUP BY away.
--
-- No foreign keys: usage outlives the keys and tenants it names, and a batch never fails
-- because one of them was removed meanwhile.
CREATE TABLE usage_records (
    id              INTEGER PRIMARY KEY,
    answer_id       TEXT NOT NULL,
    -- The UTC day (YYYY-MM-DD) and time (ISO 8601) the answer ended, by the hub's clock.
    day             TEXT NOT NULL,
    ended_at        TEXT NOT NULL,
    tenant_id       TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    transport       TEXT NOT NULL,
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,
    input_tokens    INTEGER NOT NULL,
    -- `provider`: the upstream's own count; `estimated`: the hub's estimate from the prompt.
    input_source    TEXT NOT NULL CHECK (input_source IN ('provider', 'estimated')),
    output_tokens   INTEGER NOT NULL,
    -- `provider`: the upstream's own count; `counted`: the text deltas the hub relayed.
    output_source   TEXT NOT NULL CHECK (output_source IN ('provider', 'counted')),
    ttft_ms         INTEGER,
    duration_ms     INTEGER NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('done', 'error', 'cancelled')),
    error_code      TEXT,
    -- Its connection was lost while it ran; resumed: a client came back for it.
    detached        INTEGER NOT NULL DEFAULT 0,
    resumed         INTEGER NOT NULL DEFAULT 0,
    hub_id          TEXT NOT NULL
);
CREATE INDEX usage_records_tenant_day ON usage_records(tenant_id, day);
CREATE INDEX usage_records_day ON usage_records(day);

-- Monthly output-token budgets (NULL: none), checked at admission.
ALTER TABLE tenants ADD COLUMN monthly_output_token_budget INTEGER;
ALTER TABLE api_keys ADD COLUMN monthly_output_token_budget INTEGER;
