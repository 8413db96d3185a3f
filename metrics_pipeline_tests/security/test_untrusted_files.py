"""Files from an untrusted producer: they cannot make us read elsewhere, exhaust memory or hang.

The landing zone is written by agents and jobs we do not control. A file name, a symlink, one
enormous line or a deeply nested document must cost a bounded amount of memory and time, and end
up quarantined (ingestion logs: a `quarantine` row with the reason) or counted (host files: the
per-reason problem counts), while the good records around it load.

Memory is measured in a subprocess with `resource.getrusage` (peak RSS): the growth of the peak
while parsing, on top of the file already read into memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from metrics_pipeline.lib.host.files import HostBatch
from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions, parse_file
from metrics_pipeline.lib.landing import LandingError, LocalLanding, open_landing
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.ingestion_logs import at

HUGE = 200 * 1024 * 1024  # one line of 200 MB, under the landing zone's 256 MB object limit
MB = 1024 * 1024
NOW = datetime.now(timezone.utc)
HOUR = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
OPTIONS = ParseOptions(now=NOW)


def _record_line(minute: int = 5, **changes) -> bytes:
    return json.dumps(at(HOUR, minute, **changes)).encode()


def _host_line(ts: float, host: str = "h1", metric: str = "host_load1") -> bytes:
    return json.dumps({"ts": ts, "host": host, "samples": [[metric, 1.0, "count", {}]]}).encode()


# -- paths -----------------------------------------------------------------------------------------

def test_a_symlinked_directory_cannot_make_the_zone_read_or_write_outside_it(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("SECRET")
    (tmp_path / "zone" / "ingestion_logs").mkdir(parents=True)
    (tmp_path / "zone" / "ingestion_logs" / "d").symlink_to(outside, target_is_directory=True)
    zone = LocalLanding(tmp_path / "zone")
    assert zone.list() == []  # not walked into
    with pytest.raises(LandingError, match="outside the landing zone"):
        zone.read("ingestion_logs/d/secret.json")
    with pytest.raises(LandingError, match="outside the landing zone"):
        zone.write("ingestion_logs/d/planted.json", b"x")
    with pytest.raises(LandingError, match="outside the landing zone"):
        zone.delete("ingestion_logs/d/secret.json")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.json"]


@pytest.fixture(params=["local", "s3"])
def zone(request, tmp_path):
    if request.param == "local":
        return LocalLanding(tmp_path / "landing")
    return open_landing(request.getfixturevalue("s3_landing_url"), endpoint_url=request.getfixturevalue("moto_endpoint"),
                        region_name="us-east-1")


def _plant(zone, key: str, data: bytes) -> None:
    """Write an object under a name `zone.write` itself refuses, as a hostile producer could."""
    if isinstance(zone, LocalLanding):
        path = zone.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        zone.client.put_object(Bucket=zone.bucket, Key=zone._full(key), Body=data)


def _quarantine(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT source_file, position, reason FROM metrics.quarantine ORDER BY 1").fetchall()


def _runs(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM metrics.ingestion_runs").fetchone()[0]


def test_file_names_leaving_the_zone_and_oversized_files_are_quarantined_and_good_files_still_load(warehouse_dsn, zone):
    zone.max_object_bytes = 10_000
    zone.write("ingestion_logs/good.json", b"[" + _record_line() + b"]")
    planted = ["ingestion_logs/a\\b.json"]  # a backslash: a valid file name on Linux and S3
    if not isinstance(zone, LocalLanding):  # S3 keys are opaque strings: `..` and a leading `/` are possible
        planted += ["ingestion_logs/../../etc/passwd.json", "ingestion_logs/./x.json"]
    for key in planted:
        _plant(zone, key, b"[" + _record_line(7) + b"]")
    zone.write("ingestion_logs/huge.json", b"[" + _record_line(9) + b"]" + b" " * 20_000)

    result = ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, HOUR, NOW + timedelta(hours=1), OPTIONS)
    assert result.loaded == 1 and _runs(warehouse_dsn) == 1
    quarantined = {key: reason for key, _, reason in _quarantine(warehouse_dsn)}
    assert result.quarantined == len(planted) + 1 == len(quarantined)
    assert "larger than 10000 bytes" in quarantined["ingestion_logs/huge.json"]
    for key in planted:
        assert "not a relative path inside the landing zone" in quarantined[key]
    # Re-running is idempotent: the refusals stay one row each.
    ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, HOUR, NOW + timedelta(hours=1), OPTIONS)
    assert len(_quarantine(warehouse_dsn)) == len(planted) + 1 and _runs(warehouse_dsn) == 1


def test_file_names_postgres_cannot_store_are_quarantined_escaped_and_good_files_still_load(warehouse_dsn, zone):
    """Issue 16: a name that is not UTF-8 (local disks hand back bytes), holds a NUL (a valid S3 key
    character) or is too long for the warehouse's index made every ingestion run and sensor tick fail."""
    import os

    zone.write("ingestion_logs/good.json", b"[" + _record_line() + b"]")
    if isinstance(zone, LocalLanding):
        with open(os.fsencode(zone.root) + b"/ingestion_logs/r\xe9sultats.jsonl", "wb") as fh:
            fh.write(_record_line(7) + b"\n")
        zone.write("ingestion_logs/" + "/".join(["d" * 250] * 12) + "/deep.jsonl", _record_line(8) + b"\n")
        expected = {"ingestion_logs/r\\xe9sultats.jsonl": "file name is not valid UTF-8"}
    else:
        _plant(zone, "ingestion_logs/nul\x00.jsonl", _record_line(7) + b"\n")
        _plant(zone, "ingestion_logs/" + "d" * 1100 + ".jsonl", _record_line(8) + b"\n")  # S3 allows 1,024; moto more
        expected = {"ingestion_logs/nul\\x00.jsonl": "file name contains a NUL character"}
    for _ in range(2):  # idempotent
        result = ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, HOUR, NOW + timedelta(hours=1), OPTIONS)
        assert (result.loaded, result.quarantined, result.refused_files) == (1, 2, 2) and _runs(warehouse_dsn) == 1
    quarantined = {key: (position, reason) for key, position, reason in _quarantine(warehouse_dsn)}
    for key, reason in expected.items():
        assert quarantined.pop(key)[1].startswith(reason)
    (long_key, (position, reason)), = quarantined.items()
    assert position == -1 and "more than the 1024 allowed" in reason and len(long_key.encode()) <= 1024


def test_an_s3_object_we_cannot_get_is_quarantined_and_the_rest_loads(warehouse_dsn, s3_landing_url, moto_endpoint):
    """An object archived to Glacier by a lifecycle rule answers GetObject with InvalidObjectState:
    retrying never helps, so it is refused like an oversized file instead of failing every tick and
    run. (AccessDenied still fails loudly: it is usually a policy denying every object.)"""
    zone = open_landing(s3_landing_url, endpoint_url=moto_endpoint, region_name="us-east-1")
    zone.write("ingestion_logs/good.jsonl", _record_line() + b"\n")
    zone.client.put_object(Bucket=zone.bucket, Key=zone._full("ingestion_logs/cold.jsonl"), Body=_record_line(7) + b"\n",
                           StorageClass="GLACIER")
    result = ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, HOUR, NOW + timedelta(hours=1), OPTIONS)
    assert (result.loaded, result.quarantined, result.refused_files) == (1, 1, 1)
    assert _quarantine(warehouse_dsn) == [("ingestion_logs/cold.jsonl", -1, "file cannot be read (InvalidObjectState)")]


@pytest.mark.timeout(60)
def test_a_fifo_or_a_symlink_in_the_zone_is_never_opened_so_a_load_cannot_hang_or_escape(warehouse_dsn, tmp_path):
    import os

    zone = LocalLanding(tmp_path / "landing")
    zone.write("ingestion_logs/good.json", b"[" + _record_line() + b"]")
    os.mkfifo(zone.root / "ingestion_logs" / "pipe.json")  # opening it for reading would block forever
    (tmp_path / "secret.json").write_bytes(b"[" + _record_line(7) + b"]")
    (zone.root / "ingestion_logs" / "link.json").symlink_to(tmp_path / "secret.json")
    result = ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, HOUR, NOW + timedelta(hours=1), OPTIONS)
    assert (result.files, result.loaded, result.quarantined) == (1, 1, 0) and _runs(warehouse_dsn) == 1


def test_host_files_the_zone_refuses_are_counted_and_the_other_hosts_load(tmp_path):
    from metrics_pipeline.lib.host.files import hour_prefix, read_window

    zone = LocalLanding(tmp_path, max_object_bytes=10_000)
    prefix = hour_prefix(HOUR)
    zone.write(prefix + "h1/h1-1.jsonl", _host_line(HOUR.timestamp() + 60) + b"\n")
    _plant(zone, prefix + "h2/h2\\1.jsonl", _host_line(HOUR.timestamp() + 60, host="h2") + b"\n")
    zone.write(prefix + "h3/h3-1.jsonl", _host_line(HOUR.timestamp() + 60, host="h3") + b"\n" * 20_000)
    batch, objects = read_window(zone, HOUR, HOUR + timedelta(hours=1))
    assert batch.hosts == {"h1"} and batch.problems["refused_files"] == 2
    # Only the file read comes back: the refused ones are never marked processed, so landing
    # retention cannot delete samples nobody read.
    assert [o.key for o in objects] == [prefix + "h1/h1-1.jsonl"]


# -- memory and time -------------------------------------------------------------------------------

_MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    from metrics_pipeline.lib.landing import LocalLanding
    root, key, kind = sys.argv[1:4]
    data = LocalLanding(root).read(key)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    if kind == "ingestion":
        from datetime import datetime, timezone
        from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions, parse_file
        parsed = parse_file(data, key, ParseOptions(now=datetime.now(timezone.utc)))
        outcome = {"accepted": len(parsed.accepted), "reasons": [r.reason for r in parsed.rejected],
                   "raw_sizes": [len(r.raw) for r in parsed.rejected]}
    else:
        from metrics_pipeline.lib.host.files import HostBatch
        batch = HostBatch()
        batch.read(data)
        outcome = {"lines": batch.lines, "problems": dict(batch.problems)}
    seconds = time.monotonic() - started
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({**outcome, "grew_mb": grew / 1024, "seconds": seconds}))
""")


def _measure(tmp_path, key: str, data_parts: list[bytes], kind: str) -> dict:
    path = tmp_path / key
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for part in data_parts:
            fh.write(part)
    try:
        done = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path), key, kind],
                              capture_output=True, text=True, timeout=120)
    finally:
        path.unlink()
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.timeout(120)
def test_a_200_mb_log_line_without_newline_is_quarantined_in_bounded_memory_and_time(tmp_path):
    good = _record_line()
    out = _measure(tmp_path, "ingestion_logs/huge.jsonl",
                   [good, b"\n", b'{"Entreprise": "', b"a" * HUGE], "ingestion")
    assert out["accepted"] == 1 and out["reasons"] == ["line longer than 1000000 bytes"]
    assert out["raw_sizes"][0] < 20_000  # a bounded excerpt is kept, not the 200 MB
    assert out["grew_mb"] < 64 and out["seconds"] < 10, out


@pytest.mark.timeout(120)
def test_a_200_mb_unterminated_json_array_is_quarantined_in_bounded_memory_and_time(tmp_path):
    out = _measure(tmp_path, "ingestion_logs/huge.json",
                   [b"[", _record_line(), b', {"Entreprise": "', b"a" * HUGE], "ingestion")
    assert out["accepted"] == 1 and len(out["reasons"]) == 1 and "broken JSON array" in out["reasons"][0]
    assert out["raw_sizes"][0] < 20_000
    # An array is decoded as a whole (that is what a JSON document needs): once, nothing more.
    assert out["grew_mb"] < HUGE / MB * 1.25 and out["seconds"] < 20, out


@pytest.mark.timeout(120)
def test_a_200_mb_host_line_is_counted_corrupt_in_bounded_memory_and_time(tmp_path):
    ts = HOUR.timestamp() + 60
    out = _measure(tmp_path, "host/x/h1.jsonl",
                   [_host_line(ts), b"\n", b'{"ts": 1, "samples": [', b"1," * (HUGE // 2), b"\n", _host_line(ts + 1), b"\n"],
                   "host")
    assert out["lines"] == 2 and out["problems"] == {"corrupt_lines": 1}
    assert out["grew_mb"] < 64 and out["seconds"] < 10, out


DEEP = 100_000


@pytest.mark.timeout(30)
@pytest.mark.parametrize("layout", ["lines", "array"])
def test_deeply_nested_json_is_quarantined_not_a_crash_and_the_good_records_load(layout):
    good = _record_line()
    if layout == "lines":
        data = good + b"\n" + b'{"a": ' + b"[" * DEEP + b"\n" + b'{"a": ' * DEEP + b"\n" + _record_line(7) + b"\n"
    else:
        data = b"[" + good + b", " + b"[" * DEEP + b"]" * DEEP + b"]"
    parsed = parse_file(data, "ingestion_logs/deep.json", OPTIONS)
    assert len(parsed.accepted) == (2 if layout == "lines" else 1)
    assert parsed.rejected and all("nested too deeply" in r.reason for r in parsed.rejected)
    assert all(len(r.raw) <= 20_000 for r in parsed.rejected)


@pytest.mark.timeout(30)
def test_deeply_nested_host_lines_are_counted_and_the_good_lines_load():
    ts = HOUR.timestamp() + 60
    batch = HostBatch()
    batch.read(_host_line(ts) + b"\n" + b"[" * DEEP + b"\n" + b'{"ts": 1, "host": "h", "samples": ' + b"[" * DEEP
               + b"\n" + _host_line(ts + 1) + b"\n")
    assert batch.lines == 2 and batch.problems == {"corrupt_lines": 2}


def test_names_postgres_cannot_store_in_a_host_file_are_counted_and_the_other_samples_load():
    ts = HOUR.timestamp() + 60
    batch = HostBatch()
    batch.read(b"\n".join([
        _host_line(ts),
        _host_line(ts, metric="host_load1\x00"),            # NUL: PostgreSQL text cannot hold it
        _host_line(ts, metric="m" * 5000),                   # longer than an indexed name may be
        _host_line(ts, host="h\x00"),
        json.dumps({"ts": ts, "host": "h1", "samples": [["host_load5", 1.0, "count", {"tenant": "t" * 5000}]]}).encode(),
        _host_line(ts + 1, metric="host_load5"),
    ]) + b"\n")
    assert batch.lines == 5 and batch.problems == {"invalid_samples": 3, "corrupt_lines": 1}
    frame = batch.frame()
    assert list(frame["metric"]) == ["host_load1", "host_load5"]
