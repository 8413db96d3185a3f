"""The Kafka landing format: what the consumer frames, the loaders read back byte for byte."""

import pytest

from metrics_pipeline.lib.kafka import files


def _file(messages, topic="job-logs", partition=3, max_bytes=1_000_000):
    body = b"".join(files.frame(o, t, v, max_bytes) for o, t, v in messages)
    offsets = [o for o, _, _ in messages]
    return files.header(topic, partition, "job_logs", None, offsets[0], offsets[-1], len(messages)) + body


def test_values_of_any_bytes_come_back_as_they_were_produced():
    values = [b'{"a": 1}', b"line one\nline two\n", b"\xff\xfe not utf-8", b"", None, b'{"n":12}\n{"o":1}']
    landed = files.read_file(_file([(100 + i, 1767618000000 + i, v) for i, v in enumerate(values)]))
    assert (landed.topic, landed.partition, landed.format) == ("job-logs", 3, "job_logs")
    assert [m.value for m in landed.messages] == values
    assert [m.offset for m in landed.messages] == list(range(100, 106))
    assert landed.messages[4].size == -1 and landed.address(104) == "kafka:job-logs/3/104"


def test_a_value_over_the_limit_keeps_an_excerpt_and_its_size():
    big = b"x" * 50_000
    [message] = files.read_file(_file([(7, -1, big)], max_bytes=20_000)).messages
    assert message.oversized and message.size == 50_000 and len(message.value) == files.EXCERPT_BYTES
    assert message.timestamp is None
    [small] = files.read_file(_file([(8, -1, b"y" * 3000)], max_bytes=2048)).messages
    assert small.oversized and small.size == 3000 and small.value == b"y" * 3000 and not small.value[:-1].endswith(b"\n")


@pytest.mark.parametrize("damage", [
    lambda d: d[:-3],                                     # cut short
    lambda d: d.replace(b'"messages":2', b'"messages":3'),  # header disagrees
    lambda d: b"garbage\n" + d,                           # no header
    lambda d: d.replace(b'{"o":11', b'{"o":x1'),          # a broken frame
])
def test_a_damaged_file_is_refused_as_a_whole(damage):
    data = _file([(10, 1, b'{"a":1}'), (11, 2, b'{"b":2}')])
    files.read_file(data)
    with pytest.raises(files.DamagedFile):
        files.read_file(damage(data))


def test_keys_sort_by_offset_and_name_their_topic_partition_and_range():
    a = files.file_key("job_logs", "job-logs", 2, 999, 1200, 1767618000.0)
    b = files.file_key("job_logs", "job-logs", 2, 1201, 1500, 1767618000.0)
    assert a == "ingestion_logs/kafka/job-logs/2026-01-05/13/job-logs-2-0000000000000000999-0000000000000001200.kafka"
    assert a < b and files.is_kafka_key(a) and not files.is_kafka_key("ingestion_logs/a.jsonl")
    assert files.parse_key(a) == ("job-logs", 2, 999, 1200)


def test_a_file_is_written_once_and_never_replaced(tmp_path):
    path = tmp_path / "ingestion_logs" / "kafka" / "t" / "t-0-0000000000000000000-0000000000000000009.kafka"
    assert files.write_once(tmp_path, path, b"first") == path
    assert files.write_once(tmp_path, path, b"first") is None  # a redelivered range: nothing to do
    other = files.write_once(tmp_path, path, b"second")  # reused offsets: kept beside, never over it
    assert path.read_bytes() == b"first" and other.read_bytes() == b"second" and other.name.endswith(".kafka")
    assert files.parse_key(other.name) == ("t", 0, 0, 9)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, other.name])  # no temporary file left
