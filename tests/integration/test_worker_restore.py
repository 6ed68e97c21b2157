"""Restores and catalog catch-up see the newest acknowledged record (read-your-writes).

The embedded broker hides the tail of the last multi-record batch of a partition until
another batch lands there (docs/GUARANTEES.md). These tests write several state /
catalog records in ONE batch (a producer lingering 50 ms, then a flush) and nothing
after it, so the newest record sits in the hidden tail; a reader that stops at the end
offsets restores a stale state or reports the catalog caught up without its last
items. The barrier (consumers/barrier.py) makes both see the newest record.
"""

from __future__ import annotations

import time

import orjson
import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from consumers.barrier import BARRIER_KEY
from consumers.catalog_follower import CatalogFollower
from consumers.state_store import StateReader, partition_for_key
from consumers.worker import Worker
from interest_core.encoder import HashingEncoder
from interest_core.engine import Engine
from interest_core.records import Event
from interest_core.settings import Settings
from producers.topics import create_topics

pytestmark = pytest.mark.integration

VERSIONS = 8


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    chosen = kafka_settings.replace(encoder={"backend": "hashing"}, state={"restore_timeout_s": 30})
    create_topics(chosen)
    return chosen


def one_batch(settings: Settings, topic: str, pairs: list[tuple[bytes, bytes]]) -> list[int]:
    """Send ``pairs`` so that they travel as one batch per partition; their offsets."""
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=50, batch_size=1 << 20
    )
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in pairs]
        producer.flush()
        return [f.get(timeout=10).offset for f in futures]
    finally:
        producer.close()


def successive_states(settings: Settings, user_id: str, count: int) -> list[bytes]:
    """The user's exported state after each of ``count`` searches (versions 1..count)."""
    engine = Engine(HashingEncoder(), settings)
    blobs = []
    for n in range(count):
        event = Event(user_id, 1_700_000_000.0 + n, "search", f"e{n}", text=f"query {n}", offset=n)
        engine.process([event])
        blob = engine.export_user(user_id)
        assert blob is not None
        blobs.append(blob)
    return blobs


def test_a_restore_sees_the_newest_state_in_the_batch_tail(settings: Settings) -> None:
    user = "u-tail"
    blobs = successive_states(settings, user, VERSIONS)
    offsets = one_batch(settings, settings.topics.state, [(user.encode(), b) for b in blobs])
    assert offsets == sorted(offsets) and len(set(offsets)) == VERSIONS
    partition = partition_for_key(user.encode(), settings.topics.events_partitions)

    worker = Worker(
        settings,
        HashingEncoder(),
        worker_id="restorer",
        registry=CollectorRegistry(),
        state_source=StateReader(settings),
    )
    try:
        assert worker.restore_partitions([partition]) == 1
        described = worker.engine.describe_user(user)
        assert described is not None
        # Without the barrier the restore stops at the batch's first record: version 1.
        assert described["version"] == VERSIONS
        # A second read places another marker; markers never come back as users.
        assert worker.state_source is not None
        again = worker.state_source.read()
        assert set(again) == {user}
        assert again[user].blob == blobs[-1]
        assert BARRIER_KEY.decode() not in again
    finally:
        if isinstance(worker.state_source, StateReader):
            worker.state_source.close()


def test_the_catalog_is_caught_up_only_with_its_newest_items(settings: Settings) -> None:
    items = [{"item_id": f"m{i}", "title": f"Movie {i}", "category": "Drama"} for i in range(30)]
    one_batch(
        settings,
        settings.topics.catalog,
        [(str(item["item_id"]).encode(), orjson.dumps(item)) for item in items],
    )
    worker = Worker(settings, HashingEncoder(), worker_id="catalog", registry=CollectorRegistry())
    follower = CatalogFollower(settings).start()
    try:
        deadline = time.monotonic() + 30.0
        while not follower.caught_up:
            assert time.monotonic() < deadline, "catalog never caught up"
            worker.apply_catalog_records(follower.poll(0.2))
        # Without the barrier: caught up with only the first item of the batch.
        assert worker.engine.catalog_size == len(items)
        assert all(worker.engine.has_item(str(item["item_id"])) for item in items)
        # The marker is neither an item nor a rejected record.
        registry = worker.metrics.registry
        outcomes = {
            s.labels["outcome"]: s.value
            for metric in registry.collect()
            if metric.name == "interest_catalog_records"
            for s in metric.samples
            if s.name == "interest_catalog_records_total"
        }
        assert outcomes == {"upsert": len(items)}
    finally:
        follower.close()
