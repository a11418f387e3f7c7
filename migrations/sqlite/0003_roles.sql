-- Roles. An operator key (the bootstrap key, and keys an operator marks so) creates tenants
-- and administers every tenant; an admin key without it administers its own tenant only.
ALTER TABLE api_keys ADD COLUMN is_operator INTEGER NOT NULL DEFAULT 0;

-- Before roles, every admin key could administer every tenant. Only the keys the hub itself
-- made at start (configured or generated bootstrap keys of the `default` tenant) keep that
-- power; other admin keys become admins of their own tenant.
UPDATE api_keys SET is_operator = 1
 WHERE tenant_id = 'default' AND is_admin = 1
   AND name IN ('bootstrap admin (RAGSTREAM_ADMIN_KEY)', 'bootstrap admin');
