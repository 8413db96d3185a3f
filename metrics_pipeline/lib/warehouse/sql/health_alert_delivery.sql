-- Delivery state of the alerts per target (lib/alerts/delivery.py): rows the target has not had since
-- their last change (`last_sent_at` / `webhook_sent_at` NULL), rows whose last attempt to it failed
-- (`last_error` starts with the target's name), and when it last got one. Read over the alerts that
-- fire, and those that started in the last week (a resolution may still be due): both through
-- alerts_active_idx (state, starts_at), never the whole history.
SELECT count(*) FILTER (WHERE last_sent_at IS NULL) AS alertmanager_pending,
       count(*) FILTER (WHERE last_error LIKE 'alertmanager:%%') AS alertmanager_failing,
       max(last_sent_at) AS alertmanager_last_sent,
       count(*) FILTER (WHERE webhook_sent_at IS NULL) AS webhook_pending,
       count(*) FILTER (WHERE last_error LIKE 'webhook:%%') AS webhook_failing,
       max(webhook_sent_at) AS webhook_last_sent
FROM {{schema}}.alerts
WHERE state = 'firing' OR (state = 'resolved' AND starts_at >= %(since)s)
