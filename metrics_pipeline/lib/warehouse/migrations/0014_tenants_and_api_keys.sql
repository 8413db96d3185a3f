-- Tenants and their API keys, for the push API (issue 18; SPEC §10, §12 "Tenants").
--
-- Until now a tenant was only a name: the `tenant` label of a series and the entries of
-- `tenant_access` (which BI logins see which tenants). The HTTP API needs tenants it can hand keys
-- to, so they become rows. A name here is the same name as that label and those entries, with the
-- same rules (1-200 characters PostgreSQL can store, checked in lib/api_keys.py; the length is
-- checked here too): `bi-role --tenant NAME` restricts a BI login to the data pushed with NAME's keys.
--
-- A key is `mpk_<key_id>_<secret>`; only sha256(secret) is stored. The secret is 256 random bits,
-- so a fast hash is enough (nothing to brute-force, unlike a password) and the API can verify a
-- request against an in-memory copy of this table (lib/api_keys.py `KeyRing`). Revoking sets
-- `revoked_at`; rows are never deleted, so `keys list` keeps the history.
--
-- No BI view reads these tables and no grant is made: BI logins see neither (the security suite
-- checks every table it finds in pg_catalog).

CREATE TABLE {{schema}}.tenants (
    name        text PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE {{schema}}.tenants IS
    'Tenants known to the HTTP API: the same names as the series label `tenant` and tenant_access.';

CREATE TABLE {{schema}}.api_keys (
    key_id         text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{12}$'),
    tenant         text NOT NULL REFERENCES {{schema}}.tenants (name),
    secret_sha256  bytea NOT NULL CHECK (octet_length(secret_sha256) = 32),
    scopes         text[] NOT NULL CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['write', 'read']::text[]),
    note           text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
CREATE INDEX api_keys_tenant_idx ON {{schema}}.api_keys (tenant);
COMMENT ON TABLE {{schema}}.api_keys IS
    'HTTP API keys: the public key_id, the tenant, scopes and sha256 of the secret (never the secret).';
