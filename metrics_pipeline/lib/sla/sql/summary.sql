-- What a refresh of [start, end) left in {{table}}: jobs reported, rows and jobs missing their SLA.
SELECT count(*) FILTER (WHERE NOT sla_met) AS rows_breaching,
       count(DISTINCT (company, zone, source_system, object)) AS groups,
       count(DISTINCT (company, zone, source_system, object)) FILTER (WHERE NOT sla_met) AS groups_breaching
FROM {{schema}}.{{table}}
WHERE bucket >= %(start)s AND bucket < %(end)s
