-- The HTTP API reads through the BI views as the tenant of the request's key (SPEC §12, issue 18).
-- The API connects as the warehouse's owner and, for each read, runs in a transaction
--   SET LOCAL ROLE <schema>_api_read; SELECT set_config('metrics_pipeline.tenant', <key's tenant>, true);
-- `<schema>_api_read` is a NOLOGIN role (created with the BI roles, lib/warehouse/bi.py) that is a
-- member of the BI reader group, so it reads the v_* views and nothing else. For it, and only for it,
-- visible_tenants() returns the tenant of the transaction's setting (none when unset): the views then
-- filter rows exactly as they do for a tenant-restricted BI login, and no endpoint writes a tenant
-- WHERE of its own. The setting means nothing for any other role: a BI login that sets it sees what
-- it saw before, and it cannot SET ROLE to <schema>_api_read, of which it is not a member.
-- Everything else is 0007's rule, unchanged.

CREATE OR REPLACE FUNCTION {{schema}}.visible_tenants(p_role text) RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
WITH restriction AS (
    SELECT CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = r.who) THEN NULL
                WHEN bool_or(a.tenant = '*') OR count(a.tenant) = 0 THEN NULL
                ELSE array_agg(DISTINCT a.tenant) END AS tenants
    FROM (VALUES (p_role), (session_user::text)) AS r(who)
    LEFT JOIN ({{schema}}.tenant_access a JOIN pg_roles ar ON ar.rolname = a.role_name)
           ON pg_has_role(r.who, ar.oid, 'MEMBER')
    GROUP BY r.who
), logins AS (
    SELECT CASE WHEN count(tenants) = 0 THEN NULL
                ELSE coalesce((SELECT array_agg(t ORDER BY t)
                               FROM unnest((SELECT tenants FROM restriction WHERE tenants IS NOT NULL LIMIT 1)) AS t
                               WHERE NOT EXISTS (SELECT 1 FROM restriction x
                                                 WHERE x.tenants IS NOT NULL AND NOT t = ANY (x.tenants))),
                              '{}'::text[]) END AS tenants
    FROM restriction
)
SELECT CASE WHEN p_role = '{{schema}}_api_read'
            THEN CASE WHEN coalesce(current_setting('metrics_pipeline.tenant', true), '') = '' THEN '{}'::text[]
                      ELSE ARRAY[current_setting('metrics_pipeline.tenant', true)] END
            ELSE (SELECT tenants FROM logins) END
$$;
