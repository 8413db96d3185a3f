import os
import time

import pytest

from metrics_pipeline.lib.landing import (
    MAX_KEY_BYTES,
    Cursor,
    LandingError,
    LocalLanding,
    RefusedObject,
    list_new,
    open_landing,
    read_many,
)


@pytest.fixture(params=["local", "s3"])
def zone(request, tmp_path):
    if request.param == "local":
        return LocalLanding(tmp_path / "landing")
    url = request.getfixturevalue("s3_landing_url")
    return open_landing(url, endpoint_url=request.getfixturevalue("moto_endpoint"), region_name="us-east-1")


def test_written_objects_are_listed_in_key_order_and_read_back(zone):
    zone.write("host/2026-01-01/13/b.jsonl", b"second")
    zone.write("host/2026-01-01/13/a.jsonl", b"first")
    zone.write("logs/x.json", b"[]")
    listed = zone.list("host/")
    assert [o.key for o in listed] == ["host/2026-01-01/13/a.jsonl", "host/2026-01-01/13/b.jsonl"]
    assert [o.size for o in listed] == [5, 6]
    assert zone.read("host/2026-01-01/13/a.jsonl") == b"first"
    assert [o.key for o in zone.list("host/2026-01-01/1")] == [o.key for o in listed]


def test_rewriting_an_object_changes_its_etag(zone):
    zone.write("a/b.json", b"1")
    before = zone.list("a/")[0].etag
    time.sleep(0.01)
    zone.write("a/b.json", b"22")
    assert zone.list("a/")[0].etag != before


def test_list_new_walks_after_a_cursor_without_missing_or_repeating(zone):
    for i in range(5):
        zone.write(f"logs/f{i}.json", b"[]")
    seen, cursor = [], Cursor()
    while batch := list_new(zone, "logs/", cursor, limit=2):
        seen += [o.key for o in batch]
        cursor = Cursor(batch[-1].mtime, batch[-1].key)
        cursor = Cursor.decode(cursor.encode())  # as a sensor stores it
    assert sorted(seen) == [f"logs/f{i}.json" for i in range(5)] and len(seen) == 5
    zone.write("logs/late.json", b"[]")
    assert [o.key for o in list_new(zone, "logs/", cursor)] == ["logs/late.json"]


@pytest.mark.parametrize("key", ["../etc/passwd", "/etc/passwd", "a/../../b", "a\\b", "a/./b", "nul\x00"])
def test_keys_that_leave_the_zone_are_refused(zone, key):
    with pytest.raises(LandingError, match="not a relative path inside the landing zone"):
        zone.read(key)
    with pytest.raises(LandingError):
        zone.write(key, b"x")


def test_reading_a_missing_object_names_it(zone):
    with pytest.raises(LandingError, match="'nope.json' does not exist"):
        zone.read("nope.json")


def test_objects_over_the_size_limit_are_refused(zone):
    zone.max_object_bytes = 10
    zone.write("big.json", b"x" * 11)
    with pytest.raises(LandingError, match="larger than 10 bytes"):
        zone.read("big.json")


def test_local_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    zone = LocalLanding(tmp_path)
    zone.write("d/f.json", b"complete")
    assert sorted(os.listdir(tmp_path / "d")) == ["f.json"]
    # A writer that died before its rename leaves only a temporary file, which is never listed.
    (tmp_path / "d" / ".tmp-abc").write_bytes(b"partial")
    assert [o.key for o in zone.list()] == ["d/f.json"]


def test_local_symlinks_out_of_the_zone_are_not_followed(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    zone = LocalLanding(tmp_path / "zone")
    (tmp_path / "zone").mkdir()
    (tmp_path / "zone" / "link.json").symlink_to(outside)
    assert zone.list() == []
    with pytest.raises(LandingError, match="outside the landing zone"):
        zone.read("link.json")


def test_open_landing_understands_local_paths_and_s3_urls(tmp_path):
    assert isinstance(open_landing(str(tmp_path)), LocalLanding)
    s3 = open_landing("s3://bucket/some/prefix")
    assert (s3.bucket, s3.prefix, s3.url) == ("bucket", "some/prefix", "s3://bucket/some/prefix")
    with pytest.raises(ValueError, match="use a local path or s3://"):
        open_landing("gs://bucket/x")


# -- names the warehouse cannot store (issue 16) -----------------------------------------------------

def _plant_local(zone: LocalLanding, name: bytes, data: bytes = b"[]") -> None:
    """A file whose name is raw bytes, as a producer with a latin-1 locale writes it."""
    path = os.fsencode(zone.root) + b"/" + name
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def test_a_local_file_name_that_is_not_utf8_is_listed_escaped_and_refused(tmp_path):
    zone = LocalLanding(tmp_path)
    zone.write("logs/ok.json", b"[]")
    _plant_local(zone, b"logs/r\xe9sultats.jsonl")
    listed = {o.key: o for o in zone.list("logs/")}
    assert sorted(listed) == ["logs/ok.json", "logs/r\\xe9sultats.jsonl"]
    odd = listed["logs/r\\xe9sultats.jsonl"]
    assert odd.key.encode("utf-8") and "not valid UTF-8" in odd.refused and listed["logs/ok.json"].refused is None
    with pytest.raises(RefusedObject):  # the stand-in is no way to reach any file
        zone.read(odd.key)
    results = dict(read_many(zone, list(listed.values())))
    assert results["logs/ok.json"] == b"[]"
    assert isinstance(results[odd.key], RefusedObject) and "not valid UTF-8" in str(results[odd.key])


def test_a_local_path_longer_than_the_key_limit_is_listed_cut_with_a_digest_and_refused(tmp_path):
    zone = LocalLanding(tmp_path)
    deep = "/".join(["d" * 200] * 6)  # 1,205 bytes: a legal path, longer than S3 allows
    zone.write(f"logs/{deep}/a.json", b"[]")
    zone.write(f"logs/{deep}/b.json", b"[]")
    keys = [o.key for o in zone.list("logs/")]
    assert len(keys) == len(set(keys)) == 2 and all(len(k.encode()) <= MAX_KEY_BYTES for k in keys)
    assert all("bytes, sha256" in k and o.refused.startswith("file name is") for k, o in zip(keys, zone.list("logs/")))


def test_s3_keys_postgres_cannot_store_are_listed_escaped_and_refused(s3_landing_url, moto_endpoint):
    """S3 keys are UTF-8 by protocol (boto3 cannot even send a lone surrogate), but a NUL is a valid
    key character, and moto, like S3, stores and lists it."""
    zone = open_landing(s3_landing_url, endpoint_url=moto_endpoint, region_name="us-east-1")
    zone.write("logs/ok.json", b"[]")
    zone.client.put_object(Bucket=zone.bucket, Key=zone._full("logs/nul\x00.json"), Body=b"[]")
    zone.client.put_object(Bucket=zone.bucket, Key=zone._full("logs/r\u00e9sultats \u2603.json"), Body=b"[]")
    listed = {o.key: o.refused for o in zone.list("logs/")}
    assert listed == {"logs/ok.json": None, "logs/r\u00e9sultats \u2603.json": None,  # odd, but storable: read as usual
                      "logs/nul\\x00.json": "file name contains a NUL character (shown as \\x00)"}
    assert zone.read("logs/r\u00e9sultats \u2603.json") == b"[]"


def test_read_many_fetches_a_bounded_number_of_objects_ahead_of_its_consumer():
    import threading

    class SlowZone:
        """A zone (not local, so reads go to the thread pool) that records how far reads ran ahead."""
        url = "test://"

        def __init__(self):
            self.started, self.lock = 0, threading.Lock()

        def read(self, key):
            with self.lock:
                self.started += 1
            return key.encode()

    zone, consumed, most_ahead = SlowZone(), 0, 0
    for key, data in read_many(zone, [f"k{i}" for i in range(200)], workers=4):
        assert data == key.encode()
        consumed += 1
        time.sleep(0.001)
        most_ahead = max(most_ahead, zone.started - consumed)
    assert consumed == 200 and most_ahead <= 8  # 2 x workers, not the whole batch


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: permissions cannot be tested as root")
def test_a_local_file_or_directory_we_may_not_read_is_refused_not_raised(tmp_path):
    zone = LocalLanding(tmp_path)
    zone.write("logs/ok.json", b"[]")
    zone.write("logs/secret.json", b"[]")
    zone.write("logs/locked/inside.json", b"[]")
    os.chmod(zone.path("logs/secret.json"), 0)
    os.chmod(tmp_path / "logs" / "locked", 0)
    try:
        listed = {o.key: o for o in zone.list("logs/")}
        assert sorted(listed) == ["logs/locked/", "logs/ok.json", "logs/secret.json"]
        assert "cannot be listed" in listed["logs/locked/"].refused
        results = dict(read_many(zone, list(listed.values())))
        assert results["logs/ok.json"] == b"[]"
        assert isinstance(results["logs/secret.json"], RefusedObject) and "cannot be read" in str(results["logs/secret.json"])
        assert isinstance(results["logs/locked/"], RefusedObject)
    finally:
        os.chmod(tmp_path / "logs" / "locked", 0o755)
        os.chmod(zone.path("logs/secret.json"), 0o644)
