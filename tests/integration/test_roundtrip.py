"""Files in, Kafka out, read back: nothing lost, nothing duplicated, keys and order kept."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from kafka import TopicPartition
from kafka.partitioner.default import murmur2

from consumers.subscribe import open_reader, subscribe
from interest_core.records import Recommendation, RecommendedItem
from interest_core.settings import COMPRESSION_TYPES, Settings
from producers.jsonl import read_lines
from producers.kafka_client import make_consumer, make_producer
from producers.movielens import convert_movielens
from producers.replay import replay
from producers.synthetic import generate
from producers.topics import create_topics
from tests.data_paths import MOVIELENS_SMALL, needs_movielens
from tests.wire import batch_codecs

pytestmark = pytest.mark.integration

SMALL = MOVIELENS_SMALL


def read_back(settings: Settings, topic: str, expected: int, timeout_s: float = 20.0) -> list:
    """Every record of ``topic`` from the beginning, until ``expected`` (then a bit more)."""
    consumer = make_consumer(settings, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                records.extend(batch)
        # one more poll: anything beyond `expected` would be a duplicate
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def test_replay_loses_nothing_and_keeps_keys_and_order(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    create_topics(kafka_settings)
    summary_gen = generate(tmp_path, users=50, items=120, events=2000, seed=5, bad_fraction=0.01)
    # shuffled, so the time order on the topic is replay's doing, not the file's
    lines = summary_gen.events_path.read_bytes().splitlines()
    random.Random(0).shuffle(lines)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_bytes(b"\n".join(lines) + b"\n")
    summary = replay(shuffled, kafka_settings, progress=False)
    assert summary.ok and summary.sent == 2000 and summary.rejected_total == 20

    topic = kafka_settings.topics.events
    records = read_back(kafka_settings, topic, 2000)
    file_lines = {
        orjson.loads(line)["event_id"]: line
        for _, line in read_lines(summary_gen.events_path)
        if line.startswith(b"{") and b'"event_id"' in line
    }
    ids = [orjson.loads(r.value)["event_id"] for r in records]
    assert len(ids) == 2000 and len(set(ids)) == 2000  # none lost, none duplicated
    assert set(ids) == set(file_lines)
    partitions = kafka_settings.topics.events_partitions
    per_user: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in records:
        value = orjson.loads(record.value)
        assert record.value == file_lines[value["event_id"]]  # the original bytes
        assert record.key == value["user_id"].encode()
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % partitions
        per_user[value["user_id"]].append((record.offset, value["ts"]))
    for events in per_user.values():
        events.sort()
        times = [ts for _, ts in events]
        assert times == sorted(times)  # in offset order, a user's events are in time order


@pytest.mark.parametrize("codec", COMPRESSION_TYPES)
def test_records_are_stored_in_the_configured_codec_and_read_back_whole(
    kafka_settings: Settings, tmp_path: Path, codec: str
) -> None:
    """``kafka.compression_type`` is the codec of every batch our producers write (lz4
    unless set), and every consumer of the project reads each one back byte for byte."""
    settings = kafka_settings.replace(kafka={"compression_type": codec})
    create_topics(settings)
    made = generate(tmp_path, users=20, items=60, events=400, seed=3)
    assert replay(made.events_path, settings, progress=False).sent == 400
    with batch_codecs() as codecs:
        records = read_back(settings, settings.topics.events, 400)
    assert set(codecs) == {codec} and codecs[codec] > 0
    sent = [line for _, line in read_lines(made.events_path)]
    assert sorted(r.value for r in records) == sorted(sent)


def test_send_invalid_puts_bad_lines_on_the_topic(kafka_settings: Settings, tmp_path: Path) -> None:
    create_topics(kafka_settings)
    gen = generate(tmp_path, users=5, items=24, events=200, seed=2, bad_fraction=0.05)
    summary = replay(gen.events_path, kafka_settings, progress=False, send_invalid=True, rate=5000)
    assert summary.ok and summary.sent == 210 and summary.invalid_sent == 10
    records = read_back(kafka_settings, kafka_settings.topics.events, 210)
    assert len(records) == 210


@needs_movielens
def test_catalog_load_of_movielens(
    kafka_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from consumers.cli import main

    create_topics(kafka_settings)
    convert_movielens(SMALL, tmp_path)
    monkeypatch.setenv("INTEREST__KAFKA__BOOTSTRAP_SERVERS", kafka_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("INTEREST__TOPICS__CATALOG", kafka_settings.topics.catalog)
    assert main(["catalog", "load", str(tmp_path / "catalog.jsonl"), "--quiet"]) == 0
    records = read_back(kafka_settings, kafka_settings.topics.catalog, 9125)
    keys = [r.key for r in records]
    assert len(keys) == 9125 and len(set(keys)) == 9125
    assert all(orjson.loads(r.value)["item_id"].encode() == r.key for r in records)


def test_subscribe_reads_filters_and_shows_tombstones(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from consumers.cli import main

    create_topics(kafka_settings)
    topic = kafka_settings.topics.recommendations
    producer = make_producer(kafka_settings)
    for user, version in [("u1", 1), ("u2", 1), ("u1", 2)]:
        rec = Recommendation(
            user, version, 1_700_000_000.0, 1_700_000_000.1, f"e-{version}",
            (RecommendedItem("i1", 0.9, "because"),),
        )  # fmt: skip
        producer.send(topic, key=user.encode(), value=rec.to_json())
    producer.send(topic, key=b"u1", value=None)
    producer.flush()
    producer.close()

    consumer = open_reader(kafka_settings, from_beginning=True)
    try:
        got = list(subscribe(consumer, user="u1", idle_timeout_s=1.5))
    finally:
        consumer.close()
    assert [(r.user_id, r.deleted) for r in got] == [("u1", False), ("u1", False), ("u1", True)]
    assert [r.record.version for r in got[:2]] == [1, 2]

    monkeypatch.setenv("INTEREST__KAFKA__BOOTSTRAP_SERVERS", kafka_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("INTEREST__TOPICS__RECOMMENDATIONS", topic)
    assert main(["subscribe", "--from-beginning", "--json", "--max", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    # order across partitions is not defined; within u1's partition it is
    shown = [orjson.loads(line) for line in lines]
    assert [r.get("version", "tombstone") for r in shown if r["user_id"] == "u1"] == [
        1,
        2,
        "tombstone",
    ]
    assert main(["subscribe", "--from-beginning", "--user", "u2", "--timeout", "1"]) == 0
    assert "u2  v1" in capsys.readouterr().out
