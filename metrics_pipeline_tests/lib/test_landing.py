import os
import time

import pytest

from metrics_pipeline.lib.landing import Cursor, LandingError, LocalLanding, list_new, open_landing


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
