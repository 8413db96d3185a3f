-- Tenant filtering follows the login as well as the current role (issue 9).
-- The views filter on visible_tenants(current_user). A restricted login may `SET ROLE` to any role
-- it is a member of, such as the unrestricted reader group `<schema>_bi_read`: current_user then
-- names that group and every tenant became visible. The restriction is now the intersection of the
-- restriction of `p_role` and that of `session_user` (the login, which SET ROLE cannot change; only
-- a superuser may change it), so switching roles can narrow what a login sees, never widen it.
-- It also stops a restricted login from learning other roles' tenants by passing their names.
-- NULL still means "every tenant"; an empty array means "none".

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
)
SELECT CASE WHEN count(tenants) = 0 THEN NULL
            ELSE coalesce((SELECT array_agg(t ORDER BY t)
                           FROM unnest((SELECT tenants FROM restriction WHERE tenants IS NOT NULL LIMIT 1)) AS t
                           WHERE NOT EXISTS (SELECT 1 FROM restriction x
                                             WHERE x.tenants IS NOT NULL AND NOT t = ANY (x.tenants))),
                          '{}'::text[]) END
FROM restriction
$$;
