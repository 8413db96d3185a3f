"""The landing writer when things break (SPEC §12): a writer killed with `kill -9` while writing,
a read-only or full landing directory, and an S3 landing zone (moto's server) through the spool.

What must hold: every batch `write` returned for is complete in the files; what was never
acknowledged is never half-stored (readers skip a torn tail whole); a zone that cannot write raises
LandingUnavailable and leaves no half line; with S3, files reach the bucket and leave the spool.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.landing import LandingUnavailable, PushWriter, encode_batch, read_items, read_landing
from metrics_pipeline.lib.custom.validate import Measure
from metrics_pipeline.lib.landing import open_landing

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 1, 5, 13, 7, 30, tzinfo=timezone.utc)

#: a writer in a loop: batch b holds values b*100000 + i; prints "b key" once `write` returned. With a
#: third argument N, batch N's write() stops half-way and the process kills itself (SIGKILL), the
#: way a kill landing inside a large write() leaves a file: the deterministic form of the race.
WRITER_LOOP = textwrap.dedent("""
    import os, signal, sys
    from datetime import datetime, timezone
    from metrics_pipeline.lib.custom.config import ApiConfig
    from metrics_pipeline.lib.custom.landing import PushWriter
    from metrics_pipeline.lib.custom.validate import Measure

    die_in = int(sys.argv[3]) if len(sys.argv) > 3 else None
    real_write = os.write
    def write(fd, data):
        if b'"value":%d.0,' % (die_in * 100_000) in bytes(data[:400]):
            real_write(fd, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(fd, data)
    if die_in is not None:
        os.write = write

    now = datetime.now(timezone.utc)
    writer = PushWriter(ApiConfig(landing=sys.argv[1]))
    for b in range(1_000_000):
        items = [Measure("orders", float(b * 100_000 + i), now, {"host": "web-1"}) for i in range(int(sys.argv[2]))]
        key = writer.write("acme", "measures", items)
        print(b, key, flush=True)
""")


def run_python(code: str, *args: str, root: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter; as root, without the capabilities that ignore file permissions."""
    command = [sys.executable, "-c", code, *args]
    if os.geteuid() == 0 and not root:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file permissions cannot be tested")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *command]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120, **kwargs)


def landed(root: Path) -> tuple[dict[int, list[float]], list[Path]]:
    """Values per batch number in every file under `root`, and the files with a torn tail."""
    batches: dict[int, list[float]] = {}
    torn = []
    for path in sorted((root / "custom").rglob("*.jsonl")):
        read = read_landing(path.read_bytes())
        assert read.corrupt_lines == 0, path
        if read.torn:
            torn.append(path)
        for item in read.items:
            batches.setdefault(int(item["value"]) // 100_000, []).append(item["value"])
    return batches, torn


# -- kill -9 --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("batch_size", "die_in"), [(2_000, None), (20_000, None), (2_000, 30)],
                         ids=["kill-9-small-batches", "kill-9-large-batches", "killed-inside-write"])
def test_a_writer_killed_mid_batch_keeps_every_acknowledged_batch_and_half_stores_nothing(tmp_path, batch_size, die_in):
    args = [str(tmp_path), str(batch_size)] + ([str(die_in)] if die_in is not None else [])
    process = subprocess.Popen([sys.executable, "-c", WRITER_LOOP, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    acknowledged: dict[int, str] = {}
    try:
        while len(acknowledged) < 25:
            line = process.stdout.readline()
            assert line, "the writer stopped before it was killed"
            number, key = line.split()
            acknowledged[int(number)] = key
        if die_in is None:
            time.sleep(0.003 * (batch_size // 2_000))  # somewhere inside a later batch
    finally:
        if die_in is None:
            os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    for line in process.stdout.read().splitlines():  # printed before the kill landed
        number, key = line.split()
        acknowledged[int(number)] = key
    batches, torn = landed(tmp_path)
    for number, key in acknowledged.items():
        assert sorted(batches[number]) == [number * 100_000 + i for i in range(batch_size)], number
        assert (tmp_path / key).is_file()
    # at most one batch beyond the acknowledged (killed after its fsync, before its print), all of it
    assert set(batches) - set(acknowledged) <= {max(acknowledged) + 1}
    assert all(len(values) == batch_size for values in batches.values())
    assert len(torn) <= 1 and (die_in is None or len(torn) == 1)  # only the file being written
    for path in torn:  # after the last commit line: part of the unfinished batch, never a commit line
        data = path.read_bytes()
        tail = data[read_landing(data).end:]
        assert 0 < tail.count(b"\n") < batch_size and not tail.endswith(b"\n") and b"committed" not in tail
    if die_in is not None:
        assert max(acknowledged) == die_in - 1 and die_in not in batches


# -- a landing directory that cannot be written ---------------------------------------------------

WRITE_ONE = textwrap.dedent("""
    import json, sys
    from datetime import datetime, timezone
    from metrics_pipeline.lib.custom.config import ApiConfig
    from metrics_pipeline.lib.custom.landing import LandingUnavailable, PushWriter
    from metrics_pipeline.lib.custom.validate import Measure

    now = datetime.now(timezone.utc)
    results = []
    with PushWriter(ApiConfig(landing=sys.argv[1])) as writer:
        for size in json.loads(sys.argv[2]):
            try:
                key = writer.write("acme", "measures", [Measure("orders", float(i), now) for i in range(size)])
                results.append(["ok", key])
            except LandingUnavailable as exc:
                results.append(["unavailable", str(exc)])
        try:
            writer.probe()
            results.append(["ready"])
        except LandingUnavailable as exc:
            results.append(["not ready", str(exc)])
    print(json.dumps(results))
""")


def test_a_read_only_landing_directory_raises_landing_unavailable_and_writes_nothing(tmp_path):
    zone = tmp_path / "landing"
    zone.mkdir()
    zone.chmod(0o555)
    try:
        result = run_python(WRITE_ONE, str(zone), json.dumps([10, 10]))
    finally:
        zone.chmod(0o755)
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    assert [o[0] for o in outcomes] == ["unavailable", "unavailable", "not ready"]
    assert "Permission denied" in outcomes[0][1]
    assert list(zone.iterdir()) == []


def test_a_full_landing_directory_raises_landing_unavailable_leaves_no_half_line_and_moves_to_a_new_file(tmp_path):
    # RLIMIT_FSIZE makes every file of the writer "full" at 64 kB, as a full disk would, without a
    # file system of our own: the 3rd batch no longer fits, the next one goes to a new file.
    code = "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); " \
           "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n" + WRITE_ONE
    result = run_python(code, str(tmp_path), json.dumps([100, 100, 400, 100]), root=True)
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    assert [o[0] for o in outcomes] == ["ok", "ok", "unavailable", "ok", "ready"]
    assert outcomes[0][1] == outcomes[1][1] != outcomes[3][1]  # a new file after the failure
    first = (tmp_path / outcomes[0][1]).read_bytes()
    assert first.endswith(b'{"committed":100}\n') and first.count(b"\n") == 202  # cut back: no half line
    assert [len(read_items((tmp_path / outcomes[i][1]).read_bytes())[0]) for i in (0, 3)] == [200, 100]


# -- S3 through the spool ---------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def s3_objects(url: str, endpoint: str) -> dict[str, bytes]:
    zone = open_landing(url, endpoint_url=endpoint)
    return {o.key: zone.read(o.key) for o in zone.list("custom/")}


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def test_with_s3_a_batch_is_acknowledged_from_the_spool_and_its_finished_file_uploaded(tmp_path, s3_landing_url,
                                                                                         moto_endpoint):
    clock = Clock()
    config = ApiConfig(landing=s3_landing_url, s3_endpoint_url=moto_endpoint, spool_dir=str(tmp_path))
    with PushWriter(config, clock=clock) as writer:
        key = writer.write("acme", "measures", [Measure("orders", 1.0, T0)])
        assert writer.write("acme", "measures", [Measure("orders", 2.0, T0)]) == key
        assert read_items((tmp_path / key).read_bytes())[0][1]["value"] == 2.0  # fsync'd in the spool
        assert key not in s3_objects(s3_landing_url, moto_endpoint)  # still open: not uploaded yet
        clock.now += 60  # the minute is over: the file is finished and uploaded in the background
        objects = wait_for(lambda: s3_objects(s3_landing_url, moto_endpoint))
        assert [i["value"] for i in read_items(objects[key])[0]] == [1.0, 2.0]
        wait_for(lambda: not (tmp_path / key).exists())


def test_with_s3_and_wait_for_upload_write_returns_after_its_file_is_uploaded(tmp_path, s3_landing_url, moto_endpoint):
    config = ApiConfig(landing=s3_landing_url, s3_endpoint_url=moto_endpoint, spool_dir=str(tmp_path),
                       wait_for_upload=True)
    with PushWriter(config) as writer:
        keys = [writer.write("acme", "measures", [Measure("orders", float(i), T0)]) for i in range(3)]
        objects = s3_objects(s3_landing_url, moto_endpoint)
    assert len(set(keys)) == 3 and set(keys) == set(objects)
    assert [read_items(objects[k])[0][0]["value"] for k in keys] == [0.0, 1.0, 2.0]
    assert not list(tmp_path.rglob("*.jsonl"))


def test_with_s3_a_dead_writers_spool_files_are_uploaded_and_a_live_writers_are_left_alone(tmp_path, s3_landing_url,
                                                                                            moto_endpoint):
    config = ApiConfig(landing=s3_landing_url, s3_endpoint_url=moto_endpoint, spool_dir=str(tmp_path))
    dead = "custom/measures/2026-01-05/13/acme/acme-20260105T1307-oldhost-77-abcdef-000003.jsonl"
    (tmp_path / dead).parent.mkdir(parents=True)
    (tmp_path / dead).write_bytes(encode_batch("acme", "measures", [Measure("orders", 7.0, T0)], T0) + b'{"tena')
    with PushWriter(config) as alive:
        live_key = alive.write("boreal", "measures", [Measure("orders", 8.0, T0)])
        with PushWriter(config) as starting:
            objects = wait_for(lambda: s3_objects(s3_landing_url, moto_endpoint))
            assert list(objects) == [dead]
            items, torn = read_items(objects[dead])
            assert [i["value"] for i in items] == [7.0] and torn  # uploaded as it was, torn tail and all
            starting._upload_leftovers()
            assert (tmp_path / live_key).exists() and live_key not in s3_objects(s3_landing_url, moto_endpoint)
    assert live_key in s3_objects(s3_landing_url, moto_endpoint)  # uploaded when its writer closed


def test_with_s3_unreachable_the_spool_still_acknowledges_but_wait_for_upload_refuses(tmp_path, s3_landing_url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    base = dict(landing=s3_landing_url, s3_endpoint_url=closed, spool_dir=str(tmp_path))
    with PushWriter(ApiConfig(**base)) as writer:
        key = writer.write("acme", "measures", [Measure("orders", 1.0, T0)])
        assert read_items((tmp_path / key).read_bytes())[0][0]["value"] == 1.0
    assert (tmp_path / key).exists()  # kept for the next writer: nothing lost
    with PushWriter(ApiConfig(**base, wait_for_upload=True)) as writer:
        writer._remote._client = boto3.client("s3", endpoint_url=closed, region_name="us-east-1",
                                              config=Config(retries={"max_attempts": 1}, connect_timeout=1))
        with pytest.raises(LandingUnavailable, match="upload of .* failed"):
            writer.write("acme", "measures", [Measure("orders", 2.0, T0)])
