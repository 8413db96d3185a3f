-- Each delivery target keeps its own state (issue 9 follow-up).
-- Alertmanager and the webhook shared `last_sent_at`: a target that failed kept the rows due for
-- both, so during an Alertmanager outage the webhook (Slack) got the same alerts every tick; and
-- firing alerts were re-sent to the webhook every minute, as Alertmanager needs but a chat does not.
-- `webhook_sent_at` is the webhook's own: a change is sent once, a firing alert is repeated hours
-- apart (lib/alerts/delivery.py: WEBHOOK_REPEAT).
ALTER TABLE {{schema}}.alerts ADD COLUMN webhook_sent_at timestamptz;
UPDATE {{schema}}.alerts SET webhook_sent_at = last_sent_at;
