-- migrations/sqlite/0007_usage.sql in PostgreSQL's dialect: the same table and columns.
CREATE TABLE usage_records (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    answer_id       TEXT NOT NULL,
    day             TEXT NOT NULL,
    ended_at        TEXT NOT NULL,
    tenant_id       TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    transport       TEXT NOT NULL,
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,
    input_tokens    BIGINT NOT NULL,
    input_source    TEXT NOT NULL CHECK (input_source IN ('provider', 'estimated')),
    output_tokens   BIGINT NOT NULL,
    output_source   TEXT NOT NULL CHECK (output_source IN ('provider', 'counted')),
    ttft_ms         BIGINT,
    duration_ms     BIGINT NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('done', 'error', 'cancelled')),
    error_code      TEXT,
    detached        BOOLEAN NOT NULL DEFAULT FALSE,
    resumed         BOOLEAN NOT NULL DEFAULT FALSE,
    hub_id          TEXT NOT NULL
);
CREATE INDEX usage_records_tenant_day ON usage_records(tenant_id, day);
CREATE INDEX usage_records_day ON usage_records(day);

ALTER TABLE tenants ADD COLUMN monthly_output_token_budget BIGINT;
ALTER TABLE api_keys ADD COLUMN monthly_output_token_budget BIGINT;
