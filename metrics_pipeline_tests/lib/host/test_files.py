import json
from datetime import datetime, timedelta, timezone

from metrics_pipeline.lib.host.files import HostBatch, HostSensorState, hour_of_key, plan_host_requests
from metrics_pipeline.lib.landing import LocalLanding


def line(ts, samples, host="h1"):
    return json.dumps({"ts": ts, "host": host, "samples": samples}) + "\n"


def test_partial_last_lines_corrupt_lines_and_invalid_samples_are_skipped_and_counted():
    data = (
        line(1767225601.0, [["host_load1", 0.5, "count", {}], ["bad"], ["host_cpu_percent", "12", "percent", {}]])
        + "not json at all\n"
        + line(1767225602.0, [["host_cpu_state_percent", 3.0, "percent", {"state": "user"}]])
        + '{"ts": 1767225603.0, "host": "h1", "sam'
    )
    batch = HostBatch()
    batch.read(data.encode())
    assert batch.lines == 2
    assert batch.problems == {"partial_lines": 1, "corrupt_lines": 1, "invalid_samples": 2}
    frame = batch.frame()
    assert list(frame["metric"]) == ["host_load1", "host_cpu_state_percent"]
    assert json.loads(frame["labels"][1]) == {"host": "h1", "state": "user"}
    assert frame["ts"][1] == datetime(2026, 1, 1, 0, 0, 2, tzinfo=timezone.utc)


def test_arbitrary_bytes_never_raise():
    batch = HostBatch()
    batch.read(b"\xff\xfe\x00garbage\n{\"ts\": NaN}\n[1,2]\n")
    assert batch.lines == 0 and sum(batch.problems.values()) == 3


def test_hour_of_key():
    assert hour_of_key("host/2026-01-01/13/h/h-20260101T1305.jsonl") == datetime(2026, 1, 1, 13, tzinfo=timezone.utc)
    assert hour_of_key("logs/x.json") is None and hour_of_key("host/2026-13-01/99/h/x") is None


def _write(zone, hour, host="h1", minute=0):
    zone.write(f"host/{hour:%Y-%m-%d}/{hour:%H}/{host}/{host}-{hour:%Y%m%dT%H}{minute:02d}.jsonl",
               line(hour.timestamp() + minute * 60, [["host_load1", 1.0, "count", {}]]).encode())


def test_sensor_plan_requests_complete_hours_once_late_files_again_and_refreshes_the_current_hour(tmp_path):
    zone = LocalLanding(tmp_path)
    now = datetime(2026, 1, 1, 15, 7, tzinfo=timezone.utc)
    for h in (12, 13, 14, 15):
        _write(zone, datetime(2026, 1, 1, h, tzinfo=timezone.utc))
    requests, state = plan_host_requests(zone, HostSensorState(), now)
    assert [(r.hour.hour, r.reason) for r in requests] == [(12, "complete"), (13, "complete"), (14, "complete"), (15, "refresh")]
    state = HostSensorState.decode(state.encode())
    # Same minute: nothing new.
    assert plan_host_requests(zone, state, now + timedelta(seconds=30))[0] == []
    # A late file for hour 13, and a new refresh slot.
    _write(zone, datetime(2026, 1, 1, 13, tzinfo=timezone.utc), host="late-host", minute=5)
    requests, state = plan_host_requests(zone, state, now + timedelta(minutes=4))
    assert [(r.hour.hour, r.reason) for r in requests] == [(13, "late"), (15, "refresh")]
    # Hour 15 becomes complete two minutes after it ends; hour 16 has no files yet.
    requests, state = plan_host_requests(zone, state, datetime(2026, 1, 1, 16, 2, 30, tzinfo=timezone.utc))
    assert [(r.hour.hour, r.reason) for r in requests] == [(15, "complete")]
    assert len({r.run_key for r in requests}) == len(requests)


def test_sensor_plan_waits_for_the_grace_period(tmp_path):
    zone = LocalLanding(tmp_path)
    _write(zone, datetime(2026, 1, 1, 14, tzinfo=timezone.utc), minute=59)
    requests, _ = plan_host_requests(zone, HostSensorState(), datetime(2026, 1, 1, 15, 1, tzinfo=timezone.utc))
    assert [r.reason for r in requests] == []


def test_overflowing_numbers_deep_nesting_and_impossible_clocks_are_counted_not_raised():
    big = "9" * 400
    data = (
        f'{{"ts": 1700000000, "host": "h", "samples": [["host_load1", {big}, "count", {{}}]]}}\n'
        f'{{"ts": {big}, "host": "h", "samples": []}}\n'
        '{"ts": 1e13, "host": "h", "samples": [["host_load1", 1, "count", {}]]}\n'
        + '{"ts": 1700000000, "host": "h", "samples": ' + "[" * 5000 + "]" * 5000 + "}\n"
    )
    batch = HostBatch()
    batch.read(data.encode())
    assert batch.problems == {"invalid_samples": 1, "corrupt_lines": 3}
    assert len(batch.frame()) == 0


def test_after_a_downtime_longer_than_the_lookback_every_missed_hour_is_requested(tmp_path):
    zone = LocalLanding(tmp_path)
    start = datetime(2026, 1, 1, 0, tzinfo=timezone.utc)
    for h in range(60):
        _write(zone, start + timedelta(hours=h))
    state = HostSensorState(completed_through=start - timedelta(hours=1))
    now = start + timedelta(hours=60, minutes=10)
    requests, state = plan_host_requests(zone, state, now)
    complete = [r.hour for r in requests if r.reason == "complete"]
    assert complete == [start + timedelta(hours=h) for h in range(60)]
    assert state.completed_through == start + timedelta(hours=59)
