"""Deliver the `alerts` table to Prometheus Alertmanager and/or a JSON webhook (SPEC §6).

Alertmanager semantics, as Prometheus itself uses them:
* a firing alert is POSTed with `endsAt` a few re-send intervals ahead and re-sent every interval
  while it fires; if the pipeline stops, Alertmanager resolves it by itself when `endsAt` passes;
* a resolved alert is POSTed once more with its real `endsAt`;
* labels are the alert's stable labels, so Alertmanager groups, de-duplicates and inhibits (a
  critical inhibits the warning of the same alertname and resource, see `alertmanager.example.yml`).

Each target keeps its own state (`last_sent_at` for Alertmanager, `webhook_sent_at` for the
webhook), so one target's outage never makes the other repeat itself. A row is due for a target
when that target never got it, when it changed since (the engine clears both), or when it fires
and the target got it an interval ago: a minute for Alertmanager (which times alerts out without
re-sends), `WEBHOOK_REPEAT` for the webhook (a chat channel wants a change once and a reminder,
like Alertmanager's own repeat_interval, not a message a minute). A failed POST records the error
on the rows and leaves them due for that target: the next tick retries; nothing is lost. Error
texts never include the URL (a webhook URL is a secret).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import psycopg
import requests
from psycopg.rows import dict_row

from metrics_pipeline.lib.warehouse.db import Warehouse

RESEND_INTERVAL = timedelta(minutes=1)
#: A firing alert is repeated to the webhook this often (Alertmanager's default repeat_interval).
WEBHOOK_REPEAT = timedelta(hours=4)
#: target -> the column holding when it last got a row
SENT_COLUMN = {"alertmanager": "last_sent_at", "webhook": "webhook_sent_at"}
#: A firing alert's endsAt: this many re-send intervals ahead (Prometheus uses 4 evaluation intervals).
ENDS_AT_INTERVALS = 4
BATCH = 500


@dataclasses.dataclass
class DeliveryResult:
    due: int = 0
    sent: int = 0
    failed: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    skipped: bool = False  # another delivery was running


def due_alerts(conn: psycopg.Connection, schema: str, now: datetime, resend: timedelta = RESEND_INTERVAL,
               limit: int = BATCH, target: str = "alertmanager") -> list[dict]:
    """Rows `target` has to get now: never sent to it, changed since, or firing and last sent `resend` ago."""
    sent = SENT_COLUMN[target]
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT alert_id, fingerprint, alertname, state, severity, labels, annotations, starts_at, ends_at,
                       generator_url, last_sent_at, send_attempts
                FROM {schema}.alerts
                WHERE {sent} IS NULL OR (state = 'firing' AND {sent} <= %s)
                ORDER BY starts_at LIMIT %s""",
            (now - resend, limit),
        ).fetchall()


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def alertmanager_payload(rows: list[dict], now: datetime, resend: timedelta = RESEND_INTERVAL) -> list[dict]:
    """The body of `POST /api/v2/alerts`."""
    payload = []
    for row in rows:
        ends_at = row["ends_at"] if row["state"] == "resolved" else now + ENDS_AT_INTERVALS * resend
        item = {
            "labels": {k: str(v) for k, v in row["labels"].items()},
            "annotations": {k: str(v) for k, v in row["annotations"].items()},
            "startsAt": _iso(row["starts_at"]),
            "endsAt": _iso(ends_at),
        }
        if row["generator_url"]:
            item["generatorURL"] = row["generator_url"]
        payload.append(item)
    return payload


def webhook_payload(rows: list[dict]) -> dict:
    """Slack-compatible: a `text` summary, plus the alerts for receivers that read JSON."""
    lines = []
    for row in rows:
        icon = {"critical": ":red_circle:", "warning": ":warning:"}.get(row["severity"], "")
        verb = "RESOLVED" if row["state"] == "resolved" else "FIRING"
        summary = row["annotations"].get("summary") or row["alertname"]
        lines.append(f"{icon} [{verb}] {row['alertname']} ({row['severity']}): {summary}")
    return {
        "text": "\n".join(lines),
        "alerts": [
            {"fingerprint": r["fingerprint"], "status": r["state"], "labels": r["labels"], "annotations": r["annotations"],
             "startsAt": _iso(r["starts_at"]), "endsAt": _iso(r["ends_at"]) if r["ends_at"] else None,
             "generatorURL": r["generator_url"]}
            for r in rows
        ],
    }


def _post(session: requests.Session, url: str, body, timeout: float, what: str) -> str | None:
    """None on success, else an error text without the URL."""
    try:
        response = session.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=timeout)
    except requests.RequestException as exc:
        return f"{what}: {type(exc).__name__}"
    if response.status_code >= 300:
        return f"{what}: HTTP {response.status_code} {_redact(response.text, url)[:200]}"
    return None


def _redact(text: str, url: str) -> str:
    """A receiver's answer without the URL: error pages often echo the path ("Cannot POST /hooks/..."),
    and a webhook's path is its secret."""
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query):
        if len(secret) > 1:
            text = text.replace(secret, "[url]")
    return text


def deliver(warehouse: Warehouse, *, alertmanager_url: str | None = None, webhook_url: str | None = None,
            now: datetime | None = None, resend: timedelta = RESEND_INTERVAL, timeout: float = 10.0) -> DeliveryResult:
    """Send every due alert to the configured targets; mark what went, record what failed."""
    schema = warehouse.schema
    now = now or datetime.now(timezone.utc)
    result = DeliveryResult()
    targets = []
    if alertmanager_url:
        targets.append(("alertmanager", alertmanager_url.rstrip("/") + "/api/v2/alerts", resend,
                        lambda rows: alertmanager_payload(rows, now, resend)))
    if webhook_url:
        targets.append(("webhook", webhook_url, WEBHOOK_REPEAT, webhook_payload))
    if not targets:
        return result
    with warehouse.connect() as conn, requests.Session() as session:
        # One delivery at a time (the delivery sensor and the live loop both deliver): two at once
        # could both read the same due rows and send them twice. The other simply finds nothing due.
        lock = f"metrics_pipeline.delivery:{schema}"
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock,)).fetchone()[0]:
            result.skipped = True
            return result
        try:
            _deliver_locked(conn, schema, session, targets, now, timeout, result)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock,))
    return result


def _deliver_locked(conn, schema, session, targets, now, timeout: float, result: DeliveryResult) -> None:
    """Send each target its due rows; mark what went, record what failed."""
    for name, url, interval, build in targets:
        rows = due_alerts(conn, schema, now, interval, target=name)
        result.due += len(rows)
        if not rows:
            continue
        ids = [r["alert_id"] for r in rows]
        error = _post(session, url, build(rows), timeout, name)
        if error:
            conn.execute(
                f"UPDATE {schema}.alerts SET send_attempts = send_attempts + 1, last_error = %s WHERE alert_id = ANY(%s)",
                (error[:1000], ids),
            )
            result.failed += len(rows)
            result.errors.append(error)
        else:  # this target's state only; an error another target recorded stays until it succeeds
            conn.execute(
                f"UPDATE {schema}.alerts SET {SENT_COLUMN[name]} = %s, send_attempts = send_attempts + 1, "
                "last_error = CASE WHEN last_error LIKE %s THEN NULL ELSE last_error END WHERE alert_id = ANY(%s)",
                (now, f"{name}:%", ids),
            )
            result.sent += len(rows)
