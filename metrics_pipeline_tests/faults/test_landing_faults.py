"""Damaged landing files through the real assets (SPEC §2.3, §2.4, §9): truncated gzip, half-written
and corrupt lines, invalid UTF-8, a collector killed mid-write, clocks in the future or the far
past, the same file twice and a file delivered again.

What must hold: every complete, valid record is loaded; everything else is counted (host files:
`partial_lines` / `corrupt_lines` / `dropped_points` metadata) or quarantined with its file,
position and reason (ingestion logs), never written into another partition, and never crashes
the run. Duplicates are stored once; a re-delivered file changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import psycopg

from metrics_pipeline.defs.host.assets import host_points
from metrics_pipeline.defs.host.sensors import host_points_sensor
from metrics_pipeline.defs.ingestion_logs.assets import ingestion_log_records
from metrics_pipeline.defs.ingestion_logs.sensors import ingestion_logs_sensor
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.host.files import hour_of_key
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline_tests.support.faults.dump import dump_tables
from metrics_pipeline_tests.support.faults.landing_data import gz, host_minute, jsonl, record, tick
from metrics_pipeline_tests.support.host_files import decode_ticks

ROOT = Path(__file__).resolve().parents[2]
H = datetime(2026, 1, 5, 13, tzinfo=timezone.utc)
KEY = H.strftime("%Y-%m-%d-%H:%M")


def resources(dsn: str, zone: LocalLanding) -> dict:
    return {"warehouse": WarehouseResource(dsn=dsn), "landing": LandingZoneResource(url=zone.url)}


def materialize(asset, dsn, zone, hour=H):
    result = dg.materialize([asset], partition_key=hour.strftime("%Y-%m-%d-%H:%M"), resources=resources(dsn, zone))
    assert result.success
    return {k: v.value for k, v in result.asset_materializations_for_node(asset.key.path[-1])[0].metadata.items()}


def stored_points(dsn: str) -> list[tuple]:
    """Every point of the warehouse (not only the window: nothing may land elsewhere)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT s.resource, s.metric, extract(epoch FROM p.ts)::float8, p.value FROM metrics.points p "
            "JOIN metrics.series s USING (series_id)").fetchall()
    return sorted((r, m, round(t, 3), v) for r, m, t, v in rows)


def expected_points(lines: list[bytes]) -> list[tuple]:
    out = []
    for line in lines:
        tick_ = json.loads(line)
        out += [(tick_["host"], s[0], round(tick_["ts"], 3), s[1]) for s in tick_["samples"]]
    return sorted(out)


def object_ids(conn: psycopg.Connection) -> list[str]:
    return conn.execute("SELECT array_agg(object_id ORDER BY object_id) FROM metrics.ingestion_runs").fetchone()[0]


def set_mtime(zone: LocalLanding, key: str, when: datetime) -> None:
    """A file's arrival time: the home hour of a file with no readable record."""
    os.utime(zone.path(key), (when.timestamp(), when.timestamp()))


# -- corrupt and truncated files ------------------------------------------------------------------

def test_damaged_host_files_keep_every_complete_sample_and_count_the_rest(warehouse_dsn, tmp_path):
    zone = LocalLanding(tmp_path)
    good = []

    def lines_at(host, minute, count):
        return [tick(host, (H + timedelta(minutes=minute, seconds=s)).timestamp(), float(s)) for s in range(count)]

    ok = lines_at("web-1", 0, 20)
    zone.write(host_key("web-1", H.timestamp()), b"".join(ok))
    good += ok
    torn = lines_at("web-2", 1, 10)  # the agent died mid-write: the last line has no end
    zone.write(host_key("web-2", (H + timedelta(minutes=1)).timestamp()), b"".join(torn) + torn[0][:37])
    good += torn
    middle = lines_at("web-3", 2, 10)  # a corrupt line between good ones, one with invalid UTF-8
    zone.write(host_key("web-3", (H + timedelta(minutes=2)).timestamp()),
               b"".join(middle[:4]) + b'{"ts": 17, "host": "web-3", "samp\n' + b"\xff\xfe\x00garbage\n" + b"".join(middle[4:]))
    good += middle
    _, data, _ = host_minute("web-4", H + timedelta(minutes=3))
    blob = gz(data)[:200]  # a gzip upload cut short: not what the agent writes, and unreadable
    zone.write(host_key("web-4", (H + timedelta(minutes=3)).timestamp()).replace(".jsonl", ".jsonl.gz"), blob)
    zone.write(host_key("web-5", (H + timedelta(minutes=4)).timestamp()), b"")  # created, never written

    meta = materialize(host_points, warehouse_dsn, zone)
    assert stored_points(warehouse_dsn) == expected_points(good)
    # Every line of the gzip blob is garbage: all but a last one without newline are "corrupt".
    segments = [s for s in blob.decode("utf-8", "replace").split("\n") if s.strip()]
    gz_partial = 0 if blob.endswith(b"\n") else 1
    assert meta["partial_lines"] == 1 + gz_partial
    assert meta["corrupt_lines"] == 2 + len(segments) - gz_partial
    assert (meta["files"], meta["hosts"], meta["points"]) == (5, 3, len(good) * 3)


def test_damaged_ingestion_logs_are_quarantined_with_reasons_and_every_good_record_loads(warehouse_dsn, tmp_path):
    zone = LocalLanding(tmp_path)
    runs = [record(H + timedelta(minutes=m), Objet_Id=m) for m in range(20)]
    zone.write("ingestion_logs/good.jsonl", jsonl(runs[0:5]))
    zone.write("ingestion_logs/half.jsonl", jsonl(runs[5:8]) + json.dumps(runs[8]).encode()[:40])
    array = json.dumps(runs[9:13]).encode()
    zone.write("ingestion_logs/cut.json", array[: len(array) - 60])  # the last item is cut short
    zone.write("ingestion_logs/binary.jsonl", jsonl(runs[13:15]) + b"\xff\xfe not utf-8\n" + jsonl(runs[15:17]))
    zone.write("ingestion_logs/logs.json.gz", gz(json.dumps(runs[17:20]).encode())[:120])  # truncated gzip
    zone.write("ingestion_logs/empty.json", b"")
    for key in ("logs.json.gz", "empty.json"):  # no readable record: they belong to their arrival hour
        set_mtime(zone, f"ingestion_logs/{key}", H + timedelta(minutes=30))

    meta = materialize(ingestion_log_records, warehouse_dsn, zone)
    with psycopg.connect(warehouse_dsn) as conn:
        loaded = {r[0] for r in conn.execute("SELECT object_id::int FROM metrics.ingestion_runs").fetchall()}
        quarantined = conn.execute(
            "SELECT source_file, position, reason, record_hour FROM metrics.quarantine ORDER BY 1, 2").fetchall()
    assert loaded == set(range(0, 8)) | set(range(9, 12)) | set(range(13, 17))  # every complete record
    reasons = {(f.removeprefix("ingestion_logs/"), p): reason for f, p, reason, _ in quarantined}
    assert reasons[("half.jsonl", 4)].startswith("broken JSON")
    assert reasons[("cut.json", 3)].startswith("broken JSON array") and "unreadable" in reasons[("cut.json", 3)]
    assert reasons[("binary.jsonl", 3)].startswith("not UTF-8")
    gz_rows = [reason for (f, _), reason in reasons.items() if f == "logs.json.gz"]
    assert gz_rows and all(r.startswith(("not UTF-8", "broken JSON")) for r in gz_rows)
    assert {hour for *_, hour in quarantined} == {H}  # in the partition that loaded them, none elsewhere
    assert meta["read"] == meta["loaded"] + meta["quarantined"] == 15 + len(quarantined)
    # The empty file holds no record but belongs to its arrival hour, so this run marks it processed.
    assert (meta["files"], meta["empty_files"]) == (6, 1)


def test_a_collector_killed_mid_write_loses_only_its_torn_tail(warehouse_dsn, tmp_path):
    zone = LocalLanding(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "metrics_pipeline.cli", "collect", "--landing", str(tmp_path), "--host-name", "victim",
         "--cpu-interval", "0.1", "--network-interval", "0.1", "--disk-io-interval", "0.2", "--disk-usage-interval", "0.5"],
        cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while sum(o.size for o in zone.list("host/")) < 20_000:  # a few dozen ticks written
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    files = zone.list("host/")
    newest = max(files, key=lambda o: o.key)
    with open(zone.path(newest.key), "ab") as fh:  # the torn write a crash (or a power cut) leaves
        fh.write(b'{"ts": 1767600000.1, "host": "victim", "samples": [["host_cpu_percent", 3')

    # Every complete tick, as a format-1 line (the agent writes format 2; `decode_ticks` reads both).
    complete = [json.dumps(t).encode() + b"\n" for o in files for t in decode_ticks(zone.read(o.key))]
    metas = [materialize(host_points, warehouse_dsn, zone, hour) for hour in sorted({hour_of_key(o.key) for o in files})]
    assert stored_points(warehouse_dsn) == expected_points(complete)
    assert sum(m["partial_lines"] for m in metas) == 1 and sum(m["corrupt_lines"] for m in metas) == 0
    assert sum(m["lines"] for m in metas) == len(complete) >= 5


# -- clocks ------------------------------------------------------------------------------------------

def test_host_samples_with_impossible_clocks_are_counted_not_loaded_anywhere(warehouse_dsn, tmp_path):
    zone = LocalLanding(tmp_path)
    good = [tick("web-1", (H + timedelta(seconds=s)).timestamp(), float(s)) for s in range(10)]
    skewed = [tick("web-1", (H + timedelta(hours=3, seconds=s)).timestamp(), 1.0) for s in range(4)]  # 3 h ahead
    future = [tick("web-1", datetime(2099, 6, 1, tzinfo=timezone.utc).timestamp(), 1.0)]
    broken = [tick("web-1", 0.0, 1.0), tick("web-1", 5.0e9, 1.0)]  # 1970, and after 2100: a broken clock
    zone.write(host_key("web-1", H.timestamp()), b"".join(good + skewed + future + broken))

    meta = materialize(host_points, warehouse_dsn, zone)
    assert stored_points(warehouse_dsn) == expected_points(good)  # nothing in H + 3 h, nothing in 2099
    assert meta["corrupt_lines"] == 2
    assert meta["out_of_window_points"] == meta["dropped_points"] == 3 * (len(skewed) + len(future))


def test_ingestion_records_from_the_future_or_the_far_past_are_quarantined_in_their_files_hour(warehouse_dsn, tmp_path):
    zone = LocalLanding(tmp_path)
    now = datetime.now(timezone.utc)
    zone.write("ingestion_logs/clocks.jsonl", jsonl([
        record(H + timedelta(minutes=5), Objet_Id=1),
        record(datetime(2099, 1, 1, 8, tzinfo=timezone.utc), Objet_Id=2),
        record(now + timedelta(days=3), Objet_Id=3),
        record(datetime(2001, 1, 1, 8, tzinfo=timezone.utc), Objet_Id=4),
        record(H + timedelta(minutes=9), Objet_Id=5),
    ]))
    res = resources(warehouse_dsn, zone)
    with dg.instance_for_test() as instance:
        tick_ = ingestion_logs_sensor(dg.build_sensor_context(instance=instance, resources=res))
    assert [r.partition_key for r in tick_.run_requests] == [KEY]  # no 2099, 2001 or next-week partition

    meta = materialize(ingestion_log_records, warehouse_dsn, zone)
    with psycopg.connect(warehouse_dsn) as conn:
        assert object_ids(conn) == ["1", "5"]
        quarantined = conn.execute("SELECT position, reason, record_hour FROM metrics.quarantine ORDER BY 1").fetchall()
    assert [p for p, _, _ in quarantined] == [2, 3, 4]
    assert "is in the future" in quarantined[0][1] and "is in the future" in quarantined[1][1]
    assert "is before the first partition" in quarantined[2][1]
    assert {hour for _, _, hour in quarantined} == {H}
    assert (meta["read"], meta["loaded"], meta["quarantined"]) == (5, 2, 3)


# -- duplicates and re-deliveries -------------------------------------------------------------------

def test_the_same_ingestion_file_twice_loads_once_and_a_redelivery_changes_nothing(warehouse_dsn, tmp_path):
    zone = LocalLanding(tmp_path)
    data = jsonl([record(H + timedelta(minutes=m), Objet_Id=m) for m in range(10)] + [record(H, Etat="??")])
    zone.write("ingestion_logs/jobs.jsonl", data)
    zone.write("ingestion_logs/resent/jobs-copy.jsonl", data)  # the same content under another name
    res = resources(warehouse_dsn, zone)
    with dg.instance_for_test() as instance:
        first = ingestion_logs_sensor(dg.build_sensor_context(instance=instance, resources=res))
        meta = materialize(ingestion_log_records, warehouse_dsn, zone)
        assert (meta["rows"], meta["duplicates"], meta["quarantined"]) == (10, 10, 2)  # one bad record per file
        with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
            before = dump_tables(conn, ["ingestion_runs", "quarantine"], H, H + timedelta(hours=1))

        time.sleep(0.01)
        zone.write("ingestion_logs/jobs.jsonl", data)  # delivered again, byte for byte
        again = ingestion_logs_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=res))
    assert [r.partition_key for r in first.run_requests] == [r.partition_key for r in again.run_requests] == [KEY]
    assert again.run_requests[0].run_key != first.run_requests[0].run_key  # a new run, not a deduplicated one
    materialize(ingestion_log_records, warehouse_dsn, zone)
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        assert dump_tables(conn, ["ingestion_runs", "quarantine"], H, H + timedelta(hours=1)) == before


def test_the_same_host_file_twice_loads_once_and_a_redelivery_changes_nothing(warehouse_dsn, tmp_path):
    zone = LocalLanding(tmp_path)
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    key, data, points = host_minute("web-1", hour)
    zone.write(key, data)
    zone.write(key.replace(".jsonl", "-resent.jsonl"), data)  # an upload retried under another name
    res = {"landing": LandingZoneResource(url=zone.url)}
    first = host_points_sensor(dg.build_sensor_context(resources=res))
    assert [(r.partition_key, r.tags["metrics_pipeline/reason"]) for r in first.run_requests] == [
        (hour.strftime("%Y-%m-%d-%H:%M"), "complete")]
    meta = materialize(host_points, warehouse_dsn, zone, hour)
    assert (meta["points"], meta["duplicate_points"]) == (points, points)
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        before = dump_tables(conn, ["points", "series"], hour, hour + timedelta(hours=1))

    time.sleep(0.01)
    zone.write(key, data)  # the same file delivered again
    again = host_points_sensor(dg.build_sensor_context(cursor=first.cursor, resources=res))
    assert [(r.partition_key, r.tags["metrics_pipeline/reason"]) for r in again.run_requests] == [
        (hour.strftime("%Y-%m-%d-%H:%M"), "late")]
    assert materialize(host_points, warehouse_dsn, zone, hour)["points_changed"] == 0
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        assert dump_tables(conn, ["points", "series"], hour, hour + timedelta(hours=1)) == before


# -- files that arrive "in the past" ---------------------------------------------------------------

def test_log_files_moved_into_the_zone_with_older_mtimes_are_still_requested_once_each(warehouse_dsn, tmp_path):
    zone = LocalLanding(tmp_path / "landing")
    staging = tmp_path / "job-output"
    staging.mkdir()
    later = H + timedelta(hours=2)
    zone.write("ingestion_logs/first.jsonl", jsonl([record(H + timedelta(minutes=5), Objet_Id=1)]))
    res = resources(warehouse_dsn, zone)

    def move_in(name: str, object_id: int) -> None:
        """A job wrote its log earlier and `mv`s it into the zone: the file keeps its older mtime
        (so do `rsync -a` copies, and S3 multipart uploads, dated from their start)."""
        path = staging / name
        path.write_bytes(jsonl([record(later + timedelta(minutes=object_id), Objet_Id=object_id)]))
        past = time.time() - 3600
        os.utime(path, (past, past))
        os.rename(path, zone.path(f"ingestion_logs/{name}"))

    with dg.instance_for_test() as instance:
        def tick(cursor):
            return ingestion_logs_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=res))

        first = tick(None)
        assert [r.partition_key for r in first.run_requests] == [KEY]
        move_in("moved-1.jsonl", 11)
        second = tick(first.cursor)
        assert [r.partition_key for r in second.run_requests] == [later.strftime("%Y-%m-%d-%H:%M")]
        assert tick(second.cursor).run_requests == []  # requested once, not at every tick
        move_in("moved-2.jsonl", 12)  # another one for the same hour: a new run, not a deduplicated key
        third = tick(second.cursor)
        assert [r.partition_key for r in third.run_requests] == [later.strftime("%Y-%m-%d-%H:%M")]
        assert third.run_requests[0].run_key != second.run_requests[0].run_key

    materialize(ingestion_log_records, warehouse_dsn, zone, later)
    with psycopg.connect(warehouse_dsn) as conn:
        assert object_ids(conn) == ["11", "12"]
