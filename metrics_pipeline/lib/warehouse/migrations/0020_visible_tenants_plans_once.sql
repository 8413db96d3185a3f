-- visible_tenants() keeps its rule (0007, 0016) and becomes PL/pgSQL: planned once per session.
-- As a SQL function with SECURITY DEFINER and SET search_path it is never inlined, and its body (a
-- query over pg_roles and tenant_access) was planned afresh for every query that called it: about
-- 1.5 ms a call, and a view of a restricted login calls it three times (its two gates and its tenant
-- filter). That was most of the time of a small read through the HTTP API (benchmarks/api_queries.py:
-- `/api/v1/series` 7.8 -> see docs/benchmarks.md) and of a restricted BI login's small queries. PL/pgSQL
-- caches the body's plan in the session, and the API's reader (the transaction's tenant) returns
-- before reaching it.

CREATE OR REPLACE FUNCTION {{schema}}.visible_tenants(p_role text) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant text;
    result text[];
BEGIN
    IF p_role = '{{schema}}_api_read' THEN
        v_tenant := current_setting('metrics_pipeline.tenant', true);
        RETURN CASE WHEN coalesce(v_tenant, '') = '' THEN '{}'::text[] ELSE ARRAY[v_tenant] END;
    END IF;
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
    INTO result
    FROM restriction;
    RETURN result;
END
$$;
