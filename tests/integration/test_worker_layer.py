"""A worker on the embedded broker follows the adaptation layer on the models topic: the
fleet's version is in use before the first event, a newer one is swapped in while it
runs, a malformed one is refused with a reason, and every recommendation names the
version it was ranked with."""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumers.params_follower import publish_params
from consumers.trainer import ADAPTER_PARAM, adapter_record
from consumers.worker import Worker
from interest_core.adapter import AdapterWeights
from interest_core.encoder import HashingEncoder
from interest_core.params import encode_params
from interest_core.records import parse_recommendation
from interest_core.settings import Settings
from producers.kafka_client import make_consumer, make_producer
from producers.topics import create_topics

pytestmark = pytest.mark.integration

DIM = 256  # HashingEncoder's default width; its name is "hashing"


# With shared item knowledge the layer's versions ride on the knowledge follower (one
# follower of the models topic per worker); without it the worker follows them alone.
@pytest.fixture(params=[True, False], ids=["via-knowledge-follower", "own-models-follower"])
def settings(kafka_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    chosen = kafka_settings.replace(
        encoder={"backend": "hashing"}, metrics={"enabled": False}, items={"shared": request.param}
    )
    create_topics(chosen)
    return chosen


def _layer(version: int, scale: float) -> bytes:
    matrix = np.eye(DIM, dtype=np.float32) * scale
    matrix[0, 1] = 0.25  # not a pure scaling: the projection really runs
    return adapter_record(
        AdapterWeights(matrix, "hashing", version), created_at=time.time()
    ).to_json()


def _events(producer: object, settings: Settings, start: int, count: int) -> None:
    for n in range(start, start + count):
        event = {
            "event_id": f"e{n}",
            "user_id": f"u{n % 5}",
            "ts": 1_700_000_000 + n,
            "type": "click",
            "item_id": f"i{n % 20}",
        }
        producer.send(settings.topics.events, key=f"u{n % 5}".encode(), value=orjson.dumps(event))  # type: ignore[attr-defined]
    producer.flush()  # type: ignore[attr-defined]


def _versions(consumer: object, wanted: int, timeout_s: float = 60.0) -> list[int | None]:
    seen: list[int | None] = []
    deadline = time.monotonic() + timeout_s
    while len(seen) < wanted:
        assert time.monotonic() < deadline, f"only {len(seen)} recommendations: {seen}"
        for records in consumer.poll(timeout_ms=300).values():  # type: ignore[attr-defined]
            for record in records:
                if record.value is not None:
                    seen.append(getattr(parse_recommendation(record.value), "model_version", None))
    return seen


def test_the_worker_uses_the_fleet_layer_and_swaps_while_running(settings: Settings) -> None:
    producer = make_producer(settings, max_request_size=4 << 20)
    for i in range(20):
        item = {"item_id": f"i{i}", "title": f"title {i} genre {i % 4}", "category": f"g{i % 4}"}
        producer.send(settings.topics.catalog, key=f"i{i}".encode(), value=orjson.dumps(item))
    producer.flush()
    publish_params(producer, settings.topics.models, parse_layer(_layer(2, 1.5)))
    worker = Worker(settings, HashingEncoder(), worker_id="w-layer", registry=CollectorRegistry())
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    recommendations = make_consumer(
        settings, settings.topics.recommendations, group_id=None, auto_offset_reset="earliest"
    )
    try:
        _events(producer, settings, 0, 10)
        assert set(_versions(recommendations, 5)) == {2}  # in use before the first event
        # A malformed record (a NaN inside, its checksum right) and one for another
        # encoder: both refused with their reason, v2 stays.
        bad = orjson.loads(_layer(3, 1.0))
        values = np.eye(DIM, dtype="<f4")
        values[1, 1] = np.nan
        raw = values.tobytes()
        bad["data"] = base64.b64encode(raw).decode()
        bad["checksum"] = "sha256:" + hashlib.sha256(raw).hexdigest()
        producer.send(settings.topics.models, key=ADAPTER_PARAM.encode(), value=orjson.dumps(bad))
        other = encode_params(
            ADAPTER_PARAM, np.eye(DIM), version=4, created_at=0.0, model="all-MiniLM-L6-v2"
        )
        producer.send(settings.topics.models, key=ADAPTER_PARAM.encode(), value=other.to_json())
        producer.flush()
        time.sleep(1.0)
        _events(producer, settings, 10, 5)
        assert set(_versions(recommendations, 5)) == {2}
        registry = worker.metrics.registry
        refused = {
            reason: registry.get_sample_value("interest_model_records_total", {"outcome": reason})
            for reason in ("not_finite", "wrong_model")
        }
        assert refused == {"not_finite": 1.0, "wrong_model": 1.0}
        # A newer good version while running: swapped in between batches.
        publish_params(producer, settings.topics.models, parse_layer(_layer(5, 2.0)))
        deadline = time.monotonic() + 30
        while worker.engine.space.version != 5:
            assert time.monotonic() < deadline, "v5 never came into use"
            time.sleep(0.2)
        _events(producer, settings, 15, 5)
        assert set(_versions(recommendations, 5)) == {5}
        assert registry.get_sample_value("interest_param_version", {"name": ADAPTER_PARAM}) == 5
        assert registry.get_sample_value("interest_adapter_swap_seconds_count") >= 2
    finally:
        stop.set()
        thread.join(timeout=30)
        recommendations.close()
        producer.close()


def parse_layer(raw: bytes):  # type: ignore[no-untyped-def]
    from interest_core.params import parse_params

    record = parse_params(raw)
    assert not hasattr(record, "reason"), record
    return record
